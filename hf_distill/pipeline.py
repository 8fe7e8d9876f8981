"""One distillation job, from a teacher and a dataset to an evaluated student folder.

`hf-distill train`, the `accelerate launch` scripts in `scripts/` and the demo all run [`run_distillation`].
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
)
from transformers.utils import logging

from .config import DistillationConfig
from .data import DataArguments, prepare_text_classification
from .evaluation import classification_metrics, describe_model, predict_logits, score_predictions
from .student import STRATEGIES, build_student
from .teacher import auto_class_for, infer_task, load_pretrained_like
from .trainer import DistillationTrainer

logger = logging.get_logger(__name__)

METRICS_FILE = "distillation_metrics.json"


@dataclass
class DistillationResult:
    metrics: dict | None
    log_history: list[dict]
    trainer: DistillationTrainer


@dataclass
class StudentArguments:
    """Which student to train: an existing model, or one built from the teacher (DistilBERT style)."""

    student_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "An existing student model (path or Hub id). When omitted, the student is built from the "
            "teacher: same architecture and width, fewer layers copied from the teacher's."
        },
    )
    student_num_layers: int | None = field(
        default=None,
        metadata={"help": "Number of layers of the built student (default: half the teacher's, rounded up)."},
    )
    student_layer_strategy: Literal["uniform", "every_other", "first", "last"] = field(
        default="every_other",
        metadata={"help": f"Which teacher layers the built student copies: {', '.join(STRATEGIES)}."},
    )
    student_layers: str | None = field(
        default=None,
        metadata={"help": "Explicit teacher layers the built student copies, e.g. '0,2,4' (overrides the strategy)."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer path or Hub id (default: the teacher's)."}
    )

    def __post_init__(self):
        if self.student_layers is not None and not isinstance(self.student_layers, (list, tuple)):
            try:
                self.student_layers = [int(x) for x in str(self.student_layers).split(",") if x.strip()]
            except ValueError as error:
                raise ValueError(
                    f"student_layers must be comma-separated teacher layer indices such as '0,2,4', "
                    f"got {self.student_layers!r}"
                ) from error


@dataclass
class MeasureArguments:
    """What to measure after training, for the metrics file and the model card."""

    measure_latency: bool = field(
        default=True, metadata={"help": "Measure the CPU/GPU latency of teacher and student after training."}
    )
    latency_batch_size: int = field(default=32, metadata={"help": "Batch size of the latency measurement."})
    latency_sequence_length: int = field(default=64, metadata={"help": "Sequence length of the latency measurement."})


def make_student(
    teacher: PreTrainedModel, student_args: StudentArguments, init_kwargs: dict | None = None
) -> PreTrainedModel:
    """Loads the given student, or builds one from the teacher."""
    if student_args.student_model_name_or_path:
        return load_pretrained_like(student_args.student_model_name_or_path, teacher, init_kwargs, role="student")
    num_layers = student_args.student_num_layers
    if num_layers is None and student_args.student_layers is None:
        num_layers = (teacher.config.num_hidden_layers + 1) // 2
    return build_student(
        teacher,
        num_layers=num_layers,
        strategy=student_args.student_layer_strategy,
        layers=student_args.student_layers,
    )


def check_teacher_path(path: str | None) -> None:
    """Fails early, naming the flag, when the teacher is not given or is a local folder that does not exist."""
    if not path:
        raise ValueError("--teacher_model_name_or_path is required: a fine-tuned model folder or Hub id")
    if _looks_local(path) and not os.path.exists(path):
        raise FileNotFoundError(
            f"teacher_model_name_or_path {path!r} does not exist; give a folder written by save_pretrained"
        )


def load_teacher_and_tokenizer(
    path: str | None, init_kwargs: dict | None = None, tokenizer_name: str | None = None, task: str | None = None
):
    """The teacher at `path`, and its tokenizer (or the one at `tokenizer_name`).

    The teacher is loaded with the auto class of `task` (hf_distill's task name), by default the task of its head
    (`config.architectures`), and as a sequence classifier when the config names no architecture.
    """
    check_teacher_path(path)
    auto_class = auto_class_for(task or infer_task(path, init_kwargs))
    teacher = auto_class.from_pretrained(path, **(init_kwargs or {}))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or path)
    return teacher, tokenizer


def load_teachers(config: DistillationConfig, tokenizer_name: str | None = None, task: str | None = None):
    """The teachers of `config` (one, or several given as 'a,b'), and the first one's tokenizer.

    Returns `(teachers, tokenizer)`; the first teacher is the one the metrics file and the card compare with.
    """
    paths = config.teacher_paths or [config.teacher_model_name_or_path]
    teacher, tokenizer = load_teacher_and_tokenizer(paths[0], config.teacher_model_init_kwargs, tokenizer_name, task)
    teachers = [teacher]
    for path in paths[1:]:
        check_teacher_path(path)
        teachers.append(load_pretrained_like(path, teacher, config.teacher_model_init_kwargs))
    return teachers, tokenizer


def run_distillation(
    student_args: StudentArguments,
    data_args: DataArguments,
    config: DistillationConfig,
    measure_args: MeasureArguments | None = None,
    callbacks: list | None = None,
) -> DistillationResult:
    """Distils the teacher of `config` into a student on `data_args`' data, saves and evaluates it.

    Writes the student folder (`config.output_dir`): model, tokenizer, `distillation_metrics.json` and `README.md`
    (the model card). Returns the metrics written to the file (on the main process) and the training log.
    """
    measure_args = measure_args or MeasureArguments()
    teachers, tokenizer = load_teachers(config, student_args.tokenizer_name, task="sequence-classification")
    teacher = teachers[0]
    datasets, _ = prepare_text_classification(data_args, tokenizer, id2label=teacher.config.id2label)
    student = make_student(teacher, student_args)
    collator = DataCollatorWithPadding(tokenizer)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teachers if len(teachers) > 1 else teacher,
        args=config,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=classification_metrics,
        callbacks=callbacks,
    )
    train_result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    # The push (when asked for) comes last, once the metrics and the card are in the folder.
    trainer.save_model(_internal_call=True)
    metrics = None
    eval_split = "test" if "test" in datasets else "validation"
    if trainer.is_world_process_zero():
        metrics = measure_student_and_teacher(
            trainer.student,
            teacher,
            datasets[eval_split],
            collator,
            config,
            measure_args,
            student_folder=config.output_dir,
            teacher_folder=config.teacher_paths[0],
            settings=trainer.distillation_settings(),
        )
    return finish_run(trainer, metrics, "text-classification", data_args, datasets, eval_split, train_result)


def finish_run(trainer, metrics, task, data_args, datasets, eval_split, train_result) -> DistillationResult:
    """Completes the main process' metrics (task, data, training time), writes them and the model card, then
    pushes when `push_to_hub` is set: the push comes last, once the metrics and the card are in the folder."""
    config = trainer.args
    if metrics is not None:
        metrics["task"] = task
        metrics["dataset"] = {
            "name": data_args.dataset_name or os.path.basename(data_args.train_file),
            "train_examples": len(datasets["train"]),
            "eval_split": eval_split,
            "eval_examples": len(datasets[eval_split]),
        }
        metrics["training"]["train_runtime_s"] = round(train_result.metrics.get("train_runtime", 0.0), 1)
        metrics["training"]["train_loss"] = train_result.metrics.get("train_loss")
        write_metrics(config.output_dir, metrics)
        trainer.create_model_card()
    if config.push_to_hub:
        trainer.push_to_hub(commit_message="Distilled student, with its metrics and model card")
    return DistillationResult(metrics=metrics, log_history=trainer.state.log_history, trainer=trainer)


def measure_student_and_teacher(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    eval_dataset,
    collator,
    config: DistillationConfig,
    measure_args: MeasureArguments,
    student_folder: str | None,
    teacher_folder: str | None,
    settings: dict | None = None,
) -> dict:
    """Scores teacher and student on the same split and measures both: the content of the metrics file."""
    labels = eval_dataset["labels"]
    batch = config.per_device_eval_batch_size
    teacher_logits = predict_logits(teacher, eval_dataset, collator, batch, config.use_cpu)
    student_logits = predict_logits(student, eval_dataset, collator, batch, config.use_cpu)
    latency = latency_settings(measure_args, student.device)
    teacher_facts = describe_model(teacher, teacher_folder, latency)
    student_facts = describe_model(student, student_folder, latency)
    teacher_facts.update(score_predictions(teacher_logits, labels), name_or_path=teacher_folder)
    student_facts.update(score_predictions(student_logits, labels, teacher_logits))
    student_facts["teacher_layers"] = getattr(student.config, "distillation_teacher_layers", None)
    metrics = {
        "teacher": teacher_facts,
        "student": student_facts,
        "distillation": settings or config.distillation_settings(),
    }
    if latency is not None:
        metrics["latency"] = latency
    metrics["training"] = training_settings(config)
    metrics["framework_versions"] = framework_versions()
    return metrics


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


def training_settings(config: DistillationConfig) -> dict:
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
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, METRICS_FILE)
    with open(path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    return path


def _looks_local(path: str) -> bool:
    # A Hub id is "name" or "org/name"; anything else (absolute, relative with ./, or deeper) is a local path.
    return (
        os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path
    )
