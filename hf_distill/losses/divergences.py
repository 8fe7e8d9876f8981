"""Losses on the student's logits: the soft-target divergences from the teacher's (forward and reverse KL,
generalised Jensen-Shannon, skew KL, total variation; [`DIVERGENCES`] by name), [`soft_target_loss`], which applies
one to teacher logits or to top-k targets, whole or in chunks of positions, the logits' squared error, and the task
losses with the labels.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from types import MappingProxyType

import torch
import torch.nn.functional as F

from .one_pass import _ChunkedLoss, _TopKPass, sparse_forward_kl
from .reduction import IGNORE_INDEX, _check_same_shape, _item_weights, _reduce
from .top_k import TopKTargets, top_k_buckets

__all__ = [
    "DIVERGENCES",
    "generalized_jsd",
    "logit_mse",
    "reverse_kl",
    "skew_kl",
    "soft_target_kl",
    "soft_target_loss",
    "task_cross_entropy",
    "task_mse",
    "total_variation",
]


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
    log_p_s, log_p_t = _soft_log_probs(student_logits, teacher_logits, temperature)
    per_item = _kl(log_p_t, log_p_s) * temperature**2
    return _reduce(per_item, mask, num_items)


def _soft_log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the teacher's log-probabilities at temperature `temperature`, in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return log_p_s, log_p_t


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    r"""$\mathrm{KL}(p \| q) = \sum_c p_c (\log p_c - \log q_c)$ over the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_mixture(log_p_t: torch.Tensor, log_p_s: torch.Tensor, weight: float) -> torch.Tensor:
    r"""$\log(w\,p^t + (1 - w)\,p^s)$, elementwise, from the log-probabilities.

    Written around the larger of the two probabilities, $\log p^s + \log(1 + w\,(e^{d} - 1))$ with $d = \log p^t -
    \log p^s \le 0$ (and the mirror image for $d > 0$), so that it neither overflows nor loses the small term, and is
    exactly $\log p$ when both distributions are $p$ (the divergences are then exactly 0). The exponents are clamped
    at 0 in both branches so that the branch `torch.where` drops has no infinite gradient to turn into NaN.
    """
    if weight == 0:
        return log_p_s
    if weight == 1:
        return log_p_t
    d = log_p_t - log_p_s
    teacher_smaller = log_p_s + torch.log1p(weight * torch.expm1(d.clamp_max(0.0)))
    student_smaller = log_p_t + torch.log1p((1.0 - weight) * torch.expm1((-d).clamp_max(0.0)))
    return torch.where(d <= 0, teacher_smaller, student_smaller)


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Reverse Kullback-Leibler divergence, from the student's softened distribution to the teacher's.

    With $p^s = \mathrm{softmax}(z^s/T)$ and $p^t = \mathrm{softmax}(z^t/T)$, per item:

    $$\ell = T^2 \, \mathrm{KL}(p^s \,\|\, p^t) = T^2 \sum_c p^s_c \,(\log p^s_c - \log p^t_c)$$

    Mode-seeking: the student is pushed to put its mass where the teacher's is large rather than to cover all of it
    (MiniLLM, Gu et al. 2024; GKD, Agarwal et al. 2024). Scaled by $T^2$ as [`soft_target_kl`] is. Arguments and
    return value as in [`soft_target_kl`].
    """
    log_p_s, log_p_t = _soft_log_probs(student_logits, teacher_logits, temperature)
    per_item = _kl(log_p_s, log_p_t) * temperature**2
    return _reduce(per_item, mask, num_items)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    beta: float = 0.5,
) -> torch.Tensor:
    r"""Generalised Jensen-Shannon divergence with mixing weight $\beta$ (GKD, Agarwal et al. 2024).

    With $p^s$, $p^t$ the softened distributions and the mixture $m = \beta\, p^t + (1 - \beta)\, p^s$, per item:

    $$\ell = T^2 \, \mathrm{JSD}_\beta(p^t \,\|\, p^s)
           = T^2 \big(\beta \, \mathrm{KL}(p^t \,\|\, m) + (1 - \beta) \, \mathrm{KL}(p^s \,\|\, m)\big)$$

    $\beta = 0.5$ is the symmetric Jensen-Shannon divergence. At $\beta = 0$ or $1$ the mixture is one of the two
    distributions and the formula gives 0; as TRL's GKD does, those values stand for the limits of the divergence
    divided by its vanishing weight:

    - $\beta = 0$: $\lim \mathrm{JSD}_\beta / \beta = \mathrm{KL}(p^t \| p^s)$, the forward KL of [`soft_target_kl`];
    - $\beta = 1$: $\lim \mathrm{JSD}_\beta / (1 - \beta) = \mathrm{KL}(p^s \| p^t)$, the reverse KL of [`reverse_kl`].

    Scaled by $T^2$ as [`soft_target_kl`] is.

    Args:
        student_logits: as in [`soft_target_kl`].
        teacher_logits: as in [`soft_target_kl`].
        temperature: as in [`soft_target_kl`].
        mask: as in [`soft_target_kl`].
        num_items: as in [`soft_target_kl`].
        beta (`float`): the teacher's weight $\beta \in [0, 1]$ in the mixture.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    log_p_s, log_p_t = _soft_log_probs(student_logits, teacher_logits, temperature)
    if beta == 0:
        per_item = _kl(log_p_t, log_p_s)
    elif beta == 1:
        per_item = _kl(log_p_s, log_p_t)
    else:
        log_m = _log_mixture(log_p_t, log_p_s, beta)
        kl_teacher = _kl(log_p_t, log_m)
        kl_student = _kl(log_p_s, log_m)
        per_item = beta * kl_teacher + (1.0 - beta) * kl_student
    return _reduce(per_item * temperature**2, mask, num_items)


def skew_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    alpha: float = 0.1,
) -> torch.Tensor:
    r"""Skew Kullback-Leibler divergence (DistiLLM, Ko et al. 2024): forward KL to a mixture leaning on the student.

    With $p^s$, $p^t$ the softened distributions, per item:

    $$\ell = T^2 \, \mathrm{KL}\big(p^t \,\|\, \alpha\, p^t + (1 - \alpha)\, p^s\big)$$

    Mixing a share $\alpha$ of the teacher into the student's side keeps the divergence (and its gradient) bounded
    where the student puts almost no mass; $\alpha = 0$ is the forward KL of [`soft_target_kl`]. DistiLLM uses
    $\alpha = 0.1$. Scaled by $T^2$ as [`soft_target_kl`] is.

    Args:
        student_logits: as in [`soft_target_kl`].
        teacher_logits: as in [`soft_target_kl`].
        temperature: as in [`soft_target_kl`].
        mask: as in [`soft_target_kl`].
        num_items: as in [`soft_target_kl`].
        alpha (`float`): the teacher's share $\alpha \in [0, 1)$ of the mixture.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    log_p_s, log_p_t = _soft_log_probs(student_logits, teacher_logits, temperature)
    log_m = _log_mixture(log_p_t, log_p_s, alpha)
    per_item = _kl(log_p_t, log_m) * temperature**2
    return _reduce(per_item, mask, num_items)


def total_variation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Total variation distance between the softened distributions (f-DISTILL, Wen et al. 2023).

    Per item:

    $$\ell = T^2 \, \tfrac{1}{2} \sum_c \lvert p^t_c - p^s_c \rvert$$

    Bounded by $T^2$ and symmetric. Scaled by $T^2$ as [`soft_target_kl`] is, so that the weight means the same
    across divergences. Arguments and return value as in [`soft_target_kl`].
    """
    log_p_s, log_p_t = _soft_log_probs(student_logits, teacher_logits, temperature)
    per_item = 0.5 * (log_p_t.exp() - log_p_s.exp()).abs().sum(-1) * temperature**2
    return _reduce(per_item, mask, num_items)


# The soft-target divergences by the name `DistillationConfig.divergence` gives them. `generalized_jsd` also takes
# `beta`, `skew_kl` takes `alpha`.
DIVERGENCES = MappingProxyType(
    {
        "forward_kl": soft_target_kl,
        "reverse_kl": reverse_kl,
        "jsd": generalized_jsd,
        "skew_kl": skew_kl,
        "tv": total_variation,
    }
)


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TopKTargets,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    divergence: Callable[..., torch.Tensor] = soft_target_kl,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""The soft-target loss `divergence` (one of [`DIVERGENCES`], mixing weight bound) between the student and the
    teacher, from teacher logits or from [`TopKTargets`], whole or in chunks of positions.

    - Teacher logits: `divergence(student_logits, teacher, temperature, mask, num_items)`.
    - [`TopKTargets`]: the same divergence of the $k + 1$ bucket distributions of [`top_k_buckets`]
      (passed to it as logits $T \log \bar q$, $T \log \bar p$, whose softmax at $T$ is $\bar q$, $\bar p$).
    - `chunk_size`: the items (positions) are taken `chunk_size` at a time along the last item dimension (row by row
      for `(batch, seq_len, vocab)`), and each chunk's gradient is computed as the chunk is: the loss holds the float32
      temporaries of one chunk, forward and backward, plus one gradient buffer of the student logits' size and dtype
      (the gradient the student's logits receive anyway). Loss and gradients equal the unchunked ones up to the order
      of float summation. Chunks without counted items are skipped. The teacher gets no gradient.

    Args:
        student_logits (`torch.Tensor` of shape `(..., num_classes)`): student logits.
        teacher (`torch.Tensor` of the same shape, or [`TopKTargets`] over the same classes): the teacher.
        temperature: as in [`soft_target_kl`].
        mask: as in [`soft_target_kl`].
        num_items: as in [`soft_target_kl`].
        divergence (`Callable`): the divergence function.
        chunk_size (`int`, *optional*): positions per chunk; `None` computes the loss in one piece.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if chunk_size is None:
        return _soft_target_piece(student_logits, teacher, temperature, mask, num_items, divergence)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
    items = student_logits.shape[:-1]
    if tuple(teacher.shape) != tuple(student_logits.shape):
        raise ValueError(
            f"student_logits has shape {tuple(student_logits.shape)} but the teacher has {tuple(teacher.shape)}"
        )
    if mask is not None:
        mask = mask.to(student_logits.device, torch.bool)
        if mask.shape != items:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(items)}")
    if num_items is None:  # every chunk divides by the whole count, so that the chunks add up to the loss
        num_items = mask.sum() if mask is not None else items.numel()
    if not items:
        chunks = [()]
    else:
        outer = itertools.product(*(range(n) for n in items[:-1]))
        chunks = [(*o, slice(s, s + chunk_size)) for o in outer for s in range(0, items[-1], chunk_size)]
    counted = [mask is None or bool(mask[index].any()) for index in chunks]
    teacher = teacher.detach() if torch.is_tensor(teacher) else teacher

    fused = isinstance(teacher, TopKTargets) and _plain(divergence) is soft_target_kl

    def piece(chunk: torch.Tensor, index, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        chunk_mask = mask[index] if mask is not None else None
        if fused:  # loss and gradient in one pass, straight into the chunk's gradient
            weights = _item_weights(chunk.shape[:-1], chunk_mask, num_items, chunk.device)
            targets = teacher[index]
            state = _TopKPass(chunk, targets.ids, targets.logprobs, temperature, weights)
            return state.kd, state.gradient(1.0) if with_grad else None
        if not with_grad:
            return _soft_target_piece(chunk, teacher[index], temperature, chunk_mask, num_items, divergence), None
        with torch.enable_grad():
            chunk.requires_grad_(True)
            value = _soft_target_piece(chunk, teacher[index], temperature, chunk_mask, num_items, divergence)
            (grad,) = torch.autograd.grad(value, chunk)
        return value.detach(), grad

    return _ChunkedLoss.apply(student_logits, piece, chunks, counted)


def _soft_target_piece(student_logits, teacher, temperature, mask, num_items, divergence) -> torch.Tensor:
    if isinstance(teacher, TopKTargets):
        if _plain(divergence) is soft_target_kl:
            return sparse_forward_kl(student_logits, teacher, temperature, mask, num_items)
        log_q, log_p = top_k_buckets(student_logits, teacher, temperature)
        return divergence(log_q * temperature, log_p * temperature, temperature, mask, num_items)
    return divergence(student_logits, teacher, temperature, mask, num_items)


def _plain(function):
    """`function` itself, or the function of a `functools.partial` that binds nothing."""
    if isinstance(function, functools.partial) and not function.args and not function.keywords:
        return function.func
    return function


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
        student_logits (`torch.Tensor` of shape `(..., C)`): as in [`soft_target_kl`].
        teacher_logits (`torch.Tensor` of shape `(..., C)`): as in [`soft_target_kl`].
        mask (`torch.Tensor` of shape `(...)`): as in [`soft_target_kl`].
        num_items: as in [`soft_target_kl`].
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
    ignore_index: int = IGNORE_INDEX,
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
