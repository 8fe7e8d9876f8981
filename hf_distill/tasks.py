"""What each task head outputs, and therefore which logits the losses compare and over which items.

A task is inferred from the model class (`BertForSequenceClassification` -> sequence classification). It tells the
trainer three things: the logit pairs that the soft-target losses compare (with their mask and the unit they are
averaged over), the hard-label loss, and the item counts of a batch. Units are `examples`, `tokens` (real tokens,
from the attention mask) and `labels` (labels that are not -100).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.models.auto import modeling_auto

from . import losses

UNITS = ("examples", "tokens", "labels")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class LogitTarget:
    """Student and teacher logits to compare, the items that count, and the unit they are averaged over."""

    student: torch.Tensor
    teacher: torch.Tensor
    mask: torch.Tensor | None
    unit: str


class Task:
    """Base class: a task head of the models being distilled."""

    name: str = ""
    # Whether the soft targets are class distributions (KL at a temperature) or real values (regression: MSE).
    is_regression: bool = False

    def logit_targets(self, student_out, teacher_out, inputs: dict) -> list[LogitTarget]:
        raise NotImplementedError

    def task_loss(self, student_out, labels: torch.Tensor, counts: dict) -> tuple[torch.Tensor, str]:
        raise NotImplementedError

    def predictions(self, outputs) -> torch.Tensor:
        return outputs.logits


class SequenceClassification(Task):
    """One label per example: logits `(batch, num_labels)`; regression when `problem_type == "regression"`."""

    name = "sequence-classification"

    def __init__(self, is_regression: bool = False):
        self.is_regression = is_regression

    def logit_targets(self, student_out, teacher_out, inputs):
        return [LogitTarget(student_out.logits, teacher_out.logits, None, "examples")]

    def task_loss(self, student_out, labels, counts):
        if self.is_regression:
            return losses.task_mse(student_out.logits, labels, num_items=counts["examples"]), "examples"
        return losses.task_cross_entropy(student_out.logits, labels, num_items=counts["labels"]), "labels"


class TokenClassification(Task):
    """One label per token: logits `(batch, seq_len, num_labels)`; padding and labels of -100 do not count."""

    name = "token-classification"

    def logit_targets(self, student_out, teacher_out, inputs):
        labels = inputs.get("labels")
        if labels is not None:
            mask, unit = labels != IGNORE_INDEX, "labels"
        else:
            mask, unit = _attention_mask(inputs), "tokens"
        return [LogitTarget(student_out.logits, teacher_out.logits, mask, unit)]

    def task_loss(self, student_out, labels, counts):
        return losses.task_cross_entropy(student_out.logits, labels, num_items=counts["labels"]), "labels"


_TASKS_BY_MAPPING = {
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": "sequence-classification",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": "token-classification",
}
SUPPORTED_TASKS = tuple(_TASKS_BY_MAPPING.values())


def task_name_of(model: PreTrainedModel) -> str | None:
    """The task of a model's head, from its class name (`None` for a bare encoder or an unsupported head)."""
    class_name = type(model).__name__
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
    if name == "token-classification":
        return TokenClassification()
    raise ValueError(
        f"{type(model).__name__} has a head that hf_distill cannot distil yet; supported: "
        f"{', '.join(SUPPORTED_TASKS)} models (e.g. BertForSequenceClassification)"
    )


def count_items(batch: dict) -> dict[str, torch.Tensor]:
    """Counts the examples, real tokens and labels (not -100) of one batch, as int64 tensors."""
    input_ids = batch.get("input_ids")
    reference = input_ids if input_ids is not None else batch.get("inputs_embeds")
    attention_mask = batch.get("attention_mask")
    tokens = attention_mask.sum() if attention_mask is not None else torch.tensor(reference.shape[:2].numel())
    labels = batch.get("labels")
    num_labels = (labels != IGNORE_INDEX).sum() if labels is not None else torch.tensor(0)
    counts = {"examples": torch.tensor(reference.shape[0]), "tokens": tokens, "labels": num_labels}
    return {unit: value.to(torch.long).cpu() for unit, value in counts.items()}


def _attention_mask(inputs: dict) -> torch.Tensor | None:
    mask = inputs.get("attention_mask")
    return mask.bool() if mask is not None else None


def _mapping_class_names(mapping) -> set[str]:
    names = set()
    for value in mapping.values():
        names.update(value if isinstance(value, (list, tuple)) else (value,))
    return names
