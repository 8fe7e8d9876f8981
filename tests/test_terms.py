"""The loss-term registry: each term is declared once, and the trainer, the cache checks and the card follow the
declarations."""

import dataclasses

import pytest
import torch
from tiny_task_models import pad_collate, random_classification_dataset, tiny_bert

from hf_distill import DistillationConfig, DistillationTrainer
from hf_distill.model_card import _losses
from hf_distill.terms import TERMS, LossTerm, active_terms, register_term

BASE = {
    "output_dir": "out",
    "report_to": "none",
    "use_cpu": True,
    "max_steps": 1,
    "logging_steps": 1,
    "save_strategy": "no",
    "disable_tqdm": True,
}


def only(name: str, **settings) -> dict:
    """The weights that turn on the term `name` alone."""
    return {**{term.weight_field: 0.0 for term in TERMS.values()}, TERMS[name].weight_field: 1.0, **settings}


def test_the_registry_holds_the_terms_in_order_and_refuses_duplicates():
    assert list(TERMS) == ["label", "kd", "logit_mse", "hidden", "attention", "similarity", "relation"]
    label = TERMS["label"]
    with pytest.raises(ValueError, match=r"\['label'\] already used by the term 'label'"):
        register_term(dataclasses.replace(label, weight_field="other_weight"))
    with pytest.raises(ValueError, match=r"\['kd_weight'\] already used by the term 'kd'"):
        register_term(dataclasses.replace(TERMS["kd"], name="kd2"))
    with pytest.raises(ValueError, match=r"needs \['logits2'\], which are not among"):
        register_term(dataclasses.replace(label, name="x", weight_field="x_weight", needs=frozenset({"logits2"})))
    with pytest.raises(TypeError):
        TERMS["x"] = label  # a read-only view
    assert list(TERMS) == ["label", "kd", "logit_mse", "hidden", "attention", "similarity", "relation"]
    assert all(isinstance(term, LossTerm) for term in TERMS.values())


def test_active_terms_are_those_with_a_weight_above_zero():
    config = DistillationConfig(**BASE, **only("similarity", kd_weight=0.5))
    assert [term.name for term in active_terms(config)] == ["kd", "similarity"]


@pytest.mark.parametrize("name", list(TERMS))
def test_model_outputs_and_captures_follow_what_the_term_needs(tmp_path, name):
    term = TERMS[name]
    data = random_classification_dataset(8, seed=4)
    trainer = DistillationTrainer(
        model=tiny_bert(num_layers=2, hidden=16, seed=1),
        teacher_model=tiny_bert(num_layers=4, hidden=32, seed=0),
        args=DistillationConfig(**{**BASE, "output_dir": str(tmp_path)}, **only(name, layer_map="2:1,4:2")),
        train_dataset=data,
        data_collator=pad_collate,
    )
    assert [t.name for t in trainer.terms] == [name]
    assert trainer.model.output_hidden_states == ("hidden_states" in term.needs)
    assert trainer.model.output_attentions == ("attentions" in term.needs)
    assert (trainer.model.projections is not None) == term.projects_hidden_states  # widths 16 and 32
    assert (trainer._relations is not None) == ("qkv" in term.needs)
    assert (trainer.layer_map is not None) == bool(term.needs & {"hidden_states", "attentions"})
    teacher_out = trainer._teacher_forward(pad_collate([data[i] for i in range(4)]), training=False)
    if term.needs_teacher:
        assert (teacher_out.hidden_states is not None) == ("hidden_states" in term.needs)
        assert (teacher_out.attentions is not None) == ("attentions" in term.needs)
    trainer.train()
    assert {key for key in trainer.state.log_history[0] if key.startswith("loss_")} == {f"loss_{name}"}
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0][f"loss_{name}"]))


def test_the_cards_loss_table_is_the_declared_text_of_each_active_term():
    config = DistillationConfig(**BASE, **only("relation", kd_weight=0.5, relation_types="value"))
    settings = config.distillation_settings()
    rows = _losses(settings)
    assert rows == [
        {"weight": "0.5", "description": TERMS["kd"].card(settings)},
        {"weight": "1", "description": TERMS["relation"].card(settings)},
    ]
    assert "temperature T = 2" in rows[0]["description"]
    assert rows[1]["description"] == "MiniLM self-attention relations (value), teacher:student layers last"


def test_each_fused_pass_computes_registered_terms_and_none_applies_without_a_teacher():
    """A fused pass is declared beside the terms: the terms it computes are registered ones, and with no teacher
    outputs (evaluation with only a cache) no pass applies, so the terms that need no teacher are computed alone."""
    from types import SimpleNamespace

    from hf_distill.terms import FUSED_PASSES, TERMS, LossContext, fused_terms

    for fused in FUSED_PASSES:
        assert fused.terms and set(fused.terms) <= set(TERMS), fused.name
    task = SimpleNamespace(label_loss_per_row=True, labels=lambda inputs: inputs.get("labels"))
    args = SimpleNamespace(loss_weights={"kd": 0.5, "label": 0.5}, divergence="forward_kl", temperature=1.0)
    student = SimpleNamespace(logits=torch.zeros(1, 2, 3))
    ctx = LossContext(student=student, teacher=None, inputs={"labels": torch.zeros(1, 2)}, counts={}, task=task,
                      args=args)  # fmt: skip
    assert fused_terms(ctx) == {}
    # Outputs without `logits` (question answering's start and end logits) take no pass either.
    spans = SimpleNamespace(start_logits=torch.zeros(1, 2), end_logits=torch.zeros(1, 2))
    no_rows = SimpleNamespace(label_loss_per_row=False, labels=lambda inputs: inputs.get("labels"))
    ctx = LossContext(student=spans, teacher=spans, inputs={"labels": torch.zeros(1)}, counts={}, task=no_rows,
                      args=args)  # fmt: skip
    assert fused_terms(ctx) == {}
