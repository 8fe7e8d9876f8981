"""Measuring models (hf_distill.measure): latency in turns, sizes, and the figures kept from an evaluation."""

import pytest
from tiny_task_models import tiny_bert

from hf_distill.measure import describe_model, measure_latencies_ms
from hf_distill.model_card import task_figures

# One thread: on a shared machine, a forward pass split over threads waits for the slowest of them.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_latencies_taken_in_turns_rank_models_by_size():
    deep, shallow = tiny_bert(num_layers=8, hidden=64), tiny_bert(num_layers=1, hidden=64)
    latencies = measure_latencies_ms({"deep": deep, "shallow": shallow}, batch_size=8, sequence_length=48, rounds=8)
    assert set(latencies) == {"deep", "shallow"}
    assert latencies["deep"] > 2 * latencies["shallow"] > 0


def test_describe_model_counts_parameters_and_the_weights_on_disk(tmp_path):
    model = tiny_bert(num_layers=2)
    model.save_pretrained(tmp_path)
    (tmp_path / "optimizer.bin").write_bytes(b"x" * 1000)  # training state is not part of the model's size
    facts = describe_model(model, str(tmp_path))
    assert facts["num_layers"] == 2 and facts["hidden_size"] == 32
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())
    assert facts["size_bytes"] == (tmp_path / "model.safetensors").stat().st_size


def test_task_figures_keep_the_models_figures_only():
    metrics = {
        "final_accuracy": 0.5,
        "final_teacher_agreement": 0.75,
        "final_teacher_kl": 0.1,
        "final_loss": 1.2,
        "final_loss_kd": 0.3,
        "final_runtime": 0.01,
        "final_samples_per_second": 100.0,
        "epoch": 1.0,
    }
    assert task_figures(metrics, "final") == {"accuracy": 0.5, "teacher_agreement": 0.75, "teacher_kl": 0.1}


def test_every_model_is_warmed_up_alike_and_timed_in_interleaved_rounds():
    """Each round runs every model once, the first model moving on by one each round; the warm-up rounds too."""
    import torch

    from hf_distill.measure import measure_latencies

    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __call__(self, **inputs):
            calls.append(self.name)
            return torch.zeros(())

    models = {name: Recorder(name) for name in "ABC"}
    timings = measure_latencies(models, batch_sizes=(2,), sequence_length=4, rounds=4, warmup=2, vocab_size=20)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert rounds == [list("ABC"), list("BCA"), list("CAB"), list("ABC"), list("BCA"), list("CAB")]
    assert {name: len(by_batch[2]) for name, by_batch in timings.items()} == {"A": 4, "B": 4, "C": 4}


def test_two_identical_models_measured_in_one_table_agree_within_the_spread():
    """The figure a card prints comes with its spread: two copies of one model, measured together, come out within
    each other's interquartile range, and the speed-up of one over the other has an interquartile range around 1."""
    import copy

    from hf_distill.measure import latency_figures, measure_latencies, speedup_figures

    model = tiny_bert(num_layers=4, hidden=64)
    timings = measure_latencies(
        {"a": model, "copy": copy.deepcopy(model), "deep": tiny_bert(num_layers=12, hidden=64)},
        batch_sizes=(8,),
        sequence_length=32,
        rounds=30,
    )
    a, b = (latency_figures(timings[name][8]) for name in ("a", "copy"))
    # The two medians differ by less than the wider of the two interquartile ranges (one copy's median may sit just
    # outside the other's range on a busy machine; a gap wider than both ranges is what the old order produced).
    spread = max(high - low for low, high in (a["iqr_ms"], b["iqr_ms"]))
    assert abs(a["median_ms"] - b["median_ms"]) <= spread, (a, b)
    speedup = speedup_figures(timings["a"][8], timings["copy"][8])
    assert speedup["iqr"][0] <= 1.0 <= speedup["iqr"][1], speedup
    assert speedup_figures(timings["deep"][8], timings["a"][8])["median"] > 1.5  # and a deeper model is slower
