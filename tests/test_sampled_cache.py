"""A sampled teacher cache (Sparse Logit Sampling): classes drawn from the teacher's distribution with their
frequencies, on average the distribution itself, read back and trained from like a top-k cache."""

import pytest
import torch
from datasets import Dataset
from tiny_task_models import VOCAB_SIZE, llama, make_config, pad_batch, random_task_rows

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache
from hf_distill.cache import LOG_FLOOR, _draw_classes
from hf_distill.losses import TopKTargets, soft_target_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(draws, slots=None, temperature=1.0):
    return {"logit_samples": draws, "top_k": slots or draws, "temperature": temperature}


def test_the_frequencies_are_on_average_the_teachers_probabilities():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0, -3.0]).expand(4000, 6)
    log_frequencies, ids = _draw_classes(logits, settings(8, 6, temperature=2.0), start=0)
    frequencies = torch.zeros(4000, 6).scatter_(-1, ids, log_frequencies.exp())
    p = torch.softmax(logits[0] / 2.0, -1)
    # Each item's frequencies average 8 draws: over 4,000 items the mean is within 4 standard errors of p.
    error = (p * (1 - p) / (8 * 4000)).sqrt()
    assert ((frequencies.mean(0) - p).abs() < 4 * error).all(), (frequencies.mean(0), p)
    assert frequencies[:, 5].gt(0).any()  # the least likely class is drawn too: not a top-k
    torch.testing.assert_close(frequencies.sum(-1), torch.ones(4000), rtol=1e-5, atol=1e-5)


def test_every_slot_holds_a_distinct_class_drawn_ones_first():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 40, generator=g) * 3
    log_frequencies, ids = _draw_classes(logits, settings(10), start=7)
    assert ids.shape == log_frequencies.shape == (50, 10)
    assert all(len(set(row.tolist())) == 10 for row in ids)
    drawn = log_frequencies > LOG_FLOOR
    # Drawn classes (frequency > 0) come first, most drawn first; the slots left hold frequency 0 as log 1e-30.
    assert (drawn.int().diff(dim=-1) <= 0).all()
    assert (log_frequencies.diff(dim=-1) <= 1e-6).all()
    assert (log_frequencies[~drawn] == LOG_FLOOR).all()
    # Seeded by the first row: the same draws again, others from another row.
    again = _draw_classes(logits, settings(10), start=7)
    assert torch.equal(again[1], ids) and torch.equal(again[0], log_frequencies)
    assert not torch.equal(_draw_classes(logits, settings(10), start=8)[1], ids)


def _build(tmp_path, name, rows, teacher, **overrides):
    args = CacheArguments(str(tmp_path / name), **{"logit_samples": 16, "cache_batch_size": 4, **overrides})
    return build_teacher_cache(teacher, rows, args, data_collator=pad_batch, temperature=1.0, progress=False)


def test_a_sampled_cache_is_deterministic_and_its_forward_kl_gradient_is_q_minus_the_frequencies(tmp_path):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=6, seed=1))
    teacher = llama(num_layers=1, hidden=8, seed=0)
    cache, again = _build(tmp_path, "a", rows, teacher), _build(tmp_path, "b", rows, teacher)
    batch = pad_batch([rows[i] for i in range(6)])
    index = torch.arange(6)
    targets = cache.outputs(index, batch["attention_mask"], batch["input_ids"].shape, "cpu").logits
    other = again.outputs(index, batch["attention_mask"], batch["input_ids"].shape, "cpu").logits
    assert isinstance(targets, TopKTargets) and targets.ids.shape == (*batch["input_ids"].shape, 16)
    assert torch.equal(targets.ids, other.ids) and torch.equal(targets.logprobs, other.logprobs)
    assert cache.settings["logit_samples"] == 16 and cache.teacher["logit_samples"] == 16

    student = torch.randn(*batch["input_ids"].shape, VOCAB_SIZE, generator=torch.Generator().manual_seed(2))
    student.requires_grad_(True)
    mask = batch["attention_mask"].bool()
    soft_target_loss(student, targets, 1.0, mask).backward()
    frequencies = torch.zeros(student.shape).scatter_(-1, targets.ids, targets.logprobs.exp())
    expected = (torch.softmax(student.detach(), -1) - frequencies) * mask.unsqueeze(-1) / mask.sum()
    torch.testing.assert_close(student.grad, expected, rtol=1e-4, atol=1e-7)


def test_a_causal_lm_distils_from_a_sampled_cache_and_its_card_says_so(tmp_path):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=2))
    cache = _build(tmp_path, "cache", rows, llama(num_layers=2, seed=0), logit_samples=8)
    trainer = DistillationTrainer(
        model=llama(num_layers=1, seed=1), teacher_cache=cache, train_dataset=rows, data_collator=pad_batch,
        args=make_config(tmp_path, kd_weight=1.0, label_weight=0.5, temperature=1.0, max_steps=2),
    )  # fmt: skip
    trainer.train()
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)
    assert trainer.distillation_settings()["teacher_cache"]["logit_samples"] == 8
    trainer.save_model()
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "8 classes drawn per position from the teacher's distribution" in card, card


def test_a_sampled_cache_serves_the_forward_kl_only_and_takes_one_way_of_keeping_part(tmp_path):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=4, seed=3))
    teacher = llama(num_layers=1, hidden=8, seed=0)
    cache = _build(tmp_path, "cache", rows, teacher, logit_samples=4)
    with pytest.raises(ValueError, match=r"logit_samples=4.*divergence='reverse_kl'.*use divergence='forward_kl'"):
        DistillationTrainer(
            model=llama(num_layers=1, hidden=8, seed=1), teacher_cache=cache, train_dataset=rows,
            data_collator=pad_batch, args=make_config(tmp_path, divergence="reverse_kl", temperature=1.0),
        )  # fmt: skip
    with pytest.raises(ValueError, match="top_k=4 and logit_samples=4 are two ways"):
        _build(tmp_path, "both", rows, teacher, top_k=4, logit_samples=4)
    with pytest.raises(ValueError, match=r"logit_samples must be a whole number >= 1 \(--logit_samples\), got 0"):
        _build(tmp_path, "zero", rows, teacher, logit_samples=0)
