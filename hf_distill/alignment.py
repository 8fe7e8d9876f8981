"""Alignments between two tokenizations of the same text: pure functions over character spans and word ids.

Two tokenizers cut one text into different tokens. Everything that lets a teacher of one tokenizer teach a student of
another is computed here from what a fast tokenizer returns with each token: its character span (`offset_mapping`)
and its word (`word_ids`). Positions are indices into each side's own list of tokens; the functions take and return
plain Python lists and are pinned by hand-worked cases (`tests/test_alignment.py`). Batching them into tensors is the
tasks' job (`Task.align_batch`, through [`~hf_distill.cross_tokenizer.PairedCollator`]).

A span is `(start, end)`: the characters `start..end - 1` of the text. A token that covers no character (a special
token such as `[CLS]` or `<bos>`, whose span is `(0, 0)`; or `None`, a token left out on purpose) is never aligned.

- [`vocabulary_difference`]: whether two tokenizers read the same ids (their token -> id maps, not their sizes).
- [`word_alignment`]: each student token that starts a word -> the teacher token that starts the same word.
- [`edge_positions`]: each teacher token -> the first (or last) student token sharing a character with it.
- [`span_groups`]: both sides' tokens grouped into the shortest runs that end where both tokenizations cut the text.
- [`shared_vocabulary`]: the tokens both vocabularies hold, spelled exactly the same, as pairs of ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Span = tuple[int, int] | list[int] | None

__all__ = ["edge_positions", "shared_vocabulary", "span_groups", "vocabulary_difference", "word_alignment"]


def _covers(span: Span) -> bool:
    return span is not None and span[1] > span[0]


def vocabulary_difference(teacher_tokenizer, student_tokenizer) -> str | None:
    """How the student's vocabulary differs from the teacher's (their token -> id maps), or `None` when the two
    tokenizers map every token to the same id: then the student reads the teacher's input ids as they are.

    Two vocabularies of equal size but other tokens, or the same tokens under other ids, differ.
    """
    teacher, student = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher == student:
        return None
    shared = teacher.keys() & student.keys()
    if len(teacher) != len(student):
        return f"the teacher's has {len(teacher)} tokens, the student's {len(student)} ({len(shared)} spelled alike)"
    for token, index in sorted(teacher.items(), key=lambda item: item[1]):
        if student.get(token) != index:
            where = f"id {student[token]} in the student's" if token in student else "is not in the student's"
            differing = sum(1 for name, i in teacher.items() if student.get(name) != i)
            return (
                f"both have {len(teacher)} tokens, but {differing} differ: {token!r} is id {index} in the teacher's "
                f"and {where}"
            )
    raise AssertionError("unreachable: two different maps of equal size differ at some teacher token")


def word_alignment(student_words: Sequence[int | None], teacher_words: Sequence[int | None]) -> list[int]:
    """For each student token: the position of the teacher token that starts the same word, when the student token
    starts its word (the token a word's label sits on); -1 for the other tokens, and for words the teacher's
    tokenization does not reach (cut off by its `max_length`).

    Args:
        student_words, teacher_words: each token's word index (`BatchEncoding.word_ids()`; `None` or a negative
            number for special tokens and padding).

    Example: words `["playing", "ok"]`, student tokens `[CLS] play ##ing ok [SEP]` (words `None 0 0 1 None`), teacher
    tokens `<s> playing o k` (words `None 0 1 1`): `[-1, 1, -1, 2, -1]`.
    """
    teacher_start = {}
    for position, word in enumerate(teacher_words):
        if word is not None and word >= 0 and word not in teacher_start:
            teacher_start[word] = position
    aligned, seen = [], set()
    for word in student_words:
        if word is None or word < 0 or word in seen:
            aligned.append(-1)
            continue
        seen.add(word)
        aligned.append(teacher_start.get(word, -1))
    return aligned


def edge_positions(
    teacher_spans: Sequence[Span], student_spans: Sequence[Span], edge: Literal["start", "end"]
) -> list[int]:
    """For each teacher token: the first (`edge="start"`) or the last (`edge="end"`) student token that shares a
    character with it; -1 when none does (a special token, or text the student's tokenization does not reach).

    Question answering moves the teacher's start probability of a token onto the student token where the same
    characters begin, and its end probability onto the one where they end: an answer the teacher would start (end)
    at a token starts (ends) there in the student's tokens too. A teacher token split in three by the student gives
    its start to the first piece and its end to the last; three teacher tokens inside one student token all give
    theirs to it.

    Args:
        teacher_spans, student_spans: each token's `(start, end)` characters (`None` for a token left out).
        edge: `"start"` or `"end"`.
    """
    if edge not in ("start", "end"):
        raise ValueError(f"edge must be 'start' or 'end', got {edge!r}")
    # Each character -> the student tokens covering it (a byte-level tokenizer may give one character to two).
    first_at, last_at = {}, {}
    for position, span in enumerate(student_spans):
        if not _covers(span):
            continue
        for character in range(span[0], span[1]):
            first_at.setdefault(character, position)
            last_at[character] = position
    moved = []
    for span in teacher_spans:
        if not _covers(span):
            moved.append(-1)
            continue
        found = [first_at[c] for c in range(span[0], span[1]) if c in first_at]
        if not found:
            moved.append(-1)
        elif edge == "start":
            moved.append(min(found))
        else:
            moved.append(max(last_at[c] for c in range(span[0], span[1]) if c in last_at))
    return moved


def span_groups(student_spans: Sequence[Span], teacher_spans: Sequence[Span]) -> list[tuple[list[int], list[int]]]:
    """Both tokenizations cut into aligned groups: the shortest runs of consecutive tokens, one run on each side,
    that end at the same character. Each group covers the same text on both sides (up to the characters between
    tokens, such as spaces, that a tokenizer leaves out of its spans).

    Walking both token lists by where each token ends (GOLD's byte-offset alignment, Patiño et al. 2025): the side
    whose token ends first takes its next token; when both end at the same character, the group closes (tokens that
    end at that same character, the pieces of one character in a byte-level vocabulary, join it). Tokens that cover
    no character are in no group. The tokens after the last common end (one side's `max_length` cut the text
    shorter) are in no group either: nothing on the other side covers their text.

    Args:
        student_spans, teacher_spans: each token's `(start, end)` characters, in order.

    Returns:
        `list[tuple[list[int], list[int]]]`: per group, its student positions and its teacher positions.

    Example: `"unhappy cat"`, student `un happy cat` (spans (0,2) (2,7) (8,11)), teacher `unhappy c at` ((0,7)
    (8,9) (9,11)): `[([0, 1], [0]), ([2], [1, 2])]`.
    """
    student = [i for i, span in enumerate(student_spans) if _covers(span)]
    teacher = [j for j, span in enumerate(teacher_spans) if _covers(span)]
    groups: list[tuple[list[int], list[int]]] = []
    s_group: list[int] = []
    t_group: list[int] = []
    a = b = 0
    while a < len(student) and b < len(teacher):
        s_end, t_end = student_spans[student[a]][1], teacher_spans[teacher[b]][1]
        if s_end < t_end:
            s_group.append(student[a])
            a += 1
        elif t_end < s_end:
            t_group.append(teacher[b])
            b += 1
        else:
            s_group.append(student[a])
            t_group.append(teacher[b])
            a, b = a + 1, b + 1
            while a < len(student) and student_spans[student[a]][1] <= s_end:
                s_group.append(student[a])
                a += 1
            while b < len(teacher) and teacher_spans[teacher[b]][1] <= t_end:
                t_group.append(teacher[b])
                b += 1
            groups.append((s_group, t_group))
            s_group, t_group = [], []
    return groups


def shared_vocabulary(teacher_tokenizer, student_tokenizer) -> tuple[list[int], list[int]]:
    """The tokens both vocabularies hold, spelled exactly alike (`get_vocab()` keys), as `(teacher ids, student
    ids)` in the order of the teacher's ids. A byte-level `Ġthe` and a WordPiece `the` are different tokens."""
    teacher, student = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    pairs = sorted((index, student[token]) for token, index in teacher.items() if token in student)
    return [t for t, _ in pairs], [s for _, s in pairs]
