"""The offline metrics, against values computed by hand, and the numpy classification metrics against scikit-learn's
(a test dependency only: the package computes them with numpy)."""

import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_distill.metrics import (
    accuracy,
    entities,
    entity_scores,
    exact_match,
    macro_f1,
    mean_squared_error,
    normalize_answer,
    pearson,
    perplexity,
    squad_f1,
    squad_scores,
)
from hf_distill.tasks.language_modeling import LanguageModelStatistics, language_model_metrics
from hf_distill.tasks.question_answering import QuestionAnsweringMetrics, best_span
from hf_distill.tasks.text_classification import classification_metrics, regression_metrics
from hf_distill.tasks.token_classification import TokenClassificationMetrics


@pytest.mark.parametrize("seed", range(20))
def test_accuracy_and_macro_f1_equal_scikit_learn_on_random_cases(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 7))
    size = int(rng.integers(1, 60))
    labels = rng.integers(0, num_classes, size)
    # Sometimes a class never predicted, sometimes one predicted that never occurs, sometimes mostly right.
    predicted = np.where(rng.random(size) < 0.5, labels, rng.integers(0, num_classes + int(seed % 3 == 0), size))
    assert accuracy(labels, predicted) == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
    expected = sklearn_metrics.f1_score(labels, predicted, average="macro", zero_division=0)
    assert macro_f1(labels, predicted) == pytest.approx(expected)


def test_macro_f1_by_hand():
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 1, FP 0, FN 1 -> 2/3; class 2: predicted once, never true -> 0.
    assert macro_f1([0, 0, 1, 1], [0, 2, 1, 0]) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert accuracy([0, 0, 1, 1], [0, 2, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        accuracy([0, 1], [0, 1, 1])


def test_classification_metrics_from_a_trainers_predictions():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    scores = classification_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 2, 2, 1])))
    assert scores == pytest.approx({"accuracy": 0.5, "macro_f1": macro_f1([0, 2, 2, 1], [0, 2, 1, 0])})


@pytest.mark.parametrize("seed", range(5))
def test_mse_and_pearson_equal_numpy_and_scipy(seed):
    rng = np.random.default_rng(seed)
    targets, predicted = rng.normal(size=30), rng.normal(size=30)
    predicted = predicted + seed * targets  # from no correlation to a strong one
    assert mean_squared_error(targets, predicted) == pytest.approx(np.mean((targets - predicted) ** 2))
    assert pearson(targets, predicted) == pytest.approx(np.corrcoef(targets, predicted)[0, 1])
    stats = pytest.importorskip("scipy.stats")
    assert pearson(targets, predicted) == pytest.approx(stats.pearsonr(targets, predicted)[0])
    scores = regression_metrics(EvalPrediction(predictions=predicted[:, None], label_ids=targets))
    assert scores == pytest.approx(
        {"mse": mean_squared_error(targets, predicted), "pearson": pearson(targets, predicted)}
    )
    assert math.isnan(pearson([1.0, 2.0], [3.0, 3.0]))  # a constant prediction has no correlation


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
        (["O", "I-PER", "I-PER"], {("PER", 1, 2)}),  # an I- after O starts an entity (lenient, as conlleval)
        (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 2)}),  # a change of type starts another
        (["B-PER", "B-PER"], {("PER", 0, 0), ("PER", 1, 1)}),
        (["S-PER", "B-LOC", "E-LOC", "O"], {("PER", 0, 0), ("LOC", 1, 2)}),  # IOBES
        (["PER", "PER", "O", "LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),  # IO tags without prefixes
        (["O", "O"], set()),
    ],
)
def test_entities(tags, expected):
    assert entities(tags) == expected


def test_entity_scores_match_seqeval_documentation_example():
    # seqeval's README example: f1 0.50, accuracy 0.80.
    references = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    predictions = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = entity_scores(references, predictions)
    assert scores == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.8})


def test_entity_scores_by_hand():
    # Gold: PER(0-1), LOC(3), ORG(5). Predicted: PER(0-1) right, LOC(3-4) wrong span. P = 1/2, R = 1/3.
    references = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    predictions = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]]
    scores = entity_scores(references, predictions)
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # 0.4
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 tags for 1 reference"):
        entity_scores([["O"]], [["O", "O"]])


def test_squad_answers():
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert exact_match("the cat", ["A cat."]) == 1.0
    assert exact_match("cat sat", ["cat"]) == 0.0
    # pred [big, black, cat], gold [black, cat, sat]: overlap 2, P = R = 2/3.
    assert squad_f1("big black cat", ["black cat sat"]) == pytest.approx(2 / 3)
    assert squad_f1("big black cat", ["black cat sat", "big black cat"]) == 1.0  # the best answer counts
    assert squad_f1("", []) == 1.0 and exact_match("", []) == 1.0  # no answer, none predicted
    assert squad_f1("cat", []) == 0.0
    scores = squad_scores(["the cat", "big black cat"], [["cat"], ["black cat sat"]])
    assert scores == pytest.approx({"exact_match": 0.5, "f1": (1 + 2 / 3) / 2})


def test_perplexity():
    assert perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    assert perplexity(1e6, 1) == float("inf")
    assert math.isnan(perplexity(0.0, 0))


def test_token_classification_metrics_skip_ignored_positions():
    id2label = {0: "O", 1: "B-PER", 2: "I-PER"}
    labels = np.array([[-100, 1, 2, 0, -100], [-100, 1, -100, -100, -100]])
    predicted = np.array([[1, 1, 2, 0, 1], [0, 1, 2, 2, 2]])  # the ignored positions hold nonsense
    scores = TokenClassificationMetrics(id2label)(EvalPrediction(predictions=predicted, label_ids=labels))
    assert scores == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0})


def test_best_span_keeps_to_the_context_and_the_length_limit():
    offsets = [None, (0, 3), (4, 9), (10, 12), None]
    start = np.array([9.0, 1.0, 5.0, 0.0, 9.0, -100.0])  # position 5 is padding beyond the example
    end = np.array([9.0, 0.0, 1.0, 4.0, 9.0, -100.0])
    assert best_span(start, end, offsets) == (2, 3)
    assert best_span(start, end, offsets, max_answer_length=1) == (2, 2)
    assert best_span(start, end, [None, None]) == (-1, -1)


def test_question_answering_metrics_map_spans_back_to_text():
    rows = {
        "offset_mapping": [[None, (0, 3), (4, 9), (10, 13)], [None, (0, 5), (6, 11)]],
        "context": ["the black cat", "hello world"],
        "answers": [{"text": ["black cat"], "answer_start": [4]}, {"text": ["world"], "answer_start": [6]}],
    }
    metrics = QuestionAnsweringMetrics(rows)
    start = np.array([[0.0, 0.0, 5.0, 0.0], [0.0, 3.0, 1.0, -100.0]])
    end = np.array([[0.0, 0.0, 0.0, 5.0], [0.0, 3.0, 0.0, -100.0]])
    assert metrics.answer_texts(start, end) == ["black cat", "hello"]
    scores = metrics(EvalPrediction(predictions=(start, end), label_ids=None))
    assert scores == pytest.approx({"exact_match": 0.5, "f1": 0.5})


@pytest.mark.parametrize("shift", [False, True])
def test_language_model_statistics_give_the_perplexity_of_the_scored_tokens(shift):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[1, -100, 3, 4], [-100, 2, -100, -100]])
    stats = LanguageModelStatistics(shift=shift)(logits, labels)
    nll, count, correct = 0.0, 0, 0
    for b in range(2):
        for i in range(4):
            position, target = (i - 1, labels[b, i]) if shift else (i, labels[b, i])
            if target == -100 or position < 0:
                continue
            log_probs = logits[b, position].log_softmax(-1)
            nll -= log_probs[target].item()
            count += 1
            correct += int(logits[b, position].argmax() == target)
    assert stats[:, 1].sum().item() == count
    metrics = language_model_metrics(EvalPrediction(predictions=stats.numpy(), label_ids=None))
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(correct / count)
