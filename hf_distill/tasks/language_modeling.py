"""Language-model heads: logits over the vocabulary at every position.

- Masked language modelling (BERT, DistilBERT's own recipe): the distributions at the masked positions (labels that
  are not -100) are compared, and the label loss is the MLM loss there.
- Causal language modelling (GPT-2, Llama, Qwen): the logits at position i predict the token at i + 1, so the
  distributions at positions 0..L-2 are compared wherever the next token is a target, and the label loss is the
  shifted LM loss, averaged as transformers does over the next-token targets.
- Data: plain text (`text`, or `--text_column`), one example a line or row, cut to `max_length`, empty lines dropped;
  or, for causal LMs, `prompt` and `completion` columns (TRL's convention: the completion alone is scored);
  the collator makes the labels (MLM: masks `--mlm_probability` of the tokens afresh each batch; CLM: the input ids,
  padding at -100). Evaluation splits are masked once, with a seed, so every evaluation scores the same positions.
- Metrics: perplexity (`exp` of the mean token loss at the scored positions) and top-1 accuracy, reduced batch by
  batch to per-example sums, so evaluation never holds the vocabulary-sized logits of the whole evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
from ..fused_linear import LinearHead, fused_linear_distillation_loss
from ..metrics import perplexity
from ..terms import divergence_of
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
    """What masked and causal language models share: outputs over the vocabulary, text data, perplexity.

    Teacher and student may have output widths that differ only by padding rows beyond their shared tokenizer
    (Qwen2.5's 151,936 and 152,064 rows for one 151,665-token tokenizer): [`check_vocabularies`] then sets
    `compared_vocabulary` to the tokenizer's size, and the logits are compared over those classes only.
    """

    vocabulary_outputs = True
    card_metrics = _LM_CARD_METRICS
    mlm = False
    # The classes the soft targets are compared over when teacher and student widths differ (padding rows beyond the
    # tokenizer); None: the whole (common) width.
    compared_vocabulary: int | None = None

    def check_vocabularies(self, teacher_facts: dict, student_width: int, tokenizer_size: int | None) -> None:
        """Accepts output widths that are equal or differ only by padding rows beyond the tokenizer (then compares over
        `tokenizer_size` classes); refuses any other mismatch with a one-line `ValueError` naming both sizes."""
        teacher_width = teacher_facts["output_vocab_size"]
        self.compared_vocabulary = None
        if teacher_width == student_width:
            return
        both = f"the teacher predicts over {teacher_width} tokens, the student over {student_width}"
        if not differ_only_by_padding(teacher_width, student_width, tokenizer_size):
            known = (
                f"the tokenizer has {tokenizer_size} tokens, more than the smaller of them"
                if tokenizer_size is not None
                else "without the tokenizer (processing_class) padding rows cannot be told apart"
            )
            raise ValueError(
                f"vocabulary size differs: {both} ({known}). The {self.name} soft targets are distributions over the "
                "vocabulary, compared token by token; give the student the teacher's tokenizer and vocabulary "
                "(build_student() does)"
            )
        if teacher_facts.get("top_k"):
            raise ValueError(
                f"vocabulary size differs: {both}, padding rows beyond the {tokenizer_size}-token tokenizer; a top-k "
                f"teacher cache (top_k={teacher_facts['top_k']}) ranks the teacher's {teacher_width} rows and cannot "
                "be restricted to the tokenizer's: build the cache without top_k, or train with the live teacher"
            )
        self.compared_vocabulary = tokenizer_size

    def over_vocabulary(self, targets: list[LogitTarget]) -> list[LogitTarget]:
        """`targets` with both logits cut to the compared vocabulary (the tokenizer's tokens) when it is set."""
        size = self.compared_vocabulary
        if size is None:
            return targets
        return [replace(t, student=t.student[..., :size], teacher=t.teacher[..., :size]) for t in targets]

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

    label_loss = TokenClassification.label_loss

    def logit_targets(self, student_out, teacher_out, inputs):
        return self.over_vocabulary(TokenClassification.logit_targets(self, student_out, teacher_out, inputs))


class CausalLM(_LanguageModel):
    """Logits `(batch, seq_len, vocab)`, compared shifted: the logits at positions 0..L-2 against the tokens at 1...

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
        # Compared whole, with the last position (which predicts nothing) masked out, rather than as `logits[:, :-1]`:
        # the backward pass of that slice would make a zero-filled (batch, seq_len, vocab) gradient and copy into it.
        mask = next_token_mask(inputs, student_out.logits.shape[:2])
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], 1)], dim=1)
        return self.over_vocabulary([LogitTarget(student_out.logits, teacher_out.logits, mask, "labels")])

    def label_loss(self, student_out, inputs, counts):
        labels = self._next_token_labels(inputs)
        return losses.task_cross_entropy(student_out.logits, labels, num_items=counts["labels"]), "labels"

    linear_head_terms = ("kd", "label")

    def fused_terms(self, ctx):
        if isinstance(ctx.student.logits, LinearHead):
            return self._linear_head_terms(ctx)
        # At T = 1 the forward KL (from the live teacher's logits or a top-k cache) and the LM loss read the same
        # softmax of the same logits: one pass makes both, and keeps one vocabulary-wide buffer for both gradients
        # (the plain LM step keeps one: its log-probabilities). Padded vocabularies (sliced logits) and other
        # divergences apart.
        args, weights = ctx.args, ctx.args.loss_weights
        fusable = (
            ctx.teacher is not None
            and "labels" in ctx.inputs
            and weights.get("kd", 0) > 0
            and weights.get("label", 0) > 0
            and getattr(args, "divergence", "forward_kl") == "forward_kl"
            and args.temperature == 1
        )
        if not fusable:
            return {}
        (target,) = ctx.logit_targets
        if target.student is not ctx.student.logits or target.teacher.shape != target.student.shape:
            return {}
        kd, label = losses.forward_kl_and_cross_entropy(
            target.student, target.teacher, self._next_token_labels(ctx.inputs), target.mask,
            ctx.counts[target.unit], ctx.counts["labels"],
        )  # fmt: skip
        return {"kd": (kd, target.unit), "label": (label, "labels")}

    def _linear_head_terms(self, ctx):
        """The kd and label terms from the student's final hidden states and output layer, chunk by chunk (the fused
        linear loss): the teacher's logits, top-k targets or own head; the same values and gradients as the terms
        from the logits. A training batch without labels leaves the label term to its own (refusing) function."""
        weights = ctx.args.loss_weights
        kd_weight = weights.get("kd", 0.0) if ctx.teacher is not None else 0.0
        label_weight = weights.get("label", 0.0) if "labels" in ctx.inputs else 0.0
        if not (kd_weight or label_weight):
            return {}
        shape = ctx.student.logits.shape[:2]
        mask = next_token_mask(ctx.inputs, shape)
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], 1)], dim=1)
        count = ctx.counts["labels"]
        kd, label = fused_linear_distillation_loss(
            ctx.student.logits, ctx.teacher.logits if kd_weight else None,
            self._next_token_labels(ctx.inputs) if label_weight else None, mask, count, count,
            kd_weight, label_weight, ctx.args.temperature, divergence_of(ctx.args), ctx.args.loss_chunk_size,
        )  # fmt: skip
        terms = {"kd": (kd, "labels")} if kd_weight else {}
        return {**terms, "label": (label, "labels")} if label_weight else terms

    @staticmethod
    def _next_token_labels(inputs):
        # The labels shifted left (the last position predicts nothing), not the logits: `logits[:, :-1]` is not
        # contiguous, and flattening it would copy a (batch, seq_len, vocab) tensor.
        return F.pad(inputs["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)

    def count_items(self, batch):
        reference = batch.get("input_ids")
        shape = (reference if reference is not None else batch["inputs_embeds"]).shape[:2]
        return _counts(batch, next_token_mask(batch, shape).sum())


def differ_only_by_padding(teacher_size: int, student_size: int, tokenizer_size: int | None) -> bool:
    """Whether two embedding or output widths that differ are both the tokenizer's tokens plus padding rows (rows no
    token id reaches): then the models read and predict the same tokens."""
    return tokenizer_size is not None and min(teacher_size, student_size) >= tokenizer_size


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
    if not mlm and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    paired = all(set(PROMPT_COMPLETION) <= set(split.column_names) for split in raw.values())
    if not mlm and not data_args.text_column and paired:
        return prepare_prompt_completion(raw, tokenizer, data_args.max_length)
    text_column, _, _ = resolve_columns(raw, data_args, require_label=False)

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


# The columns of prompt/completion data (TRL's convention): only the completion is a target.
PROMPT_COMPLETION = ("prompt", "completion")


def prepare_prompt_completion(raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> DatasetDict:
    """Causal LM on `prompt` and `completion` columns (TRL's prompt/completion convention): each example is the
    prompt's tokens followed by the completion's (without special tokens) and the end-of-sequence token, cut to
    `max_length`; its labels are the completion's tokens, -100 on the prompt, so the LM loss, the soft targets and the
    metrics score the completion only, and on-policy / sequence-level distillation (`lmbda`, `seq_kd`) completes the
    prompt. Examples whose completion is cut away entirely are dropped."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def tokenize(batch):
        prompts = tokenizer(batch["prompt"], truncation=True, max_length=max_length)["input_ids"]
        completions = tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
        ids = [(p + c + eos)[:max_length] for p, c in zip(prompts, completions)]
        labels = [([IGNORE_INDEX] * len(p) + c + eos)[:max_length] for p, c in zip(prompts, completions)]
        return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids], "labels": labels}

    tokenized = DatasetDict()
    for name, split in raw.items():
        split = split.map(tokenize, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")
        tokenized[name] = split.filter(lambda row: any(x != IGNORE_INDEX for x in row["labels"]), desc="No target")
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
