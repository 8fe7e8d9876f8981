"""The soft-target loss from a top-k teacher cache, read as ids and log-probabilities: each divergence on the k + 1
buckets (the top k and the tail) against a naive reference, equal to the dense loss when k is the vocabulary, and
nothing of the vocabulary's width made from the cache."""

import copy
import functools

import pytest
import torch
from datasets import Dataset
from tiny_task_models import SGD, llama, make_config, pad_batch, random_task_rows

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache, losses
from hf_distill.cache import CACHE_INDEX_COLUMN
from hf_distill.losses import TopKTargets, soft_target_loss, top_k_buckets

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = {"forward_kl": {}, "reverse_kl": {}, "jsd": {"beta": 0.3}, "skew_kl": {"alpha": 0.2}, "tv": {}}


def divergence(name):
    return functools.partial(losses.DIVERGENCES[name], **WEIGHTS[name])


def top_k_of(teacher_logits, k, temperature):
    values, ids = torch.log_softmax(teacher_logits / temperature, -1).topk(k, dim=-1)
    return TopKTargets(ids, values, teacher_logits.shape[-1])


def naive_bucketed(name, student, targets, temperature, mask):
    """The definition, in float64, item by item: p and q over the top k ids of the teacher, plus 1 - their sums."""
    total, count = 0.0, 0
    for index in mask.nonzero().tolist():
        ids = targets.ids[tuple(index)]
        p_top = targets.logprobs[tuple(index)].double().exp()
        q_all = torch.softmax(student[tuple(index)].double() / temperature, -1)
        p = torch.cat([p_top, 1 - p_top.sum(0, keepdim=True)])
        q = torch.cat([q_all[ids], 1 - q_all[ids].sum(0, keepdim=True)])

        def kl(a, b):
            return (a * (a.log() - b.log())).sum()

        if name == "forward_kl":
            value = kl(p, q)
        elif name == "reverse_kl":
            value = kl(q, p)
        elif name == "jsd":
            beta = WEIGHTS[name]["beta"]
            m = beta * p + (1 - beta) * q
            value = beta * kl(p, m) + (1 - beta) * kl(q, m)
        elif name == "skew_kl":
            alpha = WEIGHTS[name]["alpha"]
            value = kl(p, alpha * p + (1 - alpha) * q)
        else:
            value = 0.5 * (p - q).abs().sum()
        total += value.item() * temperature**2
        count += 1
    return total / count


@pytest.mark.parametrize("name", list(WEIGHTS))
@pytest.mark.parametrize("temperature, k", [(1.0, 1), (2.0, 4), (0.7, 9)])
def test_each_divergence_on_the_buckets_equals_the_naive_definition(name, temperature, k):
    g = torch.Generator().manual_seed(3)
    student = torch.randn(3, 6, 23, generator=g) * 2
    targets = top_k_of(torch.randn(3, 6, 23, generator=g) * 3, k, temperature)
    mask = torch.rand(3, 6, generator=g) > 0.3
    value = soft_target_loss(student, targets, temperature, mask, divergence=divergence(name))
    assert value.item() == pytest.approx(naive_bucketed(name, student, targets, temperature, mask), rel=1e-4)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_with_k_the_whole_vocabulary_it_is_the_dense_loss_and_its_gradient(name):
    g = torch.Generator().manual_seed(4)
    student = torch.randn(2, 5, 17, generator=g, requires_grad=True)
    teacher = torch.randn(2, 5, 17, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    dense = soft_target_loss(student, teacher, 2.0, mask, divergence=divergence(name))
    (dense_grad,) = torch.autograd.grad(dense, student)
    sparse = soft_target_loss(student, top_k_of(teacher, 17, 2.0), 2.0, mask, divergence=divergence(name))
    (sparse_grad,) = torch.autograd.grad(sparse, student)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-4, abs=1e-6)
    torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_zero_when_the_student_is_the_teacher(name):
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(5))
    value = soft_target_loss(logits, top_k_of(logits, 5, 2.0), 2.0, divergence=divergence(name))
    assert abs(value.item()) < 1e-5


def test_the_student_tail_is_exact_where_it_is_tiny():
    # The student puts almost all its mass on the top k: 1 - sum(q_top) in float32 would be 0 or noise.
    student = torch.full((1, 50), -40.0)
    student[0, :3] = torch.tensor([5.0, 4.0, 3.0])
    targets = TopKTargets(torch.tensor([[0, 1, 2]]), torch.log(torch.tensor([[0.5, 0.2, 0.1]])), 50)
    log_q, log_p = top_k_buckets(student, targets, 1.0)
    expected_tail = torch.logsumexp(torch.log_softmax(student.double(), -1)[0, 3:], 0)
    assert log_q[0, -1].item() == pytest.approx(expected_tail.item(), rel=1e-5)
    assert log_p[0, -1].exp().item() == pytest.approx(0.2, rel=1e-5)


def test_top_k_targets_index_items_not_classes():
    targets = TopKTargets(torch.zeros(2, 5, 3, dtype=torch.long), torch.zeros(2, 5, 3), 1000)
    assert targets[:, :-1].ids.shape == (2, 4, 3) and targets[:, :-1].shape == (2, 4, 1000)
    assert targets[torch.ones(2, 5, dtype=torch.bool)].ids.shape == (10, 3)
    with pytest.raises(IndexError, match="items"):
        targets[..., :10]
    with pytest.raises(ValueError, match=r"\(2, 5, 999\)"):
        top_k_buckets(torch.zeros(2, 5, 999), targets)


def test_a_cache_of_a_large_vocabulary_is_read_back_without_its_width(tmp_path):
    """A 60,000-token teacher: what the cache returns for a batch holds k values per position, and the loss from it
    equals the naive bucketed KL."""
    vocab, k = 60_000, 4
    teacher = llama(num_layers=1, hidden=8, seed=0, vocab_size=vocab)
    rows = Dataset.from_list(random_task_rows("causal-lm", n=6, seed=1))
    stored = CacheArguments(str(tmp_path / "cache"), top_k=k)
    cache = build_teacher_cache(teacher, rows, stored, data_collator=pad_batch, temperature=2.0, progress=False)
    batch = pad_batch([rows[i] for i in range(6)])
    out = cache.outputs(torch.arange(6), batch["attention_mask"], batch["input_ids"].shape, "cpu")
    tensors = [value for value in (out.logits.ids, out.logits.logprobs)]
    assert all(t.shape == (*batch["input_ids"].shape, k) for t in tensors)
    assert out.logits.shape[-1] == vocab  # it stands for the vocabulary, holds k of it
    assert cache.size_bytes() < 6 * 20 * k * 8 * 2  # a few bytes per stored value, not 4 * 60,000 per token
    mask = batch["labels"][:, 1:] != -100
    student = torch.randn(*batch["input_ids"].shape, vocab, generator=torch.Generator().manual_seed(0)) * 3
    value = soft_target_loss(student[:, :-1], out.logits[:, :-1], 2.0, mask)
    expected = naive_bucketed("forward_kl", student[:, :-1], out.logits[:, :-1], 2.0, mask)
    # A tail of 0.9999 in float32 against float64: the loss (3e-4) is a small difference of such terms.
    assert value.item() == pytest.approx(expected, rel=1e-3)


def test_a_causal_lm_trains_from_a_top_k_cache_with_the_bucketed_loss(tmp_path):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=2))
    teacher, student = llama(num_layers=2, seed=0), llama(num_layers=1, seed=1)
    stored = CacheArguments(str(tmp_path / "cache"), top_k=3)
    cache = build_teacher_cache(teacher, rows, stored, data_collator=pad_batch, temperature=2.0, progress=False)
    before = copy.deepcopy(student)
    trainer = DistillationTrainer(
        model=student,
        teacher_cache=cache,
        args=make_config(tmp_path, kd_weight=1.0, label_weight=0.0, temperature=2.0, max_steps=2),
        train_dataset=rows,
        data_collator=pad_batch,
    )
    trainer.train()
    logged = [entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry]
    batch = pad_batch([rows[i] for i in range(8)])
    targets = cache.outputs(torch.arange(8), batch["attention_mask"], batch["input_ids"].shape, "cpu").logits
    with torch.no_grad():
        s = before(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    assert logged[0] == pytest.approx(naive_bucketed("forward_kl", s[:, :-1], targets[:, :-1], 2.0, mask), rel=1e-4)


@pytest.mark.parametrize("temperature, k", [(1.0, 1), (2.0, 5), (0.5, 13)])
def test_the_fused_forward_kl_equals_the_autograd_path_loss_and_gradient(temperature, k):
    """Forward KL from top-k targets computes its gradient in the forward pass (one vocabulary-wide buffer): the same
    loss and gradient as the bucket distributions through autograd, tiny tails included."""
    g = torch.Generator().manual_seed(6)
    student = torch.randn(3, 7, 13, generator=g) * 3
    student[0, 0] = -40.0
    student[0, 0, :3] = torch.tensor([5.0, 4.0, 3.0])  # a tail of about 1e-19
    student[0, 1] = -80.0
    student[0, 1, :k] = 5.0  # a tail of about 1e-36, below the floor of 1e-30: floored in both paths
    targets = top_k_of(torch.randn(3, 7, 13, generator=g) * 3, k, temperature)
    mask = torch.rand(3, 7, generator=g) > 0.3
    mask[0, :2] = True
    results = []
    for function in (losses.soft_target_kl, lambda *args: losses.soft_target_kl(*args)):  # fused, then autograd
        logits = student.clone().requires_grad_(True)
        value = soft_target_loss(logits, targets, temperature, mask, torch.tensor(30), divergence=function)
        (0.5 * value).backward()
        results.append((value.detach(), logits.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-8)


def test_a_student_tail_below_the_floor_is_still_pulled_up():
    """The student puts 1 - 1e-36 on the teacher's top class, the teacher 0.5: the tail's value is floored at 1e-30,
    its gradient is not (q - p = 0.5 on the top class), in the fused and the autograd path."""
    student = torch.full((1, 13), -80.0)
    student[0, 0] = 5.0
    targets = TopKTargets(torch.tensor([[0]]), torch.log(torch.tensor([[0.5]])), 13)
    for function in (losses.soft_target_kl, lambda *args: losses.soft_target_kl(*args)):
        logits = student.clone().requires_grad_(True)
        soft_target_loss(logits, targets, 1.0, divergence=function).backward()
        assert logits.grad[0, 0].item() == pytest.approx(0.5, rel=1e-5)
        torch.testing.assert_close(logits.grad[0, 1:], torch.full((12,), -0.5 / 12))


def test_the_lm_loss_alone_of_the_one_pass_has_its_own_gradient():
    """Only the cross-entropy used (the soft-target value logged, not trained on): the gradient is q - onehot(y)."""
    logits = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    targets = top_k_of(torch.randn(2, 4, 9), 3, 1.0)
    labels = torch.randint(0, 9, (2, 4))
    _, ce = losses.sparse_forward_kl_and_cross_entropy(logits, targets, labels)
    ce.backward()
    expected = (torch.softmax(logits.detach(), -1) - torch.nn.functional.one_hot(labels, 9)) / 8
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-7)


def _cached_lm_trainer(tmp_path, rows, **overrides):
    teacher, student = llama(num_layers=2, seed=0), llama(num_layers=1, seed=1)
    # The one pass reads the student's logits: the fused linear loss (tested in test_fused_linear.py) is off.
    settings = {"kd_weight": 0.4, "label_weight": 0.6, "temperature": 1.0, "fused_linear_loss": "never", **overrides}
    cache = build_teacher_cache(
        teacher, rows, CacheArguments(str(tmp_path / "cache"), top_k=4), data_collator=pad_batch,
        temperature=settings["temperature"], progress=False,
    )  # fmt: skip
    return DistillationTrainer(
        model=student, teacher_cache=cache, args=make_config(tmp_path, **settings), train_dataset=rows,
        data_collator=pad_batch,
    )  # fmt: skip


def test_a_causal_lm_step_from_a_top_k_cache_computes_kd_and_lm_loss_in_one_pass(tmp_path, monkeypatch):
    """The trainer takes the one-pass path for a causal LM from a top-k cache at T = 1 (with kd and label weights),
    and its terms and gradients equal those of the terms computed one by one."""
    from hf_distill import terms

    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=4))
    trainer = _cached_lm_trainer(tmp_path, rows)
    batch = {**pad_batch([rows[i] for i in range(8)]), CACHE_INDEX_COLUMN: torch.arange(8)}
    counts = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    trainer.model.train()
    calls = []
    one_pass = losses.sparse_forward_kl_and_cross_entropy
    monkeypatch.setattr(
        losses.one_pass, "sparse_forward_kl_and_cross_entropy", lambda *a: calls.append(1) or one_pass(*a)
    )

    def step():
        trainer.model.zero_grad()
        trainer._train_terms.clear()
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=counts)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]

    fused_loss, fused_grads = step()
    assert calls == [1]
    monkeypatch.setattr(terms, "FUSED_PASSES", ())
    loss, grads = step()
    assert calls == [1]
    torch.testing.assert_close(fused_loss, loss, rtol=1e-6, atol=1e-7)
    for a, b in zip(fused_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "overrides", [{"temperature": 2.0}, {"label_weight": 0.0}, {"divergence": "reverse_kl"}], ids=str
)
def test_the_one_pass_is_taken_only_where_it_computes_the_same_terms(tmp_path, monkeypatch, overrides):
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=4))
    trainer = _cached_lm_trainer(tmp_path, rows, **overrides)
    calls = []
    one_pass = losses.sparse_forward_kl_and_cross_entropy
    monkeypatch.setattr(
        losses.one_pass, "sparse_forward_kl_and_cross_entropy", lambda *a: calls.append(1) or one_pass(*a)
    )
    batch = {**pad_batch([rows[i] for i in range(8)]), CACHE_INDEX_COLUMN: torch.arange(8)}
    counts = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch, num_items_in_batch=counts).backward()
    assert calls == []


def test_the_one_pass_under_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path, monkeypatch):
    """From a top-k cache, KD and LM loss in one pass: two accumulated batches of 8 rows of uneven token counts give
    the plain SGD update of one batch of 16."""
    rows = Dataset.from_list(random_task_rows("causal-lm", n=16, seed=5, min_len=2, max_len=20))
    teacher = llama(num_layers=2, seed=0)
    stored = CacheArguments(str(tmp_path / "cache"), top_k=4)
    cache = build_teacher_cache(teacher, rows, stored, data_collator=pad_batch, temperature=1.0, progress=False)
    calls = []
    one_pass = losses.sparse_forward_kl_and_cross_entropy
    monkeypatch.setattr(
        losses.one_pass, "sparse_forward_kl_and_cross_entropy", lambda *a: calls.append(1) or one_pass(*a)
    )

    def update(batch_size, accumulation):
        student = llama(num_layers=1, seed=1)
        before = {k: v.detach().clone() for k, v in student.named_parameters()}
        settings = {"kd_weight": 1.0, "label_weight": 0.5, "temperature": 1.0, "max_steps": 1, **SGD}
        settings["fused_linear_loss"] = "never"  # the one pass from the logits
        settings.update(per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation)
        DistillationTrainer(
            model=student, teacher_cache=cache, train_dataset=rows, data_collator=pad_batch,
            args=make_config(tmp_path / f"{batch_size}x{accumulation}", train_sampling_strategy="sequential",
                             **settings),
        ).train()  # fmt: skip
        return {k: before[k] - v.detach() for k, v in student.named_parameters()}

    whole, halves = update(16, 1), update(8, 2)
    assert len(calls) == 3
    assert sum(d.abs().sum().item() for d in whole.values()) > 1e-3
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
