"""Soft targets from a top-k teacher: [`TopKTargets`], a teacher distribution kept as its $k$ most likely classes
per item (as a top-k teacher cache stores it), and [`top_k_buckets`], the $k + 1$ buckets on which a student is
compared with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LOG_FLOOR", "TopKTargets", "top_k_buckets"]


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
