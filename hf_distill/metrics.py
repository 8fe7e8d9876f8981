"""The usual metric of each task, computed offline (no metric is downloaded): plain functions of predictions.

- [`accuracy`] and [`macro_f1`]: classification, as scikit-learn's `accuracy_score` and `f1_score(average="macro")`;
- [`mean_squared_error`] and [`pearson`]: regression;
- [`entity_scores`]: entity-level precision, recall and F1 for BIO / IOBES tags, as seqeval (and conlleval) count
  them, plus token accuracy;
- [`squad_scores`]: exact match and F1 over answer strings, as the SQuAD evaluation script computes them;
- [`perplexity`]: `exp` of the mean token negative log-likelihood.

Scores are fractions in [0, 1], like the accuracy of the other tasks (SQuAD and seqeval print percentages).
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "entities",
    "entity_scores",
    "exact_match",
    "macro_f1",
    "mean_squared_error",
    "normalize_answer",
    "pearson",
    "perplexity",
    "squad_f1",
    "squad_scores",
]


# ---- classes and real values (text classification, regression) -----------------------------------------------------


def accuracy(labels: Sequence, predicted: Sequence) -> float:
    """The share of predictions equal to their label."""
    labels, predicted = _pair(labels, predicted)
    return float((labels == predicted).mean()) if labels.size else 0.0


def macro_f1(labels: Sequence, predicted: Sequence) -> float:
    """The unweighted mean of each class's F1, over the classes that occur in the labels or the predictions.

    A class's F1 is `2 TP / (2 TP + FP + FN)`; a class that is predicted but never right, or never predicted, scores 0
    (scikit-learn's `f1_score(average="macro")` with its default `zero_division`).
    """
    labels, predicted = _pair(labels, predicted)
    classes = np.union1d(labels, predicted)
    if not classes.size:
        return 0.0
    scores = []
    for label in classes:
        true_positives = np.sum((labels == label) & (predicted == label))
        denominator = np.sum(labels == label) + np.sum(predicted == label)
        scores.append(2 * true_positives / denominator if denominator else 0.0)
    return float(np.mean(scores))


def mean_squared_error(targets: Sequence[float], predicted: Sequence[float]) -> float:
    """The mean of `(predicted - target)²`."""
    targets, predicted = _pair(targets, predicted, dtype=np.float64)
    return float(np.mean((predicted - targets) ** 2)) if targets.size else float("nan")


def pearson(targets: Sequence[float], predicted: Sequence[float]) -> float:
    """Pearson's correlation of predictions and targets; `nan` when either is constant (no correlation is defined)."""
    targets, predicted = _pair(targets, predicted, dtype=np.float64)
    if targets.size < 2:
        return float("nan")
    x, y = targets - targets.mean(), predicted - predicted.mean()
    norm = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y) / norm) if norm > 0 else float("nan")


def _pair(first: Sequence, second: Sequence, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(first, dtype=dtype).reshape(-1), np.asarray(second, dtype=dtype).reshape(-1)
    if first.shape != second.shape:
        raise ValueError(f"{second.size} predictions for {first.size} labels")
    return first, second


# ---- entities (token classification) ------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    """`"B-PER"` -> `("B", "PER")`; `"O"` -> `("O", "")`; a tag without a prefix (IO tagging) -> `("I", tag)`."""
    if tag in ("O", "", None):
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and prefix in ("B", "I", "E", "S", "L", "U"):
        return {"L": "E", "U": "S"}.get(prefix, prefix), kind
    return "I", tag


def _ends(previous: str, previous_kind: str, tag: str, kind: str) -> bool:
    """Whether a chunk ends between the previous tag and this one (conlleval's `endOfChunk`)."""
    if previous in ("E", "S"):
        return True
    if previous in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return previous != "O" and previous_kind != kind


def _starts(previous: str, previous_kind: str, tag: str, kind: str) -> bool:
    """Whether a chunk starts at this tag (conlleval's `startOfChunk`): `I-` after `O` or another type does."""
    if tag in ("B", "S"):
        return True
    if previous in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and previous_kind != kind


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one tag sequence, as `(type, first index, last index)`.

    Follows conlleval and seqeval's default (lenient) mode: an `I-X` that does not continue an `X` chunk starts one.
    """
    found = set()
    previous, previous_kind, start = "O", "", None
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = _split_tag(tag)
        if start is not None and _ends(previous, previous_kind, prefix, kind):
            found.add((previous_kind, start, i - 1))
            start = None
        if _starts(previous, previous_kind, prefix, kind):
            start = i
        previous, previous_kind = prefix, kind
    return found


def entity_scores(references: Iterable[Sequence[str]], predictions: Iterable[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 over sentences, and token accuracy (all tokens, `O` included).

    Args:
        references: the gold tag sequences (e.g. `[["B-PER", "I-PER", "O"], ...]`).
        predictions: the predicted tag sequences, each as long as its reference.
    """
    true_positives = num_predicted = num_true = correct_tokens = num_tokens = 0
    for reference, prediction in zip(references, predictions, strict=True):
        if len(reference) != len(prediction):
            raise ValueError(f"a prediction has {len(prediction)} tags for {len(reference)} reference tags")
        gold, guessed = entities(reference), entities(prediction)
        true_positives += len(gold & guessed)
        num_predicted += len(guessed)
        num_true += len(gold)
        correct_tokens += sum(r == p for r, p in zip(reference, prediction))
        num_tokens += len(reference)
    precision = true_positives / num_predicted if num_predicted else 0.0
    recall = true_positives / num_true if num_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = correct_tokens / num_tokens if num_tokens else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


# ---- answers (question answering) ---------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals one of the normalised answers (an empty list means no answer)."""
    answers = list(answers) or [""]
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction with one of the answers (bag of normalised words)."""
    answers = list(answers) or [""]
    return max(_token_f1(prediction, answer) for answer in answers)


def _token_f1(prediction: str, answer: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not predicted or not gold:
        return float(predicted == gold)  # both empty: 1; one empty: 0
    common = collections.Counter(predicted) & collections.Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1 over questions; `references[i]` holds the accepted answers of question `i`."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    n = len(predictions)
    return {
        "exact_match": sum(exact_match(p, r) for p, r in zip(predictions, references)) / n,
        "f1": sum(squad_f1(p, r) for p, r in zip(predictions, references)) / n,
    }


# ---- language models ----------------------------------------------------------------------------------------------


def perplexity(total_nll: float, num_tokens: int) -> float:
    """`exp(total_nll / num_tokens)`: the perplexity of a model whose summed token negative log-likelihood (in nats)
    over `num_tokens` scored tokens is `total_nll`; `inf` when it overflows, `nan` when nothing was scored."""
    if num_tokens <= 0:
        return float("nan")
    mean = total_nll / num_tokens
    return math.exp(mean) if mean < 700 else float("inf")
