"""The cross-vocabulary losses of causal LMs (ULD and span alignment), each pinned against a naive reference written
straight from its formula, one aligned item at a time in float64, values and gradients."""

import math

import pytest
import torch

from hf_distill.losses import TokenAlignment, span_alignment_loss, universal_logit_distillation


def softmax(row, temperature):
    top = max(row)
    weights = [math.exp((z - top) / temperature) for z in row]
    total = sum(weights)
    return [w / total for w in weights]


def sorted_l1(p, q):
    p, q = sorted(p, reverse=True), sorted(q, reverse=True)
    width = max(len(p), len(q))
    p, q = p + [0.0] * (width - len(p)), q + [0.0] * (width - len(q))
    return sum(abs(a - b) for a, b in zip(p, q))


def naive_uld(student, teacher, pairs, temperature, num_items):
    """ULD from its formula: sum over pairs of |sorted p_s - sorted p_t|, zero-padded to the union, / num_items."""
    total = 0.0
    for b, i, j in pairs:
        total += sorted_l1(softmax(student[b][i], temperature), softmax(teacher[b][j], temperature))
    return total / num_items


def merged(logits, first, later, temperature):
    """q(v) = p_first(v) * prod over the later (position, token) of p_position(token)."""
    q = softmax(logits[first], temperature)
    mass = math.prod(softmax(logits[position], temperature)[token] for position, token in later)
    return [value * mass for value in q]


def naive_span(student, teacher, groups, shared, temperature, num_items):
    """Span alignment from its formula: per group, |q_t(u) - q_s(v)| over the shared pairs (u, v), then the sorted L1
    of the rest of each side."""
    total = 0.0
    for b, (s_first, s_later), (t_first, t_later) in groups:
        q_s = merged(student[b], s_first, s_later, temperature)
        q_t = merged(teacher[b], t_first, t_later, temperature)
        total += sum(abs(q_t[u] - q_s[v]) for u, v in shared)
        shared_t, shared_s = {u for u, _ in shared}, {v for _, v in shared}
        rest_s = [x for v, x in enumerate(q_s) if v not in shared_s]
        rest_t = [x for u, x in enumerate(q_t) if u not in shared_t]
        total += sorted_l1(rest_s, rest_t)
    return total / num_items


@pytest.fixture
def logits():
    generator = torch.Generator().manual_seed(0)
    student = (2 * torch.randn(2, 6, 7, generator=generator, dtype=torch.float64)).requires_grad_()
    teacher = 2 * torch.randn(2, 5, 11, generator=generator, dtype=torch.float64)
    return student, teacher


def test_rank_alignment_pairs_the_kth_scored_prediction_of_each_side():
    student = torch.tensor([[False, True, True, False, True], [True, True, False, False, False]])
    teacher = torch.tensor([[True, False, True, False], [False, False, False, True]])
    alignment = TokenAlignment.by_rank(student, teacher)
    assert alignment.student_positions.tolist() == [[1, 2], [0, 1]]
    assert alignment.teacher_positions.tolist() == [[0, 2], [3, 0]]
    assert alignment.mask.tolist() == [[True, True], [True, False]]  # row 2: one teacher prediction only


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_uld_is_the_sorted_probability_distance_over_the_union_vocabulary(logits, temperature):
    student, teacher = logits
    alignment = TokenAlignment(
        torch.tensor([[0, 3, 5], [2, 1, 0]]),
        torch.tensor([[1, 1, 4], [0, 2, 0]]),
        torch.tensor([[True, True, True], [True, True, False]]),
    )
    value = universal_logit_distillation(student, teacher, alignment, temperature, num_items=7)
    pairs = [(0, 0, 1), (0, 3, 1), (0, 5, 4), (1, 2, 0), (1, 1, 2)]
    expected = naive_uld(student.tolist(), teacher.tolist(), pairs, temperature, 7)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    reference = torch.zeros(())
    for b, i, j in pairs:  # the same sum with autograd, for the gradient
        p = torch.softmax(student[b, i] / temperature, -1).sort(descending=True).values
        q = torch.softmax(teacher[b, j] / temperature, -1).sort(descending=True).values
        reference = reference + (torch.cat([p, p.new_zeros(4)]) - q).abs().sum()
    gradient = torch.autograd.grad(reference / 7, student)[0]
    torch.testing.assert_close(student.grad, gradient)


def test_uld_of_two_identical_distributions_is_zero_whatever_the_token_order():
    row = torch.tensor([[[0.3, 2.0, -1.0, 0.5]]])
    alignment = TokenAlignment(torch.tensor([[0]]), torch.tensor([[0]]), torch.tensor([[True]]))
    permuted = row[..., [2, 0, 3, 1]]
    padded = torch.cat([permuted, torch.full((1, 1, 3), -1e9)], -1)  # a wider vocabulary with empty tokens
    assert universal_logit_distillation(row, padded, alignment).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_span_alignment_merges_spans_compares_shared_tokens_and_sorts_the_rest(logits, temperature):
    student, teacher = logits
    # Row 0: group 0 = student tokens predicted at 0, 1 (merged) | teacher at 1; group 1 = student 3 | teacher 2, 3
    # (merged). Row 1: group 0 = student 2 | teacher 0; group 1 padding.
    s_merges = torch.full((2, 6), -1)
    s_merges[0, 1] = 0
    t_merges = torch.full((2, 5), -1)
    t_merges[0, 3] = 1
    s_next = torch.tensor([[0, 4, 0, 0, 0, 0], [0] * 6])
    t_next = torch.tensor([[0, 0, 0, 9, 0], [0] * 5])
    alignment = TokenAlignment(
        torch.tensor([[0, 3], [2, 0]]),
        torch.tensor([[1, 2], [0, 0]]),
        torch.tensor([[True, True], [True, False]]),
        s_merges,
        t_merges,
        s_next,
        t_next,
    )
    shared = [(0, 0), (3, 5), (10, 2)]  # (teacher id, student id) of the tokens spelled alike
    shared_ids = (torch.tensor([u for u, _ in shared]), torch.tensor([v for _, v in shared]))
    value = span_alignment_loss(student, teacher, alignment, shared_ids, temperature, num_items=5)
    groups = [
        (0, (0, [(1, 4)]), (1, [])),
        (0, (3, []), (2, [(3, 9)])),
        (1, (2, []), (0, [])),
    ]
    expected = naive_span(student.tolist(), teacher.tolist(), groups, shared, temperature, 5)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # The merged student span's later prediction (position 1) gets a gradient: the span's mass depends on it.
    value.backward()
    assert student.grad[0, 1].abs().sum() > 0 and student.grad[0, 2].abs().sum() == 0


def test_span_alignment_reduces_to_l1_with_one_vocabulary_and_to_uld_with_none_shared(logits):
    student, teacher = logits
    alignment = TokenAlignment(torch.tensor([[0, 1]]), torch.tensor([[2, 3]]), torch.tensor([[True, True]]))
    same = student[:1, :, :7].detach(), (student[:1, :, :7] + 0.5).detach()
    everything = (torch.arange(7), torch.arange(7))
    p = torch.softmax(same[0][0, [0, 1]], -1)
    q = torch.softmax(same[1][0, [2, 3]], -1)
    assert span_alignment_loss(*same, alignment, everything).item() == pytest.approx(
        (p - q).abs().sum(-1).mean().item(), rel=1e-6
    )
    nothing = (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    one_row = student[:1].detach(), teacher[:1]
    assert span_alignment_loss(*one_row, alignment, nothing).item() == pytest.approx(
        universal_logit_distillation(*one_row, alignment).item(), rel=1e-6
    )
