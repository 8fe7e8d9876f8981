"""The soft-target loss in chunks of positions (`loss_chunk_size`): the same loss and gradients as in one piece, for
every divergence, dense or top-k teacher, chunk sizes that do or do not divide the length, with padding; the same
training, under gradient accumulation too; and no saved float32 temporary wider than one chunk."""

import functools

import pytest
import torch
from datasets import Dataset
from tiny_task_models import SGD, llama, make_config, pad_batch, random_task_rows, trainable_state

from hf_distill import CacheArguments, DistillationConfig, DistillationTrainer, build_teacher_cache, losses
from hf_distill.losses import TopKTargets, soft_target_loss

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = {"forward_kl": {}, "reverse_kl": {}, "jsd": {"beta": 0.3}, "skew_kl": {"alpha": 0.2}, "tv": {}}


def batch_of_logits(seed=0, batch=3, length=10, vocab=13):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=g) * 2
    teacher = torch.randn(batch, length, vocab, generator=g) * 2
    # Right padding of different lengths, and a row with a masked prefix (a prompt).
    lengths = torch.tensor([length - (4 * i) % length for i in range(batch)])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    mask[0, :2] = False
    return student, teacher, mask


def loss_and_grad(student, teacher, mask, name, chunk_size, num_items=None):
    student = student.clone().requires_grad_(True)
    divergence = functools.partial(losses.DIVERGENCES[name], **WEIGHTS[name])
    value = soft_target_loss(student, teacher, 2.0, mask, num_items, divergence=divergence, chunk_size=chunk_size)
    (0.7 * value).backward()  # a loss weight: the gradient is scaled by the upstream gradient
    return value.detach(), student.grad


@pytest.mark.parametrize("name", list(WEIGHTS))
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 10, 64])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "top-k"])
def test_chunks_give_the_loss_and_gradient_of_one_piece(name, chunk_size, sparse):
    student, teacher, mask = batch_of_logits()
    if sparse:
        values, ids = torch.log_softmax(teacher / 2.0, -1).topk(4, dim=-1)
        teacher = TopKTargets(ids, values, teacher.shape[-1])
    whole, whole_grad = loss_and_grad(student, teacher, mask, name, None)
    chunked, chunked_grad = loss_and_grad(student, teacher, mask, name, chunk_size)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-5, atol=1e-8)
    assert whole_grad[~mask].abs().max() == 0 and whole_grad.abs().sum() > 0


def test_a_given_item_count_and_no_mask_and_classifier_shapes():
    student, teacher, mask = batch_of_logits(seed=1)
    for args in ((mask, torch.tensor(40)), (None, None), (None, 100.0)):
        whole, whole_grad = loss_and_grad(student, teacher, *args[:1], "forward_kl", None, args[1])
        chunked, chunked_grad = loss_and_grad(student, teacher, *args[:1], "forward_kl", 3, args[1])
        torch.testing.assert_close(chunked, whole)
        torch.testing.assert_close(chunked_grad, whole_grad)
    # (batch, classes): examples are the positions.
    whole, whole_grad = loss_and_grad(student[:, 0], teacher[:, 0], None, "jsd", None)
    chunked, chunked_grad = loss_and_grad(student[:, 0], teacher[:, 0], None, "jsd", 2)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(chunked_grad, whole_grad)


def test_a_shifted_view_of_the_logits_and_no_gradient_in_evaluation():
    student, teacher, mask = batch_of_logits(seed=2, length=11)
    logits = student.clone().requires_grad_(True)
    value = soft_target_loss(logits[:, :-1], teacher[:, :-1], 2.0, mask[:, 1:], chunk_size=4)
    value.backward()
    reference = student.clone().requires_grad_(True)
    losses.soft_target_kl(reference[:, :-1], teacher[:, :-1], 2.0, mask[:, 1:]).backward()
    torch.testing.assert_close(logits.grad, reference.grad)
    with torch.no_grad():
        chunked = soft_target_loss(student, teacher, 2.0, mask, chunk_size=3)
    torch.testing.assert_close(chunked, losses.soft_target_kl(student, teacher, 2.0, mask))
    assert not chunked.requires_grad


def test_no_saved_temporary_is_wider_than_one_chunk():
    """What the loss keeps for the backward pass: one piece keeps float32 tensors of all positions over the
    vocabulary; chunks keep only the gradient buffer (the student logits' size), whatever batch x length."""
    student, teacher, mask = batch_of_logits(seed=3, batch=4, length=64, vocab=50)
    positions = 4 * 64

    def saved_numels(chunk_size):
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel())
            return tensor

        logits = student.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            soft_target_loss(logits, teacher, 2.0, mask, chunk_size=chunk_size)
        return sizes

    whole = saved_numels(None)
    assert sum(size >= positions * 50 for size in whole) >= 2  # log-probabilities of both sides, at least
    chunked = saved_numels(8)
    assert [size for size in chunked if size > 8 * 50] == [positions * 50]  # the gradient buffer alone


def test_the_config_refuses_a_bad_chunk_size(tmp_path):
    for bad in (0, -3, 2.5, True, "12"):
        with pytest.raises(ValueError, match="loss_chunk_size must be a whole number"):
            DistillationConfig(output_dir=str(tmp_path), loss_chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size must be a whole number"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), chunk_size=0)


def train(tmp_path, name, batch_size=8, accumulation=1, cache=None, **overrides):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=5, min_len=2, max_len=16))
    teacher = llama(num_layers=2, seed=0)
    # The chunks of the soft-target loss from the logits (the fused linear loss is tested in test_fused_linear.py).
    settings = {"kd_weight": 1.0, "label_weight": 0.5, "temperature": 2.0, **SGD, "learning_rate": 0.5}
    settings["fused_linear_loss"] = "never"
    trainer = DistillationTrainer(
        model=llama(num_layers=1, seed=1),
        teacher_model=None if cache is not None else teacher,
        teacher_cache=cache,
        args=make_config(
            tmp_path / name,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=2,
            **settings,
            **overrides,
        ),
        train_dataset=rows,
        data_collator=pad_batch,
    )
    trainer.train()
    logged = [entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry]
    return trainable_state(trainer), logged


@pytest.mark.parametrize("top_k", [None, 3])
def test_training_in_chunks_equals_training_in_one_piece_and_under_accumulation(tmp_path, top_k):
    cache = None
    if top_k:
        rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=5, min_len=2, max_len=16))
        cache = build_teacher_cache(
            llama(num_layers=2, seed=0),
            rows,
            CacheArguments(str(tmp_path / "cache"), top_k=top_k),
            data_collator=pad_batch,
            temperature=2.0,
            progress=False,
        )
    whole, whole_log = train(tmp_path, "whole", cache=cache)
    chunked, chunked_log = train(tmp_path, "chunked", cache=cache, loss_chunk_size=3)
    accumulated, _ = train(tmp_path, "accumulated", 4, 2, cache=cache, loss_chunk_size=5)
    assert chunked_log == pytest.approx(whole_log, rel=1e-5)
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], rtol=1e-5, atol=1e-7, msg=key)
        torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
