"""Build a DistilBERT-style student: the teacher's architecture with fewer transformer layers, initialised from a
subset of the teacher's layers (Sanh et al., 2019)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Literal

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import logging

__all__ = ["SUPPORTED_MODEL_TYPES", "build_student", "select_teacher_layers"]

logger = logging.get_logger(__name__)

STRATEGIES = ("uniform", "every_other", "first", "last")

# Dotted path of the layer `nn.ModuleList`, relative to the base model (`model.base_model`). Only families whose
# layers are independent, identically shaped blocks are listed: anything else could silently produce a broken student.
_LAYER_STACKS = {
    "bert": "encoder.layer",
    "roberta": "encoder.layer",
    "xlm-roberta": "encoder.layer",
    "electra": "encoder.layer",
    "mpnet": "encoder.layer",
    "deberta-v2": "encoder.layer",
    "distilbert": "transformer.layer",
    "gpt2": "h",
    "llama": "layers",
    "mistral": "layers",
    "qwen2": "layers",
    "qwen3": "layers",
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_LAYER_STACKS))

# Families we know about but deliberately refuse, with the reason.
_REJECTED = {
    "albert": "ALBERT shares one set of layer weights across all its layers, so there are no per-layer weights to "
    "select from; shrink `num_hidden_layers` in the config instead",
}

# Config attributes holding one entry per layer; they must follow the chosen layers.
_PER_LAYER_CONFIG_KEYS = ("layer_types", "mlp_layer_types")

# Keyword arguments of `from_pretrained` that also make sense for `AutoConfig.from_pretrained`.
_CONFIG_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


def select_teacher_layers(
    num_teacher_layers: int, num_layers: int | None, strategy: str, layers: Sequence[int] | None
) -> list[int]:
    """
    Choose which teacher layers initialise the student.

    Args:
        num_teacher_layers (`int`): Number of layers `n` of the teacher.
        num_layers (`int`, *optional*): Number of student layers `k`. Required for `"uniform"`, `"first"` and
            `"last"`; defaults to `ceil(n / 2)` for `"every_other"`; must be `None` or `len(layers)` with `layers`.
        strategy (`str`): One of `"uniform"` (`round(i * n / k)`), `"every_other"` (0, 2, 4, ..., DistilBERT's
            choice), `"first"` (0..k-1) or `"last"` (n-k..n-1). Ignored when `layers` is given.
        layers (`Sequence[int]`, *optional*): Explicit, strictly increasing teacher layer indices.

    Returns:
        `list[int]`: The strictly increasing teacher layer indices; student layer `i` copies teacher layer `result[i]`.
    """
    n = num_teacher_layers
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; valid strategies are {', '.join(STRATEGIES)}.")
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

    if strategy == "every_other":
        every_other = list(range(0, n, 2))
        num_layers = len(every_other) if num_layers is None else num_layers
        if not 1 <= num_layers <= len(every_other):
            raise ValueError(f"every_other from {n} teacher layers allows 1 <= num_layers <= {len(every_other)}.")
        return every_other[:num_layers]
    if num_layers is None:
        raise ValueError(f"strategy={strategy!r} requires `num_layers`.")
    if not 1 <= num_layers <= n:
        raise ValueError(f"num_layers must satisfy 1 <= num_layers <= {n} (teacher layers), got {num_layers}.")
    if strategy == "first":
        return list(range(num_layers))
    if strategy == "last":
        return list(range(n - num_layers, n))
    # Spacing is n / k >= 1, so rounding keeps the indices distinct, increasing and <= n - 1.
    return [round(i * n / num_layers) for i in range(num_layers)]


def _load_teacher(path: str | os.PathLike, **kwargs) -> PreTrainedModel:
    config_kwargs = {key: kwargs[key] for key in _CONFIG_KWARGS if key in kwargs}
    try:
        config = AutoConfig.from_pretrained(path, **config_kwargs)
    except (OSError, ValueError) as err:
        raise OSError(f"Cannot load a teacher from {str(path)!r}: not a model directory or Hub repo ({err})") from err
    arch = (config.architectures or [None])[0]
    model_class = getattr(transformers, arch, None) if arch else None
    if model_class is None:
        raise ValueError(f"{str(path)!r}: config.architectures={config.architectures!r} names no transformers class.")
    return model_class.from_pretrained(path, **kwargs)


def _layer_prefix(model: PreTrainedModel, num_layers: int) -> str:
    """State-dict prefix of the layer list, e.g. `bert.encoder.layer` (head model) or `encoder.layer` (base model)."""
    model_type = model.config.model_type
    if model_type in _REJECTED:
        raise ValueError(f"Cannot build a student for model_type {model_type!r}: {_REJECTED[model_type]}.")
    if model_type not in _LAYER_STACKS:
        raise ValueError(
            f"Unsupported model_type {model_type!r}; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    path = _LAYER_STACKS[model_type]
    for prefix in (f"{model.base_model_prefix}.{path}", path):
        try:
            module = model.get_submodule(prefix)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return prefix
    raise RuntimeError(f"{type(model).__name__} has no {num_layers}-layer nn.ModuleList at {path!r}.")


def _source_key(key: str, prefix: str, chosen: list[int]) -> str:
    """Teacher state-dict key feeding student `key`: layer keys are re-indexed, everything else maps 1:1."""
    if not key.startswith(prefix + "."):
        return key
    index, _, rest = key[len(prefix) + 1 :].partition(".")
    return f"{prefix}.{chosen[int(index)]}.{rest}"


def build_student(
    teacher: PreTrainedModel | str | os.PathLike,
    num_layers: int | None = None,
    strategy: Literal["uniform", "every_other", "first", "last"] = "uniform",
    layers: Sequence[int] | None = None,
    **from_pretrained_kwargs,
) -> PreTrainedModel:
    """
    Build a shallower copy of `teacher`: same class, width and heads, fewer layers, initialised from teacher weights.

    Everything outside the layer stack (embeddings, final norm, pooler, task head, tied LM head, relative position
    bias, ...) is copied from the teacher and student layer `i` is copied from teacher layer `chosen[i]`. Every student
    weight must have a same-shaped teacher source and every teacher weight must be used or belong to a dropped layer.

    Args:
        teacher (`PreTrainedModel`, `str` or `os.PathLike`): The teacher, or a local directory / Hub id to load it
            from with the class named in `config.architectures[0]`.
        num_layers (`int`, *optional*): Number of student layers; see [`select_teacher_layers`].
        strategy (`str`, *optional*, defaults to `"uniform"`): `"uniform"`, `"every_other"`, `"first"` or `"last"`.
        layers (`Sequence[int]`, *optional*): Explicit teacher layer indices; overrides `strategy`.
        from_pretrained_kwargs: Passed to `from_pretrained` when `teacher` is a path (e.g. `dtype`, `revision`).

    Returns:
        `PreTrainedModel`: The student, on the teacher's device and dtype and in the teacher's train/eval mode. Its
        config records `distillation_teacher_layers` and `distillation_teacher`.
    """
    if isinstance(teacher, (str, os.PathLike)):
        teacher = _load_teacher(teacher, **from_pretrained_kwargs)
    elif not isinstance(teacher, PreTrainedModel):
        raise TypeError(f"teacher must be a PreTrainedModel or a path, got {type(teacher).__name__}.")
    elif from_pretrained_kwargs:
        raise ValueError(f"{sorted(from_pretrained_kwargs)} only apply when `teacher` is a path.")

    num_teacher_layers = teacher.config.num_hidden_layers
    prefix = _layer_prefix(teacher, num_teacher_layers)
    chosen = select_teacher_layers(num_teacher_layers, num_layers, strategy, layers)

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
    config.distillation_teacher = teacher.name_or_path or None

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
        if teacher_state[source].shape != value.shape:
            raise RuntimeError(
                f"Shape mismatch for {key!r}: student {tuple(value.shape)} vs teacher {source!r} "
                f"{tuple(teacher_state[source].shape)}."
            )
        new_state[key] = teacher_state[source]
        used.add(source)
    kept = {f"{prefix}.{i}." for i in chosen}
    leftover = [
        k for k in teacher_state if k not in used and (not k.startswith(prefix + ".") or k.startswith(tuple(kept)))
    ]
    if leftover:
        raise RuntimeError(f"Teacher weights with no place in the student: {leftover}.")
    with torch.no_grad():
        student.load_state_dict(new_state, strict=True)  # copies, so training the student never touches the teacher

    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    student.train(teacher.training)
    logger.info(
        f"Built {len(chosen)}-layer student from {num_teacher_layers}-layer {type(teacher).__name__}: kept teacher "
        f"layers {chosen}; parameters {teacher.num_parameters():,} -> {student.num_parameters():,}."
    )
    return student
