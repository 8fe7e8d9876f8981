"""The demo's figures, with what distillation costs: quality, size, speed, time and memory of the demo's job.

    python benchmarks/demo_figures.py [demo options, e.g. --output_dir bench-output --seeds 3]     (or: make benchmark)
    python benchmarks/demo_figures.py --metrics_only --output_dir demo-output    # a finished demo's figures only

Runs the demo (`examples/demo.py`, in its own process, with the options given) and then one teacher inference pass
over the distillation run's training data, and writes `benchmarks/results/demo.json` (`--results_name`):

- teacher, distilled student, no-teacher student and int8 export: accuracy, macro-F1, agreement with the teacher,
  parameters, size on disk, CPU latency (the demo times them in turns);
- the paired comparison of the distilled and the no-teacher student (McNemar's exact test, the verdict, the budget);
- the time of one distillation epoch / (one student fine-tuning epoch + one teacher inference pass on the same data),
  which shows what the loss terms and bookkeeping cost on top of the passes they need (the student epoch is measured
  on the labelled tweets and scaled per example to the distillation data, which includes the transfer set);
- the peak resident memory of each phase of the demo's process (sampled every 50 ms).

With `--metrics_only` it reads a finished demo's `demo_metrics.json` and writes its figures, without running
anything (no cost or memory figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import psutil
import torch
from common import REPO, demo_paths, write_results
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from tweets import data_arguments, minilm_path, prepare_tweets, training_settings

from hf_distill.measure import describe_budget

DEMO = os.path.join(REPO, "examples", "demo.py")
ROLES = {"teacher": "teacher", "distilled": "student", "no_teacher": "baseline", "int8": "int8"}
MODEL_FIGURES = (
    "num_layers",
    "accuracy",
    "macro_f1",
    "teacher_agreement",
    "student_agreement",
    "parameters",
    "size_bytes",
    "latency_ms_per_batch",
)


class MemorySampler(threading.Thread):
    """Samples a process' resident memory so that each phase's peak can be read off afterwards."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.samples, self.running = interval, [], True
        self.process = psutil.Process(pid)

    def run(self):
        while self.running:
            try:
                self.samples.append((time.time(), self.process.memory_info().rss))
            except psutil.NoSuchProcess:
                return
            time.sleep(self.interval)

    def peak_mb(self, start: float, end: float) -> int | None:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return round(max(values) / 2**20) if values else None


def option(argv: list[str], name: str, default: str) -> str:
    """The value of `--name` in the demo's options (the demo's own parser reads them all)."""
    for i, argument in enumerate(argv):
        if argument == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if argument.startswith(f"--{name}="):
            return argument.split("=", 1)[1]
    return default


def run_demo(argv: list[str]) -> tuple[dict, dict]:
    """Runs the demo in a process of its own; returns its metrics and the peak memory of each of its phases."""
    process = subprocess.Popen([sys.executable, DEMO, *argv])
    sampler = MemorySampler(process.pid)
    sampler.start()
    if process.wait():
        raise SystemExit(f"the demo failed (exit status {process.returncode})")
    sampler.running = False
    with open(os.path.join(option(argv, "output_dir", "demo-output"), "demo_metrics.json")) as handle:
        metrics = json.load(handle)
    peaks = {name: sampler.peak_mb(*span) for name, span in metrics["demo"]["phases"].items()}
    return metrics, peaks


def teacher_pass_seconds(metrics: dict, out: str) -> float:
    """One teacher inference pass over the distillation run's training data, in the batches a Trainer with the same
    settings and seed draws: over the labelled and unlabelled tweets, and scaled per example to the augmented copies
    when the run made some (tweets and their copies have about the same length). `out` is the demo's output
    folder."""
    arguments = metrics["demo"]["arguments"]
    paths = demo_paths(os.path.join(out, "data"))
    if not arguments["unlabeled_examples"]:
        paths.pop("unlabeled")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    teacher = AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "teacher")).eval()
    datasets = prepare_tweets(
        data_arguments(paths, arguments["max_length"], unlabeled=True), tokenizer, teacher.config
    )
    examples = len(datasets["train"])
    distilled = metrics["comparison"]["budget"]["distilled"]["train_examples"]
    settings = training_settings(1.0, arguments["seed"], per_device_train_batch_size=arguments["batch_size"])
    loader = Trainer(
        model=teacher,
        args=TrainingArguments(output_dir=os.path.join(out, "teacher-pass"), **settings),
        train_dataset=datasets["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
    ).get_train_dataloader()
    start = time.perf_counter()
    with torch.no_grad():  # as the distillation trainer runs its teacher
        for batch in loader:
            teacher(**{k: v for k, v in batch.items() if k != "labels"})
    return (time.perf_counter() - start) * distilled / examples


def cost(metrics: dict, teacher_pass: float) -> dict:
    """One distillation epoch against one student epoch plus one teacher pass over the same data."""
    seconds, budget = metrics["demo"]["train_seconds"], metrics["comparison"]["budget"]
    distilled, baseline = budget["distilled"], budget["baseline"]
    # Distillation trains on more examples (the transfer set) than the no-teacher student: compare per example,
    # scaled to one epoch of the distillation data.
    student_epoch = seconds["baseline"] / baseline["epochs"] * distilled["train_examples"] / baseline["train_examples"]
    distill_epoch = seconds["distilled"] / distilled["epochs"]
    return {
        "student_epoch_s": round(student_epoch, 1),
        "teacher_inference_pass_s": round(teacher_pass, 1),
        "distillation_epoch_s": round(distill_epoch, 1),
        "distillation_cost_ratio": round(distill_epoch / (student_epoch + teacher_pass), 3),
    }


def figures_of(metrics: dict) -> dict:
    """The demo's figures as the results file holds them."""
    models = {
        name: {key: metrics[role][key] for key in MODEL_FIGURES if key in metrics[role]}
        for name, role in ROLES.items()
        if role in metrics
    }
    figures = {
        "models": models,
        "latency": metrics.get("latency", {}),
        "dataset": {
            key: metrics["dataset"].get(key)
            for key in ("train_examples", "unlabeled_examples", "eval_examples", "eval_file")
        },
        "train_seconds": metrics["demo"]["train_seconds"],
    }
    if "comparison" in metrics:
        comparison = metrics["comparison"]
        figures["comparison"] = {
            "verdict": comparison["verdict"],
            "pooled": comparison["pooled"],
            "per_seed": comparison["per_seed"],
            "mean": comparison["mean"],
            "budget": comparison["budget"],
            "budget_text": describe_budget(comparison["budget"]),
        }
    return figures


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    metrics_only = "--metrics_only" in argv
    results_name = option(argv, "results_name", "demo")
    demo_argv = [a for a in argv if a != "--metrics_only"]
    if "--results_name" in demo_argv:
        index = demo_argv.index("--results_name")
        del demo_argv[index : index + 2]
    out = option(demo_argv, "output_dir", "demo-output")
    if metrics_only:
        with open(os.path.join(out, "demo_metrics.json")) as handle:
            metrics = json.load(handle)
        figures = figures_of(metrics)
    else:
        started = time.perf_counter()
        metrics, peaks = run_demo(demo_argv)
        figures = figures_of(metrics)
        figures["demo_wall_s"] = round(time.perf_counter() - started, 1)
        teacher_pass = teacher_pass_seconds(metrics, out)
        figures["cost"] = cost(metrics, teacher_pass)
        figures["peak_rss_mb"] = peaks
        print(
            f"\nDistillation epoch / (student epoch + teacher pass): {figures['cost']['distillation_cost_ratio']:.3f} "
            f"({figures['cost']['distillation_epoch_s']} s / ({figures['cost']['student_epoch_s']} s + "
            f"{figures['cost']['teacher_inference_pass_s']} s)); peak RSS per phase (MB): {peaks}"
        )
    notes = [
        "Each model is timed in turns with the others (the median of 20 rounds), so that the machine's drift "
        "affects them alike."
    ]
    # A demo folder written before the demo recorded its arguments: its epochs at least.
    settings = metrics["demo"].get("arguments") or {"epochs": metrics["demo"]["epochs"]}
    path = write_results(results_name, settings, figures, notes)
    print(f"Results: {path}")
    return path


if __name__ == "__main__":
    main()
