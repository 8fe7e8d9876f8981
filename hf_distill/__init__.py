"""hf_distill: knowledge distillation of Hugging Face Transformers models into small, fast students."""

from .cache import CacheMismatchError, TeacherCache, build_teacher_cache
from .config import DistillationConfig
from .layer_map import LayerMap, LayerPair
from .losses import (
    attention_loss,
    attention_relation_loss,
    hidden_state_loss,
    logit_mse,
    similarity_loss,
    soft_target_kl,
    task_cross_entropy,
    task_mse,
)
from .measure import measure_distillation
from .modeling import DistillationModel
from .relations import QKVCapture
from .run import run_distillation
from .student import build_student, select_teacher_layers
from .teacher import average_soft_targets, load_model
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = [
    "CacheMismatchError",
    "DistillationConfig",
    "DistillationModel",
    "DistillationTrainer",
    "LayerMap",
    "LayerPair",
    "QKVCapture",
    "TeacherCache",
    "attention_loss",
    "attention_relation_loss",
    "average_soft_targets",
    "build_student",
    "build_teacher_cache",
    "hidden_state_loss",
    "load_model",
    "logit_mse",
    "measure_distillation",
    "run_distillation",
    "select_teacher_layers",
    "similarity_loss",
    "soft_target_kl",
    "task_cross_entropy",
    "task_mse",
]
