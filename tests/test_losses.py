"""Each loss against a naive reference written straight from its formula, item by item with Python loops."""

import math

import pytest
import torch

from hf_distill import losses


def _ref_kl(p_t, p_s):
    return sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s) if pt > 0)


def _softmax(z, temperature):
    m = max(v / temperature for v in z)
    e = [math.exp(v / temperature - m) for v in z]
    return [x / sum(e) for x in e]


def ref_soft_target_kl(student, teacher, temperature, mask=None):
    """Mean over counted items of T^2 * KL(softmax(t/T) || softmax(s/T)), by explicit loops."""
    s, t = student.reshape(-1, student.shape[-1]).tolist(), teacher.reshape(-1, teacher.shape[-1]).tolist()
    m = [True] * len(s) if mask is None else mask.reshape(-1).tolist()
    values = [
        temperature**2 * _ref_kl(_softmax(ti, temperature), _softmax(si, temperature))
        for si, ti, mi in zip(s, t, m)
        if mi
    ]
    return sum(values) / len(values)


def ref_hidden(student, teacher, kind, mask):
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for i in range(student.shape[1]):
            if not mask[b, i]:
                continue
            s, t = student[b, i].tolist(), teacher[b, i].tolist()
            if kind == "mse":
                total += sum((a - c) ** 2 for a, c in zip(s, t)) / len(s)
            else:
                dot = sum(a * c for a, c in zip(s, t))
                total += 1 - dot / (math.sqrt(sum(a * a for a in s)) * math.sqrt(sum(c * c for c in t)))
            count += 1
    return total / count


def ref_attention(student, teacher, kind, mask):
    batch, heads, length, _ = student.shape
    total, count = 0.0, 0
    for b in range(batch):
        keys = [j for j in range(length) if mask[b, j]]
        for i in keys:
            per_head = []
            for h in range(heads):
                s = [student[b, h, i, j].item() for j in keys]
                t = [teacher[b, h, i, j].item() for j in keys]
                if kind == "kl":
                    per_head.append(_ref_kl(t, s))
                else:
                    per_head.append(sum((a - c) ** 2 for a, c in zip(s, t)))
            total += sum(per_head) / heads
            count += 1
    return total / count


def _padding_mask(batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return torch.arange(length)[None, :] < lengths[:, None]


def _attention_probs(batch, heads, length, mask, seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, heads, length, length, generator=generator, dtype=torch.float64)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("shape", [(7, 3), (2, 5, 11)])
def test_soft_target_kl_matches_reference(temperature, shape):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    teacher = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    mask = _padding_mask(shape[0], shape[1]) if len(shape) == 3 else None
    value = losses.soft_target_kl(student, teacher, temperature, mask)
    assert value.item() == pytest.approx(ref_soft_target_kl(student, teacher, temperature, mask), rel=1e-5)


def test_soft_target_kl_zero_when_equal_and_positive_otherwise():
    logits = torch.randn(4, 6, 10)
    assert losses.soft_target_kl(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.soft_target_kl(logits, logits + torch.randn_like(logits), 2.0).item() > 0.01


def test_soft_target_kl_t_squared_scaling():
    # For close distributions KL ~ 1/T^2, so T^2 * KL stays of the same order: the gradient scale does not vanish.
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 5, generator=generator)
    student = teacher + 0.1 * torch.randn(64, 5, generator=generator)
    at_4, at_8 = losses.soft_target_kl(student, teacher, 4.0), losses.soft_target_kl(student, teacher, 8.0)
    assert at_8.item() == pytest.approx(at_4.item(), rel=0.1)
    unscaled_ratio = (at_8 / 64) / (at_4 / 16)
    assert unscaled_ratio.item() < 0.3


def test_padding_changes_nothing():
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 4, 7, generator=generator), torch.randn(2, 4, 7, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    # Extra padded positions with arbitrary values must not change the loss.
    padded_s = torch.cat([student, 100 * torch.randn(2, 3, 7, generator=generator)], 1)
    padded_t = torch.cat([teacher, -100 * torch.randn(2, 3, 7, generator=generator)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
    for fn in (
        lambda s, t, m: losses.soft_target_kl(s, t, 2.0, m),
        lambda s, t, m: losses.logit_mse(s, t, m),
        lambda s, t, m: losses.hidden_state_loss(s, t, "mse", m),
        lambda s, t, m: losses.hidden_state_loss(s, t, "cosine", m),
    ):
        assert fn(padded_s, padded_t, padded_mask).item() == pytest.approx(fn(student, teacher, mask).item(), rel=1e-6)


def test_num_items_gives_sum_over_a_global_count():
    generator = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator)
    whole = losses.soft_target_kl(student, teacher, 2.0)
    halves = losses.soft_target_kl(student[:2], teacher[:2], 2.0, num_items=6) + losses.soft_target_kl(
        student[2:], teacher[2:], 2.0, num_items=torch.tensor(6)
    )
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)


def test_fully_masked_batch_gives_zero_not_nan():
    logits = torch.randn(2, 3, 5)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    assert losses.soft_target_kl(logits, logits + 1, 2.0, mask).item() == 0.0
    assert losses.task_cross_entropy(logits, torch.full((2, 3), -100)).item() == 0.0


def test_logit_mse_matches_reference():
    generator = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    ref = sum(sum((a - b) ** 2 for a, b in zip(s, t)) / 4 for s, t in zip(student.tolist(), teacher.tolist())) / 5
    assert losses.logit_mse(student, teacher).item() == pytest.approx(ref, rel=1e-5)
    assert losses.logit_mse(student, student).item() == 0.0


def test_task_cross_entropy_matches_reference_with_ignored_labels():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[0, 1, -100, 3, 2], [-100, -100, 1, 1, 0]])
    values = []
    for b in range(2):
        for i in range(5):
            if labels[b, i] != -100:
                z = logits[b, i].tolist()
                values.append(-math.log(_softmax(z, 1.0)[labels[b, i]]))
    assert losses.task_cross_entropy(logits, labels).item() == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_task_mse_matches_reference():
    predictions, targets = torch.tensor([[0.5], [2.0], [-1.0]]), torch.tensor([1.0, 2.0, 1.0])
    assert losses.task_mse(predictions, targets).item() == pytest.approx((0.25 + 0 + 4) / 3)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_hidden_state_loss_matches_reference(kind):
    generator = torch.Generator().manual_seed(7)
    student, teacher = torch.randn(3, 6, 8, generator=generator), torch.randn(3, 6, 8, generator=generator)
    mask = _padding_mask(3, 6, seed=2)
    value = losses.hidden_state_loss(student, teacher, kind, mask)
    assert value.item() == pytest.approx(ref_hidden(student, teacher, kind, mask), rel=1e-5)
    assert losses.hidden_state_loss(student, student.clone(), kind, mask).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_attention_loss_matches_reference(kind):
    mask = _padding_mask(3, 5, seed=3)
    student = _attention_probs(3, 2, 5, mask, seed=8)
    teacher = _attention_probs(3, 2, 5, mask, seed=9)
    value = losses.attention_loss(student, teacher, kind, mask)
    assert value.item() == pytest.approx(ref_attention(student, teacher, kind, mask), rel=1e-5)
    assert losses.attention_loss(student, student.clone(), kind, mask).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_compute_in_float32(dtype):
    generator = torch.Generator().manual_seed(10)
    student, teacher = torch.randn(8, 30, generator=generator), torch.randn(8, 30, generator=generator)
    low = losses.soft_target_kl(student.to(dtype), teacher.to(dtype), 2.0)
    assert low.dtype == torch.float32
    # Matches the float32 result on the rounded inputs (the computation itself is not done in low precision).
    full = losses.soft_target_kl(student.to(dtype).float(), teacher.to(dtype).float(), 2.0)
    assert low.item() == pytest.approx(full.item(), rel=1e-6)


def test_shape_mismatch_and_bad_kind_are_named():
    with pytest.raises(ValueError, match="student_logits has shape"):
        losses.soft_target_kl(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="'mse' or 'cosine'"):
        losses.hidden_state_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 3), kind="l1")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        losses.soft_target_kl(torch.randn(2, 3), torch.randn(2, 3), temperature=0)


# ---- the soft-target divergences ------------------------------------------------------------------------------------


def _ref_divergence(name, p_t, p_s, beta=0.5, alpha=0.1):
    """One item's divergence between two probability lists, straight from the formula in plain floats."""
    if name == "forward_kl":
        return _ref_kl(p_t, p_s)
    if name == "reverse_kl":
        return _ref_kl(p_s, p_t)
    if name == "jsd":
        if beta == 0:
            return _ref_kl(p_t, p_s)
        if beta == 1:
            return _ref_kl(p_s, p_t)
        m = [beta * t + (1 - beta) * s for t, s in zip(p_t, p_s)]
        return beta * _ref_kl(p_t, m) + (1 - beta) * _ref_kl(p_s, m)
    if name == "skew_kl":
        return _ref_kl(p_t, [alpha * t + (1 - alpha) * s for t, s in zip(p_t, p_s)])
    assert name == "tv"
    return 0.5 * sum(abs(t - s) for t, s in zip(p_t, p_s))


def ref_soft_target_divergence(name, student, teacher, temperature, mask=None, **weights):
    """Mean over counted items of T^2 * D(softmax(t/T), softmax(s/T)), by explicit loops."""
    s, t = student.reshape(-1, student.shape[-1]).tolist(), teacher.reshape(-1, teacher.shape[-1]).tolist()
    m = [True] * len(s) if mask is None else mask.reshape(-1).tolist()
    values = [
        temperature**2 * _ref_divergence(name, _softmax(ti, temperature), _softmax(si, temperature), **weights)
        for si, ti, mi in zip(s, t, m)
        if mi
    ]
    return sum(values) / len(values)


DIVERGENCE_CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.9}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_kl", {"alpha": 0.5}),
    ("skew_kl", {"alpha": 0.0}),
    ("tv", {}),
]
DIVERGENCE_IDS = [f"{name}-{'-'.join(f'{k}{v}' for k, v in w.items())}".rstrip("-") for name, w in DIVERGENCE_CASES]


def _divergence(name, **weights):
    function = losses.DIVERGENCES[name]
    return lambda s, t, temperature, mask=None, num_items=None: function(s, t, temperature, mask, num_items, **weights)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("shape", [(7, 3), (3, 6, 11)])
@pytest.mark.parametrize(("name", "weights"), DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
def test_divergences_match_reference(name, weights, temperature, shape):
    generator = torch.Generator().manual_seed(11)
    student = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    teacher = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    mask = _padding_mask(shape[0], shape[1], seed=5) if len(shape) == 3 else None
    value = _divergence(name, **weights)(student, teacher, temperature, mask)
    expected = ref_soft_target_divergence(name, student, teacher, temperature, mask, **weights)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert expected > 1e-3  # the inputs differ: a loss that ignored them would not pass


@pytest.mark.parametrize(("name", "weights"), DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
def test_divergences_are_exactly_zero_for_identical_inputs_and_ignore_padding(name, weights):
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(4, 6, 50, generator=generator) * 5
    mask = _padding_mask(4, 6, seed=6)
    divergence = _divergence(name, **weights)
    assert divergence(logits, logits.clone(), 2.0, mask).item() == 0.0
    assert divergence(logits, logits.clone(), 0.5).item() == 0.0
    # Anything at the padded positions changes nothing; a fully masked batch gives 0, not NaN.
    noisy = logits + 100 * torch.randn(logits.shape, generator=generator) * (~mask).unsqueeze(-1)
    assert divergence(noisy, logits, 2.0, mask).item() == 0.0
    assert divergence(logits + 1.0 * torch.randn_like(logits), logits, 2.0, torch.zeros_like(mask)).item() == 0.0


@pytest.mark.parametrize(("name", "weights"), DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_divergences_compute_in_float32(name, weights, dtype):
    generator = torch.Generator().manual_seed(13)
    student, teacher = torch.randn(8, 30, generator=generator) * 4, torch.randn(8, 30, generator=generator) * 4
    divergence = _divergence(name, **weights)
    low = divergence(student.to(dtype), teacher.to(dtype), 2.0)
    assert low.dtype == torch.float32
    # Matches the float32 result on the rounded inputs, and the float64 reference on them.
    rounded_s, rounded_t = student.to(dtype).float(), teacher.to(dtype).float()
    assert low.item() == pytest.approx(divergence(rounded_s, rounded_t, 2.0).item(), rel=1e-6)
    expected = ref_soft_target_divergence(name, rounded_s.double(), rounded_t.double(), 2.0, **weights)
    assert low.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("name", "weights"), DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
def test_divergences_sum_over_a_global_count_and_stay_finite_far_apart(name, weights):
    generator = torch.Generator().manual_seed(14)
    student, teacher = torch.randn(6, 9, generator=generator), torch.randn(6, 9, generator=generator)
    divergence = _divergence(name, **weights)
    whole = divergence(student, teacher, 2.0)
    halves = divergence(student[:2], teacher[:2], 2.0, None, 6) + divergence(
        student[2:], teacher[2:], 2.0, None, torch.tensor(6)
    )
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)
    # Logits far apart (probabilities near 1e-40): finite values and gradients, no overflow in the mixture.
    far_s = (torch.randn(4, 9, generator=generator) * 200).requires_grad_()
    far_t = torch.randn(4, 9, generator=generator) * 200
    value = divergence(far_s, far_t, 1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(far_s.grad).all()


def test_forward_kl_is_soft_target_kl_and_the_mixtures_reach_it_at_their_limits():
    generator = torch.Generator().manual_seed(15)
    student, teacher = torch.randn(5, 7, 13, generator=generator), torch.randn(5, 7, 13, generator=generator)
    forward = losses.soft_target_kl(student, teacher, 2.0)
    assert losses.DIVERGENCES["forward_kl"] is losses.soft_target_kl
    assert losses.skew_kl(student, teacher, 2.0, alpha=0.0).item() == forward.item()
    assert losses.generalized_jsd(student, teacher, 2.0, beta=0.0).item() == forward.item()
    assert (
        losses.generalized_jsd(student, teacher, 2.0, beta=1.0).item()
        == losses.reverse_kl(student, teacher, 2.0).item()
    )
    # beta = 0 and 1 are the limits of JSD_beta / beta and JSD_beta / (1 - beta) (TRL's GKD convention).
    small = 1e-4
    assert (losses.generalized_jsd(student, teacher, 2.0, beta=small) / small).item() == pytest.approx(
        forward.item(), rel=1e-2
    )
    assert (losses.generalized_jsd(student, teacher, 2.0, beta=1 - small) / small).item() == pytest.approx(
        losses.reverse_kl(student, teacher, 2.0).item(), rel=1e-2
    )


def test_divergences_refuse_bad_mixing_weights_and_temperatures():
    logits = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\], got 1.5"):
        losses.generalized_jsd(logits, logits, beta=1.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\), got 1.0"):
        losses.skew_kl(logits, logits, alpha=1.0)
    for divergence in losses.DIVERGENCES.values():
        with pytest.raises(ValueError, match="temperature must be > 0"):
            divergence(logits, logits, 0.0)
        with pytest.raises(ValueError, match="student_logits has shape"):
            divergence(torch.randn(2, 3), torch.randn(2, 4))
