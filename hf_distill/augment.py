"""A transfer set made from the user's own training texts (`--augment N`), for the teacher to label.

TinyBERT (Jiao et al. 2020) and TextBrewer showed that distilling on augmented copies of a small labelled set adds
points where the labelled data alone leaves the student short of the teacher: the teacher's soft targets on texts
near the training texts show the student more of the teacher's function than the labelled texts alone. The augmented
texts carry no hard label (a replaced word can change the true class); only the teacher's soft targets teach from them,
exactly as from `--unlabeled_file` rows: they join the `"unlabeled"` split.

Method (each word of each copy, independently; probabilities are flags):

- **word replacement** (`augment_replace_prob`): a word that is one whole-word token of the tokenizer is replaced by
  one of its `augment_neighbours` nearest neighbours (cosine) in the teacher's input-embedding space. TinyBERT asks a
  masked language model for candidates; no MLM head installs offline for the MiniLM teachers here (the packaged
  MiniLM is an encoder without one), and the input embeddings are the teacher's own view of which words are alike;
  a word split into several word pieces is kept, as TinyBERT keeps it out of its MLM step.
- **word dropout** (`augment_drop_prob`): a word is deleted;
- **span deletion** (`augment_span_prob`): once per copy, a span of 2 or 3 consecutive words is deleted.

Guarantees: deterministic under `augment_seed` (each copy's random draws come from the seed, the row and the copy
number, whatever the batching); an augmented text is never one of the evaluation (validation, test) texts nor one of
the training texts, compared after lower-casing and collapsing white space, and never repeats another augmented text;
the rows have the input columns only, no label. Built in batches (`datasets.map`), written to a cache folder keyed by
a fingerprint of the training and evaluation texts, the teacher's embeddings, the tokenizer and the settings: a
second run with the same inputs loads it instead of rebuilding it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk

from .columns import input_columns
from .log import get_logger
from .output_folders import remove_stale_staging, staging_path
from .provenance import with_provenance

logger = get_logger(__name__)

__all__ = [
    "AugmentSettings",
    "augment_texts",
    "build_transfer_set",
    "nearest_word_neighbours",
    "whole_word_vocabulary",
]

# A word: optional leading and trailing punctuation around letters (the part that may be replaced).
_WORD = re.compile(r"^(\W*)([^\W\d_]+)(\W*)$")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class AugmentSettings:
    """The settings of `--augment` (see [`hf_distill.data.DataArguments`])."""

    copies: int
    replace_prob: float = 0.3
    neighbours: int = 15
    drop_prob: float = 0.1
    span_prob: float = 0.2
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.copies, int) or self.copies < 0:
            raise ValueError(f"augment must be a whole number of copies >= 0, got {self.copies!r}")
        for name in ("replace_prob", "drop_prob", "span_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"augment_{name} must be a probability in [0, 1], got {value!r}")
        if not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ValueError(f"augment_neighbours must be a whole number >= 1, got {self.neighbours!r}")
        if self.copies and not (self.replace_prob or self.drop_prob or self.span_prob):
            raise ValueError(
                "augment > 0 but augment_replace_prob, augment_drop_prob and augment_span_prob are all 0: the copies "
                "would be the training texts; set one above 0"
            )


def normalise(text: str) -> str:
    """The form texts are compared in: lower case, single spaces (an uncased model sees no other difference)."""
    return " ".join(str(text).lower().split())


# ---- the embedding neighbourhoods ----------------------------------------------------------------------------------


def whole_word_vocabulary(tokenizer) -> dict[str, int]:
    """Alphabetic words (2 letters or more) that the tokenizer encodes as exactly one token, by their text (lower
    case for an uncased tokenizer): the words that replacement may take out and put in."""
    candidates = {}
    for token, index in tokenizer.get_vocab().items():
        if index in tokenizer.all_special_ids:
            continue
        text = tokenizer.convert_tokens_to_string([token]).strip()
        if len(text) >= 2 and text.isalpha():
            candidates.setdefault(text, index)
    words = sorted(candidates)
    if not words:
        return {}  # (a tokenizer called on no text at all fails)
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    return {word: ids[0] for word, ids in zip(words, encoded) if len(ids) == 1}


@torch.no_grad()
def nearest_word_neighbours(
    words: Iterable[str], vocabulary: dict[str, int], embeddings: torch.Tensor, k: int, chunk: int = 1024
) -> dict[str, list[str]]:
    """The `k` nearest whole words (cosine of input embeddings, the word itself excluded) of each of `words` that is in
    `vocabulary`; computed in chunks of `chunk` words, so memory stays at `chunk x vocabulary` similarities."""
    names = list(vocabulary)
    ids = torch.tensor([vocabulary[w] for w in names])
    table = torch.nn.functional.normalize(embeddings.detach().float()[ids], dim=-1)
    position = {w: i for i, w in enumerate(names)}
    wanted = sorted({w for w in words if w in position})
    neighbours: dict[str, list[str]] = {}
    k = min(k, len(names) - 1)
    for start in range(0, len(wanted), chunk):
        batch = wanted[start : start + chunk]
        rows = torch.tensor([position[w] for w in batch])
        similarity = table[rows] @ table.T
        similarity[torch.arange(len(batch)), rows] = -2.0  # never the word itself
        top = similarity.topk(k, dim=-1).indices
        for word, found in zip(batch, top.tolist()):
            neighbours[word] = [names[i] for i in found]
    return neighbours


# ---- one text -----------------------------------------------------------------------------------------------------


def _lookup(core: str, lowercase: bool) -> str:
    return core.lower() if lowercase else core


def _cased_like(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def augment_texts(
    text: str, copies: int, neighbours: dict[str, list[str]], settings: AugmentSettings, row: int, lowercase: bool
) -> list[str]:
    """`copies` augmented versions of `text` (duplicates and unchanged ones included: the caller filters). The random
    draws of copy `j` come from `(seed, row, j)`, so a text's copies do not depend on batching or on other rows."""
    words = text.split()
    results = []
    for copy in range(copies):
        rng = np.random.default_rng([settings.seed, row, copy])
        out = []
        for word in words:
            match = _WORD.match(word)
            if match is not None:
                core = match.group(2)
                options = neighbours.get(_lookup(core, lowercase))
                if options and rng.random() < settings.replace_prob:
                    choice = options[int(rng.integers(len(options)))]
                    out.append(match.group(1) + _cased_like(core, choice) + match.group(3))
                    continue
            if rng.random() < settings.drop_prob:
                continue
            out.append(word)
        if len(out) > 3 and rng.random() < settings.span_prob:
            length = int(rng.integers(2, 4))
            start = int(rng.integers(0, len(out) - length + 1))
            out = out[:start] + out[start + length :]
        results.append(" ".join(out))
    return results


# ---- the transfer set ---------------------------------------------------------------------------------------------


def _fingerprint(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _texts_bytes(dataset: Dataset, columns: list[str]) -> bytes:
    return json.dumps([list(map(str, dataset[c])) for c in columns]).encode()


def build_transfer_set(
    train: Dataset,
    evaluation: list[Dataset],
    columns: list[str],
    tokenizer,
    embeddings: torch.Tensor,
    settings: AugmentSettings,
    cache_dir: str,
    batch_size: int = 1000,
) -> Dataset:
    """`settings.copies` augmented copies of each training example's input `columns`, without labels, none of them a
    training or evaluation input or a repeat; loaded from `cache_dir` when built before with the same inputs.

    Args:
        train: the raw training split (its `columns` are augmented, each independently).
        evaluation: the raw evaluation splits (validation, test) whose inputs must never be produced.
        columns: the input columns (text, and text pair).
        tokenizer: the teacher's tokenizer (which words are whole-word tokens).
        embeddings: the teacher's input-embedding matrix `(vocab, hidden)` (which words are near).
        settings: the [`AugmentSettings`].
        cache_dir: the folder of built transfer sets.
    """
    lowercase = bool(getattr(tokenizer, "do_lower_case", False))
    weights = embeddings.detach().float().cpu().contiguous()
    fingerprint = _fingerprint(
        [
            json.dumps({"version": _FORMAT_VERSION, "columns": columns, **settings.__dict__}).encode(),
            _texts_bytes(train, columns),
            *(_texts_bytes(split, [c for c in columns if c in split.column_names]) for split in evaluation),
            json.dumps(sorted(tokenizer.get_vocab().items())).encode(),
            weights.numpy().tobytes(),
        ]
    )
    path = os.path.join(cache_dir, f"augment-{fingerprint[:20]}")
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        logger.info(f"Augmented transfer set loaded from {path} (built before from the same texts and settings)")
        return load_from_disk(path)

    started = time.perf_counter()
    vocabulary = whole_word_vocabulary(tokenizer)
    seen_words = set()
    for column in columns:
        for text in train[column]:
            for word in str(text).split():
                match = _WORD.match(word)
                if match is not None:
                    seen_words.add(_lookup(match.group(2), lowercase))
    neighbours = nearest_word_neighbours(seen_words, vocabulary, weights, settings.neighbours)

    def augment_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows: dict[str, list] = {c: [] for c in columns}
        for position, index in enumerate(indices):
            # Each column gets its own draws (the row number is offset per column).
            copies = [
                augment_texts(str(batch[c][position]), settings.copies, neighbours, settings, index * 8 + k, lowercase)
                for k, c in enumerate(columns)
            ]
            for j in range(settings.copies):
                for c, texts in zip(columns, copies):
                    rows[c].append(texts[j])
        return rows

    generated = train.select_columns(columns).map(
        augment_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=columns,
        new_fingerprint=f"hf-distill-augment-{fingerprint[:20]}",
        desc=f"Augmenting the training texts ({settings.copies} copies each)",
    )
    # Never an evaluation or training input, never a repeat, never empty.
    taken = {tuple(normalise(v) for v in row) for split in (train, *evaluation) for row in _rows(split, columns)}
    keep = []
    for index, row in enumerate(_rows(generated, columns)):
        key = tuple(normalise(v) for v in row)
        if all(key) and key not in taken:
            taken.add(key)
            keep.append(index)
    transfer = generated.select(keep)
    os.makedirs(cache_dir, exist_ok=True)
    # Written beside its place and moved there when complete: an interrupted build leaves nothing half-done (a
    # killed one's staging folder is removed by the next build).
    remove_stale_staging(cache_dir)
    partial = str(staging_path(cache_dir))
    try:
        transfer.save_to_disk(partial)
        if os.path.isdir(path):  # another process finished first: its copy is identical
            shutil.rmtree(partial, ignore_errors=True)
        else:
            os.replace(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info(
        f"Augmented transfer set: {len(transfer)} texts from {len(train)} training texts x {settings.copies} copies "
        f"({len(generated) - len(transfer)} dropped as repeats of training, evaluation or other augmented texts), "
        f"built in {time.perf_counter() - started:.1f} s, saved to {path}"
    )
    return load_from_disk(path)


def _rows(dataset: Dataset, columns: list[str]):
    present = [c for c in columns if c in dataset.column_names]
    return zip(*(dataset[c] for c in present))


def settings_of(data_args) -> AugmentSettings:
    """The [`AugmentSettings`] of the `augment*` flags of [`~hf_distill.data.DataArguments`]."""
    return AugmentSettings(
        copies=data_args.augment,
        replace_prob=data_args.augment_replace_prob,
        neighbours=data_args.augment_neighbours,
        drop_prob=data_args.augment_drop_prob,
        span_prob=data_args.augment_span_prob,
        seed=data_args.augment_seed,
    )


def default_cache_dir() -> str:
    """`$HF_DATASETS_CACHE/hf_distill_augment` (datasets' cache, so `HF_HOME` and `HF_DATASETS_CACHE` move it)."""
    import datasets

    return os.path.join(str(datasets.config.HF_DATASETS_CACHE), "hf_distill_augment")


def check_augmentable(data_args, task, tokenizer, teacher) -> None:
    """Refuses `--augment` where it cannot work, before the data is read: a task whose labels cannot follow the
    words (its [`~hf_distill.tasks.Task.augmentation_refusal`]), a teacher without an input-embedding matrix (the
    neighbours of a word are found there), or, when words are replaced, a tokenizer without whole-word tokens.

    Raises:
        `ValueError`: one line naming `--augment`, what is missing and the fix.
    """
    refusal = task.augmentation_refusal()
    if refusal:
        raise ValueError(f"--augment {data_args.augment}: {refusal}; leave out --augment")
    if not data_args.augment_replace_prob:
        return  # dropping words and swapping spans need neither embeddings nor a vocabulary
    embeddings = teacher.get_input_embeddings()
    weight = getattr(embeddings, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"--augment {data_args.augment}: words are replaced by their nearest neighbours in the teacher's input "
            f"embeddings, but {type(teacher).__name__} has no input-embedding matrix; leave out --augment, or pass "
            "--augment_replace_prob 0 (word drops and span swaps only)"
        )
    if len(whole_word_vocabulary(tokenizer)) < 2:
        raise ValueError(
            f"--augment {data_args.augment}: words are replaced by other words that the teacher's tokenizer reads as "
            f"one token, but its {len(tokenizer)} tokens hold no such words (sub-word or byte pieces only); leave out "
            "--augment, or pass --augment_replace_prob 0 (word drops and span swaps only)"
        )


def add_augmented_transfer_set(raw, data_args, task, tokenizer, teacher):
    """The raw splits with `--augment` copies of the training inputs added to the `"unlabeled"` split (after the
    texts of `--unlabeled_file`, when there is one), for the teacher to label.

    Raises:
        `ValueError`: the task cannot keep its labels apart from augmented inputs (its reason), or the data has no
        input column to augment.
    """
    check_augmentable(data_args, task, tokenizer, teacher)
    columns = input_columns(raw["train"].column_names, data_args)
    if not columns or any(c not in raw["train"].column_names for c in columns):
        raise ValueError(
            f"--augment needs the text column(s) of the training data; found none of {columns or 'the usual names'} "
            f"in {raw['train'].column_names}: pass --text_column"
        )
    evaluation = [raw[name] for name in ("validation", "test") if name in raw]
    transfer = build_transfer_set(
        raw["train"],
        evaluation,
        columns,
        tokenizer,
        teacher.get_input_embeddings().weight,
        settings_of(data_args),
        data_args.augment_cache_dir or default_cache_dir(),
    )
    splits = dict(raw)
    sources = dict(getattr(raw, "sources", {}))
    if "unlabeled" in splits:
        existing = splits["unlabeled"].select_columns(columns)
        splits["unlabeled"] = concatenate_datasets([existing, transfer.cast(existing.features)])
        sources["unlabeled"] += f" and {len(transfer)} augmented training texts (--augment {data_args.augment})"
    else:
        splits["unlabeled"] = transfer
        sources["unlabeled"] = f"{len(transfer)} augmented training texts (--augment {data_args.augment})"
    result = with_provenance(DatasetDict(splits), raw)
    result.sources = sources
    result.augmented_examples = len(transfer)
    return result
