"""A stand-in inference server for tests: the API subset of vLLM, llama.cpp's server and llama-cpp-python's server
that `hf_distill.teacher_server` reads, answered by a tiny causal LM in this process.

It runs a standard-library `ThreadingHTTPServer` on 127.0.0.1 (a free port) in a daemon thread, started and stopped by
the test (`with StandInServer(model, tokenizer) as server:`). Routes:

- `GET /v1/models`: the one model's name;
- `POST /tokenize`: vLLM's body (`prompt`) or llama.cpp's (`content`); `POST /extras/tokenize`: llama-cpp-python's
  (`input`), with the BOS token first when `bos` is set (the model "adds BOS");
- `POST /v1/completions`: with `prompt_logprobs` as vLLM answers (token-id prompts, several a request; each entry
  `{id: {logprob, rank, decoded_token}}`, the prompt's token added when it ranks below k); with `echo` and `logprobs`
  as llama-cpp-python answers (text prompt; token texts with UTF-8 errors ignored; entry 0 null; without `bos` each
  token paired with the distribution after it, as its code does); with `logprobs` alone, the generated token's;
- `POST /completion`: llama.cpp's `n_probs` answer for the next token after the prompt's ids.

The scores are the model's log-softmax at temperature 1, the generated token its argmax. `api_key` set: requests
without `Authorization: Bearer <key>` get 401. Faults: `fail(kind, times)` makes the next `times` scoring requests
answer 500 (`"500"`), close the connection unanswered (`"drop"`) or take longer than any test timeout (`"stall"`).
`requests` logs `(path, body)` of every request, `headers` their headers.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class StandInServer:
    def __init__(self, model, tokenizer, name="stand-in/tiny-llama", api_key=None, bos=False):
        self.model, self.tokenizer, self.name, self.api_key, self.bos = model.eval(), tokenizer, name, api_key, bos
        self.requests, self.headers, self.faults = [], [], []
        self._lock = threading.Lock()
        self._server = None

    # ---- lifecycle --------------------------------------------------------------------------------------------------

    def __enter__(self) -> StandInServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                owner._handle(self, None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                owner._handle(self, json.loads(self.rfile.read(length) or b"{}"))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, kind: str, times: int = 1) -> None:
        self.faults.extend([kind] * times)

    # ---- routes -----------------------------------------------------------------------------------------------------

    def _handle(self, handler, body) -> None:
        path = handler.path
        with self._lock:
            self.requests.append((path, body))
            self.headers.append(dict(handler.headers))
        if self.api_key and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(handler, 401, {"error": {"message": "invalid API key", "code": 401}})
        scoring = path in ("/v1/completions", "/completion")
        if scoring and self.faults:
            with self._lock:
                kind = self.faults.pop(0) if self.faults else None
            if kind == "500":
                return self._send(handler, 500, {"error": "the engine is restarting"})
            if kind == "drop":
                handler.close_connection = True
                handler.wfile.flush()
                handler.connection.shutdown(2)
                return None
            if kind == "stall":
                time.sleep(3.0)
                return self._send(handler, 503, {"error": "too late"})
        if path == "/v1/models":
            return self._send(handler, 200, {"object": "list", "data": [{"id": self.name, "object": "model"}]})
        if path == "/tokenize":
            text = body.get("prompt", body.get("content"))
            return self._send(handler, 200, {"tokens": self._ids(text)})
        if path == "/extras/tokenize":
            bos = [self.tokenizer.bos_token_id] if self.bos else []
            return self._send(handler, 200, {"tokens": bos + self._ids(body["input"])})
        if path == "/v1/completions" and "prompt_logprobs" in body:
            return self._send(handler, 200, self._vllm(body))
        if path == "/v1/completions":
            return self._send(handler, 200, self._openai(body))
        if path == "/completion":
            return self._send(handler, 200, self._llama_cpp(body))
        return self._send(handler, 404, {"error": f"no route {path}"})

    @staticmethod
    def _send(handler, status: int, answer: dict) -> None:
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a stalled answer)
            pass

    # ---- the model's answers ------------------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _log_probs(self, ids: list[int]) -> torch.Tensor:
        """`(len(ids), vocab)`: row j is the distribution of the token after ids[: j + 1]."""
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.float(), -1)

    def _text(self, token: int) -> str:
        return self.tokenizer.decode([token]).replace("\ufffd", "")

    def _vllm(self, body: dict) -> dict:
        prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
        k, choices = body["prompt_logprobs"], []
        for index, ids in enumerate(prompts):
            rows = self._log_probs(ids)
            entries = [None]
            for j in range(1, len(ids)):
                row = rows[j - 1]
                order = torch.argsort(row, descending=True, stable=True)
                rank = {int(t): r + 1 for r, t in enumerate(order.tolist())}
                chosen = order[:k].tolist() + ([ids[j]] if rank[ids[j]] > k else [])
                entries.append(
                    {
                        str(t): {"logprob": float(row[t]), "rank": rank[t], "decoded_token": self._text(t)}
                        for t in chosen
                    }
                )
            generated = int(rows[-1].argmax())
            choices.append(
                {"index": index, "text": self._text(generated), "prompt_logprobs": entries, "finish_reason": "length"}
            )
        return {"id": "cmpl-stand-in", "object": "text_completion", "model": self.name, "choices": choices}

    def _top(self, row: torch.Tensor, k: int) -> dict:
        values, ids = row.topk(k)
        top = {}
        for value, token in zip(values.tolist(), ids.tolist()):
            top.setdefault(self._text(token), value)  # texts that several ids share: the likeliest's
        return top

    def _openai(self, body: dict) -> dict:
        """llama-cpp-python's `_create_completion` with `logprobs` (and `echo`), as its code builds the answer."""
        ids = self._ids(body["prompt"])
        prompt = ([self.tokenizer.bos_token_id] if self.bos else []) + ids
        rows = self._log_probs(prompt)
        generated = int(rows[-1].argmax())
        k = body["logprobs"]
        if not body.get("echo"):
            logprobs = {
                "tokens": [self._text(generated)],
                "text_offset": [len(body["prompt"])],
                "token_logprobs": [float(rows[-1][generated])],
                "top_logprobs": [self._top(rows[-1], k)],
            }
        else:
            # all_tokens: the prompt without its BOS, then the generated token; token i paired with score row i.
            every = ids + [generated]
            tops, token_logprobs = [], []
            for i, token in enumerate(every):
                row = rows[i] if i < len(rows) else rows[-1]
                top = self._top(row, k)
                top[self._text(token)] = float(row[token])
                tops.append(top)
                token_logprobs.append(float(row[token]))
            tops[0], token_logprobs[0] = None, None
            logprobs = {
                "tokens": [self._text(t) for t in every],
                "text_offset": [0] * len(every),
                "token_logprobs": token_logprobs,
                "top_logprobs": tops,
            }
        choice = {"text": body["prompt"] + self._text(generated), "index": 0, "logprobs": logprobs}
        return {"id": "cmpl-stand-in", "object": "text_completion", "model": self.name, "choices": [choice]}

    def _llama_cpp(self, body: dict) -> dict:
        row = self._log_probs(body["prompt"])[-1]
        values, ids = row.topk(body["n_probs"])
        generated = int(ids[0])
        top = [
            {"id": int(t), "token": self._text(int(t)), "bytes": [], "logprob": float(v)}
            for v, t in zip(values.tolist(), ids.tolist())
        ]
        probability = {"id": generated, "token": self._text(generated), "bytes": [], "logprob": float(values[0])}
        return {
            "content": self._text(generated),
            "tokens": [],
            "completion_probabilities": [{**probability, "top_logprobs": top}],
            "stop": True,
            "stop_type": "limit",
            "tokens_evaluated": len(body["prompt"]),
        }
