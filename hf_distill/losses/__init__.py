"""Distillation losses: pure tensor functions.

Every function takes student and teacher tensors (and an optional boolean ``mask`` marking the items that count),
computes in float32 whatever the dtype of its inputs, and returns a scalar::

    sum over counted items of the per-item loss / num_items

``num_items`` defaults to the number of counted items, which gives the plain mean. The trainer passes the number of
items in the whole optimizer step (all gradient-accumulation micro-batches on all processes) instead, so that summing
the micro-batch losses gives the same gradient as one big batch, whatever the padding or the split.

An *item* is whatever a loss is averaged over: an example for sequence-level logits and batch similarities, a token
for token-level logits, hidden states, attention maps and attention relations (the query token).

The functions by topic, one module each (a module imports only modules above it in this list):

- `reduction`: the sum over the counted items divided by `num_items` that every loss ends with, and `IGNORE_INDEX`,
  the label of an item without one;
- `top_k`: a teacher kept as its $k$ most likely classes per item ([`TopKTargets`], as a top-k teacher cache stores
  it) and the $k + 1$ buckets on which a student is compared with it ([`top_k_buckets`]);
- `one_pass`: losses computed with their gradients in one pass, written by hand as `torch.autograd.Function`s
  ([`sparse_forward_kl`], [`forward_kl_and_cross_entropy`], [`sparse_forward_kl_and_cross_entropy`], and the
  chunks of [`soft_target_loss`]);
- `divergences`: the soft-target divergences ([`soft_target_kl`], [`reverse_kl`], [`generalized_jsd`], [`skew_kl`],
  [`total_variation`]; [`DIVERGENCES`] by name), [`soft_target_loss`], which applies one to teacher logits or to
  [`TopKTargets`], [`logit_mse`], and the task losses ([`task_cross_entropy`], [`task_mse`]);
- `representations`: hidden states, attention maps, batch similarities and attention relations
  ([`hidden_state_loss`], [`attention_loss`], [`similarity_loss`], [`attention_relation_loss`]);
- `cross_vocabulary`: a teacher and a student of different vocabularies ([`TokenAlignment`],
  [`universal_logit_distillation`], [`span_alignment_loss`]).

Every public name of these modules is imported here: `from hf_distill.losses import soft_target_kl` and
`losses.soft_target_kl` need no module name.
"""

from __future__ import annotations

from .cross_vocabulary import TokenAlignment, span_alignment_loss, universal_logit_distillation
from .divergences import (
    DIVERGENCES,
    generalized_jsd,
    logit_mse,
    reverse_kl,
    skew_kl,
    soft_target_kl,
    soft_target_loss,
    task_cross_entropy,
    task_mse,
    total_variation,
)
from .one_pass import forward_kl_and_cross_entropy, sparse_forward_kl, sparse_forward_kl_and_cross_entropy
from .reduction import IGNORE_INDEX
from .representations import attention_loss, attention_relation_loss, hidden_state_loss, similarity_loss
from .top_k import LOG_FLOOR, TopKTargets, top_k_buckets

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "LOG_FLOOR",
    "TokenAlignment",
    "TopKTargets",
    "attention_loss",
    "attention_relation_loss",
    "forward_kl_and_cross_entropy",
    "generalized_jsd",
    "hidden_state_loss",
    "logit_mse",
    "reverse_kl",
    "similarity_loss",
    "skew_kl",
    "soft_target_kl",
    "soft_target_loss",
    "span_alignment_loss",
    "sparse_forward_kl",
    "sparse_forward_kl_and_cross_entropy",
    "top_k_buckets",
    "task_cross_entropy",
    "task_mse",
    "total_variation",
    "universal_logit_distillation",
]
