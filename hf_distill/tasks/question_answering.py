"""Extractive question answering: a start and an end distribution over the positions of each example."""

from __future__ import annotations

import torch

from .. import losses
from .base import IGNORE_INDEX, LogitTarget, Task

# Where padding is, both models' span logits are set to this: no probability, whatever the model put there, so padding
# changes nothing. Finite (and within float16's range), so that 0 * log 0 never turns into nan.
_PADDING_LOGIT = -1e4


class QuestionAnswering(Task):
    """Span heads: `start_logits` and `end_logits` of shape `(batch, seq_len)`, labels `start_positions` and
    `end_positions` of shape `(batch,)`.

    The soft-target loss is the KL between the teacher's and the student's distributions over the positions, for the
    start and for the end, averaged (the trainer averages over the logit pairs), per example. The task loss is
    transformers' (CE(start) + CE(end)) / 2, per example; a position outside the sequence (transformers clamps and
    ignores it) counts as a zero loss. Padded positions get no probability in either model, in the soft targets and
    in the task loss alike.
    """

    name = "question-answering"
    peft_task_type = "QUESTION_ANS"
    label_names = ("start_positions", "end_positions")
    logit_fields = ("start_logits", "end_logits")

    def logit_targets(self, student_out, teacher_out, inputs):
        mask = inputs.get("attention_mask")
        return [
            LogitTarget(
                _mask_padding(getattr(student_out, f"{side}_logits"), mask),
                _mask_padding(getattr(teacher_out, f"{side}_logits"), mask),
                None,
                "examples",
                classes=None if mask is None else mask.bool(),
            )
            for side in ("start", "end")
        ]

    def labels(self, inputs):
        start, end = inputs.get("start_positions"), inputs.get("end_positions")
        if start is None or end is None:
            return None
        return start, end

    def label_loss(self, student_out, inputs, counts):
        mask = inputs.get("attention_mask")
        total = 0.0
        for logits, positions in zip((student_out.start_logits, student_out.end_logits), self.labels(inputs)):
            positions = positions.reshape(-1).long()
            outside = (positions < 0) | (positions >= logits.shape[-1])
            positions = positions.masked_fill(outside, IGNORE_INDEX)
            total = total + losses.task_cross_entropy(
                _mask_padding(logits, mask), positions, num_items=counts["examples"]
            )
        return total / 2, "examples"

    def predictions(self, outputs):
        return outputs.start_logits, outputs.end_logits


def _mask_padding(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return logits
    return logits.masked_fill(~attention_mask.to(logits.device, torch.bool), _PADDING_LOGIT)
