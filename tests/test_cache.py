"""The teacher-output cache: stored outputs equal live ones, training from them equals training with the teacher,
the wrong cache is refused, and an interrupted build resumes."""

import functools
import json
import math

import pyarrow as pa
import pytest
import torch
import yaml
from datasets import Dataset
from tiny_task_models import (
    CASE_IDS,
    CASES,
    SGD,
    make_config,
    masked_lm,
    pad_batch,
    pad_collate,
    random_classification_dataset,
    random_task_rows,
    tiny_bert,
    tiny_tokenizer,
    token_classifier,
    write_sentiment_rows,
)

from hf_distill import DistillationTrainer
from hf_distill.cache import CACHE_INDEX_COLUMN, CacheArguments, CacheMismatchError, TeacherCache, build_teacher_cache
from hf_distill.losses import TopKTargets, soft_target_loss

pytestmark = pytest.mark.usefixtures("one_thread")


# A few steps of plain SGD: the student shows any difference in the targets.
STEPS = {
    **SGD,
    "learning_rate": 0.5,
    "per_device_train_batch_size": 4,
    "max_steps": 3,
    "kd_weight": 1.0,
    "label_weight": 0.5,
}


def config(tmp_path, **overrides):
    return make_config(tmp_path, **{**STEPS, **overrides})


def build(teacher, dataset, path, collator=pad_collate, tokenizer=None, temperature=None, **settings):
    """A cache of `teacher`'s outputs: `settings` are CacheArguments fields (in small batches and shards here)."""
    args = CacheArguments(str(path), **{"cache_batch_size": 8, "shard_size": 16, **settings})
    return build_teacher_cache(
        teacher, dataset, args, tokenizer=tokenizer, data_collator=collator, temperature=temperature, progress=False
    )


# ---- what is stored ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_stored_outputs_equal_the_live_teacher_in_any_order_and_padding(tmp_path, task_case):
    # Masked-LM rows are masked once, beforehand: a fixed input, so the outputs can be stored.
    teacher = task_case.build(num_layers=3, seed=0)
    rows = Dataset.from_list(random_task_rows(task_case.rows, n=21, seed=2))
    cache = build(teacher, rows, tmp_path / "cache", collator=pad_batch, hidden_layers="0,3", hidden_dtype="float32")
    indices = [17, 2, 9, 20, 0]  # shuffled, and padded differently from the build's batches
    batch = pad_batch([rows[i] for i in indices], pad_to=30)
    stored = cache.outputs(torch.tensor(indices), batch["attention_mask"], batch["input_ids"].shape, "cpu")
    with torch.no_grad():
        live = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    real = batch["attention_mask"].bool()
    for field in ("start_logits", "end_logits") if task_case.task == "question-answering" else ("logits",):
        scored = real if live[field].shape[:2] == real.shape else slice(None)  # per token, or one row per example
        torch.testing.assert_close(stored[field][scored], live[field][scored], rtol=1e-5, atol=1e-5)
    for layer in (0, 3):
        torch.testing.assert_close(stored.hidden_states[layer][real], live.hidden_states[layer][real])
    assert stored.hidden_states[1] is None and stored.hidden_states[2] is None


def test_top_k_keeps_the_k_most_likely_classes_and_reads_them_back_without_the_vocabulary(tmp_path):
    teacher = masked_lm(num_layers=2, seed=0)
    rows = Dataset.from_list(random_task_rows("masked-lm", n=6, seed=1))
    temperature, k = 2.0, 5
    cache = build(teacher, rows, tmp_path / "cache", collator=pad_batch, top_k=k, temperature=temperature)
    batch = pad_batch([rows[i] for i in range(6)])
    stored = cache.outputs(torch.arange(6), batch["attention_mask"], batch["input_ids"].shape, "cpu").logits
    with torch.no_grad():
        live = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    # Ids and log-probabilities, (batch, seq_len, k): nothing of the vocabulary's width.
    assert isinstance(stored, TopKTargets) and stored.ids.shape == stored.logprobs.shape == (*real.shape, k)
    assert stored.shape == live.shape
    top = torch.log_softmax(live[real] / temperature, -1).topk(k, dim=-1)
    assert torch.equal(stored.ids[real], top.indices)
    torch.testing.assert_close(stored.logprobs[real], top.values, rtol=1e-5, atol=1e-6)
    # The even-tail reconstruction (for inspection only): the top k kept, the rest of the mass spread evenly.
    p_stored = torch.softmax(stored[real].dense_logits(temperature) / temperature, -1)
    rest = 1 - top.values.exp().sum(-1, keepdim=True)
    others = torch.ones_like(p_stored, dtype=torch.bool).scatter(1, top.indices, False)
    vocab = live.shape[-1]
    torch.testing.assert_close(p_stored[others].view(-1, vocab - k), (rest / (vocab - k)).expand(-1, vocab - k))
    assert cache.size_bytes() < build(teacher, rows, tmp_path / "full", collator=pad_batch).size_bytes() / 5


# ---- training from the cache equals training with the teacher -------------------------------------------------------


def trainers(tmp_path, cache_settings=None, **overrides):
    teacher = tiny_bert(num_layers=4, hidden=32, seed=0)
    data = random_classification_dataset(40, seed=5, min_len=2, max_len=25)
    settings = {"hidden_weight": 1.0, "logit_mse_weight": 0.3, "layer_map": "uniform", **overrides}
    cache = build(
        teacher, data, tmp_path / "cache", hidden_layers="all", hidden_dtype="float32", **(cache_settings or {})
    )
    live = DistillationTrainer(
        model=tiny_bert(num_layers=2, hidden=16, seed=1),
        teacher_model=teacher,
        args=config(tmp_path, **settings),
        train_dataset=data,
        data_collator=pad_collate,
    )
    cached = DistillationTrainer(
        model=tiny_bert(num_layers=2, hidden=16, seed=1),
        args=config(tmp_path, teacher_cache=cache.path, **settings),
        train_dataset=data,
        data_collator=pad_collate,
    )
    return live, cached


def test_cache_gives_the_live_loss_on_the_same_batch(tmp_path):
    live, cached = trainers(tmp_path)
    assert cached.teacher is None and cached.teacher_name == live.teacher_name
    batch = next(iter(cached.get_train_dataloader()))
    assert CACHE_INDEX_COLUMN in batch
    losses, terms = [], []
    for trainer in (live, cached):
        trainer.model.train()
        losses.append(trainer.compute_loss(trainer.model, dict(batch)).item())
        terms.append({name: value.item() for name, value in trainer._train_terms.items()})
    assert terms[1].keys() == {"kd", "label", "logit_mse", "hidden"}
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for term in terms[0]:
        assert terms[1][term] == pytest.approx(terms[0][term], rel=1e-6), term


def test_training_from_the_cache_ends_with_the_student_of_the_live_teacher(tmp_path):
    live, cached = trainers(tmp_path)  # random sampler: the batches are shuffled
    live.train()
    cached.train()
    a, b = live.model.state_dict(), cached.model.state_dict()
    start = tiny_bert(num_layers=2, hidden=16, seed=1).state_dict()
    assert any(not torch.equal(a[f"student.{k}"], v) for k, v in start.items())  # it trained
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert max_diff < 1e-5, max_diff
    assert [e["loss_kd"] for e in live.state.log_history if "loss_kd" in e] == pytest.approx(
        [e["loss_kd"] for e in cached.state.log_history if "loss_kd" in e], rel=1e-5
    )


def test_cached_run_without_a_teacher_evaluates_the_task_only(tmp_path):
    _, cached = trainers(tmp_path)
    cached.eval_dataset = random_classification_dataset(8, seed=9)
    metrics = cached.evaluate()
    assert "eval_loss_label" in metrics and "eval_loss_kd" not in metrics
    assert metrics["eval_loss"] == pytest.approx(0.5 * metrics["eval_loss_label"], rel=1e-5)


# ---- the wrong cache is refused -------------------------------------------------------------------------------------


@pytest.fixture
def tiny_cache(tmp_path):
    teacher = tiny_bert(num_layers=4, hidden=32, seed=0)
    data = random_classification_dataset(24, seed=5)
    return teacher, data, build(teacher, data, tmp_path / "cache", tokenizer=tiny_tokenizer(), hidden_layers="2")


def make_cached(tmp_path, cache, data, teacher=None, collator=pad_collate, tokenizer=None, **settings):
    return DistillationTrainer(
        model=tiny_bert(num_layers=2, hidden=16, seed=1),
        teacher_model=teacher,
        teacher_cache=cache,
        args=config(tmp_path, **settings),
        train_dataset=data,
        data_collator=collator,
        processing_class=tokenizer,
    )


def test_a_cache_of_another_teacher_tokenizer_or_dataset_is_refused(tmp_path, tiny_cache):
    teacher, data, cache = tiny_cache
    make_cached(tmp_path, cache, data, teacher=teacher, tokenizer=tiny_tokenizer())  # the right ones: accepted
    with pytest.raises(CacheMismatchError, match="other teacher weights"):
        make_cached(tmp_path, cache, data, teacher=tiny_bert(num_layers=4, hidden=32, seed=3))
    other_tokenizer = tiny_tokenizer()
    other_tokenizer.padding_side = "left"
    with pytest.raises(CacheMismatchError, match="another tokenizer"):
        make_cached(tmp_path, cache, data, tokenizer=other_tokenizer)
    with pytest.raises(CacheMismatchError, match="other data"):
        make_cached(tmp_path, cache, random_classification_dataset(24, seed=6))
    with pytest.raises(CacheMismatchError, match="24 rows"):
        make_cached(tmp_path, cache, data.select(range(20)))


def test_settings_the_cache_cannot_serve_are_refused(tmp_path, tiny_cache):
    _, data, cache = tiny_cache
    with pytest.raises(ValueError, match=r"need teacher hidden states \[4\].*hidden_layers=.4."):
        make_cached(tmp_path, cache, data, hidden_weight=1.0, layer_map="4:2")
    make_cached(tmp_path, cache, data, hidden_weight=1.0, layer_map="2:1")
    with pytest.raises(ValueError, match="attention_weight > 0 needs the teacher's attention maps"):
        make_cached(tmp_path, cache, data, attention_weight=1.0, layer_map="2:1")
    with pytest.raises(ValueError, match="relation_weight > 0 needs the teacher's query/key/value projections"):
        make_cached(tmp_path, cache, data, relation_weight=1.0)
    with pytest.raises(ValueError, match=r"similarity_weight > 0 \(layer_map 4:2\) need teacher hidden states \[4\]"):
        make_cached(tmp_path, cache, data, similarity_weight=1.0, layer_map="4:2")
    top_k = build(tiny_bert(num_layers=4, seed=0), data, tmp_path / "top", top_k=2, temperature=2.0)
    with pytest.raises(ValueError, match="temperature 2.0, but this run's temperature is 3.0"):
        make_cached(tmp_path, top_k, data, temperature=3.0)
    with pytest.raises(ValueError, match="logit_mse_weight > 0 compares raw logits, which a top-k cache"):
        make_cached(tmp_path, top_k, data, logit_mse_weight=1.0)
    # No term reads the top-k probabilities: the temperature they were stored at does not matter.
    make_cached(tmp_path, top_k, data, temperature=3.0, kd_weight=0.0)
    with pytest.raises(FileNotFoundError, match="not a teacher cache"):
        TeacherCache(str(tmp_path))


def test_masked_lm_with_random_masking_cannot_use_a_cache(tmp_path):
    from transformers import DataCollatorForLanguageModeling

    teacher = masked_lm(num_layers=2, seed=0)
    rows = Dataset.from_list(random_task_rows("masked-lm", n=8, seed=1))
    cache = build(teacher, rows, tmp_path / "cache", collator=pad_batch)
    collator = DataCollatorForLanguageModeling(tiny_tokenizer(), mlm=True)
    with pytest.raises(ValueError, match="masks tokens at random"):
        DistillationTrainer(
            model=masked_lm(num_layers=1, seed=1),
            teacher_cache=cache,
            args=config(tmp_path),
            train_dataset=rows,
            data_collator=collator,
        )


# ---- building streams and resumes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", ["opening the shard's stream", "a SIGKILL of an earlier build"])
def test_an_interruption_at_any_moment_leaves_no_unfinished_shard(tmp_path, monkeypatch, moment):
    teacher, data, folder = tiny_bert(num_layers=2, seed=0), random_classification_dataset(40, seed=4), tmp_path / "c"
    if moment == "a SIGKILL of an earlier build":  # killed while writing its last shard (rows 32-39)
        build(teacher, data, folder)
        shards = folder / "shards"
        (shards / "shard-0000000032-0000000040.arrow").rename(shards / "shard-in-progress.arrow.tmp")
        info = json.loads((folder / "cache_info.json").read_text())
        (folder / "cache_info.json").write_text(json.dumps({**info, "complete": False, "rows_done": 32}))
    opened = {"n": 0}
    original = pa.ipc.new_stream

    def new_stream(sink, schema):  # the third shard's file is open, its stream not yet made
        opened["n"] += 1
        if opened["n"] == 3 or moment != "opening the shard's stream":
            raise KeyboardInterrupt
        return original(sink, schema)

    monkeypatch.setattr(pa.ipc, "new_stream", new_stream)
    with pytest.raises(KeyboardInterrupt):
        build(teacher, data, folder)
    assert not list((folder / "shards").glob("*.tmp"))


def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(tmp_path):
    teacher = tiny_bert(num_layers=4, seed=0)
    data = random_classification_dataset(50, seed=4)
    whole = build(teacher, data, tmp_path / "whole", hidden_layers="1")

    calls = {"n": 0}
    original = teacher.forward

    @functools.wraps(original)
    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # batches of 8, shards of 16 rows: two shards are finished, the third is not
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    teacher.forward = failing_forward
    with pytest.raises(KeyboardInterrupt):
        build(teacher, data, tmp_path / "resumed", hidden_layers="1")
    info = json.loads((tmp_path / "resumed" / "cache_info.json").read_text())
    assert not info["complete"] and info["rows_done"] == 32
    assert len(list((tmp_path / "resumed" / "shards").glob("*.arrow"))) == 2
    with pytest.raises(CacheMismatchError, match="unfinished"):
        TeacherCache(str(tmp_path / "resumed"))
    with pytest.raises(CacheMismatchError, match="another teacher"):  # a different build is refused, not mixed in
        build(tiny_bert(num_layers=4, seed=9), data, tmp_path / "resumed", hidden_layers="1")

    calls["n"] = -100
    resumed = build(teacher, data, tmp_path / "resumed", hidden_layers="1")
    assert calls["n"] == -100 + 3  # only the 18 missing rows were run: batches of 8, 8, 2
    assert resumed.rows.to_dict() == whole.rows.to_dict()
    with pytest.raises(CacheMismatchError, match="already holds this finished"):
        build(teacher, data, tmp_path / "resumed", hidden_layers="1")


def test_the_settings_are_one_cache_arguments_checked_when_made(tmp_path):
    data = Dataset.from_list(random_task_rows("sequence-classification", n=4, seed=0))
    with pytest.raises(TypeError, match=r"^build_teacher_cache takes its settings as a CacheArguments, got str: "):
        build_teacher_cache(tiny_bert(num_layers=2), data, str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"^cache_batch_size must be a whole number >= 1 \(--cache_batch_size\)"):
        CacheArguments(str(tmp_path / "cache"), cache_batch_size=0)
    assert not (tmp_path / "cache").exists()


def test_building_memory_does_not_grow_with_the_dataset(tmp_path):
    """The build holds one batch: the Python objects it keeps alive do not scale with the rows written."""
    import tracemalloc

    teacher = tiny_bert(num_layers=2, seed=0)
    peaks = []
    for n in (64, 512):
        data = random_classification_dataset(n, seed=1, min_len=20, max_len=20)
        tracemalloc.start()
        build(teacher, data, tmp_path / f"c{n}", hidden_layers="all", hidden_dtype="float32", shard_size=10_000)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 8x the rows (about 1 MB more of outputs): the peak grows by far less than the data written.
    written = (512 - 64) * 22 * 32 * 3 * 4
    assert peaks[1] - peaks[0] < written / 4, (peaks, written)


def test_top_k_loss_is_the_kl_between_the_k_plus_one_buckets(tmp_path):
    """With a top-k cache, the KD term is the KL between the teacher's and the student's top-k probabilities plus
    one bucket for the rest of the mass (a naive reference of that definition)."""
    teacher = masked_lm(num_layers=2, seed=0)
    rows = Dataset.from_list(random_task_rows("masked-lm", n=8, seed=1))
    cache = build(teacher, rows, tmp_path / "cache", collator=pad_batch, top_k=3, temperature=2.0)
    batch = pad_batch([rows[i] for i in range(8)])
    stored = cache.outputs(torch.arange(8), batch["attention_mask"], batch["input_ids"].shape, "cpu").logits
    student = torch.randn(stored.shape)
    mask = batch["labels"] != -100
    value = soft_target_loss(student, stored, 2.0, mask)
    ids, p_top = stored.ids[mask], stored.logprobs[mask].double().exp()
    p = torch.cat([p_top, 1 - p_top.sum(-1, keepdim=True)], -1)
    q_all = torch.softmax(student[mask].double() / 2.0, -1)
    q_top = q_all.gather(1, ids)
    q = torch.cat([q_top, 1 - q_top.sum(-1, keepdim=True)], -1)
    reference = (p * (p.log() - q.log())).sum(-1).mean() * 4.0
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    assert math.isfinite(value.item())


def test_collator_padding_for_token_tasks_with_a_cache(tmp_path):
    """Token classification through the trainer: cache and live teacher give the same KD term."""
    teacher = token_classifier(num_layers=3, seed=0)
    rows = Dataset.from_list(random_task_rows("token-classification", n=12, seed=2))
    cache = build(teacher, rows, tmp_path / "cache", collator=pad_batch)
    results = []
    for kwargs in ({"teacher_model": teacher}, {"teacher_cache": cache}):
        trainer = DistillationTrainer(
            model=token_classifier(num_layers=1, seed=1),
            args=config(tmp_path, max_steps=2),
            train_dataset=rows,
            data_collator=functools.partial(pad_batch, pad_to=20),
            **kwargs,
        )
        trainer.train()
        results.append([e["loss_kd"] for e in trainer.state.log_history if "loss_kd" in e])
    assert results[1] == pytest.approx(results[0], rel=1e-5)


def test_a_similarity_only_recipe_caches_the_hidden_states_it_needs_and_trains_from_them(tmp_path, teacher_folder):
    """`hf-distill cache` then `train --teacher_cache` with default settings: the cache's default hidden layers come
    from the recipe's active terms (here the similarity loss alone), not from hidden_weight."""
    from hf_distill.cli import main

    data = tmp_path / "data"
    data.mkdir()
    recipe = tmp_path / "recipe.yaml"
    settings = {
        "teacher_model_name_or_path": str(teacher_folder),
        "train_file": str(write_sentiment_rows(data / "train.csv", 24, seed=1)),
        "validation_file": str(write_sentiment_rows(data / "validation.csv", 8, seed=2)),
        "output_dir": str(tmp_path / "student"),
        "student_num_layers": 2,
        "layer_map": "uniform",
        "similarity_weight": 1.0,
        "max_steps": 2,
        "per_device_train_batch_size": 8,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "measure_latency": False,
    }
    recipe.write_text(yaml.safe_dump(settings))
    main(["cache", str(recipe), "--cache_dir", str(tmp_path / "cache")])
    cache = TeacherCache(str(tmp_path / "cache"))
    expected = [2, 4]  # the teacher side of the uniform map of 4 teacher layers onto 2 student layers
    assert cache.hidden_layers == expected
    main(["train", str(recipe), "--teacher_cache", str(tmp_path / "cache")])
    metrics = json.loads((tmp_path / "student" / "distillation_metrics.json").read_text())
    assert metrics["distillation"]["teacher_cache"]["hidden_layers"] == expected
