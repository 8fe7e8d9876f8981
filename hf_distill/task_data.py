"""Data for the token-level and span tasks: what each task reads, how it is tokenised, and how batches are made.

- token classification: `tokens` (a list of words) and `ner_tags` (one tag per word, names or ids) -> `labels` per
  sub-token: the word's tag (as the teacher's label id) on its first sub-token, -100 elsewhere;
- question answering: `question`, `context` and `answers` (SQuAD style: `{"text": [...], "answer_start": [...]}`)
  -> `start_positions` and `end_positions` (0, the first token, when the answer was cut off or there is none);
- masked and causal language modelling: plain text (`text`, or `--text_column`) -> `input_ids`; the collator makes
  the labels (MLM: masks 15% of the tokens; CLM: the input ids themselves, padding at -100).

Raw data is loaded by [`hf_distill.data.load_raw_datasets`] (Hub datasets or local CSV / JSON Lines / Parquet files),
with the same `DataArguments`. Padding is dynamic, done by the collators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, DatasetDict, Sequence
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
)

from .data import DataArguments, is_default_id2label, load_raw_datasets, resolve_columns
from .tasks import IGNORE_INDEX

TOKENS_COLUMN_CANDIDATES = ("tokens", "words")
TAGS_COLUMN_CANDIDATES = ("ner_tags", "tags", "labels", "pos_tags", "chunk_tags")
# Columns that evaluation needs beside the model inputs (question answering maps spans back to answer strings).
QA_EVAL_COLUMNS = ("offset_mapping", "context", "answers")


@dataclass
class TaskDataArguments:
    """Which task to distil, and the data columns of the token-level and span tasks."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "The task: text-classification, token-classification, question-answering, fill-mask (masked LM) "
            "or text-generation (causal LM). Default: inferred from the teacher's head (its config.architectures)."
        },
    )
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
    question_column: str = field(default="question", metadata={"help": "Question answering: the question column."})
    context_column: str = field(default="context", metadata={"help": "Question answering: the context column."})
    answers_column: str = field(
        default="answers",
        metadata={
            "help": "Question answering: the answers column, SQuAD style: {'text': [...], 'answer_start': [...]}."
        },
    )
    max_answer_length: int = field(
        default=30, metadata={"help": "Question answering: the longest answer span (tokens) evaluation predicts."}
    )
    mlm_probability: float = field(
        default=0.15, metadata={"help": "Masked LM: the share of tokens masked (DataCollatorForLanguageModeling)."}
    )

    def __post_init__(self):
        if self.task is not None:
            from .tasks import resolve_task_name

            resolve_task_name(self.task)  # fails early on a misspelt task
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be between 0 and 1, got {self.mlm_probability}")
        if self.max_answer_length <= 0:
            raise ValueError(f"--max_answer_length must be positive, got {self.max_answer_length}")


def load_task_datasets(
    task: str, data_args: DataArguments, task_args: TaskDataArguments, tokenizer: PreTrainedTokenizerBase, config=None
) -> DatasetDict:
    """Loads the raw splits and tokenises them for `task` (hf_distill's task name); `config` is the teacher's.

    Question-answering evaluation splits keep the columns of `QA_EVAL_COLUMNS` for the metrics (the trainer drops
    them from the batches).
    """
    raw = load_raw_datasets(data_args)
    if task == "token-classification":
        return prepare_token_classification(raw, tokenizer, data_args, task_args, config.id2label)
    if task == "question-answering":
        return prepare_question_answering(raw, tokenizer, data_args, task_args)
    if task in ("masked-lm", "causal-lm"):
        mlm = task == "masked-lm"
        return prepare_language_modeling(
            raw, tokenizer, data_args, mlm=mlm, mlm_probability=task_args.mlm_probability, seed=data_args.split_seed
        )
    raise ValueError(f"no data preparation for task {task!r}")


def collator_for(task: str, tokenizer: PreTrainedTokenizerBase, task_args: TaskDataArguments | None = None):
    """The batch maker of each task (dynamic padding; masking for MLM)."""
    task_args = task_args or TaskDataArguments()
    if task == "token-classification":
        return DataCollatorForTokenClassification(tokenizer)
    if task == "question-answering":
        return DataCollatorWithPadding(tokenizer)
    if task in ("masked-lm", "causal-lm"):
        return LanguageModelingCollator(tokenizer, mlm=task == "masked-lm", mlm_probability=task_args.mlm_probability)
    raise ValueError(f"no collator for task {task!r}")


# ---- token classification ------------------------------------------------------------------------------------------


def prepare_token_classification(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    task_args: TaskDataArguments,
    id2label: dict[int, str],
) -> DatasetDict:
    """Tokenises word lists and aligns the word tags to sub-tokens, as ids of the teacher's `id2label`."""
    columns = raw["train"].column_names
    tokens_column = _pick(columns, task_args.tokens_column, TOKENS_COLUMN_CANDIDATES, "tokens_column")
    tags_column = _pick(columns, task_args.tags_column, TAGS_COLUMN_CANDIDATES, "tags_column")
    to_id = _tag_mapping(raw, tags_column, {int(k): v for k, v in id2label.items()})

    def tokenize(batch):
        encoded = tokenizer(
            batch[tokens_column], is_split_into_words=True, truncation=True, max_length=data_args.max_length
        )
        encoded["labels"] = []
        for i, tags in enumerate(batch[tags_column]):
            labels, previous = [], None
            for word in encoded.word_ids(i):
                if word is None:
                    labels.append(IGNORE_INDEX)
                elif word != previous or task_args.label_all_tokens:
                    labels.append(to_id(tags[word]))
                else:
                    labels.append(IGNORE_INDEX)
                previous = word
            encoded["labels"].append(labels)
        return encoded

    return DatasetDict(
        {
            name: split.map(tokenize, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")
            for name, split in raw.items()
        }
    )


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


# ---- question answering --------------------------------------------------------------------------------------------


def prepare_question_answering(
    raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, data_args: DataArguments, task_args: TaskDataArguments
) -> DatasetDict:
    """Tokenises (question, context) pairs, one feature per example (the context is cut to `max_length`), with the
    answer's first and last token as `start_positions` / `end_positions`; (0, 0) when the answer was cut off or
    there is none. Evaluation splits also keep `QA_EVAL_COLUMNS`."""
    columns = raw["train"].column_names
    for name in (task_args.question_column, task_args.context_column, task_args.answers_column):
        if name not in columns:
            raise ValueError(
                f"question answering needs the columns question, context and answers; {name!r} is not in the data "
                f"(available columns: {columns}). Pass --question_column, --context_column or --answers_column"
            )
    pad_right = tokenizer.padding_side == "right"

    def tokenize(batch, keep_for_eval: bool):
        questions = [q.lstrip() for q in batch[task_args.question_column]]
        contexts = batch[task_args.context_column]
        first, second = (questions, contexts) if pad_right else (contexts, questions)
        encoded = tokenizer(
            first,
            second,
            truncation="only_second" if pad_right else "only_first",
            max_length=data_args.max_length,
            return_offsets_mapping=True,
        )
        context_index = 1 if pad_right else 0
        starts, ends, offsets = [], [], []
        for i, answers in enumerate(batch[task_args.answers_column]):
            sequence_ids = encoded.sequence_ids(i)
            start, end = _answer_span(answers, encoded["offset_mapping"][i], sequence_ids, context_index)
            starts.append(start)
            ends.append(end)
            offsets.append(
                [o if s == context_index else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids)]
            )
        encoded["start_positions"], encoded["end_positions"] = starts, ends
        if keep_for_eval:
            encoded["offset_mapping"] = offsets
            encoded["context"] = contexts
            encoded["answers"] = batch[task_args.answers_column]
        else:
            encoded.pop("offset_mapping")
        return encoded

    return DatasetDict(
        {
            name: split.map(
                tokenize,
                batched=True,
                remove_columns=split.column_names,
                fn_kwargs={"keep_for_eval": name != "train"},
                desc=f"Tokenizing {name}",
            )
            for name, split in raw.items()
        }
    )


def _answer_span(answers: dict, offsets: list, sequence_ids: list, context_index: int) -> tuple[int, int]:
    texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    if not texts or not starts:
        return 0, 0
    start_char, end_char = int(starts[0]), int(starts[0]) + len(texts[0])
    context = [i for i, s in enumerate(sequence_ids) if s == context_index]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0  # cut off by the truncation
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end


# ---- language modelling --------------------------------------------------------------------------------------------


def prepare_language_modeling(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    mlm: bool,
    mlm_probability: float = 0.15,
    seed: int = 42,
) -> DatasetDict:
    """Tokenises the text column line by line (cut to `max_length`, empty lines dropped).

    The training split is masked afresh in every batch by the collator; the evaluation splits are masked once, here,
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
        if mlm and name != "train":
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


def _pick(columns: list[str], given: str | None, candidates: tuple[str, ...], argument: str) -> str:
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
