"""Was it worth it? Distillation against the same student trained without the teacher, over several seeds.

    python benchmarks/transfer_sets.py --teacher_dir demo-output/teacher --data_dir demo-output/data \
        [--seeds 3] [--augment 1] [--parts a,b] [--output_dir gain-output]

On the demo's tweets job (after `make demo`: its teacher and its train / validation / test / unlabeled CSV files):

- (a) only the labelled tweets: distillation on them plus `--augment N` augmented copies of each (a transfer set made
  from the training data itself, labelled by the teacher alone) against the no-teacher student, over `--seeds` seeds,
  through `run_distillation` with `--baseline --seeds N` (the paired test pools the seeds' disagreements);
- (b) the labelled tweets plus the demo's unlabelled tweets (no augmentation): the distilled students against the
  teacher (and against the same no-teacher students as (a): same labelled data, seeds and start);
- (c) the cost of `--augment`: its build time and size, and the time of a distillation epoch with it against one
  without it.

The teacher runs once per data set (`build_cache`, the code of `hf-distill cache`), so every seed's run reads its
outputs instead of running it. The augmented texts depend on the augmentation seed only, so one augmentation (and one
cache) serves all training seeds. `--max_train_samples` and `--epochs` make a small trial run.

Keeps its report in `<output_dir>/benchmark_gain.json` (parts run one at a time add to it) and writes it to
`benchmarks/results/transfer_sets.json` (`--results_name`). The no-teacher student's budget is `run_distillation`'s
(`MeasureArguments.baseline_budget`, recorded in each comparison's `budget`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from common import write_results
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

from hf_distill import DistillationConfig
from hf_distill.augment import build_transfer_set, settings_of
from hf_distill.cache import CacheArguments
from hf_distill.data import DataArguments, load_raw_datasets
from hf_distill.measure import MeasureArguments, compare_with_baseline
from hf_distill.run import StudentArguments, build_cache, run_distillation
from hf_distill.tasks import ExampleScores, get_task


@dataclass
class GainArguments:
    teacher_dir: str = field(default="demo-output/teacher", metadata={"help": "The fine-tuned teacher (the demo's)."})
    data_dir: str = field(
        default="demo-output/data", metadata={"help": "The demo's train/validation/test/unlabeled CSV files."}
    )
    output_dir: str = field(default="gain-output", metadata={"help": "Where everything is written."})
    parts: str = field(default="a,b", metadata={"help": "Which comparisons to run: a (augmented), b (unlabelled)."})
    seeds: int = field(default=3, metadata={"help": "Training seeds (seed, seed+1, ...)."})
    seed: int = field(default=0, metadata={"help": "The first training seed."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs of every student (over its training data)."})
    augment: int = field(default=1, metadata={"help": "Augmented copies of each labelled tweet in (a)."})
    augment_seed: int = field(default=0, metadata={"help": "The augmentation seed (one for all training seeds)."})
    max_length: int = field(default=64, metadata={"help": "Maximum tokens per tweet."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Fewer labelled tweets (trial runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Fewer test tweets (trial runs)."})
    student_layers: str = field(default="0,2,4", metadata={"help": "Teacher layers the student copies."})
    results_name: str = field(default="transfer_sets", metadata={"help": "Name of the results JSON (no extension)."})


def data_arguments(args: GainArguments, unlabeled: bool, augment: int) -> DataArguments:
    unlabeled_file = os.path.join(args.data_dir, "unlabeled.csv")
    if unlabeled and args.max_train_samples:  # a trial run: as few unlabelled tweets as labelled ones
        trimmed = os.path.join(args.output_dir, "unlabeled-trial.csv")
        pd.read_csv(unlabeled_file).head(args.max_train_samples).to_csv(trimmed, index=False)
        unlabeled_file = trimmed
    return DataArguments(
        train_file=os.path.join(args.data_dir, "train.csv"),
        validation_file=os.path.join(args.data_dir, "validation.csv"),
        test_file=os.path.join(args.data_dir, "test.csv"),
        unlabeled_file=unlabeled_file if unlabeled else None,
        text_column="text",
        max_length=args.max_length,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        augment=augment,
        augment_seed=args.augment_seed,
        # A folder of this run's own, so that the augmentation is timed from scratch and nothing there is deleted.
        augment_cache_dir=tempfile.mkdtemp(prefix="augment-cache-", dir=args.output_dir) if augment else None,
    )


def config(args: GainArguments, output_dir: str, cache_dir: str | None) -> DistillationConfig:
    """The demo's distillation recipe (KD 0.5 at T = 2, labels 0.5, cosine hidden states 1.0), reading the teacher's
    outputs from `cache_dir`."""
    return DistillationConfig(
        output_dir=output_dir,
        overwrite_output_dir=True,
        teacher_model_name_or_path=args.teacher_dir,
        teacher_cache=cache_dir,
        temperature=2.0,
        kd_weight=0.5,
        label_weight=0.5,
        hidden_weight=1.0,
        hidden_loss_type="cosine",
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.learning_rate,
        warmup_steps=0.06,
        weight_decay=0.01,
        seed=args.seed,
        logging_steps=50,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )


def check_test_set(args: GainArguments) -> dict:
    """The test set is the demo's held-out tweets: its size, and no test text among the training or unlabelled ones."""
    frames = {name: pd.read_csv(os.path.join(args.data_dir, f"{name}.csv")) for name in ("train", "test", "unlabeled")}
    test = set(frames["test"]["text"])
    facts = {
        "test_examples": len(frames["test"]),
        "distinct_test_texts": len(test),
        "test_texts_in_train": len(test & set(frames["train"]["text"])),
        "test_texts_in_unlabeled": len(test & set(frames["unlabeled"]["text"])),
    }
    print(f"Test set: {facts}")
    if facts["test_texts_in_train"] or facts["test_texts_in_unlabeled"]:
        raise SystemExit("test texts appear in the training data: the comparison would be inflated")
    return facts


def timed_cache(args, data_args, name: str) -> tuple[str, float, int]:
    folder = tempfile.mkdtemp(prefix=f"cache-{name}-", dir=args.output_dir)  # new: the build is timed from scratch
    start = time.perf_counter()
    built = build_cache(
        StudentArguments(student_layers=args.student_layers),
        data_args,
        config(args, os.path.join(args.output_dir, "unused"), None),
        CacheArguments(cache_dir=folder),
    )
    seconds = time.perf_counter() - start
    print(f"Teacher cache {name}: {len(built)} examples, {built.size_bytes() / 1e6:.1f} MB, {seconds:.1f} s")
    return folder, seconds, built.size_bytes()


def baseline_file(args: GainArguments) -> str:
    return os.path.join(args.output_dir, "baseline_correct_a.npy")


def per_epoch(metrics: dict, epochs: float) -> float:
    return metrics["training"]["train_runtime_s"] / epochs


def run_part(args, name: str, data_args, baseline: bool) -> tuple[dict, object]:
    cache_dir, cache_s, cache_bytes = timed_cache(args, data_args, name)
    output = os.path.join(args.output_dir, f"student-{name}")
    start = time.perf_counter()
    result = run_distillation(
        StudentArguments(student_layers=args.student_layers),
        data_args,
        config(args, output, cache_dir),
        MeasureArguments(measure_latency=False, baseline=baseline, seeds=args.seeds),
    )
    wall = time.perf_counter() - start
    shutil.rmtree(cache_dir, ignore_errors=True)  # hundreds of MB of hidden states
    metrics = result.metrics
    metrics["benchmark"] = {"cache_build_s": round(cache_s, 1), "cache_bytes": cache_bytes, "wall_s": round(wall, 1)}
    print(f"\n== part {name}: {result.summary}")
    return metrics, result


def main(argv=None) -> dict:
    (args,) = HfArgumentParser(GainArguments).parse_args_into_dataclasses(args=argv)
    os.makedirs(args.output_dir, exist_ok=True)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    report_path = os.path.join(args.output_dir, "benchmark_gain.json")
    report: dict = {}
    if os.path.isfile(report_path):  # an earlier part's figures, when the parts run one at a time
        with open(report_path) as handle:
            report = json.load(handle)
    report.update(settings=dataclasses.asdict(args), test_set=check_test_set(args))

    if "a" in parts:
        # (c) the augmentation alone, timed from scratch: the run below loads it from the cache.
        data_a = data_arguments(args, unlabeled=False, augment=args.augment)
        raw = load_raw_datasets(data_a)
        teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher_dir)
        tokenizer = AutoTokenizer.from_pretrained(args.teacher_dir)
        start = time.perf_counter()
        transfer = build_transfer_set(
            raw["train"],
            [raw["validation"], raw["test"]],
            ["text"],
            tokenizer,
            teacher.get_input_embeddings().weight,
            settings_of(data_a),
            data_a.augment_cache_dir,
        )
        build_s = time.perf_counter() - start
        walked = os.walk(data_a.augment_cache_dir)
        size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in walked for f in files)
        report["augment"] = {
            "copies": args.augment,
            "seed": args.augment_seed,
            "labelled_texts": len(raw["train"]),
            "augmented_texts": len(transfer),
            "build_s": round(build_s, 1),
            "bytes_on_disk": size,
            "examples": [{"original": raw["train"][i]["text"]} for i in range(3)],
        }
        print(f"Augmentation: {report['augment']}")
        metrics_a, result_a = run_part(args, "a", data_a, baseline=True)
        report["a"] = metrics_a
        # The no-teacher students' per-example correctness, for part b run later (`--parts b`).
        np.save(baseline_file(args), np.stack([s.correct for s in result_a.example_scores["baseline"]]))
    if "b" in parts:
        # --seeds 1 would skip the comparison path; the per-example scores come with --seeds >= 2 or --baseline.
        metrics_b, result_b = run_part(args, "b", data_arguments(args, unlabeled=True, augment=0), baseline=False)
        report["b"] = metrics_b
        seeds = metrics_b.get("seeds", {}).get("student") or [metrics_b["student"]["accuracy"]]
        teacher_accuracy = metrics_b["teacher"]["accuracy"]
        report["b"]["kept_share_of_teacher"] = statistics.fmean(seeds) / teacher_accuracy
        students = result_b.example_scores["student"]
        seeds_b = metrics_b["seeds"]["seeds"] if "seeds" in metrics_b else [args.seed]
        np.save(os.path.join(args.output_dir, "student_correct_b.npy"), np.stack([s.correct for s in students]))
        if os.path.isfile(baseline_file(args)):
            # The no-teacher students of (a) are (b)'s too: the same labelled tweets, seeds and starting weights. The
            # file holds (a)'s seeds 0, 1, ... in order: the baseline of seed s is its row s.
            task = get_task("text-classification")()
            saved = np.load(baseline_file(args))
            baselines = [ExampleScores("accuracy", correct=saved[seed]) for seed in seeds_b]
            report["b"]["comparison_with_a_baselines"] = compare_with_baseline(
                students, baselines, seeds_b, task.card_metrics[0], [({}, {})] * len(students)
            )

    summary = summarize(report, args)
    report["summary"] = summary
    with open(report_path, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    print("\n" + "\n".join(summary))
    figures = {key: value for key, value in report.items() if key != "settings"}
    print(f"Results: {write_results(args.results_name, report['settings'], figures)}")
    return report


def summarize(report: dict, args: GainArguments) -> list[str]:
    lines = []
    if "a" in report:
        a = report["a"]
        comparison, seeds = a["comparison"], a["comparison"]["per_seed"]
        mean = comparison["mean"]
        lines.append(
            f"(a) labelled tweets + {args.augment} augmented cop{'y' if args.augment == 1 else 'ies'} each, "
            f"{len(seeds)} seeds: distilled {mean['distilled']:.4f} vs no teacher {mean['baseline']:.4f}: "
            f"{comparison['verdict']}; per seed "
            + ", ".join(f"{row['difference'] * 100:+.2f}" for row in seeds)
            + f" points; pooled disagreements {comparison['pooled']['only_distilled_right']} vs "
            f"{comparison['pooled']['only_baseline_right']}; teacher {a['teacher']['accuracy']:.4f}"
        )
    if "b" in report:
        b = report["b"]
        seeds = b.get("seeds", {}).get("student") or [b["student"]["accuracy"]]
        lines.append(
            f"(b) labelled + unlabelled tweets, {len(seeds)} seeds: distilled "
            + ", ".join(f"{value:.4f}" for value in seeds)
            + f" (mean {statistics.fmean(seeds):.4f}), teacher {b['teacher']['accuracy']:.4f}: keeps "
            f"{b['kept_share_of_teacher']:.1%} of the teacher's accuracy"
        )
        if "comparison_with_a_baselines" in b:
            lines.append(f"    against the no-teacher students of (a): {b['comparison_with_a_baselines']['verdict']}")
    if "augment" in report and "a" in report:
        aug, a = report["augment"], report["a"]
        epochs = args.epochs
        # The no-teacher student's own epochs: with the default budget (as many steps as the distilled run) it goes
        # over its labelled tweets more often than the distilled run goes over its larger data.
        baseline_epochs = a["comparison"]["budget"]["baseline"]["epochs"]
        baseline_epoch = a["baseline"]["train_runtime_s"] / baseline_epochs
        lines.append(
            f"(c) --augment {aug['copies']}: {aug['augmented_texts']} texts from {aug['labelled_texts']}, built in "
            f"{aug['build_s']} s, {aug['bytes_on_disk'] / 1e6:.2f} MB on disk; distillation epoch with it "
            f"{per_epoch(a, epochs):.0f} s (teacher cache: {a['benchmark']['cache_build_s']} s once) vs a "
            f"labelled-only student epoch {baseline_epoch:.0f} s"
        )
        if "b" in report:
            lines[-1] += f"; labelled + unlabelled distillation epoch {per_epoch(report['b'], epochs):.0f} s"
    return lines


if __name__ == "__main__":
    main()
