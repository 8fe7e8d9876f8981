"""Language-model heads: logits over the vocabulary at every position.

- Masked language modelling (BERT, DistilBERT's own recipe): the distributions at the masked positions (labels that
  are not -100) are compared, and the task loss is the MLM loss there.
- Causal language modelling (GPT-2, Llama, Qwen): the logits at position i predict the token at i + 1, so the
  distributions at positions 0..L-2 are compared wherever the next token is a target, and the task loss is the
  shifted LM loss, averaged as transformers does over the next-token targets.
"""

from __future__ import annotations

import torch

from .. import losses
from .base import IGNORE_INDEX, LogitTarget, Task, _counts, attention_mask_of
from .classification import TokenClassification


class MaskedLM(TokenClassification):
    """Logits `(batch, seq_len, vocab)`; with labels (from `DataCollatorForLanguageModeling`) only the masked
    positions count, without labels every real token does: the masking and losses of token classification, over the
    vocabulary."""

    name = "masked-lm"
    peft_task_type = None


class CausalLM(Task):
    """Logits `(batch, seq_len, vocab)`, compared shifted: `logits[:, :-1]` against the tokens at positions 1...

    The next-token targets are the positions where `labels[:, 1:] != -100` when the batch has labels (as
    `DataCollatorForLanguageModeling(mlm=False)` makes them, padding at -100); otherwise those where both the token
    and the next one are real (`attention_mask[:, :-1] & attention_mask[:, 1:]`, which is `attention_mask[:, 1:]`
    for right padding and also leaves out the prediction of the first token from left padding). The `labels` unit of
    this task counts exactly these targets, so the soft-target and the LM loss are normalised by the same count.
    """

    name = "causal-lm"
    peft_task_type = "CAUSAL_LM"

    def logit_targets(self, student_out, teacher_out, inputs):
        mask = next_token_mask(inputs, student_out.logits.shape[:2])
        return [LogitTarget(student_out.logits[:, :-1], teacher_out.logits[:, :-1], mask, "labels")]

    def label_loss(self, student_out, inputs, counts):
        logits, labels = student_out.logits[:, :-1], inputs["labels"][:, 1:]
        return losses.task_cross_entropy(logits, labels, num_items=counts["labels"]), "labels"

    def count_items(self, batch):
        reference = batch.get("input_ids")
        shape = (reference if reference is not None else batch["inputs_embeds"]).shape[:2]
        return _counts(batch, next_token_mask(batch, shape).sum())


def next_token_mask(inputs: dict, shape: tuple[int, int] | torch.Size) -> torch.Tensor:
    """`(batch, seq_len - 1)`: True where the logits at position i are scored against the token at i + 1."""
    labels = inputs.get("labels")
    if labels is not None:
        return labels[:, 1:] != IGNORE_INDEX
    attention = attention_mask_of(inputs)
    if attention is None:
        device = next((v.device for v in inputs.values() if torch.is_tensor(v)), None)
        return torch.ones(shape[0], shape[1] - 1, dtype=torch.bool, device=device)
    return attention[:, :-1] & attention[:, 1:]
