"""The teacher run by onnxruntime (float and int8): its outputs and hidden states against the PyTorch teacher's, the
agreement measured at start-up and refused below the threshold, live distillation and the teacher cache through it,
the measurement on the model card."""

import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from tiny_task_models import (
    SGD,
    classifier,
    llama,
    make_config,
    pad_batch,
    random_task_rows,
    split_card,
    token_classifier,
    trainable_state,
)

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache
from hf_distill.cache import CacheMismatchError, TeacherCache
from hf_distill.engines import OnnxTeacherEngine, export_teacher_onnx, run_teacher_on_onnxruntime
from hf_distill.export import fuse_onnx

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


def sample(task, n=16, seed=0):
    rows = random_task_rows(task, n=n, seed=seed)
    return rows, [pad_batch(rows[i : i + 8]) for i in range(0, n, 8)]


@pytest.mark.parametrize(
    "build, task", [(classifier, "sequence-classification"), (token_classifier, "token-classification")]
)
def test_the_float_engine_gives_the_teachers_logits_and_hidden_states(build, task):
    rows, batches = sample(task)
    reference = build(num_layers=4)
    teacher = build(num_layers=4)
    facts = run_teacher_on_onnxruntime(teacher, batches, "onnxruntime", hidden_layers=[0, 2, 4])
    assert facts["engine"] == "onnxruntime" and facts["top1_agreement"] == 1.0 and facts["kl"] < 1e-8
    assert facts["hidden_relative_error"] < 1e-5 and teacher.distillation_engine == facts
    # BERT's graph runs on onnxruntime's fused kernels: one attention operator a layer, the embeddings' layer norm.
    assert facts["fused_operators"]["Attention"] == 4 and facts["fused_operators"]["EmbedLayerNormalization"] == 1
    batch = {k: v for k, v in pad_batch(rows[3:11]).items() if k != "labels"}
    with torch.no_grad():
        expected = reference(**batch, output_hidden_states=True)
        got = teacher(**batch, output_hidden_states=True)  # the engine's forward now
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-4, atol=1e-5)
    assert got.hidden_states[1] is None and got.hidden_states[3] is None  # not exported
    for layer in (0, 2, 4):
        torch.testing.assert_close(got.hidden_states[layer], expected.hidden_states[layer], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no attention maps: set attention_weight=0"):
        teacher(**batch, output_attentions=True)
    # With labels the teacher is being evaluated (its accuracy for the card): PyTorch runs, with its loss.
    labels = pad_batch(rows[3:11])["labels"]
    with torch.no_grad():
        evaluated, reference_loss = teacher(**batch, labels=labels), reference(**batch, labels=labels).loss
    torch.testing.assert_close(evaluated.loss, reference_loss)


def test_the_engines_threads_do_not_busy_wait_between_passes(tmp_path):
    """Spinning threads would take the cores from the student's training step between two teacher passes."""
    path, _ = export_teacher_onnx(classifier(num_layers=2), str(tmp_path))
    options = OnnxTeacherEngine(path, 2, ()).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_family_without_onnxruntime_fusions_is_left_as_exported(tmp_path):
    graph = tmp_path / "model.onnx"  # never read: there is nothing to fuse for the family
    assert fuse_onnx(graph, SimpleNamespace(model_type="mpnet", num_attention_heads=2, hidden_size=8)) == {}
    assert not graph.exists()


def test_an_int8_engine_beyond_the_tolerance_is_refused_and_within_it_runs():
    """A tiny random classifier with large weights: int8 rounding moves its distributions measurably."""
    _, batches = sample("sequence-classification", n=32)
    teacher = classifier(num_layers=2, seed=3)
    with pytest.raises(ValueError) as error:
        run_teacher_on_onnxruntime(teacher, batches, "onnxruntime-int8", max_kl=1e-6)
    message = str(error.value)
    assert "teacher_engine='onnxruntime-int8' departs from the PyTorch teacher by a KL of" in message
    assert "per item at T = 1 on 32 sample items (top-1 agreement" in message
    assert "above teacher_engine_max_kl=1e-06" in message
    assert "\n" not in message and not hasattr(teacher, "distillation_engine")
    inputs = [{k: v for k, v in batch.items() if k != "labels"} for batch in batches]
    with torch.no_grad():
        before = torch.cat([teacher(**batch).logits for batch in inputs])
    facts = run_teacher_on_onnxruntime(teacher, batches, "onnxruntime-int8", max_kl=1.0)
    with torch.no_grad():
        after = torch.cat([teacher(**batch).logits for batch in inputs])
    assert (after - before).abs().max() > 0  # int8 weights: the engine runs, not PyTorch
    # The measurements: the share of sample predictions that agree, the mean KL between the distributions.
    assert facts["top1_agreement"] == pytest.approx((after.argmax(-1) == before.argmax(-1)).float().mean().item())
    log_p, log_q = torch.log_softmax(before, -1), torch.log_softmax(after, -1)
    assert (
        facts["kl"] == pytest.approx((log_p.exp() * (log_p - log_q)).sum(-1).mean().item(), rel=1e-3)
        and facts["kl"] > 1e-6
    )
    with pytest.raises(ValueError, match="runs encoder teachers; this teacher .* is a decoder"):
        run_teacher_on_onnxruntime(llama(), batches, "onnxruntime")


def train(tmp_path, name, engine, **overrides):
    rows = Dataset.from_list(random_task_rows("sequence-classification", n=16, seed=1))
    student, teacher = classifier(num_layers=2, seed=1), classifier(num_layers=4, seed=0)
    settings = {"kd_weight": 1.0, "label_weight": 0.5, "hidden_weight": 1.0, "layer_map": "2:1,4:2", **SGD}
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, train_dataset=rows, eval_dataset=rows, data_collator=pad_batch,
        args=make_config(tmp_path / name, max_steps=2, teacher_engine=engine, **{**settings, **overrides}),
    )  # fmt: skip
    before = trainable_state(trainer)
    trainer.train()
    return {k: before[k] - v for k, v in trainable_state(trainer).items()}, trainer


def test_live_distillation_through_the_engine_equals_pytorch_and_the_card_says_so(tmp_path):
    engine, trainer = train(tmp_path, "engine", "onnxruntime")
    pytorch, _ = train(tmp_path, "pytorch", "pytorch")
    assert sum(d.abs().sum().item() for d in pytorch.values()) > 1e-3
    for key in pytorch:
        torch.testing.assert_close(engine[key], pytorch[key], rtol=1e-3, atol=1e-5, msg=key)
    facts = trainer.distillation_settings()["teacher_engine"]
    assert facts["engine"] == "onnxruntime" and facts["top1_agreement"] == 1.0 and facts["sample_items"] == 16
    assert math.isfinite(trainer.evaluate()["eval_loss_hidden"])
    trainer.create_model_card()
    _, body = split_card((tmp_path / "engine" / "out" / "README.md").read_text())
    assert "from the teacher run by onnxruntime (float32), whose most likely class agreed with the PyTorch" in body
    assert "teacher's on 100.00% of 16 sample items" in body
    with pytest.raises(ValueError, match="attention_weight > 0 read its attention maps or projections"):
        train(tmp_path, "attention", "onnxruntime", attention_weight=1.0, hidden_weight=0.0)


def test_a_cache_built_through_the_engine_records_it_and_a_resume_with_another_engine_is_refused(tmp_path):
    rows = Dataset.from_list(random_task_rows("sequence-classification", n=16, seed=2))
    _, batches = sample("sequence-classification")
    build = dict(data_collator=pad_batch, progress=False)
    settings = dict(hidden_layers=[2], cache_batch_size=8)
    pytorch = CacheArguments(str(tmp_path / "pytorch"), **settings)
    reference = build_teacher_cache(classifier(num_layers=4), rows, pytorch, **build)
    teacher = classifier(num_layers=4)
    run_teacher_on_onnxruntime(teacher, batches, "onnxruntime", hidden_layers=[2])
    cache = build_teacher_cache(teacher, rows, CacheArguments(str(tmp_path / "engine"), **settings), **build)
    assert cache.settings["engine"] == "onnxruntime" and "engine" not in reference.settings
    for column in ("logits", "hidden_states.2"):
        got, expected = (torch.tensor([x for row in c.rows[column] for x in row]) for c in (cache, reference))
        assert got.numel() == expected.numel() > 0
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)  # (hidden states stored in float16)
    # An unfinished PyTorch cache is not finished by the engine: their outputs differ.
    info = (tmp_path / "pytorch" / "cache_info.json").read_text().replace('"complete": true', '"complete": false')
    (tmp_path / "pytorch" / "cache_info.json").write_text(info)
    with pytest.raises(CacheMismatchError, match="another teacher, tokenizer, data or settings"):
        build_teacher_cache(teacher, rows, pytorch, **build)
    assert TeacherCache(str(tmp_path / "engine")).teacher["class"] == "BertForSequenceClassification"
