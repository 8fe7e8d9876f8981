"""What the benchmarks share: the results file every benchmark writes, and where the embedded job's pieces are.

Every benchmark writes one JSON file under `benchmarks/results/` through [`write_results`]: the date, the commit,
the machine, the command, the settings and the figures, plus free-form `notes` (caveats, run histories). The docs'
results tables and the README's are rendered from those files (`benchmarks/render.py`), never typed by hand.

The embedded tweets job (its data, teacher, settings and data preparation) is `examples/tweets.py`, which the demo
uses too; this module puts it on the import path. Nothing here or in a benchmark imports the demo.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A trial run can write its results elsewhere: HF_DISTILL_RESULTS_DIR=/tmp/trial python benchmarks/....
RESULTS_DIR = os.environ.get("HF_DISTILL_RESULTS_DIR") or os.path.join(REPO, "benchmarks", "results")

# The embedded job (data and teacher): examples/tweets.py, which the demo uses too.
sys.path.insert(0, os.path.join(REPO, "examples"))
from tweets import SPLIT_ORDER  # noqa: E402


def demo_paths(data_dir: str) -> dict[str, str]:
    """The CSV files of the job's splits in `data_dir` (a finished demo's `demo-output/data`), by split."""
    return {split: os.path.join(data_dir, f"{split}.csv") for split in SPLIT_ORDER}


def command_line() -> str:
    """How this process was started, relative to the repository: what reproduces the figures."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.startswith(REPO + os.sep):
        script = os.path.relpath(script, REPO)
    return " ".join(["python", script, *sys.argv[1:]]).strip()


def commit() -> str:
    """The checkout's commit, with `+changes` when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
        return head + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """What the figures were measured on."""
    facts = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        with open("/proc/meminfo") as handle:
            facts["memory_gib"] = round(int(handle.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{key}:\s+(\d+) kB", handle.read()).group(1))


class PeakMemory:
    """Peak resident memory above the level at `start()`, in MiB: `start()` resets the process's high-water mark
    (VmHWM, through `/proc/self/clear_refs`; Linux only), `peak()` reads it."""

    def start(self) -> None:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        self.base = _status_kib("VmRSS")

    def peak(self) -> float:
        return (_status_kib("VmHWM") - self.base) / 1024


def write_results(name: str, settings: dict, figures: dict, notes: list[str] | None = None, folder: str = "") -> str:
    """Writes `benchmarks/results/<name>.json` (or into `folder`): date, commit, machine, the command that ran,
    settings, figures and notes. Returns the path."""
    folder = folder or RESULTS_DIR
    os.makedirs(folder, exist_ok=True)
    record = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "commit": commit(),
        "machine": machine(),
        "command": command_line(),
        "settings": settings,
        "figures": figures,
        "notes": notes or [],
    }
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as handle:
        json.dump(record, handle, indent=2, default=str)
        handle.write("\n")
    return path
