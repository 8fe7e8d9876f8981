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

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "TokenAlignment",
    "TopKTargets",
    "attention_loss",
    "attention_relation_loss",
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
    "top_k_buckets",
    "task_cross_entropy",
    "task_mse",
    "total_variation",
    "universal_logit_distillation",
]

# The label of an item without one (padding, a prompt, a later sub-token): what the Transformers collators pad labels
# with and what PyTorch's cross-entropy skips.
IGNORE_INDEX = -100


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


# ---- soft targets from a top-k teacher, and in chunks of positions --------------------------------------------------

# The smallest probability a bucket is given (log 1e-30): a tail the teacher or student leaves empty (k = vocabulary,
# or all the mass in the top k in float32) stays finite, and contributes nothing measurable.
LOG_FLOOR = math.log(1e-30)


@dataclass(frozen=True)
class TopKTargets:
    r"""A teacher distribution kept as its $k$ most likely classes per item, as a top-k teacher cache stores it.

    Stands where teacher logits would: [`soft_target_loss`] compares the student with it on the $k + 1$ buckets of
    [`top_k_buckets`], and indexing (`targets[:, :-1]`, `targets[mask]`) selects items as it would on logits `(...,
    num_classes)`. Nothing of the vocabulary's width is ever made from it.

    Attributes:
        ids (`torch.Tensor` of shape `(..., k)`): the classes, most likely first.
        logprobs (`torch.Tensor` of shape `(..., k)`): their log-probabilities at the distillation temperature,
            $\log \mathrm{softmax}(z^t / T)$ over all `num_classes` classes.
        num_classes (`int`): the width of the distribution (the vocabulary).
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    num_classes: int

    @property
    def shape(self) -> torch.Size:
        """The shape of the logits these targets stand for: `(..., num_classes)`."""
        return torch.Size((*self.ids.shape[:-1], self.num_classes))

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def dim(self) -> int:
        return self.ids.dim()

    def __getitem__(self, index) -> TopKTargets:
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index) or sum(_index_dims(i) for i in index) >= self.ids.dim():
            raise IndexError("TopKTargets are indexed over the items (the leading dimensions), not the classes")
        return TopKTargets(self.ids[index], self.logprobs[index], self.num_classes)

    def to(self, device) -> TopKTargets:
        return TopKTargets(self.ids.to(device), self.logprobs.to(device), self.num_classes)

    def tail_log_prob(self) -> torch.Tensor:
        r"""$\log(1 - \sum_i p_i)$ `(..., 1)`: the mass outside the top k, floored at $10^{-30}$."""
        top = torch.logsumexp(self.logprobs.float(), dim=-1, keepdim=True).clamp_max(0.0)
        return (-torch.expm1(top)).clamp_min(math.exp(LOG_FLOOR)).log()

    def dense_logits(self, temperature: float) -> torch.Tensor:
        r"""Logits `(..., num_classes)` of the distribution with the tail spread evenly over the other classes, $T
        \log p$ (so that `softmax(z / T)` is it). For tests and inspection: this is the vocabulary-wide tensor that
        training never makes."""
        k = self.ids.shape[-1]
        others = max(self.num_classes - k, 1)
        dense = (self.tail_log_prob() - math.log(others)).expand(*self.ids.shape[:-1], self.num_classes).clone()
        dense.scatter_(-1, self.ids.long(), self.logprobs.float())
        return dense * temperature


def _index_dims(index) -> int:
    """How many dimensions of a tensor one entry of an index consumes."""
    if index is None:
        return 0
    if torch.is_tensor(index) and index.dtype == torch.bool:
        return index.dim()
    return 1


def top_k_buckets(
    student_logits: torch.Tensor, targets: TopKTargets, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The student's and the teacher's log-probabilities over $k + 1$ buckets: the teacher's top $k$ classes, then
    everything else as one class (the tail), both `(..., k + 1)`, float32.

    With $K$ the teacher's top-$k$ classes of an item, $p = \mathrm{softmax}(z^t/T)$ and $q = \mathrm{softmax}(z^s/T)$:

    $$\bar p = (p_{K_1}, \dots, p_{K_k},\ 1 - \textstyle\sum_{c \in K} p_c), \qquad
      \bar q = (q_{K_1}, \dots, q_{K_k},\ \textstyle\sum_{c \notin K} q_c)$$

    The student's tail is a log-sum-exp over the classes outside $K$ (exact, not $1 - \sum$ in float32); the
    teacher's is $\log(-\mathrm{expm1}(\log \sum_{c \in K} p_c))$ from the stored log-probabilities. Both are floored
    at $10^{-30}$ in value, so an empty tail (k = vocabulary) is finite and adds nothing measurable; the student's
    keeps the gradient of its unfloored value.

    Any divergence of these two distributions is a divergence of the teacher's top-k knowledge: every f-divergence
    (forward and reverse KL, JSD, skew KL, total variation) of the bucketed pair is at most that of the full pair (the
    data-processing inequality), and equals it when $k$ is the whole vocabulary. It is not the divergence to the
    dense distribution with the tail spread evenly (the old reading of a top-k cache), which also asks the student
    to spread its own tail evenly; DistillKit's sparse KL likewise scores the top k only.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != targets.shape:
        raise ValueError(
            f"student_logits has shape {tuple(student_logits.shape)} but the top-k targets stand for logits of shape "
            f"{tuple(targets.shape)}"
        )
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    ids = targets.ids.to(log_q.device, torch.long)
    top_q = log_q.gather(-1, ids)
    # A finite fill, not -inf: with every class in K the log-sum-exp and its gradient stay finite.
    outside = log_q.scatter(-1, ids, torch.finfo(torch.float32).min)
    tail_q = _floor_value(torch.logsumexp(outside, dim=-1, keepdim=True))
    log_p = torch.cat([targets.logprobs.to(log_q.device, torch.float32), targets.tail_log_prob().to(log_q.device)], -1)
    return torch.cat([top_q, tail_q], dim=-1), log_p


def _floor_value(log_mass: torch.Tensor) -> torch.Tensor:
    """`log_mass` floored at log 1e-30 in value, with the gradient of the unfloored value: a student tail far below
    the floor is still pulled up when the teacher's tail is not."""
    return log_mass.detach().clamp_min(LOG_FLOOR) + (log_mass - log_mass.detach())  # exact value: x - x = 0


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


def sparse_forward_kl(
    student_logits: torch.Tensor,
    targets: TopKTargets,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The forward KL of the $k + 1$ buckets of [`top_k_buckets`], $T^2 \mathrm{KL}(\bar p \| \bar q)$, computed in
    one pass that keeps one float32 tensor of the logits' size for the backward pass (the student's exponentiated
    logits, turned into the gradient in place), against about five for the same loss through autograd.

    With $q = \mathrm{softmax}(z^s / T)$, $K$ the teacher's top $k$ and $\bar q_\text{tail} = \sum_{c \notin K} q_c$
    (a log-sum-exp over those classes, exact), the gradient with respect to $z^s_c / T$ is $q_c - p_c$ for $c \in K$
    and $r_c (\bar q_\text{tail} - \bar p_\text{tail})$ elsewhere, $r_c = q_c / \bar q_\text{tail}$ the class's share
    of the student's tail. Equal to [`soft_target_loss`] with [`soft_target_kl`] through [`top_k_buckets`] (its
    tails floored the same way). Arguments as in [`soft_target_kl`].
    """
    _check_top_k(student_logits, targets, temperature)
    weights = _item_weights(student_logits.shape[:-1], mask, num_items, student_logits.device)
    kd, _ = _OnePass.apply(student_logits, lambda z: _TopKPass(z, targets.ids, targets.logprobs, temperature, weights))
    return kd


def sparse_forward_kl_and_cross_entropy(
    student_logits: torch.Tensor,
    targets: TopKTargets,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    label_num_items: float | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""[`sparse_forward_kl`] at $T = 1$ and [`task_cross_entropy`] with `labels`, of the same logits, in one pass:
    `(kd, cross_entropy)`, each equal to its function's value, and the gradients of any weighted sum of the two.

    Both read $q = \mathrm{softmax}(z^s)$, so one float32 buffer of the logits' size serves both gradients
    ($q_c - p_c$ or $r_c(\bar q_\text{tail} - \bar p_\text{tail})$ for the soft targets, $q_c - [c = y]$ for the
    labels), combined in the backward pass with the weights each value received: a language model's distillation
    step from a top-k cache then keeps as much of the vocabulary's width as its plain LM step keeps (the
    log-probabilities of its cross-entropy), instead of one gradient buffer more.

    Args:
        student_logits: as in [`sparse_forward_kl`].
        targets: as in [`sparse_forward_kl`].
        mask: as in [`sparse_forward_kl`].
        num_items: as in [`sparse_forward_kl`].
        labels (`torch.Tensor` of shape `(...)`): class ids, `ignore_index` for items without a label.
        label_num_items (*optional*): the cross-entropy's divisor; defaults to the number of labelled items.
    """
    _check_top_k(student_logits, targets, 1.0)
    weights, labels, label_weights = _pass_weights(
        student_logits, labels, mask, num_items, label_num_items, ignore_index
    )
    return _OnePass.apply(
        student_logits, lambda z: _TopKPass(z, targets.ids, targets.logprobs, 1.0, weights, labels, label_weights)
    )


def forward_kl_and_cross_entropy(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TopKTargets,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    label_num_items: float | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""[`soft_target_kl`] at $T = 1$ and [`task_cross_entropy`] with `labels`, of the same student logits, in one
    pass: `(kd, cross_entropy)`, each equal to its function's value, and the gradients of any weighted sum of the two.

    From dense teacher logits, one float32 buffer of the logits' size ($e^{z - m}$, turned into the gradient in place
    in the backward pass) serves both gradients, $q - p$ and $q - [c = y]$; the teacher's probabilities are made a
    block of rows at a time, in the forward pass for the value and again in the backward pass for the gradient, so no
    second vocabulary-wide tensor is made (the same loss through autograd keeps about five). From [`TopKTargets`],
    [`sparse_forward_kl_and_cross_entropy`]. Arguments as there; `teacher` may also be logits of the students' shape.
    """
    if isinstance(teacher, TopKTargets):
        return sparse_forward_kl_and_cross_entropy(
            student_logits, teacher, labels, mask, num_items, label_num_items, ignore_index
        )
    if teacher.shape != student_logits.shape:
        raise ValueError(
            f"student_logits has shape {tuple(student_logits.shape)} but teacher_logits has {tuple(teacher.shape)}"
        )
    weights, labels, label_weights = _pass_weights(
        student_logits, labels, mask, num_items, label_num_items, ignore_index
    )
    teacher = teacher.detach()
    return _OnePass.apply(student_logits, lambda z: _DensePass(z, teacher, weights, labels, label_weights))


def _pass_weights(student_logits, labels, mask, num_items, label_num_items, ignore_index):
    """The per-item weights of the soft-target term and of the cross-entropy, and the labels with the ignored ones
    replaced by 0 (their weight is 0)."""
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)}, expected {tuple(student_logits.shape[:-1])} for logits"
        )
    device = student_logits.device
    weights = _item_weights(student_logits.shape[:-1], mask, num_items, device)
    labelled = labels.to(device) != ignore_index
    label_weights = _item_weights(labels.shape, labelled, label_num_items, device)
    return weights, labels.to(device, torch.long).masked_fill(~labelled, 0), label_weights


class _DensePass:
    r"""One pass over student logits `z` against dense teacher logits at T = 1: the forward KL and the cross-entropy,
    and what their gradients are made from. The one vocabulary-wide tensor is `buffer`, $e_c = \exp(z_c - m)$ with
    $m$ the largest logit, so $q = e / S$, $S = \sum e$; the teacher's probabilities are made a block of rows at a
    time, about `block_elements` values (16 MiB of float32) per temporary whatever the vocabulary."""

    def __init__(self, logits, teacher, weights, labels, label_weights, block_elements: int = 1 << 22, own=False):
        width = logits.shape[-1]
        self.shape, self.dtype, self.rows = logits.shape, logits.dtype, max(1, block_elements // width)
        rows = self.rows
        with torch.no_grad():
            z = logits.reshape(-1, width)
            self.teacher = teacher.reshape(-1, width)
            self.weights, self.label_weights = weights.reshape(-1, 1), label_weights.reshape(-1, 1)
            self.labels = labels.reshape(-1, 1)
            # KL(p || q) = sum_c p_c (log p_c - z_c) + log Z, the student's log Z. What reads z comes first: with
            # `own` (the caller hands its float32 logits over), the buffer below is z itself.
            kl = torch.empty(len(z), 1, device=z.device)
            for start in range(0, len(z), rows):
                block = slice(start, start + rows)
                log_p = F.log_softmax(self.teacher[block].float(), dim=-1)
                kl[block] = (log_p.exp() * (log_p - z[block].float())).sum(-1, keepdim=True)
            z_label = z.gather(-1, self.labels).float()
            buffer = z if own and z.dtype == torch.float32 else z.to(torch.float32, copy=True)
            top = buffer.amax(-1, keepdim=True)
            self.total = buffer.sub_(top).exp_().sum(-1, keepdim=True)
            log_z = top + self.total.log()
            self.kd = ((kl + log_z) * self.weights).sum()
            self.cross_entropy = ((log_z - z_label) * self.label_weights).sum()
            self.buffer = buffer

    def gradient(self, kd_grad, label_grad) -> torch.Tensor:
        """The gradient with respect to the logits of `kd_grad * kd + label_grad * cross_entropy`, made in the buffer
        (once: the buffer is consumed)."""
        with torch.no_grad():
            kd_scale, label_scale = self.weights * kd_grad, self.label_weights * label_grad
            grad = self.buffer.mul_((kd_scale + label_scale) / self.total)  # (w_kd + w_label) q
            for start in range(0, len(grad), self.rows):
                block = slice(start, start + self.rows)
                grad[block] -= kd_scale[block] * torch.softmax(self.teacher[block].float(), dim=-1)
            grad.scatter_add_(-1, self.labels, -label_scale)
            self.buffer = None
            return grad.view(self.shape).to(self.dtype)


def _check_top_k(student_logits: torch.Tensor, targets: TopKTargets, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != targets.shape:
        raise ValueError(
            f"student_logits has shape {tuple(student_logits.shape)} but the top-k targets stand for logits of shape "
            f"{tuple(targets.shape)}"
        )


def _item_weights(items: torch.Size, mask, num_items, device) -> torch.Tensor:
    """Each item's weight in the loss: 1 / num_items where it counts, 0 elsewhere (what `_reduce` sums with)."""
    if mask is not None:
        mask = mask.to(device, torch.bool)
        if mask.shape != items:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(items)}")
    denominator = (mask.sum() if mask is not None else items.numel()) if num_items is None else num_items
    if torch.is_tensor(denominator):
        denominator = denominator.to(device, torch.float32).clamp_min(1.0)
    else:
        denominator = max(float(denominator), 1.0)
    weights = torch.ones(items, device=device) if mask is None else mask.float()
    return weights / denominator


class _TopKPass:
    """One pass over student logits `z` (scaled by 1 / T) against top-k targets: the forward KL of the buckets and,
    with labels (T = 1), the cross-entropy, and what their gradients are made from.

    The one vocabulary-wide tensor is `buffer`: $e_c = \\exp(z_c - m)$ outside the teacher's top k (0 on it), $m$ the
    largest logit outside the top k, so that the student's tail $S = \\sum e_c$ and each class's share of it
    $e_c / S$ are exact however small the tail; $q_c = e_c \\exp(m - \\log Z)$. The gradient is that buffer scaled per
    item, with the top k (and the label) written over it: no second vocabulary-wide tensor is made.
    """

    def __init__(self, logits, ids, logprobs, temperature, weights, labels=None, label_weights=None, own=False):
        self.dtype, self.temperature, self.weights = logits.dtype, temperature, weights
        self.labels, self.label_weights = labels, label_weights
        with torch.no_grad():
            self.ids = ids.to(logits.device, torch.long)
            log_p = logprobs.to(logits.device, torch.float32)
            # `own`: the caller hands its float32 logits over, and they become the buffer (no copy).
            own = own and logits.dtype == torch.float32
            buffer = logits if own else logits.to(torch.float32, copy=True)
            if temperature != 1:
                buffer.div_(temperature)
            z_top = buffer.gather(-1, self.ids)
            z_label = buffer.gather(-1, labels.unsqueeze(-1)).squeeze(-1) if labels is not None else None
            buffer.scatter_(-1, self.ids, -math.inf)
            top = buffer.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).min)  # finite, empty tail too
            self.total = buffer.sub_(top).exp_().sum(-1, keepdim=True)
            log_tail = top + self.total.log()  # -inf for an empty tail (k = vocabulary)
            self.log_z = torch.logsumexp(torch.cat([z_top, log_tail], -1), -1, keepdim=True)
            self.buffer, self.top = buffer, top
            self.log_q_top, self.log_tail_q = z_top - self.log_z, log_tail - self.log_z
            log_tail_p = TopKTargets(self.ids, log_p, logits.shape[-1]).tail_log_prob()
            self.p_top, self.tail_p = log_p.exp(), log_tail_p.exp()
            per_item = (self.p_top * (log_p - self.log_q_top)).sum(-1)
            per_item = per_item + (self.tail_p * (log_tail_p - self.log_tail_q.clamp_min(LOG_FLOOR))).squeeze(-1)
            self.kd = (per_item * weights).sum() * temperature**2
            self.cross_entropy = (
                ((self.log_z.squeeze(-1) - z_label) * label_weights).sum()
                if labels is not None
                else torch.zeros((), device=logits.device)
            )

    def gradient(self, kd_grad: torch.Tensor | float, label_grad: torch.Tensor | float | None = None) -> torch.Tensor:
        """The gradient with respect to the logits of `kd_grad * kd + label_grad * cross_entropy`, made in the buffer
        (once: the buffer is consumed)."""
        with torch.no_grad():
            q_top = self.log_q_top.exp()
            # d kd / d z_c, per item: T (q_c - p_c) on the top k; T r_c (q_tail - p_tail) elsewhere, r_c = e_c / S.
            kd_scale = (self.weights * self.temperature * kd_grad).unsqueeze(-1)
            tiny = torch.finfo(torch.float32).tiny
            outside = kd_scale * (self.log_tail_q.exp() - self.tail_p) / self.total.clamp_min(tiny)
            on_top = kd_scale * (q_top - self.p_top)
            if self.labels is not None and label_grad is not None:
                # d cross-entropy / d z_c = q_c - [c = y], q_c = e_c exp(m - log Z) outside the top k.
                label_scale = (self.label_weights * label_grad).unsqueeze(-1)
                outside = outside + label_scale * (self.top - self.log_z).exp()
                on_top = on_top + label_scale * q_top
            grad = self.buffer.mul_(outside).scatter_(-1, self.ids, on_top)
            if self.labels is not None and label_grad is not None:
                grad.scatter_add_(-1, self.labels.unsqueeze(-1), -label_scale)
            self.buffer = None
            return grad.to(self.dtype)


class _OnePass(torch.autograd.Function):
    """`(kd, cross_entropy)` of one pass over the logits ([`_TopKPass`] or [`_DensePass`], made by `build(logits)`);
    its backward combines both gradients in the pass' one buffer."""

    @staticmethod
    def forward(ctx, logits, build):
        state = build(logits)
        ctx.state = state if ctx.needs_input_grad[0] else None
        return state.kd, state.cross_entropy

    @staticmethod
    def backward(ctx, kd_grad, label_grad):
        state, ctx.state = ctx.state, None
        return state.gradient(kd_grad, label_grad), None


class _ChunkedLoss(torch.autograd.Function):
    """A sum of per-chunk losses of one tensor whose gradient is computed chunk by chunk in the forward pass (as
    Liger's fused losses do), so that no chunk's temporaries outlive it. Backward can run once (no `retain_graph`)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, piece, chunks: list, counted: list) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(logits) if needs_grad else None  # every chunk's slot is written below
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for index, count in zip(chunks, counted):
            if not count:  # no counted item: no loss, no gradient
                if needs_grad:
                    grad[index] = 0.0
                continue
            value, chunk_grad = piece(logits[index].detach(), index, needs_grad)
            if needs_grad:
                grad[index] = chunk_grad
            total += value
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_output.to(grad.dtype)), None, None, None


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


# =====================================================================================================================
# Across tokenizers: a teacher and a student of different vocabularies (causal language models)
# =====================================================================================================================
# Two vocabularies have no class-by-class comparison: these losses compare the probability vectors of aligned
# predictions without a token-to-token map (ULD), or with one only for the tokens both vocabularies spell alike (span
# alignment). Which predictions are aligned is a `TokenAlignment`: by rank, as ULD aligns them, or by the text the
# tokens cover (`hf_distill.alignment.span_groups`, batched by the causal-LM task).


@dataclass(frozen=True)
class TokenAlignment:
    r"""Which student and teacher predictions a cross-vocabulary loss compares, in a batch of two tokenizations.

    Item $g$ of row $b$ pairs the student's prediction at logit position `student_positions[b, g]` with the teacher's
    at `teacher_positions[b, g]` (a causal LM's logits at position $i$ predict the token at $i + 1$). Rows hold
    different numbers of items; `mask` marks those that exist.

    With merges (an item whose text one side spells in several tokens), `student_merges[b, i] = g` marks each logit
    position $i$ that predicts a later token of item $g$, and `student_next[b, i]` is the token it predicts; the
    probabilities of those tokens multiply into the item's distribution ([`span_alignment_loss`]). The same for the
    teacher.

    Attributes:
        student_positions (`torch.LongTensor` of shape `(batch, G)`): the student's logit position of each item.
        teacher_positions (`torch.LongTensor` of shape `(batch, G)`): the teacher's.
        mask (`torch.BoolTensor` of shape `(batch, G)`): True for the items that exist.
        student_merges (`torch.LongTensor` of shape `(batch, student_len)`, *optional*): item of each later-token
            position, -1 elsewhere. `teacher_merges` likewise, `(batch, teacher_len)`.
        student_next (`torch.LongTensor`, the shape of the merges, *optional*): the token each logit position
            predicts (read where the merges are >= 0). `teacher_next` likewise.
    """

    student_positions: torch.Tensor
    teacher_positions: torch.Tensor
    mask: torch.Tensor
    student_merges: torch.Tensor | None = None
    teacher_merges: torch.Tensor | None = None
    student_next: torch.Tensor | None = None
    teacher_next: torch.Tensor | None = None

    @classmethod
    def by_rank(cls, student_targets: torch.Tensor, teacher_targets: torch.Tensor) -> TokenAlignment:
        """The $k$-th scored prediction of each side paired with the $k$-th of the other, $k$ up to the shorter side's
        count (ULD's alignment: Boizard et al. compare the answers' tokens position by position).

        Args:
            student_targets (`torch.BoolTensor` of shape `(batch, student_len)`): the logit positions that predict a
                scored token; `teacher_targets` likewise.
        """
        count = torch.minimum(student_targets.sum(1), teacher_targets.sum(1))
        width = int(count.max()) if count.numel() else 0
        # A stable sort of "not scored" puts each row's scored positions first, in order.
        student = torch.argsort((~student_targets).to(torch.int8), dim=1, stable=True)[:, :width]
        teacher = torch.argsort((~teacher_targets).to(torch.int8), dim=1, stable=True)[:, :width]
        mask = torch.arange(width, device=count.device)[None, :] < count[:, None]
        return cls(student, teacher.to(student.device), mask.to(student.device))


def _rows(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`values[b, positions[b, g]]` for every row and item: `(batch, G, ...)`."""
    batch = torch.arange(values.shape[0], device=values.device)[:, None]
    return values[batch, positions.to(values.device)]


def _sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`sum_r |sort_desc(p)_r - sort_desc(q)_r|` over the last dimension, the shorter one zero-padded."""
    p = p.sort(dim=-1, descending=True).values
    q = q.sort(dim=-1, descending=True).values
    width = max(p.shape[-1], q.shape[-1])
    p = F.pad(p, (0, width - p.shape[-1]))
    q = F.pad(q, (0, width - q.shape[-1]))
    return (p - q).abs().sum(-1)


def universal_logit_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alignment: TokenAlignment,
    temperature: float = 1.0,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Universal Logit Distillation (ULD; Boizard et al. 2024, *Towards Cross-Tokenizer Distillation: the Universal
    Logit Distillation Loss for LLMs*): aligned predictions of two vocabularies compared by their sorted probabilities.

    With $p^s = \mathrm{softmax}(z^s_i / T)$ over the student's $V_s$ tokens and $p^t = \mathrm{softmax}(z^t_j / T)$
    over the teacher's $V_t$ for an aligned pair $(i, j)$, each sorted in decreasing order and zero-padded to
    $V = \max(V_s, V_t)$ (the union vocabulary), per pair:

    $$\ell = \sum_{r=1}^{V} \big|\, \mathrm{sort}_\downarrow(p^s)_r - \mathrm{sort}_\downarrow(p^t)_r \,\big|$$

    the paper's closed form of the Wasserstein distance between the two distributions, which needs no map from one
    vocabulary to the other. Not scaled by $T^2$ (it compares probabilities, not log-probabilities).

    Args:
        student_logits (`torch.Tensor` of shape `(batch, student_len, V_s)`): the student's logits on its own
            tokenization.
        teacher_logits (`torch.Tensor` of shape `(batch, teacher_len, V_t)`): the teacher's, on its own.
        alignment ([`TokenAlignment`]): the pairs (ULD pairs by rank: [`TokenAlignment.by_rank`]).
        temperature (`float`): $T > 0$, applied to both.
        num_items (*optional*): divisor of the summed loss; defaults to the number of pairs.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p_s = torch.softmax(_rows(student_logits, alignment.student_positions).float() / temperature, dim=-1)
    p_t = torch.softmax(_rows(teacher_logits, alignment.teacher_positions).float() / temperature, dim=-1)
    return _reduce(_sorted_l1(p_s, p_t.to(p_s.device)), alignment.mask, num_items)


def _merged_probabilities(
    log_p: torch.Tensor,
    positions: torch.Tensor,
    merges: torch.Tensor | None,
    next_tokens: torch.Tensor | None,
) -> torch.Tensor:
    """Each item's distribution at its first position, times the probabilities of its later tokens: `(batch, G,
    V)`."""
    first = _rows(log_p, positions)
    if merges is None:
        return first.exp()
    merges, next_tokens = merges.to(log_p.device), next_tokens.to(log_p.device)
    later = merges >= 0
    predicted = log_p.gather(-1, next_tokens.clamp_min(0)[..., None]).squeeze(-1).masked_fill(~later, 0.0)
    log_mass = torch.zeros(positions.shape, dtype=log_p.dtype, device=log_p.device)
    log_mass = log_mass.scatter_add(1, merges.clamp_min(0), predicted)
    return (first + log_mass[..., None]).exp()


def span_alignment_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alignment: TokenAlignment,
    shared: tuple[torch.Tensor, torch.Tensor],
    temperature: float = 1.0,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Span alignment across vocabularies, in the manner of GOLD (Patiño et al. 2025, TRL's hybrid ULD) and MinED
    (Wan et al. 2024): predictions aligned by the text their tokens cover, the tokens both vocabularies spell alike
    compared one to one, [`universal_logit_distillation`]'s sorted comparison for the rest.

    An item $g$ is a group of tokens covering the same text on both sides ([`~hf_distill.alignment.span_groups`]):
    student tokens $s_1 \dots s_k$, whose first is predicted at logit position $i$, and teacher tokens $t_1 \dots t_m$,
    first predicted at $j$. With $p^s_i = \mathrm{softmax}(z^s_i / T)$ and $p^t_j$ likewise, a side that spells the
    text in several tokens has its mass of the merged span combined (GOLD's "observed" merge): the distribution at the
    first position times the probabilities of the later tokens,

    $$q^s_g(v) = p^s_i(v) \prod_{l=2}^{k} p^s(s_l \mid s_{<l}), \qquad
      q^t_g(u) = p^t_j(u) \prod_{l=2}^{m} p^t(t_l \mid t_{<l}),$$

    so that $q^s_g(s_1)$ is the student's probability of the whole span. With $M$ the pairs $(u, v)$ of teacher and
    student ids of the tokens spelled alike in both vocabularies, per item:

    $$\ell_g = \sum_{(u, v) \in M} \big|q^t_g(u) - q^s_g(v)\big|
      + \sum_r \big|\,\mathrm{sort}_\downarrow(q^t_g|_{V_t \setminus M})_r
      - \mathrm{sort}_\downarrow(q^s_g|_{V_s \setminus M})_r\,\big|$$

    (the shorter sorted vector zero-padded). Where both vocabularies spell every token alike this is the L1 distance
    of the two distributions; where they share none, ULD. Not scaled by $T^2$.

    Args:
        student_logits (`torch.Tensor` of shape `(batch, student_len, V_s)`): the student's logits on its own
            tokenization.
        teacher_logits (`torch.Tensor` of shape `(batch, teacher_len, V_t)`): the teacher's, on its own.
        alignment ([`TokenAlignment`]): the groups' first positions, and the merges of their later tokens.
        shared (`tuple[torch.Tensor, torch.Tensor]`): the teacher ids and the student ids of the tokens spelled alike
            (`hf_distill.alignment.shared_vocabulary`), in pairs.
        temperature (`float`): $T > 0$, applied to both.
        num_items (*optional*): divisor of the summed loss; defaults to the number of groups.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1).to(log_p_s.device)
    q_s = _merged_probabilities(log_p_s, alignment.student_positions, alignment.student_merges, alignment.student_next)
    q_t = _merged_probabilities(log_p_t, alignment.teacher_positions, alignment.teacher_merges, alignment.teacher_next)
    teacher_ids, student_ids = (ids.to(q_s.device, torch.long) for ids in shared)
    matched = (q_t[..., teacher_ids] - q_s[..., student_ids]).abs().sum(-1)
    unmatched = _sorted_l1(_without(q_s, student_ids), _without(q_t, teacher_ids))
    return _reduce(matched + unmatched, alignment.mask, num_items)


def _without(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`values` without the classes `ids` (last dimension)."""
    keep = torch.ones(values.shape[-1], dtype=torch.bool, device=values.device)
    keep[ids] = False
    return values[..., keep]
