"""Real multi-process training on this CPU machine (two ranks on gloo) against one process, same global batch."""

import json
import os
import shutil
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
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
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
