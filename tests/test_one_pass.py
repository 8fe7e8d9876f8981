"""The forward KL and the LM loss in one pass (T = 1), from a top-k cache and from the live teacher's dense logits:
each value equals its own function's, the gradients of any weighted sum equal the two apart, and the trainer takes
the pass for a causal LM (the trainer's top-k pass is tested in test_sparse_topk.py)."""

import pytest
import torch
from datasets import Dataset
from tiny_task_models import SGD, case, make_trainer, pad_batch, random_task_rows, trainable_state

from hf_distill import losses

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_one_pass_equals_the_terms_apart(student, teacher, mask, labels, kd_tolerance, grad_tolerance):
    """Each value of the one pass equals its term's function (the soft-target loss, the cross-entropy), and the
    gradient of a weighted sum equals that of the two computed apart, in the student's dtype."""
    apart, together = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    kd = losses.soft_target_loss(apart, teacher, 1.0, mask, torch.tensor(30))
    ce = losses.task_cross_entropy(apart, labels, num_items=torch.tensor(25))
    (0.3 * kd + 0.7 * ce).backward()
    kd_one, ce_one = losses.forward_kl_and_cross_entropy(
        together, teacher, labels, mask, torch.tensor(30), torch.tensor(25)
    )
    (0.3 * kd_one + 0.7 * ce_one).backward()
    torch.testing.assert_close(kd_one, kd, **kd_tolerance)
    torch.testing.assert_close(ce_one, ce, rtol=1e-6, atol=kd_tolerance["atol"])
    assert together.grad.dtype == student.dtype
    torch.testing.assert_close(together.grad, apart.grad, **(grad_tolerance if student.dtype == torch.float32 else {}))


def masked_labels(g, mask):
    labels = torch.randint(0, 13, (3, 7), generator=g).masked_fill(~mask, -100)
    labels[1, 2] = -100  # a scored position without a label
    return labels


@pytest.mark.parametrize("k", [1, 5, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_top_k_forward_kl_and_the_lm_loss_in_one_pass_equal_each_alone(k, dtype):
    """From a top-k cache (tiny student tails, masked items, unlabelled items, k = the whole vocabulary)."""
    g = torch.Generator().manual_seed(11)
    student = torch.randn(3, 7, 13, generator=g) * 3
    student[0, 0] = -40.0
    student[0, 0, :3] = torch.tensor([5.0, 4.0, 3.0])  # a tail of about 1e-19
    student = student.to(dtype)
    values, ids = torch.log_softmax(torch.randn(3, 7, 13, generator=g) * 3, -1).topk(k, dim=-1)
    targets = losses.TopKTargets(ids, values, 13)
    mask = torch.rand(3, 7, generator=g) > 0.3
    mask[0, 0] = True
    labels = masked_labels(g, mask)
    assert_one_pass_equals_the_terms_apart(
        student, targets, mask, labels, {"rtol": 1e-6, "atol": 1e-7}, {"rtol": 1e-5, "atol": 1e-8}
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [21, 4])  # one block of teacher rows, and several (uneven)
def test_the_dense_forward_kl_and_the_lm_loss_in_one_pass_equal_each_alone(dtype, rows, monkeypatch):
    """From the live teacher's logits (a near-certain student, masked and unlabelled items)."""
    monkeypatch.setattr(losses.one_pass._DensePass.__init__, "__defaults__", (rows * 13, False))
    g = torch.Generator().manual_seed(5)
    student = (torch.randn(3, 7, 13, generator=g) * 3).to(dtype)
    student[0, 0] = -40.0
    student[0, 0, 0] = 5.0  # a near-certain student
    teacher = (torch.randn(3, 7, 13, generator=g) * 3).to(dtype)
    mask = torch.rand(3, 7, generator=g) > 0.3
    labels = masked_labels(g, mask)
    assert_one_pass_equals_the_terms_apart(
        student, teacher, mask, labels, {"rtol": 1e-5, "atol": 1e-6}, {"rtol": 1e-5, "atol": 1e-7}
    )


def test_zero_kl_for_the_teacher_itself_and_the_shapes_are_checked():
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    kd, _ = losses.forward_kl_and_cross_entropy(logits, logits.clone(), labels)
    assert abs(kd.item()) < 1e-6
    with pytest.raises(ValueError, match=r"\(2, 5, 11\) but teacher_logits has \(2, 5, 10\)"):
        losses.forward_kl_and_cross_entropy(logits, torch.randn(2, 5, 10), labels)


def one_sgd_step(tmp_path, name, batch_size, accumulation, monkeypatch, fused=True):
    """Minus the parameter change of one plain SGD step at lr 1, forward KL (T = 1) and LM loss on, live teacher."""
    if not fused:
        from hf_distill import terms

        monkeypatch.setattr(terms, "FUSED_PASSES", ())
    student, teacher = case("causal-lm-llama").pair()
    rows = Dataset.from_list(random_task_rows("causal-lm", n=16, seed=5, min_len=2, max_len=20))
    trainer = make_trainer(
        tmp_path / name, student, teacher, rows, pad_batch, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, train_sampling_strategy="sequential",
        kd_weight=1.0, label_weight=0.5, temperature=1.0, fused_linear_loss="never", **SGD,
    )  # fmt: skip
    before = trainable_state(trainer)
    trainer.train()
    monkeypatch.undo()
    return {k: before[k] - v for k, v in trainable_state(trainer).items()}


def test_a_live_teacher_step_takes_the_one_pass_and_accumulates_exactly(tmp_path, monkeypatch):
    """The trainer takes the pass with a live teacher (spied), its update equals the terms computed one by one, and
    two accumulated batches of 8 (uneven token counts) give the update of one batch of 16."""
    calls = []
    one_pass = losses.one_pass._DensePass

    def spy(*args, **kwargs):
        calls.append(1)
        return one_pass(*args, **kwargs)

    monkeypatch.setattr(losses.one_pass, "_DensePass", spy)
    whole = one_sgd_step(tmp_path, "whole", 16, 1, monkeypatch)
    monkeypatch.setattr(losses.one_pass, "_DensePass", spy)
    halves = one_sgd_step(tmp_path, "halves", 8, 2, monkeypatch)
    assert len(calls) == 3
    apart = one_sgd_step(tmp_path, "apart", 16, 1, monkeypatch, fused=False)
    assert sum(d.abs().sum().item() for d in whole.values()) > 1e-3
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
        torch.testing.assert_close(apart[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
