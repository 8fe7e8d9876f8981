"""Width pruning (hf_distill.prune through build_student): ranking, kept slices, exactness, errors, families."""

import pytest
import torch
from tiny_task_models import llama, pad_batch, random_task_rows, tiny_bert
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_distill import build_student
from hf_distill.prune import keep_most_important, measure_importance, plan_width


def calibration(task="sequence-classification", batches=2):
    rows = [pad_batch(random_task_rows(task, 8, seed=seed)) for seed in range(batches)]
    return [{k: v for k, v in batch.items() if k != "labels"} for batch in rows]


def test_keep_most_important_keeps_the_highest_in_order_and_breaks_ties_by_index():
    scores = torch.tensor([0.5, 3.0, 0.1, 3.0, 2.0])
    assert keep_most_important(scores, 3).tolist() == [1, 3, 4]
    assert keep_most_important(scores, 1).tolist() == [1]  # 1 and 3 tie: the lower index
    assert keep_most_important(scores, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot keep 0 of 5"):
        keep_most_important(scores, 0)


def _silence(teacher, layer, heads=(), neurons=(), channels=()):
    """Hand-built answer: heads whose values are zero output nothing, neurons with zero weights and bias output
    GELU(0) = 0, and hidden channels whose LayerNorm weight and bias are zero are zero after every norm."""
    block = teacher.bert.encoder.layer[layer]
    size = teacher.config.hidden_size // teacher.config.num_attention_heads
    with torch.no_grad():
        for head in heads:
            block.attention.self.value.weight[head * size : (head + 1) * size] = 0
            block.attention.self.value.bias[head * size : (head + 1) * size] = 0
        for neuron in neurons:
            block.intermediate.dense.weight[neuron] = 0
            block.intermediate.dense.bias[neuron] = 0
        for norm in (block.attention.output.LayerNorm, block.output.LayerNorm):
            norm.weight[list(channels)] = 0
            norm.bias[list(channels)] = 0


def test_importance_ranks_a_hand_built_case_as_known():
    teacher = tiny_bert(num_layers=2, hidden=32, heads=4).eval()
    _silence(teacher, 0, heads=(1, 3), neurons=range(0, 37, 2), channels=range(16, 32))
    _silence(teacher, 1, heads=(0,), neurons=range(1, 37, 2), channels=range(16, 32))
    importance = measure_importance(teacher, calibration())
    assert importance.heads[0][[1, 3]].tolist() == [0.0, 0.0] and (importance.heads[0][[0, 2]] > 0).all()
    assert importance.hidden[16:].eq(0).all() and (importance.hidden[:16] > 0).all()
    plan = plan_width(teacher, [0, 1], heads=2, intermediate_size=18, hidden_size=16, calibration=calibration())
    assert plan.heads[0] == [0, 2]
    assert 0 not in plan.heads[1] and len(plan.heads[1]) == 2
    assert plan.ffn[0] == list(range(1, 37, 2))  # the 18 live neurons
    assert set(plan.ffn[1]) < set(range(0, 37, 2))  # 18 of the 19 live neurons
    assert plan.hidden == list(range(16))


def test_kept_weights_equal_the_teachers_slices_key_by_key():
    teacher = tiny_bert(num_layers=4, hidden=32, heads=4).eval()
    student = build_student(
        teacher, layers=[1, 3], heads=2, intermediate_size=20, hidden_size=16, calibration=calibration()
    )
    plan = plan_width(teacher, [1, 3], heads=2, intermediate_size=20, hidden_size=16, calibration=calibration())
    hidden = torch.tensor(plan.hidden)

    def heads(layer):  # head channels, written out independently of the plan's own helper
        return torch.tensor([h * 8 + i for h in plan.heads[layer] for i in range(8)])

    t, s = teacher.state_dict(), student.state_dict()
    checked = 0
    for key, value in s.items():
        if key.startswith("bert.encoder.layer."):
            index, rest = key.split(".")[3], ".".join(key.split(".")[4:])
            source = t[f"bert.encoder.layer.{[1, 3][int(index)]}.{rest}"]
            layer = [1, 3][int(index)]
            ffn = torch.tensor(plan.ffn[layer])
            rows, cols = {
                "attention.self.query.weight": (heads(layer), hidden),
                "attention.self.key.weight": (heads(layer), hidden),
                "attention.self.value.weight": (heads(layer), hidden),
                "attention.output.dense.weight": (hidden, heads(layer)),
                "intermediate.dense.weight": (ffn, hidden),
                "output.dense.weight": (hidden, ffn),
            }.get(rest, (None, None))
            if rows is not None:
                expected = source[rows][:, cols]
            elif rest in ("attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias"):
                expected = source[heads(layer)]
            elif rest == "intermediate.dense.bias":
                expected = source[ffn]
            else:  # output biases and LayerNorms: hidden channels
                expected = source[hidden]
        elif key in ("bert.pooler.dense.weight",):
            expected = t[key][hidden][:, hidden]
        elif key == "classifier.weight":
            expected = t[key][:, hidden]
        elif key == "classifier.bias":
            expected = t[key]
        else:  # embeddings and their LayerNorm, pooler bias: hidden channels along the last dimension
            expected = t[key][..., hidden]
        assert torch.equal(value, expected), key
        checked += 1
    assert checked == len(t) - 2 * 16  # every key of the two kept layers and outside them (16 per layer)


@pytest.mark.parametrize("build", [tiny_bert, llama], ids=["bert", "llama"])
def test_a_prune_that_keeps_everything_reproduces_the_teacher_exactly(build):
    teacher = build(num_layers=2).eval()
    config = teacher.config
    student = build_student(
        teacher,
        layers=[0, 1],
        heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_size=config.hidden_size,
    )
    task = "causal-lm" if build is llama else "sequence-classification"
    batch = calibration(task)[0]
    assert torch.equal(student(**batch).logits, teacher(**batch).logits)


def test_a_pruned_bert_saves_and_loads_with_from_pretrained(tmp_path):
    teacher = tiny_bert(num_layers=4, hidden=32, heads=4).eval()
    student = build_student(
        teacher, num_layers=2, heads=2, hidden_size=16, intermediate_size=10, calibration=calibration()
    )
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    config = loaded.config
    assert (config.num_attention_heads, config.hidden_size, config.intermediate_size) == (2, 16, 10)
    assert config.distillation_width["kept_heads"]
    batch = calibration()[0]
    assert torch.equal(loaded(**batch).logits, student.eval()(**batch).logits)


def test_llama_prunes_query_heads_within_their_key_value_groups(tmp_path):
    teacher = llama(num_layers=2).eval()  # 4 query heads, 2 key/value heads: heads 0-1 share kv 0, 2-3 kv 1
    cal = calibration("causal-lm")
    student = build_student(teacher, layers=[0, 1], heads=2, intermediate_size=24, hidden_size=24, calibration=cal)
    plan = plan_width(teacher, [0, 1], heads=2, intermediate_size=24, hidden_size=24, calibration=cal)
    for layer in (0, 1):
        assert [h // 2 for h in plan.heads[layer]] == [0, 1]  # one query head from each group
    config = student.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 2, 8)
    layer = student.model.layers[0].self_attn
    assert torch.equal(layer.k_proj.weight, teacher.model.layers[0].self_attn.k_proj.weight[:, plan.hidden])
    student.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(**cal[0]).logits, student.eval()(**cal[0]).logits)


@pytest.mark.parametrize(
    "build, kwargs, message",
    [
        (
            tiny_bert,
            {"heads": 0, "hidden_size": 0},
            r"heads=0 is out of range: the teacher has 4, keep between 1 and 4",
        ),
        (tiny_bert, {"heads": 2}, r"keeping 2 heads of size 8 needs hidden_size=16, got 32: give hidden_size=16"),
        (tiny_bert, {"hidden_size": 20}, r"needs hidden_size=32, got 20.*\(a multiple of the head size 8\)"),
        (tiny_bert, {"intermediate_size": 99}, r"intermediate_size=99 is out of range: the teacher has 37"),
        (llama, {"heads": 3}, r"heads=3 breaks grouped-query attention: .* keep a multiple of 2"),
        (tiny_bert, {"intermediate_size": 10, "calibration": None}, r"pass calibration="),
    ],
)
def test_bad_widths_are_one_line_errors(build, kwargs, message):
    teacher = build(num_layers=2)
    kwargs = {"calibration": calibration(), **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        build_student(teacher, layers=[0, 1], **kwargs)
    assert "\n" not in str(error.value)


def test_a_family_without_width_knowledge_is_refused():
    from tiny_task_models import gpt2

    with pytest.raises(ValueError, match=r"Cannot prune the width of GPT2LMHeadModel .* supports: bert, "):
        build_student(gpt2(num_layers=2), layers=[0, 1], intermediate_size=8, calibration=calibration("causal-lm"))


def test_the_hidden_state_loss_learns_through_its_projection_when_the_width_shrinks(tmp_path):
    from tiny_task_models import make_trainer, trainable_state

    teacher = tiny_bert(num_layers=4, hidden=32, heads=4)
    student = build_student(teacher, num_layers=2, heads=2, hidden_size=16, calibration=calibration())
    trainer = make_trainer(tmp_path, student, teacher, hidden_weight=1.0, kd_weight=1.0, max_steps=2)
    projections = trainer.model.projections
    assert projections is not None and (projections[0].in_features, projections[0].out_features) == (16, 32)
    before = trainable_state(trainer)
    trainer.train()
    after = trainable_state(trainer)
    assert not torch.equal(before["projections.0.weight"], after["projections.0.weight"])
    assert not torch.equal(before["student.classifier.weight"], after["student.classifier.weight"])


def test_train_builds_a_width_pruned_student_calibrated_on_the_training_data(tmp_path, teacher_folder):
    from tiny_task_models import write_sentiment_rows

    from hf_distill.cli import main

    data = {
        name: write_sentiment_rows(tmp_path / f"{name}.csv", 24, seed=i) for i, name in enumerate(("train", "test"))
    }
    main(
        [
            "train",
            "--teacher_model_name_or_path", str(teacher_folder),
            "--train_file", str(data["train"]),
            "--test_file", str(data["test"]),
            "--output_dir", str(tmp_path / "student"),
            "--student_num_layers", "2",
            "--student_num_heads", "2",
            "--student_hidden_size", "16",
            "--student_intermediate_size", "12",
            "--calibration_examples", "16",
            "--hidden_weight", "1.0",
            "--max_steps", "2",
            "--report_to", "none",
            "--use_cpu", "true",
            "--save_strategy", "no",
            "--disable_tqdm", "true",
            "--measure_latency", "false",
        ]
    )  # fmt: skip
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    config = student.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (2, 2, 16)
    assert config.intermediate_size == 12 and len(config.distillation_width["kept_heads"]) == 2
    card = (tmp_path / "student" / "README.md").read_text()
    assert "hidden size 16" in card
    assert "**Width pruning:** attention heads 4 → 2, feed-forward neurons 37 → 12, hidden size 32 → 16; the" in card


def test_the_student_command_cannot_prune_without_data(tmp_path, teacher_folder):
    from hf_distill.cli import run_command

    with pytest.raises(ValueError, match=r"width pruning ranks the teacher's heads .* use `hf-distill train`"):
        run_command(
            [
                "student",
                "--teacher_model_name_or_path", str(teacher_folder),
                "--output_dir", str(tmp_path / "s"),
                "--student_intermediate_size", "8",
            ]
        )  # fmt: skip
