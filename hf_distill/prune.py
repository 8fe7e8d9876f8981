"""Width pruning: a student with fewer attention heads, fewer feed-forward neurons and a narrower hidden size than its
teacher, keeping the teacher's most important ones (Minitron; Muralidharan et al., 2024, arXiv:2407.14679).

Importance is activation-based, measured by forward passes of the teacher over a few calibration batches of the
user's data, as Minitron does:

- a head: the mean, over real tokens, of the L2 norm of its output (its slice of the input of the attention output
  projection, before the heads are mixed);
- a feed-forward neuron: the mean, over real tokens, of its absolute activation (the input of the down projection);
- a hidden channel: the sum, over the kept layers' norms (BERT's LayerNorms, Llama's RMSNorms), of the mean absolute
  value of that channel of the norm's output, so the norm's own weight counts ("LayerNorm-weighted").

Why activations rather than gradients (Michel et al., 2019): they need no labels (a transfer set without labels
calibrates as well), no backward pass (a few seconds on a CPU) and no loss to choose, and Minitron found them as good
as or better than gradient-based scores for width pruning. The student then recovers by distillation.

Which weights carry which dimension (heads, key/value heads, neurons, hidden channels) comes from the family table
([`~hf_distill.architectures.Architecture.widths`]); [`~hf_distill.build_student`] calls [`plan_width`], builds the
smaller config with [`pruned_config`] and copies each kept slice with [`WidthPlan.slice`].
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .architectures import ARCHITECTURES, Architecture, architecture, input_names, layer_stack
from .log import get_logger

__all__ = [
    "WidthImportance",
    "WidthPlan",
    "calibration_batches",
    "keep_most_important",
    "measure_importance",
    "plan_width",
    "pruned_config",
]

logger = get_logger(__name__)

ROLES = ("hidden", "heads", "kv", "ffn")
PRUNABLE_MODEL_TYPES = tuple(sorted(name for name, arch in ARCHITECTURES.items() if arch.widths))


def keep_most_important(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The indices of the `keep` highest `scores`, in increasing order (so kept weights stay in the teacher's order);
    among equal scores the lower index is kept."""
    if not 0 < keep <= scores.numel():
        raise ValueError(f"cannot keep {keep} of {scores.numel()} items")
    order = torch.argsort(-scores.double(), stable=True)
    return torch.sort(order[:keep]).values


@dataclass
class WidthImportance:
    """Activation-based importance of each teacher layer's heads and neurons, and of the hidden channels.

    Attributes:
        heads (`dict[int, torch.Tensor]`): teacher block (0-based) -> one score per query head.
        ffn (`dict[int, torch.Tensor]`): teacher block -> one score per feed-forward neuron.
        hidden (`torch.Tensor`): one score per hidden channel, summed over the measured blocks' norms.
        tokens (`int`): the real tokens measured.
    """

    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)
    hidden: torch.Tensor | None = None
    tokens: int = 0


def _width_architecture(model: PreTrainedModel) -> Architecture:
    arch = architecture(model, "prune")
    if not arch.widths:
        raise ValueError(
            f"Cannot prune the width of {type(model).__name__} (model_type {model.config.model_type!r}): hf_distill "
            f"does not know where its heads, neurons and norms are; width pruning supports: "
            f"{', '.join(PRUNABLE_MODEL_TYPES)} (depth reduction works for all supported types)"
        )
    return arch


def _modules_with(arch: Architecture, position: int, role: str) -> list[str]:
    return [path for path, roles in arch.widths if len(roles) > position and roles[position] == role]


def head_dim_of(config: PretrainedConfig, arch: Architecture) -> int:
    explicit = getattr(config, arch.head_dim_key, None) if arch.head_dim_key else None
    return explicit or config.hidden_size // config.num_attention_heads


def _kv_heads_of(config: PretrainedConfig, arch: Architecture) -> int:
    value = getattr(config, arch.kv_heads_key, None) if arch.kv_heads_key else None
    return value or config.num_attention_heads


@torch.no_grad()
def measure_importance(
    model: PreTrainedModel, calibration: Iterable[Mapping[str, torch.Tensor]], layers: Sequence[int] | None = None
) -> WidthImportance:
    """Runs `model` (in eval mode) over the `calibration` batches and scores heads, neurons and hidden channels.

    Args:
        model (`PreTrainedModel`): the teacher (a family with `widths` in the architectures table).
        calibration: batches as a data collator makes them (`input_ids`, `attention_mask`, ...); labels are ignored.
        layers (`Sequence[int]`, *optional*): the blocks (0-based) to score; default all. Hidden channels are scored
            over these blocks' norms.

    Returns:
        [`WidthImportance`].
    """
    arch = _width_architecture(model)
    stack = layer_stack(model, "prune")
    layers = list(range(len(stack))) if layers is None else list(layers)
    heads, head_dim = model.config.num_attention_heads, head_dim_of(model.config, arch)
    sums: dict[tuple[str, int], torch.Tensor] = {}
    state = {"mask": None}

    def add(key, values):  # values: (batch, seq, n); summed over the real tokens
        mask = state["mask"]
        weights = mask.to(values.dtype).unsqueeze(-1) if mask is not None else torch.ones_like(values[..., :1])
        total = (values.float() * weights.float()).sum(dim=(0, 1))
        sums[key] = sums[key] + total if key in sums else total

    def head_hook(layer):
        def hook(module, args):
            x = args[0]
            add(("heads", layer), x.reshape(*x.shape[:-1], heads, head_dim).float().norm(dim=-1))

        return hook

    def ffn_hook(layer):
        return lambda module, args: add(("ffn", layer), args[0].abs())

    def hidden_hook(module, args, output):
        add(("hidden", -1), output.abs())

    handles = []
    try:
        for layer in layers:
            block = stack[layer]
            for path in _modules_with(arch, 1, "heads"):
                handles.append(block.get_submodule(path).register_forward_pre_hook(head_hook(layer)))
            for path in _modules_with(arch, 1, "ffn"):
                handles.append(block.get_submodule(path).register_forward_pre_hook(ffn_hook(layer)))
            for path, roles in arch.widths:
                if roles == ("hidden",):
                    handles.append(block.get_submodule(path).register_forward_hook(hidden_hook))
        was_training = model.training
        model.eval()
        accepted, tokens = input_names(model), 0
        for batch in calibration:
            inputs = {k: v.to(model.device) for k, v in batch.items() if k in accepted and k != "labels"}
            mask = inputs.get("attention_mask")
            state["mask"] = mask
            tokens += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            model(**inputs)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    if tokens == 0:
        raise ValueError("the calibration batches hold no tokens: give a few batches of the training data")
    result = WidthImportance(tokens=tokens)
    for (role, layer), total in sums.items():
        score = total / tokens
        if role == "hidden":
            result.hidden = score
        else:
            getattr(result, role)[layer] = score
    return result


@dataclass
class WidthPlan:
    """Which heads, key/value heads, neurons and hidden channels of the teacher the student keeps.

    Attributes:
        head_dim (`int`): the size of one head (unchanged by pruning).
        teacher_hidden_size (`int`): the teacher's hidden size.
        teacher_sizes (`dict`): the teacher's heads, neurons and hidden size (for the card).
        heads (`dict[int, list[int]]`): teacher block -> kept query heads (absent: all).
        kv_heads (`dict[int, list[int]]`): teacher block -> kept key/value heads (absent: all).
        ffn (`dict[int, list[int]]`): teacher block -> kept neurons (absent: all).
        hidden (`list[int]`, *optional*): kept hidden channels (None: all).
        num_heads, num_kv_heads, intermediate_size, hidden_size (`int`): the student's sizes.
    """

    head_dim: int
    teacher_hidden_size: int
    teacher_sizes: dict
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    hidden_size: int
    heads: dict[int, list[int]] = field(default_factory=dict)
    kv_heads: dict[int, list[int]] = field(default_factory=dict)
    ffn: dict[int, list[int]] = field(default_factory=dict)
    hidden: list[int] | None = None

    def channels(self, role: str, layer: int | None) -> torch.Tensor | None:
        """The kept indices along a dimension of `role` in teacher block `layer` (None: the whole dimension)."""
        if role == "hidden":
            kept = self.hidden
        elif role == "ffn":
            kept = self.ffn.get(layer)
        else:
            heads = (self.heads if role == "heads" else self.kv_heads).get(layer)
            kept = None if heads is None else [h * self.head_dim + i for h in heads for i in range(self.head_dim)]
        return None if kept is None else torch.tensor(kept, dtype=torch.long)

    def slice(
        self, key: str, value: torch.Tensor, shape: Sequence[int], prefix: str, arch: Architecture
    ) -> torch.Tensor:
        """The part of the teacher weight `key` (a teacher state-dict key) that the student weight of `shape` keeps.

        Inside the layer stack (`prefix`), the table's roles say which dimension holds what; outside it (embeddings,
        final norm, pooler, task head), a dimension that shrank can only be the hidden size.
        """
        if key.startswith(prefix + "."):
            index, _, rest = key[len(prefix) + 1 :].partition(".")
            module = rest.rpartition(".")[0]
            roles = dict(arch.widths).get(module)
            if roles is not None:
                for dim, role in enumerate(roles[: value.dim()]):
                    kept = self.channels(role, int(index))
                    if kept is not None:
                        value = value.index_select(dim, kept.to(value.device))
                return value
            if tuple(value.shape) != tuple(shape):
                raise RuntimeError(
                    f"Cannot prune {key!r} (shape {tuple(value.shape)} -> {tuple(shape)}): its module {module!r} is "
                    "not in the architectures table's widths"
                )
            return value
        for dim, (before, after) in enumerate(zip(value.shape, shape)):
            if before == after:
                continue
            if self.hidden is None or before != self.teacher_hidden_size or after != len(self.hidden):
                raise RuntimeError(
                    f"Cannot prune {key!r} (shape {tuple(value.shape)} -> {tuple(shape)}): outside the layers only "
                    f"the hidden size ({self.teacher_hidden_size}) may shrink"
                )
            value = value.index_select(dim, torch.tensor(self.hidden, dtype=torch.long, device=value.device))
        return value

    def describe(self) -> dict:
        """What the student's config records about its width (`distillation_width`)."""
        return {
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_size": self.hidden_size,
            "kept_heads": {str(layer): heads for layer, heads in self.heads.items()},
            "teacher": self.teacher_sizes,
            "importance": "activation (Minitron)",
        }


def _check_count(name: str, value: int | None, most: int) -> int:
    if value is None:
        return most
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name}={value!r} is out of range: the teacher has {most}, keep between 1 and {most}")
    return value


def check_width(
    teacher: PreTrainedModel,
    heads: int | None = None,
    intermediate_size: int | None = None,
    hidden_size: int | None = None,
) -> tuple[int, int, int]:
    """The sizes a width-pruned student of `teacher` keeps (heads, feed-forward neurons, hidden size; the teacher's
    where not given), checked against the teacher before anything is measured: what [`plan_width`] and the start of
    `hf-distill train` refuse.

    Raises:
        `ValueError`: a family without width knowledge, a size out of range (0, or more than the teacher has), a head
            count that breaks grouped-query attention, or (BERT) a hidden size that is not heads x head size.
    """
    arch = _width_architecture(teacher)
    config = teacher.config
    n_heads, n_kv, head_dim = config.num_attention_heads, _kv_heads_of(config, arch), head_dim_of(config, arch)
    keep_heads = _check_count("heads", heads, n_heads)
    keep_ffn = _check_count("intermediate_size", intermediate_size, config.intermediate_size)
    keep_hidden = _check_count("hidden_size", hidden_size, config.hidden_size)
    if n_kv != n_heads and keep_heads % n_kv:
        raise ValueError(
            f"heads={keep_heads} breaks grouped-query attention: {type(teacher).__name__} has {n_kv} key/value heads "
            f"shared by {n_heads} query heads, so keep a multiple of {n_kv} (each group keeps its best query heads)"
        )
    if arch.head_dim_key is None and keep_hidden != keep_heads * head_dim:
        raise ValueError(
            f"{type(teacher).__name__} computes its head size as hidden_size / num_attention_heads, so keeping "
            f"{keep_heads} heads of size {head_dim} needs hidden_size={keep_heads * head_dim}, got {keep_hidden}: "
            f"give hidden_size={keep_heads * head_dim} with heads={keep_heads}, or heads={keep_hidden // head_dim} "
            f"with hidden_size={keep_hidden}"
            + ("" if keep_hidden % head_dim == 0 else f" (a multiple of the head size {head_dim})")
        )
    return keep_heads, keep_ffn, keep_hidden


def plan_width(
    teacher: PreTrainedModel,
    layers: Sequence[int],
    heads: int | None = None,
    intermediate_size: int | None = None,
    hidden_size: int | None = None,
    calibration: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> WidthPlan:
    """Chooses what a width-pruned student of `teacher` keeps in each of the teacher blocks `layers`.

    Args:
        teacher (`PreTrainedModel`): the teacher.
        layers (`Sequence[int]`): the teacher blocks the student copies (0-based).
        heads (`int`, *optional*): query heads per layer (the same in every layer: the config has one count). Under
            grouped-query attention, a multiple of the key/value heads: each group keeps its best query heads.
        intermediate_size (`int`, *optional*): feed-forward neurons per layer.
        hidden_size (`int`, *optional*): hidden channels. A family whose head size is `hidden_size /
            num_attention_heads` (BERT) needs `hidden_size == heads * head_size`.
        calibration: batches to measure importance on; required when anything shrinks.

    Raises:
        `ValueError`: a size out of range, zero heads, a head count that breaks grouped-query attention or the head
            size, or no calibration data.
    """
    arch = _width_architecture(teacher)
    config = teacher.config
    keep_heads, keep_ffn, keep_hidden = check_width(teacher, heads, intermediate_size, hidden_size)
    n_heads, n_kv, head_dim = config.num_attention_heads, _kv_heads_of(config, arch), head_dim_of(config, arch)
    grouped = n_kv != n_heads
    plan = WidthPlan(
        head_dim=head_dim,
        teacher_hidden_size=config.hidden_size,
        teacher_sizes={
            "num_attention_heads": n_heads,
            "intermediate_size": config.intermediate_size,
            "hidden_size": config.hidden_size,
        },
        num_heads=keep_heads,
        num_kv_heads=n_kv if grouped else keep_heads,
        intermediate_size=keep_ffn,
        hidden_size=keep_hidden,
    )
    if (keep_heads, keep_ffn, keep_hidden) == (n_heads, config.intermediate_size, config.hidden_size):
        return plan
    if calibration is None:
        raise ValueError(
            "width pruning ranks heads, neurons and channels by their activations on calibration data: pass "
            "calibration= a few batches of the training data (see hf_distill.prune.calibration_batches)"
        )
    importance = measure_importance(teacher, calibration, layers)
    for layer in layers:
        if keep_heads < n_heads:
            scores = importance.heads[layer]
            if grouped:  # query heads j*r .. (j+1)*r - 1 share key/value head j (transformers' repeat_kv)
                per_group, kept_per_group = n_heads // n_kv, keep_heads // n_kv
                plan.heads[layer] = [
                    g * per_group + int(i)
                    for g in range(n_kv)
                    for i in keep_most_important(scores[g * per_group : (g + 1) * per_group], kept_per_group)
                ]
            else:
                plan.heads[layer] = keep_most_important(scores, keep_heads).tolist()
                plan.kv_heads[layer] = plan.heads[layer]
        if keep_ffn < config.intermediate_size:
            plan.ffn[layer] = keep_most_important(importance.ffn[layer], keep_ffn).tolist()
    if keep_hidden < config.hidden_size:
        plan.hidden = keep_most_important(importance.hidden, keep_hidden).tolist()
    logger.info(
        f"Width plan from {importance.tokens} calibration tokens: heads {n_heads} -> {keep_heads}, "
        f"neurons {config.intermediate_size} -> {keep_ffn}, hidden {config.hidden_size} -> {keep_hidden}"
    )
    return plan


def pruned_config(config: PretrainedConfig, plan: WidthPlan, arch: Architecture) -> PretrainedConfig:
    """A copy of `config` with the plan's sizes (the caller sets the layer count)."""
    config = copy.deepcopy(config)
    config.num_attention_heads = plan.num_heads
    if arch.kv_heads_key:
        setattr(config, arch.kv_heads_key, plan.num_kv_heads)
    if arch.head_dim_key:
        setattr(config, arch.head_dim_key, plan.head_dim)  # explicit: hidden_size / heads no longer gives it
    config.intermediate_size = plan.intermediate_size
    config.hidden_size = plan.hidden_size
    config.distillation_width = plan.describe()
    return config


def calibration_batches(dataset, data_collator, num_examples: int = 256, batch_size: int = 32) -> list[dict]:
    """The first `num_examples` examples of a tokenised `dataset` as batches of `data_collator` (what
    [`~hf_distill.build_student`] takes as `calibration`). Label columns are kept out."""
    count = min(num_examples, len(dataset))
    keep = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    rows = dataset.select(range(count)).select_columns(keep)
    return [
        data_collator([rows[i] for i in range(s, min(s + batch_size, count))]) for s in range(0, count, batch_size)
    ]


def is_pruned(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "distillation_width", None) is not None
