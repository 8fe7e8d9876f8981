"""Where each example of the raw data came from: the file (or Hub split) of each split and the row of each example in
it, kept on the [`~datasets.DatasetDict`] that [`~hf_distill.data.load_raw_datasets`] returns (its `sources` and
`file_rows` attributes) and carried through each step that remakes it, so that an error names the file and row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import DatasetDict

__all__ = ["SPLIT_ORDER", "FileRows", "first_bad_row", "source_of", "with_provenance"]

# The splits of the raw data, in the order that they are kept and that their files are searched for a bad row.
SPLIT_ORDER = ("train", "validation", "test", "unlabeled")


def source_of(raw: DatasetDict, split: str) -> str:
    """Where a split of [`~hf_distill.data.load_raw_datasets`] came from, for messages:
    `"--train_file 'train.csv'"`, ..."""
    return getattr(raw, "sources", {}).get(split, f"the {split} split")


@dataclass(frozen=True)
class FileRows:
    """Where the examples of one split are in the file (or Hub split) they were read from: `rows[i]` is the 0-based
    data row of example `i`, whatever dropping duplicates, holding out and truncating did since (the `file_rows`
    attribute of [`~hf_distill.data.load_raw_datasets`]' result, one per split)."""

    source: str  # the file as messages name it: "--train_file 'train.csv'"
    builder: str | None  # how it was read ("csv", "json", ...): how a row maps to a line
    order: int  # the file's place in the order train, validation, test, unlabeled
    rows: np.ndarray

    def describe(self, index: int) -> str:
        """`"--train_file 'train.csv': row 2 (line 3 of the file, after the header)"`: example `index` in the file."""
        row = int(self.rows[index])
        where = f"row {row + 1}"
        if self.builder == "csv":
            where += f" (line {row + 2} of the file, after the header)"
        elif self.builder == "json":
            where += f" (line {row + 1})"
        return f"{self.source}: {where}"


def with_provenance(new: DatasetDict, old: DatasetDict) -> DatasetDict:
    """`new` (made from `old`'s splits) with `old`'s `sources` and `file_rows`, so that later errors name the files."""
    new.sources = dict(getattr(old, "sources", {}))
    new.file_rows = dict(getattr(old, "file_rows", {}))
    return new


def first_bad_row(raw: DatasetDict, column: str, is_bad: Callable[[Any], bool]) -> tuple[str, Any, int] | None:
    """The example whose `column` value `is_bad` that comes first in the data files, whichever split it went to:
    `(where, value, count)`, `where` naming the file and its row ([`FileRows.describe`]), `count` the bad examples in
    all; None when there is none. The files are taken in the order train, validation, test, and rows in their order."""
    found = []
    count = 0
    for split, dataset in raw.items():
        if column not in dataset.column_names:
            continue
        bad = [(index, value) for index, value in enumerate(dataset[column]) if is_bad(value)]
        count += len(bad)
        if not bad:
            continue
        origin = getattr(raw, "file_rows", {}).get(split)
        if origin is None:  # data from elsewhere (a DatasetDict built in Python): its own order
            order = SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)
            index, value = bad[0]
            found.append(((order, index), f"{source_of(raw, split)}: row {index + 1}", value))
            continue
        index, value = min(bad, key=lambda item: origin.rows[item[0]])
        found.append(((origin.order, int(origin.rows[index])), origin.describe(index), value))
    if not found:
        return None
    _, where, value = min(found, key=lambda item: item[0])
    return where, value, count
