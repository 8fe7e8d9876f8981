"""The trainer on the tiny sequence classifier: the frozen teacher, each term logged and weighted, the exact evaluation
loss, projections through checkpoints, and construction errors. The gradient-accumulation check of every task case is
test_tasks.test_gradient_accumulation_gives_the_gradient_of_one_big_batch."""

import copy
import os

import pytest
import torch
from safetensors.torch import load_file
from tiny_task_models import (
    ALL_TERMS,
    make_config,
    make_trainer,
    pad_collate,
    random_classification_dataset,
    tiny_bert,
)
from transformers import AutoModelForSequenceClassification, BertForTokenClassification, TrainerCallback

from hf_distill import DistillationTrainer
from hf_distill.trainer import PROJECTIONS_NAME


def test_teacher_is_frozen_unwrapped_and_unchanged(tmp_path, dataset):
    teacher = tiny_bert(num_layers=4, seed=0)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tiny_bert(num_layers=2, seed=1)
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = make_trainer(tmp_path, student, teacher, dataset, **ALL_TERMS)
    trainer.train()
    assert trainer.teacher is teacher  # placed, never wrapped (no DDP, no optimizer)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(student_before[k], v)]
    assert len(changed) > len(student_before) // 2
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}


def test_each_term_is_logged_and_weighted_into_the_loss(tmp_path, dataset):
    trainer = make_trainer(tmp_path, tiny_bert(2, hidden=16, seed=1), tiny_bert(4), dataset, **ALL_TERMS)
    trainer.train()
    log = trainer.state.log_history[0]
    weighted = sum(
        ALL_TERMS[f"{name}_weight"] * log[f"loss_{name}"]
        for name in ("kd", "label", "logit_mse", "hidden", "attention")
    )
    assert log["loss"] == pytest.approx(weighted, rel=1e-4)
    metrics = trainer.evaluate()
    for key in (
        "eval_loss_kd",
        "eval_loss_label",
        "eval_loss_hidden",
        "eval_loss_attention",
        "eval_teacher_agreement",
        "eval_teacher_kl",
    ):
        assert key in metrics
    assert 0.0 <= metrics["eval_teacher_agreement"] <= 1.0


@pytest.mark.parametrize("terms", [ALL_TERMS, {"kd_weight": 1.0, "similarity_weight": 0.7, "layer_map": "2:1"}])
def test_eval_loss_is_the_weighted_sum_of_the_exact_term_means_with_uneven_batches(tmp_path, terms):
    """10 examples of 2 to 20 tokens in batches of 4, 4 and 2: the per-token terms give each batch a weight of its
    real tokens, which the mean of the batches' own losses (weighted by examples) does not."""
    data = random_classification_dataset(10, seed=3, min_len=2, max_len=20)
    trainer = make_trainer(
        tmp_path, tiny_bert(2, hidden=16, seed=1), tiny_bert(4), data, per_device_eval_batch_size=4, **terms
    )
    metrics = trainer.evaluate()
    weights = trainer.args.loss_weights
    logged = [name for name in weights if f"eval_loss_{name}" in metrics]
    assert set(logged) == {name for name, weight in weights.items() if weight}
    expected = sum(weights[name] * metrics[f"eval_loss_{name}"] for name in logged)
    assert metrics["eval_loss"] == pytest.approx(expected, abs=1e-6, rel=1e-6)


def test_a_student_identical_to_the_teacher_has_zero_distillation_losses(tmp_path, dataset):
    teacher = tiny_bert(num_layers=4, seed=0)
    trainer = make_trainer(tmp_path, copy.deepcopy(teacher), teacher, dataset, layer_map="first", **ALL_TERMS)
    metrics = trainer.evaluate()
    for term in ("kd", "logit_mse", "hidden", "attention", "teacher_kl"):
        assert metrics[f"eval_{'' if term == 'teacher_kl' else 'loss_'}{term}"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["eval_teacher_agreement"] == 1.0


def test_attention_loss_switches_sdpa_models_to_eager(tmp_path, dataset, caplog):
    teacher = tiny_bert(num_layers=4, seed=0)
    student = tiny_bert(num_layers=2, seed=1)
    teacher.set_attn_implementation("sdpa")
    student.set_attn_implementation("sdpa")
    trainer = make_trainer(tmp_path, student, teacher, dataset, attention_weight=1.0, max_steps=1)
    assert teacher.config._attn_implementation == "eager" and student.config._attn_implementation == "eager"
    trainer.train()
    assert trainer.state.log_history[0]["loss_attention"] > 0


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_projections_are_checkpointed_stripped_from_export_and_restored_on_resume(tmp_path, dataset):
    settings = {"hidden_weight": 1.0, "max_steps": 4, "save_strategy": "steps", "save_steps": 2}

    def run(name, stop_at=None, resume=None, scramble=False):
        student = tiny_bert(num_layers=2, hidden=16, seed=1)
        trainer = make_trainer(tmp_path / name, student, tiny_bert(4), dataset, **settings)
        if stop_at:
            trainer.add_callback(StopAt(stop_at))
        if scramble:  # the resumed run must take the projections from the checkpoint, not from its own init
            with torch.no_grad():
                for p in trainer.model.projections.parameters():
                    p.normal_()
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    saved = load_file(checkpoint / PROJECTIONS_NAME)
    assert set(saved) == {"0.weight", "0.bias", "1.weight", "1.bias"} and saved["0.weight"].shape == (32, 16)

    export = tmp_path / "export"
    full.save_model(str(export))
    assert not any("projection" in key for key in load_file(export / "model.safetensors"))
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(export, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    for key, value in full.student.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0)

    interrupted = run("resumed", stop_at=2)
    assert interrupted.state.global_step == 2
    resumed = run("resumed", resume=str(tmp_path / "resumed" / "out" / "checkpoint-2"), scramble=True)
    assert resumed.state.global_step == 4
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_teacher_given_by_path(tmp_path, dataset):
    teacher = tiny_bert(num_layers=4, seed=0)
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = DistillationTrainer(
        model=tiny_bert(2, seed=1),
        args=make_config(tmp_path, teacher_model_name_or_path=str(tmp_path / "teacher"), max_steps=1),
        train_dataset=dataset,
        data_collator=pad_collate,
    )
    assert torch.equal(trainer.teacher.classifier.weight, teacher.classifier.weight)
    trainer.train()


@pytest.mark.parametrize(
    "make_pair, overrides, message",
    [
        (lambda: (tiny_bert(4), tiny_bert(2, vocab_size=120)), {}, "vocabulary size differs: teacher 99, student 120"),
        (
            lambda: (tiny_bert(4), tiny_bert(2, num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})),
            {},
            "number of labels differs",
        ),
        (
            lambda: (tiny_bert(4), tiny_bert(2, id2label={0: "positive", 1: "neutral", 2: "negative"})),
            {},
            "label mapping differs",
        ),
        (lambda: (tiny_bert(4), tiny_bert(2)), {"hidden_weight": 1.0, "layer_map": "9:1"}, "the teacher has 4 layers"),
        (lambda: (tiny_bert(4), tiny_bert(2)), {"hidden_weight": 1.0, "layer_map": "4:3"}, "the student has 2 layers"),
        (
            lambda: (tiny_bert(4), tiny_bert(2, heads=2)),
            {"attention_weight": 1.0},
            "teacher has 4 heads and the student 2",
        ),
        (
            lambda: (tiny_bert(4), tiny_bert(2)),
            {"attention_weight": 1.0, "layer_map": "0:0"},
            "pairs no transformer layers",
        ),
        (
            lambda: (BertForTokenClassification(tiny_bert(4).config), tiny_bert(2)),
            {},
            "the teacher is a BertForTokenClassification",
        ),
        (lambda: ("/nonexistent/teacher", tiny_bert(2)), {}, "could not load the teacher '/nonexistent/teacher'"),
    ],
)
def test_mismatches_fail_at_construction_with_a_clear_message(tmp_path, dataset, make_pair, overrides, message):
    teacher, student = make_pair()
    with pytest.raises((ValueError, OSError), match=message):
        make_trainer(tmp_path, student, teacher, dataset, **overrides)


def test_student_without_label_names_takes_the_teachers(tmp_path, dataset):
    student = tiny_bert(2, id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, label2id={})
    trainer = make_trainer(tmp_path, student, tiny_bert(4), dataset, max_steps=1)
    trainer.train()
    trainer.save_model(str(tmp_path / "s"))
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").config.id2label[2] == "positive"
    assert os.path.isfile(tmp_path / "s" / "config.json")


def test_a_label_only_step_never_runs_the_teacher_but_evaluation_does(tmp_path):
    """kd_weight=0 and no other teacher term: a training step is a plain student step (the no-teacher baseline of a
    benchmark costs what it should); evaluation still runs the teacher for the agreement figures."""
    student, teacher = tiny_bert(num_layers=2, seed=1), tiny_bert(num_layers=4, seed=0)
    calls = []
    teacher.register_forward_hook(lambda module, args, output: calls.append(module.training))
    trainer = make_trainer(tmp_path, student, teacher, kd_weight=0.0, label_weight=1.0, max_steps=2)
    trainer.train()
    assert calls == []
    assert "eval_teacher_agreement" in trainer.evaluate() and calls
