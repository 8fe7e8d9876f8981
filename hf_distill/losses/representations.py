"""Losses on what the models compute on the way to their outputs: hidden states (FitNets hints, DistilBERT's
cosine loss), attention maps (attention transfer, TinyBERT), the batch's example-by-example similarities
(similarity-preserving distillation) and self-attention relations (MiniLM, MiniLMv2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reduction import _check_same_shape, _reduce

__all__ = ["attention_loss", "attention_relation_loss", "hidden_state_loss", "similarity_loss"]


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    kind: str = "mse",
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Distance between student and teacher hidden states, per token (FitNets hints; DistilBERT's cosine loss).

    The student states must already be projected to the teacher's width when the widths differ. Per token:

    - `"mse"`: $\ell = \frac{1}{H}\sum_h (s_h - t_h)^2$ (Romero et al., 2015; TinyBERT);
    - `"cosine"`: $\ell = 1 - \cos(s, t)$ (Sanh et al., 2019).

    Args:
        student_hidden (`torch.Tensor` of shape `(batch, seq_len, hidden)`): student hidden states (projected).
        teacher_hidden (`torch.Tensor` of shape `(batch, seq_len, hidden)`): teacher hidden states.
        kind (`str`): `"mse"` or `"cosine"`.
        mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): the attention mask (1 for real tokens).
        num_items (*optional*): divisor; defaults to the number of real tokens.
    """
    _check_same_shape(student_hidden, teacher_hidden, "student_hidden", "teacher_hidden")
    s, t = student_hidden.float(), teacher_hidden.float()
    if kind == "mse":
        per_token = (s - t).pow(2).mean(-1)
    elif kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    else:
        raise ValueError(f"hidden_state_loss kind must be 'mse' or 'cosine', got {kind!r}")
    return _reduce(per_token, mask, num_items)


def attention_loss(
    student_attention: torch.Tensor,
    teacher_attention: torch.Tensor,
    kind: str = "kl",
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Distance between attention maps (attention transfer; TinyBERT), per query token, averaged over heads.

    With $a_{h,i,\cdot}$ the attention distribution of head $h$ at query token $i$ over the $L$ keys:

    - `"kl"`: $\ell_i = \frac{1}{N_h}\sum_h \mathrm{KL}(a^t_{h,i} \,\|\, a^s_{h,i})$;
    - `"mse"`: $\ell_i = \frac{1}{N_h}\sum_h \sum_j (a^s_{h,i,j} - a^t_{h,i,j})^2$.

    Keys that are padding have (near) zero probability in both maps; they are excluded all the same.

    Args:
        student_attention (`torch.Tensor` of shape `(batch, heads, seq_len, seq_len)`): student attention
            probabilities.
        teacher_attention (same shape): teacher attention probabilities.
        kind (`str`): `"kl"` or `"mse"`.
        mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): attention mask; padded query tokens and keys
            do not count.
        num_items (*optional*): divisor; defaults to the number of real query tokens.
    """
    _check_same_shape(student_attention, teacher_attention, "student_attention", "teacher_attention")
    a_s, a_t = student_attention.float(), teacher_attention.float()
    if mask is not None:
        key_mask = mask.to(a_s.device, torch.bool)[:, None, None, :]
    else:
        key_mask = torch.ones_like(a_s, dtype=torch.bool)
    if kind == "kl":
        # xlogy gives 0 * log 0 = 0 where the teacher puts no mass; the student's log is clamped so a zero does not
        # turn into -inf * 0 = nan.
        elementwise = torch.xlogy(a_t, a_t) - a_t * a_s.clamp_min(1e-12).log()
    elif kind == "mse":
        elementwise = (a_s - a_t).pow(2)
    else:
        raise ValueError(f"attention_loss kind must be 'kl' or 'mse', got {kind!r}")
    per_query = elementwise.masked_fill(~key_mask, 0.0).sum(-1).mean(1)  # (batch, seq_len)
    return _reduce(per_query, mask, num_items)


def similarity_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Similarity-preserving distillation (Tung & Mori, ICCV 2019): match the batch's example-by-example similarities.

    With $f$ the `(b, d)` features of a batch (flattened after the batch dimension, as the paper reshapes feature maps
    to `b x chw`), the similarity matrix is $G = f f^\top$ with each row L2-normalised, $\tilde G_{i\cdot} =
    G_{i\cdot} / \lVert G_{i\cdot} \rVert_2$. Student and teacher widths may differ (no projection is needed), since
    only the `(b, b)` matrices are compared. Per example $i$:

    $$\ell_i = \frac{1}{b} \sum_j \big(\tilde G^s_{ij} - \tilde G^t_{ij}\big)^2$$

    so with the default `num_items = b` the loss is the paper's $\frac{1}{b^2}\lVert \tilde G^s - \tilde G^t
    \rVert_F^2$. The matrices relate the examples of one micro-batch to each other, so the value depends on how a batch
    is split (unlike the per-token losses).

    Args:
        student_features (`torch.Tensor` of shape `(batch, d_s)` or `(batch, ...)`): student features.
        teacher_features (`torch.Tensor` of shape `(batch, d_t)` or `(batch, ...)`): teacher features, same batch size.
        num_items (*optional*): divisor of the summed per-example loss; defaults to the batch size.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if (
        student_features.dim() < 2
        or teacher_features.dim() < 2
        or student_features.shape[0] != teacher_features.shape[0]
    ):
        raise ValueError(
            f"student_features has shape {tuple(student_features.shape)} and teacher_features has shape "
            f"{tuple(teacher_features.shape)}: both need a leading batch dimension of the same size, (batch, width)."
        )
    batch = student_features.shape[0]

    def similarities(features: torch.Tensor) -> torch.Tensor:
        flat = features.float().reshape(batch, -1)
        return F.normalize(flat @ flat.T, p=2, dim=1)

    per_example = (similarities(student_features) - similarities(teacher_features)).pow(2).sum(-1) / batch
    return _reduce(per_example, None, num_items)


def attention_relation_loss(
    student_x: torch.Tensor,
    teacher_x: torch.Tensor,
    num_relation_heads: int,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Self-attention relation distillation (MiniLM, Wang et al. 2020; MiniLMv2, Wang et al. 2021).

    `x` is the output of one of a layer's query, key or value projections, all attention heads concatenated, as the
    model's `nn.Linear` returns it (see [`~hf_distill.relations.QKVCapture`]). Its width $w$ is split into $R$ relation
    heads of width $d = w / R$, $x_r$ of shape `(seq, d)`, and each gives a relation over the keys:

    $$A_r = \mathrm{softmax}\big(x_r x_r^\top / \sqrt{d}\big)$$

    Because $R$ is chosen freely (a divisor of both widths), the student and teacher may differ in width and in number
    of attention heads. Per query token $i$, averaged over the relation heads:

    $$\ell_i = \frac{1}{R} \sum_r \mathrm{KL}\big(A^t_{r,i\cdot} \,\|\, A^s_{r,i\cdot}\big)$$

    With queries, keys and values in turn this is MiniLMv2's Q-Q, K-K and V-V relations; the value relation alone is
    MiniLM's. Padded keys are left out of the softmax, and padded query tokens do not count.

    Args:
        student_x (`torch.Tensor` of shape `(batch, seq_len, w_s)`): student projection output.
        teacher_x (`torch.Tensor` of shape `(batch, seq_len, w_t)`): teacher projection output of the same layer kind.
        num_relation_heads (`int`): $R$, which must divide both `w_s` and `w_t`.
        mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): the attention mask (1 for real tokens).
        num_items (*optional*): divisor; defaults to the number of real query tokens.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if student_x.dim() != 3 or teacher_x.dim() != 3 or student_x.shape[:2] != teacher_x.shape[:2]:
        raise ValueError(
            f"student_x has shape {tuple(student_x.shape)} and teacher_x has shape {tuple(teacher_x.shape)}: both "
            "must be (batch, seq_len, width) with the same batch and seq_len (widths may differ)."
        )
    batch, length = student_x.shape[:2]
    if mask is not None and tuple(mask.shape) != (batch, length):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {(batch, length)}")
    if num_relation_heads < 1:
        raise ValueError(f"num_relation_heads must be >= 1, got {num_relation_heads}")
    for name, x in (("student", student_x), ("teacher", teacher_x)):
        if x.shape[-1] % num_relation_heads:
            raise ValueError(
                f"The {name} width {x.shape[-1]} is not divisible by num_relation_heads={num_relation_heads}; choose "
                f"a divisor of both widths ({student_x.shape[-1]} and {teacher_x.shape[-1]})."
            )
    key_mask = None if mask is None else mask.to(student_x.device, torch.bool)[:, None, None, :]

    def log_relations(x: torch.Tensor) -> torch.Tensor:
        # (batch, seq, w) -> (batch, R, seq, d) -> (batch, R, seq, seq) log-probabilities over the keys.
        heads = x.float().reshape(batch, length, num_relation_heads, -1).transpose(1, 2)
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(heads.shape[-1])
        if key_mask is None:
            return F.log_softmax(scores, dim=-1)
        # A finite fill, not -inf: a row whose keys are all padding gets a uniform (finite) distribution, not NaN. The
        # padded entries' log-probabilities are then zeroed so that 0 * log 0 never appears, forward or backward.
        scores = scores.masked_fill(~key_mask, torch.finfo(torch.float32).min)
        return F.log_softmax(scores, dim=-1).masked_fill(~key_mask, 0.0)

    log_a_s, log_a_t = log_relations(student_x), log_relations(teacher_x)
    a_t = log_a_t.exp() if key_mask is None else log_a_t.exp().masked_fill(~key_mask, 0.0)
    per_query = (a_t * (log_a_t - log_a_s)).sum(-1).mean(1)  # (batch, seq_len)
    return _reduce(per_query, mask, num_items)
