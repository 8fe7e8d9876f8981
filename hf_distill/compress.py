"""From a distilled student to deployable variants, each measured against the float student and the teacher.

[`compress`] writes one folder per export of a student (`int8`, `onnx`, `onnx-int8`; see [`~hf_distill.export`]),
each with its weights, config, tokenizer, `compression_metrics.json`, the accuracy-against-latency plot and a model
card whose table shows every variant: the task's metrics, agreement with the float student and with the teacher,
parameters, size on disk, CPU latency at batch 1 and 32. An export that loses more than `max_accuracy_drop` points of
the task's headline metric is reported as such (a warning, a flag in the metrics and a line on the card), not hidden.
`hf-distill compress` runs [`run_compress`], which loads the student, teacher and evaluation data first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.trainer_pt_utils import nested_concat

from .export import (
    EXPORT_FORMATS,
    export_onnx,
    load_int8,
    load_onnx,
    quantize_int8,
    quantize_onnx,
    require_export_extra,
    save_int8,
)
from .log import get_logger
from .measure import METRICS_FILE, weights_size_bytes

__all__ = ["COMPRESSION_FILE", "TRADEOFF_PLOT", "CompressArguments", "compress", "run_compress"]

logger = get_logger(__name__)

COMPRESSION_FILE = "compression_metrics.json"
TRADEOFF_PLOT = "accuracy_latency.png"
_IGNORE = -100


@dataclass
class CompressArguments:
    """What `hf-distill compress` exports and how it measures the exports."""

    student_model_name_or_path: str = field(
        metadata={"help": "The distilled student: its folder (written by `hf-distill train`) or Hub id."}
    )
    output_dir: str = field(metadata={"help": "Where to write one folder per export (OUTPUT_DIR/int8, ...)."})
    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The teacher, for its row of the table and the agreement with it."}
    )
    formats: str = field(
        default="int8,onnx,onnx-int8",
        metadata={"help": f"Comma-separated exports among {', '.join(EXPORT_FORMATS)}."},
    )
    compare_with: str | None = field(
        default=None,
        metadata={"help": "Other float students to measure in the same table (comma-separated folders)."},
    )
    max_accuracy_drop: float = field(
        default=0.5,
        metadata={"help": "Tolerance, in points of the task's headline metric, of an export against the student."},
    )
    latency_batch_sizes: str = field(default="1,32", metadata={"help": "Batch sizes of the latency measurement."})
    latency_sequence_length: int = field(default=64, metadata={"help": "Sequence length of the latency measurement."})
    latency_rounds: int = field(default=20, metadata={"help": "Timed forward passes per model and batch size."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of the evaluation."})

    def __post_init__(self):
        self.formats = parse_formats(self.formats)
        if isinstance(self.latency_batch_sizes, str):
            try:
                self.latency_batch_sizes = [int(x) for x in self.latency_batch_sizes.split(",") if x.strip()]
            except ValueError:
                raise ValueError(
                    f"latency_batch_sizes must be comma-separated integers such as '1,32', got "
                    f"{self.latency_batch_sizes!r}"
                ) from None
        if self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0 (points), got {self.max_accuracy_drop}")


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """`"int8,onnx"` -> `["int8", "onnx"]`, refusing unknown names."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    names = [name for name in names if name]
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown or not names:
        raise ValueError(f"formats: unknown export {unknown or names!r}; choose among {', '.join(EXPORT_FORMATS)}")
    return names


# ---- measuring any variant: a callable `model(**inputs).logits` ---------------------------------------------------


@torch.inference_mode()
def predict(model, dataset, data_collator, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and labels of `model` (a transformers model or a loaded export) over a tokenised `dataset`, padded
    across batches with -100 as the Trainer does."""
    if hasattr(model, "eval"):
        model.eval()
    logits_all, labels_all = None, None
    columns = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    rows = dataset.select_columns(columns)
    for start in range(0, len(rows), batch_size):
        batch = data_collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        labels = batch.pop("labels", None)
        logits = model(**batch).logits.float().cpu()
        logits_all = nested_concat(logits_all, logits, padding_index=_IGNORE) if logits_all is not None else logits
        if labels is not None:
            labels_all = labels if labels_all is None else nested_concat(labels_all, labels, padding_index=_IGNORE)
    return logits_all.numpy(), None if labels_all is None else labels_all.numpy()


def agreement(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Share of items whose predicted class (argmax) is the reference's; token-level outputs count the labelled
    tokens (labels not -100) when the labels have their shape."""
    ours, theirs = logits.argmax(-1), reference.argmax(-1)
    if labels is not None and labels.shape == ours.shape:
        keep = labels != _IGNORE
        ours, theirs = ours[keep], theirs[keep]
    return float((ours == theirs).mean())


def task_metrics(task, logits: np.ndarray, labels: np.ndarray, teacher_config) -> dict[str, float]:
    from transformers import EvalPrediction

    evaluation = task.evaluation(None, teacher_config)
    predictions = logits
    if evaluation.preprocess_logits_for_metrics is not None:
        predictions = evaluation.preprocess_logits_for_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
        predictions = predictions.numpy() if isinstance(predictions, torch.Tensor) else predictions
    figures = evaluation.compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
    return {k: float(v) for k, v in figures.items()}


@torch.inference_mode()
def measure_latencies(
    models: dict[str, Callable],
    vocab_size: int,
    batch_sizes: Sequence[int] = (1, 32),
    sequence_length: int = 64,
    rounds: int = 20,
) -> dict[str, dict[int, float]]:
    """Median time (ms) of one forward pass of each model on random token ids, per batch size; the models take turns
    (two warm-up rounds first), so that the machine's drift is spread over all of them."""
    result: dict[str, dict[int, float]] = {name: {} for name in models}
    generator = torch.Generator().manual_seed(0)
    for batch_size in batch_sizes:
        inputs = {
            "input_ids": torch.randint(5, vocab_size, (batch_size, sequence_length), generator=generator),
            "attention_mask": torch.ones(batch_size, sequence_length, dtype=torch.long),
            "token_type_ids": torch.zeros(batch_size, sequence_length, dtype=torch.long),
        }
        timings: dict[str, list[float]] = {name: [] for name in models}
        for round_index in range(rounds + 2):
            for name, model in models.items():
                accepted = _accepted_inputs(model)
                feed = {k: v for k, v in inputs.items() if accepted is None or k in accepted}
                start = time.perf_counter()
                model(**feed)
                if round_index >= 2:
                    timings[name].append((time.perf_counter() - start) * 1000)
        for name, values in timings.items():
            result[name][batch_size] = round(statistics.median(values), 2)
    return result


def _accepted_inputs(model) -> set[str] | None:
    if isinstance(model, torch.nn.Module):
        from .modeling import input_names

        return input_names(model)
    return None  # an ONNX model fills in what it needs


# ---- the variants -------------------------------------------------------------------------------------------------


def _usage_code(fmt: str, model_ref: str, text: str, labelled: bool) -> str:
    loader = "load_int8" if fmt == "int8" else "load_onnx"
    folder = f'"{model_ref}"'
    lines = []
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model_ref) and not os.path.exists(model_ref):
        lines.append("from huggingface_hub import snapshot_download")
        folder = f'snapshot_download("{model_ref}")'
    lines += [
        "from transformers import AutoTokenizer",
        "",
        f"from hf_distill.export import {loader}",
        "",
        f"folder = {folder}",
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        f"model = {loader}(folder)",
        f'logits = model(**tokenizer([{text!r}], return_tensors="pt")).logits',
        "print(model.config.id2label[int(logits.argmax(-1)[0])])" if labelled else "print(logits.argmax(-1))",
    ]
    return "\n".join(lines)


def _example_text(task) -> str:
    call = (task.usage_example or ("", ""))[1] if task is not None else ""
    match = re.search(r"\"([^\"]+)\"", call)
    return match.group(1) if match else "Hello world"


def _write_variant(fmt: str, student: PreTrainedModel, folder: str, onnx_float: str | None) -> str:
    """Writes one export into `folder`; returns the path of its weights file."""
    if fmt == "int8":
        return save_int8(quantize_int8(student), folder)
    if fmt == "onnx":
        return export_onnx(student, folder)
    source = onnx_float or export_onnx(student, os.path.join(folder, "_float"))
    path = quantize_onnx(source, folder)
    shutil.rmtree(os.path.join(folder, "_float"), ignore_errors=True)
    return path


def _load_variant(fmt: str, folder: str):
    return load_int8(folder) if fmt == "int8" else load_onnx(folder)


def compress(
    student: PreTrainedModel | str,
    output_dir: str,
    eval_dataset,
    data_collator,
    *,
    task=None,
    tokenizer=None,
    teacher: PreTrainedModel | str | None = None,
    formats: Sequence[str] = EXPORT_FORMATS,
    compare_with: Sequence[str | PreTrainedModel] = (),
    max_accuracy_drop: float = 0.5,
    latency_batch_sizes: Sequence[int] = (1, 32),
    latency_sequence_length: int = 64,
    latency_rounds: int = 20,
    eval_batch_size: int = 64,
    dataset_description: dict | None = None,
) -> dict:
    """Exports `student` in each of `formats` under `output_dir/<format>/`, measures every variant against the float
    student and the teacher on `eval_dataset`, and writes the metrics, the plot and a card into each folder.

    Args:
        student: the distilled student, or its folder (whose `distillation_metrics.json`, when there is one, gives
            the card its training facts).
        output_dir (`str`): the parent folder; the variant folders must not exist yet (nothing is overwritten).
        eval_dataset: the tokenised evaluation split (with labels).
        data_collator: its batch maker.
        task: the student's [`~hf_distill.tasks.Task`] (default: the one its head names).
        tokenizer: saved into each variant folder (default: the student folder's).
        teacher: the teacher (a model or folder), for its row and the agreement with it.
        formats: exports among `int8`, `onnx`, `onnx-int8`.
        compare_with: other float students (models or folders) measured in the same table (e.g. an unpruned one).
        max_accuracy_drop (`float`): points of the headline metric an export may lose against the student.
        latency_batch_sizes: the batch sizes of the latency measurement.
        latency_sequence_length: its sequence length.
        latency_rounds: its rounds (the models take turns in each).
        eval_batch_size (`int`): the evaluation's batch size.
        dataset_description (`dict`, *optional*): what the card says about the evaluation data.

    Returns:
        `dict`: the metrics (also written as `output_dir/compression_metrics.json`): one entry per model under
        `models`, the headline metric, the tolerance and each export's verdict.
    """
    from .outputs import refuse_teacher_folder
    from .teacher import load_model

    formats = parse_formats(formats)
    if any(fmt.startswith("onnx") for fmt in formats):
        require_export_extra(f"the {', '.join(f for f in formats if f.startswith('onnx'))} export")
    student_dir = student if isinstance(student, (str, os.PathLike)) else None
    protected = [str(p) for p in (student_dir, teacher if isinstance(teacher, str) else None) if p]
    refuse_teacher_folder(Path(output_dir), protected)
    for fmt in formats:
        folder = Path(output_dir) / fmt
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"{folder} already exists and is not empty: remove it or choose another output_dir")
    if student_dir is not None:
        student = load_model(student_dir, role="student")
    if isinstance(teacher, (str, os.PathLike)):
        teacher_dir, teacher = str(teacher), load_model(teacher, student)
    else:
        teacher_dir = None
    if task is None:
        from .tasks import task_for

        task = task_for(student)
    if tokenizer is None and student_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(student_dir)
    student = student.to("cpu").eval()

    headline = task.card_metrics[0] if task.card_metrics else None
    teacher_config = (teacher or student).config
    models: dict[str, dict] = {}
    runners: dict[str, Callable] = {}

    def measure(name, model):
        logits, labels = predict(model, eval_dataset, data_collator, eval_batch_size)
        figures = task_metrics(task, logits, labels, teacher_config) if labels is not None else {}
        runners[name] = model
        models[name] = figures
        return logits, labels

    teacher_logits = None
    if teacher is not None:
        teacher = teacher.to("cpu").eval()
        teacher_logits, _ = measure("teacher", teacher)
        models["teacher"].update(parameters=teacher.num_parameters(), kind="float32 PyTorch", role="teacher")
        _describe_shape(models["teacher"], teacher)
        if teacher_dir and os.path.isdir(teacher_dir):
            models["teacher"]["size_bytes"] = weights_size_bytes(teacher_dir)
    student_logits, labels = measure("student", student)
    models["student"].update(parameters=student.num_parameters(), kind="float32 PyTorch", role="student")
    if student_dir is not None:
        models["student"]["size_bytes"] = weights_size_bytes(str(student_dir))
    _describe_shape(models["student"], student)
    for index, other in enumerate(compare_with):
        other_dir = other if isinstance(other, (str, os.PathLike)) else None
        other_model = load_model(other, student) if other_dir is not None else other
        name = Path(other_dir).name if other_dir is not None else f"compared_{index}"
        logits, _ = measure(name, other_model.to("cpu").eval())
        models[name].update(parameters=other_model.num_parameters(), kind="float32 PyTorch", role="compared")
        if other_dir is not None:
            models[name]["size_bytes"] = weights_size_bytes(str(other_dir))
        _describe_shape(models[name], other_model)
        models[name]["student_agreement"] = agreement(logits, student_logits, labels)
        if teacher_logits is not None:
            models[name]["teacher_agreement"] = agreement(logits, teacher_logits, labels)
    if teacher_logits is not None:
        models["student"]["teacher_agreement"] = agreement(student_logits, teacher_logits, labels)

    onnx_float = None
    for fmt in formats:
        folder = os.path.join(output_dir, fmt)
        started = time.perf_counter()
        weights = _write_variant(fmt, student, folder, onnx_float)
        if fmt == "onnx":
            onnx_float = weights
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        variant = _load_variant(fmt, folder)
        logits, _ = measure(fmt, variant)
        facts = models[fmt]
        facts.update(
            parameters=student.num_parameters(),
            kind={"int8": "int8 PyTorch (dynamic)", "onnx": "float32 ONNX", "onnx-int8": "int8 ONNX (dynamic)"}[fmt],
            role="export",
            size_bytes=os.path.getsize(weights),
            export_seconds=round(time.perf_counter() - started, 1),
            student_agreement=agreement(logits, student_logits, labels),
        )
        _describe_shape(facts, student)
        if teacher_logits is not None:
            facts["teacher_agreement"] = agreement(logits, teacher_logits, labels)
        if headline is not None and headline.key in facts and headline.key in models["student"]:
            drop = models["student"][headline.key] - facts[headline.key]
            drop = drop if headline.higher_is_better else -drop
            facts["drop_points"] = round(drop * (100 if headline.percent else 1), 3)
            facts["within_tolerance"] = facts["drop_points"] <= max_accuracy_drop
            if not facts["within_tolerance"]:
                logger.warning(
                    f"The {fmt} export loses {facts['drop_points']:.2f} points of {headline.label} against the float "
                    f"student, more than the tolerance of {max_accuracy_drop}: it is written and reported as such"
                )

    vocab = student.get_input_embeddings().num_embeddings
    latencies = measure_latencies(runners, vocab, latency_batch_sizes, latency_sequence_length, latency_rounds)
    for name, by_batch in latencies.items():
        models[name]["latency_ms"] = {str(b): ms for b, ms in by_batch.items()}
    metrics = {
        "task": task.pipeline_tag,
        "headline_metric": None
        if headline is None
        else {"key": headline.key, "label": headline.label, "percent": headline.percent},
        "max_accuracy_drop_points": max_accuracy_drop,
        "dataset": {**(dataset_description or {}), "eval_examples": len(eval_dataset)},
        "latency": {
            "batch_sizes": list(latency_batch_sizes),
            "sequence_length": latency_sequence_length,
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "method": f"median of {latency_rounds} forward passes per model, the models taking turns",
        },
        "models": models,
    }
    os.makedirs(output_dir, exist_ok=True)
    _write_json(os.path.join(output_dir, COMPRESSION_FILE), metrics)
    plot = write_tradeoff_plot(metrics, os.path.join(output_dir, TRADEOFF_PLOT))
    for fmt in formats:
        folder = os.path.join(output_dir, fmt)
        _write_json(os.path.join(folder, COMPRESSION_FILE), {**metrics, "variant": fmt})
        if plot is not None:
            shutil.copy(plot, os.path.join(folder, TRADEOFF_PLOT))
        _write_card(folder, fmt, metrics, student_dir, task, _example_text(task))
    return metrics


def _describe_shape(facts: dict, model) -> None:
    config = model.config
    facts.update(
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=getattr(config, "num_attention_heads", None),
        intermediate_size=getattr(config, "intermediate_size", None),
    )


def _write_json(path: str, value: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(value, handle, indent=2)


def _write_card(folder: str, fmt: str, compression: dict, student_dir, task, text: str) -> None:
    """The variant's card: the student's card facts (its `distillation_metrics.json`), with the student's figures
    replaced by this variant's, and the compression table, plot and usage snippet."""
    from .model_card import build_model_card

    metrics = {}
    if student_dir is not None and os.path.isfile(os.path.join(student_dir, METRICS_FILE)):
        metrics = json.loads(Path(student_dir, METRICS_FILE).read_text())
    models = compression["models"]
    batch = str(metrics.get("latency", {}).get("batch_size") or max(compression["latency"]["batch_sizes"]))
    for role, name in (("student", fmt), ("teacher", "teacher")):
        if name not in models:
            continue
        facts = dict(metrics.get(role, {}))  # the same evaluation data, so this variant's figures replace them
        facts.update({key: value for key, value in models[name].items() if key != "latency_ms"})
        if batch in models[name].get("latency_ms", {}):
            facts["latency_ms_per_batch"] = models[name]["latency_ms"][batch]
        metrics[role] = facts
    metrics.setdefault("latency", {k: v for k, v in compression["latency"].items() if k != "batch_sizes"})
    metrics["latency"]["batch_size"] = int(batch)
    metrics["task"] = metrics.get("task") or compression["task"]
    metrics["dataset"] = metrics.get("dataset") or compression.get("dataset", {})
    metrics["compression"] = {
        **compression,
        "variant": fmt,
        "usage": _usage_code(fmt, folder, text, task.labelled_outputs),
        "plot": TRADEOFF_PLOT if os.path.isfile(os.path.join(folder, TRADEOFF_PLOT)) else None,
    }
    card = build_model_card(folder, metrics, task=task)
    card.save(os.path.join(folder, "README.md"))


def write_tradeoff_plot(metrics: dict, path: str) -> str | None:
    """Plots each model's headline metric against its CPU latency at the largest measured batch; returns the path, or
    None when matplotlib (the `demo` extra) is missing or nothing was measured."""
    headline = metrics.get("headline_metric")
    if not headline:
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    batch = str(max(metrics["latency"]["batch_sizes"]))
    scale = 100 if headline["percent"] else 1
    points = [
        (name, facts["latency_ms"][batch], facts[headline["key"]] * scale)
        for name, facts in metrics["models"].items()
        if headline["key"] in facts and batch in facts.get("latency_ms", {})
    ]
    if not points:
        return None
    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.subplots()
    for index, (name, latency, value) in enumerate(points):
        axes.scatter(latency, value, s=60)
        # labels above and below in turn: variants of one model sit close together
        axes.annotate(name, (latency, value), textcoords="offset points", xytext=(6, 5 if index % 2 else -13))
    axes.set_xlabel(f"CPU latency per batch of {batch}, {metrics['latency']['sequence_length']} tokens (ms)")
    axes.set_ylabel(headline["label"] + (" (%)" if headline["percent"] else ""))
    axes.set_title("Accuracy against latency")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


# ---- the command ----------------------------------------------------------------------------------------------------


def run_compress(args: CompressArguments, data_args, task_args=()) -> dict:
    """What `hf-distill compress` runs: loads the student, the teacher and the evaluation split (the test file, else
    the validation data, tokenised as training did), then [`compress`]."""
    from .data import load_raw_datasets
    from .run import _own_arguments, describe_data
    from .tasks import task_for
    from .teacher import load_model, load_tokenizer

    for fmt in args.formats:
        folder = Path(args.output_dir) / fmt
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"{folder} already exists and is not empty: remove it or choose another --output_dir")
    student = load_model(args.student_model_name_or_path, role="student")
    task = task_for(student)
    tokenizer = load_tokenizer(args.student_model_name_or_path, student)
    own = _own_arguments(task, task_args)
    raw = load_raw_datasets(data_args)
    datasets = task.prepare_datasets(raw, tokenizer, data_args, own, student.config)
    split = next((name for name in ("test", "validation") if name in datasets), None)
    if split is None:
        raise ValueError("compress needs evaluation data: give --test_file or --validation_file")
    compare = [p for p in (args.compare_with or "").split(",") if p.strip()]
    return compress(
        args.student_model_name_or_path,  # the folder: its size on disk and its metrics file go on the cards
        args.output_dir,
        datasets[split],
        task.data_collator(tokenizer, own),
        task=task,
        tokenizer=tokenizer,
        teacher=args.teacher_model_name_or_path,
        formats=args.formats,
        compare_with=compare,
        max_accuracy_drop=args.max_accuracy_drop,
        latency_batch_sizes=args.latency_batch_sizes,
        latency_sequence_length=args.latency_sequence_length,
        latency_rounds=args.latency_rounds,
        eval_batch_size=args.eval_batch_size,
        dataset_description=describe_data(data_args, datasets, split),
    )


def format_table(metrics: dict) -> str:
    """The comparison as a plain-text table (what the command prints)."""
    headline = metrics.get("headline_metric") or {}
    key, scale = headline.get("key"), 100 if headline.get("percent") else 1
    batches = [str(b) for b in metrics["latency"]["batch_sizes"]]
    header = (
        f"{'model':<24}{headline.get('label', 'metric'):>10}{'vs student':>11}{'vs teacher':>11}{'params':>9}"
        f"{'MB':>8}" + "".join(f"{'ms@' + b:>10}" for b in batches)
    )
    lines = [header]
    for name, facts in metrics["models"].items():
        value = facts.get(key)
        cells = [
            f"{name:<24}",
            f"{value * scale:>10.2f}" if isinstance(value, float) else f"{'-':>10}",
            f"{facts['student_agreement'] * 100:>10.2f}%" if "student_agreement" in facts else f"{'-':>11}",
            f"{facts['teacher_agreement'] * 100:>10.2f}%" if "teacher_agreement" in facts else f"{'-':>11}",
            f"{facts.get('parameters', 0) / 1e6:>8.1f}M",
            f"{facts.get('size_bytes', 0) / 1e6:>8.1f}",
            *(f"{facts.get('latency_ms', {}).get(b, float('nan')):>10.1f}" for b in batches),
        ]
        if facts.get("within_tolerance") is False:
            cells.append(f"  EXCEEDS the {metrics['max_accuracy_drop_points']}-point tolerance")
        lines.append("".join(cells))
    return "\n".join(lines)
