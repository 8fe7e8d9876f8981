"""Measuring models (hf_distill.measure): latency in turns, sizes, and the figures kept from an evaluation."""

from tiny_task_models import tiny_bert

from hf_distill.measure import describe_model, measure_latencies_ms, task_figures


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
