"""Each task's usual metric, computed from a Trainer's predictions (`compute_metrics`), and a model's scores.

- token classification: entity precision / recall / F1 (seqeval style) and token accuracy;
- question answering: the best span of each question, mapped back to the context, scored by exact match and F1;
- masked and causal LM: perplexity (`exp` of the mean token loss at the scored positions) and top-1 accuracy.

The LM metrics reduce each batch to per-example sums (`preprocess_logits_for_metrics`), so evaluation never holds the
vocabulary-sized logits of the whole evaluation set.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction, PreTrainedModel, Trainer, TrainingArguments

from .metrics import entity_scores, perplexity, squad_scores
from .tasks import IGNORE_INDEX


@dataclass
class TaskEvaluation:
    """What a Trainer needs to compute a task's metric: `compute_metrics` and `preprocess_logits_for_metrics`."""

    compute_metrics: Callable[[EvalPrediction], dict[str, float]]
    preprocess_logits_for_metrics: Callable | None = None


def task_evaluation(task: str, eval_dataset=None, id2label: dict | None = None, max_answer_length: int = 30):
    """The [`TaskEvaluation`] of `task` (hf_distill's task name) on `eval_dataset` (question answering reads the
    offsets, contexts and answers of the evaluation rows, in order)."""
    if task == "token-classification":
        return TaskEvaluation(TokenClassificationMetrics(id2label), argmax_logits)
    if task == "question-answering":
        return TaskEvaluation(QuestionAnsweringMetrics(eval_dataset, max_answer_length))
    if task in ("masked-lm", "causal-lm"):
        return TaskEvaluation(language_model_metrics, LanguageModelStatistics(shift=task == "causal-lm"))
    raise ValueError(f"no evaluation for task {task!r}")


# ---- token classification ------------------------------------------------------------------------------------------


def argmax_logits(logits, labels):
    return logits.argmax(-1)


class TokenClassificationMetrics:
    """Entity F1 over the labelled tokens (labels -100 are sub-tokens and padding: not scored)."""

    def __init__(self, id2label: dict):
        self.id2label = {int(k): v for k, v in id2label.items()}

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        predicted = np.asarray(prediction.predictions)
        if predicted.ndim == 3:
            predicted = predicted.argmax(-1)
        labels = np.asarray(prediction.label_ids)
        references, guesses = [], []
        for row_labels, row_predicted in zip(labels, predicted):
            scored = row_labels != IGNORE_INDEX
            references.append([self.id2label[int(i)] for i in row_labels[scored]])
            guesses.append([self.id2label.get(int(i), "O") for i in row_predicted[scored]])
        return entity_scores(references, guesses)


# ---- question answering --------------------------------------------------------------------------------------------


def best_span(start_logits, end_logits, offsets, max_answer_length: int = 30, n_best: int = 20) -> tuple[int, int]:
    """The context span `(start, end)` (token indices, end included) with the highest start + end logit, among the
    `n_best` best starts and ends; `(-1, -1)` when the context has no token. Padding positions (beyond `offsets`) and
    tokens outside the context (offset `None`) are never chosen."""
    length = len(offsets)
    starts = np.argsort(start_logits[:length])[::-1][:n_best]
    ends = np.argsort(end_logits[:length])[::-1][:n_best]
    best, best_score = (-1, -1), -np.inf
    for s in starts:
        for e in ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = start_logits[s] + end_logits[e]
            if score > best_score:
                best, best_score = (int(s), int(e)), score
    return best


class QuestionAnsweringMetrics:
    """Exact match and F1 of the predicted answer strings, for the rows of `eval_dataset` in order (one feature
    per question, with `offset_mapping` (`None` outside the context), `context` and `answers`)."""

    def __init__(self, eval_dataset, max_answer_length: int = 30):
        self.offsets = eval_dataset["offset_mapping"]
        self.contexts = eval_dataset["context"]
        self.answers = [a.get("text") or [] for a in eval_dataset["answers"]]
        self.max_answer_length = max_answer_length

    def answer_texts(self, start_logits: np.ndarray, end_logits: np.ndarray) -> list[str]:
        texts = []
        for i, (offsets, context) in enumerate(zip(self.offsets, self.contexts)):
            s, e = best_span(start_logits[i], end_logits[i], offsets, self.max_answer_length)
            texts.append("" if s < 0 else context[offsets[s][0] : offsets[e][1]])
        return texts

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        start_logits, end_logits = (np.asarray(p) for p in prediction.predictions[:2])
        if len(start_logits) != len(self.contexts):
            raise ValueError(
                f"{len(start_logits)} predictions for {len(self.contexts)} evaluation questions: these metrics "
                "were built for another evaluation set"
            )
        return squad_scores(self.answer_texts(start_logits, end_logits), self.answers)


# ---- language models -----------------------------------------------------------------------------------------------


class LanguageModelStatistics:
    """`preprocess_logits_for_metrics` for LMs: per example, the summed token loss, the number of scored tokens, and
    how many the top-1 prediction gets right (`shift` for causal LMs: logits at i score the label at i + 1)."""

    def __init__(self, shift: bool):
        self.shift = shift

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, tuple):
            logits = logits[0]
        if self.shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        scored = labels != IGNORE_INDEX
        nll = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(labels.shape)
        correct = (logits.argmax(-1) == labels) & scored
        return torch.stack([nll.sum(-1), scored.sum(-1).float(), correct.sum(-1).float()], dim=-1)


def language_model_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Perplexity and top-1 accuracy from the per-example sums of [`LanguageModelStatistics`]."""
    total_nll, count, correct = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 3).sum(0)
    return {"perplexity": perplexity(total_nll, int(count)), "accuracy": correct / count if count else float("nan")}


# ---- scoring a model -----------------------------------------------------------------------------------------------


def score_model(
    model: PreTrainedModel,
    dataset,
    data_collator,
    evaluation: TaskEvaluation,
    batch_size: int = 64,
    use_cpu: bool | None = None,
) -> dict[str, float]:
    """The task metrics of `model` on `dataset` (a plain `Trainer.evaluate`), without the `eval_` prefix and the
    run-time figures."""
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            use_cpu=bool(use_cpu) if use_cpu is not None else not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=data_collator,
            compute_metrics=evaluation.compute_metrics,
            preprocess_logits_for_metrics=evaluation.preprocess_logits_for_metrics,
        )
        metrics = trainer.evaluate(dataset)
    # The task metrics only: not the model's own loss (the metrics say the same thing), epoch or timings.
    skipped = ("eval_loss", "epoch", "eval_model_preparation_time")
    return {
        key.removeprefix("eval_"): value
        for key, value in metrics.items()
        if key not in skipped and not key.endswith(("_runtime", "_per_second"))
    }
