"""hf_distill: knowledge distillation of Hugging Face Transformers models into small, fast students.

The public names below are imported on first use (PEP 562), so `import hf_distill` (and the `hf-distill` command's
`--help`) does not pay for torch, transformers and datasets until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Each public name and the module that defines it.
_MODULE_OF = {
    "CacheArguments": "cache",
    "CacheMismatchError": "cache",
    "TeacherCache": "cache",
    "build_teacher_cache": "cache",
    "DistillationConfig": "config",
    "run_teacher_on_onnxruntime": "engines",
    "fused_linear_distillation_loss": "fused_linear",
    "LayerMap": "layer_map",
    "LayerPair": "layer_map",
    "attention_loss": "losses",
    "attention_relation_loss": "losses",
    "hidden_state_loss": "losses",
    "logit_mse": "losses",
    "similarity_loss": "losses",
    "soft_target_kl": "losses",
    "span_alignment_loss": "losses",
    "task_cross_entropy": "losses",
    "task_mse": "losses",
    "universal_logit_distillation": "losses",
    "measure_distillation": "measure",
    "DistillationModel": "modeling",
    "QKVCapture": "relations",
    "run_distillation": "run",
    "build_student": "student",
    "select_teacher_layers": "student",
    "average_soft_targets": "teacher",
    "load_model": "teacher",
    "ServerTeacher": "teacher_server",
    "build_teacher_cache_from_server": "teacher_server",
    "DistillationTrainer": "trainer",
}

__all__ = [
    "CacheArguments",
    "CacheMismatchError",
    "DistillationConfig",
    "DistillationModel",
    "DistillationTrainer",
    "LayerMap",
    "LayerPair",
    "QKVCapture",
    "ServerTeacher",
    "TeacherCache",
    "attention_loss",
    "attention_relation_loss",
    "average_soft_targets",
    "build_student",
    "build_teacher_cache",
    "build_teacher_cache_from_server",
    "fused_linear_distillation_loss",
    "hidden_state_loss",
    "load_model",
    "logit_mse",
    "measure_distillation",
    "run_distillation",
    "run_teacher_on_onnxruntime",
    "select_teacher_layers",
    "similarity_loss",
    "soft_target_kl",
    "span_alignment_loss",
    "task_cross_entropy",
    "task_mse",
    "universal_logit_distillation",
]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs read: the same names, imported eagerly
    from .cache import CacheArguments, CacheMismatchError, TeacherCache, build_teacher_cache
    from .config import DistillationConfig
    from .layer_map import LayerMap, LayerPair
    from .losses import (
        attention_loss,
        attention_relation_loss,
        hidden_state_loss,
        logit_mse,
        similarity_loss,
        soft_target_kl,
        span_alignment_loss,
        task_cross_entropy,
        task_mse,
        universal_logit_distillation,
    )
    from .measure import measure_distillation
    from .modeling import DistillationModel
    from .relations import QKVCapture
    from .run import run_distillation
    from .student import build_student, select_teacher_layers
    from .teacher import average_soft_targets, load_model
    from .trainer import DistillationTrainer
