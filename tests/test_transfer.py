"""More ways to transfer knowledge, through the trainer: similarity-preserving and MiniLM relation losses, teacher
ensembles, and LoRA (peft) students and teachers."""

import copy
import json

import peft
import pytest
import torch
from tiny_task_models import make_config, make_trainer, pad_collate, random_classification_dataset, tiny_bert
from transformers import AutoModelForSequenceClassification

from hf_distill import DistillationTrainer
from hf_distill.hub import _check_student_folder, files_to_push
from hf_distill.losses import attention_relation_loss
from hf_distill.measure import write_metrics
from hf_distill.model_card import build_model_card

TEMPERATURE = 2.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def batch():
    data = random_classification_dataset(12, seed=3, min_len=2, max_len=20)
    return data, pad_collate([data[i] for i in range(12)])


# ---- similarity-preserving loss (Tung & Mori) --------------------------------------------------------------------


def naive_similarity(student_features, teacher_features):
    """The paper's formula, element by element: (1 / b^2) sum_ij (Gs_ij / |Gs_i| - Gt_ij / |Gt_i|)^2."""
    b = len(student_features)
    total = 0.0
    gram = [
        [[sum(x * y for x, y in zip(f[i], f[j])) for j in range(b)] for i in range(b)]
        for f in (student_features, teacher_features)
    ]
    for i in range(b):
        norms = [sum(v * v for v in g[i]) ** 0.5 for g in gram]
        for j in range(b):
            total += (gram[0][i][j] / norms[0] - gram[1][i][j] / norms[1]) ** 2
    return total / b**2


def mean_pooled(hidden, mask):
    return [
        [
            sum(hidden[i][t][d] for t in range(len(mask[i])) if mask[i][t]) / sum(mask[i])
            for d in range(len(hidden[i][0]))
        ]
        for i in range(len(hidden))
    ]


def test_similarity_loss_equals_the_formula_on_mean_pooled_hidden_states(tmp_path, batch):
    data, inputs = batch
    teacher, student = tiny_bert(num_layers=4, hidden=32, seed=0), tiny_bert(num_layers=2, hidden=16, seed=1)
    trainer = make_trainer(
        tmp_path, student, teacher, data, per_device_eval_batch_size=12, similarity_weight=1.0, layer_map="2:1,4:2"
    )
    metrics = trainer.evaluate()
    mask = inputs["attention_mask"].tolist()
    with torch.no_grad():
        t_out = teacher(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True
        )
        s_out = student(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True
        )
    expected = (
        sum(
            naive_similarity(
                mean_pooled(s_out.hidden_states[s].tolist(), mask), mean_pooled(t_out.hidden_states[t].tolist(), mask)
            )
            for t, s in ((2, 1), (4, 2))
        )
        / 2
    )
    assert metrics["eval_loss_similarity"] == pytest.approx(expected, rel=1e-4)
    assert trainer.model.projections is None  # no projection, though the widths differ (16 vs 32)


def test_relation_and_similarity_losses_are_zero_for_a_student_identical_to_the_teacher(tmp_path, batch):
    data, _ = batch
    teacher = tiny_bert(num_layers=4, seed=0)
    trainer = make_trainer(
        tmp_path, copy.deepcopy(teacher), teacher, data, layer_map="first", similarity_weight=1.0, relation_weight=1.0
    )
    metrics = trainer.evaluate()
    assert metrics["eval_loss_similarity"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["eval_loss_relation"] == pytest.approx(0.0, abs=1e-6)


# ---- MiniLM relations ---------------------------------------------------------------------------------------------


def test_relation_loss_across_head_counts_and_widths_with_sdpa(tmp_path, batch):
    """Teacher: hidden 32, 4 heads; student: hidden 16, 2 heads; 2 relation heads over the last layers' Q, K, V.
    The models keep sdpa attention, and the loss equals the relations computed from the layer inputs by hand."""
    data, inputs = batch
    teacher = tiny_bert(num_layers=4, hidden=32, heads=4, seed=0, attn_implementation="sdpa")
    student = tiny_bert(num_layers=2, hidden=16, heads=2, seed=1, attn_implementation="sdpa")
    trainer = make_trainer(
        tmp_path, student, teacher, data, per_device_eval_batch_size=12, relation_weight=1.0, relation_heads=2
    )
    metrics = trainer.evaluate()
    assert teacher.config._attn_implementation == "sdpa" and student.config._attn_implementation == "sdpa"

    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        t_h = teacher(
            **{k: inputs[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
        ).hidden_states
        s_h = student(
            **{k: inputs[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
        ).hidden_states
        t_layer, s_layer = teacher.bert.encoder.layer[3].attention.self, student.bert.encoder.layer[1].attention.self
        expected = (
            sum(
                attention_relation_loss(getattr(s_layer, name)(s_h[1]), getattr(t_layer, name)(t_h[3]), 2, mask)
                for name in ("query", "key", "value")
            )
            / 3
        )
    assert metrics["eval_loss_relation"] == pytest.approx(expected.item(), rel=1e-5)

    before = student.bert.encoder.layer[1].attention.self.query.weight.clone()
    trainer = make_trainer(tmp_path, student, teacher, data, relation_weight=1.0, relation_heads=2, kd_weight=0.0)
    trainer.train()
    assert not torch.equal(student.bert.encoder.layer[1].attention.self.query.weight, before)
    assert any("loss_relation" in entry for entry in trainer.state.log_history)


def test_relation_settings_that_cannot_work_are_named(tmp_path, batch):
    data, _ = batch
    teacher, student = tiny_bert(num_layers=4, hidden=32, heads=4, seed=0), tiny_bert(num_layers=2, hidden=16, heads=2)
    with pytest.raises(ValueError, match="relation_heads=3 does not divide the student's query width 16"):
        make_trainer(tmp_path, student, teacher, data, relation_weight=1.0, relation_heads=3)
    with pytest.raises(ValueError, match="relation_layers '5:1' is out of range: the teacher has layers 1..4"):
        make_trainer(tmp_path, student, teacher, data, relation_weight=1.0, relation_layers="5:1")


# ---- several teachers ----------------------------------------------------------------------------------------------


def test_two_teachers_soft_target_is_the_weighted_average_of_their_distributions(tmp_path, batch):
    data, inputs = batch
    teachers = [tiny_bert(num_layers=4, seed=0), tiny_bert(num_layers=3, hidden=24, seed=5)]
    student = tiny_bert(num_layers=2, hidden=16, seed=1)
    with torch.no_grad():  # confident teachers that disagree, so the KL is far from float round-off
        for model in (*teachers, student):
            model.classifier.weight.mul_(60.0)
    originals = [copy.deepcopy(t.state_dict()) for t in teachers]
    trainer = make_trainer(
        tmp_path,
        student,
        teachers,
        data,
        per_device_eval_batch_size=12,
        temperature=TEMPERATURE,
        teacher_weights="0.7,0.3",
        intermediate_teacher=1,
        hidden_weight=1.0,
        layer_map="3:2",
    )
    assert trainer.teacher is trainer.teachers[1] and trainer.teacher_weights == pytest.approx([0.7, 0.3])
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    combined = trainer._teacher_forward(model_inputs, training=False)
    with torch.no_grad():
        p = [torch.softmax(t(**model_inputs).logits / TEMPERATURE, -1) for t in teachers]
        expected_hidden = teachers[1](**model_inputs, output_hidden_states=True).hidden_states[3]
    mixture = 0.7 * p[0] + 0.3 * p[1]
    torch.testing.assert_close(torch.softmax(combined.logits / TEMPERATURE, -1), mixture)
    torch.testing.assert_close(combined.hidden_states[3], expected_hidden)  # internals: the intermediate teacher

    metrics = trainer.evaluate()
    with torch.no_grad():
        log_q = torch.log_softmax(student(**model_inputs).logits / TEMPERATURE, -1)
    naive_kd = TEMPERATURE**2 * (mixture * (mixture.log() - log_q)).sum(-1).mean()
    assert metrics["eval_loss_kd"] == pytest.approx(naive_kd.item(), rel=1e-5)

    trainer.train()
    for teacher, original in zip(teachers, originals):
        assert all(torch.equal(teacher.state_dict()[k], v) for k, v in original.items())
        assert not any(p.requires_grad for p in teacher.parameters())


def test_teacher_ensemble_mistakes_are_named(tmp_path, batch):
    data, _ = batch
    teachers = [tiny_bert(num_layers=4, seed=0), tiny_bert(num_layers=4, seed=2)]
    with pytest.raises(ValueError, match="teacher_weights has 3 weights for 2 teachers"):
        make_trainer(tmp_path, tiny_bert(num_layers=2), teachers, data, teacher_weights="1,1,1")
    with pytest.raises(ValueError, match="intermediate_teacher=2 but there are 2 teachers"):
        make_trainer(tmp_path, tiny_bert(num_layers=2), teachers, data, intermediate_teacher=2)
    other_labels = tiny_bert(num_layers=4, seed=3, num_labels=5)
    with pytest.raises(ValueError, match="number of labels differs"):
        make_trainer(tmp_path, tiny_bert(num_layers=2), [teachers[0], other_labels], data)


# ---- LoRA students and teachers ---------------------------------------------------------------------------------

LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"], "lora_dropout": 0.0}


def test_the_peft_config_given_is_not_changed(tmp_path, batch):
    data, _ = batch
    given = {**LORA, "modules_to_save": ["classifier"]}
    trainer = make_trainer(tmp_path, tiny_bert(num_layers=2, seed=1), tiny_bert(num_layers=4), data, peft_config=given)
    assert trainer.args.peft_config == given and given["modules_to_save"] == ["classifier"]
    assert trainer.distillation_settings()["peft"]["modules_to_save"] == ["classifier"]


def lora_trainer(tmp_path, data, merge=False, **overrides):
    teacher, student = tiny_bert(num_layers=4, seed=0), tiny_bert(num_layers=2, seed=1)
    base = copy.deepcopy(student.state_dict())
    trainer = make_trainer(
        tmp_path,
        student,
        teacher,
        data,
        peft_config=json.dumps(LORA),
        merge_adapter_on_save=merge,
        learning_rate=1e-2,
        **overrides,
    )
    return trainer, base


def test_lora_student_trains_only_its_adapter_and_head(tmp_path, batch):
    data, inputs = batch
    trainer, base = lora_trainer(tmp_path, data, hidden_weight=1.0, layer_map="4:2")
    assert isinstance(trainer.student, peft.PeftModel)
    trainer.train()
    state = trainer.student.get_base_model().state_dict()
    lora = {k: v for k, v in state.items() if "lora_" in k}
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at 0: it trained
    for name, value in base.items():
        key = name.replace(".query.", ".query.base_layer.").replace(".value.", ".value.base_layer.")
        if name.startswith("classifier."):  # the new head of a SEQ_CLS task trains (peft modules_to_save)
            assert not torch.equal(state[name.replace("classifier.", "classifier.modules_to_save.default.")], value)
        else:
            assert torch.equal(state[key], value), name  # every base weight is unchanged

    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    assert not (tmp_path / "adapter" / "distillation_projections.safetensors").exists()
    # The adapter folder is a publishable student: the push takes the adapter's files.
    _check_student_folder(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files_to_push(tmp_path / "adapter"))
    reloaded = peft.PeftModel.from_pretrained(tiny_bert(num_layers=2, seed=1), tmp_path / "adapter").eval()
    trainer.student.eval()
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**model_inputs).logits, trainer.student(**model_inputs).logits)


def test_merged_lora_export_loads_as_a_plain_model_with_the_same_outputs(tmp_path, batch):
    data, inputs = batch
    trainer, _ = lora_trainer(tmp_path, data, merge=True)
    trainer.train()
    folder = tmp_path / "merged"
    trainer.save_model(str(folder))
    loaded, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not (folder / "adapter_config.json").exists()
    assert not any("lora" in k for k in loaded.state_dict())
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    trainer.student.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**model_inputs).logits, trainer.student(**model_inputs).logits)
    assert isinstance(trainer.student, peft.PeftModel)  # the trainer's student keeps its adapter

    write_metrics(str(folder), {"distillation": trainer.distillation_settings()})
    assert "the adapter is merged into the weights" in str(build_model_card(str(folder)))


def test_lora_tuned_teacher_teaches_with_its_adapter_active(tmp_path, batch):
    data, inputs = batch
    base = tiny_bert(num_layers=4, seed=0)
    teacher = peft.get_peft_model(
        copy.deepcopy(base),
        peft.LoraConfig(task_type="SEQ_CLS", **{k: v for k, v in LORA.items() if k != "peft_type"}),
    )
    for name, parameter in teacher.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # a "tuned" adapter: changes the outputs
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        adapted = teacher(**model_inputs).logits
        plain = base(**model_inputs).logits
    assert not torch.allclose(adapted, plain, atol=1e-3)

    trainer = make_trainer(tmp_path, tiny_bert(num_layers=2, seed=1), teacher, data)
    torch.testing.assert_close(trainer._teacher_forward(model_inputs, training=False).logits, adapted)

    # Saved as an adapter folder on a local base model, it loads by path with the adapter active.
    base.save_pretrained(tmp_path / "base")
    teacher.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    teacher.save_pretrained(tmp_path / "teacher-adapter")
    by_path = DistillationTrainer(
        model=tiny_bert(num_layers=2, seed=1),
        args=make_config(tmp_path, teacher_model_name_or_path=str(tmp_path / "teacher-adapter")),
        train_dataset=data,
        data_collator=pad_collate,
    )
    torch.testing.assert_close(by_path._teacher_forward(model_inputs, training=False).logits, adapted)
