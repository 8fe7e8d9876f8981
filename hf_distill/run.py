"""One distillation job, from a teacher and a dataset to an evaluated student folder, for every task.

`hf-distill train`, `examples/distill.py` (what `accelerate launch` runs), the demo and Python callers all run
[`run_distillation`]; `hf-distill cache` runs [`build_cache`]. Whatever differs between tasks (the auto class, the
data preparation and collator, the metric, the card's rows) comes from the task object
([`~hf_distill.tasks.Task`]), resolved from `--task` or from the teacher's head.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from datasets import DatasetDict, concatenate_datasets
from transformers import PreTrainedModel, enable_full_determinism, set_seed

from .augment import add_augmented_transfer_set, check_augmentable
from .cache import CacheArguments, TeacherCache, build_teacher_cache, check_cache_folder, default_hidden_layers
from .config import DistillationConfig
from .cross_tokenizer import TokenizerPair
from .data import DataArguments, load_raw_datasets
from .engines import run_teacher_on_onnxruntime, sample_batches
from .layer_map import DEFAULT_STUDENT_STRATEGY, LAYER_MAP_STRATEGIES, LAYER_STRATEGIES, LayerMap
from .log import get_logger
from .measure import (
    MeasureArguments,
    compare_with_baseline,
    describe_budget,
    describe_model,
    measure_run,
    measure_student,
    summarize,
    training_budget,
    write_metrics,
)
from .output_folders import check_output_dir, last_complete_checkpoint
from .prune import calibration_batches, check_width
from .student import build_student
from .tasks import Task, get_task
from .teacher import (
    has_tokenizer,
    load_model,
    load_tokenizer,
    position_limit,
    student_label_kwargs,
    task_of_pretrained,
)
from .terms import TERMS, active_terms, needs_of
from .trainer import DistillationTrainer

logger = get_logger(__name__)

__all__ = [
    "DistillationResult",
    "StudentArguments",
    "build_cache",
    "make_student",
    "run_distillation",
]


@dataclass
class DistillationResult:
    metrics: dict | None
    log_history: list[dict]
    trainer: DistillationTrainer
    summary: str = ""  # where the student is and how it scored (what the command prints at the end)
    # The per-example scores of the task's headline metric on the evaluation split (main process), per seed:
    # {"student": [ExampleScores, ...], "baseline": [...] (with --baseline), "teacher": ExampleScores}.
    example_scores: dict | None = None
    # With --baseline: the first seed's student trained without the teacher (not saved; e.g. to time it).
    baseline_student: PreTrainedModel | None = None


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
        default=DEFAULT_STUDENT_STRATEGY,
        metadata={
            "help": f"Which teacher layers the built student copies: {', '.join(LAYER_STRATEGIES)} (the same "
            "vocabulary as layer_map: 'uniform' keeps the teacher layers that layer_map='uniform' pairs)."
        },
    )
    student_layers: str | None = field(
        default=None,
        metadata={"help": "Explicit teacher layers the built student copies, e.g. '0,2,4' (overrides the strategy)."},
    )
    student_num_heads: int | None = field(
        default=None,
        metadata={
            "help": "Width pruning: attention heads per layer of the built student, the teacher's most important "
            "ones (activation on the first calibration_examples training examples). BERT needs student_hidden_size "
            "= heads * head size too."
        },
    )
    student_intermediate_size: int | None = field(
        default=None, metadata={"help": "Width pruning: feed-forward neurons per layer of the built student."}
    )
    student_hidden_size: int | None = field(
        default=None, metadata={"help": "Width pruning: hidden size of the built student (embeddings included)."}
    )
    calibration_examples: int = field(
        default=512, metadata={"help": "Training examples on which width pruning ranks heads, neurons, channels."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "The teacher's tokenizer, path or Hub id (default: the teacher's own)."}
    )
    student_tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": "The tokenizer of the student given by student_model_name_or_path (default: the one saved with "
            "it; a student folder without tokenizer files reads the teacher's). When its vocabulary differs from "
            "the teacher's, each model reads its own tokenization of every example and the student is saved with "
            "its own tokenizer (see docs/cross-tokenizer.md)."
        },
    )

    @property
    def prunes_width(self) -> bool:
        return any(
            value is not None
            for value in (self.student_num_heads, self.student_intermediate_size, self.student_hidden_size)
        )

    def __post_init__(self):
        for name in (
            "student_num_layers",
            "student_num_heads",
            "student_intermediate_size",
            "student_hidden_size",
            "calibration_examples",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1 (--{name}), got {value!r}")
        if self.student_tokenizer_name and not self.student_model_name_or_path:
            raise ValueError(
                "student_tokenizer_name is the tokenizer of a student given by student_model_name_or_path; a student "
                "built from the teacher reads the teacher's tokens: drop it, or give student_model_name_or_path"
            )
        if self.student_layers is not None and not isinstance(self.student_layers, (list, tuple)):
            try:
                self.student_layers = [int(x) for x in str(self.student_layers).split(",") if x.strip()]
            except ValueError as error:
                raise ValueError(
                    f"student_layers must be comma-separated teacher layer indices such as '0,2,4', "
                    f"got {self.student_layers!r}"
                ) from error


def _depth_only(student_args: StudentArguments) -> StudentArguments:
    return replace(student_args, student_num_heads=None, student_intermediate_size=None, student_hidden_size=None)


def make_student(
    teacher: PreTrainedModel, student_args: StudentArguments, init_kwargs: dict | None = None, calibration=None
) -> PreTrainedModel:
    """Loads the given student (with the teacher's head), or builds one from the teacher (width-pruned on the
    `calibration` batches when the width flags ask for it)."""
    if student_args.student_model_name_or_path:
        if student_args.prunes_width:
            raise ValueError(
                "student_num_heads / student_intermediate_size / student_hidden_size shape a student built from the "
                "teacher: drop them, or drop student_model_name_or_path"
            )
        path = student_args.student_model_name_or_path
        # A base model (no head of its own labels) gets the teacher's labels: its new head predicts the same classes.
        kwargs = {**student_label_kwargs(path, teacher), **(init_kwargs or {})}
        return load_model(path, teacher, kwargs, role="student")
    if student_args.prunes_width and calibration is None:
        raise ValueError(
            "width pruning ranks the teacher's heads and neurons on training data: use `hf-distill train` with the "
            "width flags (it calibrates on the training data), or build_student(..., calibration=...) in Python"
        )
    num_layers = student_args.student_num_layers
    if num_layers is None and student_args.student_layers is None:
        num_layers = (teacher.config.num_hidden_layers + 1) // 2
    return build_student(
        teacher,
        num_layers=num_layers,
        strategy=student_args.student_layer_strategy,
        layers=student_args.student_layers,
        heads=student_args.student_num_heads,
        intermediate_size=student_args.student_intermediate_size,
        hidden_size=student_args.student_hidden_size,
        calibration=calibration,
    )


# ---- the pieces of a run


@dataclass
class _Prepared:
    """What a run and a cache build share: the task, the teachers and tokenizer, the tokenised data, the collator.

    `tokenizer` is the student's (saved with it); `tokenizers` is the pair of the teacher's and the student's when
    their vocabularies differ (the data then holds both tokenizations, see [`~hf_distill.cross_tokenizer`]), else
    `None` (one tokenizer, the teacher's, serves both).
    """

    task: Task
    teachers: list[PreTrainedModel]
    tokenizer: Any
    datasets: DatasetDict
    collator: Any
    task_args: Any
    augmented: int = 0  # the transfer-set examples made by --augment (part of datasets["unlabeled"])
    tokenizers: TokenizerPair | None = None

    @property
    def teacher_tokenizer(self):
        """The teacher's tokenizer when it differs from the student's, else `None`."""
        return self.tokenizers.teacher if self.tokenizers is not None else None

    @property
    def teacher(self) -> PreTrainedModel:
        return self.teachers[0]

    @property
    def train_dataset(self):
        """The training data: the labelled examples, then the transfer set (labels ignored) when there is one."""
        if "unlabeled" not in self.datasets:
            return self.datasets["train"]
        return concatenate_datasets([self.datasets["train"], self.datasets["unlabeled"]])

    @property
    def eval_split(self) -> str | None:
        """The split the figures are measured on: the test split when there is one, else the validation split."""
        return next((name for name in ("test", "validation") if name in self.datasets), None)


def _prepare(
    student_args: StudentArguments, data_args: DataArguments, config: DistillationConfig, task_args
) -> _Prepared:
    if config.teacher_server_url:
        raise ValueError(
            "teacher_server_url is given to DistillationTrainer (and build_teacher_cache_from_server) in Python; "
            "`hf-distill train` and `hf-distill cache` build the student from a local teacher model and measure it: "
            "see docs/engines.md"
        )
    paths = config.teacher_paths or [config.teacher_model_name_or_path]
    init_kwargs = config.teacher_model_init_kwargs
    task_class = get_task(data_args.task) if data_args.task else task_of_pretrained(paths[0], init_kwargs)
    if not data_args.task:
        logger.info(f"Task inferred from the teacher's head: {task_class.pipeline_tag}")
    # A teacher whose config names another head than --task's is refused (its head would be replaced at random).
    teachers = [load_model(paths[0], task_class, init_kwargs)]
    teachers += [load_model(path, teachers[0], init_kwargs) for path in paths[1:]]
    resolved = task_class.from_model(teachers[0])
    tokenizer = load_tokenizer(student_args.tokenizer_name or paths[0], teachers[0])
    pair = TokenizerPair.of(tokenizer, load_student_tokenizer(student_args, tokenizer))
    # One vocabulary: the teacher's tokenizer serves both, exactly as before; two: each model reads its own tokens.
    student_tokenizer = pair.student if pair is not None else tokenizer
    if pair is not None:  # before any data is read: a task without an alignment is refused at once
        logger.info(f"The student has a tokenizer of its own ({pair.difference}): each example is tokenised by both")
        pair.check_crosses(resolved, active_terms(config))
    _check_max_length(data_args, teachers[0])
    # What the teacher alone decides, checked before the data is read (the student is built after it).
    if student_args.prunes_width and not student_args.student_model_name_or_path:
        check_width(
            teachers[0],
            student_args.student_num_heads,
            student_args.student_intermediate_size,
            student_args.student_hidden_size,
        )
    if data_args.augment:
        check_augmentable(data_args, resolved, tokenizer, teachers[0])
    own_args = _own_arguments(resolved, task_args)
    raw = load_raw_datasets(data_args)
    if data_args.augment:
        raw = add_augmented_transfer_set(raw, data_args, resolved, tokenizer, teachers[0])
    teacher_tokenizer = pair.teacher if pair is not None else None
    datasets = resolved.prepare_datasets(
        raw, student_tokenizer, data_args, own_args, teachers[0].config, teacher_tokenizer=teacher_tokenizer
    )
    collator = resolved.data_collator(student_tokenizer, own_args)
    augmented = getattr(raw, "augmented_examples", 0)
    return _Prepared(resolved, teachers, student_tokenizer, datasets, collator, own_args, augmented, pair)


def load_student_tokenizer(student_args: StudentArguments, teacher_tokenizer):
    """The student's tokenizer: `student_tokenizer_name`, else the one saved with `student_model_name_or_path`, else
    (a student built from the teacher, or a student folder without tokenizer files) the teacher's."""
    name = student_args.student_tokenizer_name
    path = student_args.student_model_name_or_path
    if name is None and path is not None and has_tokenizer(path):
        name = path
    return teacher_tokenizer if name is None else load_tokenizer(name, role="student")


def _check_max_length(data_args: DataArguments, model: PreTrainedModel, role: str = "teacher") -> None:
    """Refuses a `--max_length` longer than the teacher's position embeddings (a student built from it shares them),
    or than a given student's (`role="student"`, checked once the data is tokenised): the first longer batch would
    fail with a tensor-size error. Left at its default, it is lowered to the teacher's limit instead."""
    limit = position_limit(model)
    if limit is None or data_args.max_length <= limit:
        return
    if role == "teacher" and data_args.max_length == DataArguments.__dataclass_fields__["max_length"].default:
        logger.info(f"max_length lowered from its default {data_args.max_length} to {limit}, the teacher's limit")
        data_args.max_length = limit
        return
    raise ValueError(
        f"--max_length {data_args.max_length} is longer than the {role}'s {limit} position embeddings "
        f"({type(model).__name__}, max_position_embeddings={limit}): give --max_length {limit} or less"
    )


def _start(config: DistillationConfig) -> str | bool | None:
    """What a run checks about its output folder before anything is written; returns the checkpoint to resume from.

    The output folder must not be a teacher's, nor hold anything else than this tool's outputs unless
    `overwrite_output_dir` says so ([`~hf_distill.output_folders.check_output_dir`]). `resume_from_checkpoint=True`
    means the newest checkpoint whose saving finished (a half-written one, left by an interruption, is skipped).
    """
    check_output_dir(config.output_dir, protected=config.teacher_paths, overwrite=config.overwrite_output_dir)
    resume = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume is True:
        resume = last_complete_checkpoint(config.output_dir)
        if resume is None:
            raise ValueError(
                f"resume_from_checkpoint=True but {config.output_dir!r} holds no complete checkpoint-N folder: give "
                "the checkpoint folder to resume from, or drop --resume_from_checkpoint to start afresh"
            )
        logger.info(f"Resuming from {resume}")
    return resume or None


def _check_layer_map(config: DistillationConfig, teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Checks explicit layer-map pairs against the layer counts whether or not a loss uses them (a typo is named at
    start-up, not recorded silently), and says when no active loss uses the layer map."""
    if isinstance(config.layer_map, str) and config.layer_map in LAYER_MAP_STRATEGIES:
        return
    used = bool(needs_of(active_terms(config)) & {"hidden_states", "attentions"})
    unused = "no active loss compares layers (hidden_weight, attention_weight and similarity_weight are 0)"
    try:
        LayerMap.from_spec(config.layer_map, teacher.config.num_hidden_layers, student.config.num_hidden_layers)
    except ValueError as error:
        raise ValueError(f"{error}{'' if used else f'. It is unused: {unused}; fix it or drop --layer_map'}") from None
    if not used:
        logger.warning(f"layer_map {config.layer_map} is unused: {unused}; it is not recorded in the metrics or card")


def _own_arguments(task: Task, task_args: Iterable | Any) -> Any:
    """The instance of the task's own data arguments among `task_args` (a default one when none is given)."""
    wanted = task.data_arguments
    candidates = task_args if isinstance(task_args, (list, tuple)) else [task_args]
    return task.task_arguments(next((a for a in candidates if wanted and isinstance(a, wanted)), None))


def describe_data(data_args: DataArguments, datasets: DatasetDict, eval_split: str, augmented: int = 0) -> dict:
    """What the metrics file and the card say about the data: its name, how many labelled and unlabelled examples the
    student learnt from, and where the evaluation examples come from (truthfully: the test or validation file, or the
    share of the training file held out); `augmented`: how many of the unlabelled examples `--augment` made."""
    facts: dict[str, Any] = {}
    if data_args.dataset_name:
        facts["name"] = data_args.dataset_name
    elif data_args.train_file:
        facts["name"] = os.path.basename(data_args.train_file)
    facts["train_examples"] = len(datasets["train"])
    if "unlabeled" in datasets:
        facts["unlabeled_examples"] = len(datasets["unlabeled"])
        if augmented:
            facts["augmented_examples"] = augmented
    facts["eval_split"] = eval_split
    if not data_args.dataset_name:
        given = data_args.test_file if eval_split == "test" else data_args.validation_file
        if given:
            facts["eval_file"] = os.path.basename(given)
        elif data_args.train_file:
            facts["eval_file"] = (
                f"{os.path.basename(data_args.train_file)} ({data_args.validation_split_percentage}% held out, "
                "not trained on)"
            )
    return facts


# ---- the run


def run_distillation(
    student_args: StudentArguments,
    data_args: DataArguments,
    config: DistillationConfig,
    measure_args: MeasureArguments | None = None,
    *,
    task_args: Iterable | Any = (),
    callbacks: list | None = None,
) -> DistillationResult:
    """Distils the teacher of `config` into a student on `data_args`' data; saves, measures and describes it.

    Args:
        student_args ([`StudentArguments`]): the student to build or load.
        data_args ([`DataArguments`]): the data, and the task (`data_args.task`; default: the teacher's head's).
        config ([`DistillationConfig`]): the training and distillation settings (the teacher(s) among them).
        measure_args ([`MeasureArguments`], *optional*): what to measure after training.
        task_args: the task's own data arguments (one dataclass instance, or several of which the task's is used).
        callbacks (`list`, *optional*): Trainer callbacks.

    Writes the student folder (`config.output_dir`): model, tokenizer, `distillation_metrics.json` and `README.md`
    (the model card), then pushes it when `config.push_to_hub` is set. Returns the metrics (on the main process) and
    the training log.
    """
    resume = _start(config)
    measure_args = measure_args or MeasureArguments()
    # Before any model is made: a student loaded from a base checkpoint gets a new head, initialised at random, and
    # the same seed must give it the same weights (as transformers' example scripts seed before from_pretrained).
    enable_full_determinism(config.seed) if config.full_determinism else set_seed(config.seed)
    prepared = _prepare(student_args, data_args, config, task_args)
    datasets = prepared.datasets
    calibration = None
    if student_args.prunes_width and not student_args.student_model_name_or_path:
        calibration = calibration_batches(
            datasets["train"], prepared.collator, student_args.calibration_examples, config.per_device_train_batch_size
        )
    student = make_student(prepared.teacher, student_args, calibration=calibration)
    if student_args.student_model_name_or_path:
        _check_max_length(data_args, student, role="student")
    _check_layer_map(config, prepared.teacher, student)
    comparing = measure_args.baseline or measure_args.seeds > 1
    if comparing:
        _check_comparable(prepared, measure_args)
    # Every run of a comparison starts from these weights, bit for bit.
    initial = copy.deepcopy(student) if comparing else None
    trainer = _trainer(prepared, student, config, prepared.train_dataset, callbacks)
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(_internal_call=True)
    eval_split = prepared.eval_split
    metrics = example_scores = baseline_student = None
    if eval_split is None:
        logger.warning("No validation or test split: the student is saved unmeasured, with a card without figures")
        if trainer.is_world_process_zero():
            trainer.create_model_card()
    else:
        measured = measure_run(
            trainer,
            datasets[eval_split],
            measure_args=measure_args,
            task_args=prepared.task_args,
            dataset=describe_data(data_args, datasets, eval_split, prepared.augmented),
            train_result=train_result,
            write=not comparing,
        )
        if comparing:
            sections, example_scores, baseline_student = _compare(
                prepared, initial, config, measure_args, trainer, measured, callbacks
            )
            if measured is not None:
                example_scores["teacher"] = measured[1].get("teacher")
                metrics = measured[0]
                metrics.update(sections)
                write_metrics(config.output_dir, metrics)
                trainer.create_model_card()
                if "comparison" in metrics:
                    comparison = metrics["comparison"]
                    logger.info(f"Was it worth it? {comparison['verdict']}")
                    logger.info(describe_budget(comparison["budget"]))
                    # The trackers of `report_to` get the comparison's figures too.
                    trainer.log(
                        {
                            f"final/baseline_{comparison['metric']}": comparison["mean"]["baseline"],
                            "final/distilled_minus_baseline": comparison["mean"]["difference"],
                            "final/distilled_vs_baseline_p_value": comparison["pooled"]["p_value"],
                        }
                    )
        elif measured is not None:
            metrics = measured[0]
            scores = measured[1]
            example_scores = {"student": [scores["student"]], "baseline": [], "teacher": scores.get("teacher")}
    summary = summarize(config.output_dir, metrics, prepared.task) if metrics is not None else ""
    if metrics is not None and "comparison" in metrics:
        summary += f"\nAgainst the same student trained without the teacher: {metrics['comparison']['verdict']}"
        summary += f"\n{describe_budget(metrics['comparison']['budget'])}"
    # The push comes last, once the metrics and the card are in the folder.
    if config.push_to_hub:
        trainer.push_to_hub(commit_message="Distilled student, with its metrics and model card")
    return DistillationResult(
        metrics,
        trainer.state.log_history,
        trainer,
        summary,
        example_scores,
        baseline_student,
    )


def _trainer(prepared: _Prepared, student, config: DistillationConfig, train_dataset, callbacks, teacher=None):
    """The run's trainer: the student, the teacher(s) (or `teacher`), the data, the task's evaluation."""
    validation = prepared.datasets.get("validation")
    evaluation = prepared.task.evaluation(validation, prepared.teacher.config, prepared.task_args)
    if teacher is None:
        teacher = prepared.teachers if len(prepared.teachers) > 1 else prepared.teacher
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=validation,
        data_collator=prepared.collator,
        processing_class=prepared.tokenizer,
        teacher_processing_class=prepared.teacher_tokenizer,
        compute_metrics=evaluation.compute_metrics,
        preprocess_logits_for_metrics=evaluation.preprocess_logits_for_metrics,
        callbacks=callbacks,
    )


# ---- was it worth it? the no-teacher baseline and several seeds


def baseline_config(config: DistillationConfig, **changes) -> DistillationConfig:
    """The settings of the no-teacher baseline: `config` with the hard-label loss alone (weight 1, every teacher term
    0) on the dataset's own batches (no teacher cache; no on-policy or sequence-level completions: with `seq_kd` the
    teacher would write the baseline's text, with `lmbda` the baseline would learn its own samples); everything else
    (seed, epochs or max_steps, batch size, learning rate, schedule, batch order) as given. With `changes` (e.g.
    another seed or output folder) applied too."""
    weights = {term.weight_field: 0.0 for term in TERMS.values()}
    weights[TERMS["label"].weight_field] = 1.0
    return side_config(config, **weights, teacher_cache=None, lmbda=0.0, seq_kd=False, **changes)


def side_config(config: DistillationConfig, **changes) -> DistillationConfig:
    """`config` for a run of a comparison that is not the saved one (another seed, the baseline): nothing saved or
    pushed, not reported to the trackers (its figures go into the metrics file of the saved run)."""
    quiet = {"save_strategy": "no", "push_to_hub": False, "report_to": "none", "resume_from_checkpoint": None}
    return dataclasses.replace(config, **{**quiet, **changes})


def _check_comparable(prepared: _Prepared, measure_args: MeasureArguments) -> None:
    """A comparison needs evaluation data, and (for --baseline) the task's per-example scores and labelled data."""
    task = prepared.task.pipeline_tag
    if prepared.eval_split is None:
        raise ValueError(
            "--baseline and --seeds compare models on evaluation data, and this run has none: give --validation_file "
            "or --test_file, or keep --validation_split_percentage above 0"
        )
    evaluation = prepared.task.evaluation(
        prepared.datasets[prepared.eval_split], prepared.teacher.config, prepared.task_args
    )
    if measure_args.baseline and evaluation.example_scores is None:
        raise ValueError(f"--baseline needs per-example scores of the {task} metric, which this task does not give")


def _compare(prepared, initial, config, measure_args, trainer, measured, callbacks) -> tuple[dict, dict, Any]:
    """Trains the other seeds' students and (with --baseline) every seed's no-teacher baseline, all from `initial`;
    measures each on the evaluation split; returns the metrics sections `baseline`, `seeds` and `comparison`, the
    per-example scores of the students and baselines (both empty on the other processes), and the first baseline.

    The baseline of each seed trains for as many optimizer steps as that seed's distilled run
    (`measure_args.baseline_budget="steps"`), or for the same epochs over the labelled examples (`"epochs"`)."""
    eval_dataset = prepared.datasets[prepared.eval_split]
    evaluation = prepared.task.evaluation(eval_dataset, prepared.teacher.config, prepared.task_args)
    seeds = [config.seed + i for i in range(measure_args.seeds)]
    main = measured[1]["student"] if measured is not None else None
    students = [(measured[0]["student"] if measured is not None else {}, main)]
    runs = [_run_facts(trainer, measured[0]["training"].get("train_runtime_s") if measured is not None else None)]
    baselines, baseline_runs, baseline_student = [], [], None
    labelled = prepared.datasets["train"]
    with tempfile.TemporaryDirectory(prefix="hf-distill-side-runs-") as scratch:
        for seed in seeds:
            if seed != config.seed:
                side = side_config(config, seed=seed, output_dir=os.path.join(scratch, f"seed-{seed}"))
                other = _trainer(prepared, copy.deepcopy(initial), side, prepared.train_dataset, callbacks)
                result = other.train()
                runs.append(_run_facts(other, result.metrics.get("train_runtime")))
                students.append(measure_student(other, eval_dataset, evaluation, f"Measuring the seed-{seed} student"))
            if measure_args.baseline:
                # As long as this seed's distilled run, in optimizer steps (the default) or in epochs.
                length = {"max_steps": runs[-1]["optimizer_steps"]} if measure_args.baseline_budget == "steps" else {}
                folder = os.path.join(scratch, f"baseline-{seed}")
                side = baseline_config(config, seed=seed, output_dir=folder, **length)
                # The teacher is there for the agreement figures of evaluation only: no term needs it in training.
                baseline = _trainer(prepared, copy.deepcopy(initial), side, labelled, callbacks, prepared.teacher)
                result = baseline.train()
                baseline_runs.append(_run_facts(baseline, result.metrics.get("train_runtime")))
                figures, scores = measure_student(baseline, eval_dataset, evaluation, "Measuring the baseline")
                figures.update(describe_model(baseline.student), train_examples=len(labelled), **baseline_runs[-1])
                baselines.append((figures, scores))
                baseline_student = baseline_student or baseline.student
    if measured is None:  # not the main process
        return {}, {}, baseline_student
    example_scores = {"student": [scores for _, scores in students], "baseline": [scores for _, scores in baselines]}
    metric = prepared.task.card_metrics[0]
    sections: dict = {}
    if len(seeds) > 1:
        values = [facts.get(metric.key) for facts, _ in students]
        sections["seeds"] = {
            "seeds": seeds,
            "metric": metric.key,
            "student": values,
            "student_mean": statistics.fmean(values),
            "student_std": statistics.stdev(values),
        }
    if measure_args.baseline:
        first, _ = baselines[0]
        sections["baseline"] = {**first, "seed": config.seed}
        budget = training_budget(
            measure_args.baseline_budget,
            {"train_examples": len(prepared.train_dataset), **runs[0]},
            {"train_examples": len(labelled), **baseline_runs[0]},
        )
        sections["comparison"] = compare_with_baseline(
            [scores for _, scores in students],
            [scores for _, scores in baselines],
            seeds,
            metric,
            [({**s, **run}, b) for (s, _), run, (b, _) in zip(students, runs, baselines)],
            budget=budget,
        )
    return sections, example_scores, baseline_student


def _run_facts(trainer: DistillationTrainer, runtime: float | None) -> dict:
    """How long a finished run trained: optimizer steps, epochs over its own training examples, seconds."""
    facts = {"optimizer_steps": trainer.state.global_step, "epochs": round(float(trainer.state.epoch or 0.0), 2)}
    if runtime is not None:
        facts["train_runtime_s"] = round(runtime, 1)
    return facts


def build_cache(
    student_args: StudentArguments,
    data_args: DataArguments,
    config: DistillationConfig,
    cache_args: CacheArguments,
    *,
    task_args: Iterable | Any = (),
) -> TeacherCache:
    """Runs the recipe's teacher once over the recipe's training data and stores its outputs in
    `cache_args.cache_dir`: what `hf-distill cache` does. Train with `--teacher_cache` on the same recipe.

    By default the cache holds all logits and the hidden states that the recipe's layer losses will compare (the
    teacher layers of its layer map for the recipe's student).
    """
    if len(config.teacher_paths) > 1:
        raise ValueError("a teacher cache holds one teacher's outputs; give a single teacher_model_name_or_path")
    cache_args.check_recipe(config)
    check_cache_folder(cache_args.cache_dir)  # before the teacher runs, as the build checks it again
    prepared = _prepare(student_args, data_args, config, task_args)
    teacher = prepared.teacher
    hidden_layers = cache_args.hidden_layers
    if hidden_layers is None:  # those the recipe's active loss terms compare (the student is built only if needed)
        hidden_layers = default_hidden_layers(
            config,
            teacher.config.num_hidden_layers,
            # the layer count only: a width-pruned student has the same depth (and needs no calibration for it)
            lambda: make_student(teacher, _depth_only(student_args)).config.num_hidden_layers,
        )
    dataset, tokenizer, collator = prepared.train_dataset, prepared.tokenizer, prepared.collator
    pair = prepared.tokenizers
    if pair is not None:
        # The recipe's student has another tokenizer: the cache holds the teacher's outputs on its own tokenization,
        # which serves a student of any tokenizer whose paired data carries the same teacher tokens.
        dataset, tokenizer = pair.teacher_view(dataset, prepared.task), pair.teacher
        collator = prepared.task.data_collator(tokenizer, prepared.task_args)
    if config.teacher_engine != "pytorch":  # the teacher's passes on onnxruntime, checked on the first examples
        layers = hidden_layers or []
        if layers == "all":
            layers = range(teacher.config.num_hidden_layers + 1)
        elif isinstance(layers, str):
            layers = [int(x) for x in layers.split(",") if x.strip()]
        sample = sample_batches(dataset, collator, batch_size=cache_args.cache_batch_size)
        run_teacher_on_onnxruntime(
            teacher, sample, config.teacher_engine, layers, config.temperature, config.teacher_engine_max_kl
        )
    return build_teacher_cache(
        teacher,
        dataset,
        replace(cache_args, hidden_layers=hidden_layers),  # the recipe's layers when none were given
        tokenizer=tokenizer,
        data_collator=collator,
        temperature=config.temperature,
        device=config.device,
        progress=not config.disable_tqdm,
    )
