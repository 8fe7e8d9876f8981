"""Language-model heads: logits over the vocabulary at every position.

- Masked language modelling (BERT, DistilBERT's own recipe): the distributions at the masked positions (labels that
  are not -100) are compared, and the label loss is the MLM loss there.
- Causal language modelling (GPT-2, Llama, Qwen): the logits at position i predict the token at i + 1, so the
  distributions at positions 0..L-2 are compared wherever the next token is a target, and the label loss is the
  shifted LM loss, averaged as transformers does over the next-token targets.
- Data: plain text (`text`, or `--text_column`), one example a line or row, cut to `max_length`, empty lines dropped;
  the collator makes the labels (MLM: masks `--mlm_probability` of the tokens afresh each batch; CLM: the input ids,
  padding at -100). Evaluation splits are masked once, with a seed, so every evaluation scores the same positions.
- Metrics: perplexity (`exp` of the mean token loss at the scored positions) and top-1 accuracy, reduced batch by
  batch to per-example sums, so evaluation never holds the vocabulary-sized logits of the whole evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
)

from .. import losses
from ..data import DataArguments
from ..metrics import perplexity
from . import register_task
from .base import IGNORE_INDEX, CardMetric, ExampleScores, LogitTarget, Task, TaskEvaluation, _counts
from .text_classification import resolve_columns
from .token_classification import TokenClassification

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase


@dataclass
class MaskedLanguageModelingArguments:
    """The flags of masked language modelling."""

    mlm_probability: float = field(
        default=0.15, metadata={"help": "Masked LM: the share of tokens masked (DataCollatorForLanguageModeling)."}
    )

    def __post_init__(self):
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be between 0 and 1, got {self.mlm_probability}")


_LM_CARD_METRICS = (
    CardMetric("perplexity", "Perplexity", "perplexity", percent=False, higher_is_better=False),
    CardMetric("accuracy", "Top-1 accuracy", "accuracy"),
)


class _LanguageModel(Task):
    """What masked and causal language models share: outputs over the vocabulary, text data, perplexity."""

    vocabulary_outputs = True
    card_metrics = _LM_CARD_METRICS
    mlm = False

    def prepare_datasets(self, raw, tokenizer, data_args, task_args=None, teacher_config=None):
        """Tokenises the text column line by line; the `"unlabeled"` split is more training text (the collator makes
        its labels, as for the training split)."""
        probability = getattr(self.task_arguments(task_args), "mlm_probability", 0.15)
        return prepare_language_modeling(
            raw, tokenizer, data_args, mlm=self.mlm, mlm_probability=probability, seed=data_args.split_seed
        )

    def data_collator(self, tokenizer, task_args=None):
        probability = getattr(self.task_arguments(task_args), "mlm_probability", 0.15)
        return LanguageModelingCollator(tokenizer, mlm=self.mlm, mlm_probability=probability)

    def evaluation(self, eval_dataset=None, teacher_config=None, task_args=None):
        return TaskEvaluation(
            language_model_metrics, LanguageModelStatistics(shift=not self.mlm), language_model_example_scores
        )


class MaskedLM(_LanguageModel):
    """Logits `(batch, seq_len, vocab)`; with labels (from `DataCollatorForLanguageModeling`) only the masked
    positions count, without labels every real token does: the masking and losses of token classification, over the
    vocabulary."""

    name = "masked-lm"
    pipeline_tag = "fill-mask"
    auto_class = AutoModelForMaskedLM
    mapping_name = "MODEL_FOR_MASKED_LM_MAPPING_NAMES"
    peft_task_type = None  # PEFT has no masked-LM task type: the generic PeftModel
    data_arguments = MaskedLanguageModelingArguments
    usage_example = ("unmasker", "unmasker('Paris is the {mask_token} of France.')")
    mlm = True

    logit_targets = TokenClassification.logit_targets
    label_loss = TokenClassification.label_loss


class CausalLM(_LanguageModel):
    """Logits `(batch, seq_len, vocab)`, compared shifted: `logits[:, :-1]` against the tokens at positions 1...

    The next-token targets are the positions where `labels[:, 1:] != -100` when the batch has labels (as
    `DataCollatorForLanguageModeling(mlm=False)` makes them, padding at -100); otherwise those where both the token
    and the next one are real (`attention_mask[:, :-1] & attention_mask[:, 1:]`, which is `attention_mask[:, 1:]`
    for right padding and also leaves out the prediction of the first token from left padding). The `labels` unit of
    this task counts exactly these targets, so the soft-target and the LM loss are normalised by the same count.
    """

    name = "causal-lm"
    pipeline_tag = "text-generation"
    auto_class = AutoModelForCausalLM
    mapping_name = "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"
    peft_task_type = "CAUSAL_LM"
    usage_example = ("generator", 'generator("Once upon a time", max_new_tokens=20)')

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
    attention = inputs.get("attention_mask")
    if attention is None:
        device = next((v.device for v in inputs.values() if torch.is_tensor(v)), None)
        return torch.ones(shape[0], shape[1] - 1, dtype=torch.bool, device=device)
    attention = attention.bool()
    return attention[:, :-1] & attention[:, 1:]


# ---- data ----------------------------------------------------------------------------------------------------------


def prepare_language_modeling(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    mlm: bool,
    mlm_probability: float = 0.15,
    seed: int = 42,
) -> DatasetDict:
    """Tokenises the text column line by line (cut to `max_length`, empty lines dropped).

    The training (and unlabeled) split is masked afresh in every batch by the collator; the evaluation splits are
    masked once, here,
    with `seed` (for MLM), so every evaluation scores the same positions and results can be compared.
    """
    text_column, _, _ = resolve_columns(raw, data_args, require_label=False)
    if not mlm and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token

    def tokenize(batch):
        return tokenizer(
            batch[text_column], truncation=True, max_length=data_args.max_length, return_special_tokens_mask=mlm
        )

    tokenized = DatasetDict()
    for name, split in raw.items():
        split = split.filter(lambda row: bool(row[text_column] and row[text_column].strip()), desc="Dropping empty")
        split = split.map(tokenize, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")
        if mlm and name not in ("train", "unlabeled"):
            split = mask_once(split, tokenizer, mlm_probability, seed=seed)
        tokenized[name] = split
    return tokenized


def mask_once(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, seed: int = 0):
    """Masks each example once, with a seeded generator: a fixed evaluation set (`input_ids` masked, `labels`)."""
    masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)

    def mask(example):
        batch = masker([{k: example[k] for k in ("input_ids", "special_tokens_mask") if k in example}])
        return {"input_ids": batch["input_ids"][0].tolist(), "labels": batch["labels"][0].tolist()}

    masked = dataset.map(mask, desc="Masking the evaluation set")
    return masked.remove_columns([c for c in ("special_tokens_mask",) if c in masked.column_names])


class LanguageModelingCollator:
    """Batches for language modelling: `DataCollatorForLanguageModeling` for examples without labels (MLM masks
    them afresh each time; CLM copies the input ids to the labels, padding at -100), plain padding (labels padded with
    -100) for examples that already carry labels, such as an evaluation set masked once by [`mask_once`]."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm: bool = True, mlm_probability: float = 0.15, seed=None):
        self.mlm = mlm
        self.dynamic = DataCollatorForLanguageModeling(
            tokenizer, mlm=mlm, mlm_probability=mlm_probability if mlm else None, seed=seed
        )
        self.static = DataCollatorForTokenClassification(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        if "labels" in features[0]:
            features = [{k: v for k, v in f.items() if k != "special_tokens_mask"} for f in features]
            return dict(self.static(features))
        return dict(self.dynamic(features))


# ---- metrics -------------------------------------------------------------------------------------------------------


class LanguageModelStatistics:
    """`preprocess_logits_for_metrics` for LMs: per example, the summed token loss, the number of scored tokens, and
    how many the top-1 prediction gets right (`shift` for causal LMs: logits at i score the label at i + 1)."""

    def __init__(self, shift: bool):
        self.shift = shift

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, tuple):
            logits = logits[0]
        if self.shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        scored = labels != IGNORE_INDEX
        nll = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(labels.shape)
        correct = (logits.argmax(-1) == labels) & scored
        return torch.stack([nll.sum(-1), scored.sum(-1).float(), correct.sum(-1).float()], dim=-1)


def language_model_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Perplexity and top-1 accuracy from the per-example sums of [`LanguageModelStatistics`]."""
    total_nll, count, correct = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 3).sum(0)
    return {"perplexity": perplexity(total_nll, int(count)), "accuracy": correct / count if count else float("nan")}


def language_model_example_scores(prediction: EvalPrediction) -> ExampleScores:
    """Per example: summed token NLL and scored tokens, whose sums give the perplexity (paired bootstrap)."""
    stats = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 3)[:, :2]
    return ExampleScores("perplexity", stats=stats, combine=_perplexity_of_sums)


def _perplexity_of_sums(sums: np.ndarray) -> float:
    return perplexity(float(sums[0]), int(sums[1]))


register_task(MaskedLM)
register_task(CausalLM)
