"""Similarity-preserving and attention-relation losses against naive references, and QKVCapture on tiny models."""

import copy
import math

import pytest
import torch
import transformers
from tiny_task_models import DECODER_FAMILIES, FAMILIES, VOCAB_SIZE, family_config
from torch import nn

from hf_distill import losses, student
from hf_distill.relations import (
    RELATIONS,
    SUPPORTED_MODEL_TYPES,
    QKVCapture,
    QKVProjections,
    qkv_projections,
    relation_loss_terms,
)

# --- naive references, written from the formulas with Python loops -------------------------------------------------


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [x / sum(e) for x in e]


def _ref_kl(p_t, p_s):
    return sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s) if pt > 0)


def ref_similarity_per_example(student_features, teacher_features):
    """Per example i: sum_j (G_s[i, j] - G_t[i, j])^2 / b, G = f f^T with L2-normalised rows."""
    b = len(student_features)

    def gram(features):
        rows = [[sum(x * y for x, y in zip(features[i], features[j])) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows]

    g_s, g_t = gram(student_features.reshape(b, -1).tolist()), gram(teacher_features.reshape(b, -1).tolist())
    return [sum((g_s[i][j] - g_t[i][j]) ** 2 for j in range(b)) / b for i in range(b)]


def ref_relation_per_token(student_x, teacher_x, num_heads, mask):
    """Per real query token: mean over relation heads of KL(teacher relation || student relation) over real keys."""

    def relation(x, b, r, i, keys):
        d = x.shape[-1] // num_heads
        rows = x[b, :, r * d : (r + 1) * d].tolist()
        return _softmax([sum(u * v for u, v in zip(rows[i], rows[j])) / math.sqrt(d) for j in keys])

    batch, length = student_x.shape[:2]
    values = []
    for b in range(batch):
        keys = [j for j in range(length) if mask is None or mask[b, j]]
        for i in keys:
            per_head = [
                _ref_kl(relation(teacher_x, b, r, i, keys), relation(student_x, b, r, i, keys))
                for r in range(num_heads)
            ]
            values.append(sum(per_head) / num_heads)
    return values


def _padding_mask(batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return torch.arange(length)[None, :] < lengths[:, None]


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- similarity_loss -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [((5, 7), (5, 11)), ((4, 3, 2), (4, 9))])
def test_similarity_loss_matches_reference(shapes):
    student_features, teacher_features = _randn(*shapes[0], seed=1), _randn(*shapes[1], seed=2)
    per_example = ref_similarity_per_example(student_features, teacher_features)
    batch = len(per_example)
    value = losses.similarity_loss(student_features, teacher_features)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(sum(per_example) / batch, rel=1e-5)
    # The default is the paper's (1 / b^2) ||G_s - G_t||_F^2.
    assert value.item() == pytest.approx(sum(per_example) * batch / batch**2, rel=1e-5)
    assert losses.similarity_loss(student_features, teacher_features, num_items=12).item() == pytest.approx(
        sum(per_example) / 12, rel=1e-5
    )
    assert losses.similarity_loss(
        student_features, teacher_features, num_items=torch.tensor(3)
    ).item() == pytest.approx(sum(per_example) / 3, rel=1e-5)


def test_similarity_loss_zero_for_identical_and_invariant_to_positive_scaling():
    student_features, teacher_features = _randn(6, 8, seed=3), _randn(6, 5, seed=4)
    assert losses.similarity_loss(student_features, student_features.clone()).item() == pytest.approx(0.0, abs=1e-7)
    value = losses.similarity_loss(student_features, teacher_features).item()
    assert value > 1e-3
    assert losses.similarity_loss(3.7 * student_features, teacher_features).item() == pytest.approx(value, rel=1e-5)
    assert losses.similarity_loss(student_features, 0.2 * teacher_features).item() == pytest.approx(value, rel=1e-5)


def test_similarity_loss_gradients_reach_the_student_only():
    student_features = _randn(4, 6, seed=5).float().requires_grad_()
    teacher_features = _randn(4, 9, seed=6).float()
    losses.similarity_loss(student_features, teacher_features).backward()
    assert torch.isfinite(student_features.grad).all() and student_features.grad.abs().sum() > 0
    assert teacher_features.grad is None


def test_similarity_loss_batch_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 3\)"):
        losses.similarity_loss(torch.randn(4, 3), torch.randn(5, 3))


# --- attention_relation_loss -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_relation_loss_matches_reference(num_heads, padded):
    student_x, teacher_x = _randn(3, 6, 8, seed=7), 2 * _randn(3, 6, 12, seed=8)
    mask = _padding_mask(3, 6, seed=1) if padded else None
    per_token = ref_relation_per_token(student_x, teacher_x, num_heads, mask)
    value = losses.attention_relation_loss(student_x, teacher_x, num_heads, mask)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(sum(per_token) / len(per_token), rel=1e-5)
    # num_items: the sum over the counted tokens divided by it.
    with_divisor = losses.attention_relation_loss(student_x, teacher_x, num_heads, mask, num_items=40)
    assert with_divisor.item() == pytest.approx(sum(per_token) / 40, rel=1e-5)


def test_attention_relation_loss_zero_for_identical_and_splits_by_num_items():
    x = _randn(4, 5, 8, seed=9)
    mask = _padding_mask(4, 5, seed=2)
    assert losses.attention_relation_loss(x, x.clone(), 2, mask).item() == pytest.approx(0.0, abs=1e-6)
    y = _randn(4, 5, 16, seed=10)
    whole = losses.attention_relation_loss(x, y, 4, mask)
    count = int(mask.sum())
    halves = losses.attention_relation_loss(x[:2], y[:2], 4, mask[:2], num_items=count) + (
        losses.attention_relation_loss(x[2:], y[2:], 4, mask[2:], num_items=torch.tensor(count))
    )
    assert halves.item() == pytest.approx(whole.item(), rel=1e-5)


def test_attention_relation_loss_ignores_padding_and_gives_it_no_gradient():
    student_x = _randn(2, 7, 8, seed=11).float().requires_grad_()
    teacher_x = _randn(2, 7, 4, seed=12).float()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    value = losses.attention_relation_loss(student_x, teacher_x, 2, mask)
    value.backward()
    assert torch.isfinite(student_x.grad).all()
    assert student_x.grad[0].abs().sum() > 0 and student_x.grad[1, :3].abs().sum() > 0
    assert (student_x.grad[1, 3:] == 0).all()  # padded tokens neither query nor key
    assert teacher_x.grad is None
    # Huge values in the padded positions change nothing.
    noisy_s, noisy_t = student_x.detach().clone(), teacher_x.clone()
    noisy_s[1, 3:], noisy_t[1, 3:] = 1e4, -1e4
    assert losses.attention_relation_loss(noisy_s, noisy_t, 2, mask).item() == pytest.approx(value.item(), rel=1e-6)


def test_attention_relation_loss_fully_padded_example_is_finite():
    student_x = torch.randn(2, 4, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    value = losses.attention_relation_loss(student_x, torch.randn(2, 4, 8), 2, mask)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student_x.grad).all()
    all_padding = losses.attention_relation_loss(
        student_x, torch.randn(2, 4, 8), 2, torch.zeros(2, 4, dtype=torch.bool)
    )
    assert all_padding.item() == 0.0


def test_attention_relation_loss_computes_in_float32():
    student_x, teacher_x = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    low = losses.attention_relation_loss(student_x.bfloat16(), teacher_x.bfloat16(), 2)
    assert low.dtype == torch.float32
    full = losses.attention_relation_loss(student_x.bfloat16().float(), teacher_x.bfloat16().float(), 2)
    assert low.item() == pytest.approx(full.item(), rel=1e-6)


def test_attention_relation_loss_errors_name_the_bad_input():
    with pytest.raises(ValueError, match=r"width 12 is not divisible by num_relation_heads=5.*divisor of both"):
        losses.attention_relation_loss(torch.randn(1, 3, 10), torch.randn(1, 3, 12), 5)
    with pytest.raises(ValueError, match=r"\(2, 3, 8\).*\(2, 4, 8\)"):
        losses.attention_relation_loss(torch.randn(2, 3, 8), torch.randn(2, 4, 8), 2)
    with pytest.raises(ValueError, match="mask has shape"):
        losses.attention_relation_loss(torch.randn(2, 3, 8), torch.randn(2, 3, 8), 2, torch.ones(2, 4))


# --- tiny models of every supported type -----------------------------------------------------------------------------


# Whose attention has an sdpa implementation (MPNet and DeBERTa-v2 compute theirs by hand).
SDPA = {"bert", "roberta", "xlm-roberta", "electra", "distilbert", "gpt2", "llama", "mistral", "qwen2", "qwen3"}


def tiny_model(model_type, hidden=32, layers=2, heads=4, kv_heads=2, seed=0, task=False):
    """A base model (or, with `task`, its causal-LM / sequence-classification model) of `model_type`, in eval mode."""
    config = family_config(model_type, hidden, layers, heads, kv_heads)
    auto = transformers.AutoModel
    if task:
        decoder = model_type in DECODER_FAMILIES
        auto = transformers.AutoModelForCausalLM if decoder else transformers.AutoModelForSequenceClassification
    torch.manual_seed(seed)
    attn = "sdpa" if model_type in SDPA else "eager"
    return auto.from_config(config, attn_implementation=attn).eval()


def _batch(batch=3, length=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB_SIZE, (batch, length), generator=generator)
    attention_mask = _padding_mask(batch, length, seed=seed).long()
    attention_mask[-1] = 1  # at least one full row, one padded row
    attention_mask[0, length - 2 :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _projection_input(model_type, block, hidden):
    """What the layer feeds its q/k/v projections, from its input hidden state: pre-norm models normalise first."""
    if model_type == "gpt2":
        return block.ln_1(hidden)
    if model_type in ("llama", "mistral", "qwen2", "qwen3"):
        return block.input_layernorm(hidden)
    return hidden


def test_every_student_model_type_is_covered():
    assert set(SUPPORTED_MODEL_TYPES) == set(student.SUPPORTED_MODEL_TYPES) == set(FAMILIES)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@pytest.mark.parametrize("layer", [1, 2])
def test_capture_equals_projections_applied_by_hand(model_type, layer):
    model = tiny_model(model_type)
    assert model.config._attn_implementation == ("sdpa" if model_type in SDPA else "eager")
    batch = _batch()
    with torch.no_grad(), QKVCapture(model, layer) as capture:
        hidden_states = model(**batch, output_hidden_states=True).hidden_states
    projections = capture.projections
    x = _projection_input(model_type, projections.block, hidden_states[layer - 1])
    with torch.no_grad():
        if projections.fused is not None:
            expected = dict(zip(RELATIONS, projections.fused(x).chunk(3, dim=-1)))
        else:
            expected = {name: module(x) for name, module in projections.modules.items()}
    outputs = capture.outputs
    assert sorted(outputs) == sorted(RELATIONS)
    for name in RELATIONS:
        assert outputs[name].shape[:2] == (3, 7)
        torch.testing.assert_close(outputs[name], expected[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_projection_widths_are_the_captured_widths(model_type):
    model = tiny_model(model_type, hidden=32, heads=4, kv_heads=2)
    with torch.no_grad(), QKVCapture(model, 1) as capture:
        model(**_batch())
    assert capture.projections.widths == {name: tensor.shape[-1] for name, tensor in capture.outputs.items()}


def test_projection_widths_through_a_peft_adapter():
    peft = pytest.importorskip("peft")
    for model_type, targets in (("llama", ["q_proj", "k_proj"]), ("gpt2", ["c_attn"])):
        model = peft.get_peft_model(
            tiny_model(model_type, task=True), peft.LoraConfig(r=2, target_modules=targets, fan_in_fan_out=False)
        )
        expected = {"query": 32, "key": 16, "value": 16} if model_type == "llama" else dict.fromkeys(RELATIONS, 32)
        assert qkv_projections(model, 1).widths == expected


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
def test_grouped_query_attention_keys_and_values_are_narrower(model_type):
    model = tiny_model(model_type, hidden=32, heads=4, kv_heads=2)
    with torch.no_grad(), QKVCapture(model, 1) as capture:
        model(**_batch())
    widths = {name: tensor.shape[-1] for name, tensor in capture.outputs.items()}
    assert widths == {"query": 32, "key": 16, "value": 16}


def test_projections_of_task_base_and_wrapped_models_are_the_same_modules():
    model = tiny_model("llama", task=True)

    class DataParallelLike(nn.Module):  # what DDP looks like from outside: the model at `.module`, no `config`
        def __init__(self, module):
            super().__init__()
            self.module = module

    expected = model.model.layers[1].self_attn
    for wrapped in (model, model.model, DataParallelLike(model), torch.compile(model)):
        projections = qkv_projections(wrapped, 2)
        assert projections.query is expected.q_proj and projections.key is expected.k_proj
        assert projections.value is expected.v_proj and projections.block is model.model.layers[1]
    gpt2 = qkv_projections(tiny_model("gpt2", task=True), 1)
    assert gpt2.fused is not None and gpt2.query is None and list(gpt2.modules) == ["fused"]


def test_peft_model_is_unwrapped_and_lora_weights_get_gradients():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        tiny_model("llama", task=True),
        peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    with QKVCapture(model, 2) as capture:
        model(**_batch())
    teacher = capture.outputs
    loss = relation_loss_terms(
        capture.outputs, {k: v.detach() + 0.1 * torch.randn_like(v) for k, v in teacher.items()}, 2
    )
    loss.backward()
    lora_a = model.get_base_model().model.layers[1].self_attn.q_proj.lora_A["default"].weight
    assert lora_a.grad is not None and lora_a.grad.abs().sum() > 0


def test_layer_out_of_range_and_unsupported_model_type_are_named():
    model = tiny_model("bert")
    for layer in (0, 3, -1):
        with pytest.raises(ValueError, match=r"layer=-?\d is out of range.*1\.\.2"):
            qkv_projections(model, layer)
    albert = transformers.AlbertModel(
        transformers.AlbertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_attention_heads=4, intermediate_size=37)
    )
    with pytest.raises(ValueError, match=r"model_type 'albert'.*supported model types: bert, deberta-v2, distilbert"):
        QKVCapture(albert, 1)
    with pytest.raises(ValueError, match="Linear"):
        qkv_projections(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="either all of query, key and value, or only fused"):
        QKVProjections(block=nn.Identity(), query=nn.Identity())


def _hook_counts(projections):
    modules = projections.modules.values()
    return len(projections.block._forward_pre_hooks), [len(m._forward_hooks) for m in modules]


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_hooks_are_removed_on_exit_and_detach(model_type):
    model = tiny_model(model_type)
    capture = QKVCapture(model, 2)
    assert _hook_counts(capture.projections) == (0, [0] * len(capture.projections.modules))
    with capture:
        assert capture.attached and _hook_counts(capture.projections)[0] == 1
        assert _hook_counts(capture.projections)[1] == [1] * len(capture.projections.modules)
    assert not capture.attached
    assert _hook_counts(capture.projections) == (0, [0] * len(capture.projections.modules))
    with pytest.raises(RuntimeError, match="exits"):
        with capture:
            raise RuntimeError("exits")
    assert _hook_counts(capture.projections) == (0, [0] * len(capture.projections.modules))
    capture.attach()
    with pytest.raises(RuntimeError, match="already attached"):
        capture.attach()
    capture.remove()
    capture.detach()  # a second time does nothing
    assert _hook_counts(capture.projections) == (0, [0] * len(capture.projections.modules))


def test_long_lived_capture_follows_each_forward_pass():
    model = tiny_model("bert")
    capture = QKVCapture(model, 1).attach()
    with pytest.raises(RuntimeError, match="No forward pass of layer 1"):
        _ = capture.outputs
    with torch.no_grad():
        model(**_batch(seed=1))
        first = capture.outputs["query"]
        model(**_batch(batch=2, length=5, seed=2))
    second = capture.outputs["query"]
    assert first.shape == (3, 7, 32) and second.shape == (2, 5, 32)
    capture.clear()
    with pytest.raises(RuntimeError, match="since the capture was created or cleared"):
        _ = capture.outputs
    capture.detach()
    with torch.no_grad():
        model(**_batch())
    with pytest.raises(RuntimeError, match="No forward pass"):
        _ = capture.outputs  # detached: nothing recorded


# --- the relation loss through captures ------------------------------------------------------------------------------


def _relation_loss(student_model, teacher_model, student_layer, teacher_layer, num_relation_heads, batch):
    with QKVCapture(student_model, student_layer) as s, QKVCapture(teacher_model, teacher_layer) as t:
        student_model(**batch)
        with torch.no_grad():
            teacher_model(**batch)
    return relation_loss_terms(s.outputs, t.outputs, num_relation_heads, mask=batch["attention_mask"])


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "gpt2", "llama", "roberta", "qwen2"])
def test_relation_loss_is_zero_when_the_student_is_the_teacher(model_type):
    teacher = tiny_model(model_type, layers=4)
    batch = _batch()
    assert _relation_loss(copy.deepcopy(teacher), teacher, 3, 3, 4, batch).item() == pytest.approx(0.0, abs=1e-6)
    with QKVCapture(teacher, 2) as same_a, QKVCapture(teacher, 2) as same_b:
        teacher(**batch)
    assert relation_loss_terms(same_a.outputs, same_b.outputs, 2).item() == pytest.approx(0.0, abs=1e-6)
    assert _relation_loss(copy.deepcopy(teacher), teacher, 1, 4, 4, batch).item() > 1e-4


@pytest.mark.parametrize(
    ("model_type", "weights"),
    [
        ("bert", ["attention.self.query", "attention.self.key", "attention.self.value"]),
        ("distilbert", ["attention.q_lin", "attention.k_lin", "attention.v_lin"]),
        ("gpt2", ["attn.c_attn"]),
        ("llama", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
        ("roberta", ["attention.self.query", "attention.self.key", "attention.self.value"]),
        ("qwen2", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
    ],
)
def test_relation_loss_between_different_widths_and_head_counts_trains_the_student(model_type, weights):
    # Teacher: hidden 64, 4 heads (2 key/value heads); student: hidden 32, 2 heads (1 key/value head). R = 4 divides
    # every width: 64 / 32 for queries, 32 / 16 for grouped keys and values.
    teacher = tiny_model(model_type, hidden=64, layers=4, heads=4, kv_heads=2, seed=0)
    student_model = tiny_model(model_type, hidden=32, layers=2, heads=2, kv_heads=1, seed=1).train()
    batch = _batch()
    loss = _relation_loss(student_model, teacher, 2, 4, 4, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    student_block = qkv_projections(student_model, 2).block
    for path in weights:
        grad = student_block.get_submodule(path).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, path
    assert all(p.grad is None for p in teacher.parameters())


def test_relation_loss_is_finite_with_heavy_padding():
    teacher, student_model = tiny_model("bert", hidden=64, layers=4), tiny_model("bert", hidden=32, seed=1)
    batch = _batch(batch=4, length=9)
    batch["attention_mask"][1] = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0])
    batch["attention_mask"][2] = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0, 0])
    loss = _relation_loss(student_model, teacher, 2, 4, 4, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in student_model.parameters() if p.grad is not None)


def test_relation_loss_terms_is_the_mean_of_the_chosen_relations():
    student_qkv = {name: _randn(2, 5, 8, seed=i) for i, name in enumerate(RELATIONS)}
    teacher_qkv = {name: _randn(2, 5, 16, seed=10 + i) for i, name in enumerate(RELATIONS)}
    mask = _padding_mask(2, 5, seed=3)
    each = {name: losses.attention_relation_loss(student_qkv[name], teacher_qkv[name], 4, mask) for name in RELATIONS}
    combined = relation_loss_terms(student_qkv, teacher_qkv, 4, mask)
    assert combined.item() == pytest.approx(sum(v.item() for v in each.values()) / 3, rel=1e-6)
    only_value = relation_loss_terms(student_qkv, teacher_qkv, 4, mask, num_items=10, relations="value")
    expected = losses.attention_relation_loss(student_qkv["value"], teacher_qkv["value"], 4, mask, num_items=10)
    assert only_value.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\['attention'\] unknown"):
        relation_loss_terms(student_qkv, teacher_qkv, 4, relations=("query", "attention"))
    with pytest.raises(ValueError, match="at least one"):
        relation_loss_terms(student_qkv, teacher_qkv, 4, relations=())
    with pytest.raises(ValueError, match=r"teacher_qkv has no \['key'\]"):
        relation_loss_terms(student_qkv, {"query": teacher_qkv["query"]}, 4, relations=("query", "key"))


def test_gradient_checkpointing_gives_the_same_gradients():
    teacher = tiny_model("bert", hidden=64, layers=4)
    batch = _batch()
    grads = []
    for checkpointing in (False, True):
        student_model = tiny_model("bert", hidden=32, seed=1).train()
        if checkpointing:
            student_model.activation_checkpointing_enable()
        _relation_loss(student_model, teacher, 2, 4, 4, batch).backward()
        grads.append(qkv_projections(student_model, 2).query.weight.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])
