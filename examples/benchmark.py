"""Quality and speed benchmark of distillation on the demo recipe (real model, real data). Not a unit test.

    python examples/benchmark.py [demo options, e.g. --train_examples 6000 --output_dir bench-output]

Runs the demo recipe once (teacher fine-tuning, the student without the teacher, the distilled student), then one
teacher inference pass over the training data, and prints, from that one run:

- the distilled student's test accuracy as a fraction of the teacher's;
- distilled minus no-teacher test accuracy (same student, same data, same settings);
- the time of one distillation epoch / (one student fine-tuning epoch + one teacher inference pass on the same data),
  which shows what the loss terms and bookkeeping cost on top of the passes they need (the student epoch is measured
  on the labelled tweets and scaled per example to the distillation data, which includes the transfer set);
- the peak resident memory of each phase (sampled every 50 ms).
"""

import json
import os
import threading
import time

import psutil
import torch
from demo import DemoArguments, data_arguments, prepare_tweets, run_demo, training_arguments
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
)
from tweets import minilm_path


class MemorySampler(threading.Thread):
    """Samples this process' resident memory so each phase's peak can be read off afterwards."""

    def __init__(self, interval=0.05):
        super().__init__(daemon=True)
        self.interval, self.samples, self.running = interval, [], True
        self.process = psutil.Process()

    def run(self):
        while self.running:
            self.samples.append((time.time(), self.process.memory_info().rss))
            time.sleep(self.interval)

    def peak_mb(self, start, end):
        values = [rss for t, rss in self.samples if start <= t <= end]
        return round(max(values) / 2**20) if values else None


def main():
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    sampler = MemorySampler()
    sampler.start()
    metrics = run_demo(args)

    # One teacher inference pass over the distillation run's training data, in its batches.
    paths = {split: os.path.join(args.output_dir, "data", f"{split}.csv") for split in ("train", "validation", "test")}
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    if args.unlabeled_examples:
        paths["unlabeled"] = os.path.join(args.output_dir, "data", "unlabeled.csv")
    # The distillation run's training data: the labelled tweets plus the transfer set.
    teacher = AutoModelForSequenceClassification.from_pretrained(os.path.join(args.output_dir, "teacher")).eval()
    datasets = prepare_tweets(data_arguments(args, paths, unlabeled=True), tokenizer, teacher.config)
    # The same batches as the distillation run: a Trainer with the same arguments and seed draws the same
    # length-grouped batches from the same data.
    loader = Trainer(
        model=teacher,
        args=training_arguments(args, os.path.join(args.output_dir, "teacher-pass"), 1.0),
        train_dataset=datasets["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
    ).get_train_dataloader()
    start = time.time()
    with torch.no_grad():  # as the distillation trainer runs its teacher
        for batch in loader:
            teacher(**{k: v for k, v in batch.items() if k != "labels"})
    end = time.time()
    sampler.running = False

    demo = metrics["demo"]
    epochs = demo["epochs"]["students"]
    # Distillation trains on more examples (the transfer set) than the no-teacher student: compare per example,
    # scaled to one epoch of the distillation data.
    distill_examples = metrics["dataset"]["train_examples"]
    labeled_examples = metrics["dataset"]["labeled_train_examples"]
    student_epoch = demo["train_seconds"]["baseline"] / epochs * distill_examples / labeled_examples
    distill_epoch = demo["train_seconds"]["distilled"] / epochs
    teacher_pass = end - start
    teacher, student, baseline = metrics["teacher"], metrics["student"], metrics["baseline"]
    figures = {
        "teacher_accuracy": teacher["accuracy"],
        "student_accuracy": student["accuracy"],
        "no_teacher_accuracy": baseline["accuracy"],
        "student_over_teacher_accuracy": student["accuracy"] / teacher["accuracy"],
        "distilled_minus_no_teacher_accuracy": student["accuracy"] - baseline["accuracy"],
        "student_epoch_s": student_epoch,
        "teacher_inference_pass_s": teacher_pass,
        "distillation_epoch_s": distill_epoch,
        "distillation_cost_ratio": distill_epoch / (student_epoch + teacher_pass),
        "peak_rss_mb": {
            name: sampler.peak_mb(*span) for name, span in {**demo["phases"], "teacher_pass": [start, end]}.items()
        },
        "train_examples": metrics["dataset"]["train_examples"],
        "test_examples": metrics["dataset"]["eval_examples"],
        "speed_up": teacher["latency_ms_per_batch"] / student["latency_ms_per_batch"],
        "paired": metrics["comparison"]["pooled"],
        "verdict": metrics["comparison"]["verdict"],
    }
    print("\nBenchmark (one run)")
    print(f"  student accuracy / teacher accuracy     {figures['student_over_teacher_accuracy']:.3f}")
    print(f"  distilled - no-teacher accuracy         {figures['distilled_minus_no_teacher_accuracy']:+.4f}")
    print(
        f"  distillation epoch / (student epoch + teacher pass)  {figures['distillation_cost_ratio']:.3f}  "
        f"({distill_epoch:.1f} s / ({student_epoch:.1f} s + {teacher_pass:.1f} s))"
    )
    print(
        f"  paired: only distilled right {figures['paired']['only_distilled_right']}, only no-teacher right "
        f"{figures['paired']['only_baseline_right']}, McNemar p = {figures['paired']['p_value']:.3f}: "
        f"{figures['verdict']}"
    )
    print(f"  peak RSS per phase (MB)                 {figures['peak_rss_mb']}")
    with open(os.path.join(args.output_dir, "benchmark.json"), "w") as handle:
        json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
