"""The input columns of an example: its text (and text pair), question and context, or word list, whichever the data
has; detected by name when no `--text_column` is given. Loading looks for duplicates, overlaps between training and
evaluation data, and empty cells in them; the tasks read them; `--augment` rewrites them."""

from __future__ import annotations

from collections.abc import Iterable

from .data_settings import DataSettings

__all__ = [
    "QUESTION_CONTEXT_COLUMNS",
    "TEXT_COLUMN_CANDIDATES",
    "WORDS_COLUMN_CANDIDATES",
    "detect_column",
    "input_columns",
]

# Candidates for the automatic detection of the text column, in order of preference.
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "tweet", "question")
# Word-list columns (token classification): inputs too, when no text column is found.
WORDS_COLUMN_CANDIDATES = ("tokens", "words")
# Question answering's inputs, when the data has both and no --text_column is given.
QUESTION_CONTEXT_COLUMNS = ("question", "context")


def detect_column(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    """First candidate present in `columns`: exact match first, then case-insensitive (CSV headers like "Text")."""
    columns, candidates = list(columns), list(candidates)
    for candidate in candidates:
        if candidate in columns:
            return candidate
    lowered = {column.lower(): column for column in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def input_columns(columns: Iterable[str], args: DataSettings) -> list[str]:
    """The columns that hold an example's input, or `[]` when none is recognised.

    `--text_column` (and `--text_pair_column`) when given; else question and context (question answering) when the
    data has both; else the first detected text column (`TEXT_COLUMN_CANDIDATES`), or word-list column.
    """
    columns = list(columns)
    pair = [args.text_pair_column] if args.text_pair_column else []
    if args.text_column:
        return [args.text_column, *pair]
    if all(name in columns for name in QUESTION_CONTEXT_COLUMNS):
        return list(QUESTION_CONTEXT_COLUMNS)
    detected = detect_column(columns, TEXT_COLUMN_CANDIDATES) or detect_column(columns, WORDS_COLUMN_CANDIDATES)
    return [detected, *pair] if detected else []
