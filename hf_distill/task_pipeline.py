"""One distillation job for token classification, question answering, masked or causal language modelling.

The counterpart of [`hf_distill.pipeline.run_distillation`] (text classification), with the same student options,
outputs and metrics file: the teacher is loaded with its task's auto class, the data is prepared for the task
([`hf_distill.task_data`]), the student is evaluated with the task's usual metric ([`hf_distill.task_evaluation`]),
and the student folder gets `distillation_metrics.json` and a model card.
"""

from __future__ import annotations

from transformers import DataCollatorWithPadding
from transformers.utils import logging

from .cache import CacheArguments, TeacherCache, build_teacher_cache, default_hidden_layers
from .config import DistillationConfig
from .data import DataArguments, prepare_text_classification
from .evaluation import describe_model
from .pipeline import (
    DistillationResult,
    MeasureArguments,
    StudentArguments,
    check_teacher_path,
    finish_run,
    framework_versions,
    latency_settings,
    load_teacher_and_tokenizer,
    load_teachers,
    make_student,
    run_distillation,
    training_settings,
)
from .task_data import TaskDataArguments, collator_for, load_task_datasets
from .task_evaluation import TaskEvaluation, score_model, task_evaluation
from .tasks import PIPELINE_TASKS, resolve_task_name
from .teacher import infer_task
from .trainer import DistillationTrainer

logger = logging.get_logger(__name__)


def run(
    student_args: StudentArguments,
    data_args: DataArguments,
    task_args: TaskDataArguments,
    config: DistillationConfig,
    measure_args: MeasureArguments | None = None,
    callbacks: list | None = None,
) -> DistillationResult:
    """Runs the distillation of `task_args.task` (default: the teacher's task): what `hf-distill train` does."""
    task = task_of(task_args, config)
    if task == "sequence-classification":
        return run_distillation(student_args, data_args, config, measure_args, callbacks)
    return run_task_distillation(task, student_args, data_args, task_args, config, measure_args, callbacks)


def task_of(task_args: TaskDataArguments, config: DistillationConfig) -> str:
    """`--task` when given, else the task of the (first) teacher's head."""
    if task_args.task is not None:
        return resolve_task_name(task_args.task)
    check_teacher_path(config.teacher_paths[0] if config.teacher_paths else None)
    task = infer_task(config.teacher_paths[0], config.teacher_model_init_kwargs)
    logger.info(f"Task inferred from the teacher's head: {PIPELINE_TASKS[task]}")
    return task


def build_cache(
    student_args: StudentArguments,
    data_args: DataArguments,
    task_args: TaskDataArguments,
    config: DistillationConfig,
    cache_args: CacheArguments,
) -> TeacherCache:
    """Runs the recipe's teacher once over the recipe's training data and stores its outputs in
    `cache_args.cache_dir`: what `hf-distill cache` does. Train with `--teacher_cache` on the same recipe.

    By default the cache holds the hidden states that the recipe's loss terms will compare (the teacher layers of its
    layer map for the recipe's student, when a term compares hidden states), and all logits.
    """
    task = task_of(task_args, config)
    if len(config.teacher_paths) > 1:
        raise ValueError("a teacher cache holds one teacher's outputs; give a single teacher_model_name_or_path")
    teacher, tokenizer = load_teacher_and_tokenizer(
        config.teacher_model_name_or_path, config.teacher_model_init_kwargs, student_args.tokenizer_name, task=task
    )
    if task == "sequence-classification":
        datasets, _ = prepare_text_classification(data_args, tokenizer, id2label=teacher.config.id2label)
        collator = DataCollatorWithPadding(tokenizer)
    else:
        datasets = load_task_datasets(task, data_args, task_args, tokenizer, teacher.config)
        collator = collator_for(task, tokenizer, task_args)
    hidden_layers = cache_args.hidden_layers
    if hidden_layers is None:
        hidden_layers = default_hidden_layers(
            config,
            teacher.config.num_hidden_layers,
            lambda: make_student(teacher, student_args).config.num_hidden_layers,
        )
    return build_teacher_cache(
        teacher,
        datasets["train"],
        cache_args.cache_dir,
        tokenizer=tokenizer,
        data_collator=collator,
        top_k=cache_args.top_k,
        temperature=config.temperature,
        hidden_layers=hidden_layers,
        hidden_dtype=cache_args.hidden_dtype,
        batch_size=cache_args.cache_batch_size,
        shard_size=cache_args.shard_size,
        device=config.device,
        progress=not config.disable_tqdm,
    )


def run_task_distillation(
    task: str,
    student_args: StudentArguments,
    data_args: DataArguments,
    task_args: TaskDataArguments,
    config: DistillationConfig,
    measure_args: MeasureArguments | None = None,
    callbacks: list | None = None,
) -> DistillationResult:
    """Distils the teacher of `config` into a student for `task` (token-classification, question-answering,
    masked-lm or causal-lm), on `data_args`' data; saves the student with its metrics file and model card."""
    task = resolve_task_name(task)
    measure_args = measure_args or MeasureArguments()
    teachers, tokenizer = load_teachers(config, student_args.tokenizer_name, task=task)
    teacher = teachers[0]
    datasets = load_task_datasets(task, data_args, task_args, tokenizer, teacher.config)
    student = make_student(teacher, student_args)
    collator = collator_for(task, tokenizer, task_args)

    def evaluation_of(split: str) -> TaskEvaluation:
        return task_evaluation(task, datasets[split], teacher.config.id2label, task_args.max_answer_length)

    evaluation = evaluation_of("validation")
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teachers if len(teachers) > 1 else teacher,
        args=config,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=evaluation.compute_metrics,
        preprocess_logits_for_metrics=evaluation.preprocess_logits_for_metrics,
        callbacks=callbacks,
    )
    train_result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(_internal_call=True)

    # Fidelity to the teacher on the final split, on every process (evaluation gathers across processes).
    eval_split = "test" if "test" in datasets else "validation"
    final = evaluation_of(eval_split)
    trainer.compute_metrics = final.compute_metrics
    trainer.preprocess_logits_for_metrics = final.preprocess_logits_for_metrics
    fidelity = trainer.evaluate(datasets[eval_split], metric_key_prefix="final")
    metrics = None
    if trainer.is_world_process_zero():
        metrics = measure_task_models(
            trainer,
            teacher,
            datasets[eval_split],
            collator,
            final,
            config,
            measure_args,
            fidelity,
        )
    return finish_run(trainer, metrics, PIPELINE_TASKS[task], data_args, datasets, eval_split, train_result)


def measure_task_models(
    trainer: DistillationTrainer,
    teacher,
    dataset,
    collator,
    evaluation: TaskEvaluation,
    config: DistillationConfig,
    measure_args: MeasureArguments,
    fidelity: dict,
) -> dict:
    """The metrics file's content: each model's task metrics and size, and the student's agreement with the teacher
    (argmax agreement and KL at the scored items: tokens, masked or next tokens, span positions)."""
    latency = latency_settings(measure_args, trainer.student.device)
    batch = config.per_device_eval_batch_size
    teacher_facts = describe_model(teacher, config.teacher_paths[0], latency)
    student_facts = describe_model(trainer.student, config.output_dir, latency)
    teacher_facts.update(score_model(teacher, dataset, collator, evaluation, batch, config.use_cpu))
    teacher_facts["name_or_path"] = config.teacher_paths[0]
    student_facts.update(score_model(trainer.student, dataset, collator, evaluation, batch, config.use_cpu))
    for name in ("teacher_agreement", "teacher_kl"):
        if f"final_{name}" in fidelity:
            student_facts[name] = fidelity[f"final_{name}"]
    student_facts["teacher_layers"] = getattr(trainer.student.config, "distillation_teacher_layers", None)
    metrics = {"teacher": teacher_facts, "student": student_facts, "distillation": trainer.distillation_settings()}
    if latency is not None:
        metrics["latency"] = latency
    metrics["training"] = training_settings(config)
    metrics["framework_versions"] = framework_versions()
    return metrics
