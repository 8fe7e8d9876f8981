"""The soft-target divergence chosen in the config: each one trains a student through the trainer, logs the value of
its loss function, is refused when mis-set, and is named in the card and the metrics."""

import copy
import functools

import pytest
import torch
from datasets import Dataset
from tiny_task_models import (
    case,
    classifier,
    make_config,
    make_trainer,
    pad_batch,
    random_classification_dataset,
    random_task_rows,
)

from hf_distill import CacheArguments, DistillationConfig, DistillationTrainer, build_teacher_cache, losses
from hf_distill.model_card import _losses
from hf_distill.terms import TERMS

# Each divergence with its mixing weight (the config's field and the loss function's keyword).
DIVERGENCES = {
    "forward_kl": {},
    "reverse_kl": {},
    "jsd": {"divergence_beta": 0.3},
    "skew_kl": {"divergence_alpha": 0.2},
    "tv": {},
}
ONLY_KD = {"kd_weight": 1.0, "label_weight": 0.0, "temperature": 2.0}


def expected_kd(name, settings, student, teacher, batch, shift=False):
    """The divergence's loss function on one batch of the two models (the student as it was before training)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s, t = student(**inputs).logits, teacher(**inputs).logits
    mask = None
    if shift:  # causal LM: position i is scored against token i + 1, where that token has a label
        s, t, mask = s[:, :-1], t[:, :-1], batch["labels"][:, 1:] != -100
    weights = {key.removeprefix("divergence_"): value for key, value in settings.items()}
    return losses.DIVERGENCES[name](s, t, 2.0, mask, **weights).item()


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_each_divergence_trains_a_classifier_and_logs_its_function(tmp_path, name):
    data = random_classification_dataset(8, seed=4)
    student, teacher = classifier(num_layers=2, seed=1), classifier(num_layers=4, seed=0)
    before = copy.deepcopy(student)
    settings = DIVERGENCES[name]
    trainer = make_trainer(
        tmp_path, student, teacher, data, divergence=name, **settings, **ONLY_KD, max_steps=8, learning_rate=1e-2
    )
    trainer.train()
    logged = [entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry]
    # One batch holds the 8 rows: the first step's loss_kd is the function on the untrained student.
    batch = pad_batch([data[i] for i in range(8)])
    assert logged[0] == pytest.approx(expected_kd(name, settings, before, teacher, batch), rel=1e-4)
    assert all(torch.isfinite(torch.tensor(logged)))
    assert logged[-1] < 0.7 * logged[0]


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_each_divergence_trains_a_causal_lm_on_its_scored_tokens(tmp_path, name):
    data = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=3))
    student, teacher = case("causal-lm-gpt2").pair()
    before = copy.deepcopy(student)
    settings = DIVERGENCES[name]
    trainer = make_trainer(
        tmp_path, student, teacher, data, pad_batch, divergence=name, **settings, **ONLY_KD, learning_rate=1e-2
    )
    trainer.train()
    logged = [entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry]
    batch = pad_batch([data[i] for i in range(8)])
    assert logged[0] == pytest.approx(expected_kd(name, settings, before, teacher, batch, shift=True), rel=1e-4)
    assert logged[-1] < logged[0]


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_a_top_k_cache_serves_every_divergence(tmp_path, name):
    """The cache is read back as top-k targets: every divergence is finite on them and equals its function on the
    k + 1 buckets (the top k and the tail)."""
    data = random_classification_dataset(8, seed=4)
    teacher = classifier(num_layers=4, seed=0)
    settings = CacheArguments(cache_dir=str(tmp_path / "cache"), top_k=2)
    cache = build_teacher_cache(teacher, data, settings, data_collator=pad_batch, temperature=2.0, progress=False)
    student = classifier(num_layers=2, seed=1)
    before = copy.deepcopy(student)
    settings = DIVERGENCES[name]
    trainer = DistillationTrainer(
        model=student,
        teacher_cache=cache,
        args=make_config(tmp_path, divergence=name, **settings, **ONLY_KD, max_steps=2),
        train_dataset=data,
        data_collator=pad_batch,
    )
    trainer.train()
    logged = [entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry]
    batch = pad_batch([data[i] for i in range(8)])
    stored = cache.outputs(torch.arange(8), batch["attention_mask"], batch["input_ids"].shape, "cpu").logits
    with torch.no_grad():
        s = before(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    weights = {key.removeprefix("divergence_"): value for key, value in settings.items()}
    divergence = functools.partial(losses.DIVERGENCES[name], **weights)
    expected = losses.soft_target_loss(s, stored, 2.0, divergence=divergence)
    assert logged[0] == pytest.approx(expected.item(), rel=1e-4)
    assert all(torch.isfinite(torch.tensor(logged)))


def test_regression_ignores_the_divergence(tmp_path):
    regression = case("regression")
    data = Dataset.from_list(random_task_rows("regression", n=8, seed=2))
    values = []
    for name in ("forward_kl", "tv"):
        student, teacher = regression.pair()
        trainer = make_trainer(tmp_path, student, teacher, data, pad_batch, divergence=name, **ONLY_KD, max_steps=1)
        trainer.train()
        values.append(trainer.state.log_history[0]["loss_kd"])
    assert values[0] == values[1]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"divergence": "kl"}, r"^divergence must be one of \('forward_kl', 'reverse_kl', 'jsd', 'skew_kl', 'tv'\)"),
        ({"divergence_beta": 1.5}, r"^divergence_beta must be a number in \[0, 1\], got 1.5$"),
        ({"divergence_beta": -0.1}, r"^divergence_beta must be a number in \[0, 1\], got -0.1$"),
        ({"divergence_beta": float("nan")}, r"^divergence_beta must be a number in \[0, 1\], got nan$"),
        ({"divergence_alpha": 1.0}, r"^divergence_alpha must be a number in \[0, 1\), got 1.0$"),
        ({"divergence_alpha": "0.1"}, r"^divergence_alpha must be a number in \[0, 1\), got '0.1'$"),
    ],
)
def test_the_config_refuses_bad_divergence_settings(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message) as error:
        make_config(tmp_path, **settings)
    assert "\n" not in str(error.value)


def test_the_config_accepts_the_limits_and_defaults_to_forward_kl(tmp_path):
    config = make_config(tmp_path)
    assert (config.divergence, config.divergence_beta, config.divergence_alpha) == ("forward_kl", 0.5, 0.1)
    for settings in (
        {"divergence": "jsd", "divergence_beta": 0.0},
        {"divergence": "jsd", "divergence_beta": 1},
        {"divergence": "skew_kl", "divergence_alpha": 0.0},
    ):
        make_config(tmp_path, **settings)


def test_the_command_line_flags_choose_the_divergence():
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(DistillationConfig).parse_args_into_dataclasses(
        ["--output_dir", "out", "--report_to", "none", "--divergence", "skew_kl", "--divergence_alpha", "0.3"]
    )
    assert (config.divergence, config.divergence_alpha) == ("skew_kl", 0.3)
    with pytest.raises(SystemExit):
        HfArgumentParser(DistillationConfig).parse_args_into_dataclasses(["--output_dir", "out", "--divergence", "kl"])


@pytest.mark.parametrize(
    ("settings", "recorded", "words"),
    [
        ({}, {"divergence": "forward_kl"}, "KL divergence to the teacher's softened class probabilities"),
        ({"divergence": "reverse_kl"}, {"divergence": "reverse_kl"}, "Reverse KL divergence, KL(student ‖ teacher)"),
        (
            {"divergence": "jsd", "divergence_beta": 0.3},
            {"divergence": "jsd", "divergence_beta": 0.3},
            "Generalised Jensen-Shannon divergence (β = 0.3) (GKD, Agarwal et al. 2024)",
        ),
        (
            {"divergence": "skew_kl"},
            {"divergence": "skew_kl", "divergence_alpha": 0.1},
            "Skew KL divergence (α = 0.1) (DistiLLM, Ko et al. 2024)",
        ),
        ({"divergence": "tv"}, {"divergence": "tv"}, "Total variation distance"),
    ],
)
def test_the_settings_record_the_divergence_and_the_card_names_it(tmp_path, settings, recorded, words):
    distillation = make_config(tmp_path, **settings).distillation_settings()
    assert {key: value for key, value in distillation.items() if key.startswith("divergence")} == recorded
    rows = _losses(distillation)
    kd_row = next(row for row in rows if row["description"] == TERMS["kd"].card(distillation))
    assert kd_row["description"].startswith(words)
    assert kd_row["description"].endswith(", at temperature T = 2, scaled by T²")


def test_a_metrics_file_without_a_divergence_reads_as_forward_kl():
    assert TERMS["kd"].card({"temperature": 2.0}).startswith("KL divergence to the teacher's softened")


def test_the_written_card_names_the_divergence(tmp_path):
    student, teacher = classifier(num_layers=2, seed=1), classifier(num_layers=4, seed=0)
    trainer = make_trainer(tmp_path, student, teacher, divergence="jsd", divergence_beta=0.3, **ONLY_KD)
    trainer.create_model_card()
    body = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "Generalised Jensen-Shannon divergence (β = 0.3) (GKD, Agarwal et al. 2024)" in body
    assert "KL divergence to the teacher's" not in body
