"""Build a DistilBERT-style student: the teacher's architecture with fewer transformer layers, initialised from a
subset of the teacher's layers (Sanh et al., 2019)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
from transformers import PreTrainedModel

from .architectures import SUPPORTED_MODEL_TYPES, architecture, layer_stack_path
from .layer_map import DEFAULT_STUDENT_STRATEGY, LAYER_STRATEGIES, strategy_teacher_layers
from .log import get_logger
from .prune import plan_width, pruned_config
from .references import teacher_reference
from .teacher import load_model

__all__ = ["SUPPORTED_MODEL_TYPES", "build_student", "select_teacher_layers", "teacher_reference"]

logger = get_logger(__name__)

# Kept for code that imports it from here (the command's StudentArguments); the vocabulary lives in layer_map.
STRATEGIES = LAYER_STRATEGIES

# Config attributes holding one entry per layer; they must follow the chosen layers.
_PER_LAYER_CONFIG_KEYS = ("layer_types", "mlp_layer_types")


def select_teacher_layers(
    num_teacher_layers: int,
    num_layers: int | None,
    strategy: str = DEFAULT_STUDENT_STRATEGY,
    layers: Sequence[int] | None = None,
) -> list[int]:
    """
    Choose which teacher blocks initialise the student.

    The strategies are those of [`~hf_distill.layer_map.strategy_teacher_layers`], which names teacher layers in
    `hidden_states` numbering (1..n); the student copies the blocks that write them (0-based, `layer - 1`), so a
    [`LayerMap`] of the same strategy pairs each student layer with the teacher layer it was copied from.

    Args:
        num_teacher_layers (`int`): Number of layers `n` of the teacher.
        num_layers (`int`, *optional*): Number of student layers `k`. Required for `"uniform"`, `"first"` and
            `"last"`; defaults to `ceil(n / 2)` for `"every_other"`; must be `None` or `len(layers)` with `layers`.
        strategy (`str`, *optional*, defaults to `"every_other"`): One of `"uniform"` (blocks `round(i * n / k) - 1`
            for i = 1..k: 12 -> 4 keeps 2, 5, 8, 11, ending with the teacher's last block), `"every_other"` (0, 2,
            4, ..., DistilBERT's choice), `"first"` (0..k-1) or `"last"` (n-k..n-1). Ignored when `layers` is given.
        layers (`Sequence[int]`, *optional*): Explicit, strictly increasing teacher block indices (0-based).

    Returns:
        `list[int]`: The strictly increasing teacher block indices; student block `i` copies teacher block `result[i]`.
    """
    n = num_teacher_layers
    if strategy not in LAYER_STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; valid strategies are {', '.join(LAYER_STRATEGIES)}.")
    if layers is not None:
        chosen = [int(i) for i in layers]
        if not chosen:
            raise ValueError("`layers` must not be empty.")
        for prev, cur in zip([-1] + chosen, chosen):
            if not 0 <= cur < n:
                raise ValueError(f"Teacher layer {cur} in `layers` is out of range: valid indices are 0..{n - 1}.")
            if cur <= prev:
                raise ValueError(f"`layers` must be strictly increasing, got {cur} after {prev} in {chosen}.")
        if num_layers is not None and num_layers != len(chosen):
            raise ValueError(f"num_layers={num_layers} disagrees with len(layers)={len(chosen)}; pass only one.")
        return chosen
    return [layer - 1 for layer in strategy_teacher_layers(strategy, n, num_layers)]


def _layer_prefix(model: PreTrainedModel, num_layers: int) -> str:
    """State-dict prefix of the layer list, e.g. `bert.encoder.layer` (head model) or `encoder.layer` (base model)."""
    prefix = layer_stack_path(model, "build a student from")
    if len(model.get_submodule(prefix)) != num_layers:
        raise RuntimeError(f"{type(model).__name__} has no {num_layers}-layer nn.ModuleList at {prefix!r}.")
    return prefix


def _source_key(key: str, prefix: str, chosen: list[int]) -> str:
    """Teacher state-dict key feeding student `key`: layer keys are re-indexed, everything else maps 1:1."""
    if not key.startswith(prefix + "."):
        return key
    index, _, rest = key[len(prefix) + 1 :].partition(".")
    return f"{prefix}.{chosen[int(index)]}.{rest}"


def build_student(
    teacher: PreTrainedModel | str | os.PathLike,
    num_layers: int | None = None,
    strategy: Literal["uniform", "every_other", "first", "last"] = DEFAULT_STUDENT_STRATEGY,
    layers: Sequence[int] | None = None,
    *,
    heads: int | None = None,
    intermediate_size: int | None = None,
    hidden_size: int | None = None,
    calibration: Iterable[Mapping[str, torch.Tensor]] | None = None,
    **from_pretrained_kwargs,
) -> PreTrainedModel:
    """
    Build a shallower (and, optionally, narrower) copy of `teacher`, initialised from teacher weights.

    Everything outside the layer stack (embeddings, final norm, pooler, task head, tied LM head, relative position
    bias, ...) is copied from the teacher and student layer `i` is copied from teacher layer `chosen[i]`. Every student
    weight must have a same-shaped teacher source and every teacher weight must be used or belong to a dropped layer.

    Args:
        teacher (`PreTrainedModel`, `str` or `os.PathLike`): The teacher, or a local directory / Hub id to load it
            from with the class named in `config.architectures[0]`.
        num_layers (`int`, *optional*): Number of student layers; see [`select_teacher_layers`].
        strategy (`str`, *optional*, defaults to `"every_other"`): `"uniform"`, `"every_other"` (DistilBERT's
            choice, and the command's default), `"first"` or `"last"`; see [`select_teacher_layers`]. The same name
            given as `layer_map` pairs each student layer with the teacher layer it was copied from.
        layers (`Sequence[int]`, *optional*): Explicit teacher layer indices; overrides `strategy`.
        heads (`int`, *optional*): Width pruning: attention heads per layer (default: the teacher's). See
            [`~hf_distill.prune.plan_width`] for what BERT (head size = hidden size / heads) and grouped-query
            attention require.
        intermediate_size (`int`, *optional*): Width pruning: feed-forward neurons per layer.
        hidden_size (`int`, *optional*): Width pruning: hidden channels (the embeddings and task head shrink too).
        calibration (*optional*): Batches of the user's data (dicts of tensors, as a data collator makes them) on
            which the teacher's heads, neurons and channels are ranked by activation (Minitron); required when a
            width shrinks. [`~hf_distill.prune.calibration_batches`] makes them from a tokenised dataset.
        from_pretrained_kwargs: Passed to `from_pretrained` when `teacher` is a path (e.g. `dtype`, `revision`).

    Returns:
        `PreTrainedModel`: The student, on the teacher's device and dtype and in the teacher's train/eval mode. Its
        config records `distillation_teacher_layers` (the copied blocks, 0-based) and `distillation_teacher` (the
        teacher's Hub id, or only the base name of a local folder; see [`teacher_reference`]); a width-pruned one
        also records its sizes and kept heads (`distillation_width`).
    """
    if isinstance(teacher, (str, os.PathLike)):
        teacher = load_model(teacher, init_kwargs=from_pretrained_kwargs)
    elif not isinstance(teacher, PreTrainedModel):
        raise TypeError(f"teacher must be a PreTrainedModel or a path, got {type(teacher).__name__}.")
    elif from_pretrained_kwargs:
        raise ValueError(f"{sorted(from_pretrained_kwargs)} only apply when `teacher` is a path.")

    num_teacher_layers = teacher.config.num_hidden_layers
    prefix = _layer_prefix(teacher, num_teacher_layers)
    chosen = select_teacher_layers(num_teacher_layers, num_layers, strategy, layers)

    plan = None
    if heads is not None or intermediate_size is not None or hidden_size is not None:
        plan = plan_width(teacher, chosen, heads, intermediate_size, hidden_size, calibration)
        config = pruned_config(teacher.config, plan, architecture(teacher))
    else:
        config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(chosen)  # attribute_map turns this into n_layer (GPT-2) / n_layers (DistilBERT)
    for key in _PER_LAYER_CONFIG_KEYS:
        per_layer = getattr(config, key, None)
        if isinstance(per_layer, list) and len(per_layer) == num_teacher_layers:
            setattr(config, key, [per_layer[i] for i in chosen])
    if isinstance(getattr(config, "max_window_layers", None), int):
        # Qwen: teacher layers >= max_window_layers use sliding attention; chosen is increasing, so the kept
        # full-attention layers form a prefix of the student and this count keeps every layer's attention type.
        config.max_window_layers = sum(i < teacher.config.max_window_layers for i in chosen)
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and chosen != list(range(len(chosen))):
        logger.warning("scale_attn_by_inverse_layer_idx scales attention by layer position; moved layers will differ.")
    config.name_or_path = ""  # the student is not the teacher checkpoint
    config.distillation_teacher_layers = chosen
    config.distillation_teacher = teacher_reference(teacher.name_or_path)

    with torch.device(teacher.device):
        student = type(teacher)._from_config(
            config, dtype=teacher.dtype, attn_implementation=teacher.config._attn_implementation
        )

    # nanoGPT-style strict copy: every student key needs a same-shaped teacher source, and nothing of the teacher
    # may be left behind except the dropped layers.
    teacher_state = teacher.state_dict()
    tied = getattr(student, "all_tied_weights_keys", None) or {}  # {tied key: source key}
    new_state, used = {}, set()
    for key, value in student.state_dict().items():
        source = _source_key(key, prefix, chosen)
        if source not in teacher_state and key in tied:  # a tied copy the state dict may omit: use its source
            source = _source_key(tied[key], prefix, chosen)
        if source not in teacher_state:
            raise RuntimeError(
                f"Student weight {key!r} (shape {tuple(value.shape)}) has no teacher source {source!r}."
            )
        kept = teacher_state[source]
        if plan is not None:  # the teacher's slice of the kept heads, neurons and channels
            kept = plan.slice(source, kept, value.shape, prefix, architecture(teacher))
        if kept.shape != value.shape:
            raise RuntimeError(
                f"Shape mismatch for {key!r}: student {tuple(value.shape)} vs teacher {source!r} {tuple(kept.shape)}."
            )
        new_state[key] = kept
        used.add(source)
    kept_layers = tuple(f"{prefix}.{i}." for i in chosen)
    leftover = [
        k for k in teacher_state if k not in used and (not k.startswith(prefix + ".") or k.startswith(kept_layers))
    ]
    if leftover:
        raise RuntimeError(f"Teacher weights with no place in the student: {leftover}.")
    with torch.no_grad():
        student.load_state_dict(new_state, strict=True)  # copies, so training the student never touches the teacher

    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    student.train(teacher.training)
    width = f", width {config.distillation_width}" if plan is not None else ""
    logger.info(
        f"Built {len(chosen)}-layer student from {num_teacher_layers}-layer {type(teacher).__name__}: kept teacher "
        f"layers {chosen}; parameters {teacher.num_parameters():,} -> {student.num_parameters():,}{width}."
    )
    return student
