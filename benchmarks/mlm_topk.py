"""Top-k teacher caches on a 30,522-token vocabulary: how small k can be, measured. Not a unit test.

    python examples/demo.py --output_dir demo-output        # first: the demo's tweets (demo-output/data)
    python benchmarks/mlm_topk.py --demo_dir demo-output [--top_k 8,64,512]

A masked-LM teacher (all-MiniLM-L6-v2 with an MLM head, fine-tuned on the tweets) is distilled into a 3-layer
student (teacher layers 0, 2, 4) on tweets masked once (15%), from the live teacher and from top-k caches. All logits
of this vocabulary for every token would take 12 kB a token; a top-k cache takes 8 k bytes a token. Reports each
student's masked-token accuracy and agreement with the teacher on held-out tweets, and each cache's size. Writes
`<demo_dir>/topk/topk.json` and `benchmarks/results/mlm_topk.json` (`--results_name`).
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

import pandas as pd
import torch
from common import write_results
from datasets import Dataset
from transformers import (
    AutoTokenizer,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
)
from tweets import minilm_path

from hf_distill import CacheArguments, DistillationConfig, DistillationTrainer, build_student, build_teacher_cache
from hf_distill.tasks import IGNORE_INDEX
from hf_distill.tasks.language_modeling import mask_once


@dataclass
class TopKArguments:
    demo_dir: str = field(default="demo-output", metadata={"help": "A finished demo's output folder (its data)."})
    top_k: str = field(default="8,64,512", metadata={"help": "The k of each top-k cache."})
    train_examples: int = field(default=6000, metadata={"help": "Tweets for teacher and student training."})
    temperature: float = field(default=2.0, metadata={"help": "Distillation temperature."})
    results_name: str = field(default="mlm_topk", metadata={"help": "Name of the results JSON (no extension)."})


def main():
    (args,) = HfArgumentParser(TopKArguments).parse_args_into_dataclasses()
    out = os.path.join(args.demo_dir, "topk")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    texts = pd.read_csv(os.path.join(args.demo_dir, "data", "train.csv"))["text"].tolist()[: args.train_examples]
    test_texts = pd.read_csv(os.path.join(args.demo_dir, "data", "test.csv"))["text"].tolist()

    def tokenized(rows):
        data = Dataset.from_dict({"text": rows})
        return data.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=64, return_special_tokens_mask=True),
            batched=True,
            remove_columns=["text"],
        )

    train, test = tokenized(texts), tokenized(test_texts)
    # Masked once, with seeds: the same inputs for the teacher's pass and every student run.
    train_masked, test_masked = mask_once(train, tokenizer, seed=0), mask_once(test, tokenizer, seed=1)
    padder = DataCollatorForTokenClassification(tokenizer)

    teacher_dir = os.path.join(out, "teacher")
    if not os.path.isfile(os.path.join(teacher_dir, "config.json")):
        print("Fine-tuning the masked-LM teacher (MiniLM + MLM head) on the tweets")
        torch.manual_seed(0)
        teacher = BertForMaskedLM.from_pretrained(minilm_path())
        trainer = Trainer(
            model=teacher,
            args=TrainingArguments(
                teacher_dir,
                num_train_epochs=2,
                per_device_train_batch_size=32,
                learning_rate=1e-4,
                use_cpu=True,
                report_to="none",
                save_strategy="no",
                logging_steps=50,
                seed=0,
                warmup_steps=0.06,
            ),
            train_dataset=train,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0),
        )
        trainer.train()
        trainer.save_model(teacher_dir)
    teacher = BertForMaskedLM.from_pretrained(teacher_dir).eval()

    def distil(name, cache=None):
        torch.manual_seed(0)
        student = build_student(teacher, layers=[0, 2, 4])
        config = DistillationConfig(
            output_dir=os.path.join(out, name),
            num_train_epochs=1,
            per_device_train_batch_size=32,
            learning_rate=1e-4,
            warmup_steps=0.06,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=50,
            seed=0,
            temperature=args.temperature,
            kd_weight=1.0,
            label_weight=0.5,
            teacher_cache=cache,
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=None if cache else teacher,
            args=config,
            train_dataset=train_masked,
            data_collator=padder,
        )
        seconds = trainer.train().metrics["train_runtime"]
        return {**score(trainer.student), "train_runtime_s": seconds}

    def score(model):
        model.eval()
        right = agree = total = 0
        for start in range(0, len(test_masked), 64):
            batch = padder([test_masked[i] for i in range(start, min(start + 64, len(test_masked)))])
            labels = batch.pop("labels")
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.no_grad():
                predicted = model(**batch).logits.argmax(-1)
                reference = teacher(**batch).logits.argmax(-1)
            scored = labels != IGNORE_INDEX
            right += (predicted == labels)[scored].sum().item()
            agree += (predicted == reference)[scored].sum().item()
            total += scored.sum().item()
        return {"masked_token_accuracy": right / total, "teacher_agreement": agree / total, "masked_tokens": total}

    results = {"teacher": score(teacher)}
    results["live"] = distil("live")
    tokens = sum(train_masked["attention_mask"][i].count(1) for i in range(len(train_masked)))
    for k in (int(x) for x in args.top_k.split(",")):
        folder = os.path.join(out, f"cache-top{k}")
        cache = build_teacher_cache(
            teacher,
            train_masked,
            CacheArguments(folder, top_k=k, cache_batch_size=64),
            tokenizer=tokenizer,
            data_collator=padder,
            temperature=args.temperature,
        )
        results[f"top{k}"] = {**distil(f"top{k}", cache.path), "cache_mb": cache.size_bytes() / 2**20}
    results["full_logits_mb_estimate"] = tokens * teacher.config.vocab_size * 4 / 2**20
    with open(os.path.join(out, "topk.json"), "w") as handle:
        json.dump(results, handle, indent=2)

    live = results["live"]["masked_token_accuracy"]
    print(f"\nMasked-token accuracy on {results['teacher']['masked_tokens']} masked test tokens")
    print(f"teacher                {results['teacher']['masked_token_accuracy']:.4f}")
    print(f"student, live teacher  {live:.4f}   agreement {results['live']['teacher_agreement']:.3f}")
    for name, r in results.items():
        if name.startswith("top"):
            print(
                f"student, {name:13s} {r['masked_token_accuracy']:.4f}   agreement {r['teacher_agreement']:.3f}   "
                f"{r['masked_token_accuracy'] - live:+.4f} vs live   cache {r['cache_mb']:.1f} MB"
            )
    print(f"all logits for the {tokens} training tokens would take {results['full_logits_mb_estimate']:.0f} MB")
    print(f"Results: {write_results(args.results_name, dataclasses.asdict(args), results)}")


if __name__ == "__main__":
    main()
