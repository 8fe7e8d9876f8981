"""The alignments between two tokenizations, each pinned by a case worked out by hand from the character spans."""

import pytest
from tiny_task_models import CORE_WORDS, tiny_tokenizer, word_piece_tokenizer

from hf_distill.alignment import (
    edge_positions,
    shared_vocabulary,
    span_groups,
    vocabulary_difference,
    word_alignment,
)

# "unhappy cats sat" (characters 0-6 "unhappy", 7 space, 8-11 "cats", 12 space, 13-15 "sat")
# student: [CLS] un happy cats sat [SEP]   -> "unhappy" split 1:2 against the teacher's one token
# teacher: <s> unhappy c a ts sat          -> "cats" split 1:3 against the student's one token
STUDENT = [(0, 0), (0, 2), (2, 7), (8, 12), (13, 16), (0, 0)]
TEACHER = [(0, 0), (0, 7), (8, 9), (9, 10), (10, 12), (13, 16)]


def test_span_groups_merge_splits_on_either_side_and_skip_tokens_without_characters():
    assert span_groups(STUDENT, TEACHER) == [([1, 2], [1]), ([3], [2, 3, 4]), ([4], [5])]


def test_span_groups_of_a_word_split_three_to_one_is_the_mirror_image():
    assert span_groups(TEACHER, STUDENT) == [([1], [1, 2]), ([2, 3, 4], [3]), ([5], [4])]


def test_span_groups_leave_out_text_only_one_side_reaches():
    # The teacher's max_length cut "sat" off: the student's "sat" has no counterpart, so it is in no group.
    assert span_groups(STUDENT, TEACHER[:5]) == [([1, 2], [1]), ([3], [2, 3, 4])]
    # Cut inside a word: the teacher reaches "ca", the student's "cats" ends later; the group never closes.
    assert span_groups(STUDENT, TEACHER[:4]) == [([1, 2], [1])]


def test_span_groups_ignore_characters_no_token_covers_and_padding_on_both_sides():
    # Spans with the spaces included on the teacher's side (a byte-level "Ġcats") and padding on both sides: the
    # groups still close where both sides end a token at the same character.
    student = [(0, 0), (0, 0), (0, 7), (8, 12), (0, 0)]  # left padding, then [CLS]; [SEP] at the end
    teacher = [(0, 7), (7, 12), None, None]  # "unhappy", " cats", two padding positions
    assert span_groups(student, teacher) == [([2], [0]), ([3], [1])]


def test_span_groups_keep_the_pieces_of_one_character_together():
    # "né": a byte-level teacher gives the two bytes of "é" two tokens with the character's span (1, 2).
    assert span_groups([(0, 2)], [(0, 1), (1, 2), (1, 2)]) == [([0], [0, 1, 2])]
    assert span_groups([(0, 1), (1, 2)], [(0, 1), (1, 2), (1, 2)]) == [([0], [0]), ([1], [1, 2])]
    assert span_groups([(0, 1), (1, 2), (1, 2), (2, 4)], [(0, 2), (2, 4)]) == [([0, 1, 2], [0]), ([3], [1])]


def test_edge_positions_move_start_and_end_to_the_first_and_last_overlapping_token():
    # Teacher -> student: "unhappy" (1:2) starts in "un" and ends in "happy"; "c", "a", "ts" (3:1) all lie in "cats".
    assert edge_positions(TEACHER, STUDENT, "start") == [-1, 1, 3, 3, 3, 4]
    assert edge_positions(TEACHER, STUDENT, "end") == [-1, 2, 3, 3, 3, 4]
    # Student -> teacher: "cats" (1:3) starts in "c" and ends in "ts".
    assert edge_positions(STUDENT, TEACHER, "start") == [-1, 1, 1, 2, 5, -1]
    assert edge_positions(STUDENT, TEACHER, "end") == [-1, 1, 1, 4, 5, -1]


def test_edge_positions_of_text_the_other_side_does_not_cover():
    # The student's max_length cut "sat" off; a teacher span over a space alone covers nothing of the student's.
    assert edge_positions([(13, 16), (12, 13), None], STUDENT[:4], "start") == [-1, -1, -1]
    # A leading space in the teacher's span (" cats", 7-12) starts at the first student character it overlaps.
    assert edge_positions([(7, 12)], STUDENT, "start") == [3]
    with pytest.raises(ValueError, match="edge must be 'start' or 'end'"):
        edge_positions(TEACHER, STUDENT, "middle")


def test_word_alignment_pairs_the_first_sub_tokens_of_each_word():
    # Words ["playing", "ok", "now"]: student [CLS] play ##ing ok now [SEP]; teacher <s> playing o k (cut there).
    student_words = [None, 0, 0, 1, 2, None]
    teacher_words = [None, 0, 1, 1]
    assert word_alignment(student_words, teacher_words) == [-1, 1, -1, 2, -1, -1]
    # Three student pieces for one teacher token, and padding (-1 word ids) on both sides.
    assert word_alignment([-1, 0, 0, 0, 1, -1], [0, 1, -1, -1]) == [-1, 0, -1, -1, 1, -1]


def test_vocabulary_difference_compares_the_maps_not_the_sizes():
    words = tiny_tokenizer()
    assert vocabulary_difference(words, tiny_tokenizer()) is None
    # Equal sizes, other tokens: what a size check lets through.
    other_words = tiny_tokenizer(["x" + w for w in tiny_tokenizer().get_vocab() if not w.startswith("[")])
    assert len(other_words) == len(words)
    message = vocabulary_difference(words, other_words)
    assert message == (
        f"both have {len(words)} tokens, but 18 differ: 'good' is id 5 in the teacher's and is not in the student's"
    )
    # The same tokens in another order: every id differs.
    shuffled = tiny_tokenizer(list(reversed(CORE_WORDS)))
    assert "'good' is id 5 in the teacher's and id 22 in the student's" in vocabulary_difference(words, shuffled)
    pieces = word_piece_tokenizer()
    assert vocabulary_difference(pieces, words) == (
        f"the teacher's has {len(pieces)} tokens, the student's {len(words)} (13 spelled alike)"
    )


def test_shared_vocabulary_pairs_the_tokens_spelled_alike():
    # The five special tokens, and the eight words of 3 letters or fewer, which the pieces keep whole.
    teacher_ids, student_ids = shared_vocabulary(word_piece_tokenizer(), tiny_tokenizer())
    assert teacher_ids == [0, 1, 2, 3, 4, 7, 20, 21, 22, 23, 27, 28, 29]  # [PAD] .. [MASK], bad, the, a, is, ...
    assert student_ids == [0, 1, 2, 3, 4, 6, 13, 14, 15, 16, 19, 20, 21]
