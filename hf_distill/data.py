"""
Data loading and preprocessing for text classification (single text or text pair) used by `hf-distill train`.

The pipeline is:

1. [`load_raw_datasets`]: load a Hub dataset (or a local dataset folder) or local CSV / JSON Lines / Parquet files into
   a [`~datasets.DatasetDict`] with `"train"`, `"validation"` and optionally `"test"` splits, optionally de-duplicated
   and truncated.
2. [`resolve_columns`]: find the text, text-pair and label columns.
3. [`build_label_mapping`]: map the label values to ids, by name onto the teacher's `config.id2label` when it has
   meaningful names.
4. [`tokenize_datasets`]: tokenize without padding (padding is dynamic, done by
   [`~transformers.DataCollatorWithPadding`]) and keep only the model inputs and `labels`.

[`prepare_text_classification`] chains the four steps.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# The label of a transfer-set example: the hard-label loss ignores it (as transformers' losses ignore -100).
IGNORED_LABEL = -100

# Candidates for the automatic column detection, in order of preference.
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "tweet", "question")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "sentiment", "class", "target")

# Local file extension -> `datasets` packaged builder.
_EXTENSION_TO_BUILDER = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",  # one example per line, in a column named "text" (language-model corpora)
}
# Split names that are used as the evaluation split when `eval_split` is not given.
_EVAL_SPLIT_CANDIDATES = ("validation", "valid", "dev")
# Matches the names `PretrainedConfig` invents when a checkpoint has no real label names.
_DEFAULT_LABEL_NAME = re.compile(r"LABEL_(\d+)")


@dataclass
class DataArguments:
    """
    Arguments describing the text classification data used for distillation.

    Every field carries a `help` metadata entry so that [`~transformers.HfArgumentParser`] turns it into a documented
    command line flag (`--dataset_name`, `--train_file`, ...).
    """

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Name of a dataset on the Hugging Face Hub, or path to a local dataset folder, passed to "
            "`datasets.load_dataset`. Mutually exclusive with --train_file."
        },
    )
    dataset_config_name: str | None = field(
        default=None,
        metadata={"help": "Configuration name of the dataset (e.g. 'sst2' for the 'glue' dataset)."},
    )
    train_split: str = field(
        default="train",
        metadata={"help": "Split of --dataset_name used for training."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Split of --dataset_name used for evaluation. If not set, a 'validation', 'valid' or 'dev' split "
            "is used when the dataset has one; otherwise (and when no --validation_file is given) "
            "--validation_split_percentage percent of the training data is held out."
        },
    )
    test_split: str | None = field(
        default=None,
        metadata={
            "help": "Split of --dataset_name used as the test set (e.g. 'test'). Not used unless set, because many "
            "Hub test splits are unlabeled."
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Local training file: .csv, .tsv, .json/.jsonl (JSON Lines) or .parquet; the format is inferred "
            "from the extension. Mutually exclusive with --dataset_name."
        },
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Local evaluation file (.csv, .tsv, .json/.jsonl or .parquet). Overrides --eval_split."},
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "Local test file (.csv, .tsv, .json/.jsonl or .parquet). Overrides --test_split."},
    )
    validation_split_percentage: int = field(
        default=10,
        metadata={
            "help": "Percentage of the training data held out for evaluation when there is no evaluation split or "
            "file."
        },
    )
    split_seed: int = field(
        default=42,
        metadata={"help": "Seed of the shuffle that holds out evaluation data (see --validation_split_percentage)."},
    )
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the text. If not set, the first existing column of "
            f"{', '.join(TEXT_COLUMN_CANDIDATES)} is used."
        },
    )
    text_pair_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the second text of text-pair tasks (e.g. the hypothesis of NLI). If not set, the "
            "task is single-text."
        },
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the label. If not set, the first existing column of "
            f"{', '.join(LABEL_COLUMN_CANDIDATES)} is used."
        },
    )
    max_length: int = field(
        default=128,
        metadata={"help": "Maximum number of tokens per example (text and text pair together); longer is truncated."},
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only the first N training examples (for debugging or quick runs). Default: all."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep only the first N examples of the evaluation and test sets (for debugging or quick runs). "
            "Default: all."
        },
    )
    unlabeled_file: str | None = field(
        default=None,
        metadata={
            "help": "Extra in-domain texts without labels (a transfer set: .csv, .jsonl or .parquet, same text "
            "column(s)). They join the training data: the teacher's soft targets teach the student on them, the "
            "hard-label loss skips them. Texts that also appear in the evaluation or test data are dropped."
        },
    )
    drop_duplicates: bool = field(
        default=False,
        metadata={
            "help": "Drop examples whose text (and text pair) repeats an earlier example, before any split is made. "
            "Splits are scanned in the order train, validation, test, so an evaluation example that repeats a "
            "training example is dropped too and evaluation accuracy is not inflated by memorized examples."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={"help": "Number of processes used for tokenization. Default: a single process."},
    )

    def __post_init__(self):
        if (self.dataset_name is None) == (self.train_file is None):
            given = "both were given" if self.dataset_name is not None else "neither was given"
            raise ValueError(f"Pass exactly one of --dataset_name or --train_file ({given}).")
        # Fail at argument parsing time rather than after the model has been loaded.
        for argument in ("train_file", "validation_file", "test_file"):
            path = getattr(self, argument)
            if path is not None:
                _builder_for_file(path, argument)
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be between 1 and 99, got {self.validation_split_percentage}."
            )
        if self.max_length <= 0:
            raise ValueError(f"--max_length must be positive, got {self.max_length}.")
        for argument in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, argument)
            if value is not None and value <= 0:
                raise ValueError(f"--{argument} must be positive when given, got {value}.")


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def _builder_for_file(path: str, argument: str) -> str:
    """Returns the `datasets` builder name (`"csv"`, `"json"` or `"parquet"`) for a local file, from its extension."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in _EXTENSION_TO_BUILDER:
        supported = ", ".join(_EXTENSION_TO_BUILDER)
        raise ValueError(
            f"--{argument} {path!r} has the unsupported extension {extension!r}; the format is inferred from the "
            f"extension, supported are: {supported}."
        )
    return _EXTENSION_TO_BUILDER[extension]


def _resolve_paths(path: str, argument: str) -> list[str]:
    """Checks that a local file (or glob pattern) exists and returns the matching files."""
    if any(char in path for char in "*?["):
        matches = sorted(glob.glob(path))
        if not matches:
            raise FileNotFoundError(f"--{argument} {path!r} does not match any file.")
        return matches
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--{argument} {path!r} does not exist (or is not a file).")
    return [path]


def _file_has_no_rows(path: str, builder: str, csv_kwargs: dict[str, Any]) -> bool:
    """
    Cheaply checks whether a local file holds no examples.

    `datasets` fails on such files with messages that do not name the file (`Instruction "train" corresponds to no
    data!`, a bare `StopIteration`, `DatasetGenerationError`), so they are detected before loading.
    """
    if builder == "csv":
        import pandas as pd

        try:
            return pd.read_csv(path, nrows=1, **csv_kwargs).empty
        except pd.errors.EmptyDataError:
            return True
    if builder == "text":
        with open(path, encoding="utf-8") as file:
            return file.read(1 << 16).strip() == ""
    if builder == "json":
        with open(path, encoding="utf-8") as file:
            head = file.read(1 << 16).strip()
        # An empty JSON Lines file, or a JSON file holding an empty array.
        return head == "" or (head.startswith("[") and head[1:].lstrip().startswith("]"))
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows == 0


def _load_file(path: str, argument: str) -> Dataset:
    """Loads one local file (or glob pattern) as a single [`~datasets.Dataset`]."""
    builder = _builder_for_file(path, argument)
    files = _resolve_paths(path, argument)
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        # `datasets` forwards these to `pandas.read_csv`. By default pandas turns texts such as "NA", "null" or "None"
        # into NaN, which silently corrupts text columns; keep every cell as written.
        kwargs = {"keep_default_na": False}
        if os.path.splitext(path)[1].lower() == ".tsv":
            kwargs["sep"] = "\t"
    if all(_file_has_no_rows(file, builder, kwargs) for file in files):
        raise ValueError(f"--{argument} {path!r} is empty: it contains no examples.")
    # A single split per call so that files of different formats can be mixed (e.g. train.csv + validation.jsonl).
    return datasets.load_dataset(builder, data_files={"data": files}, split="data", **kwargs)


def _load_hub_splits(args: DataArguments) -> dict[str, Dataset]:
    """Loads the train/evaluation/test splits of `args.dataset_name` (a Hub dataset or a local dataset folder)."""
    raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    if isinstance(raw, Dataset):  # Some loaders return a bare Dataset; treat it as the training split.
        raw = DatasetDict({args.train_split: raw})
    available = list(raw.keys())

    def get(split: str, argument: str) -> Dataset:
        if split not in raw:
            raise ValueError(
                f"--{argument} {split!r} is not a split of dataset {args.dataset_name!r}; "
                f"available splits: {available}."
            )
        return raw[split]

    splits = {"train": get(args.train_split, "train_split")}
    if args.eval_split is not None:
        splits["validation"] = get(args.eval_split, "eval_split")
    else:
        for candidate in _EVAL_SPLIT_CANDIDATES:
            if candidate in raw and candidate != args.train_split:
                splits["validation"] = raw[candidate]
                break
    if args.test_split is not None:
        splits["test"] = get(args.test_split, "test_split")
    return splits


def _drop_duplicate_texts(splits: dict[str, Dataset], text_columns: list[str]) -> dict[str, Dataset]:
    """
    Drops every example whose text columns repeat an earlier example, scanning the splits in order.

    Done with pandas on the text columns only (vectorized hashing) and applied with `Dataset.select`; a stateful
    `Dataset.filter` would be unsafe because `datasets` caches it by a fingerprint taken before it runs.
    """
    import pandas as pd

    names = list(splits)
    frames = [splits[name].select_columns(text_columns).to_pandas() for name in names]
    combined = pd.concat(frames, ignore_index=True)
    keep = ~combined.duplicated(subset=text_columns, keep="first")
    result = {}
    start = 0
    for name in names:
        num_rows = splits[name].num_rows
        kept = [index for index, flag in enumerate(keep.iloc[start : start + num_rows].tolist()) if flag]
        start += num_rows
        if len(kept) < num_rows:
            logger.info("drop_duplicates: dropped %d of %d %s examples.", num_rows - len(kept), num_rows, name)
            result[name] = splits[name].select(kept)
        else:
            result[name] = splits[name]
    return result


def _check_not_empty(splits: dict[str, Dataset], sources: dict[str, str], reason: str = "") -> None:
    for name, dataset in splits.items():
        if dataset.num_rows == 0:
            raise ValueError(f"The {name} split ({sources[name]}) is empty: it has no examples{reason}.")


def load_raw_datasets(args: DataArguments) -> DatasetDict:
    """
    Loads the raw (untokenized) text classification data described by `args`.

    The training data comes from `args.dataset_name` or `args.train_file`. The evaluation data comes from
    `args.validation_file`, else `args.eval_split` (or a "validation"/"valid"/"dev" split of the Hub dataset), else is
    held out from the training data with a seeded `train_test_split`. Duplicates are dropped (if
    `args.drop_duplicates`) *before* that split, and the `max_*_samples` truncations after it.

    Args:
        args ([`DataArguments`]):
            The data arguments.

    Returns:
        [`~datasets.DatasetDict`]: with the splits `"train"`, `"validation"` and, when a test file or split is given,
        `"test"`.

    Raises:
        `FileNotFoundError`: a local file does not exist.
        `ValueError`: a file has an unsupported extension, a split or file has no examples, or a requested split does
        not exist.
    """
    if args.dataset_name is not None:
        splits = _load_hub_splits(args)
        sources = {name: f"dataset {args.dataset_name!r}" for name in ("train", "validation", "test")}
    else:
        splits = {"train": _load_file(args.train_file, "train_file")}
        sources = {"train": f"--train_file {args.train_file!r}"}
    # Local evaluation/test files win over Hub splits, so a Hub training set can be evaluated on local data.
    for name, argument in (("validation", "validation_file"), ("test", "test_file")):
        path = getattr(args, argument)
        if path is not None:
            splits[name] = _load_file(path, argument)
            sources[name] = f"--{argument} {path!r}"
    _check_not_empty(splits, sources)

    if args.drop_duplicates:
        text_column, text_pair_column, _ = resolve_columns(splits["train"], args, require_label=False)
        text_columns = [text_column] + ([text_pair_column] if text_pair_column else [])
        splits = _drop_duplicate_texts(splits, text_columns)

    if "validation" not in splits:
        train = splits["train"]
        if train.num_rows < 2:
            raise ValueError(
                f"Cannot hold out evaluation data from a training set of {train.num_rows} example(s) "
                f"({sources['train']}); give --validation_file or --eval_split."
            )
        held_out = train.train_test_split(test_size=args.validation_split_percentage / 100, seed=args.split_seed)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
        sources["validation"] = f"{args.validation_split_percentage}% held out of {sources['train']}"

    if args.max_train_samples is not None:
        splits["train"] = _take_first(splits["train"], args.max_train_samples)
    if args.max_eval_samples is not None:
        for name in ("validation", "test"):
            if name in splits:
                splits[name] = _take_first(splits[name], args.max_eval_samples)
    _check_not_empty(splits, sources, " left after dropping duplicates")

    # Fixed key order: train, validation, test.
    return DatasetDict({name: splits[name] for name in ("train", "validation", "test") if name in splits})


def _take_first(dataset: Dataset, num_examples: int) -> Dataset:
    return dataset.select(range(min(num_examples, dataset.num_rows)))


# ---------------------------------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------------------------------


def _detect_column(columns: list[str], candidates: Iterable[str]) -> str | None:
    """First candidate present in `columns`: exact match first, then case-insensitive (CSV headers like "Text")."""
    for candidate in candidates:
        if candidate in columns:
            return candidate
    lowered = {column.lower(): column for column in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _pick_column(columns: list[str], given: str | None, candidates: tuple[str, ...], argument: str) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"Column {given!r} (--{argument}) is not in the data; available columns: {columns}.")
        return given
    detected = _detect_column(columns, candidates)
    if detected is None:
        raise ValueError(
            f"Could not find the {argument.removesuffix('_column')} column: none of {list(candidates)} is in the data "
            f"(available columns: {columns}). Pass --{argument}."
        )
    return detected


def resolve_columns(
    dataset: Dataset | DatasetDict, args: DataArguments, require_label: bool = True
) -> tuple[str, str | None, str | None]:
    """
    Finds the text, text-pair and label columns.

    Columns given in `args` must exist; the others are detected: the text column is the first of
    `TEXT_COLUMN_CANDIDATES` and the label column the first of `LABEL_COLUMN_CANDIDATES` that exists (exact name
    first, then case-insensitive). The text-pair column is never guessed.

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.DatasetDict`]):
            The raw data. For a `DatasetDict` the columns are resolved on the `"train"` split and must exist in all
            splits.
        args ([`DataArguments`]):
            Provides `text_column`, `text_pair_column` and `label_column`.
        require_label (`bool`, *optional*, defaults to `True`):
            Whether a missing label column is an error. If `False` and no label column is found, `None` is returned
            for it.

    Returns:
        `tuple[str, str | None, str]`: the text column, the text-pair column (or `None`) and the label column.

    Raises:
        `ValueError`: naming the missing column, the flag that selects it and the available columns.
    """
    if isinstance(dataset, DatasetDict):
        reference = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    else:
        reference = dataset
    columns = list(reference.column_names)

    text_column = _pick_column(columns, args.text_column, TEXT_COLUMN_CANDIDATES, "text_column")
    text_pair_column = None
    if args.text_pair_column is not None:
        text_pair_column = _pick_column(columns, args.text_pair_column, (), "text_pair_column")
    if args.text_column is None and text_pair_column is None:
        # E.g. QNLI has both "question" and "sentence": picking one silently would drop half of every example.
        others = [c for c in columns if c != text_column and _detect_column([c], TEXT_COLUMN_CANDIDATES)]
        if others:
            logger.warning(
                "Using %r as the text column; column(s) %s also look like text. Pass --text_pair_column for a "
                "text-pair task, or --text_column to choose another column.",
                text_column,
                others,
            )
    try:
        label_column = _pick_column(columns, args.label_column, LABEL_COLUMN_CANDIDATES, "label_column")
    except ValueError:
        if require_label or args.label_column is not None:
            raise
        label_column = None

    used = [text_column, text_pair_column, label_column]
    used = [column for column in used if column is not None]
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


# ---------------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------------


def is_default_id2label(id2label: dict[int, str] | None) -> bool:
    """Whether `id2label` is missing or only holds the placeholder names `LABEL_0`, `LABEL_1`, ... of transformers."""
    if not id2label:
        return True
    return all(
        (match := _DEFAULT_LABEL_NAME.fullmatch(str(name))) is not None and int(match.group(1)) == int(index)
        for index, name in id2label.items()
    )


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
    label2id: dict[str, int],
    class_names: list[str] | None,
) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
    """
    Builds the batched `map` function. It only closes over picklable values, so `datasets` can hash it into a stable
    fingerprint (the cache key) and send it to worker processes.
    """
    num_labels = len(set(label2id.values()))

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
    args: DataArguments,
    text_column: str,
    text_pair_column: str | None,
    label_column: str,
    label2id: dict[str, int],
) -> DatasetDict:
    """
    Tokenizes every split and converts the labels to ids.

    Uses a batched [`~datasets.Dataset.map`], so with file-backed data the result is cached by fingerprint and a
    second run with the same data, tokenizer and arguments reloads it instead of tokenizing again. Examples are
    truncated to `args.max_length` tokens and *not* padded; pad dynamically with
    [`~transformers.DataCollatorWithPadding`].

    Args:
        dataset_dict ([`~datasets.DatasetDict`]):
            The raw data, e.g. from [`load_raw_datasets`].
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer (of the student; teacher and student must share the vocabulary).
        args ([`DataArguments`]):
            Provides `max_length` and `preprocessing_num_workers`.
        text_column (`str`), text_pair_column (`str`, *optional*), label_column (`str`):
            The columns, e.g. from [`resolve_columns`].
        label2id (`dict[str, int]`):
            The label mapping from [`build_label_mapping`].

    Returns:
        [`~datasets.DatasetDict`]: the same splits with only the columns `input_ids`, `attention_mask`,
        `token_type_ids` (if the tokenizer returns them) and `labels` (int).
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


def prepare_text_classification(
    args: DataArguments, tokenizer: PreTrainedTokenizerBase, id2label: dict[int, str] | None = None
) -> tuple[DatasetDict, dict[str, int]]:
    """
    Loads, checks and tokenizes the text classification data: [`load_raw_datasets`], [`resolve_columns`],
    [`build_label_mapping`] and [`tokenize_datasets`] in a row.

    Args:
        args ([`DataArguments`]):
            The data arguments.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer.
        id2label (`dict[int, str]`, *optional*):
            The teacher's `config.id2label`; labels are mapped onto it by name when it has real label names.

    Returns:
        `tuple[DatasetDict, dict[str, int]]`: the tokenized splits and the label mapping (label name -> id).
    """
    raw = load_raw_datasets(args)
    text_column, text_pair_column, label_column = resolve_columns(raw, args)
    label2id = build_label_mapping(raw, label_column, id2label)
    tokenized = tokenize_datasets(raw, tokenizer, args, text_column, text_pair_column, label_column, label2id)
    if args.unlabeled_file is not None:
        unlabeled = load_unlabeled_texts(args, raw, text_column, text_pair_column)
        tokenized["train"] = concatenate_datasets(
            [tokenized["train"], tokenize_unlabeled(unlabeled, tokenizer, args, text_column, text_pair_column)]
        )
    return tokenized, label2id


def load_unlabeled_texts(
    args: DataArguments, raw: DatasetDict, text_column: str, text_pair_column: str | None
) -> Dataset:
    """The transfer set of `args.unlabeled_file`, without the texts that the evaluation or test data hold.

    Raises:
        `ValueError`: the file lacks the text column(s), or has no text left.
    """
    unlabeled = _load_file(args.unlabeled_file, "unlabeled_file")
    columns = [text_column] + ([text_pair_column] if text_pair_column else [])
    missing = [c for c in columns if c not in unlabeled.column_names]
    if missing:
        raise ValueError(
            f"--unlabeled_file {args.unlabeled_file!r} has no column {missing[0]!r} (the text column of the training "
            f"data); its columns are {unlabeled.column_names}"
        )

    def key(row: dict) -> tuple:
        return tuple(row[c] for c in columns)

    # Evaluating on texts the student was taught from, even without their labels, would inflate its accuracy.
    held_out = {
        key(row) for name in ("validation", "test") if name in raw for row in raw[name].select_columns(columns)
    }
    keep = [i for i, row in enumerate(unlabeled.select_columns(columns)) if key(row) not in held_out]
    if len(keep) < unlabeled.num_rows:
        logger.info(f"Dropped {unlabeled.num_rows - len(keep)} unlabeled texts that also appear in evaluation data")
    unlabeled = unlabeled.select(keep)
    _check_not_empty({"unlabeled": unlabeled}, {"unlabeled": f"--unlabeled_file {args.unlabeled_file!r}"})
    return unlabeled


def tokenize_unlabeled(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    args: DataArguments,
    text_column: str,
    text_pair_column: str | None,
) -> Dataset:
    """Tokenizes the transfer set like the training data, with every label -100 (ignored by the hard-label loss)."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[text_pair_column] if text_pair_column else None
        encoding = tokenizer(batch[text_column], pairs, truncation=True, max_length=args.max_length)
        return {**encoding, "labels": [IGNORED_LABEL] * len(batch[text_column])}

    return dataset.map(
        tokenize,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=args.preprocessing_num_workers,
        desc="Tokenizing the unlabeled texts",
    )
