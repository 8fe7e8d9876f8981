"""Can a latency figure be trusted? The same models measured in several runs, one after another, and two identical
models in one table, by the measurement every hf-distill figure comes from and by the one `compress` used before.

    python benchmarks/latency_repeat.py --teacher demo-output/teacher --student demo-output/student \
        [--runs 3] [--rounds 20] [--batch_sizes 1,32] [--output_dir latency-repeat]

The models: the teacher, the student, a copy of the student (the control: whatever separates it from the student is
the measurement's), and the student's int8 and ONNX int8 exports, made as `hf-distill compress` makes them. In each
run every model is measured by

- `rounds`: [`hf_distill.measure.measure_latencies`], interleaved rounds whose first model moves on by one each
  round, the same warm-up for all, onnxruntime's threads not spinning after a run;
- `fixed order`: the measurement compress used before: the models always in the same order (teacher first, the
  ONNX export last), two warm-up rounds, onnxruntime's threads left spinning (its default).

The figures: per method, run and batch size, each model's median and interquartile range, the student's speed-up
against the teacher and the copy's against the student (per-round ratios: median and interquartile range; for
`fixed order` the ratio of the medians, as it reported); across runs, the range of each speed-up.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForSequenceClassification, HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402

from hf_distill.export import OnnxModel, export_onnx, quantize_int8, quantize_onnx  # noqa: E402
from hf_distill.measure import latency_figures, measure_latencies, speedup_figures  # noqa: E402


@dataclass
class LatencyRepeatArguments:
    teacher: str = field(default="demo-output/teacher", metadata={"help": "The teacher's folder."})
    student: str = field(default="demo-output/student", metadata={"help": "The distilled student's folder."})
    runs: int = field(default=3, metadata={"help": "Runs of each method, one after another."})
    rounds: int = field(default=20, metadata={"help": "Timed rounds per batch size."})
    batch_sizes: str = field(default="1,32", metadata={"help": "Batch sizes, comma-separated."})
    sequence_length: int = field(default=64, metadata={"help": "Tokens per example."})
    output_dir: str = field(default="", metadata={"help": "Where to write latency_repeat.json (default: results)."})


def spinning_onnx(path: str) -> OnnxModel:
    """The ONNX model as compress ran it before: onnxruntime's default thread pool, spinning after each run."""
    import onnxruntime

    model = OnnxModel(path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    model.session = onnxruntime.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    return model


@torch.inference_mode()
def fixed_order(models: dict, batch_sizes, sequence_length: int, rounds: int, vocab_size: int) -> dict:
    """Per-round times (ms) as compress measured before: the same order every round, two warm-up rounds."""
    from hf_distill.architectures import input_names

    generator = torch.Generator().manual_seed(0)
    timings = {name: {} for name in models}
    for batch_size in batch_sizes:
        inputs = {
            "input_ids": torch.randint(5, vocab_size, (batch_size, sequence_length), generator=generator),
            "attention_mask": torch.ones(batch_size, sequence_length, dtype=torch.long),
            "token_type_ids": torch.zeros(batch_size, sequence_length, dtype=torch.long),
        }
        for name in models:
            timings[name][batch_size] = []
        for round_index in range(rounds + 2):
            for name, model in models.items():
                accepted = input_names(model) if isinstance(model, torch.nn.Module) else None
                feed = {k: v for k, v in inputs.items() if accepted is None or k in accepted}
                start = time.perf_counter()
                model(**feed)
                if round_index >= 2:
                    timings[name][batch_size].append((time.perf_counter() - start) * 1000)
    return timings


def summarise(timings: dict, paired: bool) -> dict:
    figures = {}
    for batch in next(iter(timings.values())):
        row = {name: latency_figures(by_batch[batch]) for name, by_batch in timings.items()}
        for name, reference in (("student", "teacher"), ("student copy", "student")):
            if paired:
                row[f"speedup {name} vs {reference}"] = speedup_figures(
                    timings[reference][batch], timings[name][batch]
                )
            else:  # what fixed order reported: the ratio of the two medians
                ratio = row[reference]["median_ms"] / row[name]["median_ms"]
                row[f"speedup {name} vs {reference}"] = {"median": round(ratio, 3), "iqr": None}
        figures[str(batch)] = row
    return figures


def main(args: LatencyRepeatArguments) -> dict:
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    student = AutoModelForSequenceClassification.from_pretrained(args.student).eval()
    scratch = tempfile.mkdtemp(prefix="latency-repeat-")
    export_onnx(student, os.path.join(scratch, "onnx"))
    quantize_onnx(os.path.join(scratch, "onnx"), os.path.join(scratch, "onnx-int8"))
    floats = {"teacher": teacher, "student": student, "student copy": copy.deepcopy(student)}
    int8 = quantize_int8(student)
    vocab = student.get_input_embeddings().num_embeddings
    runs = {"rounds": [], "fixed order": []}
    for run in range(args.runs):
        for method in runs:
            started = time.perf_counter()
            if method == "rounds":
                models = {**floats, "int8": int8, "onnx-int8": OnnxModel(os.path.join(scratch, "onnx-int8"))}
                timings = measure_latencies(models, batch_sizes, args.sequence_length, args.rounds, vocab_size=vocab)
            else:
                models = {**floats, "int8": int8, "onnx-int8": spinning_onnx(os.path.join(scratch, "onnx-int8"))}
                timings = fixed_order(models, batch_sizes, args.sequence_length, args.rounds, vocab)
            figures = summarise(timings, paired=method == "rounds")
            figures["seconds"] = round(time.perf_counter() - started, 1)
            runs[method].append(figures)
            print(f"run {run + 1}, {method}:")
            for batch in map(str, batch_sizes):
                row = figures[batch]
                cells = ", ".join(
                    f"{name} {facts['median_ms']:.1f} [{facts['iqr_ms'][0]:.1f}-{facts['iqr_ms'][1]:.1f}]"
                    for name, facts in row.items()
                    if "median_ms" in facts
                )
                speedup = row["speedup student vs teacher"]
                control = row["speedup student copy vs student"]
                print(
                    f"  batch {batch}: {cells}; student {speedup['median']:.2f}x {speedup['iqr'] or ''}, "
                    f"copy/student {control['median']:.2f}x {control['iqr'] or ''}"
                )
    summary = {}
    for method, results in runs.items():
        for batch in map(str, batch_sizes):
            for key in ("speedup student vs teacher", "speedup student copy vs student"):
                values = [r[batch][key]["median"] for r in results]
                summary.setdefault(method, {}).setdefault(batch, {})[key] = {
                    "per_run": values,
                    "range": [min(values), max(values)],
                    "max_over_min": round(max(values) / min(values), 3),
                }
            if method == "rounds":  # does each run's interval hold the other runs' medians?
                intervals = [r[batch]["speedup student vs teacher"]["iqr"] for r in results]
                medians = [r[batch]["speedup student vs teacher"]["median"] for r in results]
                summary[method][batch]["runs_within_each_others_iqr"] = all(
                    low <= m <= high for low, high in intervals for m in medians
                )
                summary[method][batch]["copy_iqr_holds_1"] = [
                    r[batch]["speedup student copy vs student"]["iqr"][0]
                    <= 1.0
                    <= r[batch]["speedup student copy vs student"]["iqr"][1]
                    for r in results
                ]
    for method, by_batch in summary.items():
        for batch, facts in by_batch.items():
            moved, control = facts["speedup student vs teacher"], facts["speedup student copy vs student"]
            print(
                f"{method}, batch {batch}: student speed-up over {args.runs} runs {moved['per_run']} "
                f"(max/min {moved['max_over_min']}); copy/student {control['per_run']}"
            )
    settings = {k: v for k, v in vars(args).items() if k != "output_dir"}
    settings["threads"] = torch.get_num_threads()
    path = write_results("latency_repeat", settings, {"runs": runs, "summary": summary}, folder=args.output_dir or "")
    print(f"Results: {path}")
    return summary


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(LatencyRepeatArguments).parse_args_into_dataclasses()
    main(arguments)
