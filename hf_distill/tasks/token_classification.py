"""Token classification (NER, POS tagging): one label per word, scored on each word's first sub-token.

- Data: a column of word lists (`tokens`) and one of tag lists (`ner_tags`: names such as `B-PER`, or ids), mapped to
  the teacher's `id2label`; each word's tag goes on its first sub-token, -100 elsewhere (or on every sub-token with
  `--label_all_tokens`).
- Metrics: entity precision, recall and F1 (seqeval / conlleval counting), and token accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from datasets import DatasetDict, Sequence
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from .. import losses
from ..alignment import word_alignment
from ..cross_tokenizer import place_rows, teacher_encoding
from ..data_settings import DataSettings
from ..metrics import entities, entity_scores
from ..provenance import source_of
from .base import (
    IGNORE_INDEX,
    CardMetric,
    ExampleScores,
    LogitTarget,
    Task,
    TaskEvaluation,
    argmax_logits,
    attention_mask_of,
    is_default_id2label,
)
from .registry import register_task

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase


TOKENS_COLUMN_CANDIDATES = ("tokens", "words")
TAGS_COLUMN_CANDIDATES = ("ner_tags", "tags", "labels", "pos_tags", "chunk_tags")


@dataclass
class TokenClassificationArguments:
    """The flags of token classification."""

    tokens_column: str | None = field(
        default=None,
        metadata={
            "help": "Token classification: the column of word lists. Default: the first of "
            f"{', '.join(TOKENS_COLUMN_CANDIDATES)}."
        },
    )
    tags_column: str | None = field(
        default=None,
        metadata={
            "help": "Token classification: the column of tag lists (one per word: names such as B-PER, or ids). "
            f"Default: the first of {', '.join(TAGS_COLUMN_CANDIDATES)}."
        },
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "Token classification: give every sub-token of a word the word's tag (default: only the first "
            "sub-token is labelled and scored, the others are -100)."
        },
    )


class TokenClassification(Task):
    """One label per token: logits `(batch, seq_len, num_labels)`; padding and labels of -100 do not count.

    With labels, the soft targets are compared on the labelled tokens only (a word's first sub-token, when the other
    sub-tokens are labelled -100), the tokens the label loss and the metrics score; without labels, on every real
    token.
    """

    name = "token-classification"
    pipeline_tag = "token-classification"
    auto_class = AutoModelForTokenClassification
    mapping_name = "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"
    peft_task_type = "TOKEN_CLS"
    labelled_outputs = True
    data_arguments = TokenClassificationArguments
    usage_example = ("tagger", 'tagger("My name is Sarah and I live in London.")')
    # Entity F1 is the headline: token accuracy counts the many `O` tokens, which a model gets right for free.
    card_metrics = (
        CardMetric("f1", "Entity F1", "f1"),
        CardMetric("precision", "Entity precision", "precision"),
        CardMetric("recall", "Entity recall", "recall"),
        CardMetric("accuracy", "Token accuracy", "accuracy"),
    )

    # Each token's word in both tokenizations (paired data), from which `align_batch` pairs the words' first tokens.
    alignment_columns = ("align_words", "align_teacher_words")

    def logit_targets(self, student_out, teacher_out, inputs):
        labels = inputs.get("labels")
        if labels is not None:
            mask, unit = labels != IGNORE_INDEX, "labels"
        else:
            mask, unit = attention_mask_of(inputs), "tokens"
        teacher_logits = teacher_out.logits
        moved = inputs.get("word_teacher_positions")
        if moved is not None:  # two tokenizations: the teacher's logits at the first token of each student word
            batch = torch.arange(moved.shape[0], device=moved.device)[:, None]
            teacher_logits = teacher_logits[batch, moved.clamp_min(0)]
            mask = moved >= 0 if mask is None else mask & (moved >= 0)
        return [LogitTarget(student_out.logits, teacher_logits, mask, unit)]

    def label_loss(self, student_out, inputs, counts):
        return losses.task_cross_entropy(student_out.logits, inputs["labels"], num_items=counts["labels"]), "labels"

    def cross_tokenizer_refusal(self, term_names):
        return None  # words align through each tokenization's word ids

    def cross_tokenizer_card(self, args):
        return {
            "alignment": (
                "words aligned through each tokenization's word ids: the teacher's label distribution at each word's "
                "first token against the student's at its own"
            )
        }

    def align_batch(self, batch, facts):
        """`word_teacher_positions` `(batch, student_len)`: for each student token that starts a word, the teacher
        token that starts the same word ([`~hf_distill.alignment.word_alignment`]), in the padded positions of both
        sides; -1 elsewhere."""
        if not facts or "align_words" not in facts[0]:
            return {}
        student = place_rows([f["align_words"] for f in facts], batch["attention_mask"], -1)
        teacher = place_rows([f["align_teacher_words"] for f in facts], batch["teacher_attention_mask"], -1)
        moved = [word_alignment(s, t) for s, t in zip(student, teacher)]
        return {"word_teacher_positions": torch.tensor(moved, dtype=torch.long)}

    def augmentation_refusal(self) -> str | None:
        return (
            "token classification labels each word, and a replaced or deleted word leaves tags that no longer fit "
            "the words (nor the teacher's per-token targets); augmentation builds transfer sets for text "
            "classification only"
        )

    def prepare_datasets(self, raw, tokenizer, data_args, task_args=None, teacher_config=None, teacher_tokenizer=None):
        """Tokenises word lists and aligns the word tags to sub-tokens, as ids of the teacher's `id2label`; with
        `teacher_tokenizer`, the teacher's tokenization too (its own labels as `teacher_labels`) and each token's word
        on both sides (`align_words`, `align_teacher_words`)."""
        if "unlabeled" in raw:
            raise ValueError(
                f"{source_of(raw, 'unlabeled')}: token classification cannot learn from unlabeled examples yet (its "
                "soft targets are compared on the labelled tokens); leave out --unlabeled_file"
            )
        if teacher_config is None:
            raise ValueError("token classification needs the teacher's config, whose id2label names the tags")
        return prepare_token_classification(
            raw, tokenizer, data_args, self.task_arguments(task_args), teacher_config.id2label, teacher_tokenizer
        )

    def data_collator(self, tokenizer, task_args=None):
        return DataCollatorForTokenClassification(tokenizer)

    def evaluation(self, eval_dataset=None, teacher_config=None, task_args=None):
        if teacher_config is None:
            raise ValueError("token classification metrics need the teacher's config, whose id2label names the tags")
        metrics = TokenClassificationMetrics(teacher_config.id2label)
        return TaskEvaluation(metrics, argmax_logits, metrics.example_scores)


class TokenClassificationMetrics:
    """Entity F1 over the labelled tokens (labels -100 are sub-tokens and padding: not scored)."""

    def __init__(self, id2label: dict):
        self.id2label = {int(k): v for k, v in id2label.items()}

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        return entity_scores(*self.tag_sequences(prediction))

    def tag_sequences(self, prediction: EvalPrediction) -> tuple[list[list[str]], list[list[str]]]:
        """The gold and predicted tags of each example, at its labelled tokens."""
        predicted = np.asarray(prediction.predictions)
        if predicted.ndim == 3:
            predicted = predicted.argmax(-1)
        labels = np.asarray(prediction.label_ids)
        references, guesses = [], []
        for row_labels, row_predicted in zip(labels, predicted):
            scored = row_labels != IGNORE_INDEX
            references.append([self.id2label[int(i)] for i in row_labels[scored]])
            guesses.append([self.id2label.get(int(i), "O") for i in row_predicted[scored]])
        return references, guesses

    def example_scores(self, prediction: EvalPrediction) -> ExampleScores:
        """Per example: true-positive, predicted and gold entities, whose sums give the micro entity F1 (compared by
        a paired bootstrap over the examples)."""
        rows = []
        for reference, guess in zip(*self.tag_sequences(prediction)):
            gold, guessed = entities(reference), entities(guess)
            rows.append((len(gold & guessed), len(guessed), len(gold)))
        return ExampleScores("f1", stats=np.asarray(rows, dtype=np.float64).reshape(-1, 3), combine=entity_f1)


def entity_f1(sums: np.ndarray) -> float:
    """Micro entity F1 from summed (true positives, predicted, gold): `2 TP / (predicted + gold)`."""
    true_positives, predicted, gold = sums
    return float(2 * true_positives / (predicted + gold)) if predicted + gold else 0.0


def prepare_token_classification(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataSettings,
    task_args: TokenClassificationArguments,
    id2label: dict[int, str],
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> DatasetDict:
    """Tokenises word lists and aligns the word tags to sub-tokens, as ids of the teacher's `id2label`; with
    `teacher_tokenizer`, the same for the teacher's tokenization (`teacher_input_ids`, `teacher_labels`, ...) and
    each token's word index on both sides (`align_words`, `align_teacher_words`; -1 for special tokens)."""
    columns = raw["train"].column_names
    tokens_column = pick_column(columns, task_args.tokens_column, TOKENS_COLUMN_CANDIDATES, "tokens_column")
    tags_column = pick_column(columns, task_args.tags_column, TAGS_COLUMN_CANDIDATES, "tags_column")
    to_id = _tag_mapping(raw, tags_column, {int(k): v for k, v in id2label.items()})

    def word_labels(encoded, tags_of_rows) -> list[list[int]]:
        rows = []
        for i, tags in enumerate(tags_of_rows):
            labels, previous = [], None
            for word in encoded.word_ids(i):
                if word is None:
                    labels.append(IGNORE_INDEX)
                elif word != previous or task_args.label_all_tokens:
                    labels.append(to_id(tags[word]))
                else:
                    labels.append(IGNORE_INDEX)
                previous = word
            rows.append(labels)
        return rows

    def tokenize(batch):
        words = batch[tokens_column]
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=data_args.max_length)
        encoded["labels"] = word_labels(encoded, batch[tags_column])
        if teacher_tokenizer is None:
            return encoded
        columns, theirs = teacher_encoding(
            teacher_tokenizer, words, is_split_into_words=True, truncation=True, max_length=data_args.max_length
        )
        columns["teacher_labels"] = word_labels(theirs, batch[tags_column])
        columns["align_words"] = [_word_ids(encoded, i) for i in range(len(words))]
        columns["align_teacher_words"] = [_word_ids(theirs, i) for i in range(len(words))]
        return {**encoded, **columns}

    return DatasetDict(
        {
            name: split.map(tokenize, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")
            for name, split in raw.items()
        }
    )


def _word_ids(encoded, row: int) -> list[int]:
    """Each token's word index in row `row` of a fast tokenizer's encoding, -1 for special tokens."""
    return [-1 if word is None else word for word in encoded.word_ids(row)]


def _tag_mapping(raw: DatasetDict, tags_column: str, id2label: dict[int, str]):
    """A function from a tag (a name, or an id with or without ClassLabel names) to the teacher's label id."""
    feature = raw["train"].features[tags_column]
    inner = feature.feature if isinstance(feature, Sequence) else getattr(feature, "feature", None)
    names = getattr(inner, "names", None)
    label2id = {name: i for i, name in id2label.items()}
    named_teacher = not is_default_id2label(id2label)

    def to_id(tag: Any) -> int:
        if isinstance(tag, str) or names is not None:
            name = tag if isinstance(tag, str) else names[int(tag)]
            if name in label2id:
                return label2id[name]
            if not named_teacher and isinstance(tag, int) and 0 <= tag < len(id2label):
                return int(tag)
            raise ValueError(
                f"tag {name!r} of column {tags_column!r} is not one of the teacher's labels {sorted(label2id)}; "
                "the soft targets are compared label by label, so the data must use the teacher's tag set"
            )
        if not 0 <= int(tag) < len(id2label):
            raise ValueError(f"tag id {tag} of column {tags_column!r} is outside the teacher's {len(id2label)} labels")
        return int(tag)

    return to_id


def pick_column(columns: list[str], given: str | None, candidates: tuple[str, ...], argument: str) -> str:
    """The column given by `--argument` (which must exist), else the first of `candidates` in the data."""
    if given is not None:
        if given not in columns:
            raise ValueError(f"column {given!r} (--{argument}) is not in the data; available columns: {columns}")
        return given
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(
        f"could not find the {argument.removesuffix('_column')} column: none of {list(candidates)} is in the data "
        f"(available columns: {columns}); pass --{argument}"
    )


register_task(TokenClassification)
