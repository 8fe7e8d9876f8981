"""The fused linear distillation loss against the one pass over the logits: peak memory and time of the KD + LM loss
alone (forward and backward, from the student's final hidden states and output layer), at large vocabularies.

    python benchmarks/fused_linear_loss.py [--vocabularies 49152,131072] [--lengths 1024,4096] [--teachers top-k,head]

A synthetic output layer: hidden states `(1, length, --width)` (SmolLM2's width, 576, by default) and a weight
`(vocabulary, width)`, both trained (their gradients are made); labels at every position; forward KL at T = 1 with
weight 0.5 and the LM loss with weight 0.5, the setting in which the one pass applies.

- `one pass`: the logits `F.linear(hidden, weight)` (float32), then `losses.forward_kl_and_cross_entropy` (one float32
  buffer of the logits' size for both gradients), then the output layer's backward: what a step made before the
  fused loss.
- `fused`: `fused_linear.fused_linear_distillation_loss`, chunks of the default size (about 2^24 logits).

The teacher is a top-k cache's targets (`top-k`: k = 32 per position) or a live teacher of the same width
(`head`: the one pass gets its logits, `F.linear` of its hidden states without gradient, as a live teacher hands them
over; the fused loss gets its hidden states and output layer and makes its logits a chunk at a time).

Each configuration runs in a fresh process: one warm-up, then `--repeats` timed repetitions; before each, the
process's peak resident set (VmHWM) is reset to its current size (`/proc/self/clear_refs`), and the peak is VmHWM
after the step minus VmRSS before it (the largest over the repetitions). Inputs, weights and targets exist before the
measurement starts, so the peak is what the loss and its gradients add. Writes
`benchmarks/results/fused_linear_loss.json` (or `--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, PeakMemory, write_results  # noqa: E402

sys.path.insert(0, REPO)  # this checkout's hf_distill, whatever is installed


def worker(spec: dict) -> dict:
    """One configuration: `repeats` measured steps of one method, after a warm-up."""
    import torch
    import torch.nn.functional as F

    from hf_distill.fused_linear import LinearHead, default_chunk_size, fused_linear_distillation_loss
    from hf_distill.losses import TopKTargets, forward_kl_and_cross_entropy

    torch.set_num_threads(spec["threads"])
    g = torch.Generator().manual_seed(0)
    length, vocab, width, k = spec["length"], spec["vocabulary"], spec["width"], spec["k"]
    hidden = torch.randn(1, length, width, generator=g).requires_grad_(True)
    weight = (torch.randn(vocab, width, generator=g) / width**0.5).requires_grad_(True)
    labels = torch.randint(0, vocab, (1, length), generator=g)
    if spec["teacher"] == "top-k":
        values, ids = torch.log_softmax(torch.randn(1, length, 4 * k, generator=g), -1).topk(k, dim=-1)
        teacher = TopKTargets(torch.randint(0, vocab, (1, length, k), generator=g), values, vocab)
        del ids
    else:
        teacher = LinearHead(torch.randn(1, length, width, generator=g), torch.randn(vocab, width, generator=g) / 24)
    memory, times, peaks = PeakMemory(), [], []
    for _ in range(1 + spec["repeats"]):
        memory.start()
        began = time.perf_counter()
        if spec["method"] == "fused":
            kd, ce = fused_linear_distillation_loss(
                LinearHead(hidden, weight), teacher, labels, kd_weight=0.5, label_weight=0.5
            )
        else:
            logits = F.linear(hidden, weight)
            with torch.no_grad():
                targets = teacher.logits() if isinstance(teacher, LinearHead) else teacher
            kd, ce = forward_kl_and_cross_entropy(logits, targets, labels)
            del logits, targets
        (0.5 * kd + 0.5 * ce).backward()
        times.append(time.perf_counter() - began)
        peaks.append(memory.peak())
        hidden.grad = weight.grad = None
        del kd, ce
    return {
        "seconds": statistics.median(times[1:]),
        "all_seconds": [round(t, 3) for t in times],
        "peak_mib": round(max(peaks[1:]), 1),
        "logits_mib": round(length * vocab * 4 / 2**20, 1),
        "chunk_positions": default_chunk_size(vocab),
    }


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabularies", default="49152,131072")
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--teachers", default="top-k,head", help="top-k and/or head")
    parser.add_argument("--width", type=int, default=576, help="hidden size of the synthetic head (SmolLM2: 576)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="", help="folder of the results JSON (default benchmarks/results)")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return ""
    rows = []
    for vocab in [int(v) for v in args.vocabularies.split(",")]:
        for length in [int(n) for n in args.lengths.split(",")]:
            for teacher in args.teachers.split(","):
                row = {"vocabulary": vocab, "length": length, "teacher": teacher}
                for method in ("one pass", "fused"):
                    spec = {**row, "method": method, "width": args.width, "k": args.k, "repeats": args.repeats}
                    spec["threads"] = args.threads
                    done = subprocess.run(
                        [sys.executable, __file__, "--worker", json.dumps(spec)],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    row[method] = json.loads(done.stdout.strip().splitlines()[-1])
                row["peak_ratio"] = round(row["fused"]["peak_mib"] / max(row["one pass"]["peak_mib"], 1e-9), 3)
                row["time_ratio"] = round(row["fused"]["seconds"] / row["one pass"]["seconds"], 3)
                rows.append(row)
                print(
                    f"V={vocab} L={length} {teacher}: one pass {row['one pass']['seconds']:.2f} s "
                    f"{row['one pass']['peak_mib']:.0f} MiB | fused {row['fused']['seconds']:.2f} s "
                    f"{row['fused']['peak_mib']:.0f} MiB | peak x{row['peak_ratio']} time x{row['time_ratio']}",
                    flush=True,
                )
    settings = {
        k: getattr(args, k) for k in ("vocabularies", "lengths", "teachers", "width", "k", "repeats", "threads")
    }
    notes = [
        "KD (forward KL, T = 1) + LM loss, weights 0.5/0.5, forward and backward, gradients of hidden states and "
        "weight;"
        " batch 1; peaks are resident memory above the inputs' (fresh process per configuration)."
    ]
    path = write_results("fused_linear_loss", settings, {"rows": rows}, notes, folder=args.output)
    print(path)
    return path


if __name__ == "__main__":
    main()
