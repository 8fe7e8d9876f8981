"""Text classification: one label per text (or text pair), or one real value (regression).

- Data: the text (and text pair) columns of [`hf_distill.data.DataArguments`] and the label column of
  [`TextClassificationArguments`]; labels are mapped onto the teacher's `config.id2label` by name when it has real
  names ([`build_label_mapping`]); a regression teacher (`num_labels == 1` or `problem_type == "regression"`) takes
  real-valued targets as they are. The transfer set (`"unlabeled"` split) gets the label -100, which the hard-label
  loss ignores.
- Metrics: accuracy and macro-F1; MSE and Pearson's correlation for regression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification

from .. import losses, metrics
from ..columns import TEXT_COLUMN_CANDIDATES, detect_column
from ..cross_tokenizer import teacher_encoding
from ..data_settings import DataSettings
from ..log import get_logger
from ..provenance import first_bad_row, source_of, with_provenance
from .base import (
    IGNORE_INDEX,
    CardMetric,
    ExampleScores,
    LogitTarget,
    Task,
    TaskEvaluation,
    is_default_id2label,
    mean_combiner,
)
from .registry import register_task

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase


logger = get_logger(__name__)

LABEL_COLUMN_CANDIDATES = ("label", "labels", "sentiment", "class", "target")


@dataclass
class TextClassificationArguments:
    """The flags of text classification (the text columns are shared: [`hf_distill.data.DataArguments`])."""

    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Text classification: the column holding the label (a class name or id; a number for "
            f"regression). If not set, the first existing column of {', '.join(LABEL_COLUMN_CANDIDATES)} is used."
        },
    )


class SequenceClassification(Task):
    """One label per example: logits `(batch, num_labels)`; regression when `problem_type == "regression"` or the
    head has one output.

    Regression (one output) compares the outputs by squared error, with no temperature.
    """

    name = "sequence-classification"
    pipeline_tag = "text-classification"
    auto_class = AutoModelForSequenceClassification
    mapping_name = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    peft_task_type = "SEQ_CLS"
    labelled_outputs = True
    data_arguments = TextClassificationArguments
    usage_example = ("classifier", 'classifier("I love this movie!")')
    per_position_logits = False

    CLASSIFICATION_METRICS = (
        CardMetric("accuracy", "Accuracy", "accuracy"),
        CardMetric("macro_f1", "Macro-F1", "f1", args={"average": "macro"}),
    )
    REGRESSION_METRICS = (
        CardMetric("mse", "MSE", "mse", percent=False, higher_is_better=False),
        CardMetric("pearson", "Pearson correlation", "pearsonr", percent=False),
    )

    def __init__(self, is_regression: bool = False):
        self.is_regression = is_regression

    def __repr__(self) -> str:
        return f"SequenceClassification(is_regression={self.is_regression})"

    @classmethod
    def from_model(cls, model) -> SequenceClassification:
        if model.config.problem_type == "multi_label_classification":
            raise ValueError(
                f"{type(model).__name__} has problem_type='multi_label_classification', which is not supported; "
                "use single-label classification or regression (num_labels=1)"
            )
        return cls(is_regression=is_regression_config(model.config))

    @property
    def card_metrics(self) -> tuple[CardMetric, ...]:
        return self.REGRESSION_METRICS if self.is_regression else self.CLASSIFICATION_METRICS

    # ---- training ------------------------------------------------------------------------------------------------

    def logit_targets(self, student_out, teacher_out, inputs):
        return [LogitTarget(student_out.logits, teacher_out.logits, None, "examples")]

    def label_loss(self, student_out, inputs, counts):
        labels = inputs["labels"]
        if self.is_regression:
            return losses.task_mse(student_out.logits, labels, num_items=counts["examples"]), "examples"
        return losses.task_cross_entropy(student_out.logits, labels, num_items=counts["labels"]), "labels"

    # ---- data ----------------------------------------------------------------------------------------------------

    def augmentation_refusal(self) -> str | None:
        if self.is_regression:
            return (
                "a regression teacher cannot learn from unlabelled examples yet (its hard-label loss has no label to "
                "ignore)"
            )
        return None

    def cross_tokenizer_refusal(self, term_names):
        return None  # one prediction per example: the soft targets need no alignment

    def cross_tokenizer_card(self, args):
        return {"alignment": "one prediction per example over the same labels, so the soft targets need no alignment"}

    def prepare_datasets(self, raw, tokenizer, data_args, task_args=None, teacher_config=None, teacher_tokenizer=None):
        """Tokenises texts (or text pairs), without padding, and maps the labels to the teacher's ids (real values
        for regression); the `"unlabeled"` split gets the label -100. With `teacher_tokenizer`, the teacher's
        tokenization of each text too (`teacher_input_ids`, ...)."""
        task_args = self.task_arguments(task_args)
        regression = self.is_regression or (teacher_config is not None and is_regression_config(teacher_config))
        labelled = with_provenance(
            DatasetDict({name: split for name, split in raw.items() if name != "unlabeled"}), raw
        )
        text_column, text_pair_column, label_column = resolve_columns(labelled, data_args, task_args)
        _check_single_labels(labelled, label_column)
        if regression:
            label2id = None
            _check_real_targets(labelled, label_column)
        else:
            id2label = getattr(teacher_config, "id2label", None)
            label2id = build_label_mapping(labelled, label_column, id2label)
        tokenized = tokenize_datasets(
            labelled, tokenizer, data_args, text_column, text_pair_column, label_column, label2id, teacher_tokenizer
        )
        if "unlabeled" in raw:
            if regression:
                raise ValueError(
                    f"{source_of(raw, 'unlabeled')}: a regression teacher cannot learn from unlabeled examples yet "
                    "(its hard-label loss has no label to ignore); leave out --unlabeled_file"
                )
            tokenized["unlabeled"] = tokenize_unlabeled(
                raw["unlabeled"], tokenizer, data_args, text_column, text_pair_column, teacher_tokenizer
            )
        return tokenized

    # ---- evaluation ----------------------------------------------------------------------------------------------

    def evaluation(self, eval_dataset=None, teacher_config=None, task_args=None):
        regression = self.is_regression or (teacher_config is not None and is_regression_config(teacher_config))
        if regression:
            return TaskEvaluation(regression_metrics, example_scores=regression_example_scores)
        return TaskEvaluation(classification_metrics, example_scores=classification_example_scores)


def is_regression_config(config) -> bool:
    """Whether a sequence-classification config is a regression head (`problem_type` or a single output)."""
    return config.problem_type == "regression" or config.num_labels == 1


def classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro-F1 from a Trainer's predictions (`compute_metrics` for classification)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(-1)
    labels = np.asarray(prediction.label_ids)
    return {"accuracy": metrics.accuracy(labels, predicted), "macro_f1": metrics.macro_f1(labels, predicted)}


def classification_example_scores(prediction: EvalPrediction) -> ExampleScores:
    """Per-example correctness (accuracy: McNemar's test) and the predicted class's probability (calibration)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    correct = logits.argmax(-1) == np.asarray(prediction.label_ids).reshape(-1)
    return ExampleScores("accuracy", correct=correct, confidence=probabilities.max(-1))


def regression_example_scores(prediction: EvalPrediction) -> ExampleScores:
    """Per-example squared errors (MSE, compared by a paired bootstrap)."""
    values = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    errors = np.asarray(values, dtype=np.float64).reshape(-1) - np.asarray(prediction.label_ids, dtype=np.float64)
    stats = np.stack([errors**2, np.ones_like(errors)], axis=1)
    return ExampleScores("mse", stats=stats, combine=mean_combiner)


def regression_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Mean squared error and Pearson's correlation of the predicted values (`compute_metrics` for regression)."""
    values = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(values, dtype=np.float64).reshape(-1)
    targets = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1)
    return {"mse": metrics.mean_squared_error(targets, predicted), "pearson": metrics.pearson(targets, predicted)}


# ---------------------------------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------------------------------


def _pick_column(columns: list[str], given: str | None, candidates: tuple[str, ...], argument: str) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"Column {given!r} (--{argument}) is not in the data; available columns: {columns}.")
        return given
    detected = detect_column(columns, candidates)
    if detected is None:
        raise ValueError(
            f"Could not find the {argument.removesuffix('_column')} column: none of {list(candidates)} is in the data "
            f"(available columns: {columns}). Pass --{argument}."
        )
    return detected


def resolve_columns(
    dataset: Dataset | DatasetDict,
    data_args: DataSettings,
    task_args: TextClassificationArguments | None = None,
    require_label: bool = True,
) -> tuple[str, str | None, str | None]:
    """
    Finds the text, text-pair and label columns.

    Columns given in the arguments must exist; the others are detected: the text column is the first of
    `TEXT_COLUMN_CANDIDATES` and the label column the first of `LABEL_COLUMN_CANDIDATES` that exists (exact name
    first, then case-insensitive). The text-pair column is never guessed.

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.DatasetDict`]):
            The raw data. For a `DatasetDict` the columns are resolved on the `"train"` split and must exist in all
            splits.
        data_args ([`~hf_distill.data.DataArguments`]):
            Provides `text_column` and `text_pair_column`.
        task_args ([`TextClassificationArguments`], *optional*):
            Provides `label_column`.
        require_label (`bool`, *optional*, defaults to `True`):
            Whether a missing label column is an error. If `False` and no label column is found, `None` is returned
            for it.

    Returns:
        `tuple[str, str | None, str | None]`: the text column, the text-pair column (or `None`) and the label column.

    Raises:
        `ValueError`: naming the missing column, the flag that selects it and the available columns.
    """
    task_args = task_args or TextClassificationArguments()
    if isinstance(dataset, DatasetDict):
        reference = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    else:
        reference = dataset
    columns = list(reference.column_names)

    text_column = _pick_column(columns, data_args.text_column, TEXT_COLUMN_CANDIDATES, "text_column")
    text_pair_column = None
    if data_args.text_pair_column is not None:
        text_pair_column = _pick_column(columns, data_args.text_pair_column, (), "text_pair_column")
    if data_args.text_column is None and text_pair_column is None:
        # E.g. QNLI has both "question" and "sentence": picking one silently would drop half of every example.
        others = [c for c in columns if c != text_column and detect_column([c], TEXT_COLUMN_CANDIDATES)]
        if others:
            logger.warning(
                f"Using {text_column!r} as the text column; column(s) {others} also look like text. Pass "
                "--text_pair_column for a text-pair task, or --text_column to choose another column."
            )
    try:
        label_column = _pick_column(columns, task_args.label_column, LABEL_COLUMN_CANDIDATES, "label_column")
    except ValueError:
        if require_label or task_args.label_column is not None:
            raise
        label_column = None

    used = [column for column in (text_column, text_pair_column, label_column) if column is not None]
    if len(set(used)) != len(used):
        raise ValueError(
            f"The text ({text_column!r}), text pair ({text_pair_column!r}) and label ({label_column!r}) columns must "
            "be different columns."
        )
    if isinstance(dataset, DatasetDict):
        for split, split_dataset in dataset.items():
            missing = [column for column in used if column not in split_dataset.column_names]
            if missing:
                raise ValueError(
                    f"The {split} split lacks column(s) {missing} found in the train split; its columns are "
                    f"{split_dataset.column_names}."
                )
    return text_column, text_pair_column, label_column


def _check_single_labels(dataset_dict: DatasetDict, label_column: str) -> None:
    """Refuses a label column of lists (several labels per example), naming the file and its first such row."""
    bad = first_bad_row(dataset_dict, label_column, lambda value: isinstance(value, (list, dict, tuple)))
    if bad is not None:
        where, value, count = bad
        raise ValueError(
            f"{where} holds the list {value!r} in label column {label_column!r} ({count} row(s) in all); text "
            "classification takes one label per example. Store each row's single label (a class name or id) in that "
            "column, or choose another column with --label_column (several labels per example, multi-label "
            "classification, is not supported)."
        )


def _check_real_targets(dataset_dict: DatasetDict, label_column: str) -> None:
    """Regression targets must be numbers; names the file and its first row that holds something else."""
    bad = first_bad_row(dataset_dict, label_column, lambda value: not _is_real_target(value))
    if bad is not None:
        where, value, count = bad
        raise ValueError(
            f"{where} has the target {value!r} in column {label_column!r} ({count} row(s) in all are not numbers), "
            "but the teacher is a regression model (one output): every target must be a number. Fix these cells, or "
            "give a classification teacher."
        )


def _is_real_target(value: Any) -> bool:
    """A regression target as a data file may hold it: a number, or a string that reads as one; not NaN."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, (int, float)):
        return not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        try:
            return not math.isnan(float(value))
        except ValueError:
            return False
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------------


def _normalize_label(value: Any) -> Any:
    """Integer-valued floats (e.g. from a CSV column with a stray missing value) become ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _class_names(dataset: Dataset, label_column: str) -> list[str] | None:
    feature = dataset.features[label_column]
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _label_key(value: Any, class_names: list[str] | None, label2id: dict[str, int]) -> Any:
    """
    The value looked up in `label2id`: the class name for `ClassLabel` columns whose names are all known to
    `label2id`, otherwise the (normalized) value itself.
    """
    if class_names is not None and _is_int(value) and 0 <= value < len(class_names):
        if all(name in label2id for name in class_names):
            return class_names[value]
    return _normalize_label(value)


def _label_to_id(key: Any, label2id: dict[str, int], num_labels: int) -> int | None:
    """
    Maps one label value to its id, or `None` if it cannot be mapped.

    Strings (and other values) are looked up by name as strings. Integers are looked up by name first (so integer
    labels of a mapping built from the data map to themselves), then accepted as ids when in `[0, num_labels)`.
    """
    if key is None or key == "":
        return None
    name = str(key)
    if name in label2id:
        return label2id[name]
    if _is_int(key) and 0 <= key < num_labels:
        return key
    return None


def _unique_labels(dataset_dict: DatasetDict, label_column: str) -> list[Any]:
    """The distinct (normalized) values of `label_column` in all splits, in order of first appearance."""
    seen: dict[Any, None] = {}
    for split, dataset in dataset_dict.items():
        if label_column not in dataset.column_names:
            raise ValueError(
                f"The {split} split has no label column {label_column!r} (--label_column); its columns are "
                f"{dataset.column_names}."
            )
        for value in dataset.unique(label_column):
            value = _normalize_label(value)
            if value is None or value == "":
                raise ValueError(
                    f"The {split} split has examples with a missing label in column {label_column!r}; fill or drop "
                    "them."
                )
            seen.setdefault(value, None)
    return list(seen)


def _sort_labels(values: list[Any]) -> list[Any]:
    """Sorts label values: numbers numerically, strings that all spell integers numerically, other strings by text."""
    if all(_is_int(value) or isinstance(value, float) for value in values):
        return sorted(values)
    if all(isinstance(value, str) and re.fullmatch(r"-?\d+", value) for value in values):
        return sorted(values, key=int)
    return sorted(values, key=str)


def _mapping_from_data(
    dataset_dict: DatasetDict, label_column: str, values: list[Any], num_teacher_labels: int = 0
) -> dict[str, int]:
    class_names = _class_names(dataset_dict["train"], label_column) if "train" in dataset_dict else None
    if class_names is not None:
        # The dataset's own class names and order are the most meaningful mapping there is.
        return {name: index for index, name in enumerate(class_names)}
    if all(_is_int(value) for value in values):
        # Integer labels are ids already when they are 0..n-1, or, for a teacher without label names but with
        # `num_labels` outputs, when they are in [0, num_labels) (a small split need not contain every class).
        num_labels = max(len(values), num_teacher_labels)
        if all(0 <= value < num_labels for value in values) and (
            num_teacher_labels or set(values) == set(range(num_labels))
        ):
            return {str(index): index for index in range(num_labels)}
    return {str(value): index for index, value in enumerate(_sort_labels(values))}


def _mapping_from_teacher(
    dataset_dict: DatasetDict, label_column: str, values: list[Any], id2label: dict[int, str]
) -> dict[str, int]:
    label2id = {str(name): int(index) for index, name in sorted(id2label.items(), key=lambda item: int(item[0]))}
    num_labels = len(id2label)
    known = list(label2id)
    for split, dataset in dataset_dict.items():
        class_names = _class_names(dataset, label_column)
        if class_names is not None and not all(name in label2id for name in class_names):
            logger.warning(
                "The %s split's label column %r has class names %s that differ from the teacher's labels %s; its "
                "integer labels are used as the teacher's ids as they are.",
                split,
                label_column,
                class_names,
                known,
            )
        for value in dataset.unique(label_column):
            key = _label_key(value, class_names, label2id)
            if _label_to_id(key, label2id, num_labels) is None:
                raise ValueError(
                    f"label {key!r} in column {label_column!r} ({split} split) is not one of the teacher's labels "
                    f"{known} (config.id2label); map or filter it, or pass a teacher trained on these labels. "
                    f"Integer labels are also accepted as ids in [0, {num_labels})."
                )
    # Integer labels are looked up by name first; mixing "by name" and "by id" in one column would be inconsistent.
    ints = [value for value in values if _is_int(value)]
    by_name = [value for value in ints if str(value) in label2id]
    if by_name and len(by_name) != len(ints):
        raise ValueError(
            f"Integer labels in column {label_column!r} are ambiguous: {by_name} match the teacher's label names "
            f"{known} while the others can only be ids. Convert the column to the teacher's label names."
        )
    return label2id


def build_label_mapping(
    dataset_dict: DatasetDict, label_column: str, id2label: dict[int, str] | None = None
) -> dict[str, int]:
    """
    Builds the mapping from label names to ids, checking that every label in the data can be mapped.

    - With a teacher `id2label` that has real names (not the `LABEL_0`, `LABEL_1`, ... placeholders), labels are mapped
      *by name* onto the teacher's ids, so the student learns the teacher's label order whatever order the data uses.
      String labels are compared as strings; integer labels that are valid ids (in `[0, len(id2label))`) are accepted
      as ids. A `ClassLabel` column whose class names all are teacher labels is mapped by name.
    - Otherwise the mapping is built from the data: the class names of a `ClassLabel` column, integer labels
      `0..n-1` map to themselves, anything else is sorted and numbered `0..n-1`.

    The mapping is applied by [`tokenize_datasets`] and is meant to be stored as `label2id` (and its inverse as
    `id2label`) in the config of a model trained from scratch.

    Args:
        dataset_dict ([`~datasets.DatasetDict`]):
            The raw data; the labels of all its splits are checked.
        label_column (`str`):
            The label column.
        id2label (`dict[int, str]`, *optional*):
            The teacher's `config.id2label`.

    Returns:
        `dict[str, int]`: label name -> id. For integer labels without names, the names are the integers as strings.

    Raises:
        `ValueError`: a label is missing, or unknown to the teacher (naming the value, the column and the known
        labels), or the data has more labels than a teacher without label names.
    """
    values = _unique_labels(dataset_dict, label_column)
    if not is_default_id2label(id2label):
        return _mapping_from_teacher(dataset_dict, label_column, values, id2label)

    num_teacher_labels = len(id2label) if id2label else 0
    label2id = _mapping_from_data(dataset_dict, label_column, values, num_teacher_labels)
    if num_teacher_labels:
        # A teacher without label names: its number of outputs still has to fit the data.
        if len(set(label2id.values())) > num_teacher_labels:
            raise ValueError(
                f"Column {label_column!r} has {len(label2id)} distinct labels {list(label2id)} but the teacher has "
                f"only {num_teacher_labels} outputs (config.id2label has no label names)."
            )
        if not all(_is_int(value) for value in values):
            logger.warning(
                "The teacher has no label names (config.id2label = %s); the labels of column %r are numbered in "
                "sorted order %s. Make sure the teacher was trained with the same order.",
                id2label,
                label_column,
                label2id,
            )
    return label2id


# ---------------------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------------------


def _make_tokenize_function(
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    text_column: str,
    text_pair_column: str | None,
    label_column: str,
    label2id: dict[str, int] | None,
    class_names: list[str] | None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
    """
    Builds the batched `map` function (`label2id=None`: regression, the targets as floats). It only closes over
    picklable values, so `datasets` can hash it into a stable fingerprint (the cache key) and send it to worker
    processes.
    """
    num_labels = len(set(label2id.values())) if label2id is not None else 0

    def check_texts(texts: list[Any], column: str, indices: list[int]) -> None:
        for text, index in zip(texts, indices):
            if not isinstance(text, str):
                raise ValueError(f"Example {index} has no text in column {column!r} (got {text!r}).")

    def tokenize(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        texts = batch[text_column]
        check_texts(texts, text_column, indices)
        text_pairs = None
        if text_pair_column is not None:
            text_pairs = batch[text_pair_column]
            check_texts(text_pairs, text_pair_column, indices)
        # No padding: `DataCollatorWithPadding` pads each batch to its own longest example, which is much cheaper.
        encoding = tokenizer(texts, text_pairs, truncation=True, max_length=max_length)
        if teacher_tokenizer is not None:
            teacher_columns, _ = teacher_encoding(
                teacher_tokenizer, texts, text_pairs, truncation=True, max_length=max_length
            )
            encoding = {**encoding, **teacher_columns}
        if label2id is None:
            return {**encoding, "labels": [float(value) for value in batch[label_column]]}
        labels = []
        for value, index in zip(batch[label_column], indices):
            label_id = _label_to_id(_label_key(value, class_names, label2id), label2id, num_labels)
            if label_id is None:
                raise ValueError(
                    f"Example {index}: label {value!r} in column {label_column!r} is not one of {list(label2id)}."
                )
            labels.append(label_id)
        return {**encoding, "labels": labels}

    return tokenize


def tokenize_datasets(
    dataset_dict: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    args: DataSettings,
    text_column: str,
    text_pair_column: str | None,
    label_column: str,
    label2id: dict[str, int] | None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> DatasetDict:
    """
    Tokenizes every split and converts the labels to ids (`label2id=None`: regression targets, as floats); with
    `teacher_tokenizer`, each text is also tokenised by the teacher's tokenizer (`teacher_input_ids`, ...).

    Uses a batched [`~datasets.Dataset.map`], so with file-backed data the result is cached by fingerprint and a
    second run with the same data, tokenizer and arguments reloads it instead of tokenizing again. Examples are
    truncated to `args.max_length` tokens and *not* padded; pad dynamically with
    [`~transformers.DataCollatorWithPadding`].

    Returns:
        [`~datasets.DatasetDict`]: the same splits with only the columns `input_ids`, `attention_mask`,
        `token_type_ids` (if the tokenizer returns them) and `labels`.
    """
    tokenized = {}
    for split, dataset in dataset_dict.items():
        function = _make_tokenize_function(
            tokenizer,
            args.max_length,
            text_column,
            text_pair_column,
            label_column,
            label2id,
            _class_names(dataset, label_column),
            teacher_tokenizer,
        )
        tokenized[split] = dataset.map(
            function,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            num_proc=args.preprocessing_num_workers,
            desc=f"Tokenizing the {split} split",
        )
    return DatasetDict(tokenized)


def tokenize_unlabeled(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    args: DataSettings,
    text_column: str,
    text_pair_column: str | None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> Dataset:
    """Tokenizes the transfer set like the training data, with every label -100 (ignored by the hard-label loss)."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[text_pair_column] if text_pair_column else None
        encoding = tokenizer(batch[text_column], pairs, truncation=True, max_length=args.max_length)
        if teacher_tokenizer is not None:
            teacher_columns, _ = teacher_encoding(
                teacher_tokenizer, batch[text_column], pairs, truncation=True, max_length=args.max_length
            )
            encoding = {**encoding, **teacher_columns}
        return {**encoding, "labels": [IGNORE_INDEX] * len(batch[text_column])}

    return dataset.map(
        tokenize,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=args.preprocessing_num_workers,
        desc="Tokenizing the unlabeled texts",
    )


register_task(SequenceClassification)
