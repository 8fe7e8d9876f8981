"""How good a teacher does the tweets job's fine-tuning make? Teacher accuracy against its fine-tuning length.

    python benchmarks/teacher_sweep.py --output_dir teacher-sweep [--settings 2:5e-5,4:5e-5,6:5e-5,4:1e-4]

A teacher can only teach what it knows: when a 3-layer student trained alone for long enough matches the teacher,
distillation has nothing left to add. Each setting (epochs:learning rate) fine-tunes MiniLM-L6 with a new head on the
demo's 6,000 labelled tweets (examples/tweets.py, seed 0), and measures it on the validation tweets and on the study
split of benchmarks/gain_study.py (2,000 tweets that are neither training nor test tweets). Settings run two at a
time, one thread each; a finished teacher is kept and measured again without training.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_results  # noqa: E402
from gain_study import SPLITS  # noqa: E402


@dataclass
class SweepArguments:
    output_dir: str = field(default="teacher-sweep", metadata={"help": "Where the teachers and results are kept."})
    settings: str = field(
        default="2:5e-5,4:5e-5,6:5e-5,4:1e-4", metadata={"help": "Comma-separated epochs:learning_rate pairs."}
    )
    workers: int = field(default=2, metadata={"help": "Teachers trained side by side, one thread each."})


def accuracy(model_dir: str, csv: str) -> float:
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from hf_distill.data import DataArguments, load_raw_datasets
    from hf_distill.measure import predict
    from hf_distill.tasks import get_task

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data_args = DataArguments(train_file=csv, validation_split_percentage=0, text_column="text", max_length=64)
    dataset = get_task("text-classification")().prepare_datasets(
        load_raw_datasets(data_args), tokenizer, data_args, None, model.config
    )["train"]
    logits = predict(model, dataset, DataCollatorWithPadding(tokenizer), 64)[0]
    return float(np.mean(logits.argmax(-1) == np.asarray(list(dataset["labels"]))))


def train_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from tweets import fine_tune_teacher

    folder, paths = job["folder"], job["paths"]
    record_path = os.path.join(folder, "teacher.json")
    if os.path.isfile(record_path):
        with open(record_path) as handle:
            return json.load(handle)
    seconds = None
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):  # a teacher made before: measured only
        seconds = round(fine_tune_teacher(paths, folder, job["epochs"], seed=0, learning_rate=job["learning_rate"]), 1)
    record = {
        "epochs": job["epochs"],
        "learning_rate": job["learning_rate"],
        "train_runtime_s": seconds,
        "validation_accuracy": accuracy(folder, paths["validation"]),
        "study_accuracy": accuracy(folder, paths["study"]),
    }
    with open(record_path, "w") as handle:
        json.dump(record, handle, indent=2)
    return record


def main(argv=None) -> None:
    from transformers import HfArgumentParser
    from tweets import write_splits

    (args,) = HfArgumentParser(SweepArguments).parse_args_into_dataclasses(args=argv)
    paths = write_splits(os.path.join(args.output_dir, "data"), SPLITS, seed=0)
    jobs = []
    for setting in args.settings.split(","):
        epochs, rate = setting.split(":")
        folder = os.path.join(args.output_dir, f"teacher-{epochs}ep-lr{rate}")
        jobs.append({"epochs": float(epochs), "learning_rate": float(rate), "folder": folder, "paths": paths})
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        records = list(pool.map(train_one, jobs))
    for record in records:
        print(
            f"{record['epochs']:g} epochs, lr {record['learning_rate']:g}: validation "
            f"{record['validation_accuracy']:.4f}, study split {record['study_accuracy']:.4f} "
            f"({record['train_runtime_s']} s)"
        )
    write_results(
        "teacher_sweep",
        {
            "job": "MiniLM-L6 + a new head on the demo's 6,000 labelled tweets, batch 32, seed 0",
            "settings": args.settings,
        },
        {"teachers": records},
        ["Teachers trained two at a time, one thread each, on a shared 2-core machine: seconds are indicative."],
    )


if __name__ == "__main__":
    main()
