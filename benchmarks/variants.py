"""The demo recipe with one thing changed at a time: a teacher cache, top-k caches, and the other ways to transfer
knowledge (similarity, MiniLM relations, a teacher ensemble, a LoRA student). Not a unit test.

    python examples/demo.py --output_dir demo-output            # first: the teacher, the data, the reference run
    python benchmarks/variants.py --demo_dir demo-output [--variants cache,top1,similarity,...]

Each variant trains the demo's 3-layer student with the demo's settings (the same data, transfer set, epochs, seed
and batches) plus one change, and is scored on the same 2,000 test tweets. The table compares it with the demo's
distilled student (the reference) and the student trained without the teacher. Variants:

- `speed`: a distillation epoch from the cache vs a plain student fine-tuning epoch, on the same batches (a share of
  the epoch, `--speed_steps` steps each, timed in turns);
- `cache`: distillation from a teacher cache of all logits and float32 hidden states, with no teacher forward: its
  student is compared weight by weight with the reference (trained with the live teacher);
- `top1`: a cache of the top-1 class only (the tweets have 3 classes: top-2 holds the whole distribution exactly);
- `similarity`, `relation`: the similarity-preserving and the MiniLM relation loss added (weight 1.0);
- `ensemble`: two teachers (the demo's and one fine-tuned with another seed), soft targets averaged 0.5 / 0.5;
- `lora`: the student trains LoRA adapters (r = 8 on query and value) and its classifier only, merged on save.

Keeps each variant's figures in `variants.json` in the demo folder (a later invocation adds to them), writes them all
to `benchmarks/results/variants.json` (`--results_name`) and prints the table.
"""

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field

from common import demo_paths, write_results
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
)
from tweets import (
    data_arguments,
    distillation_config,
    fine_tune_teacher,
    minilm_path,
    prepare_tweets,
    score_predictions,
)

from hf_distill.cache import CacheArguments, TeacherCache, build_teacher_cache
from hf_distill.measure import MeasureArguments, predict
from hf_distill.run import StudentArguments, make_student, run_distillation
from hf_distill.trainer import DistillationTrainer

ALL_VARIANTS = ("speed", "cache", "top1", "similarity", "relation", "ensemble", "lora")
LORA = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["query", "value"]}


@dataclass
class VariantArguments:
    demo_dir: str = field(default="demo-output", metadata={"help": "A finished demo's output folder."})
    variants: str = field(default=",".join(ALL_VARIANTS), metadata={"help": f"Any of {', '.join(ALL_VARIANTS)}."})
    speed_steps: int = field(default=80, metadata={"help": "Steps timed per run in the speed comparison."})
    lora_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the LoRA student."})
    student_layers: str = field(default="0,2,4", metadata={"help": "Teacher layers the student copies (the demo's)."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs of every student (the demo's)."})
    teacher_epochs: float = field(default=2.0, metadata={"help": "Epochs of the ensemble's second teacher."})
    results_name: str = field(default="variants", metadata={"help": "Name of the results JSON (no extension)."})


def predict_logits(model, dataset, data_collator):
    return predict(model, dataset, data_collator)[0]


def main():
    (variant_args,) = HfArgumentParser(VariantArguments).parse_args_into_dataclasses()
    out = variant_args.demo_dir
    paths = demo_paths(os.path.join(out, "data"))
    if not os.path.isfile(os.path.join(out, "student", "distillation_metrics.json")):
        raise SystemExit(f"{out} holds no finished demo: run `python examples/demo.py --output_dir {out}` first")
    reference = json.load(open(os.path.join(out, "student", "distillation_metrics.json")))
    teacher_dir = os.path.join(out, "teacher")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    data = prepare_tweets(data_arguments(paths, unlabeled=True), tokenizer, teacher.config)
    test = data["test"]
    collator = DataCollatorWithPadding(tokenizer)
    teacher_logits = predict_logits(teacher, test, collator)
    results_path = os.path.join(out, "variants.json")
    results = json.load(open(results_path)) if os.path.isfile(results_path) else {}

    def config(name, **overrides):
        # The demo's settings and objective, with this variant's changes (its own learning rate, for LoRA).
        folder = os.path.join(out, "variants", name)
        settings = {"teacher_model_name_or_path": teacher_dir, **overrides}
        return distillation_config(folder, variant_args.epochs, **settings)

    def distil(name, **overrides):
        print(f"\n== variant {name}: {overrides}")
        result = run_distillation(
            StudentArguments(student_layers=variant_args.student_layers),
            data_arguments(paths, unlabeled=True),
            config(name, **overrides),
            MeasureArguments(measure_latency=False),
        )
        student = result.trainer.student
        scores = score_predictions(predict_logits(student, test, collator), list(test["labels"]), teacher_logits)
        entry = {
            "accuracy": scores["accuracy"],
            "macro_f1": scores["macro_f1"],
            "teacher_agreement": scores["teacher_agreement"],
            "train_runtime_s": result.metrics["training"]["train_runtime_s"],
            "settings": {k: v for k, v in overrides.items() if k != "teacher_cache"},
        }
        return entry, result.trainer

    def cache(name, temperature=None, **settings):
        folder = os.path.join(out, "caches", name)
        if os.path.isfile(os.path.join(folder, "cache_info.json")):
            try:
                return TeacherCache(folder), None
            except ValueError:
                shutil.rmtree(folder)
        start = time.time()
        stored = CacheArguments(folder, cache_batch_size=64, **settings)
        built = build_teacher_cache(
            teacher, data["train"], stored, tokenizer=tokenizer, data_collator=collator, temperature=temperature
        )
        return built, time.time() - start

    for variant in variant_args.variants.split(","):
        if variant == "speed":
            results["speed"] = speed(variant_args, data, collator, config, cache)
        elif variant == "cache":
            built, seconds = cache("full-f32", hidden_layers="2,4,6", hidden_dtype="float32")
            entry, trainer = distil("cache", teacher_cache=built.path)
            live = load_file(os.path.join(out, "student", "model.safetensors"))
            cached = trainer.student.state_dict()
            entry["max_weight_diff_vs_live_teacher"] = max(
                (cached[k].cpu() - v).abs().max().item() for k, v in live.items()
            )
            entry["cache_mb"] = built.size_bytes() / 2**20
            entry["cache_build_s"] = seconds
            f16, _ = cache("full-f16", hidden_layers="2,4,6", hidden_dtype="float16")
            entry["cache_mb_hidden_float16"] = f16.size_bytes() / 2**20
            logits_only, _ = cache("logits-only")
            entry["cache_mb_logits_only"] = logits_only.size_bytes() / 2**20
            results["cache"] = entry
        elif variant == "top1":
            temperature = config("top1").temperature  # the objective's
            built, _ = cache("top1", top_k=1, temperature=temperature, hidden_layers="2,4,6")
            entry, _ = distil("top1", teacher_cache=built.path)
            logits_only, _ = cache("top1-logits-only", top_k=1, temperature=temperature)
            entry["cache_mb_logits_only"] = logits_only.size_bytes() / 2**20
            results["top1"] = entry
        elif variant == "similarity":
            results["similarity"] = distil("similarity", similarity_weight=1.0)[0]
        elif variant == "relation":
            results["relation"] = distil("relation", relation_weight=1.0)[0]
        elif variant == "ensemble":
            second = os.path.join(out, "teacher-seed1")
            if not os.path.isfile(os.path.join(second, "config.json")):
                # The same data and recipe as the demo's teacher; another seed for the new head and the batches.
                fine_tune_teacher(paths, second, variant_args.teacher_epochs, seed=1)
            second_model = AutoModelForSequenceClassification.from_pretrained(second).eval()
            entry, _ = distil(
                "ensemble", teacher_model_name_or_path=f"{teacher_dir},{second}", teacher_weights="0.5,0.5"
            )
            entry["second_teacher_accuracy"] = score_predictions(
                predict_logits(second_model, test, collator), list(test["labels"])
            )["accuracy"]
            results["ensemble"] = entry
        elif variant == "lora":
            lora = {**LORA, "modules_to_save": ["classifier"]}
            entry, trainer = distil(
                "lora", peft_config=lora, merge_adapter_on_save=True, learning_rate=variant_args.lora_learning_rate
            )
            student = trainer.student
            entry["trainable_parameters"] = sum(p.numel() for p in student.parameters() if p.requires_grad)
            entry["all_parameters"] = sum(p.numel() for p in student.parameters())
            results["lora"] = entry
        else:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(ALL_VARIANTS)}")
        with open(results_path, "w") as handle:
            json.dump(results, handle, indent=2)
    print_table(reference, results)
    figures = {
        "reference": {
            role: {
                key: reference[role][key]
                for key in ("accuracy", "macro_f1", "teacher_agreement")
                if key in reference[role]
            }
            for role in ("teacher", "student", "baseline")
            if role in reference
        },
        "variants": results,
    }
    path = write_results(variant_args.results_name, dataclasses.asdict(variant_args), figures)
    print(f"Results: {path}")


def speed(variant_args, data, collator, config, cache):
    """Seconds of a plain student fine-tuning and of distillation from the cache over the same batches (the same
    Trainer seed and length-grouped sampler), timed in a balanced order (plain, cached, cached, plain, plain, cached)
    so that warm-up and drift fall on both alike; the ratio of the medians."""
    steps = variant_args.speed_steps
    built, _ = cache("full-f16", hidden_layers="2,4,6", hidden_dtype="float16")
    teacher = AutoModelForSequenceClassification.from_pretrained(os.path.join(variant_args.demo_dir, "teacher"))
    student_args = StudentArguments(student_layers=variant_args.student_layers)
    seconds = {"plain": [], "cached": []}
    for kind in ("plain", "cached", "cached", "plain", "plain", "cached"):
        args = config(f"speed-{kind}", max_steps=steps, teacher_cache=built.path if kind == "cached" else None)
        student = make_student(teacher, student_args)
        if kind == "plain":
            # The distillation data: the transfer set's labels are -100, which the cross-entropy ignores.
            trainer = Trainer(model=student, args=args, train_dataset=data["train"], data_collator=collator)
        else:
            trainer = DistillationTrainer(
                model=student, args=args, train_dataset=data["train"], data_collator=collator
            )
        seconds[kind].append(trainer.train().metrics["train_runtime"])
    plain, cached = (sorted(seconds[kind])[1] for kind in ("plain", "cached"))
    return {"steps": steps, "seconds": seconds, "ratio": cached / plain, "plain_s": plain, "cached_s": cached}


def print_table(reference, results):
    ref, base = reference["student"], reference.get("baseline", {})
    print("\nvariant                     accuracy  macro-F1  agree   vs reference  vs no-teacher")
    rows = [("reference (live teacher)", ref)] + [(name, r) for name, r in results.items() if "accuracy" in r]
    for name, r in rows:
        versus_base = f"{r['accuracy'] - base['accuracy']:+.4f}" if base else "-"
        print(
            f"{name:26s}  {r['accuracy']:.4f}    {r['macro_f1']:.4f}   {r['teacher_agreement']:.3f}   "
            f"{r['accuracy'] - ref['accuracy']:+.4f}       {versus_base}"
        )
    if "speed" in results:
        s = results["speed"]
        print(
            f"\ndistillation from the cache / plain student fine-tuning, same {s['steps']} batches: {s['ratio']:.3f} "
            f"({s['cached_s']:.1f} s / {s['plain_s']:.1f} s, medians of three turns each)"
        )
    if "cache" in results:
        c = results["cache"]
        print(
            f"full-logit cache vs live teacher: max |weight difference| {c['max_weight_diff_vs_live_teacher']:.2e}; "
            f"cache {c['cache_mb']:.1f} MB with float32 hidden states, {c['cache_mb_hidden_float16']:.1f} MB with "
            f"float16, {c['cache_mb_logits_only']:.2f} MB logits only"
        )


if __name__ == "__main__":
    main()
