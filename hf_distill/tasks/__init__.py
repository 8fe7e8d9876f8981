"""What each task head outputs, and therefore which logits the losses compare and over which items.

A task is inferred from the model class (`BertForSequenceClassification` -> sequence classification), through the
auto-model mappings of transformers. See [`Task`] for what a task tells the trainer.

| task | heads | soft targets | task loss |
| --- | --- | --- | --- |
| `sequence-classification` | `*ForSequenceClassification` | KL per example (MSE for regression) | CE (MSE) |
| `token-classification` | `*ForTokenClassification` | KL per labelled token | CE per labelled token |
| `question-answering` | `*ForQuestionAnswering` | (KL start + KL end) / 2, per example | (CE start + CE end) / 2 |
| `masked-lm` | `*ForMaskedLM` | KL per masked token | MLM loss |
| `causal-lm` | `*ForCausalLM`, `*LMHeadModel` | shifted KL per next-token target | LM loss |
"""

from __future__ import annotations

from transformers import PreTrainedModel
from transformers.models.auto import modeling_auto

from ..modeling import base_model_of
from .base import IGNORE_INDEX, UNITS, LogitTarget, Task, count_items
from .classification import SequenceClassification, TokenClassification
from .language_modeling import CausalLM, MaskedLM, next_token_mask
from .question_answering import QuestionAnswering

__all__ = [
    "IGNORE_INDEX",
    "PIPELINE_TASKS",
    "SUPPORTED_TASKS",
    "UNITS",
    "CausalLM",
    "LogitTarget",
    "MaskedLM",
    "QuestionAnswering",
    "SequenceClassification",
    "Task",
    "TokenClassification",
    "count_items",
    "next_token_mask",
    "resolve_task_name",
    "task_for",
    "task_name_of",
    "task_name_of_class",
]

# In order of precedence: a class listed in two mappings (XLMWithLMHeadModel) gets the first.
_TASKS_BY_MAPPING = {
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": "sequence-classification",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": "token-classification",
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES": "question-answering",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": "masked-lm",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": "causal-lm",
}
SUPPORTED_TASKS = tuple(_TASKS_BY_MAPPING.values())
# The transformers pipeline name of each task (what `hf-distill train --task` and the Hub call it).
PIPELINE_TASKS = {
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "masked-lm": "fill-mask",
    "causal-lm": "text-generation",
}
_TASK_CLASSES = {
    "token-classification": TokenClassification,
    "question-answering": QuestionAnswering,
    "masked-lm": MaskedLM,
    "causal-lm": CausalLM,
}


def resolve_task_name(name: str) -> str:
    """hf_distill's task name for a task name or a pipeline name (`fill-mask` -> `masked-lm`).

    Raises:
        `ValueError`: naming the accepted names.
    """
    by_pipeline = {pipeline: task for task, pipeline in PIPELINE_TASKS.items()}
    if name in PIPELINE_TASKS:
        return name
    if name in by_pipeline:
        return by_pipeline[name]
    raise ValueError(
        f"unknown task {name!r}; choose one of: {', '.join(by_pipeline)} (or {', '.join(SUPPORTED_TASKS)})"
    )


def task_name_of(model: PreTrainedModel) -> str | None:
    """The task of a model's head, from its class name (`None` for a bare encoder or an unsupported head); for a peft
    model, its base model's."""
    model = base_model_of(model)
    return task_name_of_class(type(model).__name__, getattr(model.config, "is_encoder_decoder", False))


def task_name_of_class(class_name: str, is_encoder_decoder: bool = False) -> str | None:
    """The task of a model class, by name (as `config.architectures` lists it), or `None`."""
    if is_encoder_decoder:
        return None  # BART's ForConditionalGeneration is in the masked-LM mapping, but it is a seq2seq model
    for mapping_name, task_name in _TASKS_BY_MAPPING.items():
        if class_name in _mapping_class_names(getattr(modeling_auto, mapping_name)):
            return task_name
    return None


def task_for(model: PreTrainedModel) -> Task:
    """The [`Task`] for a student model.

    Raises:
        `ValueError`: for a head that distillation does not support yet, naming the supported ones.
    """
    name = task_name_of(model)
    if name == "sequence-classification":
        if model.config.problem_type == "multi_label_classification":
            raise ValueError(
                f"{type(model).__name__} has problem_type='multi_label_classification', which is not supported; "
                "use single-label classification or regression (num_labels=1)"
            )
        regression = model.config.problem_type == "regression" or model.config.num_labels == 1
        return SequenceClassification(is_regression=regression)
    if name in _TASK_CLASSES:
        return _TASK_CLASSES[name]()
    raise ValueError(
        f"{type(model).__name__} has a head that hf_distill cannot distil yet; supported: "
        f"{', '.join(SUPPORTED_TASKS)} models (e.g. BertForSequenceClassification, BertForTokenClassification, "
        "BertForQuestionAnswering, BertForMaskedLM, GPT2LMHeadModel, LlamaForCausalLM)"
    )


def _mapping_class_names(mapping) -> set[str]:
    names = set()
    for value in mapping.values():
        names.update(value if isinstance(value, (list, tuple)) else (value,))
    return names
