"""Distillation losses: pure tensor functions.

Every function takes student and teacher tensors (and an optional boolean ``mask`` marking the items that count),
computes in float32 whatever the dtype of its inputs, and returns a scalar::

    sum over counted items of the per-item loss / num_items

``num_items`` defaults to the number of counted items, which gives the plain mean. The trainer passes the number of
items in the whole optimizer step (all gradient-accumulation micro-batches on all processes) instead, so that summing
the micro-batch losses gives the same gradient as one big batch, whatever the padding or the split.

An *item* is whatever a loss is averaged over: an example for sequence-level logits and batch similarities, a token
for token-level logits, hidden states, attention maps and attention relations (the query token).
"""

from __future__ import annotations

from .divergences import (
    DIVERGENCES,
    IGNORE_INDEX,
    LOG_FLOOR,
    TokenAlignment,
    TopKTargets,
    attention_loss,
    attention_relation_loss,
    forward_kl_and_cross_entropy,
    generalized_jsd,
    hidden_state_loss,
    logit_mse,
    reverse_kl,
    similarity_loss,
    skew_kl,
    soft_target_kl,
    soft_target_loss,
    span_alignment_loss,
    sparse_forward_kl,
    sparse_forward_kl_and_cross_entropy,
    task_cross_entropy,
    task_mse,
    top_k_buckets,
    total_variation,
    universal_logit_distillation,
)

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
