"""Measuring a distilled student against its teacher: task metric, agreement, parameters, size on disk, latency.

[`measure_distillation`] is what the command runs after training, and what a Python user calls after
`trainer.train()`: it measures both models, writes `distillation_metrics.json` and the model card (`README.md`), so
the card is the same whichever way the student was trained.

Each model's task metric comes from its task's own evaluation ([`~hf_distill.tasks.Task.evaluation`]): the student's
through `trainer.evaluate`, which also gives its agreement with the teacher and the KL to it for every task, the
teacher's through a plain `Trainer.evaluate` on the same split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import EvalPrediction, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_pt_utils import nested_concat
from transformers.trainer_utils import has_length

from . import __version__
from .architectures import input_names
from .json_values import is_number
from .log import get_logger
from .losses import IGNORE_INDEX
from .model_card import METRICS_FILE, task_figures, teacher_license
from .references import is_local_teacher, teacher_reference
from .stats import ALPHA, expected_calibration_error, mcnemar_exact, paired_bootstrap, verdict

logger = get_logger(__name__)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin")


@dataclass
class MeasureArguments:
    """What to measure after training, for the metrics file and the model card."""

    measure_latency: bool = field(
        default=True, metadata={"help": "Measure the CPU/GPU latency of teacher and student after training."}
    )
    latency_batch_size: int = field(default=32, metadata={"help": "Batch size of the latency measurement."})
    latency_sequence_length: int = field(default=64, metadata={"help": "Sequence length of the latency measurement."})
    baseline: bool = field(
        default=False,
        metadata={
            "help": "Was it worth it? Also train the same student from the same starting weights without the teacher "
            "(the hard-label loss alone, no teacher forward in training) on the labelled training examples, for the "
            "same number of optimizer steps (see --baseline_budget) with the same seed, batch order and settings, and "
            "compare both on "
            "the same evaluation examples: the paired difference of the task's headline metric with McNemar's exact "
            "test (accuracy-like metrics) or a paired bootstrap (F1, perplexity, MSE), agreement with the teacher and "
            "calibration (ECE), and a verdict in the metrics file, the log and the model card."
        },
    )
    baseline_budget: Literal["steps", "epochs"] = field(
        default="steps",
        metadata={
            "help": "With --baseline: how long the no-teacher student trains. 'steps': as many optimizer steps as the "
            "distilled run, so the verdict answers 'is the teacher worth it, or should I train the student alone for "
            "as long?'. 'epochs': the same epochs (or max_steps) over the labelled examples only, which is fewer "
            "steps when a transfer set (--unlabeled_file, --augment) adds examples to the distilled run. The "
            "metrics file, the log and the card state the rule, both step counts and both training times."
        },
    )
    seeds: int = field(
        default=1,
        metadata={
            "help": "Train (and with --baseline, compare) with the seeds seed, seed+1, ..., seed+N-1 and report the "
            "mean and spread; the output folder keeps the first seed's student. With --baseline the paired test "
            "pools all seeds (McNemar on the pooled disagreements; the bootstrap averages the seeds' models)."
        },
    )

    def __post_init__(self):
        if self.baseline_budget not in BUDGET_RULES:
            raise ValueError(
                f"baseline_budget must be one of {', '.join(BUDGET_RULES)} (the no-teacher student's length), got "
                f"{self.baseline_budget!r}"
            )
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a whole number >= 1 (the training runs per model), got {self.seeds!r}")


# ---- one model


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
        logits_all = (
            nested_concat(logits_all, logits, padding_index=IGNORE_INDEX) if logits_all is not None else logits
        )
        if labels is not None:
            labels_all = (
                labels if labels_all is None else nested_concat(labels_all, labels, padding_index=IGNORE_INDEX)
            )
    return logits_all.numpy(), None if labels_all is None else labels_all.numpy()


def agreement(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Share of items whose predicted class (argmax) is the reference's; token-level outputs count the labelled
    tokens (labels not -100) when the labels have their shape."""
    ours, theirs = logits.argmax(-1), reference.argmax(-1)
    if labels is not None and labels.shape == ours.shape:
        keep = labels != IGNORE_INDEX
        ours, theirs = ours[keep], theirs[keep]
    return float((ours == theirs).mean())


def task_metrics(task, logits: np.ndarray, labels: np.ndarray, teacher_config) -> dict[str, float]:
    """The task's metrics of logits and labels from [`predict`] (as `trainer.evaluate` computes them)."""
    evaluation = task.evaluation(None, teacher_config)
    predictions = logits
    if evaluation.preprocess_logits_for_metrics is not None:
        predictions = evaluation.preprocess_logits_for_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
        predictions = predictions.numpy() if isinstance(predictions, torch.Tensor) else predictions
    figures = evaluation.compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
    return {k: float(v) for k, v in figures.items()}


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


# How latency is measured, in the metrics file and on the cards (the rounds and warm-up are filled in).
LATENCY_METHOD = (
    "median and interquartile range of {rounds} forward passes per model, timed in interleaved rounds (each round "
    "runs every model once, starting with the next model each round) after {warmup} warm-up rounds"
)


@torch.inference_mode()
def measure_latencies(
    models: Mapping[str, Callable],
    batch_sizes: Sequence[int] = (32,),
    sequence_length: int = 64,
    rounds: int = 20,
    warmup: int = 2,
    vocab_size: int | None = None,
) -> dict[str, dict[int, list[float]]]:
    """The wall time (ms) of one forward pass of each model in each round, per batch size: what every latency figure
    of hf_distill comes from ([`latency_figures`], [`speedup_figures`]).

    The models take turns on the same batch of random token ids: each round runs every model once, and the model
    that starts moves on by one each round (A B C, B C A, C A B, ...), so that the machine's drift and what one model
    leaves behind for the next (warm caches, a thread pool still spinning) fall on all of them alike. Every model is
    warmed up the same way: `warmup` whole rounds, not timed.

    Args:
        models: by name, anything called as `model(**inputs)`: a transformers model (run in eval mode, on its own
            device, given only the inputs its forward takes) or a loaded export ([`~hf_distill.export.OnnxModel`]).
        batch_sizes: the batch sizes measured (each with its own rounds).
        sequence_length: tokens per example (no padding).
        rounds: timed rounds per batch size.
        warmup: untimed rounds first.
        vocab_size: token ids are drawn below it (default: the smallest input embedding among the models).

    Returns:
        `{name: {batch_size: [ms per round, ...]}}`, the rounds in order (round `r` of two models ran back to back).
    """
    if not isinstance(rounds, int) or rounds < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"latency needs rounds >= 1 and warmup >= 0, got rounds={rounds!r}, warmup={warmup!r}")
    names = list(models)
    modules = {name: model for name, model in models.items() if isinstance(model, torch.nn.Module)}
    for model in modules.values():
        model.eval()
    if vocab_size is None:
        sizes = [m.get_input_embeddings().num_embeddings for m in modules.values() if m.get_input_embeddings()]
        if not sizes:
            raise ValueError("measure_latencies needs vocab_size when no model is a transformers model")
        vocab_size = min(sizes)
    accepted = {name: input_names(model) for name, model in modules.items()}
    devices = {name: getattr(model, "device", torch.device("cpu")) for name, model in modules.items()}
    generator = torch.Generator().manual_seed(0)
    timings: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    for batch_size in batch_sizes:
        shape = (batch_size, sequence_length)
        batch = {
            # the first ids are often special tokens (padding, [CLS]): ordinary ones are drawn
            "input_ids": torch.randint(min(5, vocab_size - 1), vocab_size, shape, generator=generator),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long),
        }
        feeds = {}
        for name in names:
            keep = accepted.get(name)
            device = devices.get(name, torch.device("cpu"))
            feeds[name] = {k: v.to(device) for k, v in batch.items() if keep is None or k in keep}
        for name in names:
            timings[name][batch_size] = []
        for round_index in range(warmup + rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                device = devices.get(name, torch.device("cpu"))
                start = time.perf_counter()
                models[name](**feeds[name])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if round_index >= warmup:
                    timings[name][batch_size].append((time.perf_counter() - start) * 1000)
    return timings


def latency_figures(timings: Sequence[float]) -> dict[str, float | list[float]]:
    """`{"median_ms": m, "iqr_ms": [q1, q3]}` of one model's per-round times: the figure and its spread (the middle
    half of the rounds lies between the quartiles)."""
    q1, median, q3 = _quartiles(timings)
    return {"median_ms": round(median, 2), "iqr_ms": [round(q1, 2), round(q3, 2)]}


def speedup_figures(reference: Sequence[float], timings: Sequence[float]) -> dict[str, float | list[float]]:
    """How many times faster a model is than `reference` (the teacher), from the same rounds of
    [`measure_latencies`]: the ratio of the two times within each round (they ran back to back, on the same
    machine state), then the median and interquartile range of those ratios: `{"median": s, "iqr": [q1, q3]}`."""
    if len(reference) != len(timings):
        raise ValueError(f"speed-up needs the same rounds of both models, got {len(reference)} and {len(timings)}")
    q1, median, q3 = _quartiles([r / t for r, t in zip(reference, timings)])
    return {"median": round(median, 3), "iqr": [round(q1, 3), round(q3, 3)]}


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def measure_latency_ms(
    model: PreTrainedModel, batch_size: int = 32, sequence_length: int = 64, repeats: int = 10, warmup: int = 2
) -> float:
    """Median wall time (ms) of one forward pass of `model` on a batch of random token ids ([`measure_latencies`]
    with one model)."""
    timings = measure_latencies({"model": model}, (batch_size,), sequence_length, repeats, warmup)
    return latency_figures(timings["model"][batch_size])["median_ms"]


def measure_latencies_ms(
    models: dict[str, PreTrainedModel], batch_size: int = 32, sequence_length: int = 64, rounds: int = 20
) -> dict[str, float]:
    """Median forward-pass time (ms) of several models measured together ([`measure_latencies`]): two models of the
    same size get the same figure, within the spread that [`latency_figures`] gives."""
    timings = measure_latencies(models, (batch_size,), sequence_length, rounds)
    return {name: latency_figures(by_batch[batch_size])["median_ms"] for name, by_batch in timings.items()}


def evaluate_model(
    model: PreTrainedModel,
    dataset,
    data_collator,
    evaluation,
    batch_size: int = 64,
    use_cpu: bool | None = None,
    progress: str | None = None,
) -> dict[str, float]:
    """The task metrics of `model` on `dataset` through a plain `Trainer.evaluate` with the task's `evaluation`
    (its `compute_metrics` and `preprocess_logits_for_metrics`), without the `eval_` prefix and run-time figures.
    With `progress`, a progress bar labelled with it (e.g. "Measuring the teacher on test.csv")."""
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            disable_tqdm=progress is None,
            use_cpu=bool(use_cpu) if use_cpu is not None else not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=data_collator,
            compute_metrics=evaluation.compute_metrics,
            preprocess_logits_for_metrics=evaluation.preprocess_logits_for_metrics,
        )
        with labelled_progress(trainer, progress):
            return task_figures(trainer.evaluate(dataset), "eval")


class LabelledProgressCallback(ProgressCallback):
    """transformers' progress bars, with the evaluation bar labelled (its own has no description)."""

    def __init__(self, label: str, max_str_len: int = 100):
        super().__init__(max_str_len)
        self.label = label

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and has_length(eval_dataloader) and self.prediction_bar is None:
            self.prediction_bar = tqdm(
                total=len(eval_dataloader), desc=self.label, leave=self.training_bar is None, dynamic_ncols=True
            )
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)


@contextlib.contextmanager
def labelled_progress(trainer: Trainer, label: str | None) -> Iterator[None]:
    """Labels the evaluation progress bar of `trainer` with `label` for the duration (when it shows one)."""
    callbacks = trainer.callback_handler.callbacks
    swapped = []
    if label:
        for index, callback in enumerate(callbacks):
            if type(callback) is ProgressCallback:
                labelled = LabelledProgressCallback(label, callback.max_str_len)
                labelled.training_bar = callback.training_bar
                callbacks[index] = labelled
                swapped.append((index, callback))
    try:
        yield
    finally:
        for index, callback in swapped:
            callbacks[index] = callback


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
    measured = measure_run(
        trainer,
        eval_dataset,
        measure_args=measure_args,
        task_args=task_args,
        dataset=dataset,
        task_name=task_name,
        train_result=train_result,
        write=write,
    )
    return measured[0] if measured is not None else None


def measure_run(
    trainer,
    eval_dataset=None,
    *,
    measure_args: MeasureArguments | None = None,
    task_args=None,
    dataset: dict | None = None,
    task_name: str | None = None,
    train_result=None,
    write: bool = True,
) -> tuple[dict, dict] | None:
    """[`measure_distillation`], also returning the per-example scores of the task's headline metric
    (`{"student": ExampleScores, "teacher": ExampleScores}`, when the task gives them) for paired comparisons."""
    measure_args = measure_args or MeasureArguments()
    eval_dataset = eval_dataset if eval_dataset is not None else trainer.eval_dataset
    if eval_dataset is None:
        raise ValueError("measure_distillation needs an evaluation dataset: pass eval_dataset=...")
    task = trainer.task
    teacher = _first_teacher(trainer)
    teacher_config = teacher.config if teacher is not None else trainer.student.config
    task_args = task.task_arguments(task_args)
    evaluation = task.evaluation(eval_dataset, teacher_config, task_args)

    config = trainer.args
    where = (dataset or {}).get("eval_file") or (dataset or {}).get("eval_split") or "the evaluation set"
    # The student, through the trainer: task metrics with agreement and KL to the teacher (on every process).
    figures, student_scores = measure_student(trainer, eval_dataset, evaluation, f"Measuring the student on {where}")
    if not trainer.is_world_process_zero():
        return None

    student = trainer.student
    student_facts = {**describe_model(student, config.output_dir), **figures}
    student_facts["teacher_layers"] = getattr(student.config, "distillation_teacher_layers", None)
    # Published: a Hub id as it is, a local folder by its name only (never the user's file system layout).
    teacher_facts = {"name_or_path": teacher_reference(trainer.teacher_name)}
    if trainer.teacher_name and is_local_teacher(trainer.teacher_name):
        teacher_facts["local"] = True  # a folder name, not a Hub id
    license_id = teacher_license(trainer.teacher_name)
    if license_id:
        teacher_facts["license"] = license_id
    scores = {"student": student_scores}
    if teacher is not None:
        folder = trainer.teacher_name if isinstance(trainer.teacher_name, str) else None
        teacher_facts.update(describe_model(teacher, folder))
        teacher_data, teacher_collator, teacher_evaluation = eval_dataset, trainer.data_collator, evaluation
        pair = getattr(trainer, "tokenizers", None)
        if pair is not None:  # a student of another tokenizer: the teacher reads its own tokenization of the examples
            teacher_data = pair.teacher_view(eval_dataset, task)
            teacher_collator = task.data_collator(pair.teacher, task_args)
            teacher_evaluation = task.evaluation(teacher_data, teacher_config, task_args)
        capture = ScoreCapture(teacher_evaluation)
        teacher_facts.update(
            evaluate_model(
                teacher,
                teacher_data,
                teacher_collator,
                capture.evaluation,
                config.per_device_eval_batch_size,
                config.use_cpu,
                progress=None if config.disable_tqdm else f"Measuring the teacher on {where}",
            )
        )
        teacher_facts.update(calibration(capture.scores))
        scores["teacher"] = capture.scores
    metrics = {
        "task": task_name or task.pipeline_tag,
        "dataset": {**(dataset or {}), "eval_examples": len(eval_dataset)},
        "teacher": teacher_facts,
        "student": student_facts,
        "distillation": trainer.distillation_settings(),
    }
    latency = latency_settings(measure_args, student.device)
    if latency is not None:
        logger.info(f"Measuring latency: batches of {latency['batch_size']} x {latency['sequence_length']} tokens")
        models = {"teacher": teacher, "student": student} if teacher is not None else {"student": student}
        add_latencies(metrics, models, latency)
        metrics["latency"] = latency
    metrics["training"] = training_settings(config)
    if train_result is not None:
        metrics["training"]["train_runtime_s"] = round(train_result.metrics.get("train_runtime", 0.0), 1)
        metrics["training"]["train_loss"] = train_result.metrics.get("train_loss")
    metrics["framework_versions"] = framework_versions()
    if write:
        write_metrics(config.output_dir, metrics)
        trainer.create_model_card()
    # The trackers of `report_to` (wandb, tensorboard, mlflow, ...) get the comparison too, through the callbacks.
    trainer.log(final_figures(metrics, task))
    logger.info(summarize(config.output_dir, metrics, task))
    return metrics, scores


class ScoreCapture:
    """Wraps a task's evaluation so that the predictions given to `compute_metrics` also yield the task's per-example
    scores (`.scores`): one pass over the evaluation data gives both."""

    def __init__(self, evaluation):
        self.scores = None
        self._evaluation = evaluation
        self.evaluation = dataclasses.replace(evaluation, compute_metrics=self)

    def __call__(self, prediction) -> dict[str, float]:
        if self._evaluation.example_scores is not None:
            self.scores = self._evaluation.example_scores(prediction)
        return self._evaluation.compute_metrics(prediction)


def measure_student(trainer, eval_dataset, evaluation, progress: str | None = None) -> tuple[dict, object]:
    """A trained student's figures on `eval_dataset` through its trainer (the task's metrics with agreement and KL to
    the teacher, and its calibration for classification), and its per-example scores (None when the task gives
    none). Call it on every process: the evaluation gathers across them."""
    capture = ScoreCapture(evaluation)
    saved = trainer.compute_metrics, trainer.preprocess_logits_for_metrics
    trainer.compute_metrics = capture.evaluation.compute_metrics
    trainer.preprocess_logits_for_metrics = evaluation.preprocess_logits_for_metrics
    try:
        with labelled_progress(trainer, progress if not trainer.args.disable_tqdm else None):
            final = trainer.evaluate(eval_dataset, metric_key_prefix="final")
    finally:
        trainer.compute_metrics, trainer.preprocess_logits_for_metrics = saved
    return {**task_figures(final, "final"), **calibration(capture.scores)}, capture.scores


def calibration(scores) -> dict[str, float]:
    """`{"expected_calibration_error": ECE}` (15 equal-width bins) when the scores carry confidences, else `{}`."""
    if scores is None or scores.confidence is None or scores.correct is None:
        return {}
    return {"expected_calibration_error": expected_calibration_error(scores.confidence, scores.correct)}


def compare_with_baseline(
    distilled: list,
    baselines: list,
    seeds: list[int],
    metric,
    facts: list[tuple[dict, dict]],
    budget: dict | None = None,
) -> dict:
    """The paired comparison of distilled students and no-teacher baselines over the same evaluation examples, one
    pair per seed, and its verdict (the `comparison` section of the metrics file).

    Args:
        distilled, baselines: per seed, the [`~hf_distill.tasks.ExampleScores`] of each model.
        seeds: the seeds, in the same order.
        metric: the [`~hf_distill.tasks.CardMetric`] compared (the task's headline metric).
        facts: per seed, (distilled figures, baseline figures) with agreement with the teacher and calibration, and
            each run's `optimizer_steps` and `train_runtime_s` when known.
        budget: how long each side trained ([`training_budget`]); the verdict names it, and it is kept as the
            comparison's `budget`.
    """
    rows = []
    for seed, d, b, (d_facts, b_facts) in zip(seeds, distilled, baselines, facts):
        row = {"seed": seed, "distilled": d.value(), "baseline": b.value(), "difference": d.value() - b.value()}
        if d.correct is not None:
            only_d = int(np.sum(d.correct & ~b.correct))
            only_b = int(np.sum(b.correct & ~d.correct))
            row.update(only_distilled_right=only_d, only_baseline_right=only_b, p_value=mcnemar_exact(only_d, only_b))
        else:
            boot = paired_bootstrap(d.statistics(), b.statistics(), d.combiner(), seed=seed)
            row.update(interval_95=[boot["low"], boot["high"]], p_value=boot["p_value"])
        for key in ("teacher_agreement", "expected_calibration_error", "optimizer_steps", "train_runtime_s"):
            for role, values in (("distilled", d_facts), ("baseline", b_facts)):
                if is_number(values.get(key)):
                    row[f"{role}_{key}"] = values[key]
        rows.append(row)
    differences = [row["difference"] for row in rows]
    comparison = {
        "metric": metric.key,
        "test": distilled[0].paired_test,
        "alpha": ALPHA,
        "seeds": seeds,
        "per_seed": rows,
        "mean": {
            "distilled": statistics.fmean(row["distilled"] for row in rows),
            "baseline": statistics.fmean(row["baseline"] for row in rows),
            "difference": statistics.fmean(differences),
            "difference_std": statistics.stdev(differences) if len(rows) > 1 else 0.0,
            "difference_min": min(differences),
            "difference_max": max(differences),
        },
    }
    for key in (
        "distilled_teacher_agreement",
        "baseline_teacher_agreement",
        "distilled_expected_calibration_error",
        "baseline_expected_calibration_error",
        "distilled_train_runtime_s",
        "baseline_train_runtime_s",
    ):
        values = [row[key] for row in rows if key in row]
        if len(values) == len(rows):
            comparison["mean"][key] = statistics.fmean(values)
    if distilled[0].correct is not None:
        # The disagreements of all seeds pooled (they share the evaluation examples, so this is a summary of the
        # seeds' evidence rather than independent trials).
        only_d = sum(row["only_distilled_right"] for row in rows)
        only_b = sum(row["only_baseline_right"] for row in rows)
        pooled = {"only_distilled_right": only_d, "only_baseline_right": only_b}
        pooled["p_value"] = mcnemar_exact(only_d, only_b)
    else:
        boot = paired_bootstrap(
            [d.statistics() for d in distilled], [b.statistics() for b in baselines], distilled[0].combiner()
        )
        pooled = {"interval_95": [boot["low"], boot["high"]], "p_value": boot["p_value"]}
    comparison["pooled"] = pooled
    outcome, sentence = verdict(
        comparison["mean"]["difference"],
        pooled["p_value"],
        percent=metric.percent,
        higher_is_better=metric.higher_is_better,
        unit=None if metric.percent else metric.label,
        condition=budget_condition(budget) if budget else None,
        seeds=len(rows),
    )
    comparison.update(outcome=outcome, verdict=sentence)
    if budget:
        comparison["budget"] = budget
    return comparison


BUDGET_RULES = {
    "steps": "the same number of optimizer steps as the distilled run",
    "epochs": "the same epochs (or max_steps) as the distilled run, over the labelled examples only",
}


def training_budget(rule: str, distilled: dict, baseline: dict) -> dict:
    """The `budget` of a comparison: the rule that set the baseline's length (a key of [`BUDGET_RULES`]) and, for
    each side, its training examples, optimizer steps, epochs over its own examples and training seconds."""
    if rule not in BUDGET_RULES:
        raise ValueError(f"baseline_budget must be one of {', '.join(BUDGET_RULES)}, got {rule!r}")
    return {"rule": rule, "description": BUDGET_RULES[rule], "distilled": distilled, "baseline": baseline}


def describe_budget(budget: dict) -> str:
    """One line of what each side of a comparison cost (the first seed's runs): optimizer steps, epochs over its own
    examples, seconds (the log's and the demo's budget line)."""

    def side(facts: dict, what: str) -> str:
        seconds = facts.get("train_runtime_s")
        took = f", {seconds:,.0f} s" if seconds is not None else ""
        epochs = facts["epochs"]
        over = f"{epochs:g} epoch{'' if epochs == 1 else 's'} over {facts['train_examples']:,} {what}"
        return f"{facts['optimizer_steps']:,} optimizer steps ({over}){took}"

    return (
        f"Budget ({budget['rule']}: {budget['description']}): with the teacher "
        f"{side(budget['distilled'], 'examples')}; without it {side(budget['baseline'], 'labelled examples')}"
    )


def budget_condition(budget: dict) -> str:
    """What a verdict says of the budget: "at the same number of training steps (376 each)", or for the epoch rule
    "at the same number of epochs (2; 376 training steps with the teacher, 188 without)"."""
    steps = [budget.get(side, {}).get("optimizer_steps") for side in ("distilled", "baseline")]
    if budget.get("rule") == "steps" or (steps[0] is not None and steps[0] == steps[1]):
        return f"at the same number of training steps ({steps[0]:,} each)"
    epochs = budget.get("baseline", {}).get("epochs")
    length = f"{epochs:g}; " if is_number(epochs) else ""
    return f"at the same number of epochs ({length}{steps[0]:,} training steps with the teacher, {steps[1]:,} without)"


def final_figures(metrics: dict, task) -> dict[str, float]:
    """The teacher-versus-student figures logged to the trackers at the end: `final/student_<metric>` and
    `final/teacher_<metric>` for the task's metrics, the agreement and KL, and the size and latency ratios."""
    student, teacher = metrics["student"], metrics["teacher"]
    logs = {}
    for metric in task.card_metrics:
        for role, facts in (("student", student), ("teacher", teacher)):
            if is_number(facts.get(metric.key)):
                logs[f"final/{role}_{metric.key}"] = facts[metric.key]
    for key in ("teacher_agreement", "teacher_kl"):
        if is_number(student.get(key)):
            logs[f"final/{key}"] = student[key]
    for key, name in (("parameters", "parameter_ratio"), ("size_bytes", "size_ratio")):
        if is_number(student.get(key)) and is_number(teacher.get(key)) and teacher[key]:
            logs[f"final/{name}"] = student[key] / teacher[key]
    latency = "latency_ms_per_batch"
    for role, facts in (("student", student), ("teacher", teacher)):
        if is_number(facts.get(latency)):
            logs[f"final/{role}_{latency}"] = facts[latency]
    if isinstance(student.get("speedup"), dict) and is_number(student["speedup"].get("median")):
        logs["final/speedup"] = student["speedup"]["median"]
    elif is_number(student.get(latency)) and is_number(teacher.get(latency)) and student[latency]:
        logs["final/speedup"] = teacher[latency] / student[latency]
    return logs


def summarize(folder: str, metrics: dict, task) -> str:
    """One line saying where the student is and how it scored against the teacher, in the task's own metrics (what
    `hf-distill train` prints at the end, and what [`measure_distillation`] logs)."""
    scores = []
    for metric in task.card_metrics:
        student, teacher = metrics["student"].get(metric.key), metrics["teacher"].get(metric.key)
        if is_number(student):
            versus = f" (teacher {teacher:.4g})" if is_number(teacher) else ""
            scores.append(f"{metric.label} {student:.4g}{versus}")
    split = metrics["dataset"].get("eval_file") or metrics["dataset"].get("eval_split")
    return f"Student saved to {folder}: {', '.join(scores) or 'no task metric'} on {split}"


def _first_teacher(trainer) -> PreTrainedModel | None:
    """The first teacher, the one the figures compare with, unwrapped from its placement (None: a teacher cache)."""
    teachers = getattr(trainer, "teachers", None) or []
    if not teachers:
        return None
    teacher = teachers[0]
    while not isinstance(teacher, PreTrainedModel) and hasattr(teacher, "module"):
        teacher = teacher.module
    return teacher


def add_latencies(metrics: dict, models: Mapping[str, Callable], latency: dict, rounds: int = 20, warmup: int = 2):
    """Measures `models` together ([`measure_latencies`]) at `latency`'s batch size and sequence length, and records
    each one's median and interquartile range (`latency_ms_per_batch`, `latency_iqr_ms`) in `metrics[name]`, with
    every model's speed-up against the teacher (`speedup`: median and interquartile range of the per-round ratios)
    when a teacher is among them; `latency["method"]` says how."""
    batch = latency["batch_size"]
    timings = measure_latencies(models, (batch,), latency["sequence_length"], rounds, warmup)
    for name, by_batch in timings.items():
        figures = latency_figures(by_batch[batch])
        metrics[name]["latency_ms_per_batch"] = figures["median_ms"]
        metrics[name]["latency_iqr_ms"] = figures["iqr_ms"]
        if "teacher" in timings and name != "teacher":
            metrics[name]["speedup"] = speedup_figures(timings["teacher"][batch], by_batch[batch])
    latency["method"] = LATENCY_METHOD.format(rounds=rounds, warmup=warmup)


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
        "train_sampling_strategy": str(config.train_sampling_strategy),
        "seed": config.seed,
    }


def framework_versions() -> dict[str, str]:
    import datasets
    import transformers

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
