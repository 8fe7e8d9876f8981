"""Real multi-process training on this CPU machine (two ranks on gloo) against one process, same global batch."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("distributed_run.py")
pytestmark = pytest.mark.distributed


def run(command, out_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # torchrun in a session of its own, so that a run past its time is killed with the ranks it started (a plain
    # timeout kills torchrun alone, and its ranks go on using the CPU after the test).
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stdout[-2000:] + stderr[-4000:]
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(len(list(out_dir.glob("rank*.json"))))]


@pytest.mark.timeout(400)
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    torchrun = str(Path(sys.executable).parent / "torchrun")
    (one,) = run([sys.executable, str(SCRIPT), str(single), "8"], single)
    ranks = run([torchrun, "--nproc_per_node", "2", "--master_port", "29533", str(SCRIPT), str(double), "4"], double)

    assert sorted(r["rank"] for r in ranks) == [0, 1]
    for report in ranks:
        assert report["world_size"] == 2 and report["steps"] == 3
        assert report["student_wrapped_in_ddp"] and not report["teacher_wrapped_in_ddp"]
        assert not report["teacher_requires_grad"]
    assert one["world_size"] == 1 and one["steps"] == 3

    a, b = load_file(single / "final.safetensors"), load_file(double / "final.safetensors")
    assert set(a) == set(b) and any(k.startswith("projections.") for k in a)
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |param(1 process, batch 8) - param(2 processes, batch 4 each)| = {max_diff:.3e}")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # The logged loss is the global one on every rank, equal to the single-process loss.
    for report in ranks:
        assert report["losses"] == pytest.approx(one["losses"], rel=1e-4)


@pytest.mark.timeout(400)
def test_two_processes_reading_a_teacher_cache_match_one_process_with_the_live_teacher(tmp_path):
    """Each rank reads the cached rows of its own examples: the two-rank cached run ends with the student of the
    one-process live run."""
    sys.path.insert(0, str(SCRIPT.parent))
    from distributed_run import training_data
    from tiny_task_models import pad_collate, tiny_bert

    from hf_distill.cache import CacheArguments, build_teacher_cache

    cache = tmp_path / "cache"
    build_teacher_cache(
        tiny_bert(num_layers=4, hidden=32, seed=0),
        training_data(),
        CacheArguments(str(cache), hidden_layers="all", hidden_dtype="float32"),
        data_collator=pad_collate,
        progress=False,
    )
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    torchrun = str(Path(sys.executable).parent / "torchrun")
    (one,) = run([sys.executable, str(SCRIPT), str(single), "8", "1", "live_no_attention"], single)
    os.environ["HF_DISTILL_TEST_CACHE"] = str(cache)
    try:
        launch = [torchrun, "--nproc_per_node", "2", "--master_port", "29535", str(SCRIPT), str(double), "4", "1"]
        ranks = run([*launch, "cache"], double)
    finally:
        del os.environ["HF_DISTILL_TEST_CACHE"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["teacher_cache"] == str(cache) and r["steps"] == 3 for r in ranks)
    a, b = load_file(single / "final.safetensors"), load_file(double / "final.safetensors")
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |param(1 process, live teacher) - param(2 processes, teacher cache)| = {max_diff:.3e}")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.timeout(400)
def test_two_process_run_interrupted_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    full.mkdir()
    resumed.mkdir()
    launch = [torchrun, "--nproc_per_node", "2", "--master_port", "29534", str(SCRIPT)]
    run([*launch, str(full), "4", "1", "full"], full)
    interrupted = run([*launch, str(resumed), "4", "1", "interrupt"], resumed)
    assert all(r["steps"] == 2 for r in interrupted)

    checkpoint = resumed / "checkpoint-2"
    saved = load_file(checkpoint / "model.safetensors")
    final_keys = {
        k.removeprefix("student.") for k in load_file(full / "final.safetensors") if k.startswith("student.")
    }
    assert set(saved) == final_keys  # the student alone: the teacher is never written into a checkpoint
    assert (checkpoint / "distillation_projections.safetensors").is_file()

    finished = run([*launch, str(resumed), "4", "1", "resume"], resumed)
    assert all(r["steps"] == 3 for r in finished)
    a, b = load_file(full / "final.safetensors"), load_file(resumed / "final.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def _engine_missing(name: str) -> str | None:
    import importlib.util

    if torch.cuda.device_count() < 2:
        return f"needs 2 CUDA GPUs, found {torch.cuda.device_count()}"
    if name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        return "needs the deepspeed package"
    return None


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"])
def test_engines_on_gpus_match_one_process(tmp_path, config):
    reason = _engine_missing(config)
    if reason:
        pytest.skip(reason)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir()
    sharded.mkdir()
    os.environ["HF_DISTILL_TEST_CUDA"] = "1"
    try:
        (one,) = run([sys.executable, str(SCRIPT), str(single), "8"], single)
        accelerate = str(Path(sys.executable).parent / "accelerate")
        configs = Path(__file__).resolve().parents[1] / "hf_distill" / "accelerate_configs"
        launch = [accelerate, "launch", "--config_file", str(configs / config), "--num_processes", "2"]
        ranks = run([*launch, "--mixed_precision", "no", str(SCRIPT), str(sharded), "4"], sharded)
    finally:
        del os.environ["HF_DISTILL_TEST_CUDA"]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["steps"] == 3 for r in ranks)
    assert all(not r["teacher_requires_grad"] for r in ranks)
    a, b = load_file(single / "final.safetensors"), load_file(sharded / "final.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
