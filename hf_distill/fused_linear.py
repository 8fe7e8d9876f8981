"""Fused linear distillation losses: the soft-target and the label loss of a language model computed from its final
hidden states and its output layer, chunk by chunk over positions, so that no `(positions, vocabulary)` tensor larger
than one chunk is ever made (Liger's fused linear losses; Hsu et al. 2024).

A language model's logits are `hidden @ weight.T (+ bias)`: at a 128k vocabulary and 8k tokens that product alone is
4 GiB of float32 before any loss. [`fused_linear_distillation_loss`] takes the hidden states and the weight instead,
makes the logits of `chunk_size` positions at a time, scores them against the teacher (dense logits, a top-k cache's
[`~hf_distill.losses.TopKTargets`], or the teacher's own hidden states and output layer, [`LinearHead`]) and turns the
chunk's gradient over the vocabulary into the gradients of the hidden states and of the weight at once, before the
next chunk. Values and gradients equal those of the loss terms computed from the whole logits ([`soft_target_loss`]
and [`task_cross_entropy`]), up to the order of float summation.

[`LinearHead`] stands where logits would, as `TopKTargets` does for a cache: a training step that takes the fused
loss carries the student's (and, with a live teacher, the teacher's) head inputs instead of its logits; see
[`probe_linear_head`] for when a model's logits are its head's linear map of its last hidden states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .architectures import input_names, unwrap
from .losses import IGNORE_INDEX, TopKTargets, soft_target_kl, soft_target_loss
from .losses.divergences import _plain
from .losses.one_pass import _DensePass, _TopKPass

__all__ = ["LinearHead", "fused_linear_distillation_loss", "head_of", "probe_linear_head"]

# Positions per chunk when none is given: about 2^26 logits (256 MiB of float32) per chunk, whatever the vocabulary.
# Smaller chunks cost time (more, smaller products, each adding into the weight's gradient: 128 positions a chunk at
# a 131,072-token vocabulary took 1.25x the time of the whole logits on a CPU); this keeps the loss under a quarter of
# the whole logits' memory from about 2,000 positions on.
CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class LinearHead:
    r"""Logits given by what makes them: $z = h W^\top + b$ for the hidden states $h$ of each item.

    Stands where logits `(..., num_classes)` would: `shape` is theirs, and indexing selects items (`head[rows]`);
    nothing of the vocabulary's width is made until [`logits`] is asked for some items.

    Attributes:
        hidden (`torch.Tensor` of shape `(..., hidden_size)`): the final hidden states (the output layer's inputs).
        weight (`torch.Tensor` of shape `(num_classes, hidden_size)`): the output layer's weight.
        bias (`torch.Tensor` of shape `(num_classes,)`, *optional*): its bias.
    """

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.hidden.shape[:-1], self.weight.shape[0]))

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    def dim(self) -> int:
        return self.hidden.dim()

    def __getitem__(self, index) -> LinearHead:
        return LinearHead(self.hidden[index], self.weight, self.bias)

    def logits(self) -> torch.Tensor:
        """The logits `(..., num_classes)`: for a chunk of items, or for tests (this is the tensor the fused loss
        never makes whole)."""
        return F.linear(self.hidden, self.weight, self.bias)


def head_of(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output layer's `(weight, bias)` of a transformers model (`get_output_embeddings()`, inside any wrapper)."""
    head = unwrap(model).get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def probe_linear_head(model: nn.Module, role: str = "student") -> str | None:
    """Why `model`'s logits cannot be made from its last hidden states and output layer, or `None` when they can.

    They can when its forward takes `logits_to_keep` (so a step can skip the logits) and, on a probe of 4 tokens, its
    logits equal `F.linear(hidden_states[-1], weight, bias)` of its output layer: models that scale their logits after
    the head (Cohere's `logit_scale`, Granite's `logits_scaling`) are told apart by the measurement. Soft-capping
    (`final_logit_softcapping`, Gemma 2) is nearly the identity on the small logits of a probe, so the config says.
    """
    plain = unwrap(model)
    if "logits_to_keep" not in input_names(plain):
        return f"the {role} ({type(plain).__name__}) takes no logits_to_keep, so its forward pass always makes logits"
    config = getattr(plain.config, "text_config", None) or plain.config
    if getattr(config, "final_logit_softcapping", None) or getattr(plain.config, "final_logit_softcapping", None):
        return f"the {role} ({type(plain).__name__}) soft-caps its logits after the head (final_logit_softcapping)"
    head = plain.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or head.weight.dim() != 2:
        return f"the {role} ({type(plain).__name__}) has no linear output layer"
    weight, bias = head.weight, getattr(head, "bias", None)
    vocabulary = min(weight.shape[0], getattr(plain.config, "vocab_size", None) or weight.shape[0])
    probe = torch.arange(4, device=weight.device).remainder(vocabulary).unsqueeze(0) + 1
    probe = probe.clamp_max(vocabulary - 1)
    with torch.no_grad():
        outputs = plain(input_ids=probe, output_hidden_states=True, return_dict=True)
        made = F.linear(outputs.hidden_states[-1].to(weight.dtype), weight, bias)
        logits = outputs.logits
    if logits.shape != made.shape or not torch.allclose(made.float(), logits.float(), rtol=1e-3, atol=1e-3):
        return (
            f"the {role}'s logits ({type(plain).__name__}) are not its output layer's linear map of its last hidden "
            "states (they are scaled or capped after the head)"
        )
    return None


def fused_linear_distillation_loss(
    student: LinearHead,
    teacher: torch.Tensor | TopKTargets | LinearHead | None,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    label_num_items: float | torch.Tensor | None = None,
    kd_weight: float = 1.0,
    label_weight: float = 0.0,
    temperature: float = 1.0,
    divergence: Callable[..., torch.Tensor] = soft_target_kl,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The soft-target loss and the cross-entropy of the logits $z = h W^\top + b$, made `chunk_size` positions at
    a time: `(kd, cross_entropy)`, each equal to [`~hf_distill.losses.soft_target_loss`] with `divergence` and to
    [`~hf_distill.losses.task_cross_entropy`] on the whole logits.

    The gradients of $w_{kd} \cdot kd + w_{label} \cdot ce$ with respect to $h$, $W$ and $b$ are computed in the
    forward pass, chunk by chunk (each chunk's logits are dropped before the next are made, as Liger's fused linear
    losses do: no logits are recomputed in the backward pass). So the loss that is backpropagated through the two
    values must weigh them as `kd_weight` and `label_weight` do, times any common factor (gradient accumulation,
    processes, a loss scaler): `loss = c * (kd_weight * kd + label_weight * ce)`; other weights are refused in the
    backward pass with a one-line error. Only the items that count (where `mask` is True or there is a label) are
    computed; the others get no gradient.

    Memory: one chunk's logits and their float32 temporaries, the gradients of $h$ (its size and dtype) and of $W$
    (float32 while it is summed over chunks), and the teacher's targets as given: with a [`LinearHead`] teacher its
    logits are made one chunk at a time too.

    The fast passes of [`~hf_distill.losses.forward_kl_and_cross_entropy`] (one float32 buffer per chunk) serve the
    forward KL at T = 1 (dense or top-k teacher, with or without labels) and the top-k forward KL without labels at
    any temperature; the other divergences and temperatures take autograd on each chunk's logits.

    Args:
        student ([`LinearHead`]): the student's final hidden states `(..., hidden_size)` (with gradient), output layer
            weight `(num_classes, hidden_size)` and bias.
        teacher (`torch.Tensor` `(..., num_classes)`, [`~hf_distill.losses.TopKTargets`], [`LinearHead`] or `None`):
            the teacher's logits, its top-k targets at `temperature`, or its own hidden states and output layer;
            `None` (or `kd_weight=0`) computes the cross-entropy alone.
        labels (`torch.Tensor` of shape `(...)`, *optional*): class ids, `ignore_index` where there is none; `None`
            (or `label_weight=0`) computes the soft-target loss alone.
        mask (`torch.Tensor` of shape `(...)`, *optional*): the items the soft-target loss counts.
        num_items, label_num_items (*optional*): the divisors of the two sums (defaults: the counted items, the
            labelled items), as in [`~hf_distill.losses.soft_target_kl`].
        kd_weight, label_weight (`float`): the weights the backpropagated loss gives the two values (>= 0).
        temperature (`float`): the soft targets' temperature; the soft-target loss is scaled by $T^2$.
        divergence (`Callable`): one of [`~hf_distill.losses.DIVERGENCES`], its mixing weight bound.
        chunk_size (`int`, *optional*): positions per chunk; default about $2^{26}$ logits per chunk.
        ignore_index (`int`): the label of items without one.

    Returns:
        `(kd, cross_entropy)`: two scalar float32 tensors (0 for a value that was not asked for).
    """
    if not isinstance(student, LinearHead):
        raise TypeError(f"student must be a LinearHead (hidden states and output layer), got {type(student).__name__}")
    kd_weight = float(kd_weight) if teacher is not None else 0.0
    label_weight = float(label_weight) if labels is not None else 0.0
    if kd_weight < 0 or label_weight < 0 or not (kd_weight or label_weight):
        raise ValueError(
            f"kd_weight={kd_weight:g} and label_weight={label_weight:g} (with a teacher: {teacher is not None}, "
            f"labels: {labels is not None}): give at least one weight > 0 with its targets, none < 0"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
    items, width = student.hidden.shape[:-1], student.weight.shape[0]
    if student.weight.dim() != 2 or student.weight.shape[1] != student.hidden.shape[-1]:
        raise ValueError(
            f"the output layer's weight has shape {tuple(student.weight.shape)}, expected (num_classes, "
            f"{student.hidden.shape[-1]}) for hidden states of shape {tuple(student.hidden.shape)}"
        )
    if kd_weight and tuple(teacher.shape) != (*items, width):
        raise ValueError(
            f"the student's logits would have shape {(*items, width)} but the teacher's targets stand for "
            f"{tuple(teacher.shape)}"
        )
    device = student.hidden.device
    if mask is not None:
        mask = mask.to(device, torch.bool)
        if mask.shape != items:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(items)}")
    if labels is not None and labels.shape != items:
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected {tuple(items)}")
    # Per-item weights of both sums (1 / divisor where the item counts, 0 elsewhere), flattened over the items.
    kd_divisor = kd_items = None
    if kd_weight:
        kd_divisor = _divisor(mask, items, num_items, device)
        kd_items = (mask.float() if mask is not None else torch.ones(items, device=device)).reshape(-1) / kd_divisor
    labelled = label_items = flat_labels = None
    if label_weight:
        labelled = labels.to(device) != ignore_index
        label_items = labelled.float().reshape(-1) / _divisor(labelled, items, label_num_items, device)
        flat_labels = labels.to(device, torch.long).masked_fill(~labelled, 0).reshape(-1)
    counted = torch.zeros(items, dtype=torch.bool, device=device)
    if kd_weight:
        counted |= mask if mask is not None else True
    if label_weight:
        counted |= labelled
    rows = counted.reshape(-1).nonzero().squeeze(-1)
    size = chunk_size or max(1, CHUNK_ELEMENTS // max(width, 1))
    plan = _Plan(
        teacher if kd_weight else None, flat_labels, kd_items, kd_divisor, label_items, kd_weight, label_weight,
        float(temperature), divergence, rows, size,
    )  # fmt: skip
    return _FusedLinear.apply(student.hidden, student.weight, student.bias, plan)


@dataclass
class _Plan:
    """What one call of the fused loss computes: the targets, the per-item weights (flattened), the loss weights, and
    the rows (flattened items that count) taken `size` at a time."""

    teacher: torch.Tensor | TopKTargets | LinearHead | None
    labels: torch.Tensor | None
    kd_items: torch.Tensor | None
    kd_divisor: torch.Tensor | float | None
    label_items: torch.Tensor | None
    kd_weight: float
    label_weight: float
    temperature: float
    divergence: Callable
    rows: torch.Tensor
    size: int

    def teacher_rows(self, rows: torch.Tensor):
        """The teacher's targets of the flattened items `rows`: logits, top-k targets or logits made from its head."""
        teacher = self.teacher
        if isinstance(teacher, LinearHead):
            hidden = teacher.hidden.reshape(-1, teacher.hidden.shape[-1])[rows]
            with torch.no_grad():
                return F.linear(hidden.to(teacher.weight.dtype), teacher.weight, teacher.bias)
        if isinstance(teacher, TopKTargets):
            k = teacher.ids.shape[-1]
            return TopKTargets(
                teacher.ids.reshape(-1, k)[rows], teacher.logprobs.reshape(-1, k)[rows], teacher.num_classes
            )
        return teacher.detach().reshape(-1, teacher.shape[-1])[rows]

    def chunk(self, logits: torch.Tensor, rows: torch.Tensor, with_grad: bool):
        """`(kd sum, cross-entropy sum, gradient of the weighted sum with respect to the chunk's logits)` of the
        logits `(chunk, classes)` of `rows`; the sums are already divided by their item counts."""
        kd_weight, label_weight = self.kd_weight, self.label_weight
        teacher = self.teacher_rows(rows) if kd_weight else None
        weights = self.kd_items[rows] if kd_weight else torch.zeros(len(rows), device=logits.device)
        labels = self.labels[rows] if label_weight else None
        label_weights = self.label_items[rows] if label_weight else None
        forward_kl = _plain(self.divergence) is soft_target_kl
        zero = torch.zeros((), device=logits.device)
        top_k = isinstance(teacher, TopKTargets)
        if forward_kl and kd_weight and (self.temperature == 1 or (top_k and not label_weight)):
            # One float32 buffer of the chunk's size for both gradients (see `losses.forward_kl_and_cross_entropy`).
            # The chunk's logits are this loss's own: the pass makes its buffer of them, in place.
            if top_k:
                state = _TopKPass(
                    logits, teacher.ids, teacher.logprobs, self.temperature, weights, labels, label_weights, own=True
                )
            else:
                if labels is None:
                    labels, label_weights = torch.zeros_like(rows), torch.zeros_like(weights)
                state = _DensePass(logits, teacher, weights, labels, label_weights, own=True)
            grad = state.gradient(kd_weight, label_weight) if with_grad else None
            return state.kd, state.cross_entropy, grad
        # Any other divergence or temperature: autograd on this chunk's logits alone.
        with torch.enable_grad():
            z = logits.detach().requires_grad_(with_grad)
            kd = ce = zero
            if kd_weight:
                kd = soft_target_loss(z, teacher, self.temperature, weights > 0, self.kd_divisor, self.divergence)
            if label_weight:
                ce = (F.cross_entropy(z.float(), labels, reduction="none") * label_weights).sum()
            grad = None
            if with_grad:
                (grad,) = torch.autograd.grad(kd_weight * kd + label_weight * ce, z)
        return kd.detach(), ce.detach(), grad


def _divisor(mask, items: torch.Size, num_items, device) -> torch.Tensor | float:
    """What a sum over `items` is divided by: `num_items`, or the number of counted items; at least 1 (an empty
    micro-batch contributes 0, as in `losses.reduction._reduce`)."""
    denominator = (mask.sum() if mask is not None else items.numel()) if num_items is None else num_items
    if torch.is_tensor(denominator):
        return denominator.to(device, torch.float32).clamp_min(1.0)
    return max(float(denominator), 1.0)


class _FusedLinear(torch.autograd.Function):
    """`(kd, cross_entropy)` of the logits `hidden @ weight.T + bias`, chunk by chunk; the gradients of the weighted
    sum are made in the forward pass and scaled by the upstream gradient in the backward pass (once)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, plan: _Plan):
        wants = ctx.needs_input_grad[:3]  # hidden, weight, bias (a frozen head, as under LoRA, gets none)
        with_grad = any(wants)
        device = hidden.device
        # Under autocast the output layer would run in the autocast dtype: so do the chunks.
        autocast = torch.is_autocast_enabled(device.type)
        compute_dtype = torch.get_autocast_dtype(device.type) if autocast else weight.dtype
        with torch.autocast(device.type, enabled=False), torch.no_grad():
            flat = hidden.detach().reshape(-1, hidden.shape[-1])
            w = weight.detach().to(compute_dtype)
            b = bias.detach().to(compute_dtype) if bias is not None else None
            grad_hidden = torch.zeros_like(flat) if wants[0] else None
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=device) if wants[1] else None
            grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=device) if wants[2] else None
            kd = torch.zeros((), dtype=torch.float32, device=device)
            ce = torch.zeros((), dtype=torch.float32, device=device)
            for start in range(0, len(plan.rows), plan.size):
                rows = plan.rows[start : start + plan.size]
                h = flat[rows].to(compute_dtype)
                logits = F.linear(h, w, b)
                chunk_kd, chunk_ce, grad = plan.chunk(logits, rows, with_grad)
                kd += chunk_kd
                ce += chunk_ce
                del logits
                if not with_grad:
                    continue
                grad = grad.to(compute_dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = (grad @ w).to(grad_hidden.dtype)
                if grad_weight is not None and compute_dtype == torch.float32:
                    grad_weight.addmm_(grad.t(), h)
                elif grad_weight is not None:  # the chunk's product in the compute dtype, summed in float32
                    grad_weight += (grad.t() @ h).float()
                if grad_bias is not None:
                    grad_bias += grad.float().sum(0)
        ctx.save_for_backward(
            grad_hidden.view(hidden.shape) if grad_hidden is not None else None,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
        )
        ctx.loss_weights = (plan.kd_weight, plan.label_weight)
        return kd, ce

    @staticmethod
    def backward(ctx, kd_grad, ce_grad):
        # Scaled in place: no second copy of the weight's gradient. So the backward pass runs once (no retain_graph).
        if getattr(ctx, "consumed", False):
            raise RuntimeError("the fused linear loss's backward pass runs once: its gradients were handed over")
        ctx.consumed = True
        scale = _upstream_scale(kd_grad, ce_grad, *ctx.loss_weights)
        grads = [g.mul_(scale.to(g.dtype)) if g is not None else None for g in ctx.saved_tensors]
        return *grads, None


def _upstream_scale(kd_grad: torch.Tensor, ce_grad: torch.Tensor, kd_weight: float, label_weight: float):
    """The common factor `c` of the upstream gradients `(c * kd_weight, c * label_weight)`; other upstream gradients
    are refused (the gradient computed in the forward pass is that of the weighted sum)."""
    scale = kd_grad / kd_weight if kd_weight else ce_grad / label_weight
    given = torch.stack([kd_grad.float(), ce_grad.float()])
    expected = torch.stack([scale.float() * kd_weight, scale.float() * label_weight])
    if not bool(torch.allclose(given, expected, rtol=1e-4, atol=1e-12 + 1e-6 * float(expected.abs().max()))):
        raise RuntimeError(
            f"the fused linear loss made the gradient of kd_weight * kd + label_weight * cross_entropy with weights "
            f"({kd_weight:g}, {label_weight:g}) in its forward pass, but the loss backpropagated through it weighs "
            f"them ({float(kd_grad):g}, {float(ce_grad):g}): give fused_linear_distillation_loss the weights the loss "
            "uses"
        )
    return scale


def default_chunk_size(num_classes: int) -> int:
    """Positions per chunk when none is given: about 2^26 logits (256 MiB of float32) per chunk."""
    return max(1, CHUNK_ELEMENTS // max(num_classes, 1))
