"""
Loading the raw data of a distillation job, whatever its task: files or a Hub dataset, split, checked, de-duplicated.

[`load_raw_datasets`] returns a [`~datasets.DatasetDict`] of untokenised splits: `"train"`, `"validation"` (unless
`--validation_split_percentage 0` leaves none), `"test"` when given, and `"unlabeled"` (the transfer set of
`--unlabeled_file`). Each task tokenises them ([`hf_distill.tasks.Task.prepare_datasets`]). Where each split came from
is kept in the dict's `sources` attribute ([`~hf_distill.provenance.source_of`]), so that later errors can name the
file.

The input columns of an example (its text, text pair, question and context, or word list:
[`~hf_distill.columns.input_columns`]) are what duplicates, overlaps between training and evaluation data, and empty
cells are looked for in.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
from datasets import Dataset, DatasetDict

from .augment import settings_of
from .columns import TEXT_COLUMN_CANDIDATES, input_columns
from .log import get_logger
from .provenance import SPLIT_ORDER, FileRows
from .tasks import get_task

logger = get_logger(__name__)

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


@dataclass
class DataArguments:
    """
    Where the data of a distillation job comes from, and how it is split: the flags every task shares.

    Every field carries a `help` metadata entry so that [`~transformers.HfArgumentParser`] turns it into a documented
    command line flag (`--dataset_name`, `--train_file`, ...). Each task adds its own flags (its `data_arguments`).
    """

    task: str | None = field(
        default=None,
        metadata={
            "help": "The task: text-classification, token-classification, question-answering, fill-mask (masked LM) "
            "or text-generation (causal LM); hf_distill's names (sequence-classification, masked-lm, causal-lm) "
            "work too. Default: inferred from the teacher's head (its config.architectures)."
        },
    )
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
            "help": "Local training file: .csv, .tsv, .json/.jsonl (JSON Lines), .parquet or .txt (one text a "
            "line); the format is inferred from the extension. Mutually exclusive with --dataset_name."
        },
    )
    validation_file: str | None = field(
        default=None,
        metadata={
            "help": "Local evaluation file (.csv, .tsv, .json/.jsonl, .parquet or .txt). Overrides --eval_split."
        },
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "Local test file (.csv, .tsv, .json/.jsonl, .parquet or .txt). Overrides --test_split."},
    )
    validation_split_percentage: int = field(
        default=10,
        metadata={
            "help": "Percentage (1-99) of the training data held out for evaluation when there is no evaluation "
            "split or file; 0 holds nothing out: every training example is trained on, and the final evaluation "
            "uses the test data (or there is none)."
        },
    )
    split_seed: int = field(
        default=42,
        metadata={"help": "Seed of the shuffle that holds out evaluation data (see --validation_split_percentage)."},
    )
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the text (text classification, language modelling). If not set, the first "
            f"existing column of {', '.join(TEXT_COLUMN_CANDIDATES)} is used."
        },
    )
    text_pair_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the second text of text-pair tasks (e.g. the hypothesis of NLI). If not set, the "
            "task is single-text."
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
            "help": "Extra in-domain inputs without labels (a transfer set: .csv, .jsonl or .parquet, same input "
            "column(s)). They join the training data: the teacher's soft targets teach the student on them, the "
            "hard-label loss skips them. Inputs that also appear in the evaluation or test data are dropped."
        },
    )
    drop_duplicates: bool = field(
        default=False,
        metadata={
            "help": "Drop examples whose input (text and text pair, question and context, or words) repeats an "
            "earlier example, before any split is made. Splits are scanned in the order train, validation, test, so "
            "an evaluation example that repeats a training example is dropped too and evaluation scores are not "
            "inflated by memorized examples."
        },
    )
    augment: int = field(
        default=0,
        metadata={
            "help": "A transfer set from your own data: N augmented copies of each training text (nearest-neighbour "
            "word replacement in the teacher's input-embedding space, word dropout, span deletion; see "
            "hf_distill/augment.py), labelled only by the teacher's soft targets (the hard-label loss skips them, "
            "as --unlabeled_file rows), never equal to an evaluation, test or training text. Text classification "
            "only. Cached (--augment_cache_dir): a second run does not rebuild it. 0: none."
        },
    )
    augment_replace_prob: float = field(
        default=0.3,
        metadata={"help": "With --augment: the probability that a whole word is replaced by an embedding neighbour."},
    )
    augment_neighbours: int = field(
        default=15,
        metadata={"help": "With --augment: how many nearest words (cosine of input embeddings) a word may become."},
    )
    augment_drop_prob: float = field(
        default=0.1, metadata={"help": "With --augment: the probability that a word is deleted."}
    )
    augment_span_prob: float = field(
        default=0.2,
        metadata={"help": "With --augment: the probability that a copy loses one span of 2 or 3 consecutive words."},
    )
    augment_seed: int = field(
        default=0, metadata={"help": "With --augment: the seed of the augmentation (the same seed, the same texts)."}
    )
    augment_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "With --augment: where built transfer sets are kept, keyed by a fingerprint of the texts, the "
            "teacher's embeddings and the settings (default: hf_distill_augment in the datasets cache)."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={"help": "Number of processes used for tokenization. Default: a single process."},
    )

    def __post_init__(self):
        if self.task is not None:
            get_task(self.task)  # fails at parsing time on a misspelt task, naming the accepted ones
        if (self.dataset_name is None) == (self.train_file is None):
            given = "both were given" if self.dataset_name is not None else "neither was given"
            raise ValueError(f"Pass exactly one of --dataset_name or --train_file ({given}).")
        # Fail at argument parsing time rather than after the model has been loaded.
        for argument in ("train_file", "validation_file", "test_file", "unlabeled_file"):
            path = getattr(self, argument)
            if path is not None:
                _builder_for_file(path, argument)
        if not 0 <= self.validation_split_percentage < 100:
            raise ValueError(
                "--validation_split_percentage must be between 1 and 99 (the share held out for evaluation), or 0 to "
                f"hold out nothing; got {self.validation_split_percentage}."
            )
        if self.max_length <= 0:
            raise ValueError(f"--max_length must be positive, got {self.max_length}.")
        if self.augment:
            settings_of(self)  # a bad probability or count is named now, not after the teacher is loaded
        for argument in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, argument)
            if value is not None and value <= 0:
                raise ValueError(f"--{argument} must be positive when given, got {value}.")


# ---------------------------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------------------------


def _builder_for_file(path: str, argument: str) -> str:
    """Returns the `datasets` builder name (`"csv"`, `"json"`, `"parquet"` or `"text"`) for a local file, from its
    extension."""
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
    """Loads one local file (or glob pattern) as a single [`~datasets.Dataset`].

    Raises:
        `ValueError`: the file is empty, or cannot be read (not UTF-8, a broken JSON line, ...), naming the file, the
        line where it is known, and the fix, in the last line of the traceback.
    """
    builder = _builder_for_file(path, argument)
    files = _resolve_paths(path, argument)
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        # `datasets` forwards these to `pandas.read_csv`. By default pandas turns texts such as "NA", "null" or "None"
        # into NaN, which silently corrupts text columns; keep every cell as written.
        kwargs = {"keep_default_na": False}
        if os.path.splitext(path)[1].lower() == ".tsv":
            kwargs["sep"] = "\t"
    try:
        if all(_file_has_no_rows(file, builder, kwargs) for file in files):
            raise ValueError(f"--{argument} {path!r} is empty: it contains no examples.")
        # A single split per call so that files of different formats can be mixed (e.g. train.csv + validation.jsonl).
        return datasets.load_dataset(builder, data_files={"data": files}, split="data", **kwargs)
    except ValueError as error:
        if str(error).startswith(f"--{argument} "):
            raise
        raise _read_error(argument, files, builder, error) from error
    except Exception as error:  # datasets wraps what went wrong in DatasetGenerationError, Arrow errors, ...
        raise _read_error(argument, files, builder, error) from error


def _read_error(argument: str, files: list[str], builder: str, error: BaseException) -> ValueError:
    """A `ValueError` saying which file could not be read, where, and what to do about it."""
    causes = []
    cause: BaseException | None = error
    while cause is not None and cause not in causes:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, UnicodeDecodeError) for c in causes):
        for file in files:
            line, byte = _first_non_utf8_line(file)
            if line is not None:
                return ValueError(
                    f"--{argument} {file!r} is not UTF-8 text: line {line} holds the byte {byte}, which UTF-8 cannot "
                    f"decode. Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {os.path.basename(file)} > "
                    "fixed.csv`, or 'Save as... UTF-8' in a spreadsheet)."
                )
    if builder == "json":
        for file in files:
            found = _first_broken_json_line(file)
            if found is not None:
                line, reason = found
                return ValueError(
                    f"--{argument} {file!r}: line {line} is not valid JSON ({reason}). A JSON Lines file holds one "
                    'JSON object per line, such as {"text": "...", "label": "..."}; fix or delete that line.'
                )
    last = str(causes[-1]).strip().splitlines()
    detail = f"{type(causes[-1]).__name__}: {last[-1] if last else ''}"
    return ValueError(
        f"--{argument} {', '.join(map(repr, files))} could not be read as {builder} ({detail}). Check that the file "
        f"is a well-formed {builder} file, or give it the extension of its real format."
    )


def _first_non_utf8_line(path: str) -> tuple[int | None, str | None]:
    with open(path, "rb") as file:
        for number, raw_line in enumerate(file, start=1):
            try:
                raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, f"0x{raw_line[error.start]:02x}"
    return None, None


def _first_broken_json_line(path: str) -> tuple[int, str] | None:
    with open(path, encoding="utf-8", errors="replace") as file:
        head = file.read(1)
        if head == "[":
            return None  # a JSON array, not JSON Lines: the generic message names the file
        file.seek(0)
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                return number, f"{error.msg} at column {error.colno}"
            if not isinstance(value, dict):
                return number, f"a {type(value).__name__}, not an object of column: value"
    return None


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


# ---------------------------------------------------------------------------------------------------------------------
# Input columns: duplicates, overlaps, empty cells
# ---------------------------------------------------------------------------------------------------------------------


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _keys(dataset: Dataset, columns: list[str]) -> list[tuple]:
    """One hashable key per example: the values of its input columns."""
    values = [list(dataset[column]) for column in columns]
    return [tuple(_hashable(v) for v in row) for row in zip(*values)]


def _drop_duplicate_inputs(
    splits: dict[str, Dataset], columns: list[str], rows: dict[str, np.ndarray] | None = None
) -> dict[str, Dataset]:
    """
    Drops every example whose input columns repeat an earlier example, scanning the splits in order (and the same
    examples from `rows`, each split's file row numbers).

    Applied with `Dataset.select`; a stateful `Dataset.filter` would be unsafe because `datasets` caches it by a
    fingerprint taken before it runs.
    """
    seen: set = set()
    result = {}
    for name, dataset in splits.items():
        kept = []
        for index, key in enumerate(_keys(dataset, columns)):
            if key not in seen:
                seen.add(key)
                kept.append(index)
        if len(kept) < dataset.num_rows:
            logger.info(
                "drop_duplicates: dropped %d of %d %s examples.", dataset.num_rows - len(kept), dataset.num_rows, name
            )
            result[name] = dataset.select(kept)
            if rows is not None:
                rows[name] = rows[name][kept]
        else:
            result[name] = dataset
    return result


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_no_empty_inputs(dataset: Dataset, columns: list[str], source: str, builder: str | None) -> None:
    """Refuses a missing or blank input cell (an empty CSV cell, a JSON `null`) alike, naming where the first is.

    Refused rather than dropped: a missing text is most often a broken export (a shifted column, a lost quote), whose
    other cells, the label included, are wrong too; training on `""` or quietly losing rows would both hide that.
    """
    for column in columns:
        if column not in dataset.column_names:
            continue
        empty = [index for index, value in enumerate(dataset[column]) if _is_empty(value)]
        if not empty:
            continue
        first = empty[0]
        where = f"row {first + 1}"
        if builder == "csv":
            where += f" (line {first + 2} of the file, after the header)"
        elif builder == "json":
            where += f" (line {first + 1})"
        raise ValueError(
            f"{source}: {where} has no text in column {column!r} ({len(empty)} row(s) in all have an empty or missing "
            f"{column!r}). Fill these cells or delete these rows."
        )


def _warn_overlaps(splits: dict[str, Dataset], columns: list[str], sources: dict[str, str]) -> None:
    """Warns, with the count, when evaluation or test inputs also appear in the training data."""
    train = set(_keys(splits["train"], columns))
    for name in ("validation", "test"):
        if name not in splits:
            continue
        overlapping = sum(key in train for key in _keys(splits[name], columns))
        if overlapping:
            logger.warning(
                f"{overlapping} of {splits[name].num_rows} {name} examples ({sources[name]}) also appear in the "
                f"training data (same {' + '.join(columns)}): their scores say how well the model remembers, not how "
                "well it generalises. Pass --drop_duplicates to drop them from the evaluation data."
            )


def _check_not_empty(splits: dict[str, Dataset], sources: dict[str, str], reason: str = "") -> None:
    for name, dataset in splits.items():
        if dataset.num_rows == 0:
            raise ValueError(f"The {name} split ({sources[name]}) is empty: it has no examples{reason}.")


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def load_raw_datasets(args: DataArguments) -> DatasetDict:
    """
    Loads the raw (untokenised) data described by `args`, for any task.

    The training data comes from `args.dataset_name` or `args.train_file`. The evaluation data comes from
    `args.validation_file`, else `args.eval_split` (or a "validation"/"valid"/"dev" split of the Hub dataset), else is
    held out from the training data with a seeded `train_test_split` (none with `validation_split_percentage=0`).
    Duplicates are dropped (if `args.drop_duplicates`) *before* that split, and the `max_*_samples` truncations after
    it. Evaluation or test inputs that also appear in the training data are counted in a warning.

    Args:
        args ([`DataArguments`]):
            The data arguments.

    Returns:
        [`~datasets.DatasetDict`]: the splits `"train"`, `"validation"` (unless nothing is held out and no
        evaluation data is given), `"test"` (when a test file or split is given) and `"unlabeled"` (when an
        unlabeled file is given; without the inputs of the evaluation and test data). Its `sources` attribute names
        where each split came from ([`~hf_distill.provenance.source_of`]); its `file_rows` attribute, where each
        example is in its file ([`~hf_distill.provenance.FileRows`], for errors that name a row:
        [`~hf_distill.provenance.first_bad_row`]).

    Raises:
        `FileNotFoundError`: a local file does not exist.
        `ValueError`: a file has an unsupported extension or cannot be read, a split or file has no examples, an input
        cell is empty, or a requested split does not exist.
    """
    builders: dict[str, str | None] = {}
    if args.dataset_name is not None:
        splits = _load_hub_splits(args)
        sources = {name: f"dataset {args.dataset_name!r} ({name} split)" for name in splits}
        builders = dict.fromkeys(splits)
    else:
        splits = {"train": _load_file(args.train_file, "train_file")}
        sources = {"train": f"--train_file {args.train_file!r}"}
        builders["train"] = _builder_for_file(args.train_file, "train_file")
    # Local evaluation/test files win over Hub splits, so a Hub training set can be evaluated on local data.
    for name, argument in (("validation", "validation_file"), ("test", "test_file")):
        path = getattr(args, argument)
        if path is not None:
            splits[name] = _load_file(path, argument)
            sources[name] = f"--{argument} {path!r}"
            builders[name] = _builder_for_file(path, argument)
    _check_not_empty(splits, sources)
    # Each example's row in the file it came from, kept through what follows, so that errors name the file's row.
    rows = {name: np.arange(dataset.num_rows) for name, dataset in splits.items()}
    origins = {name: (sources[name], builders.get(name), SPLIT_ORDER.index(name)) for name in splits}

    columns = input_columns(splits["train"].column_names, args)
    for name, dataset in splits.items():
        if builders.get(name) != "text":  # blank lines of a plain-text corpus separate paragraphs: the task drops them
            _check_no_empty_inputs(dataset, columns, sources[name], builders.get(name))

    if args.drop_duplicates:
        if not columns or any(column not in splits["train"].column_names for column in columns):
            raise ValueError(
                f"--drop_duplicates needs the input column(s) of the data, but {columns or 'no text column'} is not "
                f"among the training columns {splits['train'].column_names}; pass --text_column."
            )
        splits = _drop_duplicate_inputs(splits, columns, rows)

    if "validation" not in splits and args.validation_split_percentage > 0:
        train = splits["train"]
        if train.num_rows < 2:
            raise ValueError(
                f"Cannot hold out evaluation data from a training set of {train.num_rows} example(s) "
                f"({sources['train']}); give --validation_file or --eval_split, or --validation_split_percentage 0."
            )
        held_out = train.train_test_split(test_size=args.validation_split_percentage / 100, seed=args.split_seed)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
        sources["validation"] = f"{args.validation_split_percentage}% held out of {sources['train']}"
        # The same split of the row numbers (it depends on the number of rows and the seed only).
        numbers = Dataset.from_dict({"row": rows["train"]}).train_test_split(
            test_size=args.validation_split_percentage / 100, seed=args.split_seed
        )
        rows["train"], rows["validation"] = np.asarray(numbers["train"]["row"]), np.asarray(numbers["test"]["row"])
        origins["validation"] = origins["train"]

    if args.max_train_samples is not None:
        splits["train"] = _take_first(splits["train"], args.max_train_samples)
    if args.max_eval_samples is not None:
        for name in ("validation", "test"):
            if name in splits:
                splits[name] = _take_first(splits[name], args.max_eval_samples)
    for name, dataset in splits.items():
        rows[name] = rows[name][: dataset.num_rows]
    _check_not_empty(splits, sources, " left after dropping duplicates")
    if columns and all(column in splits["train"].column_names for column in columns):
        _warn_overlaps(splits, columns, sources)

    if args.unlabeled_file is not None:
        splits["unlabeled"] = load_unlabeled(args, splits, columns)
        sources["unlabeled"] = f"--unlabeled_file {args.unlabeled_file!r}"

    raw = DatasetDict({name: splits[name] for name in SPLIT_ORDER if name in splits})
    raw.sources = {name: sources[name] for name in raw}
    raw.file_rows = {name: FileRows(*origins[name], rows[name]) for name in raw if name in rows}
    return raw


def load_unlabeled(args: DataArguments, splits: dict[str, Dataset], columns: list[str]) -> Dataset:
    """The transfer set of `args.unlabeled_file`, without the inputs that the evaluation or test data hold.

    Raises:
        `ValueError`: the file lacks the input column(s), has an empty input cell, or has no example left.
    """
    source = f"--unlabeled_file {args.unlabeled_file!r}"
    unlabeled = _load_file(args.unlabeled_file, "unlabeled_file")
    if not columns:
        raise ValueError(f"{source}: the training data has no text column to match; pass --text_column.")
    missing = [c for c in columns if c not in unlabeled.column_names]
    if missing:
        raise ValueError(
            f"{source} has no column {missing[0]!r} (an input column of the training data); its columns are "
            f"{unlabeled.column_names}"
        )
    _check_no_empty_inputs(unlabeled, columns, source, _builder_for_file(args.unlabeled_file, "unlabeled_file"))
    # Evaluating on inputs the student was taught from, even without their labels, would inflate its scores.
    held_out = {key for name in ("validation", "test") if name in splits for key in _keys(splits[name], columns)}
    keep = [i for i, key in enumerate(_keys(unlabeled, columns)) if key not in held_out]
    if len(keep) < unlabeled.num_rows:
        logger.info(f"Dropped {unlabeled.num_rows - len(keep)} unlabeled examples that also appear in evaluation data")
    unlabeled = unlabeled.select(keep)
    _check_not_empty({"unlabeled": unlabeled}, {"unlabeled": source})
    return unlabeled


def _take_first(dataset: Dataset, num_examples: int) -> Dataset:
    return dataset.select(range(min(num_examples, dataset.num_rows)))
