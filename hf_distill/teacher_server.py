"""A teacher behind an inference server: the top-k log-probabilities of every position of the given text, from vLLM,
llama.cpp's server or an OpenAI-compatible server that echoes the prompt (llama-cpp-python's), as the same
[`~hf_distill.losses.TopKTargets`] a top-k teacher cache gives.

A 70B teacher does not fit beside the student, and running it in PyTorch at every step is a distillation run's largest
cost; a serving engine runs it faster, elsewhere. [`ServerTeacher`] sends the batch's token ids (never text to be
tokenised again, where the engine allows) and reads back, for each position, the teacher's k most likely next tokens
with their log-probabilities at temperature 1. Every sparse loss, the one pass, the fused linear loss and the teacher
cache read them unchanged.

The engines differ in what they return; one adapter each reads its engine's documented answer:

| `api` | request | per position |
|---|---|---|
| `vllm` | `/v1/completions`, `prompt` = token ids (several a request), `prompt_logprobs = k` | `{id: {logprob}}` |
| `llama.cpp` | `/completion` per prefix, `n_probs = k`, `n_predict = 1`, KV cache reused | `[{id, logprob}]` |
| `openai-echo` | `/v1/completions`, `prompt` = text, `echo`, `logprobs = k` | `{token text: logprob}` |

llama.cpp's server gives probabilities for generated tokens only, so its adapter asks for the next token after each
prefix (one request per position; slower than a batch, exact). The `openai-echo` adapter (llama-cpp-python's server,
which takes text, not ids) checks that the server's tokens of each example are the example's, and maps each token text
back to its id through the tokenizer; texts that several ids share (partial UTF-8 bytes) cannot be told apart and are
left out (their mass joins the tail; a warning says when they are more than 2% of the most likely tokens).

At start-up the server tokenises a probe text as the student's tokenizer does, or training stops with one line naming
both (`check_tokenizer`). Requests go out in parallel (at most `concurrency` at a time), each with a `timeout`;
connection errors, timeouts, 429 and 5xx answers are retried `retries` times with exponential back-off, and then end
the run with an error naming the server and the step. The API key is read from the environment variable
`api_key_env` and sent as a bearer token; it is never logged, never written and never part of an error message.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from transformers.modeling_outputs import ModelOutput

from . import cache as teacher_cache
from .log import get_logger
from .losses import LOG_FLOOR, TopKTargets

logger = get_logger(__name__)

SERVER_APIS = ("vllm", "llama.cpp", "openai-echo")
API_KEY_ENV = "HF_DISTILL_TEACHER_API_KEY"
# Tokenised by the server and by the student's tokenizer at start-up: words, digits, punctuation, spaces, accents.
PROBE_TEXT = "The teacher's 3 answers, checked twice: naïve café costs €12.50 today!"
# Answers worth another try: the server is busy or restarting.
_RETRIED_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# A distribution of one position: {token id: log-probability}.
Position = dict


class TeacherServerError(RuntimeError):
    """The teacher server cannot give what distillation needs (unreachable, an error answer, a different tokenizer,
    an answer of the wrong shape)."""


# ---- adapters: one per engine, pure functions of the engine's answer ------------------------------------------------


def parse_vllm(answer: dict, lengths: Sequence[int]) -> list[list[Position]]:
    """vLLM's `prompt_logprobs` (`/v1/completions`, one choice per prompt): per example of `lengths[i]` tokens, the
    distributions of positions `0 .. n - 2` (position j predicts token j + 1; vLLM's entry j + 1).

    Each entry maps a token id (a string in JSON) to `{"logprob", "rank", "decoded_token"}` (a bare number in older
    versions); it holds the top k and the prompt's own token when that ranks lower (kept here: a true log-probability;
    [`top_k_arrays`] keeps the k likeliest).
    """
    choices = sorted(_field(answer, "choices", "vLLM"), key=lambda choice: choice.get("index", 0))
    if len(choices) != len(lengths):
        raise TeacherServerError(f"vLLM answered {len(choices)} choices for {len(lengths)} prompts")
    examples = []
    for number, (choice, length) in enumerate(zip(choices, lengths)):
        entries = choice.get("prompt_logprobs")
        if not isinstance(entries, list):
            raise TeacherServerError(
                "vLLM's answer has no prompt_logprobs: the server does not support them (vLLM >= 0.4.1 does)"
            )
        positions = []
        for j in range(1, length):
            entry = entries[j] if j < len(entries) else None
            if not isinstance(entry, dict) or not entry:
                raise TeacherServerError(
                    f"vLLM gave no log-probabilities for token {j} of prompt {number} ({len(entries)} entries for "
                    f"{length} tokens)"
                )
            # Any tokens with their true log-probabilities make valid targets; `top_k_arrays` keeps the k likeliest.
            positions.append(
                {
                    int(token): float(value["logprob"] if isinstance(value, dict) else value)
                    for token, value in entry.items()
                }
            )
        examples.append(positions)
    return examples


def parse_llama_cpp(answer: dict) -> Position:
    """llama.cpp's server (`/completion` with `n_probs`, `n_predict = 1`): the distribution of the one generated
    token, `completion_probabilities[0].top_logprobs` of `{"id", "logprob"}`."""
    probabilities = _field(answer, "completion_probabilities", "llama.cpp")
    if not probabilities:
        raise TeacherServerError("llama.cpp's answer holds no completion_probabilities (was n_predict 0?)")
    first = probabilities[0]
    if "top_logprobs" not in first:
        raise TeacherServerError(
            "llama.cpp's answer lists probabilities without token ids (top_logprobs with id and logprob): the server "
            "predates them, or post_sampling_probs is set; use a llama.cpp server from 2025 on"
        )
    return {int(entry["id"]): float(entry["logprob"]) for entry in first["top_logprobs"]}


def parse_openai_echo(
    answer: dict, pieces: Sequence[str], token_id: Callable[[str], int | None], shift: int
) -> tuple[list[Position | None], int]:
    """An OpenAI completions answer with `echo` and `logprobs` (llama-cpp-python's server) of an example whose tokens'
    texts are `pieces`: the distributions of positions `0 .. len(pieces) - 2` (`None` where the answer has none), and
    how many of them had a most likely token whose text maps to no single id.

    `choices[0].logprobs` holds `tokens` (the echoed prompt's token texts, then the generated token's) and
    `top_logprobs`, one `{token text: logprob}` per token. A token text is its bytes decoded with UTF-8 errors
    ignored (a token holding part of a character reads as `""`). By OpenAI's convention entry j is the distribution
    of token j (`shift = 0`: position j is entry j + 1); llama-cpp-python pairs token j with the distribution after
    it when the model adds no BOS token (`shift = 1`: position j is entry j, and its entry 0 is null). `token_id` maps
    a token text to its id (`None` for a text several ids share: left out, its mass in the tail).
    """
    choices = _field(answer, "choices", "the server")
    logprobs = choices[0].get("logprobs") if choices else None
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("top_logprobs"), list):
        raise TeacherServerError(
            "the server's answer has no logprobs.top_logprobs with echo: it does not echo prompt log-probabilities "
            "(llama-cpp-python needs logits_all, the default of its server)"
        )
    tokens, tops, length = logprobs.get("tokens") or [], logprobs["top_logprobs"], len(pieces)
    if list(tokens[:length]) != list(pieces):
        first = next((i for i, (a, b) in enumerate(zip(tokens, pieces)) if a != b), min(len(tokens), length))
        raise TeacherServerError(
            f"the server tokenised the text differently: from token {first} it reads {tokens[first : first + 3]}, "
            f"the student's tokenizer {list(pieces[first : first + 3])}"
        )
    positions, unmapped = [], 0
    for j in range(length - 1):
        entry = tops[j + 1 - shift] if j + 1 - shift < len(tops) else None
        if not isinstance(entry, dict) or not entry:
            positions.append(None)
            continue
        ids = {}
        for piece, logprob in entry.items():
            token = token_id(piece)
            if token is not None:
                ids[token] = max(float(logprob), ids.get(token, -math.inf))
        unmapped += token_id(max(entry, key=lambda piece: entry[piece])) is None
        positions.append(ids)
    return positions, unmapped


def top_k_arrays(positions: Sequence[Position], k: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(ids, logprobs)`, each `(len(positions) + 1, k)`: each position's k likeliest tokens, most likely first (ties
    by id), and one last row for the position after the text (which predicts nothing). A position with fewer than k
    tokens (the server capped them, or the vocabulary is smaller) fills its slots with tokens it did not list at
    probability 1e-30, as a sampled cache does: every slot holds a distinct id, and those slots weigh nothing."""
    ids = torch.empty(len(positions) + 1, k, dtype=torch.long)
    values = torch.full((len(positions) + 1, k), LOG_FLOOR, dtype=torch.float32)
    for row, position in enumerate([*positions, {}]):
        ranked = sorted(position.items(), key=lambda item: (-item[1], item[0]))[:k]
        taken = [token for token, _ in ranked]
        if any(not 0 <= token < num_classes for token in taken):
            raise TeacherServerError(
                f"the server named token ids {sorted(t for t in taken if not 0 <= t < num_classes)} outside the "
                f"student's {num_classes} classes: it serves another vocabulary"
            )
        filler = (token for token in range(num_classes) if token not in position)
        taken += [next(filler) for _ in range(k - len(taken))]
        ids[row] = torch.tensor(taken)
        values[row, : len(ranked)] = torch.tensor([logprob for _, logprob in ranked], dtype=torch.float32)
    return ids, values.clamp_min(LOG_FLOOR)


def _field(answer: Any, name: str, engine: str):
    if not isinstance(answer, dict) or name not in answer:
        keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
        raise TeacherServerError(f"{engine}'s answer has no {name!r} (it has {keys})")
    return answer[name]


# ---- the client -----------------------------------------------------------------------------------------------------


class ServerTeacher:
    """A causal-LM teacher behind an inference server; call it on a batch as a teacher model:
    `teacher(input_ids=..., attention_mask=...)` gives `logits` as [`~hf_distill.losses.TopKTargets`].

    Args:
        url (`str`): the server's address, e.g. `http://127.0.0.1:8000` (vLLM) or `http://127.0.0.1:8080`.
        num_classes (`int`): the width of the distributions (the student's output vocabulary).
        model (`str`, *optional*): the model name the server serves; default: the one `/v1/models` lists.
        api (`str`): the engine's API, one of `SERVER_APIS`.
        top_k (`int`): tokens per position.
        tokenizer (*optional*): the student's tokenizer: needed by `openai-echo` (text and token texts) and by
            [`check_tokenizer`].
        api_key_env (`str`): the environment variable holding the API key (unset: no key is sent).
        timeout (`float`): seconds one request may take.
        retries (`int`): further tries of a request that failed for a reason worth retrying.
        concurrency (`int`): requests in flight at once.
        batch_size (`int`): examples per request where the engine takes several (vLLM).
        backoff (`float`): seconds before the first retry, doubled at each further one.
    """

    def __init__(
        self,
        url: str,
        num_classes: int,
        model: str | None = None,
        api: str = "vllm",
        top_k: int = 32,
        tokenizer=None,
        api_key_env: str = API_KEY_ENV,
        timeout: float = 60.0,
        retries: int = 4,
        concurrency: int = 4,
        batch_size: int = 8,
        backoff: float = 0.5,
    ):
        if api not in SERVER_APIS:
            raise ValueError(f"teacher_server_api must be one of {SERVER_APIS}, got {api!r}")
        self.url = check_server_url(url)
        self.api, self.top_k, self.num_classes, self.tokenizer = api, int(top_k), int(num_classes), tokenizer
        self.timeout, self.retries, self.concurrency = float(timeout), int(retries), int(concurrency)
        self.batch_size, self.backoff = int(batch_size), float(backoff)
        # The key itself is read from the environment at each request: never held here, logged, written or shown.
        self.api_key_env = api_key_env
        self._shift = None
        self.unmapped, self._warned = (
            [0, 0],
            False,
        )  # openai-echo: (positions whose top-1 text is ambiguous, positions)
        self._ids_of_piece: dict[str, int | None] | None = None
        if api == "openai-echo" and tokenizer is None:
            raise ValueError(
                "teacher_server_api='openai-echo' sends text and reads token texts: it needs the tokenizer"
            )
        self.model = model or self._served_model()

    def __repr__(self) -> str:
        return f"ServerTeacher(url={self.url!r}, model={self.model!r}, api={self.api!r}, top_k={self.top_k})"

    # ---- requests --------------------------------------------------------------------------------------------------

    def post(self, path: str, body: dict | None, where: str) -> dict:
        """The JSON answer of `POST path` (`GET` without a body), retried as the class says; `where` names the step
        in the error."""
        request_body = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url + path, data=request_body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                detail = self._safe(error.read().decode("utf-8", "replace")[:300])
                last = f"HTTP {error.code} {self._safe(error.reason or '')}: {detail}".strip()
                if error.code not in _RETRIED_STATUS:
                    raise TeacherServerError(
                        f"the teacher server {self.url} refused {path} for {where}: {last}"
                        + (" (check the API key in $" + self.api_key_env + ")" if error.code in (401, 403) else "")
                    ) from None
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as error:
                reason = getattr(error, "reason", None) or error
                last = self._safe(f"{type(error).__name__}: {reason}")
            except ValueError as error:  # not JSON
                last = self._safe(f"an answer that is not JSON ({error})")
        raise TeacherServerError(
            f"the teacher server {self.url} did not answer {path} for {where} after {self.retries + 1} tries "
            f"(timeout {self.timeout:g} s): {last}"
        )

    def _safe(self, text: str) -> str:
        """`text` (an answer or an error) with the key, should a server echo it, replaced by `***`."""
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _served_model(self) -> str | None:
        if self.api == "llama.cpp":
            return None  # the one model llama-server was started with
        names = [entry.get("id") for entry in self.post("/v1/models", None, "start-up").get("data", [])]
        if len(names) != 1:
            raise TeacherServerError(
                f"the teacher server {self.url} serves {len(names)} models ({names}): name one with "
                "teacher_server_model"
            )
        return names[0]

    # ---- start-up checks ------------------------------------------------------------------------------------------

    def tokenize(self, text: str, where: str = "start-up") -> list[int]:
        """The server's token ids of `text`, without special tokens added."""
        if self.api == "vllm":
            answer = self.post("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}, where)
        elif self.api == "llama.cpp":
            answer = self.post("/tokenize", {"content": text, "add_special": False}, where)
        else:
            answer = self.post("/extras/tokenize", {"input": text, "model": self.model}, where)
        return [int(t) for t in _field(answer, "tokens", "the server")]

    def check_tokenizer(self, tokenizer, name: str = "the student's tokenizer", text: str = PROBE_TEXT) -> None:
        """Refuses, in one line naming both, a server that tokenises the probe text otherwise than `tokenizer`."""
        ours = tokenizer(text, add_special_tokens=False)["input_ids"]
        theirs = self.tokenize(text)
        bos = getattr(tokenizer, "bos_token_id", None)
        if self.api == "openai-echo":  # llama-cpp-python adds the model's BOS token: it says how echo lines up
            self._shift = 0 if theirs[:1] == [bos] and bos is not None else 1
            theirs = theirs[1:] if self._shift == 0 else theirs
        if theirs != ours:
            diverge = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            raise TeacherServerError(
                f"the teacher server {self.url} ({self.model or self.api}) tokenises {text!r} as {theirs} and "
                f"{name} as {ours} (from token {diverge}): they must share a vocabulary; serve the teacher with the "
                "student's tokenizer"
            )

    def fingerprint(self) -> str:
        """sha256 of what identifies the served teacher: its model name, the API, k, and its top-1 tokens on the probe
        text (a different model behind the same name changes them)."""
        if self.tokenizer is None:
            raise ValueError("a server teacher's fingerprint is its answer on a probe text: it needs the tokenizer")
        ids = self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        targets = self.top_k_targets([ids], "start-up")
        top1 = targets.ids[0, :, 0].tolist()
        facts = {"model": self.model, "api": self.api, "top_k": self.top_k, "top1": top1}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()

    # ---- scoring ---------------------------------------------------------------------------------------------------

    def top_k_targets(self, sequences: Sequence[Sequence[int]], where: str) -> TopKTargets:
        """The top-k targets of each sequence's positions, `(len(sequences), longest, k)`; rows past a sequence's end
        (and its last position, which predicts nothing) hold tokens at probability 1e-30."""
        sequences = [list(map(int, s)) for s in sequences]
        per_example = self._score(sequences, where)
        longest = max((len(s) for s in sequences), default=0)
        ids = torch.zeros(len(sequences), longest, self.top_k, dtype=torch.long)
        values = torch.full((len(sequences), longest, self.top_k), LOG_FLOOR, dtype=torch.float32)
        for row, (sequence, positions) in enumerate(zip(sequences, per_example)):
            if not sequence:
                continue
            example_ids, example_values = top_k_arrays(positions, self.top_k, self.num_classes)
            ids[row, : len(sequence)], values[row, : len(sequence)] = example_ids, example_values
            ids[row, len(sequence) :] = example_ids[-1]
        return TopKTargets(ids, values, self.num_classes)

    def _score(self, sequences: list[list[int]], where: str) -> list[list[Position]]:
        scored = [s for s in sequences if len(s) > 1]
        if self.api == "vllm":
            groups = [scored[i : i + self.batch_size] for i in range(0, len(scored), self.batch_size)]
            work: list[Callable[[], list[list[Position]]]] = [lambda g=g: self._vllm(g, where) for g in groups]
        elif self.api == "llama.cpp":
            work = [lambda s=s: [self._llama_cpp(s, where)] for s in scored]
        else:
            work = [lambda s=s: [self._openai_echo(s, where)] for s in scored]
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(work) or 1))) as pool:
            results = [example for done in pool.map(lambda job: job(), work) for example in done]
        answers = iter(results)
        return [next(answers) if len(s) > 1 else [] for s in sequences]

    def _vllm(self, sequences: list[list[int]], where: str) -> list[list[Position]]:
        body = {
            "model": self.model, "prompt": sequences, "max_tokens": 1, "temperature": 0.0,
            "prompt_logprobs": self.top_k,
        }  # fmt: skip
        return parse_vllm(self.post("/v1/completions", body, where), [len(s) for s in sequences])

    def _llama_cpp(self, sequence: list[int], where: str) -> list[Position]:
        # One prefix after the other on one connection's turn: the server reuses the prefix's KV cache.
        body = {"n_predict": 1, "n_probs": self.top_k, "temperature": -1, "cache_prompt": True}
        return [
            parse_llama_cpp(self.post("/completion", {**body, "prompt": sequence[: j + 1]}, where))
            for j in range(len(sequence) - 1)
        ]

    def _openai_echo(self, sequence: list[int], where: str) -> list[Position]:
        if self._shift is None:
            self.check_tokenizer(self.tokenizer)
        # A server that adds the model's BOS token itself is sent the text after the example's own BOS.
        bos = self.tokenizer.bos_token_id
        own_bos = self._shift == 0 and bos is not None and sequence[0] == bos
        text_ids = sequence[1:] if own_bos else sequence
        body = {
            "model": self.model, "prompt": self.tokenizer.decode(text_ids, clean_up_tokenization_spaces=False),
            "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": self.top_k,
        }  # fmt: skip
        positions, unmapped = [], 0
        if len(text_ids) > 1:
            answer = self.post("/v1/completions", body, where)
            pieces = [self._piece(token) for token in text_ids]
            positions, unmapped = parse_openai_echo(answer, pieces, self._token_id, self._shift)
        self._count_unmapped(unmapped, len(positions))
        if own_bos or (positions and positions[0] is None):
            # The first position's distribution (null in the echo) is that of the one token generated after the
            # example's first token alone: after the BOS the server adds, or after the first token.
            first = {**body, "echo": False, "prompt": "" if own_bos else self.tokenizer.decode(sequence[:1])}
            distribution = self._generated_distribution(self.post("/v1/completions", first, where))
            positions = [distribution, *positions] if own_bos else [distribution, *positions[1:]]
        missing = [j for j, position in enumerate(positions) if position is None]
        if missing:
            raise TeacherServerError(
                f"the teacher server {self.url} gave no log-probabilities for positions {missing} for {where}"
            )
        return positions

    def _count_unmapped(self, unmapped: int, positions: int) -> None:
        """Counts the positions whose most likely token's text maps to no single id (its mass joins the tail), and
        warns once when they pass 2% of 100 or more: the soft targets then say less than the teacher knows."""
        self.unmapped[0] += unmapped
        self.unmapped[1] += positions
        share = self.unmapped[0] / max(self.unmapped[1], 1)
        if self.unmapped[1] >= 100 and share > 0.02 and not self._warned:
            self._warned = True
            logger.warning(
                f"The teacher server {self.url} names the most likely token of {share:.1%} of the positions so far by "
                "a text that several token ids share (parts of a character): those tokens are left out of the soft "
                "targets. api 'vllm' or 'llama.cpp' read token ids"
            )

    def _generated_distribution(self, answer: dict) -> Position:
        tops = _field(answer, "choices", "the server")[0]["logprobs"]["top_logprobs"]
        ids = {}
        for piece, logprob in tops[0].items():
            token = self._token_id(piece)
            if token is not None:
                ids[token] = float(logprob)
        return ids

    def _piece(self, token: int) -> str:
        """A token's text as an echoing server writes it: its bytes decoded, the parts of a character dropped."""
        return self.tokenizer.decode([token], clean_up_tokenization_spaces=False).replace("\ufffd", "")

    def _token_id(self, piece: str) -> int | None:
        if self._ids_of_piece is None:
            ids_of: dict[str, int | None] = {}
            for token in range(len(self.tokenizer)):
                text = self._piece(token)
                ids_of[text] = None if text in ids_of else token
            self._ids_of_piece = ids_of
        return self._ids_of_piece.get(piece)

    # ---- as a teacher model ----------------------------------------------------------------------------------------

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, where: str = "", **_):
        """`ModelOutput(logits=TopKTargets)` of a batch (padded on either side), on the batch's device: each example's
        real tokens (the attention mask) are scored, and padding positions hold tokens at probability 1e-30."""
        mask = attention_mask.bool().cpu() if attention_mask is not None else torch.ones(input_ids.shape, dtype=bool)
        rows = input_ids.cpu()
        targets = self.top_k_targets([row[keep].tolist() for row, keep in zip(rows, mask)], where or "a batch")
        ids = torch.zeros(*input_ids.shape, self.top_k, dtype=torch.long)
        values = torch.full((*input_ids.shape, self.top_k), LOG_FLOOR, dtype=torch.float32)
        for row, keep in enumerate(mask):
            count = int(keep.sum())
            ids[row, keep], values[row, keep] = targets.ids[row, :count], targets.logprobs[row, :count]
        return ModelOutput(logits=TopKTargets(ids, values, self.num_classes).to(input_ids.device))


def check_server_url(url: str) -> str:
    """`url` without a trailing slash, refused in one line unless it is `http(s)://host[:port][/path]` without
    credentials (a key goes in the environment, never in a URL that logs and cards would show)."""
    parsed = urllib.parse.urlsplit(str(url))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"teacher_server_url must be an http:// or https:// address such as http://127.0.0.1:8000, got {url!r}"
        )
    if parsed.username or parsed.password or parsed.query:
        raise ValueError(
            "teacher_server_url must not hold credentials or a query: put the API key in the environment variable "
            "named by teacher_server_api_key_env"
        )
    return str(url).rstrip("/")


# ---- start-up, and the teacher cache -------------------------------------------------------------------------------


def server_facts(server: ServerTeacher) -> dict:
    """What a trainer or a cache records of a server teacher, in the form of `teacher.model_facts` (no layers: only
    its distributions reach the student)."""
    return {
        "class": type(server).__name__,
        "task": "causal-lm",
        "name_or_path": server.model or f"llama.cpp server ({server.api})",
        "vocab_size": server.num_classes,
        "output_vocab_size": server.num_classes,
        "num_labels": 2,
        "id2label": {},
        "hidden_size": None,
        "num_hidden_layers": 0,
        "num_attention_heads": None,
    }


def teacher_from_server(args, student, task, terms, teachers, teacher_cache, tokenizer) -> ServerTeacher | None:
    """The [`ServerTeacher`] of `args.teacher_server_url` (`None` without one), after the start-up checks: a causal
    LM, no other teacher, terms that need the teacher's distributions only, temperature 1, no sequence-level
    completions, and the server's tokenizer the student's ([`ServerTeacher.check_tokenizer`])."""
    url = getattr(args, "teacher_server_url", None)
    if not url:
        return None
    if teachers or teacher_cache is not None:
        given = "teacher_model" if teachers else "teacher_cache"
        raise ValueError(f"teacher_server_url is the teacher, and {given} is given too: keep one of them")
    if task.name != "causal-lm":
        raise ValueError(f"teacher_server_url serves causal-LM teachers; this student is {task.name}")
    for term in terms:
        if term.needs - {"labels", "logits"} or term.cache_logits == "all":
            raise ValueError(
                f"{term.weight_field} > 0 needs more of the teacher than a server gives (its top-k log-probabilities "
                f"per position); set {term.weight_field}=0 or use a live teacher model"
            )
    if args.temperature != 1:
        raise ValueError(
            f"a teacher server gives log-probabilities at temperature 1, and this run's temperature is "
            f"{args.temperature:g}: set temperature=1 with teacher_server_url"
        )
    if getattr(args, "seq_kd", False):
        raise ValueError(
            "seq_kd=True asks the teacher to write completions, which hf_distill does not ask a server for yet: set "
            "seq_kd=False (on-policy lmbda works: the server scores the student's completions)"
        )
    if tokenizer is None:
        raise ValueError(
            "teacher_server_url needs the tokenizer (processing_class=...): the server's tokenizer is checked "
            "against it at start-up"
        )
    server = ServerTeacher(
        url, student.get_output_embeddings().weight.shape[0], args.teacher_server_model, args.teacher_server_api,
        args.teacher_server_top_k, tokenizer, args.teacher_server_api_key_env, args.teacher_server_timeout,
        args.teacher_server_retries, args.teacher_server_concurrency,
    )  # fmt: skip
    server.check_tokenizer(tokenizer)
    logger.info(f"Teacher: {server!r}")
    return server


def build_teacher_cache_from_server(
    server: ServerTeacher,
    dataset,
    args: teacher_cache.CacheArguments,
    *,
    tokenizer,
    data_collator=None,
    progress: bool = True,
):
    """A top-k teacher cache (`server.top_k` per position, temperature 1) of `dataset` from a server teacher: read
    as any top-k cache, resumed after the last finished shard when run again on the same folder (a dropped
    connection ends the build with [`TeacherServerError`] after its retries; the shards written stay).

    Its fingerprint of the teacher is the server's ([`ServerTeacher.fingerprint`]): a build resumed against another
    model is refused.

    Args:
        server ([`ServerTeacher`]): the teacher; its `top_k` is the cache's.
        dataset (`datasets.Dataset`): the training data, tokenised as for training (its order is the cache's).
        args ([`~hf_distill.cache.CacheArguments`]): `cache_dir`, `cache_batch_size` (rows per request batch) and
            `shard_size`, as for [`~hf_distill.cache.build_teacher_cache`]; a server gives top-k log-probabilities
            only, so `top_k` (when given) must be the server's, and `logit_samples` and `hidden_layers` are refused.
        tokenizer: the student's tokenizer (checked against the server's at the start).
        data_collator (*optional*): pads a batch (default: `DataCollatorWithPadding(tokenizer)`).
        progress (`bool`): show a progress bar.

    Returns:
        [`~hf_distill.cache.TeacherCache`]: the finished cache.

    Raises:
        `ValueError`: a setting of `args` that a server cannot give, naming it.
    """
    import datasets
    from transformers import DataCollatorWithPadding

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"dataset must be a tokenised datasets.Dataset, got {type(dataset).__name__}")
    if not isinstance(args, teacher_cache.CacheArguments):
        raise TypeError(
            f"build_teacher_cache_from_server takes its settings as a CacheArguments, got {type(args).__name__}: "
            "build_teacher_cache_from_server(server, dataset, CacheArguments(cache_dir=...), tokenizer=...)"
        )
    if args.top_k is not None and args.top_k != server.top_k:
        raise ValueError(
            f"top_k={args.top_k} differs from the server teacher's top_k={server.top_k}: the cache stores what the "
            "server gives; leave top_k unset or set the ServerTeacher's"
        )
    for name in ("logit_samples", "hidden_layers"):
        if getattr(args, name) is not None:
            raise ValueError(
                f"{name}={getattr(args, name)!r}: a server teacher gives top-k log-probabilities only; leave {name} "
                "unset for a cache built from a server"
            )
    server.check_tokenizer(tokenizer)
    columns = teacher_cache.teacher_input_columns({"input_ids", "attention_mask"}, dataset)
    info = {
        "format_version": teacher_cache.FORMAT_VERSION,
        "task": "causal-lm",
        "num_rows": len(dataset),
        "columns": columns,
        "settings": {
            "top_k": server.top_k,
            "logit_samples": None,
            "temperature": 1.0,
            "hidden_layers": [],
            "hidden_dtype": "float16",
            "logit_fields": {"logits": {"classes": server.num_classes, "per_position": True}},
            "teacher_server": {"api": server.api, "model": server.model},
        },
        "teacher": server_facts(server),
        "fingerprints": {
            "teacher": server.fingerprint(),
            "tokenizer": teacher_cache.tokenizer_fingerprint(tokenizer),
            "data": teacher_cache.data_fingerprint(dataset, columns),
        },
    }
    cache_dir = args.cache_dir
    teacher_cache.check_cache_folder(cache_dir)
    start = teacher_cache._resume_point(cache_dir, info)
    os.makedirs(os.path.join(cache_dir, teacher_cache._SHARDS), exist_ok=True)
    teacher_cache._write_info(cache_dir, {**info, "complete": False, "rows_done": start})

    def forward(batch: dict, rows: str):
        return server(batch["input_ids"], batch.get("attention_mask"), where=f"the teacher cache's {rows}")

    collator = data_collator or DataCollatorWithPadding(tokenizer)
    teacher_cache.write_rows(
        cache_dir, info, dataset, start, forward, collator, args.cache_batch_size, args.shard_size, progress
    )
    return teacher_cache.TeacherCache(cache_dir)
