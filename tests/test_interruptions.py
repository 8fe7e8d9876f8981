"""Long builds, killed (SIGKILL) part-way, then interrupted (Ctrl-C: SIGINT) part-way, then run to the end, give the
same files as an uninterrupted build, byte for byte, and leave nothing half-done at any point that could be taken for
a finished result: `hf-distill compress`, the `--augment` transfer set, a sampled teacher cache. The interrupted
builds run in processes of their own, signalled once they are under way; the uninterrupted one runs here, on one
thread as they do."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_task_models import llama, tiny_bert, vocab_tokenizer, write_sentiment_rows

from hf_distill import build_student
from hf_distill.output_folders import STAGING_PREFIX

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    """The builds in their processes run on one thread (OMP_NUM_THREADS=1), and so does the reference built here:
    the same arithmetic, the same bytes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def start(args: list[str], home: Path) -> tuple[subprocess.Popen, list[str]]:
    """`python args...` in the repository root, its stderr collected as it comes (progress bars included)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(home / "hf_home"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    printed: list[str] = []

    def read():
        while chunk := process.stderr.read1(4096):
            printed.append(chunk.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return process, printed


def run_to_end(args: list[str], home: Path, timeout: float = 300) -> None:
    process, printed = start(args, home)
    assert process.wait(timeout) == 0, "".join(printed)[-3000:]


def interrupt(args: list[str], home: Path, under_way, sig: signal.Signals, timeout: float = 300) -> None:
    """Starts the build, sends `sig` once `under_way(stderr so far)` holds, and waits for the process to end."""
    process, printed = start(args, home)
    deadline = time.monotonic() + timeout
    while not under_way("".join(printed)):
        assert process.poll() is None, f"the build ended before it could be interrupted:\n{''.join(printed)[-3000:]}"
        assert time.monotonic() < deadline, "the build never got under way"
        time.sleep(0.02)
    process.send_signal(sig)
    code = process.wait(timeout)
    # Ctrl-C: the command exits with 130, a script with Python's KeyboardInterrupt exit (-SIGINT)
    expected = (-signal.SIGKILL,) if sig == signal.SIGKILL else (130, -signal.SIGINT)
    assert code in expected, "".join(printed)[-3000:]


def files(folder: Path, skip=()) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def staging_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{STAGING_PREFIX}*")) if folder.is_dir() else []


# ---- hf-distill compress --------------------------------------------------------------------------------------------

# What a measurement gives differently each time: the times, and the card, table and plot that show them.
MEASURED = ("README.md", "compression_metrics.json", "accuracy_latency.png")


def compress_args(inputs: Path, output_dir: Path) -> list[str]:
    return [
        *("compress", "--student_model_name_or_path", str(inputs / "student")),
        *("--teacher_model_name_or_path", str(inputs / "teacher"), "--output_dir", str(output_dir)),
        *("--train_file", str(inputs / "train.csv"), "--test_file", str(inputs / "test.csv")),
        # rounds enough for the latency measurement to last while the signal comes
        *("--latency_rounds", "500", "--latency_batch_sizes", "1"),
    ]


def without_times(table: dict) -> dict:
    """A compress table without what a measurement gives differently each time (and how many rounds it took)."""
    table.pop("latency")
    for facts in table["models"].values():
        for key in ("latency_ms", "latency_iqr_ms", "speedup", "export_seconds"):
            facts.pop(key, None)
    return table


def test_an_interrupted_compress_leaves_nothing_and_its_rerun_gives_the_same_exports(tmp_path):
    from hf_distill.cli import run_command

    tokenizer = vocab_tokenizer()
    teacher = tiny_bert(num_layers=2)
    for name, model in (("teacher", teacher), ("student", build_student(teacher, num_layers=1))):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    write_sentiment_rows(tmp_path / "train.csv", 8)
    write_sentiment_rows(tmp_path / "test.csv", 16, seed=1)
    whole, out = tmp_path / "whole", tmp_path / "runs" / "out"
    run_command([*compress_args(tmp_path, whole)[:-4], "--latency_rounds", "2", "--latency_batch_sizes", "1"])
    command = ["-m", "hf_distill.cli", *compress_args(tmp_path, out)]

    def exported(before=()):
        """Under way: the exports are written in a new staging folder, the latency measurement has begun."""
        return lambda _: any(
            p.parent.parent.name not in before for p in out.parent.glob(f"{STAGING_PREFIX}*/onnx-int8/config.json")
        )

    interrupt(command, tmp_path, exported(), signal.SIGKILL)
    assert not out.exists()  # the output folder appears whole or not at all
    killed = staging_in(out.parent)
    assert len(killed) == 1  # a killed process cannot clean up
    interrupt(command, tmp_path, exported(killed), signal.SIGINT)
    assert not out.exists() and staging_in(out.parent) == []  # the killed run's staging folder removed, its own too
    run_to_end(command, tmp_path)
    assert staging_in(out.parent) == [] and sorted(p.name for p in out.parent.iterdir()) == ["out"]
    assert sorted(files(out)) == sorted(files(whole))
    rerun, expected = files(out, skip=MEASURED), files(whole, skip=MEASURED)
    assert [name for name in expected if rerun[name] != expected[name]] == []
    for fmt in ("", "int8", "onnx", "onnx-int8"):
        tables = [json.loads((root / fmt / "compression_metrics.json").read_text()) for root in (out, whole)]
        assert without_times(tables[0]) == without_times(tables[1]), fmt


# ---- the --augment transfer set -------------------------------------------------------------------------------------

AUGMENT = """
import random, sys, torch
from datasets import Dataset
from tiny_task_models import CORE_WORDS, tiny_tokenizer
from hf_distill.augment import AugmentSettings, build_transfer_set

def build(cache_dir, count):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(CORE_WORDS) for _ in range(12)) for _ in range(count)]
    tokenizer = tiny_tokenizer()
    table = torch.randn(len(tokenizer), 8, generator=torch.Generator().manual_seed(0))
    settings = AugmentSettings(copies=4, replace_prob=0.3, neighbours=3, drop_prob=0.1, span_prob=0.2, seed=0)
    build_transfer_set(Dataset.from_dict({"text": texts}), [], ["text"], tokenizer, table, settings, cache_dir, 200)

if __name__ == "__main__":
    build(sys.argv[1], int(sys.argv[2]))
"""
TEXTS = 3000


def test_an_interrupted_augment_build_leaves_nothing_and_its_rerun_gives_the_same_set(tmp_path):
    namespace = {}
    exec(AUGMENT, namespace)
    namespace["build"](str(tmp_path / "whole"), TEXTS)
    (whole,) = (tmp_path / "whole").glob("augment-*")
    cache = tmp_path / "cache"
    command = ["-c", AUGMENT, str(cache), str(TEXTS)]
    # Under way: the augmentation has gone through a tenth of the texts.
    under_way = lambda printed: re.search(r"Augmenting the training texts[^\r\n]*?\b([1-9]\d)%", printed)  # noqa: E731

    for sig in (signal.SIGKILL, signal.SIGINT):
        interrupt(command, tmp_path, under_way, sig)
        assert not list(cache.glob("augment-*"))  # no transfer set that would be taken for a finished one
        assert staging_in(cache) == []
    run_to_end(command, tmp_path)
    (built,) = cache.glob("augment-*")
    assert built.name == whole.name and files(built) == files(whole)
    assert sorted(p.name for p in cache.iterdir()) == [built.name]


# ---- a sampled teacher cache ----------------------------------------------------------------------------------------

CACHE = """
import sys
from datasets import Dataset
from transformers import AutoModelForCausalLM
from tiny_task_models import random_task_rows, pad_batch
from hf_distill import CacheArguments, build_teacher_cache

def build(cache_dir, teacher_dir, count):
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    rows = Dataset.from_list(random_task_rows("causal-lm", n=count, seed=5, min_len=24, max_len=48))
    settings = CacheArguments(cache_dir, logit_samples=16, cache_batch_size=8, shard_size=64)
    build_teacher_cache(teacher, rows, settings, data_collator=pad_batch, temperature=2.0, progress=False)

if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""
ROWS = 1200


def test_an_interrupted_sampled_cache_resumes_to_the_same_cache(tmp_path):
    llama(num_layers=2, hidden=64).save_pretrained(tmp_path / "teacher")
    namespace = {}
    exec(CACHE, namespace)
    namespace["build"](str(tmp_path / "whole"), str(tmp_path / "teacher"), ROWS)
    cache = tmp_path / "cache"
    command = ["-c", CACHE, str(cache), str(tmp_path / "teacher"), str(ROWS)]

    done = 0
    for sig in (signal.SIGKILL, signal.SIGINT):
        # Under way: two more shards are written, the next one is being written.
        shards = lambda _, done=done: len(list(cache.glob("shards/shard-0*.arrow"))) >= done // 64 + 2  # noqa: E731
        interrupt(command, tmp_path, shards, sig)
        info = json.loads((cache / "cache_info.json").read_text())
        # What was done is kept and said to be unfinished: the next run resumes after it.
        assert info["complete"] is False and info["rows_done"] >= done + 128
        done = info["rows_done"]
    assert not list(cache.glob("shards/*.tmp"))  # Ctrl-C drops the shard it was writing
    run_to_end(command, tmp_path)
    assert files(cache) == files(tmp_path / "whole")  # no half-written shard left, the same draws byte for byte
