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
from ..alignment import span_groups
from ..cross_tokenizer import place_rows, teacher_encoding, teacher_inputs
from ..data_settings import DataSettings
from ..metrics import perplexity
from .base import IGNORE_INDEX, CardMetric, ExampleScores, LogitTarget, Task, TaskEvaluation, _counts
from .registry import register_task
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

    def prepare_datasets(self, raw, tokenizer, data_args, task_args=None, teacher_config=None, teacher_tokenizer=None):
        """Tokenises the text column line by line; the `"unlabeled"` split is more training text (the collator makes
        its labels, as for the training split). With `teacher_tokenizer` (causal LMs), the teacher's tokenization too,
        and both sides' character spans."""
        probability = getattr(self.task_arguments(task_args), "mlm_probability", 0.15)
        refusal = self.cross_tokenizer_refusal(set()) if teacher_tokenizer is not None else None
        if refusal:
            raise ValueError(f"teacher_tokenizer is given (a student of another tokenizer), but {refusal}")
        return prepare_language_modeling(
            raw,
            tokenizer,
            data_args,
            mlm=self.mlm,
            mlm_probability=probability,
            seed=data_args.split_seed,
            teacher_tokenizer=teacher_tokenizer,
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

    def cross_tokenizer_refusal(self, term_names):
        return (
            "masked-LM soft targets are the distributions at the masked tokens, and a token the student's tokenizer "
            "masks hides another piece of text than any token of the teacher's (masked LM does not cross tokenizers; "
            "causal LMs do)"
        )

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

    # Both sides' character spans (paired data), from which `align_batch` groups the tokens that cover the same text.
    alignment_columns = ("align_spans", "align_teacher_spans")

    def logit_targets(self, student_out, teacher_out, inputs):
        if "teacher_input_ids" in inputs:
            return []  # two vocabularies: no class-by-class pairs (the soft targets cross in their own way, below)
        # Compared whole, with the last position (which predicts nothing) masked out, rather than as `logits[:, :-1]`:
        # the backward pass of that slice would make a zero-filled (batch, seq_len, vocab) gradient and copy into it.
        mask = _predicting(next_token_mask(inputs, student_out.logits.shape[:2]))
        return self.over_vocabulary([LogitTarget(student_out.logits, teacher_out.logits, mask, "labels")])

    def label_loss(self, student_out, inputs, counts):
        labels = self._next_token_labels(inputs)
        return losses.task_cross_entropy(student_out.logits, labels, num_items=counts["labels"]), "labels"

    label_loss_per_row = True

    def label_rows(self, inputs, shape):
        labels = self._next_token_labels(inputs) if "labels" in inputs else None
        return labels, _predicting(next_token_mask(inputs, shape[:2]))

    # ---- two tokenizers --------------------------------------------------------------------------------------------

    def cross_tokenizer_refusal(self, term_names):
        if "logit_mse" in term_names:
            return (
                "the logit MSE (logit_mse_weight > 0) compares logits token by token over one vocabulary; set "
                "logit_mse_weight=0: the soft targets (kd_weight) cross vocabularies through cross_tokenizer_loss"
            )
        return None

    def cross_tokenizer_card(self, args):
        if args.cross_tokenizer_loss == "uld":
            return {
                "alignment": "the k-th predicted token of each side's text is paired with the k-th of the other",
                "soft_targets": (
                    f"Universal Logit Distillation (Boizard et al. 2024): the sorted probabilities of the teacher's "
                    f"and the student's predictions, paired by rank, compared over the union of the two vocabularies "
                    f"at temperature T = {args.temperature:g}"
                ),
            }
        return {
            "alignment": (
                "predictions aligned by the text their tokens cover (character offsets), a span one side spells in "
                "several tokens merged"
            ),
            "soft_targets": (
                "Span alignment (as GOLD, Patiño et al. 2025): on spans of text both tokenizers cut alike, the "
                "probabilities of the tokens both vocabularies spell alike compared one to one, the rest by sorted "
                f"probabilities (ULD, Boizard et al. 2024), at temperature T = {args.temperature:g}"
            ),
        }

    def align_batch(self, batch, facts):
        """Groups each example's scored tokens (labels not -100, both sides) into spans of the same text
        ([`~hf_distill.alignment.span_groups`]) and batches them as [`~hf_distill.losses.TokenAlignment`] tensors:
        the logit position predicting each group's first token, and the group of each later token's prediction."""
        if not facts or "align_spans" not in facts[0]:
            return {}
        sides = []
        for prefix, column in (("", "align_spans"), ("teacher_", "align_teacher_spans")):
            attention = batch[prefix + "attention_mask"]
            spans = place_rows([f[column] for f in facts], attention, None)
            # Only scored tokens are aligned (as `next_token_mask` reads them), and a first token is predicted by none.
            labels = batch.get(prefix + "labels")
            scored = (labels != IGNORE_INDEX if labels is not None else attention.bool()).tolist()
            rows = [
                [span if keep and i else None for i, (span, keep) in enumerate(zip(*row))]
                for row in zip(spans, scored)
            ]
            sides.append(rows)
        groups = [span_groups(student, teacher) for student, teacher in zip(*sides)]
        width = max((len(row) for row in groups), default=0)
        tensors = {
            "span_student_positions": torch.zeros(len(groups), width, dtype=torch.long),
            "span_teacher_positions": torch.zeros(len(groups), width, dtype=torch.long),
            "span_mask": torch.zeros(len(groups), width, dtype=torch.bool),
            "span_student_merges": torch.full(batch["input_ids"].shape, -1, dtype=torch.long),
            "span_teacher_merges": torch.full(batch["teacher_input_ids"].shape, -1, dtype=torch.long),
        }
        for row, row_groups in enumerate(groups):
            for index, (student, teacher) in enumerate(row_groups):
                # The logits at position i predict the token at i + 1.
                tensors["span_student_positions"][row, index] = student[0] - 1
                tensors["span_teacher_positions"][row, index] = teacher[0] - 1
                tensors["span_mask"][row, index] = True
                for position in student[1:]:
                    tensors["span_student_merges"][row, position - 1] = index
                for position in teacher[1:]:
                    tensors["span_teacher_merges"][row, position - 1] = index
        return tensors

    def cross_tokenizer_soft_targets(self, ctx):
        inputs, teacher = ctx.inputs, teacher_inputs(ctx.inputs)
        student_logits, teacher_logits = ctx.student.logits, ctx.teacher.logits
        temperature, num_items = ctx.args.temperature, ctx.counts["labels"]
        if ctx.args.cross_tokenizer_loss == "uld":
            alignment = losses.TokenAlignment.by_rank(
                _predicting(next_token_mask(inputs, student_logits.shape[:2])),
                _predicting(next_token_mask(teacher, teacher_logits.shape[:2])),
            )
            value = losses.universal_logit_distillation(
                student_logits, teacher_logits, alignment, temperature, num_items
            )
            return value, "labels"
        alignment = losses.TokenAlignment(
            inputs["span_student_positions"],
            inputs["span_teacher_positions"],
            inputs["span_mask"],
            inputs["span_student_merges"],
            inputs["span_teacher_merges"],
            self._next_token_labels(inputs),
            self._next_token_labels(teacher),
        )
        shared = ctx.tokenizers.shared_ids
        value = losses.span_alignment_loss(student_logits, teacher_logits, alignment, shared, temperature, num_items)
        return value, "labels"

    @staticmethod
    def _next_token_labels(inputs):
        # The labels shifted left (the last position predicts nothing), not the logits: `logits[:, :-1]` is not
        # contiguous, and flattening it would copy a (batch, seq_len, vocab) tensor.
        return F.pad(inputs["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)

    def count_items(self, batch):
        reference = batch.get("input_ids")
        shape = (reference if reference is not None else batch["inputs_embeds"]).shape[:2]
        return _counts(batch, next_token_mask(batch, shape).sum())


def _predicting(mask: torch.Tensor) -> torch.Tensor:
    """`next_token_mask`'s `(batch, seq_len - 1)` as `(batch, seq_len)` logit positions: the last predicts nothing."""
    return torch.cat([mask, mask.new_zeros(mask.shape[0], 1)], dim=1)


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
    data_args: DataSettings,
    mlm: bool,
    mlm_probability: float = 0.15,
    seed: int = 42,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> DatasetDict:
    """Tokenises the text column line by line (cut to `max_length`, empty lines dropped).

    The training (and unlabeled) split is masked afresh in every batch by the collator; the evaluation splits are
    masked once, here,
    with `seed` (for MLM), so every evaluation scores the same positions and results can be compared.

    With `teacher_tokenizer` (a causal-LM student of another tokenizer), each text is tokenised by both: the teacher's
    columns prefixed with `teacher_`, and each side's token spans (`align_spans`, `align_teacher_spans`: the
    characters of the text each token covers) for the span alignment.
    """
    for own in (tokenizer, teacher_tokenizer):
        if own is not None and not mlm and own.pad_token is None:
            own.pad_token = own.eos_token if own.eos_token is not None else own.unk_token
    paired = all(set(PROMPT_COMPLETION) <= set(split.column_names) for split in raw.values())
    if not mlm and not data_args.text_column and paired:
        return prepare_prompt_completion(raw, tokenizer, data_args.max_length, teacher_tokenizer)
    text_column, _, _ = resolve_columns(raw, data_args, require_label=False)
    spans = teacher_tokenizer is not None

    def tokenize(batch):
        texts = batch[text_column]
        encoded = tokenizer(
            texts,
            truncation=True,
            max_length=data_args.max_length,
            return_special_tokens_mask=mlm,
            return_offsets_mapping=spans,
        )
        if not spans:
            return encoded
        teacher_columns, teacher_encoded = teacher_encoding(
            teacher_tokenizer, texts, truncation=True, max_length=data_args.max_length, return_offsets_mapping=True
        )
        student_spans = encoded.pop("offset_mapping")
        return {
            **encoded,
            **teacher_columns,
            "align_spans": student_spans,
            "align_teacher_spans": teacher_encoded["offset_mapping"],
        }

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


def prepare_prompt_completion(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> DatasetDict:
    """Causal LM on `prompt` and `completion` columns (TRL's prompt/completion convention): each example is the
    prompt's tokens followed by the completion's (without special tokens) and the end-of-sequence token, cut to
    `max_length`; its labels are the completion's tokens, -100 on the prompt, so the LM loss, the soft targets and the
    metrics score the completion only, and on-policy / sequence-level distillation (`lmbda`, `seq_kd`) completes the
    prompt. Examples whose completion is cut away entirely are dropped.

    With `teacher_tokenizer`, the same for the teacher's tokenization (`teacher_input_ids`, `teacher_labels`, ...),
    with each side's spans of the completion's characters (`align_spans`, `align_teacher_spans`; the prompt and the
    end-of-sequence token cover none); an example either side cuts away entirely is dropped."""

    def encode(own, batch, spans: bool):
        eos = [own.eos_token_id] if own.eos_token_id is not None else []
        prompts = own(batch["prompt"], truncation=True, max_length=max_length)["input_ids"]
        completions = own(batch["completion"], add_special_tokens=False, return_offsets_mapping=spans)
        rows = {"input_ids": [], "attention_mask": [], "labels": []}
        if spans:
            rows["spans"] = []
        for index, (prompt, completion) in enumerate(zip(prompts, completions["input_ids"])):
            ids = (prompt + completion + eos)[:max_length]
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
            rows["labels"].append(([IGNORE_INDEX] * len(prompt) + completion + eos)[:max_length])
            if spans:
                offsets = [list(span) for span in completions["offset_mapping"][index]]
                rows["spans"].append(([[0, 0]] * len(prompt) + offsets + [[0, 0]] * len(eos))[:max_length])
        return rows

    def tokenize(batch):
        student = encode(tokenizer, batch, teacher_tokenizer is not None)
        if teacher_tokenizer is None:
            return student
        teacher = encode(teacher_tokenizer, batch, True)
        columns = {k: v for k, v in student.items() if k != "spans"}
        columns.update({f"teacher_{k}": v for k, v in teacher.items() if k != "spans"})
        return {**columns, "align_spans": student["spans"], "align_teacher_spans": teacher["spans"]}

    def has_targets(row):
        sides = ("labels", "teacher_labels") if teacher_tokenizer is not None else ("labels",)
        return all(any(x != IGNORE_INDEX for x in row[side]) for side in sides)

    tokenized = DatasetDict()
    for name, split in raw.items():
        split = split.map(tokenize, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")
        tokenized[name] = split.filter(has_targets, desc="No target")
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
