"""Distillation losses: pure tensor functions.

Every function takes student and teacher tensors (and an optional boolean ``mask`` marking the items that count),
computes in float32 whatever the dtype of its inputs, and returns a scalar::

    sum over counted items of the per-item loss / num_items

``num_items`` defaults to the number of counted items, which gives the plain mean. The trainer passes the number of
items in the whole optimizer step (all gradient-accumulation micro-batches on all processes) instead, so that summing
the micro-batch losses gives the same gradient as one big batch, whatever the padding or the split.

An *item* is whatever a loss is averaged over: an example for sequence-level logits, a token for token-level logits,
hidden states and attention maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "attention_loss",
    "hidden_state_loss",
    "logit_mse",
    "soft_target_kl",
    "task_cross_entropy",
    "task_mse",
]


def _reduce(per_item: torch.Tensor, mask: torch.Tensor | None, num_items: float | torch.Tensor | None) -> torch.Tensor:
    """Sums `per_item` over the counted items and divides by `num_items` (default: how many items count)."""
    if mask is not None:
        mask = mask.to(per_item.device, torch.bool)
        if mask.shape != per_item.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(per_item.shape)}")
        per_item = per_item.masked_fill(~mask, 0.0)
        count = mask.sum()
    else:
        count = per_item.numel()
    total = per_item.sum()
    if num_items is None:
        num_items = count
    # Item counts are whole numbers; clamping at 1 makes an empty micro-batch (everything masked) contribute zero,
    # not NaN, without a host-device sync.
    if torch.is_tensor(num_items):
        return total / num_items.to(total.device, torch.float32).clamp_min(1.0)
    return total / max(float(num_items), 1.0)


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Kullback-Leibler divergence from the teacher's softened distribution to the student's (Hinton et al., 2015).

    For each item with logits $z^s$, $z^t$ over the last dimension:

    $$\ell = T^2 \, \mathrm{KL}\big(\mathrm{softmax}(z^t/T) \,\|\, \mathrm{softmax}(z^s/T)\big)
           = T^2 \sum_c p^t_c \,(\log p^t_c - \log p^s_c)$$

    The $T^2$ factor keeps the gradient magnitude independent of $T$, as in Hinton et al. and DistilBERT.

    Args:
        student_logits (`torch.Tensor` of shape `(..., num_classes)`): student logits.
        teacher_logits (`torch.Tensor` of shape `(..., num_classes)`): teacher logits, same shape.
        temperature (`float`): softmax temperature $T > 0$.
        mask (`torch.Tensor` of shape `(...)`, *optional*): True for the items that count.
        num_items (*optional*): divisor of the summed loss; defaults to the number of counted items.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_item = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * temperature**2
    return _reduce(per_item, mask, num_items)


def logit_mse(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean squared error between raw logits (Ba & Caruana, 2014), no temperature.

    Per item: $\ell = \frac{1}{C}\sum_c (z^s_c - z^t_c)^2$.

    Args:
        student_logits (`torch.Tensor` of shape `(..., C)`), teacher_logits (same shape), mask (`(...)`), num_items:
            as in [`soft_target_kl`].
        class_mask (`torch.Tensor` of shape `(..., C)`, *optional*): True for the classes that exist, when they vary
            from item to item (the positions of a padded sequence, for span logits); the mean is over these only.
    """
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    squared = (student_logits.float() - teacher_logits.float()).pow(2)
    if class_mask is None:
        per_item = squared.mean(-1)
    else:
        class_mask = class_mask.to(squared.device, torch.bool)
        per_item = squared.masked_fill(~class_mask, 0.0).sum(-1) / class_mask.sum(-1).clamp_min(1)
    return _reduce(per_item, mask, num_items)


def task_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Cross-entropy with the hard labels: $\ell = -\log \mathrm{softmax}(z)_y$, items with `ignore_index` excluded.

    Args:
        logits (`torch.Tensor` of shape `(..., C)`): student logits.
        labels (`torch.Tensor` of shape `(...)`): class ids, `ignore_index` for items that do not count.
        num_items (*optional*): divisor; defaults to the number of labels that are not `ignore_index`.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected {tuple(logits.shape[:-1])} for logits")
    per_item = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).view(labels.shape)
    return _reduce(per_item, labels != ignore_index, num_items)


def task_mse(
    predictions: torch.Tensor, targets: torch.Tensor, num_items: float | torch.Tensor | None = None
) -> torch.Tensor:
    r"""Squared error for regression heads: per item $\ell = \frac{1}{D}\sum_d (\hat y_d - y_d)^2$.

    Args:
        predictions (`torch.Tensor` of shape `(N, D)` or `(N,)`): student outputs.
        targets (`torch.Tensor`, same number of elements): regression targets (or the teacher's outputs).
    """
    predictions = predictions.float().reshape(predictions.shape[0], -1)
    targets = targets.float().reshape(predictions.shape)
    return _reduce((predictions - targets).pow(2).mean(-1), None, num_items)


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


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")
