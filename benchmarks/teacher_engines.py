"""The teacher on onnxruntime against the teacher in PyTorch, on the demo's tweets job: the teacher cache's build,
the students distilled from each cache, and a live distillation epoch.

    python benchmarks/teacher_engines.py --teacher_dir demo-output/teacher --data_dir demo-output/data \
        --output_dir engines-output [--engines pytorch,onnxruntime,onnxruntime-int8] [--parts cache,students,live] \
        [--seeds 3] [--epochs 2]

The demo's job (after `make demo`: its fine-tuned MiniLM-L6 teacher and its CSV files), its recipe (KD at T = 2 with
weight 0.5, labels 0.5, cosine hidden states 1.0 on the uniform layer map of a 3-layer student), run through the
code of `hf-distill cache` and `hf-distill train` with `--teacher_engine`:

- cache: the teacher cache of the labelled training tweets built by each engine (`build_cache`, timed from scratch:
  the engine's export and its agreement check at start-up included), its seconds and examples and tokens per second;
  and each engine's cache against PyTorch's: top-1 agreement of the stored logits, mean KL at T = 2 between them,
  largest relative error of the stored hidden states;
- students: a student distilled from each engine's cache for `--seeds` seeds; each seed's student against the
  PyTorch cache's student of the same seed on the test tweets (McNemar's exact test per seed and pooled): the
  target is "within noise";
- live: one live distillation epoch (no cache) with each engine's teacher: seconds, and the ratio to PyTorch's.

Writes `benchmarks/results/teacher_engines.json` (or into `--results_dir`). `--max_train_samples` and `--epochs`
make a small trial run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, write_results  # noqa: E402

sys.path.insert(0, REPO)  # this checkout's hf_distill

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from hf_distill import DistillationConfig  # noqa: E402
from hf_distill.cache import CacheArguments, TeacherCache  # noqa: E402
from hf_distill.data import DataArguments  # noqa: E402
from hf_distill.measure import MeasureArguments, compare_with_baseline  # noqa: E402
from hf_distill.run import StudentArguments, build_cache, run_distillation  # noqa: E402
from hf_distill.tasks import get_task  # noqa: E402


@dataclass
class EngineArguments:
    teacher_dir: str = field(default="demo-output/teacher", metadata={"help": "The demo's fine-tuned teacher."})
    data_dir: str = field(default="demo-output/data", metadata={"help": "The demo's train/validation/test CSVs."})
    output_dir: str = field(default="engines-output", metadata={"help": "Caches and students are written here."})
    results_dir: str = field(default="", metadata={"help": "Folder of the results JSON (default benchmarks/results)."})
    engines: str = field(default="pytorch,onnxruntime,onnxruntime-int8", metadata={"help": "The engines compared."})
    parts: str = field(default="cache,students,live", metadata={"help": "cache, students and/or live."})
    seeds: int = field(default=3, metadata={"help": "Training seeds per engine (seed 0, 1, ...)."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs of every student."})
    student_layers: int = field(default=3, metadata={"help": "Layers of the student built from the teacher."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Fewer training tweets (a trial run)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Fewer test tweets (a trial run)."})
    threads: int = field(default=2, metadata={"help": "torch (and onnxruntime) threads."})


def data_arguments(args: EngineArguments) -> DataArguments:
    return DataArguments(
        train_file=os.path.join(args.data_dir, "train.csv"),
        validation_file=os.path.join(args.data_dir, "validation.csv"),
        test_file=os.path.join(args.data_dir, "test.csv"),
        text_column="text",
        max_length=64,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
    )


def config(args: EngineArguments, output_dir: str, engine: str, cache_dir: str | None, seed: int = 0, **changes):
    """The demo's recipe, on `engine`, reading `cache_dir` when given."""
    settings = dict(
        output_dir=output_dir, overwrite_output_dir=True, teacher_model_name_or_path=args.teacher_dir,
        teacher_cache=cache_dir, teacher_engine=engine, temperature=2.0, kd_weight=0.5, label_weight=0.5,
        hidden_weight=1.0, hidden_loss_type="cosine", num_train_epochs=args.epochs, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, learning_rate=5e-5, warmup_steps=0.06, weight_decay=0.01, seed=seed,
        logging_steps=50, save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    return DistillationConfig(**{**settings, **changes})


def stored(cache: TeacherCache, column: str) -> torch.Tensor:
    return torch.tensor(np.concatenate([np.asarray(row, dtype=np.float32) for row in cache.rows[column]]))


def compare_caches(cache: TeacherCache, reference: TeacherCache, temperature: float = 2.0) -> dict:
    """The engine's stored outputs against PyTorch's: top-1 agreement and mean KL of the logits, hidden error."""
    classes = reference.settings["logit_fields"]["logits"]["classes"]
    ours, theirs = stored(cache, "logits").view(-1, classes), stored(reference, "logits").view(-1, classes)
    log_p, log_q = (torch.log_softmax(x / temperature, -1) for x in (theirs, ours))
    facts = {
        "top1_agreement": (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item(),
        "kl_at_T2": max((log_p.exp() * (log_p - log_q)).sum(-1).mean().item(), 0.0),  # a sum of zeros can be -0.0
        "examples": len(theirs),
    }
    for layer in reference.hidden_layers:
        h, h_engine = stored(reference, f"hidden_states.{layer}"), stored(cache, f"hidden_states.{layer}")
        facts[f"hidden_{layer}_relative_error"] = ((h_engine - h).norm() / h.norm()).item()
    return facts


def main(argv=None) -> str:
    (args,) = HfArgumentParser(EngineArguments).parse_args_into_dataclasses(args=argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    parts = {part.strip() for part in args.parts.split(",")}
    data_args, student = data_arguments(args), StudentArguments(student_layers=args.student_layers)
    figures: dict = {"cache": {}, "students": {}, "live": {}}
    caches: dict[str, TeacherCache] = {}

    if parts & {"cache", "students"}:
        for engine in engines:
            folder = tempfile.mkdtemp(prefix=f"cache-{engine}-", dir=args.output_dir)  # timed from scratch
            start = time.perf_counter()
            cache = build_cache(
                student, data_args, config(args, folder + "-unused", engine, None), CacheArguments(folder)
            )
            seconds = time.perf_counter() - start
            tokens = int(sum(cache.rows["num_positions"]))
            caches[engine] = cache
            figures["cache"][engine] = {
                "seconds": round(seconds, 2), "examples": len(cache), "tokens": tokens,
                "examples_per_s": round(len(cache) / seconds, 1), "tokens_per_s": round(tokens / seconds, 1),
            }  # fmt: skip
            print(f"cache {engine}: {figures['cache'][engine]}", flush=True)
        if "pytorch" in caches:
            for engine in engines:
                if engine != "pytorch":
                    figures["cache"][engine]["against_pytorch"] = compare_caches(caches[engine], caches["pytorch"])
                    seconds = figures["cache"][engine]["seconds"]
                    figures["cache"][engine]["speedup"] = round(figures["cache"]["pytorch"]["seconds"] / seconds, 2)
                    print(f"cache {engine} vs pytorch: {figures['cache'][engine]}", flush=True)

    if "students" in parts:
        scores = {}
        for engine in engines:
            output = os.path.join(args.output_dir, f"student-{engine}")
            result = run_distillation(
                student, data_args, config(args, output, engine, caches[engine].path),
                MeasureArguments(measure_latency=False, seeds=args.seeds),
            )  # fmt: skip
            scores[engine] = result.example_scores["student"]
            figures["students"][engine] = {"accuracy": [round(s.value(), 4) for s in scores[engine]]}
            print(f"students {engine}: {figures['students'][engine]}", flush=True)
        metric = get_task("text-classification")().card_metrics[0]
        for engine in engines:
            if engine != "pytorch" and "pytorch" in scores:
                seeds = list(range(len(scores[engine])))
                figures["students"][engine]["against_pytorch"] = compare_with_baseline(
                    scores[engine], scores["pytorch"], seeds, metric, [({}, {})] * len(seeds)
                )

    if "live" in parts:
        for engine in engines:
            output = os.path.join(args.output_dir, f"live-{engine}")
            result = run_distillation(
                student, data_args, config(args, output, engine, None, num_train_epochs=1.0),
                MeasureArguments(measure_latency=False),
            )  # fmt: skip
            figures["live"][engine] = {"epoch_s": result.metrics["training"]["train_runtime_s"]}
            print(f"live {engine}: {figures['live'][engine]}", flush=True)
        if "pytorch" in figures["live"]:
            for engine in engines:
                ratio = figures["live"][engine]["epoch_s"] / figures["live"]["pytorch"]["epoch_s"]
                figures["live"][engine]["ratio_to_pytorch"] = round(ratio, 3)

    for folder in os.listdir(args.output_dir):
        if folder.startswith("cache-"):  # hundreds of MB of hidden states
            shutil.rmtree(os.path.join(args.output_dir, folder), ignore_errors=True)
    notes = ["Cache seconds include the engine's export and its agreement check at start-up."]
    path = write_results("teacher_engines", dataclasses.asdict(args), figures, notes, folder=args.results_dir)
    print(path)
    return path


if __name__ == "__main__":
    main()
