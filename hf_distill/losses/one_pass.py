"""Losses and their gradients in one pass, written by hand as `torch.autograd.Function`s: a pass keeps one
float32 tensor of the logits' size for the backward pass, where the same loss through autograd keeps about five.

[`sparse_forward_kl`] scores the student against a top-k teacher; [`forward_kl_and_cross_entropy`] and
[`sparse_forward_kl_and_cross_entropy`] give the forward KL and the label loss of the same logits (T = 1) from one
buffer. `_ChunkedLoss` sums a loss over chunks of positions, each chunk's gradient made as the chunk is
([`~hf_distill.losses.soft_target_loss`] with `chunk_size`). The fused linear loss (`hf_distill.fused_linear`) runs
`_TopKPass` and `_DensePass` on each chunk of logits it makes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reduction import IGNORE_INDEX, _item_weights
from .top_k import LOG_FLOOR, TopKTargets

__all__ = ["forward_kl_and_cross_entropy", "sparse_forward_kl", "sparse_forward_kl_and_cross_entropy"]


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
