"""`--baseline` and `--seeds`: the same student from the same start, trained without the teacher, and the verdict.

On tiny saved teachers and local files, through `run_distillation` (the path of `hf-distill train`): bit-identical
starting weights, no teacher forward in the baseline's training, the same batches in the same order when there is no
transfer set, the same epochs over the labelled data when there is one, and the verdict in the metrics file, the log
and the card. Each task's per-example scores reproduce its headline metric.
"""

import hashlib
import json

import numpy as np
import pytest
import torch
from tiny_task_models import TAGS, case, data_files, save_teacher, split_card
from transformers import EvalPrediction, TrainerCallback

from hf_distill import DistillationConfig, DistillationTrainer
from hf_distill.completions import uses_completions
from hf_distill.measure import MeasureArguments
from hf_distill.metrics import entity_scores
from hf_distill.model_card import METRICS_FILE
from hf_distill.run import StudentArguments, baseline_config, run_distillation
from hf_distill.tasks import get_task
from hf_distill.terms import TERMS

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(TrainerCallback):
    """The starting weights of every run (a hash of the student's parameters at `on_train_begin`)."""

    def __init__(self):
        self.starts = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        student = model.student
        digest = hashlib.sha256()
        for name, tensor in sorted(student.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
        self.starts.append((args.label_weight, args.kd_weight, args.seed, digest.hexdigest()))


@pytest.fixture
def spy(monkeypatch):
    """Records every training batch (which run, its input ids) and every teacher forward (which run, training?)."""
    calls = {"batches": [], "teacher": []}
    compute_loss, run_teacher = DistillationTrainer.compute_loss, DistillationTrainer._run_teacher

    def recording_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            calls["batches"].append((self.args.kd_weight, self.args.seed, inputs["input_ids"].tolist()))
        return compute_loss(self, model, inputs, *args, **kwargs)

    def recording_teacher(self, teacher, names, inputs, internals, **kwargs):
        calls["teacher"].append((self.args.kd_weight, self.model.training))
        return run_teacher(self, teacher, names, inputs, internals, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "compute_loss", recording_loss)
    monkeypatch.setattr(DistillationTrainer, "_run_teacher", recording_teacher)
    return calls


def run(tmp_path, transfer_set: bool, seeds: int = 1, callbacks=(), baseline_budget="steps", **overrides):
    task_case = case("text-classification")
    teacher = save_teacher(tmp_path / "teacher", task_case)
    files = data_files(tmp_path, task_case)
    if not transfer_set:
        files.pop("unlabeled_file")
    settings = {
        "output_dir": str(tmp_path / "student"),
        "teacher_model_name_or_path": str(teacher),
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 5,
        "hidden_weight": 1.0,
        **overrides,
    }
    from hf_distill.data import DataArguments

    return run_distillation(
        StudentArguments(),
        DataArguments(**files),
        DistillationConfig(**settings),
        MeasureArguments(measure_latency=False, baseline=True, seeds=seeds, baseline_budget=baseline_budget),
        callbacks=list(callbacks),
    )


def test_baseline_same_start_same_batches_no_teacher(tmp_path, spy):
    recorder = Recorder()
    result = run(tmp_path, transfer_set=False, max_steps=4, callbacks=[recorder])
    # Two runs (distilled, baseline), both from the same weights bit for bit.
    assert [start[:3] for start in recorder.starts] == [(0.5, 0.5, 5), (1.0, 0.0, 5)]
    assert recorder.starts[0][3] == recorder.starts[1][3]
    # The same batches in the same order (the same seeded length-grouped sampler over the same labelled rows).
    distilled = [ids for kd, _, ids in spy["batches"] if kd > 0]
    baseline = [ids for kd, _, ids in spy["batches"] if kd == 0]
    assert len(distilled) == len(baseline) == 4 and distilled == baseline
    # The teacher runs in the distilled run's training; in the baseline's only to measure agreement, in evaluation.
    assert any(training for kd, training in spy["teacher"] if kd > 0)
    assert not any(training for kd, training in spy["teacher"] if kd == 0)
    assert any(not training for kd, training in spy["teacher"] if kd == 0)

    metrics = json.loads((tmp_path / "student" / METRICS_FILE).read_text())
    assert metrics == result.metrics
    baseline_facts, comparison = metrics["baseline"], metrics["comparison"]
    assert baseline_facts["train_examples"] == 40 and baseline_facts["optimizer_steps"] == 4
    assert 0 <= baseline_facts["teacher_agreement"] <= 1 and 0 <= baseline_facts["expected_calibration_error"] <= 1
    assert 0 <= metrics["student"]["expected_calibration_error"] <= 1
    (row,) = comparison["per_seed"]
    assert comparison["test"] == "mcnemar_exact" and comparison["metric"] == "accuracy"
    assert row["distilled"] == metrics["student"]["accuracy"] and row["baseline"] == baseline_facts["accuracy"]
    assert comparison["outcome"] in ("helped", "no_difference", "hurt") and "p = " in comparison["verdict"]
    scores = result.example_scores
    only_distilled = int(np.sum(scores["student"][0].correct & ~scores["baseline"][0].correct))
    assert row["only_distilled_right"] == only_distilled
    # The verdict is in the log (the command's last lines), the trackers' figures and the card.
    assert comparison["verdict"] in result.summary
    logged = next(entry for entry in result.log_history if "final/distilled_minus_baseline" in entry)
    assert logged["final/distilled_minus_baseline"] == pytest.approx(row["difference"])
    assert logged["final/distilled_vs_baseline_p_value"] == comparison["pooled"]["p_value"]
    _, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert "**Was distillation worth it?**" in body and comparison["verdict"][1:] in body
    assert "Student without teacher (baseline)" in body


def test_baseline_budget_and_seeds_with_a_transfer_set(tmp_path, spy):
    """With unlabelled rows the baseline trains on the labelled rows only, by default for as many optimizer steps as
    the distilled run (more epochs of its own data); each seed starts from the same weights, and the comparison pools
    the seeds. The budget (rule, both step counts, both times) is in the metrics, the verdict, the log and the card."""
    recorder = Recorder()
    result = run(tmp_path, transfer_set=True, seeds=2, num_train_epochs=1, callbacks=[recorder])
    seeds = [start[2] for start in recorder.starts]
    assert seeds == [5, 5, 6, 6] and len({start[3] for start in recorder.starts}) == 1
    metrics = result.metrics
    comparison = metrics["comparison"]
    budget = comparison["budget"]
    assert budget["rule"] == "steps"
    # 40 labelled + 8 unlabelled rows at batch 8: 6 steps, one epoch; the baseline's 6 steps are 1.2 epochs of 40.
    assert {k: budget["distilled"][k] for k in ("train_examples", "optimizer_steps", "epochs")} == {
        "train_examples": 48,
        "optimizer_steps": 6,
        "epochs": 1.0,
    }
    assert {k: budget["baseline"][k] for k in ("train_examples", "optimizer_steps", "epochs")} == {
        "train_examples": 40,
        "optimizer_steps": 6,
        "epochs": 1.2,
    }
    assert budget["distilled"]["train_runtime_s"] >= 0 and budget["baseline"]["train_runtime_s"] >= 0
    assert metrics["baseline"]["optimizer_steps"] == 6
    baseline_batches = [ids for kd, _, ids in spy["batches"] if kd == 0]
    assert len(baseline_batches) == 12 and {len(ids) for ids in baseline_batches} <= {8}
    for row in comparison["per_seed"]:
        assert row["distilled_optimizer_steps"] == row["baseline_optimizer_steps"] == 6
        assert row["distilled_train_runtime_s"] >= 0 and row["baseline_train_runtime_s"] >= 0
    assert [row["seed"] for row in comparison["per_seed"]] == [5, 6]
    pooled = sum(row["only_distilled_right"] for row in comparison["per_seed"])
    assert comparison["pooled"]["only_distilled_right"] == pooled
    assert "at the same number of training steps (6 each)" in comparison["verdict"]
    assert comparison["verdict"].endswith("mean of 2 seeds)")
    assert "Budget (steps: the same number of optimizer steps" in result.summary
    _, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert "for the same 6 optimizer steps (1.2 epochs over 40 labelled examples; the distilled run: 1 epoch" in body
    assert "Training took" in body and "with the teacher and" in body
    assert metrics["seeds"]["seeds"] == [5, 6] and len(metrics["seeds"]["student"]) == 2
    assert metrics["seeds"]["student"][0] == metrics["student"]["accuracy"]
    # Only the first seed's student is saved; the side runs leave nothing in the output folder.
    assert not any(p.name.startswith(("seed-", "baseline-", "checkpoint")) for p in (tmp_path / "student").iterdir())


def test_baseline_budget_in_epochs_keeps_the_labelled_epochs(tmp_path, spy):
    """`baseline_budget="epochs"`: the same epochs over the labelled rows only, fewer steps; the verdict says so."""
    result = run(tmp_path, transfer_set=True, num_train_epochs=1, baseline_budget="epochs")
    budget = result.metrics["comparison"]["budget"]
    assert budget["rule"] == "epochs"
    assert budget["distilled"]["optimizer_steps"] == 6 and budget["baseline"]["optimizer_steps"] == 5
    assert len([1 for kd, _, _ in spy["batches"] if kd == 0]) == 5
    verdict = result.metrics["comparison"]["verdict"]
    assert "at the same number of epochs (1; 6 training steps with the teacher, 5 without)" in verdict
    assert verdict.endswith(", 1 seed)")
    _, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert "for 5 optimizer steps (1 epoch over 40 labelled examples) against the distilled run's 6" in body


def test_baseline_budget_must_be_a_known_rule():
    with pytest.raises(ValueError, match="baseline_budget must be one of steps, epochs"):
        MeasureArguments(baseline_budget="tokens")


def test_baseline_config_keeps_only_the_label_loss():
    config = DistillationConfig(
        output_dir="unused",
        kd_weight=0.7,
        label_weight=0.3,
        hidden_weight=2.0,
        similarity_weight=1.0,
        teacher_cache="some-cache",
        seed=3,
        num_train_epochs=4,
        learning_rate=1e-4,
        report_to="none",
    )
    baseline = baseline_config(config)
    for term in TERMS.values():
        assert getattr(baseline, term.weight_field) == (1.0 if term.name == "label" else 0.0), term.name
    assert baseline.teacher_cache is None
    assert (baseline.seed, baseline.num_train_epochs, baseline.learning_rate) == (3, 4, 1e-4)
    assert baseline.train_sampling_strategy == config.train_sampling_strategy
    assert baseline.save_strategy == "no" and not baseline.push_to_hub


@pytest.mark.parametrize("completions", [{"lmbda": 0.5}, {"seq_kd": True}, {"lmbda": 0.25, "seq_kd": True}])
def test_the_baseline_learns_the_datasets_own_text_never_generated_batches(completions):
    """An on-policy or sequence-level run's baseline trains on the dataset's batches: with seq_kd the teacher would
    write its text, with lmbda it would learn its own samples."""
    config = DistillationConfig(output_dir="unused", report_to="none", max_new_tokens=8, **completions)
    assert uses_completions(config)
    baseline = baseline_config(config)
    assert not uses_completions(baseline) and "completions" not in baseline.distillation_settings()


def test_seeds_must_be_positive():
    with pytest.raises(ValueError, match="seeds must be a whole number >= 1"):
        MeasureArguments(seeds=0)


def _prediction(predictions, labels):
    return EvalPrediction(predictions=predictions, label_ids=labels)


def test_each_task_gives_per_example_scores_of_its_headline_metric():
    """The task object knows how to score each example: the scores recombine into the metric its evaluation reports
    (and accuracy-like metrics give per-example correctness, the others sufficient statistics)."""
    rng = np.random.default_rng(0)
    config = type("Config", (), {"id2label": TAGS, "problem_type": None, "num_labels": 3})()

    task = get_task("text-classification")()
    evaluation = task.evaluation(None, config)
    prediction = _prediction(rng.normal(size=(30, 3)), rng.integers(0, 3, 30))
    scores = evaluation.example_scores(prediction)
    assert scores.paired_test == "mcnemar_exact" and scores.metric == task.card_metrics[0].key
    assert scores.value() == pytest.approx(evaluation.compute_metrics(prediction)["accuracy"])
    probabilities = torch.softmax(torch.tensor(prediction.predictions), -1).max(-1).values.numpy()
    assert np.allclose(scores.confidence, probabilities)

    regression = get_task("text-classification")(is_regression=True).evaluation(None, None)
    prediction = _prediction(rng.normal(size=(20, 1)), rng.normal(size=20))
    scores = regression.example_scores(prediction)
    assert scores.paired_test == "paired_bootstrap"
    assert scores.value() == pytest.approx(regression.compute_metrics(prediction)["mse"])

    tokens = get_task("token-classification")().evaluation(None, config)
    labels = rng.integers(0, 5, (12, 9))
    labels[:, 0] = -100
    prediction = _prediction(rng.integers(0, 5, (12, 9)), labels)
    scores = tokens.example_scores(prediction)
    assert scores.metric == "f1" and scores.stats.shape == (12, 3)
    assert scores.value() == pytest.approx(tokens.compute_metrics(prediction)["f1"])
    references, guesses = tokens.compute_metrics.tag_sequences(prediction)
    assert scores.value() == pytest.approx(entity_scores(references, guesses)["f1"])

    lm = get_task("text-generation")().evaluation(None, None)
    statistics = np.stack([rng.uniform(1, 9, 15), rng.integers(1, 6, 15), np.zeros(15)], axis=1)
    prediction = _prediction(statistics, None)
    scores = lm.example_scores(prediction)
    assert scores.metric == "perplexity"
    assert scores.value() == pytest.approx(lm.compute_metrics(prediction)["perplexity"])
