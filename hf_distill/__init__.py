"""hf_distill: knowledge distillation of Hugging Face Transformers models into small, fast students."""

from .config import DistillationConfig
from .layer_map import LayerMap, LayerPair
from .losses import attention_loss, hidden_state_loss, logit_mse, soft_target_kl, task_cross_entropy, task_mse
from .modeling import DistillationModel
from .student import build_student, select_teacher_layers
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationModel",
    "DistillationTrainer",
    "LayerMap",
    "LayerPair",
    "attention_loss",
    "build_student",
    "hidden_state_loss",
    "logit_mse",
    "select_teacher_layers",
    "soft_target_kl",
    "task_cross_entropy",
    "task_mse",
]
