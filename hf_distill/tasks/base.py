"""The `Task` interface: which logits a task head outputs, and therefore which ones the losses compare.

A task tells the trainer four things: the logit pairs that the soft-target losses compare (each with the mask of the
items that count and the unit they are averaged over), the hard-label loss, the labels of a batch, and the item counts
of a batch. Units are `examples`, `tokens` (real tokens, from the attention mask) and `labels` (the items that the
task scores: labels that are not -100, or, for causal language modelling, the next-token targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

UNITS = ("examples", "tokens", "labels")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class LogitTarget:
    """Student and teacher logits to compare, the items that count, and the unit they are averaged over.

    `classes` marks, when they vary from item to item, the classes (last dimension) that exist: the real positions
    of span logits, whose padding the logit MSE must not average over.
    """

    student: torch.Tensor
    teacher: torch.Tensor
    mask: torch.Tensor | None
    unit: str
    classes: torch.Tensor | None = None


class Task:
    """Base class: a task head of the models being distilled.

    Subclasses implement [`logit_targets`] and [`label_loss`]; the others have defaults that fit heads with one
    `labels` input and one `logits` output.
    """

    name: str = ""
    peft_task_type: str | None = None  # the peft TaskType of the head (None: the generic PeftModel)
    # Whether the soft targets are class distributions (KL at a temperature) or real values (regression: MSE).
    is_regression: bool = False
    # The label inputs of the head, as transformers names them (`find_labels`).
    label_names: tuple[str, ...] = ("labels",)
    # The outputs holding the logits the soft targets come from (what a teacher cache stores, what ensembles average).
    logit_fields: tuple[str, ...] = ("logits",)

    def logit_targets(self, student_out, teacher_out, inputs: dict) -> list[LogitTarget]:
        raise NotImplementedError

    def label_loss(self, student_out, inputs: dict, counts: dict) -> tuple[torch.Tensor, str]:
        """The hard-label loss of a batch that has labels (a sum over the batch divided by `counts[unit]`), and its
        unit."""
        raise NotImplementedError

    def labels(self, inputs: dict) -> Any | None:
        """The hard labels of a batch (a tuple for heads with several label inputs), or `None` when it has none."""
        return inputs.get("labels")

    def predictions(self, outputs) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return outputs.logits

    def count_items(self, batch: dict) -> dict[str, torch.Tensor]:
        """Counts the examples, real tokens and labels of one batch, as int64 CPU tensors keyed by `UNITS`."""
        return count_items(batch)


def count_items(batch: dict) -> dict[str, torch.Tensor]:
    """Counts the examples, real tokens and labels (not -100) of one batch, as int64 tensors."""
    labels = batch.get("labels")
    num_labels = (labels != IGNORE_INDEX).sum() if labels is not None else torch.tensor(0)
    return _counts(batch, num_labels)


def _counts(batch: dict, num_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    input_ids = batch.get("input_ids")
    reference = input_ids if input_ids is not None else batch.get("inputs_embeds")
    attention_mask = batch.get("attention_mask")
    tokens = attention_mask.sum() if attention_mask is not None else torch.tensor(reference.shape[:2].numel())
    counts = {"examples": torch.tensor(reference.shape[0]), "tokens": tokens, "labels": num_labels}
    return {unit: value.to(torch.long).cpu() for unit, value in counts.items()}


def attention_mask_of(inputs: dict) -> torch.Tensor | None:
    mask = inputs.get("attention_mask")
    return mask.bool() if mask is not None else None
