"""The fused linear distillation loss: the soft-target loss and the cross-entropy made from hidden states and an output
layer, chunk by chunk. Values and gradients (hidden states, weight, bias) equal the terms computed from the whole
logits, for every divergence, dense, top-k and linear-head teachers, float32 and bfloat16, uneven chunks, masked and
unlabelled positions; no tensor over the vocabulary wider than one chunk is made."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny_task_models import SGD, case, make_config, make_trainer, pad_batch, random_task_rows
from torch.utils._python_dispatch import TorchDispatchMode

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache, losses
from hf_distill.fused_linear import LinearHead, fused_linear_distillation_loss
from hf_distill.losses import TopKTargets

pytestmark = pytest.mark.usefixtures("one_thread")

MIXING = {"forward_kl": {}, "reverse_kl": {}, "jsd": {"beta": 0.3}, "skew_kl": {"alpha": 0.2}, "tv": {}}
VOCAB, WIDTH, TEACHER_WIDTH = 23, 8, 6


def problem(seed=0, dtype=torch.float32, teacher_kind="dense", temperature=1.0, bias=True, batch=3, length=9):
    """Student hidden states, head and bias; the teacher as logits, top-k targets or a head; a mask with padding and
    a prompt; labels with a scored position that has none."""
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(batch, length, WIDTH, generator=g) * 2).to(dtype)
    weight = torch.randn(VOCAB, WIDTH, generator=g).to(dtype)
    student_bias = torch.randn(VOCAB, generator=g).to(dtype) if bias else None
    teacher_head = LinearHead(
        (torch.randn(batch, length, TEACHER_WIDTH, generator=g) * 2).to(dtype),
        torch.randn(VOCAB, TEACHER_WIDTH, generator=g).to(dtype),
    )
    teacher_logits = teacher_head.logits()
    lengths = torch.tensor([length - (3 * i) % length for i in range(batch)])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    mask[0, :2] = False  # a prompt
    labels = torch.randint(0, VOCAB, (batch, length), generator=g).masked_fill(~mask, -100)
    labels[1, 1] = -100  # a scored position without a label
    if teacher_kind == "dense":
        teacher = teacher_logits
    elif teacher_kind == "head":
        teacher = teacher_head
    else:
        values, ids = torch.log_softmax(teacher_logits.float() / temperature, -1).topk(5, dim=-1)
        teacher = TopKTargets(ids, values, VOCAB)
    return hidden, weight, student_bias, teacher, mask, labels


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


def unfused(hidden, weight, bias, teacher, mask, labels, temperature, divergence, weights):
    """The two terms as the trainer computes them without fusion: from the whole logits of the output layer."""
    hidden, weight, bias = leaves(hidden, weight, bias)
    logits = F.linear(hidden, weight, bias)
    kd_weight, label_weight = weights
    targets = teacher.logits() if isinstance(teacher, LinearHead) else teacher
    kd = losses.soft_target_loss(logits, targets, temperature, mask, torch.tensor(40), divergence)
    ce = losses.task_cross_entropy(logits, labels, num_items=torch.tensor(30))
    (kd_weight * kd + label_weight * ce).backward()
    return kd.detach(), ce.detach(), [t.grad if t is not None else None for t in (hidden, weight, bias)]


def fused(hidden, weight, bias, teacher, mask, labels, temperature, divergence, weights, chunk_size, scale=1.0):
    hidden, weight, bias = leaves(hidden, weight, bias)
    kd_weight, label_weight = weights
    kd, ce = fused_linear_distillation_loss(
        LinearHead(hidden, weight, bias), teacher, labels, mask, torch.tensor(40), torch.tensor(30),
        kd_weight, label_weight, temperature, divergence, chunk_size,
    )  # fmt: skip
    (scale * (kd_weight * kd + label_weight * ce)).backward()
    return kd.detach(), ce.detach(), [t.grad / scale if t is not None else None for t in (hidden, weight, bias)]


def assert_same(got, expected, dtype):
    kd, ce, grads = got
    kd_ref, ce_ref, grads_ref = expected
    value = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-3, "atol": 2e-3}
    grad = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(kd, kd_ref, **value)
    torch.testing.assert_close(ce, ce_ref, **value)
    for g, g_ref, name in zip(grads, grads_ref, ("hidden", "weight", "bias")):
        if g_ref is None:
            assert g is None
            continue
        assert g.dtype == g_ref.dtype, name
        if dtype == torch.float32:
            torch.testing.assert_close(g, g_ref, **grad, msg=name)
        else:  # bfloat16: the gradients' directions agree closely, elementwise to bfloat16 rounding
            cosine = F.cosine_similarity(g.float().flatten(), g_ref.float().flatten(), dim=0)
            assert cosine > 0.999, (name, cosine)
            torch.testing.assert_close(g.float(), g_ref.float(), **grad, msg=name)


@pytest.mark.parametrize("teacher_kind", ["dense", "top-k", "head"])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_kl_and_the_lm_loss_equal_the_terms_from_the_whole_logits(teacher_kind, chunk_size, dtype):
    """T = 1, both terms: the fast one-buffer passes, chunk sizes that do and do not divide the 23 counted rows."""
    hidden, weight, bias, teacher, mask, labels = problem(1, dtype, teacher_kind)
    args = (hidden, weight, bias, teacher, mask, labels, 1.0, losses.soft_target_kl, (0.3, 0.7))
    assert_same(fused(*args, chunk_size), unfused(*args), dtype)


@pytest.mark.parametrize("name", list(MIXING))
@pytest.mark.parametrize("teacher_kind", ["dense", "top-k", "head"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_every_divergence_at_any_temperature(name, teacher_kind, temperature):
    divergence = functools.partial(losses.DIVERGENCES[name], **MIXING[name])
    hidden, weight, bias, teacher, mask, labels = problem(2, torch.float32, teacher_kind, temperature)
    args = (hidden, weight, bias, teacher, mask, labels, temperature, divergence, (1.0, 0.5))
    assert_same(fused(*args, 5), unfused(*args), torch.float32)


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0)], ids=["kd-only", "label-only"])
@pytest.mark.parametrize("teacher_kind", ["dense", "top-k"])
def test_one_term_alone_and_no_bias(weights, teacher_kind):
    hidden, weight, _, teacher, mask, labels = problem(3, torch.float32, teacher_kind, 2.0, bias=False)
    args = (hidden, weight, None, teacher, mask, labels, 2.0, losses.soft_target_kl, weights)
    kd, ce, grads = fused(*args, 4)
    kd_ref, ce_ref, grads_ref = unfused(*args)
    for got, expected, weight_of in ((kd, kd_ref, weights[0]), (ce, ce_ref, weights[1])):
        torch.testing.assert_close(got, expected if weight_of else torch.zeros(()), rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(grads[:2], grads_ref[:2]):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


def test_a_scaled_loss_is_followed_and_other_weights_are_refused():
    """Any common factor of the weighted sum (accumulation, processes, a loss scaler) scales the gradients; a loss
    that weighs the two values otherwise than declared is refused, not silently given the wrong gradient."""
    hidden, weight, bias, teacher, mask, labels = problem(4)
    args = (hidden, weight, bias, teacher, mask, labels, 1.0, losses.soft_target_kl, (0.3, 0.7))
    assert_same(fused(*args, 3, scale=0.125), unfused(*args), torch.float32)
    kd, ce = fused_linear_distillation_loss(
        LinearHead(*leaves(hidden, weight, bias)), teacher, labels, mask, kd_weight=0.3, label_weight=0.7
    )
    with pytest.raises(RuntimeError, match=r"weighs them \(0\.5, 0\.5\): give fused_linear_distillation_loss the"):
        (0.5 * kd + 0.5 * ce).backward()
    kd, ce = fused_linear_distillation_loss(LinearHead(*leaves(hidden, weight, bias)), teacher, labels, kd_weight=1.0)
    kd.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward pass runs once"):
        kd.backward()


def test_nothing_counted_gives_zero_and_no_gradient_and_no_grad_gives_values_only():
    hidden, weight, bias, teacher, _, labels = problem(5)
    nothing = torch.zeros(hidden.shape[:2], dtype=torch.bool)
    h, w, b = leaves(hidden, weight, bias)
    kd, ce = fused_linear_distillation_loss(
        LinearHead(h, w, b), teacher, torch.full_like(labels, -100), nothing, kd_weight=1.0, label_weight=1.0
    )
    (kd + ce).backward()
    assert kd.item() == 0 and ce.item() == 0
    assert h.grad.abs().max() == 0 and w.grad.abs().max() == 0 and b.grad.abs().max() == 0
    with torch.no_grad():
        kd, ce = fused_linear_distillation_loss(LinearHead(hidden, weight, bias), teacher, labels, kd_weight=1.0)
    assert not kd.requires_grad
    logits = F.linear(hidden, weight, bias)
    torch.testing.assert_close(kd, losses.soft_target_kl(logits, teacher), rtol=1e-5, atol=1e-6)
    assert ce.item() == 0  # label_weight 0: not computed


def test_bad_inputs_are_named():
    hidden, weight, bias, teacher, mask, labels = problem(6)
    head = LinearHead(hidden, weight, bias)
    with pytest.raises(ValueError, match="give at least one weight > 0 with its targets"):
        fused_linear_distillation_loss(head, None, None)
    with pytest.raises(ValueError, match=r"the teacher's targets stand for \(3, 9, 22\)"):
        fused_linear_distillation_loss(head, teacher[..., :22], labels)
    with pytest.raises(ValueError, match=r"weight has shape \(23, 8\), expected \(num_classes, 7\)"):
        fused_linear_distillation_loss(LinearHead(hidden[..., :7], weight), teacher, labels)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 8\), expected \(3, 9\)"):
        fused_linear_distillation_loss(head, teacher, labels, mask[:, :8])
    with pytest.raises(ValueError, match="chunk_size must be a whole number >= 1"):
        fused_linear_distillation_loss(head, teacher, labels, chunk_size=0)
    with pytest.raises(TypeError, match="student must be a LinearHead"):
        fused_linear_distillation_loss(F.linear(hidden, weight), teacher, labels)


class _Sizes(TorchDispatchMode):
    """Records the shape of every tensor an operation makes."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.shapes.append(tuple(value.shape))
        return out


@pytest.mark.parametrize("teacher_kind", ["top-k", "head"])
def test_no_tensor_over_the_vocabulary_is_wider_than_one_chunk(teacher_kind):
    """Forward and backward: every tensor made whose last dimension is the vocabulary has at most `chunk_size` rows
    (the teacher as a head: its logits too), where the same loss from the whole logits makes (batch x length) rows."""
    hidden, weight, bias, teacher, mask, labels = problem(7, teacher_kind=teacher_kind, batch=4, length=16)
    h, w, b = leaves(hidden, weight, bias)
    with _Sizes() as sizes:
        kd, ce = fused_linear_distillation_loss(
            LinearHead(h, w, b), teacher, labels, mask, kd_weight=0.5, label_weight=0.5, chunk_size=4
        )
        (0.5 * kd + 0.5 * ce).backward()
    # (The output layers' weights, transposed, are (width, vocabulary): not tensors over positions.)
    weights = {(WIDTH, VOCAB), (TEACHER_WIDTH, VOCAB)}
    wide = [shape for shape in sizes.shapes if len(shape) > 1 and shape[-1] == VOCAB and shape not in weights]
    assert wide and max(torch.Size(shape[:-1]).numel() for shape in wide) <= 4
    with _Sizes() as sizes:
        unfused(hidden, weight, bias, teacher, mask, labels, 1.0, losses.soft_target_kl, (0.5, 0.5))
    assert max(torch.Size(s[:-1]).numel() for s in sizes.shapes if s and s[-1] == VOCAB and len(s) > 1) == 64


def test_under_autocast_the_chunks_run_in_the_autocast_dtype():
    """Mixed precision (bf16=True): the output layer would run in bfloat16 under autocast, so do the chunks."""
    hidden, weight, bias, teacher, mask, labels = problem(8)
    args = (hidden, weight, bias, teacher, mask, labels, 1.0, losses.soft_target_kl, (0.5, 0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = fused(*args, 5), unfused(*args)
    assert_same(got, expected, torch.bfloat16)
    assert got[2][1].dtype == torch.float32  # the float32 weight's gradient stays float32


# ---- the trainer ----------------------------------------------------------------------------------------------------


def test_the_probe_tells_a_plain_head_from_scaled_or_capped_logits():
    from transformers import AutoModelForCausalLM, CohereConfig, Gemma2Config

    from hf_distill.fused_linear import probe_linear_head

    sizes = dict(
        vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    assert probe_linear_head(case("causal-lm-llama").build()) is None
    assert probe_linear_head(case("causal-lm-gpt2").build()) is None
    cohere = AutoModelForCausalLM.from_config(CohereConfig(**sizes, logit_scale=0.5))
    assert "not its output layer's linear map" in probe_linear_head(cohere, "teacher")
    gemma = AutoModelForCausalLM.from_config(Gemma2Config(**sizes, head_dim=8, final_logit_softcapping=30.0))
    assert "soft-caps its logits" in probe_linear_head(gemma)


def sgd_update(tmp_path, name, batch_size, accumulation, spy=None, cache=None, **overrides):
    """Minus the parameter change of one plain SGD step at lr 1 of a 1-layer Llama student: 16 causal-LM rows of
    uneven lengths, a live 2-layer Llama teacher or a teacher cache."""
    rows = Dataset.from_list(random_task_rows("causal-lm", n=16, seed=5, min_len=2, max_len=20))
    student = case("causal-lm-llama").build(num_layers=1, seed=1)
    teacher = None if cache is not None else case("causal-lm-llama").build(num_layers=2, seed=0)
    settings = {"kd_weight": 1.0, "label_weight": 0.5, "temperature": 1.0, "max_steps": 1, **SGD, **overrides}
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, teacher_cache=cache, train_dataset=rows, eval_dataset=rows,
        data_collator=pad_batch,
        args=make_config(tmp_path / name, per_device_train_batch_size=batch_size,
                         gradient_accumulation_steps=accumulation, train_sampling_strategy="sequential", **settings),
    )  # fmt: skip
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    trainer.train()
    return {k: before[k] - v.detach() for k, v in student.named_parameters()}, trainer


@pytest.fixture
def calls(monkeypatch):
    """The kinds of student and teacher each call of the fused loss by its pass received."""
    from hf_distill import terms

    seen = []
    original = terms.fused_linear_distillation_loss

    def spy(student, teacher, *args):
        seen.append((type(student).__name__, type(teacher).__name__))
        return original(student, teacher, *args)

    monkeypatch.setattr(terms, "fused_linear_distillation_loss", spy)
    return seen


@pytest.mark.parametrize(
    "overrides",
    [{}, {"divergence": "jsd", "temperature": 2.0}, {"loss_chunk_size": 5}, {"label_weight": 0.0}],
    ids=["forward-kl", "jsd-T2", "chunks-of-5", "kd-only"],
)
def test_a_live_teacher_step_takes_the_fused_loss_and_equals_the_step_from_the_logits(tmp_path, calls, overrides):
    """No logits on either side (the teacher's head inputs too); one batch of 16 equals two accumulated batches of 8
    and the same step from the logits (`fused_linear_loss="never"`), every parameter of the student."""
    whole, trainer = sgd_update(tmp_path, "whole", 16, 1, **overrides)
    assert calls == [("LinearHead", "LinearHead")]
    halves, _ = sgd_update(tmp_path, "halves", 8, 2, **overrides)
    assert len(calls) == 3
    logits, _ = sgd_update(tmp_path, "logits", 16, 1, fused_linear_loss="never", **overrides)
    assert len(calls) == 3
    assert sum(d.abs().sum().item() for d in whole.values()) > 1e-3
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
        torch.testing.assert_close(logits[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
    metrics = trainer.evaluate()  # evaluation reads the logits
    assert math.isfinite(metrics["eval_loss_kd"]) and math.isfinite(metrics["eval_perplexity"])


@pytest.mark.parametrize("top_k", [4, None], ids=["top-k", "dense"])
def test_a_step_from_a_teacher_cache_takes_the_fused_loss(tmp_path, calls, top_k):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=16, seed=5, min_len=2, max_len=20))
    teacher = case("causal-lm-llama").build(num_layers=2, seed=0)
    stored = CacheArguments(str(tmp_path / "cache"), top_k=top_k)
    cache = build_teacher_cache(teacher, rows, stored, data_collator=pad_batch, temperature=1.0, progress=False)
    whole, _ = sgd_update(tmp_path, "whole", 16, 1, cache=cache)
    assert calls == [("LinearHead", "TopKTargets" if top_k else "Tensor")]
    halves, _ = sgd_update(tmp_path, "halves", 8, 2, cache=cache)
    logits, _ = sgd_update(tmp_path, "logits", 16, 1, cache=cache, fused_linear_loss="never")
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
        torch.testing.assert_close(logits[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)


def test_where_the_run_does_not_allow_it_auto_says_why_and_always_refuses(tmp_path, calls, caplog):
    student, teacher = case("causal-lm-llama").pair()
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=5))
    with caplog.at_level("INFO", logger="hf_distill"):
        make_trainer(tmp_path, student, teacher, rows, pad_batch, logit_mse_weight=0.2).train()
    assert calls == []
    assert "no fused linear loss): logit_mse_weight > 0 compare the student's whole logits" in caplog.text
    with pytest.raises(ValueError, match=r"fused_linear_loss='always' but logit_mse_weight > 0 compare the student's"):
        make_trainer(tmp_path, student, teacher, rows, pad_batch, logit_mse_weight=0.2, fused_linear_loss="always")
    classifier_student, classifier_teacher = case("text-classification").pair()
    with pytest.raises(ValueError, match="always' but the sequence-classification task has no fused linear loss"):
        make_trainer(tmp_path, classifier_student, classifier_teacher, fused_linear_loss="always")
    with pytest.raises(ValueError, match="fused_linear_loss must be one of"):
        make_config(tmp_path, fused_linear_loss="sometimes")
