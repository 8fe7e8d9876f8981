"""The teacher behind an inference server: each engine's adapter pinned by answers written in the engine's documented
format (vLLM's prompt_logprobs, llama.cpp's n_probs, llama-cpp-python's echo), including missing positions, ties and
a top-k shorter than asked; the client against a stand-in server on loopback (retries, timeouts, a dropped
connection, the API key, the tokenizer probe); the same targets as a top-k cache of the model in-process; training and
a resumable cache build from the server."""

import json
import math
import os
import re

import pytest
import torch
from datasets import Dataset
from teacher_stand_in import StandInServer
from tiny_task_models import SGD, family_config, make_config, pad_batch, tiny_bpe_tokenizer
from transformers import LlamaForCausalLM

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache
from hf_distill.cache import TeacherCache
from hf_distill.losses import LOG_FLOOR
from hf_distill.teacher_server import (
    ServerTeacher,
    TeacherServerError,
    build_teacher_cache_from_server,
    check_server_url,
    parse_llama_cpp,
    parse_openai_echo,
    parse_vllm,
    top_k_arrays,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KEY_ENV = "HF_DISTILL_TEST_TEACHER_KEY"


# ---- adapters, from answers in each engine's format -----------------------------------------------------------------


def vllm_answer(*prompt_logprobs):
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "m",
        "choices": [
            {"index": i, "text": "x", "logprobs": None, "finish_reason": "length", "prompt_logprobs": entries}
            for i, entries in enumerate(prompt_logprobs)
        ],
    }


def logprob(value, rank, text="t"):
    return {"logprob": value, "rank": rank, "decoded_token": text}


def test_vllm_prompt_logprobs_become_each_positions_top_k():
    """Entry j is the distribution of token j: position j - 1. The prompt's own token ranked below k is read, and the
    k likeliest kept; tied log-probabilities are ordered by id; choices come in any order and are read by index."""
    first = [
        None,
        {"7": logprob(-0.1, 1), "3": logprob(-2.5, 2), "9": logprob(-6.0, 14)},  # 9: the prompt token, rank 14
        {"5": logprob(-0.7, 1), "2": logprob(-0.7, 2)},  # a tie
    ]
    second = [None, {"4": -0.2, "8": -1.9}]  # older vLLM: bare numbers
    answer = vllm_answer(first, second)
    answer["choices"].reverse()
    parsed = parse_vllm(answer, [3, 2])
    assert parsed == [[{7: -0.1, 3: -2.5, 9: -6.0}, {5: -0.7, 2: -0.7}], [{4: -0.2, 8: -1.9}]]
    ids, values = top_k_arrays(parsed[0], 2, 10)
    assert ids.tolist() == [[7, 3], [2, 5], [0, 1]]  # ties by id; the last position (after the text) is filler
    assert values[2].tolist() == pytest.approx([LOG_FLOOR, LOG_FLOOR])


def test_vllm_missing_positions_are_refused_and_a_short_top_k_is_filled():
    with pytest.raises(TeacherServerError, match=r"no log-probabilities for token 2 of prompt 0 \(2 entries for 3"):
        parse_vllm(vllm_answer([None, {"1": logprob(-0.1, 1)}]), [3])
    with pytest.raises(TeacherServerError, match="no log-probabilities for token 1 of prompt 0"):
        parse_vllm(vllm_answer([None, None, {"1": logprob(-0.1, 1)}]), [3])
    with pytest.raises(TeacherServerError, match="has no prompt_logprobs: the server does not support them"):
        parse_vllm({"choices": [{"index": 0, "text": "x"}]}, [3])
    with pytest.raises(TeacherServerError, match="answered 1 choices for 2 prompts"):
        parse_vllm(vllm_answer([None, {"1": -0.1}]), [2, 2])
    # The vocabulary (or the server's cap) gives fewer than k: the other slots are distinct ids at 1e-30.
    ids, values = top_k_arrays(parse_vllm(vllm_answer([None, {"2": logprob(-0.01, 1)}]), [2])[0], 4, 6)
    assert ids[0].tolist() == [2, 0, 1, 3] and values[0, 0].item() == pytest.approx(-0.01)
    assert values[0, 1:].tolist() == pytest.approx([LOG_FLOOR] * 3)
    with pytest.raises(TeacherServerError, match=r"token ids \[12\] outside the student's 6 classes"):
        top_k_arrays([{12: -0.1}], 2, 6)


def test_llama_cpp_n_probs_of_the_generated_token():
    answer = {
        "content": " the",
        "tokens": [],
        "completion_probabilities": [
            {
                "id": 5, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -0.3,
                "top_logprobs": [
                    {"id": 5, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -0.3},
                    {"id": 9, "token": " a", "bytes": [32, 97], "logprob": -1.6},
                ],
            }
        ],
        "stop": True,
    }  # fmt: skip
    assert parse_llama_cpp(answer) == {5: -0.3, 9: -1.6}
    old = {"completion_probabilities": [{"content": " the", "probs": [{"tok_str": " the", "prob": 0.7}]}]}
    with pytest.raises(TeacherServerError, match="without token ids .* use a llama.cpp server from 2025 on"):
        parse_llama_cpp(old)
    with pytest.raises(TeacherServerError, match="llama.cpp's answer has no 'completion_probabilities'"):
        parse_llama_cpp({"content": "x"})


def echo_answer(tokens, tops):
    return {
        "choices": [
            {
                "text": "".join(tokens),
                "index": 0,
                "logprobs": {
                    "tokens": tokens,
                    "text_offset": [0] * len(tokens),
                    "token_logprobs": [None] + [-1.0] * (len(tokens) - 1),
                    "top_logprobs": tops,
                },
            }
        ]
    }


def test_openai_echo_lines_up_with_or_without_bos_and_drops_texts_several_ids_share():
    ids_of = {"the": 1, " cat": 2, " sat": 3, " a": 4, "": None}.get
    tokens = ["the", " cat", " sat", " on"]  # the prompt's three tokens, then the generated one
    tops = [None, {" cat": -0.2, " a": -2.0}, {" sat": -0.4, "": -1.0}, {" on": -0.1}]
    # With BOS (OpenAI's convention): entry j is the distribution of token j, so position j reads entry j + 1.
    positions, unmapped = parse_openai_echo(echo_answer(tokens, tops), tokens[:3], ids_of, shift=0)
    assert positions == [{2: -0.2, 4: -2.0}, {3: -0.4}] and unmapped == 0  # "" (partial bytes) left out
    # Without BOS, llama-cpp-python pairs token j with the distribution after it: position j reads entry j.
    positions, _ = parse_openai_echo(echo_answer(tokens, tops), tokens[:3], ids_of, shift=1)
    assert positions == [None, {2: -0.2, 4: -2.0}]
    with pytest.raises(TeacherServerError, match=r"from token 1 it reads \[' ca', ' t'"):
        parse_openai_echo(echo_answer(["the", " ca", " t"], tops), tokens[:3], ids_of, shift=0)
    with pytest.raises(TeacherServerError, match="does not echo prompt log-probabilities"):
        parse_openai_echo({"choices": [{"text": "x", "logprobs": None}]}, tokens[:3], ids_of, shift=0)


def test_a_server_address_with_credentials_or_another_scheme_is_refused(tmp_path):
    assert check_server_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    for bad in ("ftp://host", "127.0.0.1:8000", "http://"):
        with pytest.raises(ValueError, match="must be an http:// or https:// address"):
            check_server_url(bad)
    with pytest.raises(ValueError, match="must not hold credentials"):
        check_server_url("https://user:secret@host/v1")
    with pytest.raises(ValueError, match="teacher_server_url is the teacher, and teacher_cache is given too"):
        make_config(tmp_path, teacher_server_url="http://127.0.0.1:1", teacher_cache=str(tmp_path))
    with pytest.raises(ValueError, match="teacher_server_top_k must be a whole number >= 1"):
        make_config(tmp_path, teacher_server_top_k=0)
    from hf_distill.data import DataArguments
    from hf_distill.run import StudentArguments, run_distillation

    (tmp_path / "corpus.txt").write_text("the cat sat\n")
    data = DataArguments(task="causal-lm", train_file=str(tmp_path / "corpus.txt"))
    with pytest.raises(ValueError, match="teacher_server_url is given to DistillationTrainer .* in Python"):
        run_distillation(StudentArguments(), data, make_config(tmp_path, teacher_server_url="http://h:1"))


# ---- the client against the stand-in server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module")
def teacher_model(tokenizer):
    config = family_config("llama", hidden=32, layers=2, vocab_size=len(tokenizer), tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def student_model(tokenizer, seed=1):
    config = family_config("llama", hidden=32, layers=1, vocab_size=len(tokenizer), tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


TEXTS = ["the cat sat on the mat", "naïve café", "it is very good today and the film was fun", "déjà vu", "a dog"]


def rows_of(tokenizer, texts=TEXTS, repeat=1):
    rows = []
    for text in texts * repeat:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return rows


def reference_top_k(model, sequences, k):
    """The model's own top-k log-probabilities of each position, in-process."""
    out = []
    for ids in sequences:
        with torch.no_grad():
            log_p = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        values, top = log_p.topk(k, dim=-1)
        out.append((top[:-1], values[:-1]))
    return out


@pytest.mark.parametrize(
    "api, bos", [("vllm", False), ("llama.cpp", False), ("openai-echo", True), ("openai-echo", False)]
)
def test_each_api_gives_the_models_own_top_k_of_every_position(teacher_model, tokenizer, api, bos):
    """`bos`: the served model adds its BOS token (the examples then start with it, as a tokenizer that adds it
    makes them)."""
    sequences = [([tokenizer.bos_token_id] if bos else []) + row["input_ids"] for row in rows_of(tokenizer)]
    with StandInServer(teacher_model, tokenizer, bos=bos) as stand_in:
        server = ServerTeacher(stand_in.url, len(tokenizer), api=api, top_k=4, tokenizer=tokenizer, batch_size=2)
        server.check_tokenizer(tokenizer)
        targets = server.top_k_targets(sequences, "a test")
    assert server.model == ("stand-in/tiny-llama" if api != "llama.cpp" else None)
    for row, (ids, values) in enumerate(reference_top_k(teacher_model, sequences, 4)):
        n = len(ids)
        if api == "openai-echo":  # texts that several ids share are left out: compare where the top 1 maps back
            mapped = torch.tensor([server._token_id(server._piece(int(t))) is not None for t in ids[:, 0]])
            assert mapped.any()
            assert torch.equal(targets.ids[row, :n, 0][mapped], ids[mapped, 0]), row
            torch.testing.assert_close(targets.logprobs[row, :n, 0][mapped], values[mapped, 0], atol=1e-5, rtol=0)
            continue
        assert torch.equal(targets.ids[row, :n], ids), row
        torch.testing.assert_close(targets.logprobs[row, :n], values, rtol=1e-5, atol=1e-5)
        assert (targets.logprobs[row, n:] == LOG_FLOOR).all()  # the last position and the padding


def test_a_teacher_server_answers_what_a_top_k_cache_of_the_model_stores(teacher_model, tokenizer, tmp_path):
    """The server's targets of a padded batch equal those the top-k cache of the same model in-process gives back."""
    rows = Dataset.from_list(rows_of(tokenizer))
    cache = build_teacher_cache(
        teacher_model, rows, CacheArguments(str(tmp_path / "cache"), top_k=4), data_collator=pad_batch,
        temperature=1.0, progress=False,
    )  # fmt: skip
    batch = pad_batch([rows[i] for i in range(len(rows))])
    from_cache = cache.outputs(torch.arange(len(rows)), batch["attention_mask"], batch["input_ids"].shape, "cpu")
    with StandInServer(teacher_model, tokenizer) as stand_in:
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=4, tokenizer=tokenizer)
        from_server = server(batch["input_ids"], batch["attention_mask"]).logits
    scored = batch["attention_mask"].bool().clone()
    scored[torch.arange(len(rows)), batch["attention_mask"].sum(1) - 1] = False  # the last token predicts nothing
    assert torch.equal(from_server.ids[scored], from_cache.logits.ids[scored])
    torch.testing.assert_close(from_server.logprobs[scored], from_cache.logits.logprobs[scored], atol=1e-5, rtol=1e-5)


def test_failures_are_retried_then_end_with_the_server_and_the_step(teacher_model, tokenizer):
    sequences = [row["input_ids"] for row in rows_of(tokenizer)[:2]]
    with StandInServer(teacher_model, tokenizer) as stand_in:
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=3, tokenizer=tokenizer, retries=3, backoff=0.01)
        expected = server.top_k_targets(sequences, "step 1")
        stand_in.fail("500", 2)
        stand_in.fail("drop", 1)
        again = server.top_k_targets(sequences, "step 2")  # 3 failures, 3 retries: answered
        assert torch.equal(again.ids, expected.ids)
        stand_in.fail("500", 4)
        with pytest.raises(TeacherServerError) as error:
            server.top_k_targets(sequences, "training step 7")
        message = str(error.value)
        assert (
            f"the teacher server {stand_in.url} did not answer /v1/completions for training step 7 after 4" in message
        )
        assert "HTTP 500" in message and "\n" not in message
        stalled = ServerTeacher(stand_in.url, len(tokenizer), top_k=3, tokenizer=tokenizer, retries=1, timeout=0.5,
                                backoff=0.01)  # fmt: skip
        stand_in.fail("stall", 2)
        with pytest.raises(TeacherServerError, match=r"after 2 tries \(timeout 0.5 s\): .*timed out"):
            stalled.top_k_targets(sequences, "step 3")
    with pytest.raises(TeacherServerError, match="did not answer /v1/models for start-up after 2 tries"):
        ServerTeacher(stand_in.url, len(tokenizer), tokenizer=tokenizer, retries=1, backoff=0.01)


def test_the_api_key_comes_from_the_environment_and_is_never_shown(teacher_model, tokenizer, monkeypatch, caplog):
    secret = "sk-test-9f8e7d6c5b4a"
    with StandInServer(teacher_model, tokenizer, api_key=secret) as stand_in:
        monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
        with pytest.raises(TeacherServerError, match=rf"HTTP 401 .*check the API key in \${KEY_ENV}") as error:
            ServerTeacher(stand_in.url, len(tokenizer), tokenizer=tokenizer, api_key_env=KEY_ENV)
        assert "sk-wrong-key" not in str(error.value)
        monkeypatch.setenv(KEY_ENV, secret)
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=2, tokenizer=tokenizer, api_key_env=KEY_ENV)
        server.top_k_targets([[5, 6, 7]], "step 0")
        assert stand_in.headers[-1]["Authorization"] == f"Bearer {secret}"
        assert secret not in repr(server) and secret not in str(vars(server))
    assert secret not in caplog.text


def test_a_server_that_tokenises_otherwise_is_refused_in_one_line(teacher_model, tokenizer):
    from tiny_task_models import tiny_tokenizer

    other = tiny_tokenizer()  # the server's: a word-level vocabulary
    with StandInServer(teacher_model, other) as stand_in:
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=2, tokenizer=tokenizer)
        with pytest.raises(TeacherServerError) as error:
            server.check_tokenizer(tokenizer)
    message = str(error.value)
    assert f"the teacher server {stand_in.url} (stand-in/tiny-llama) tokenises" in message
    assert "and the student's tokenizer as [" in message and "\n" not in message


# ---- training and the teacher cache -------------------------------------------------------------------------------


def sgd_update(tmp_path, name, tokenizer, rows, **overrides):
    student = student_model(tokenizer)
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    settings = {"kd_weight": 1.0, "label_weight": 0.5, "temperature": 1.0, "max_steps": 2, **SGD, "learning_rate": 0.5}
    trainer = DistillationTrainer(
        model=student, train_dataset=rows, eval_dataset=rows, data_collator=pad_batch, processing_class=tokenizer,
        args=make_config(tmp_path / name, per_device_train_batch_size=5, train_sampling_strategy="sequential",
                         **{**settings, **overrides}),
    )  # fmt: skip
    trainer.train()
    return {k: before[k] - v.detach() for k, v in student.named_parameters()}, trainer


def test_training_fed_by_the_server_equals_training_fed_by_a_cache_built_from_it(teacher_model, tokenizer, tmp_path):
    rows = Dataset.from_list(rows_of(tokenizer, repeat=2))
    with StandInServer(teacher_model, tokenizer) as stand_in:
        served, trainer = sgd_update(tmp_path, "served", tokenizer, rows, teacher_server_url=stand_in.url,
                                     teacher_server_top_k=4)  # fmt: skip
        assert trainer.distillation_settings()["teacher_server"] == {
            "api": "vllm", "model": "stand-in/tiny-llama", "top_k": 4,
        }  # fmt: skip
        metrics = trainer.evaluate()  # the server scores the evaluation batches too
        assert math.isfinite(metrics["eval_loss_kd"]) and 0 <= metrics["eval_teacher_agreement"] <= 1
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=4, tokenizer=tokenizer)
        cache = build_teacher_cache_from_server(
            server, rows, CacheArguments(str(tmp_path / "cache")), tokenizer=tokenizer, data_collator=pad_batch,
            progress=False,
        )  # fmt: skip
    cached, _ = sgd_update(tmp_path, "cached", tokenizer, rows, teacher_cache=cache.path)
    assert sum(d.abs().sum().item() for d in served.values()) > 1e-3
    for key in served:
        torch.testing.assert_close(cached[key], served[key], rtol=1e-4, atol=1e-6, msg=key)


def test_a_cache_build_from_the_server_resumes_after_a_dropped_connection(teacher_model, tokenizer, tmp_path):
    rows = Dataset.from_list(rows_of(tokenizer, repeat=4))  # 20 rows: shards of 4, batches of 2
    build = dict(tokenizer=tokenizer, data_collator=pad_batch, progress=False)

    def settings(folder):
        return CacheArguments(str(tmp_path / folder), cache_batch_size=2, shard_size=4)

    with StandInServer(teacher_model, tokenizer) as stand_in:
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=3, tokenizer=tokenizer, retries=1, backoff=0.01)
        whole = build_teacher_cache_from_server(server, rows, settings("whole"), **build)
        scoring = sum(path == "/v1/completions" for path, _ in stand_in.requests)
        stand_in.requests.clear()
        # The connection drops for good at the 6th batch of the build (rows 10-11): its retry fails too.
        original = stand_in._vllm
        calls = []

        def dropping(body):
            calls.append(1)
            if len(calls) >= 6:
                stand_in.fail("drop", 2)
            return original(body)

        stand_in._vllm = dropping
        with pytest.raises(TeacherServerError, match="for the teacher cache's rows 1[02]-1[13] after 2 tries"):
            build_teacher_cache_from_server(server, rows, settings("resumed"), **build)
        info = json.loads((tmp_path / "resumed" / "cache_info.json").read_text())
        assert info["complete"] is False and info["rows_done"] == 8  # two whole shards kept
        stand_in._vllm, stand_in.faults[:] = original, []
        stand_in.requests.clear()
        resumed = build_teacher_cache_from_server(server, rows, settings("resumed"), **build)
        again = sum(path == "/v1/completions" for path, _ in stand_in.requests)
    assert again < scoring  # the finished shards were not asked for again (the probe is one request)
    assert len(resumed) == len(whole) == 20
    for column in resumed.rows.column_names:
        assert resumed.rows[column] == whole.rows[column], column
    assert TeacherCache(str(tmp_path / "resumed")).teacher["name_or_path"] == "stand-in/tiny-llama"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"top_k": 8}, "top_k=8 differs from the server teacher's top_k=4"),
        ({"hidden_layers": "1"}, "hidden_layers='1': a server teacher gives top-k log-probabilities only"),
        ({"logit_samples": 16}, "logit_samples=16: a server teacher gives top-k"),
    ],
)
def test_cache_settings_a_server_cannot_give_are_refused_before_any_request(
    teacher_model, tokenizer, tmp_path, settings, message
):
    rows = Dataset.from_list(rows_of(tokenizer))
    with StandInServer(teacher_model, tokenizer) as stand_in:
        server = ServerTeacher(stand_in.url, len(tokenizer), top_k=4, tokenizer=tokenizer)
        stand_in.requests.clear()
        with pytest.raises(ValueError, match=re.escape(message)):
            build_teacher_cache_from_server(
                server, rows, CacheArguments(str(tmp_path / "cache"), **settings), tokenizer=tokenizer, progress=False
            )
        assert stand_in.requests == [] and not (tmp_path / "cache").exists()


def test_a_server_that_fails_mid_run_ends_training_with_the_server_and_the_step(teacher_model, tokenizer, tmp_path):
    from transformers import TrainerCallback

    rows = Dataset.from_list(rows_of(tokenizer, repeat=2))
    with StandInServer(teacher_model, tokenizer) as stand_in:

        class FailAfterTheFirstStep(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                stand_in.fail("500", 100)  # answers 500 from now on

        with pytest.raises(TeacherServerError) as error:
            student = student_model(tokenizer)
            DistillationTrainer(
                model=student, train_dataset=rows, data_collator=pad_batch, processing_class=tokenizer,
                callbacks=[FailAfterTheFirstStep()],
                args=make_config(tmp_path, per_device_train_batch_size=5, max_steps=3, temperature=1.0,
                                 teacher_server_url=stand_in.url, teacher_server_retries=2),
            ).train()  # fmt: skip
    message = str(error.value)
    assert (
        f"the teacher server {stand_in.url} did not answer /v1/completions for training step 1 after 3 tries"
        in message
    )
    assert "HTTP 500" in message and "\n" not in message


def test_on_policy_batches_are_scored_by_the_server(teacher_model, tokenizer, tmp_path):
    rows = Dataset.from_list(rows_of(tokenizer, repeat=2))
    with StandInServer(teacher_model, tokenizer) as stand_in:
        sgd_update(tmp_path, "on-policy", tokenizer, rows, teacher_server_url=stand_in.url, teacher_server_top_k=3,
                   lmbda=1.0, max_new_tokens=4, prompt_length=2, max_steps=1)  # fmt: skip
        scored = [body["prompt"] for path, body in stand_in.requests if path == "/v1/completions"]
    prompts = [tuple(row["input_ids"][:2]) for row in rows_of(tokenizer)]
    # Each scored sequence is a dataset prompt followed by generated tokens, not a dataset example.
    sequences = [tuple(s) for batch in scored for s in batch]
    assert sequences and all(s[:2] in prompts for s in sequences)
    assert all(list(s) not in [row["input_ids"] for row in rows_of(tokenizer)] for s in sequences)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"temperature": 2.0}, "gives log-probabilities at temperature 1, and this run's temperature is 2"),
        ({"hidden_weight": 1.0}, "hidden_weight > 0 needs more of the teacher than a server gives"),
        ({"logit_mse_weight": 1.0}, "logit_mse_weight > 0 needs more of the teacher than a server gives"),
        ({"seq_kd": True}, "seq_kd=True asks the teacher to write completions"),
    ],
)
def test_what_a_server_cannot_serve_is_refused_at_start_up(teacher_model, tokenizer, tmp_path, overrides, message):
    rows = Dataset.from_list(rows_of(tokenizer))
    with StandInServer(teacher_model, tokenizer) as stand_in, pytest.raises(ValueError, match=message):
        sgd_update(tmp_path, "refused", tokenizer, rows, teacher_server_url=stand_in.url, **overrides)


def test_the_key_reaches_no_file_of_the_run(teacher_model, tokenizer, tmp_path, monkeypatch, caplog):
    """Checkpoint, trainer state, training arguments, metrics and card: the key is in none of them."""
    secret = "sk-never-written-31415"
    monkeypatch.setenv(KEY_ENV, secret)
    rows = Dataset.from_list(rows_of(tokenizer))
    with StandInServer(teacher_model, tokenizer, api_key=secret) as stand_in:
        _, trainer = sgd_update(tmp_path, "run", tokenizer, rows, teacher_server_url=stand_in.url,
                                teacher_server_api_key_env=KEY_ENV, save_strategy="steps", save_steps=1)  # fmt: skip
        trainer.save_model()
        trainer.create_model_card()
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in written) and any(p.name == "training_args.bin" for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in caplog.text
    assert os.environ[KEY_ENV] == secret
