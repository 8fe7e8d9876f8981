"""Measuring a model: task metrics, agreement with the teacher, parameters, size on disk, CPU latency."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction, PreTrainedModel, Trainer, TrainingArguments

WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin")


def classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro-F1 from a Trainer's predictions (`compute_metrics` for classification)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = np.asarray(logits).argmax(-1)
    labels = np.asarray(prediction.label_ids)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro")),
    }


def predict_logits(
    model: PreTrainedModel, dataset: Dataset, data_collator, batch_size: int = 64, use_cpu: bool | None = None
) -> np.ndarray:
    """The model's logits over a tokenised dataset, batched by `Trainer.predict` (with its progress bar)."""
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            use_cpu=bool(use_cpu) if use_cpu is not None else not torch.cuda.is_available(),
        )
        predictions = Trainer(model=model, args=args, data_collator=data_collator).predict(dataset).predictions
    return predictions[0] if isinstance(predictions, tuple) else predictions


def weights_size_bytes(folder: str) -> int:
    """Bytes of the weight files in a saved model folder (what a user downloads to run it)."""
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for name in os.listdir(folder)
        if name.endswith(WEIGHT_FILE_SUFFIXES) and not name.startswith(("training_args", "optimizer", "scheduler"))
    )


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


def describe_model(
    model: PreTrainedModel, folder: str | None, latency: dict | None = None
) -> dict[str, int | float | str]:
    """Size figures of a model: layers, width, parameters, bytes on disk, and latency if `latency` settings given."""
    facts = {
        "num_layers": model.config.num_hidden_layers,
        "hidden_size": model.config.hidden_size,
        "parameters": model.num_parameters(),
    }
    if folder is not None and os.path.isdir(folder):
        facts["size_bytes"] = weights_size_bytes(folder)
    if latency is not None:
        facts["latency_ms_per_batch"] = round(
            measure_latency_ms(model, latency["batch_size"], latency["sequence_length"]), 2
        )
    return facts


def score_predictions(logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1 and, given the teacher's logits, the share of examples where both predict the same class."""
    predicted = logits.argmax(-1)
    scores = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro")),
    }
    if teacher_logits is not None:
        scores["teacher_agreement"] = float((predicted == teacher_logits.argmax(-1)).mean())
    return scores
