"""Classification heads: one label per example (or one real value: regression), and one label per token."""

from __future__ import annotations

from .. import losses
from .base import IGNORE_INDEX, LogitTarget, Task, attention_mask_of


class SequenceClassification(Task):
    """One label per example: logits `(batch, num_labels)`; regression when `problem_type == "regression"`.

    Regression (one output) compares the outputs by squared error, with no temperature.
    """

    name = "sequence-classification"
    peft_task_type = "SEQ_CLS"

    def __init__(self, is_regression: bool = False):
        self.is_regression = is_regression

    def logit_targets(self, student_out, teacher_out, inputs):
        return [LogitTarget(student_out.logits, teacher_out.logits, None, "examples")]

    def label_loss(self, student_out, inputs, counts):
        labels = inputs["labels"]
        if self.is_regression:
            return losses.task_mse(student_out.logits, labels, num_items=counts["examples"]), "examples"
        return losses.task_cross_entropy(student_out.logits, labels, num_items=counts["labels"]), "labels"


class TokenClassification(Task):
    """One label per token: logits `(batch, seq_len, num_labels)`; padding and labels of -100 do not count.

    With labels, the soft targets are compared on the labelled tokens only (a word's first sub-token, when the other
    sub-tokens are labelled -100), the tokens the task loss and the metrics score; without labels, on every real token.
    """

    name = "token-classification"
    peft_task_type = "TOKEN_CLS"

    def logit_targets(self, student_out, teacher_out, inputs):
        labels = inputs.get("labels")
        if labels is not None:
            mask, unit = labels != IGNORE_INDEX, "labels"
        else:
            mask, unit = attention_mask_of(inputs), "tokens"
        return [LogitTarget(student_out.logits, teacher_out.logits, mask, unit)]

    def label_loss(self, student_out, inputs, counts):
        return losses.task_cross_entropy(student_out.logits, inputs["labels"], num_items=counts["labels"]), "labels"
