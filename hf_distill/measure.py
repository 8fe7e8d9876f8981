"""Measuring a distilled student against its teacher: task metric, agreement, parameters, size on disk, latency.

[`measure_distillation`] is what the command runs after training, and what a Python user calls after
`trainer.train()`: it measures both models, writes `distillation_metrics.json` and the model card (`README.md`), so
the card is the same whichever way the student was trained.

Each model's task metric comes from its task's own evaluation ([`~hf_distill.tasks.Task.evaluation`]): the student's
through `trainer.evaluate`, which also gives its agreement with the teacher and the KL to it for every task, the
teacher's through a plain `Trainer.evaluate` on the same split.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.utils import logging

logger = logging.get_logger(__name__)

METRICS_FILE = "distillation_metrics.json"
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin")
# What `trainer.evaluate` reports besides the task metrics: not figures of the model's quality.
_RUN_FIGURES = ("loss", "epoch", "model_preparation_time", "runtime", "samples_per_second", "steps_per_second")


@dataclass
class MeasureArguments:
    """What to measure after training, for the metrics file and the model card."""

    measure_latency: bool = field(
        default=True, metadata={"help": "Measure the CPU/GPU latency of teacher and student after training."}
    )
    latency_batch_size: int = field(default=32, metadata={"help": "Batch size of the latency measurement."})
    latency_sequence_length: int = field(default=64, metadata={"help": "Sequence length of the latency measurement."})


# ---- one model


def weights_size_bytes(folder: str) -> int:
    """Bytes of the weight files in a saved model folder (what a user downloads to run it)."""
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for name in os.listdir(folder)
        if name.endswith(WEIGHT_FILE_SUFFIXES) and not name.startswith(("training_args", "optimizer", "scheduler"))
    )


def describe_model(model: PreTrainedModel, folder: str | None = None) -> dict[str, int]:
    """Size figures of a model: layers, width, parameters, and bytes on disk when `folder` holds its weights."""
    facts = {
        "num_layers": model.config.num_hidden_layers,
        "hidden_size": model.config.hidden_size,
        "parameters": model.num_parameters(),
    }
    if folder is not None and os.path.isdir(folder):
        facts["size_bytes"] = weights_size_bytes(folder)
    return facts


@torch.inference_mode()
def measure_latency_ms(
    model: PreTrainedModel, batch_size: int = 32, sequence_length: int = 64, repeats: int = 10, warmup: int = 2
) -> float:
    """Median wall time (ms) of one forward pass on a batch of random token ids, in eval mode."""
    model.eval()
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    inputs = {
        "input_ids": torch.randint(0, vocab, (batch_size, sequence_length), generator=generator).to(model.device),
        "attention_mask": torch.ones(batch_size, sequence_length, dtype=torch.long, device=model.device),
    }
    timings = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        model(**inputs)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


@torch.inference_mode()
def measure_latencies_ms(
    models: dict[str, PreTrainedModel], batch_size: int = 32, sequence_length: int = 64, rounds: int = 20
) -> dict[str, float]:
    """Median forward-pass time (ms) of several models, measured in turns on the same batch.

    Taking turns (teacher, student, teacher, ...) spreads the machine's drift over all the models, so that two
    models of the same size get the same figure; timing them one after the other on a busy machine does not.
    """
    timings: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
    for round_index in range(rounds + 2):
        for name, model in models.items():
            elapsed = measure_latency_ms(model, batch_size, sequence_length, repeats=1, warmup=0)
            if round_index >= 2:  # the first two rounds warm up
                timings[name].append(elapsed)
    return {name: round(statistics.median(values), 2) for name, values in timings.items()}


def evaluate_model(
    model: PreTrainedModel,
    dataset,
    data_collator,
    evaluation,
    batch_size: int = 64,
    use_cpu: bool | None = None,
) -> dict[str, float]:
    """The task metrics of `model` on `dataset` through a plain `Trainer.evaluate` with the task's `evaluation`
    (its `compute_metrics` and `preprocess_logits_for_metrics`), without the `eval_` prefix and run-time figures."""
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            disable_tqdm=True,
            use_cpu=bool(use_cpu) if use_cpu is not None else not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=data_collator,
            compute_metrics=evaluation.compute_metrics,
            preprocess_logits_for_metrics=evaluation.preprocess_logits_for_metrics,
        )
        return task_figures(trainer.evaluate(dataset), "eval")


def task_figures(metrics: dict[str, float], prefix: str = "eval") -> dict[str, float]:
    """The model's own figures of an evaluation (task metrics, agreement, KL, loss terms), without `prefix_` and the
    run-time figures (loss, epoch, runtime, samples per second)."""
    figures = {}
    for key, value in metrics.items():
        name = key.removeprefix(f"{prefix}_")
        if name in _RUN_FIGURES or name.endswith(("_runtime", "_per_second")) or name.startswith("loss"):
            continue
        figures[name] = value
    return figures


# ---- teacher and student


def measure_distillation(
    trainer,
    eval_dataset=None,
    *,
    measure_args: MeasureArguments | None = None,
    task_args=None,
    dataset: dict | None = None,
    task_name: str | None = None,
    train_result=None,
    write: bool = True,
) -> dict | None:
    """Measures the trained student of `trainer` and its teacher on `eval_dataset`; writes the metrics file and card.

    Call it on every process (the student's evaluation gathers across them) after `trainer.train()`; the main
    process measures the teacher and the sizes, writes `distillation_metrics.json` and `README.md` into
    `trainer.args.output_dir` (with `write`) and returns the metrics, the others return `None`.

    Args:
        trainer ([`DistillationTrainer`]): the trainer, after training (and `save_model`: the size on disk is known).
        eval_dataset (`Dataset`, *optional*): the tokenised evaluation split (default: `trainer.eval_dataset`); for
            question answering it must keep the columns that the task's evaluation reads (offsets, context, answers).
        measure_args ([`MeasureArguments`], *optional*): latency settings.
        task_args (*optional*): the task's own data arguments (e.g. the longest answer of question answering).
        dataset (`dict`, *optional*): what to say about the data (`name`, `train_examples`, `unlabeled_examples`,
            `eval_split`, `eval_file`); `eval_examples` is filled in.
        task_name (`str`, *optional*): the task name written to the metrics (default: the task's pipeline tag).
        train_result (*optional*): what `trainer.train()` returned: training time and loss go into the metrics.
        write (`bool`): write the metrics file and the card.
    """
    measure_args = measure_args or MeasureArguments()
    eval_dataset = eval_dataset if eval_dataset is not None else trainer.eval_dataset
    if eval_dataset is None:
        raise ValueError("measure_distillation needs an evaluation dataset: pass eval_dataset=...")
    task = trainer.task
    teacher = _first_teacher(trainer)
    teacher_config = teacher.config if teacher is not None else trainer.student.config
    task_args = task.task_arguments(task_args)
    evaluation = task.evaluation(eval_dataset, teacher_config, task_args)

    # The student, through the trainer: task metrics with agreement and KL to the teacher (on every process).
    saved = trainer.compute_metrics, trainer.preprocess_logits_for_metrics
    trainer.compute_metrics = evaluation.compute_metrics
    trainer.preprocess_logits_for_metrics = evaluation.preprocess_logits_for_metrics
    try:
        final = trainer.evaluate(eval_dataset, metric_key_prefix="final")
    finally:
        trainer.compute_metrics, trainer.preprocess_logits_for_metrics = saved
    if not trainer.is_world_process_zero():
        return None

    config = trainer.args
    student = trainer.student
    student_facts = {**describe_model(student, config.output_dir), **task_figures(final, "final")}
    student_facts["teacher_layers"] = getattr(student.config, "distillation_teacher_layers", None)
    teacher_facts = {"name_or_path": trainer.teacher_name}
    if teacher is not None:
        folder = trainer.teacher_name if isinstance(trainer.teacher_name, str) else None
        teacher_facts.update(describe_model(teacher, folder))
        teacher_facts.update(
            evaluate_model(
                teacher,
                eval_dataset,
                trainer.data_collator,
                evaluation,
                config.per_device_eval_batch_size,
                config.use_cpu,
            )
        )
    metrics = {
        "task": task_name or task.pipeline_tag,
        "dataset": {**(dataset or {}), "eval_examples": len(eval_dataset)},
        "teacher": teacher_facts,
        "student": student_facts,
        "distillation": trainer.distillation_settings(),
    }
    latency = latency_settings(measure_args, student.device)
    if latency is not None:
        models = {"teacher": teacher, "student": student} if teacher is not None else {"student": student}
        measured = measure_latencies_ms(models, latency["batch_size"], latency["sequence_length"])
        for role, value in measured.items():
            metrics[role]["latency_ms_per_batch"] = value
        latency["method"] = "median of 20 forward passes per model, the models taking turns"
        metrics["latency"] = latency
    metrics["training"] = training_settings(config)
    if train_result is not None:
        metrics["training"]["train_runtime_s"] = round(train_result.metrics.get("train_runtime", 0.0), 1)
        metrics["training"]["train_loss"] = train_result.metrics.get("train_loss")
    metrics["framework_versions"] = framework_versions()
    if write:
        write_metrics(config.output_dir, metrics)
        trainer.create_model_card()
    return metrics


def _first_teacher(trainer) -> PreTrainedModel | None:
    """The first teacher, the one the figures compare with, unwrapped from its placement (None: a teacher cache)."""
    teachers = getattr(trainer, "teachers", None) or []
    if not teachers:
        return None
    teacher = teachers[0]
    while not isinstance(teacher, PreTrainedModel) and hasattr(teacher, "module"):
        teacher = teacher.module
    return teacher


def latency_settings(measure_args: MeasureArguments, device: torch.device) -> dict | None:
    """How latency is measured (None when it is not): the metrics file's `latency` section."""
    if not measure_args.measure_latency:
        return None
    return {
        "batch_size": measure_args.latency_batch_size,
        "sequence_length": measure_args.latency_sequence_length,
        "threads": torch.get_num_threads(),
        "device": str(device.type),
    }


def training_settings(config) -> dict:
    """The training settings recorded in the metrics file (and shown on the card)."""
    return {
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps if config.max_steps > 0 else None,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "seed": config.seed,
    }


def framework_versions() -> dict[str, str]:
    import datasets
    import transformers

    from . import __version__

    return {
        "hf_distill": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "python": platform.python_version(),
    }


def write_metrics(folder: str, metrics: dict) -> str:
    """Writes `metrics` as `folder/distillation_metrics.json`; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, METRICS_FILE)
    with open(path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    return path
