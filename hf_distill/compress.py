"""From a distilled student to deployable variants, each measured against the float student and the teacher.

[`compress`] writes one folder per export of a student (`int8`, `onnx`, `onnx-int8`; see [`~hf_distill.export`]),
each with its weights, config, tokenizer, `compression_metrics.json`, the accuracy-against-latency plot and a model
card whose table shows every variant: the task's metrics, agreement with the float student and with the teacher,
parameters, size on disk, CPU latency at batch 1 and 32. An export that loses more than `max_accuracy_drop` points of
the task's headline metric is reported as such (a warning, a flag in the metrics and a line on the card), not hidden.
`hf-distill compress` runs [`run_compress`], which loads the student, teacher and evaluation data first.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel

from .cache import weights_fingerprint
from .data import load_raw_datasets
from .export import (
    EXPORT_FORMATS,
    INT8_FILE,
    ONNX_FILE,
    export_onnx,
    load_int8,
    load_onnx,
    quantize_int8,
    quantize_onnx,
    require_export_extra,
    save_int8,
)
from .log import get_logger
from .measure import (
    LATENCY_METHOD,
    agreement,
    latency_figures,
    measure_latencies,
    predict,
    speedup_figures,
    task_metrics,
    weights_size_bytes,
)
from .model_card import METRICS_FILE, build_model_card
from .output_folders import OVERWRITE_FLAG, refuse_model_folder, staged_folder
from .run import _own_arguments, describe_data
from .tasks import task_for
from .teacher import has_tokenizer_files, load_model, load_tokenizer

__all__ = ["COMPRESSION_FILE", "TRADEOFF_PLOT", "CompressArguments", "compress", "run_compress"]

logger = get_logger(__name__)

COMPRESSION_FILE = "compression_metrics.json"
TRADEOFF_PLOT = "accuracy_latency.png"


@dataclass
class CompressArguments:
    """What `hf-distill compress` exports and how it measures the exports: the settings of [`compress`].

    In Python, `student_model_name_or_path` may be left out when the student is passed to [`compress`] as a model
    object, and `teacher_model_name_or_path` when the teacher is; `compare_with` may also be a list of folders.
    """

    # Both are required flags. In Python the student may instead be a model passed to `compress`, so these two have
    # a default of None (a field without one cannot follow it) and `__post_init__` requires `output_dir`.
    student_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The distilled student: its folder (written by `hf-distill train`) or Hub id.",
            "required": True,
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where to write one folder per export (OUTPUT_DIR/int8, ...).", "required": True},
    )
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
    latency_rounds: int = field(
        default=20,
        metadata={
            "help": "Timed rounds per batch size: each round runs every model once, the models taking turns; the "
            "table gives the median and interquartile range over the rounds."
        },
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of the evaluation."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace what output_dir already holds under the names compress writes (OUTPUT_DIR/<format>/, "
            f"{COMPRESSION_FILE}, {TRADEOFF_PLOT}) when an earlier run or someone else wrote it. Without it such a "
            "folder is refused before anything is written; exports of other formats that an earlier compress wrote "
            "there are kept and measured again in the new table."
        },
    )

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError(
                f"output_dir must name the folder the exports are written into (--output_dir), got {self.output_dir!r}"
            )
        self.formats = parse_formats(self.formats)
        self.compare_with = parse_folders(self.compare_with)
        if isinstance(self.latency_batch_sizes, str):
            try:
                self.latency_batch_sizes = [int(x) for x in self.latency_batch_sizes.split(",") if x.strip()]
            except ValueError:
                raise ValueError(
                    "latency_batch_sizes must be comma-separated whole numbers >= 1 such as '1,32', got "
                    f"{self.latency_batch_sizes!r}"
                ) from None
        check_settings(
            self.max_accuracy_drop,
            self.latency_rounds,
            self.latency_sequence_length,
            self.eval_batch_size,
            self.latency_batch_sizes,
        )


def check_settings(
    max_accuracy_drop: float, rounds: int, sequence_length: int, eval_batch_size: int, batch_sizes: Sequence[int]
) -> None:
    """Refuses, before anything is loaded, a tolerance that is not a number >= 0 and measurement sizes below 1."""
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(
            f"latency_batch_sizes must be whole numbers >= 1 such as '1,32' (--latency_batch_sizes), got "
            f"{list(batch_sizes) if batch_sizes is not None else None!r}"
        )
    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, (int, float)):
        raise ValueError(f"max_accuracy_drop must be a number of points >= 0 such as 0.5, got {max_accuracy_drop!r}")
    if not math.isfinite(max_accuracy_drop) or max_accuracy_drop < 0:
        raise ValueError(
            f"max_accuracy_drop must be a finite number of points >= 0 such as 0.5 (--max_accuracy_drop), got "
            f"{max_accuracy_drop}"
        )
    for name, value in (
        ("latency_rounds", rounds),
        ("latency_sequence_length", sequence_length),
        ("eval_batch_size", eval_batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1 (--{name}), got {value!r}")


def parse_folders(folders: str | Sequence[str] | None) -> list[str]:
    """`"a,b"` (or `["a", "b"]`) -> `["a", "b"]`: the folders of `compare_with`, refusing model objects (which go to
    `compress`'s own `compare_with`)."""
    if isinstance(folders, (str, os.PathLike)):
        folders = str(folders).split(",")
    folders = list(folders or ())
    if any(not isinstance(path, (str, os.PathLike)) for path in folders):
        raise ValueError(
            "compare_with holds the folders of other float students (comma-separated, or a list of paths); pass "
            "model objects to compress(..., compare_with=[model, ...]) instead"
        )
    return [str(path).strip() for path in folders if str(path).strip()]


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """`"int8,onnx"` -> `["int8", "onnx"]`, refusing unknown names."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    names = [name for name in names if name]
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown or not names:
        raise ValueError(f"formats: unknown export {unknown or names!r}; choose among {', '.join(EXPORT_FORMATS)}")
    return names


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


def _write_variant(fmt: str, student: PreTrainedModel, folder: Path, onnx_float: str | None) -> str:
    """Writes one export into `folder` (a new folder); returns the path of its weights file."""
    if fmt == "int8":
        return save_int8(quantize_int8(student), folder)
    if fmt == "onnx":
        return export_onnx(student, folder)
    if onnx_float is not None:
        return quantize_onnx(onnx_float, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".onnx-float-") as scratch:
        return quantize_onnx(export_onnx(student, Path(scratch) / "onnx"), folder)


def _load_variant(fmt: str, folder: str | Path):
    return load_int8(folder) if fmt == "int8" else load_onnx(folder)


def compress(
    student: PreTrainedModel | None,
    args: CompressArguments,
    eval_dataset,
    data_collator,
    *,
    task=None,
    tokenizer=None,
    teacher: PreTrainedModel | None = None,
    compare_with: Sequence[PreTrainedModel] = (),
    dataset_description: dict | None = None,
) -> dict:
    """Exports the student in each of `args.formats` under `args.output_dir/<format>/`, measures every variant
    against the float student and the teacher on `eval_dataset`, and writes the metrics, the plot and a card into
    each folder.

    Nothing is lost and nothing is seen half-done: everything is checked before anything is written (the output
    folder, the models, the settings), the exports are built and measured in a staging folder, and moved into
    `output_dir` only once all of them are complete. An interrupted or failed run leaves `output_dir` as it was.

    Args:
        student (`PreTrainedModel`, *optional*): the distilled student as a model object; None to load it from
            `args.student_model_name_or_path` (its folder, whose `distillation_metrics.json`, when there is one,
            gives the card its training facts, and whose size on disk is measured). Give one of the two.
        args ([`CompressArguments`]): the settings, the fields of `hf-distill compress`'s flags:
            `student_model_name_or_path`; `output_dir`, the parent folder, which must not be (or be inside) the
            student's, the teacher's or a compared model's folder, and may hold other files: only `<format>/`,
            `compression_metrics.json` and `accuracy_latency.png` are written, and any of these that is already
            there is refused unless `overwrite_output_dir`, except the table and plot of an earlier `compress` of the
            same student, which are extended (the exports of other formats it wrote are measured again with the new
            ones, in one table); `teacher_model_name_or_path`, the teacher's folder, for its row and the agreement
            with it; `formats`, among `int8`, `onnx`, `onnx-int8`; `compare_with`, folders of other float students
            measured in the same table (e.g. an unpruned one); `max_accuracy_drop`, the points of the headline
            metric an export may lose against the student; `latency_batch_sizes`, `latency_sequence_length` and
            `latency_rounds`, the latency measurement's ([`~hf_distill.measure.measure_latencies`]: interleaved
            rounds, the models taking turns in each; median and interquartile range); `eval_batch_size`, the
            evaluation's batch size; `overwrite_output_dir`.
        eval_dataset: the tokenised evaluation split (with labels).
        data_collator: its batch maker.
        task: the student's [`~hf_distill.tasks.Task`] (default: the one its head names).
        tokenizer: saved into each variant folder (default: the student folder's).
        teacher (`PreTrainedModel`, *optional*): the teacher as a model object, instead of
            `args.teacher_model_name_or_path`.
        compare_with (`Sequence[PreTrainedModel]`): other float students as model objects, measured in the same table
            after the folders of `args.compare_with`.
        dataset_description (`dict`, *optional*): what the card says about the evaluation data.

    Returns:
        `dict`: the metrics (also written as `output_dir/compression_metrics.json`): one entry per model under
        `models`, the headline metric, the tolerance and each export's verdict.

    Raises:
        `TypeError`: `args` is not a [`CompressArguments`].
        `ValueError`: a setting out of range (naming it), the student or the teacher given twice or not at all, or an
            output folder that compress would not write into (naming what it holds and the fix).
    """
    if not isinstance(args, CompressArguments):
        raise TypeError(
            f"compress takes its settings as a CompressArguments, got {type(args).__name__}: "
            "compress(student, CompressArguments(output_dir=..., ...), eval_dataset, data_collator)"
        )
    student_dir, teacher_dir = _one_source(student, teacher, args)
    # Checked again: the fields may have been changed since the arguments were made.
    formats = parse_formats(args.formats)
    check_settings(
        args.max_accuracy_drop,
        args.latency_rounds,
        args.latency_sequence_length,
        args.eval_batch_size,
        args.latency_batch_sizes,
    )
    if any(fmt.startswith("onnx") for fmt in formats):
        require_export_extra(f"the {', '.join(f for f in formats if f.startswith('onnx'))} export")
    if any(isinstance(other, (str, os.PathLike)) for other in compare_with):
        raise TypeError(
            "the folders of compared students go in CompressArguments(compare_with=...); compress's compare_with "
            "argument takes model objects"
        )
    compare_with = [*parse_folders(args.compare_with), *compare_with]
    for role, folders in (
        ("student", [student_dir]),
        ("teacher", [teacher_dir]),
        ("compared model", [str(o) for o in compare_with if isinstance(o, (str, os.PathLike))]),
    ):
        refuse_model_folder(args.output_dir, folders, role=role)
    earlier = read_earlier_run(args.output_dir, formats, args.overwrite_output_dir)
    if student_dir is not None:
        student = load_model(student_dir, role="student")
    if teacher_dir is not None:
        teacher = load_model(teacher_dir, student)
    if task is None:
        task = task_for(student)
    check_compressible(task, student)
    headline = task.card_metrics[0] if task.card_metrics else None
    if headline is not None and headline.percent and args.max_accuracy_drop > 100:
        raise ValueError(
            f"max_accuracy_drop is in points of {headline.label} (0 to 100), got {args.max_accuracy_drop}: give a "
            "tolerance such as 0.5 (--max_accuracy_drop)"
        )
    if tokenizer is None and student_dir is not None:
        tokenizer = load_student_tokenizer(student_dir, student)
    student = student.to("cpu").eval()
    fingerprint = weights_fingerprint(student)
    carried = earlier.carried(fingerprint, args.overwrite_output_dir) if earlier is not None else []

    teacher_config = (teacher or student).config
    models: dict[str, dict] = {}
    runners: dict[str, Callable] = {}

    def measure(name, model):
        logits, labels = predict(model, eval_dataset, data_collator, args.eval_batch_size)
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

    def measure_export(fmt: str, folder: Path, weights: str, seconds: float | None) -> None:
        logits, _ = measure(fmt, _load_variant(fmt, folder))
        facts = models[fmt]
        facts.update(
            parameters=student.num_parameters(),
            kind=_EXPORT_KINDS[fmt],
            role="export",
            size_bytes=os.path.getsize(weights),
            student_agreement=agreement(logits, student_logits, labels),
        )
        if seconds is not None:
            facts["export_seconds"] = seconds
        _describe_shape(facts, student)
        if teacher_logits is not None:
            facts["teacher_agreement"] = agreement(logits, teacher_logits, labels)
        if headline is not None and headline.key in facts and headline.key in models["student"]:
            drop = models["student"][headline.key] - facts[headline.key]
            drop = drop if headline.higher_is_better else -drop
            facts["drop_points"] = round(drop * (100 if headline.percent else 1), 3)
            facts["within_tolerance"] = facts["drop_points"] <= args.max_accuracy_drop
            if not facts["within_tolerance"]:
                logger.warning(
                    f"The {fmt} export loses {facts['drop_points']:.2f} points of {headline.label} against the float "
                    f"student, more than the tolerance of {args.max_accuracy_drop}: it is written and reported as such"
                )

    with staged_folder(args.output_dir, replace=earlier.replaceable if earlier else (), what="output_dir") as stage:
        # Exports of other formats that an earlier compress of this student wrote here: measured again, in this
        # table (their folders are left as they are).
        for fmt in carried:
            folder = Path(args.output_dir) / fmt
            measure_export(fmt, folder, str(folder / _WEIGHTS_FILE[fmt]), earlier.export_seconds(fmt))
        onnx_float = None
        for fmt in formats:
            folder = stage / fmt
            started = time.perf_counter()
            try:
                weights = _write_variant(fmt, student, folder, onnx_float)
            except (RuntimeError, TypeError, NotImplementedError, torch.jit.Error) as error:
                raise RuntimeError(
                    f"the {fmt} export of this {type(student).__name__} failed ({error.__class__.__name__}: "
                    f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); nothing was written to "
                    f"{args.output_dir}. Leave out --formats {fmt}"
                ) from error
            if fmt == "onnx":
                onnx_float = weights
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            measure_export(fmt, folder, weights, round(time.perf_counter() - started, 1))
        models = _in_order(models, carried, formats)

        vocab = student.get_input_embeddings().num_embeddings
        runners = {name: runners[name] for name in models}
        timings = measure_latencies(
            runners, args.latency_batch_sizes, args.latency_sequence_length, args.latency_rounds, vocab_size=vocab
        )
        for name, by_batch in timings.items():
            facts = models[name]
            figures = {str(b): latency_figures(values) for b, values in by_batch.items()}
            facts["latency_ms"] = {b: f["median_ms"] for b, f in figures.items()}
            facts["latency_iqr_ms"] = {b: f["iqr_ms"] for b, f in figures.items()}
            if "teacher" in timings and name != "teacher":
                facts["speedup"] = {
                    str(b): speedup_figures(timings["teacher"][b], values) for b, values in by_batch.items()
                }
        metrics = {
            "task": task.pipeline_tag,
            "headline_metric": None
            if headline is None
            else {"key": headline.key, "label": headline.label, "percent": headline.percent},
            "max_accuracy_drop_points": args.max_accuracy_drop,
            "dataset": {**(dataset_description or {}), "eval_examples": len(eval_dataset)},
            "latency": {
                "batch_sizes": list(args.latency_batch_sizes),
                "sequence_length": args.latency_sequence_length,
                "threads": torch.get_num_threads(),
                "device": "cpu",
                "method": LATENCY_METHOD.format(rounds=args.latency_rounds, warmup=2),
            },
            "models": models,
            "student_fingerprint": fingerprint,
            "written_by": WRITTEN_BY,
        }
        _write_json(stage / COMPRESSION_FILE, metrics)
        plot = write_tradeoff_plot(metrics, str(stage / TRADEOFF_PLOT))
        if plot is not None:
            metrics["plot"] = TRADEOFF_PLOT
            _write_json(stage / COMPRESSION_FILE, metrics)
        for fmt in formats:
            folder = stage / fmt
            _write_json(folder / COMPRESSION_FILE, {**metrics, "variant": fmt})
            if plot is not None:
                shutil.copy(plot, folder / TRADEOFF_PLOT)
            _write_card(
                folder, os.path.join(args.output_dir, fmt), fmt, metrics, student_dir, task, _example_text(task)
            )
    return metrics


_EXPORT_KINDS = {"int8": "int8 PyTorch (dynamic)", "onnx": "float32 ONNX", "onnx-int8": "int8 ONNX (dynamic)"}
_WEIGHTS_FILE = {"int8": INT8_FILE, "onnx": ONNX_FILE, "onnx-int8": ONNX_FILE}
# Recorded in compression_metrics.json: how a later compress knows the folder's table and plot as its own.
WRITTEN_BY = "hf-distill compress"


def _in_order(models: dict, carried: list[str], formats: list[str]) -> dict:
    """The table's rows: the float models, then the exports in the order of `EXPORT_FORMATS`."""
    exports = [fmt for fmt in EXPORT_FORMATS if fmt in carried or fmt in formats]
    return {**{k: v for k, v in models.items() if k not in exports}, **{fmt: models[fmt] for fmt in exports}}


def _one_source(student, teacher, args: CompressArguments) -> tuple[str | None, str | None]:
    """The student's and the teacher's folders from `args`, refusing a model given both as an object and by its
    folder, and a student given neither way."""
    for role, model, path, field_name in (
        ("student", student, args.student_model_name_or_path, "student_model_name_or_path"),
        ("teacher", teacher, args.teacher_model_name_or_path, "teacher_model_name_or_path"),
    ):
        if isinstance(model, (str, os.PathLike)):
            raise TypeError(
                f"the {role}'s folder goes in CompressArguments({field_name}=...); compress's {role} argument takes "
                f"a model object or None, got {model!r}"
            )
        if model is not None and path is not None:
            raise ValueError(
                f"the {role} is given twice: as a model object and as {field_name}={path!r}; give one of them"
            )
    if student is None and args.student_model_name_or_path is None:
        raise ValueError(
            "compress needs a student: pass a model object, or its folder as "
            "CompressArguments(student_model_name_or_path=...) (--student_model_name_or_path)"
        )
    return (
        None if args.student_model_name_or_path is None else str(args.student_model_name_or_path),
        None if args.teacher_model_name_or_path is None else str(args.teacher_model_name_or_path),
    )


def check_compressible(task, student) -> None:
    """Refuses, before anything is written, a student that compress cannot export and measure: its exports compute
    one `logits` output (a task with other outputs, question answering's start and end logits, is not supported)."""
    if tuple(task.logit_fields) != ("logits",):
        raise ValueError(
            f"compress exports and measures a student's `logits` output, but a {task.pipeline_tag} student "
            f"({type(student).__name__}) outputs {', '.join(task.logit_fields)}: this task cannot be compressed yet"
        )


def load_student_tokenizer(student_dir: str, student: PreTrainedModel):
    """The student folder's tokenizer, which every export folder gets a copy of; a folder without tokenizer files is
    refused with the fix (transformers would build an empty tokenizer that reads every word as unknown)."""
    if os.path.isdir(student_dir) and not has_tokenizer_files(student_dir):
        raise ValueError(
            f"the student folder {student_dir!r} holds no tokenizer files (tokenizer.json, vocab.txt, "
            "tokenizer_config.json, ...), which each export folder needs: save the tokenizer the student was trained "
            f"with into it (tokenizer.save_pretrained({student_dir!r}))"
        )
    return load_tokenizer(student_dir, student, role="student")


@dataclass
class EarlierRun:
    """What `output_dir` already holds under the names compress writes, as [`read_earlier_run`] found it."""

    folder: Path
    metrics: dict | None  # the table of an earlier compress (None: there is none)
    replaceable: set[str]

    def carried(self, fingerprint: str, overwrite: bool) -> list[str]:
        """The exports of the earlier table that are measured again in the new one: those of the same student whose
        folders are still there (none, with `overwrite`, when the earlier table is of another student)."""
        if self.metrics is None:
            return []
        exports = [
            name
            for name, facts in self.metrics.get("models", {}).items()
            if isinstance(facts, dict) and facts.get("role") == "export" and name in EXPORT_FORMATS
        ]
        exports = [fmt for fmt in exports if fmt not in self.replaceable and (self.folder / fmt).is_dir()]
        if exports and self.metrics.get("student_fingerprint") != fingerprint:
            if overwrite:
                logger.warning(
                    f"{self.folder} holds exports ({', '.join(exports)}) of another student: they are left as they "
                    f"are, and the new {COMPRESSION_FILE} lists this student's only ({OVERWRITE_FLAG})"
                )
                return []
            raise ValueError(
                f"output_dir {str(self.folder)!r} holds exports ({', '.join(e + '/' for e in exports)}) of another "
                f"student than this one (its {COMPRESSION_FILE}): one table cannot hold both. Give another "
                f"--output_dir, or pass --{OVERWRITE_FLAG} to replace its table with this student's"
            )
        return exports

    def export_seconds(self, fmt: str) -> float | None:
        return (self.metrics or {}).get("models", {}).get(fmt, {}).get("export_seconds")


def read_earlier_run(output_dir: str | os.PathLike, formats: Sequence[str], overwrite: bool) -> EarlierRun | None:
    """Checks, before anything is written, what `output_dir` holds under the names compress would write.

    A requested `<format>/` that holds anything, or a `compression_metrics.json` / `accuracy_latency.png` that an
    earlier compress did not write, is refused unless `overwrite` (a `ValueError` naming them and the flag). The table
    and plot of an earlier compress may be replaced: the new table keeps that run's other exports (see
    [`EarlierRun.carried`]). Returns None for a new or empty folder.

    Raises:
        `ValueError`: naming the folder, what it holds that would be replaced, and the fix.
    """
    folder = Path(output_dir)
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise ValueError(f"output_dir {str(folder)!r} is a file, not a folder: give a folder (--output_dir)")
    metrics = _own_table(folder / COMPRESSION_FILE)
    taken = []
    for fmt in formats:
        path = folder / fmt
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            continue  # an empty folder: nothing to lose
        if os.path.lexists(path):
            taken.append(f"{fmt}/" if path.is_dir() else fmt)
    for name in (COMPRESSION_FILE, TRADEOFF_PLOT):
        path = folder / name
        if os.path.lexists(path) and (metrics is None or path.is_symlink() or not path.is_file()):
            taken.append(name)
    if taken and not overwrite:
        earlier = " (an earlier compress's export)" if metrics is not None and any("/" in t for t in taken) else ""
        raise ValueError(
            f"output_dir {str(folder)!r} already holds {', '.join(taken)}{earlier}, which compress would replace: "
            f"nothing was written. Give another --output_dir, move {'them' if len(taken) > 1 else 'it'} away, or pass "
            f"--{OVERWRITE_FLAG} to replace {'them' if len(taken) > 1 else 'it'}"
        )
    replaceable = set(formats) | {COMPRESSION_FILE, TRADEOFF_PLOT} if overwrite else set()
    if metrics is not None:
        replaceable |= {COMPRESSION_FILE, TRADEOFF_PLOT}
    replaceable |= {fmt for fmt in formats if (folder / fmt).is_dir() and not any((folder / fmt).iterdir())}
    return EarlierRun(folder, metrics, replaceable)


def _own_table(path: Path) -> dict | None:
    """The content of a `compression_metrics.json` that compress wrote (None when missing or not compress's)."""
    if not path.is_file() or path.is_symlink():
        return None
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(table, dict) and table.get("written_by") == WRITTEN_BY and isinstance(table.get("models"), dict):
        return table
    return None


def _describe_shape(facts: dict, model) -> None:
    config = model.config
    facts.update(
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=getattr(config, "num_attention_heads", None),
        intermediate_size=getattr(config, "intermediate_size", None),
    )


def _write_json(path: str | os.PathLike, value: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(value, handle, indent=2)


def _write_card(folder: Path, final_folder: str, fmt: str, compression: dict, student_dir, task, text: str) -> None:
    """The variant's card, written into `folder` (the staging copy of `final_folder`, which its usage snippet
    loads): the student's card facts (its `distillation_metrics.json`), with the student's figures replaced by this
    variant's, and the compression table, plot and usage snippet."""

    metrics = {}
    if student_dir is not None and os.path.isfile(os.path.join(student_dir, METRICS_FILE)):
        metrics = json.loads(Path(student_dir, METRICS_FILE).read_text())
    models = compression["models"]
    batch = str(metrics.get("latency", {}).get("batch_size") or max(compression["latency"]["batch_sizes"]))
    if batch not in models.get(fmt, {}).get("latency_ms", {}):
        batch = str(max(compression["latency"]["batch_sizes"]))
    for role, name in (("student", fmt), ("teacher", "teacher")):
        facts = dict(metrics.get(role, {}))  # the same evaluation data, so this variant's figures replace them
        for key in ("latency_ms_per_batch", "latency_iqr_ms", "speedup"):
            facts.pop(key, None)  # the training run's, measured at another time: never compared with this table's
        if name not in models:
            metrics[role] = facts
            continue
        facts.update({k: v for k, v in models[name].items() if k not in ("latency_ms", "latency_iqr_ms", "speedup")})
        if batch in models[name].get("latency_ms", {}):
            facts["latency_ms_per_batch"] = models[name]["latency_ms"][batch]
            facts["latency_iqr_ms"] = models[name]["latency_iqr_ms"][batch]
            if batch in models[name].get("speedup", {}):
                facts["speedup"] = models[name]["speedup"][batch]
        metrics[role] = facts
    metrics["latency"] = {k: v for k, v in compression["latency"].items() if k != "batch_sizes"}
    metrics["latency"]["batch_size"] = int(batch)
    metrics["task"] = metrics.get("task") or compression["task"]
    metrics["dataset"] = metrics.get("dataset") or compression.get("dataset", {})
    metrics["compression"] = {
        **compression,
        "variant": fmt,
        "usage": _usage_code(fmt, final_folder, text, task.labelled_outputs),
        "plot": TRADEOFF_PLOT if os.path.isfile(os.path.join(folder, TRADEOFF_PLOT)) else None,
    }
    card = build_model_card(str(folder), metrics, task=task)
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
    # What can be checked before the data is read: the output folder, the student and its tokenizer.
    for role, path in (("student", args.student_model_name_or_path), ("teacher", args.teacher_model_name_or_path)):
        refuse_model_folder(args.output_dir, [path], role=role)
    read_earlier_run(args.output_dir, args.formats, args.overwrite_output_dir)
    student = load_model(args.student_model_name_or_path, role="student")
    task = task_for(student)
    check_compressible(task, student)
    tokenizer = load_student_tokenizer(args.student_model_name_or_path, student)
    # Saved into each export as it was loaded: tokenising the data sets its truncation, which tokenizer.json would
    # record, or not when the tokenised data comes from datasets' cache.
    saved_tokenizer = copy.deepcopy(tokenizer)
    own = _own_arguments(task, task_args)
    raw = load_raw_datasets(data_args)
    datasets = task.prepare_datasets(raw, tokenizer, data_args, own, student.config)
    split = next((name for name in ("test", "validation") if name in datasets), None)
    if split is None:
        raise ValueError("compress needs evaluation data: give --test_file or --validation_file")
    return compress(
        None,  # loaded from args.student_model_name_or_path: its size on disk and its metrics file go on the cards
        args,
        datasets[split],
        task.data_collator(tokenizer, own),
        task=task,
        tokenizer=saved_tokenizer,
        dataset_description=describe_data(data_args, datasets, split),
    )


def format_table(metrics: dict) -> str:
    """The comparison as a plain-text table (what the command prints): each latency is the median over the rounds
    with the interquartile range in brackets."""
    headline = metrics.get("headline_metric") or {}
    key, scale = headline.get("key"), 100 if headline.get("percent") else 1
    batches = [str(b) for b in metrics["latency"]["batch_sizes"]]
    header = (
        f"{'model':<24}{headline.get('label', 'metric'):>10}{'vs student':>11}{'vs teacher':>11}{'params':>9}"
        f"{'MB':>8}" + "".join(f"{'ms@' + b + ' [IQR]':>22}" for b in batches)
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
            *(_latency_cell(facts, b) for b in batches),
        ]
        if facts.get("within_tolerance") is False:
            cells.append(f"  EXCEEDS the {metrics['max_accuracy_drop_points']}-point tolerance")
        lines.append("".join(cells))
    return "\n".join(lines)


def _latency_cell(facts: dict, batch: str) -> str:
    median = facts.get("latency_ms", {}).get(batch)
    if median is None:
        return f"{'-':>22}"
    q1, q3 = facts.get("latency_iqr_ms", {}).get(batch, (median, median))
    return f"{f'{median:.1f} [{q1:.1f}-{q3:.1f}]':>22}"
