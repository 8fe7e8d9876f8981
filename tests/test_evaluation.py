import numpy as np
import pytest
from conftest import tiny_bert
from sklearn.metrics import f1_score

from hf_distill.evaluation import measure_latencies_ms, score_predictions


def test_latencies_taken_in_turns_rank_models_by_size():
    deep, shallow = tiny_bert(num_layers=8, hidden=64), tiny_bert(num_layers=1, hidden=64)
    latencies = measure_latencies_ms({"deep": deep, "shallow": shallow}, batch_size=8, sequence_length=48, rounds=8)
    assert set(latencies) == {"deep", "shallow"}
    assert latencies["deep"] > 2 * latencies["shallow"] > 0


def test_score_predictions_against_sklearn():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.1, 0.0, 1.0], [1.0, 0.0, 0.2]])
    teacher = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([0, 1, 2, 2])
    scores = score_predictions(logits, labels, teacher)
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx(f1_score(labels, [0, 1, 2, 0], average="macro"))
    assert scores["teacher_agreement"] == 0.5
