"""Gradient accumulation with each soft-target divergence on: two accumulated batches of 8 give the update of one
batch of 16, on a causal LM whose rows have uneven lengths (so the halves hold different numbers of scored tokens)."""

import pytest
import torch
from datasets import Dataset
from tiny_task_models import SGD, case, make_trainer, pad_batch, random_task_rows, trainable_state

from hf_distill import losses

# Each divergence with a mixing weight away from its default, where it has one.
SETTINGS = {"jsd": {"divergence_beta": 0.3}, "skew_kl": {"divergence_alpha": 0.2}}

pytestmark = pytest.mark.usefixtures("one_thread")


def one_sgd_step(tmp_path, name, batch_size, accumulation):
    """Minus the parameter change of one plain SGD step at lr 1 (the gradient), KD and LM loss both on."""
    student, teacher = case("causal-lm-llama").pair()
    rows = Dataset.from_list(random_task_rows("causal-lm", n=16, seed=5, min_len=2, max_len=20))
    trainer = make_trainer(
        tmp_path / f"{name}-{batch_size}x{accumulation}",
        student,
        teacher,
        rows,
        pad_batch,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        train_sampling_strategy="sequential",  # the halves are the first and last 8 rows, of unequal token counts
        divergence=name,
        kd_weight=1.0,
        label_weight=0.5,
        temperature=2.0,
        **SETTINGS.get(name, {}),
        **SGD,
    )
    before = trainable_state(trainer)
    trainer.train()
    return {k: before[k] - v for k, v in trainable_state(trainer).items()}


@pytest.mark.parametrize("name", list(losses.DIVERGENCES))
def test_accumulated_halves_give_the_update_of_the_whole_batch(tmp_path, name):
    rows = random_task_rows("causal-lm", n=16, seed=5, min_len=2, max_len=20)
    scored = [sum(label != -100 for label in row["labels"][1:]) for row in rows]
    assert sum(scored[:8]) != sum(scored[8:])  # uneven halves: a per-half mean would weigh tokens differently
    whole = one_sgd_step(tmp_path, name, batch_size=16, accumulation=1)
    halves = one_sgd_step(tmp_path, name, batch_size=8, accumulation=2)
    assert sum(d.abs().sum().item() for d in whole.values()) > 1e-3  # a real gradient
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
