"""The teacher-output cache: run the teacher once over a tokenised dataset, then distil from its stored outputs.

A cache is a folder holding an Arrow dataset (one row per example of the training data, memory-mapped when read) and
`cache_info.json`, which records how it was made. A row holds, for example `index` of the data:

- the teacher's logits (`logits`, or `start_logits` and `end_logits` for question answering): either whole, or the
  `top_k` largest classes per position with their log-probabilities at the distillation temperature, so that
  vocabularies of 100k tokens fit (read back as ids and log-probabilities, never as vocabulary-wide logits: the loss
  compares the student on the top k plus one bucket for the rest of the mass);
- optionally the hidden states of chosen teacher layers, in float16 or float32, for the hidden-state loss.

Per-token outputs are stored for the real tokens only (where the attention mask is 1) and put back at the real tokens
of whatever batch the example lands in, so padding and shuffling do not matter.

The cache is keyed by fingerprints of the teacher's weights, the tokenizer, the teacher's input columns of the data,
and the settings. [`DistillationTrainer`] refuses a cache whose fingerprints do not match what it is given, naming
what differs. Building streams (one batch in memory at a time, written to shards of `shard_size` rows) and resumes
where it stopped when run again on the same folder.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedModel, default_data_collator
from transformers.modeling_outputs import ModelOutput

from .architectures import input_names
from .log import get_logger
from .losses import LOG_FLOOR, TopKTargets
from .tasks import Task, task_for
from .tasks.language_modeling import LanguageModelingCollator
from .teacher import model_facts
from .terms import NEED_NAMES, LossTerm, teacher_hidden_layers

logger = get_logger(__name__)

CACHE_INFO_NAME = "cache_info.json"
CACHE_INDEX_COLUMN = "teacher_cache_index"
FORMAT_VERSION = 1
_SHARDS = "shards"
_HIDDEN_DTYPES = {"float16": (torch.float16, pa.float16()), "float32": (torch.float32, pa.float32())}


class CacheMismatchError(ValueError):
    """A teacher cache that does not belong to the teacher, tokenizer, data or settings it is used with."""


@dataclass
class CacheArguments:
    """How `hf-distill cache` stores the teacher's outputs: the settings of [`build_teacher_cache`]. In Python,
    `hidden_layers` may also be a list of layer numbers."""

    cache_dir: str = field(metadata={"help": "Folder of the cache (created; an unfinished cache there is resumed)."})
    top_k: int | None = field(
        default=None,
        metadata={
            "help": "Store only the k most likely classes per position (with their log-probabilities at the "
            "distillation temperature) instead of all the logits: for large vocabularies. Default: all logits."
        },
    )
    logit_samples: int | None = field(
        default=None,
        metadata={
            "help": "Instead of the top k, store N classes drawn per position from the teacher's distribution at the "
            "distillation temperature (with replacement, seeded) with their frequencies (count / N), in N slots: "
            "unbiased soft targets (Sparse Logit Sampling, Anshumann et al. 2025), whose forward-KL gradient is on "
            "average the full distribution's, where the top k's ignores the tail. Forward KL only."
        },
    )
    hidden_layers: str | None = field(
        default=None,
        metadata={
            "help": "Teacher hidden states to store, numbered as hidden_states (0 is the embedding output), e.g. "
            "'2,4,6', or 'all'. Default: the teacher layers of the recipe's layer map when one of its loss terms "
            "compares hidden states (hidden_weight or similarity_weight > 0), else none."
        },
    )
    hidden_dtype: Literal["float16", "float32"] = field(
        default="float16", metadata={"help": "Precision of the stored hidden states."}
    )
    cache_batch_size: int = field(default=64, metadata={"help": "Batch size of the teacher's pass."})
    shard_size: int = field(
        default=4096, metadata={"help": "Rows per shard file: an interrupted build loses at most one shard's work."}
    )

    def __post_init__(self):
        for name in ("top_k", "logit_samples", "cache_batch_size", "shard_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1 (--{name}), got {value!r}")
        if self.top_k is not None and self.logit_samples is not None:
            raise ValueError(
                f"top_k={self.top_k} and logit_samples={self.logit_samples} are two ways of keeping part of the "
                "distribution: pass one of them"
            )

    def check_recipe(self, args) -> None:
        """Refuses, before the teacher runs, a cache that the recipe's training (`args`, a [`DistillationConfig`])
        would refuse: sampled frequencies serve the forward KL only ([`check_cache_serves`] at training)."""
        divergence = getattr(args, "divergence", "forward_kl")
        if self.logit_samples and divergence != "forward_kl":
            raise ValueError(
                f"logit_samples={self.logit_samples} stores sampled frequencies, whose gradient is unbiased for the "
                f"forward KL only, but the recipe's divergence is {divergence!r}: use divergence='forward_kl', or "
                "build a top-k cache (--top_k)"
            )


# ---- fingerprints ---------------------------------------------------------------------------------------------------


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers: names, dtypes, shapes and bytes (adapters included)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what makes a tokenizer produce its ids: its vocabulary, special tokens and padding side."""
    facts = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "padding_side": getattr(tokenizer, "padding_side", None),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def data_fingerprint(dataset, columns: list[str], chunk_size: int = 4096) -> str:
    """sha256 of the given columns of a `datasets.Dataset`, row by row in order (read in chunks)."""
    digest = hashlib.sha256()
    digest.update(f"{len(dataset)}|{','.join(columns)}|".encode())
    table = dataset.with_format("arrow")
    for start in range(0, len(dataset), chunk_size):
        chunk = table[start : start + chunk_size]
        for column in columns:
            array = chunk.column(column).combine_chunks()
            if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                offsets = array.offsets.to_numpy()
                digest.update((offsets - offsets[0]).astype(np.int64).tobytes())
                digest.update(array.flatten().to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
            else:
                digest.update(array.to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()


def teacher_input_columns(teacher_inputs: set[str], dataset) -> list[str]:
    """The dataset's columns that the teacher reads (input_ids, attention_mask, token_type_ids, ...)."""
    columns = sorted(set(dataset.column_names) & teacher_inputs)
    if "input_ids" not in columns and "inputs_embeds" not in columns:
        raise ValueError(
            f"the dataset has no input_ids column (columns: {dataset.column_names}); the teacher cache is built "
            "from tokenised data: tokenise it first, as for training"
        )
    return columns


# ---- reading --------------------------------------------------------------------------------------------------------


class TeacherCache:
    """A finished teacher cache, memory-mapped: `TeacherCache(path)`.

    Attributes:
        path (`str`): the cache folder.
        info (`dict`): `cache_info.json`: fingerprints, settings, the teacher's facts, the row count.
        rows (`datasets.Dataset`): the stored rows, in the data's order.
    """

    def __init__(self, path: str):
        import datasets

        info_path = os.path.join(path, CACHE_INFO_NAME)
        if not os.path.isfile(info_path):
            raise FileNotFoundError(
                f"{path!r} is not a teacher cache (no {CACHE_INFO_NAME}); build one with `hf-distill cache` or "
                "build_teacher_cache()"
            )
        self.info = _read_info(path)
        if not self.info.get("complete"):
            raise CacheMismatchError(
                f"the teacher cache {path!r} is unfinished ({self.info.get('rows_done', 0)} of "
                f"{self.info['num_rows']} rows): run the same `hf-distill cache` command again to finish it"
            )
        if self.info.get("format_version") != FORMAT_VERSION:
            raise CacheMismatchError(
                f"the teacher cache {path!r} has format version {self.info.get('format_version')}, this hf_distill "
                f"reads version {FORMAT_VERSION}: build it again"
            )
        self.path = path
        shards = _shard_files(path)
        self.rows = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in shards])
        if len(self.rows) != self.info["num_rows"]:
            raise CacheMismatchError(
                f"the teacher cache {path!r} should hold {self.info['num_rows']} rows but its shards hold "
                f"{len(self.rows)}; build it again in an empty folder"
            )
        self._table = self.rows.with_format("arrow")

    @property
    def settings(self) -> dict:
        return self.info["settings"]

    @property
    def teacher(self) -> dict:
        """The teacher's [`~hf_distill.teacher.model_facts`], and the cache's `top_k` (None: all logits)."""
        return {
            **self.info["teacher"],
            "top_k": self.settings["top_k"],
            "logit_samples": self.settings.get("logit_samples"),
        }

    @property
    def hidden_layers(self) -> list[int]:
        return list(self.settings["hidden_layers"])

    def size_bytes(self) -> int:
        return sum(os.path.getsize(f) for f in _shard_files(self.path))

    def __len__(self) -> int:
        return len(self.rows)

    def check(self, *, teacher=None, tokenizer=None, dataset=None, columns: list[str] | None = None) -> None:
        """Raises [`CacheMismatchError`] naming what differs, if the cache was not built from these.

        Each of `teacher` (its weights), `tokenizer` and `dataset` (its teacher input `columns`, by default those the
        cache was built from) is checked when given.
        """
        fingerprints = self.info["fingerprints"]
        where = f"the teacher cache {self.path!r}"
        if dataset is not None:
            columns = columns or self.info["columns"]
            missing = [c for c in self.info["columns"] if c not in dataset.column_names]
            if missing or len(dataset) != self.info["num_rows"]:
                raise CacheMismatchError(
                    f"{where} was built from {self.info['num_rows']} rows with columns {self.info['columns']}, but "
                    f"this dataset has {len(dataset)} rows and columns {dataset.column_names}: build the cache from "
                    "this training data (the same files, tokenizer, max_length and preprocessing)"
                )
            if data_fingerprint(dataset, columns) != fingerprints["data"]:
                raise CacheMismatchError(
                    f"{where} was built from other data: the token ids of this training set differ from those it "
                    "stored (a different dataset, split, shuffle, tokenizer or max_length); build the cache again "
                    "from this training data"
                )
        if tokenizer is not None and fingerprints.get("tokenizer") not in (None, tokenizer_fingerprint(tokenizer)):
            raise CacheMismatchError(
                f"{where} was built with another tokenizer (its vocabulary, special tokens or padding side differ); "
                "build the cache with this tokenizer"
            )
        if teacher is not None and weights_fingerprint(teacher) != fingerprints["teacher"]:
            raise CacheMismatchError(
                f"{where} was built with other teacher weights (from {self.teacher['name_or_path']!r}); this teacher "
                f"({getattr(teacher, 'name_or_path', '') or type(teacher).__name__}) differs: build the cache with "
                "this teacher"
            )

    def outputs(self, indices: torch.Tensor, attention_mask: torch.Tensor | None, shape: torch.Size, device) -> Any:
        """The teacher's outputs for the rows `indices` of a batch of `shape` `(batch, seq_len)`, on `device`.

        Logits stored whole come back as logits `(batch, seq_len, classes)` (zeros at padding). A top-k cache's come
        back as [`~hf_distill.losses.TopKTargets`]: the ids `(batch, seq_len, k)` and log-probabilities at the
        temperature, nothing of the vocabulary's width; the soft-target loss reads them as k + 1 buckets (the top k
        and the tail, see [`~hf_distill.losses.top_k_buckets`]). Hidden states come back as a tuple indexed like
        `hidden_states`, with `None` for the layers not stored.
        """
        settings = self.settings
        index_list = indices.detach().cpu().tolist()
        table = self._table[index_list]
        stored = table.column("index").to_pylist()
        if stored != index_list:
            raise CacheMismatchError(f"the teacher cache {self.path!r} returned rows {stored} for {index_list}")
        lengths = torch.tensor(table.column("num_positions").to_pylist())
        positions = _positions(attention_mask, shape, lengths, self.path)
        outputs = {}
        for name, spec in settings["logit_fields"].items():
            classes = spec["classes"]
            per_position = spec["per_position"]
            if settings["top_k"]:
                k = (settings["top_k"],)
                ids = _flat(table, f"{name}.topk_ids", torch.long).reshape(-1, *k)
                logprobs = _flat(table, f"{name}.topk_logprobs", torch.float32).reshape(-1, *k)
                if per_position:
                    ids, logprobs = _scatter(ids, positions, shape, k), _scatter(logprobs, positions, shape, k)
                outputs[name] = TopKTargets(ids, logprobs, classes)
                continue
            values = _flat(table, name, torch.float32)
            width = (classes,) if classes else ()
            if per_position:
                outputs[name] = _scatter(values.reshape(-1, *width), positions, shape, width)
            else:
                outputs[name] = values.reshape(len(index_list), *width)
        if settings["hidden_layers"]:
            hidden = [None] * (self.teacher["num_hidden_layers"] + 1)
            width = (self.teacher["hidden_size"],)
            for layer in settings["hidden_layers"]:
                values = _flat(table, f"hidden_states.{layer}", torch.float32).reshape(-1, *width)
                hidden[layer] = _scatter(values, positions, shape, width)
            outputs["hidden_states"] = tuple(hidden)
        return ModelOutput(**{k: _to(v, device) for k, v in outputs.items()})


class CacheIndexCollator:
    """Wraps a data collator so that each example's cache row index reaches the batch, whatever the collator keeps
    (custom collators often build the batch from the keys they know)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features: list[dict]) -> dict:
        if not features or CACHE_INDEX_COLUMN not in features[0]:
            return self.collator(features)
        indices = [f[CACHE_INDEX_COLUMN] for f in features]
        batch = self.collator([{k: v for k, v in f.items() if k != CACHE_INDEX_COLUMN} for f in features])
        batch[CACHE_INDEX_COLUMN] = torch.tensor(indices, dtype=torch.long)
        return batch


def check_collator(collator, dataset) -> None:
    """Refuses a collator that masks tokens at random each time an example is drawn (masked-LM training on unmasked
    rows): the teacher's outputs then depend on the draw, so they cannot be stored once."""
    if not getattr(collator, "mlm", False):
        return
    if isinstance(collator, LanguageModelingCollator) and "labels" in dataset.column_names:
        return  # rows masked once beforehand: padded as they are
    raise ValueError(
        "a teacher cache cannot serve masked-LM training whose collator masks tokens at random each time an example "
        "is drawn (the teacher's outputs depend on the mask); mask the training data once beforehand (rows with "
        "input_ids and labels, see hf_distill.tasks.language_modeling.mask_once), or distil from the live teacher"
    )


# ---- what a cache can serve: derived from the loss terms' declarations ----------------------------------------------


def default_hidden_layers(args, num_teacher_layers: int, num_student_layers) -> list[int]:
    """The teacher hidden states a cache stores by default for the recipe `args`: those its active loss terms compare
    (the teacher side of the layer map), `[]` when none compares hidden states. `num_student_layers` may be a function
    (called only when needed)."""
    return teacher_hidden_layers(args, num_teacher_layers, num_student_layers)


def check_cache_serves(cache: TeacherCache, terms: list[LossTerm], args, layer_map, across_vocabularies=None) -> None:
    """Raises `ValueError` naming the setting to change when `cache` cannot serve one of the active `terms`: a term
    that needs what no cache stores (attention maps, query/key/value projections), all logits from a top-k cache,
    top-k probabilities at another temperature, or hidden states the cache does not hold; or, for a student of
    another tokenizer (`across_vocabularies`: the task), a top-k cache of distributions over the teacher's
    vocabulary, which the cross-vocabulary losses compare whole."""
    settings = cache.settings
    task = across_vocabularies
    if task and task.vocabulary_outputs and settings["top_k"] and "kd" in {term.name for term in terms}:
        raise ValueError(
            f"the teacher cache keeps {settings['top_k']} classes per position (top_k / logit_samples), but a student "
            f"of another tokenizer learns a {task.name} teacher's distributions over its whole vocabulary "
            f"(cross_tokenizer_loss={args.cross_tokenizer_loss!r} compares them whole): build the cache with all "
            "logits (no top_k), or train with the live teacher"
        )
    for term in terms:
        if not term.cacheable:
            missing = " and ".join(
                NEED_NAMES[need] for need in sorted(term.needs - {"labels", "logits", "hidden_states"})
            )
            raise ValueError(
                f"{term.weight_field} > 0 needs the teacher's {missing}, which a teacher cache does not store; set "
                f"{term.weight_field}=0 or train with the live teacher (no teacher_cache)"
            )
        if settings["top_k"] and term.cache_logits == "all":
            raise ValueError(
                f"{term.weight_field} > 0 compares raw logits, which a top-k cache (top_k={settings['top_k']}) does "
                f"not keep; set {term.weight_field}=0 or build the cache with all logits (no top_k)"
            )
    if settings["top_k"] and any(term.cache_logits == "top_k" for term in terms):
        divergence = getattr(args, "divergence", "forward_kl")
        if settings.get("logit_samples") and divergence != "forward_kl":
            raise ValueError(
                f"the teacher cache holds sampled frequencies (logit_samples={settings['logit_samples']}): the "
                f"forward KL's gradient from them is unbiased, divergence={divergence!r}'s is not; use "
                "divergence='forward_kl', or a top-k cache"
            )
        if not math.isclose(settings["temperature"], args.temperature):
            raise ValueError(
                f"the teacher cache stores top-{settings['top_k']} probabilities at temperature "
                f"{settings['temperature']}, but this run's temperature is {args.temperature}: use the same "
                "temperature, or build the cache again"
            )
    users = [term.weight_field for term in terms if "hidden_states" in term.needs]
    if users:
        needed = sorted({t for t, _ in layer_map.hidden_state_indices()})
        missing = [layer for layer in needed if layer not in cache.hidden_layers]
        if missing:
            raise ValueError(
                f"{' and '.join(users)} > 0 (layer_map {layer_map.spec()}) need teacher hidden states {needed}, but "
                f"the teacher cache holds {cache.hidden_layers}; build it with hidden_layers="
                f"'{','.join(map(str, needed))}'"
            )


def _to(value, device):
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value.to(device) if value is not None else None


def _flat(table: pa.Table, column: str, dtype: torch.dtype) -> torch.Tensor:
    array = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return torch.from_numpy(array.astype(np.float32 if dtype.is_floating_point else np.int64))


def _positions(attention_mask, shape, lengths: torch.Tensor, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of each stored position in the batch: its real tokens, in order."""
    if attention_mask is None:
        mask = torch.ones(shape, dtype=torch.bool)
    else:
        mask = attention_mask.detach().cpu().bool()
    real = mask.sum(1)
    if not torch.equal(real, lengths):
        raise CacheMismatchError(
            f"the teacher cache {path!r} stored {lengths.tolist()} positions for these examples, but the batch has "
            f"{real.tolist()} real tokens: the data differ from those the cache was built from (max_length?)"
        )
    return mask.nonzero(as_tuple=True)


def _scatter(values: torch.Tensor, positions, shape, width: tuple) -> torch.Tensor:
    out = torch.zeros(*shape, *width, dtype=values.dtype)
    out[positions] = values
    return out


def _shard_files(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, _SHARDS, "shard-*.arrow")))


# ---- building -------------------------------------------------------------------------------------------------------


def build_teacher_cache(
    teacher: PreTrainedModel,
    dataset,
    args: CacheArguments,
    *,
    tokenizer=None,
    data_collator=None,
    temperature: float | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TeacherCache:
    """Runs `teacher` once over `dataset` (a tokenised `datasets.Dataset`) and stores its outputs in `args.cache_dir`.

    Streams: one batch is in memory at a time, written to shard files of `args.shard_size` rows; when the folder
    holds an unfinished cache of the same teacher, data and settings, the build resumes after its last full shard.

    Args:
        teacher (`PreTrainedModel`): the teacher (a task model: `*ForSequenceClassification`, `*ForCausalLM`, ...).
        dataset (`datasets.Dataset`): the training data, tokenised as for training (its order is the cache's).
        args ([`CacheArguments`]): what is stored and how, the fields of `hf-distill cache`'s flags:
            - `cache_dir`: the cache folder.
            - `top_k`: store the k most likely classes per position instead of all logits.
            - `logit_samples`: instead of the top k, store N draws per position from the teacher's distribution at
              `temperature` (with replacement; seeded by the row, so a resumed build draws the same): the drawn
              classes with their frequencies count / N, then the likeliest classes not drawn at frequency 0, in N
              slots. Read back like a top-k cache ([`~hf_distill.losses.TopKTargets`]); the frequencies are on
              average the teacher's probabilities, so the forward KL's gradient from them is unbiased.
            - `hidden_layers`: teacher hidden states to store (0 is the embeddings): `"2,4,6"`, `"all"`, or in
              Python a list of layer numbers (default: none).
            - `hidden_dtype`: `float16` (half the size) or `float32` (exact).
            - `cache_batch_size`: batch size of the teacher's pass.
            - `shard_size`: rows per shard.
        tokenizer (*optional*): the tokenizer, fingerprinted with the cache, and used to pad batches.
        data_collator (*optional*): pads batches (default: `DataCollatorWithPadding(tokenizer)`).
        temperature (`float`, *optional*): the distillation temperature (the training recipe's, a
            [`DistillationConfig`] field); needed with `top_k` and `logit_samples` (the stored probabilities are at
            this temperature, and training must use the same).
        device (*optional*): where the teacher runs (default: CUDA when available, else CPU).
        progress (`bool`): show a progress bar.

    Returns:
        [`TeacherCache`]: the finished cache.

    Raises:
        `TypeError`: `args` is not a [`CacheArguments`].
        `ValueError`: a setting the teacher cannot serve (naming it), or a folder that holds something else.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"dataset must be a tokenised datasets.Dataset, got {type(dataset).__name__}")
    if not isinstance(args, CacheArguments):
        raise TypeError(
            f"build_teacher_cache takes its settings as a CacheArguments, got {type(args).__name__}: "
            "build_teacher_cache(teacher, dataset, CacheArguments(cache_dir=..., ...))"
        )
    cache_dir = args.cache_dir
    task = task_for(teacher)
    if data_collator is not None:
        check_collator(data_collator, dataset)
    settings = _settings(teacher, task, args, temperature)
    columns = teacher_input_columns(input_names(teacher), dataset)
    info = {
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "num_rows": len(dataset),
        "columns": columns,
        "settings": settings,
        "teacher": model_facts(teacher),
        "fingerprints": {
            "teacher": weights_fingerprint(teacher),
            "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
            "data": data_fingerprint(dataset, columns),
        },
    }
    check_cache_folder(cache_dir)
    start = _resume_point(cache_dir, info)
    os.makedirs(os.path.join(cache_dir, _SHARDS), exist_ok=True)
    _write_info(cache_dir, {**info, "complete": False, "rows_done": start})

    if data_collator is None:
        data_collator = DataCollatorWithPadding(tokenizer) if tokenizer is not None else default_data_collator
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    was_training = teacher.training
    teacher.eval().to(device)
    need_hidden = bool(settings["hidden_layers"])

    def forward(batch: dict, rows: str):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            return teacher(**batch, output_hidden_states=need_hidden, return_dict=True)

    try:
        write_rows(
            cache_dir, info, dataset, start, forward, data_collator, args.cache_batch_size, args.shard_size, progress
        )
    finally:
        teacher.train(was_training)
    return TeacherCache(cache_dir)


def write_rows(
    cache_dir: str, info: dict, dataset, start: int, forward, data_collator, batch_size: int, shard_size: int,
    progress: bool = True,
) -> None:  # fmt: skip
    """Writes the teacher's outputs for rows `start ..` of `dataset` into the shards of `cache_dir`, then marks the
    cache complete. `forward(batch, rows)` gives the outputs of a padded batch of the cache's input columns (`rows`
    names them for errors); per-position outputs are kept at the real tokens. A shard is renamed into place when
    whole, and `cache_info.json` records the rows done: an interruption keeps the finished shards, and the same call
    resumes after them."""
    settings, columns = info["settings"], info["columns"]
    hidden_torch_dtype, hidden_arrow_dtype = _HIDDEN_DTYPES[settings["hidden_dtype"]]
    schema = _schema(settings, hidden_arrow_dtype)
    source = dataset.select_columns(columns)
    total_batches = math.ceil((len(dataset) - start) / batch_size)
    bar = tqdm(total=len(dataset), initial=start, desc="Teacher cache", disable=not progress, unit="ex")
    shard_tmp = os.path.join(cache_dir, _SHARDS, "shard-in-progress.arrow.tmp")
    writer = sink = shard_start = None
    try:
        row = start
        for _ in range(total_batches):
            end = min(row + batch_size, len(dataset))
            batch = data_collator([source[i] for i in range(row, end)])
            batch = {k: v for k, v in batch.items() if k in columns}
            out = forward(batch, f"rows {row}-{end - 1}")
            shape = (batch["input_ids"] if "input_ids" in batch else batch["inputs_embeds"]).shape[:2]
            mask = batch.get("attention_mask")
            mask = mask.bool() if mask is not None else torch.ones(shape, dtype=torch.bool)
            record = _record_batch(out, mask, row, settings, hidden_torch_dtype)
            if writer is None:
                shard_start = row
                sink = pa.OSFile(shard_tmp, "wb")
                writer = pa.ipc.new_stream(sink, schema)
            writer.write_batch(pa.record_batch(record, schema=schema))
            bar.update(end - row)
            row = end
            if row - shard_start >= shard_size or row == len(dataset):
                writer.close()
                sink.close()
                writer = sink = None
                os.replace(shard_tmp, os.path.join(cache_dir, _SHARDS, f"shard-{shard_start:010d}-{row:010d}.arrow"))
                _write_info(cache_dir, {**info, "complete": False, "rows_done": row})
    finally:
        bar.close()
        # Interrupted, at whatever moment (even between opening the shard file and starting its stream, or by a
        # SIGKILL of an earlier run): the unfinished shard is dropped, the finished ones are kept.
        for handle in (writer, sink):
            if handle is not None:
                handle.close()
        if os.path.exists(shard_tmp):
            os.remove(shard_tmp)
    _write_info(cache_dir, {**info, "complete": True, "rows_done": len(dataset)})


def _settings(teacher, task: Task, args: CacheArguments, temperature) -> dict:
    num_layers = teacher.config.num_hidden_layers
    hidden_layers = args.hidden_layers
    if hidden_layers == "all":
        hidden_layers = list(range(num_layers + 1))
    elif isinstance(hidden_layers, str):
        hidden_layers = [int(x) for x in hidden_layers.split(",") if x.strip()]
    hidden_layers = sorted(set(hidden_layers or []))
    bad = [layer for layer in hidden_layers if not 0 <= layer <= num_layers]
    if bad:
        raise ValueError(
            f"hidden_layers {bad} are out of range: the teacher's hidden states are numbered 0 (embeddings) to "
            f"{num_layers}"
        )
    if args.hidden_dtype not in _HIDDEN_DTYPES:
        raise ValueError(f"hidden_dtype must be one of {tuple(_HIDDEN_DTYPES)}, got {args.hidden_dtype!r}")
    fields = task.cached_logits(teacher)
    if args.top_k is not None and args.logit_samples is not None:
        raise ValueError(
            f"top_k={args.top_k} and logit_samples={args.logit_samples} are two ways of keeping part of the "
            "distribution: pass one of them"
        )
    name = "top_k" if args.logit_samples is None else "logit_samples"
    slots = args.top_k if args.logit_samples is None else args.logit_samples
    if slots is not None:
        if task.is_regression or not all(spec["classes"] for spec in fields.values()):
            raise ValueError(
                f"{name} caches distributions over classes or the vocabulary; {task.name} outputs are stored whole: "
                f"leave {name} unset"
            )
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {slots!r}")
        if temperature is None or temperature <= 0:
            raise ValueError(
                f"{name} needs the distillation temperature (> 0): the stored probabilities are softmax(logits / T); "
                "pass temperature=... (the same as the training's)"
            )
    top_k = min(slots, fields["logits"]["classes"]) if slots is not None else None
    engine = getattr(teacher, "distillation_engine", None)  # onnxruntime (`hf_distill.engines`): its outputs differ
    return {
        **({"engine": engine["engine"]} if engine else {}),
        "top_k": top_k,  # the slots stored per position (top k, or the drawn classes)
        "logit_samples": args.logit_samples,
        "temperature": float(temperature) if top_k else None,
        "hidden_layers": hidden_layers,
        "hidden_dtype": args.hidden_dtype,
        "logit_fields": fields,
    }


def _draw_classes(logits: torch.Tensor, settings: dict, start: int, rows_per_pass: int = 512):
    """`(log-frequencies, ids)`, each `(items, slots)`: `logit_samples` draws per item from softmax(logits / T), with
    replacement, by a generator seeded with the batch's first row (a resumed build draws the same). The drawn classes
    come first, most drawn first; the remaining slots hold the likeliest classes not drawn, at frequency 0 (stored as
    log 1e-30): distinct ids in every slot. `rows_per_pass` items at a time bound the vocabulary-wide temporaries."""
    draws, slots = settings["logit_samples"], settings["top_k"]
    generator = torch.Generator(device=logits.device).manual_seed(start)
    values, ids = [], []
    for chunk in logits.reshape(-1, logits.shape[-1]).split(rows_per_pass):
        probs = torch.softmax(chunk / settings["temperature"], dim=-1)
        drawn = torch.multinomial(probs, draws, replacement=True, generator=generator)
        counts = torch.zeros_like(probs).scatter_add_(-1, drawn, torch.ones_like(drawn, dtype=probs.dtype))
        # Whole counts first; the teacher's probability (< 1) orders the classes of one count among themselves.
        _, chunk_ids = (counts + probs).topk(slots, dim=-1)
        frequencies = counts.gather(-1, chunk_ids) / draws
        values.append(frequencies.log().clamp_min(LOG_FLOOR))
        ids.append(chunk_ids)
    shape = (*logits.shape[:-1], slots)
    return torch.cat(values).reshape(shape), torch.cat(ids).reshape(shape)


def _schema(settings: dict, hidden_dtype: pa.DataType) -> pa.Schema:
    columns = [("index", pa.int64()), ("num_positions", pa.int32())]
    for name in settings["logit_fields"]:
        if settings["top_k"]:
            columns += [(f"{name}.topk_ids", pa.list_(pa.int32())), (f"{name}.topk_logprobs", pa.list_(pa.float32()))]
        else:
            columns.append((name, pa.list_(pa.float32())))
    columns += [(f"hidden_states.{layer}", pa.list_(hidden_dtype)) for layer in settings["hidden_layers"]]
    return pa.schema(columns)


def _record_batch(out, mask: torch.Tensor, start: int, settings: dict, hidden_dtype: torch.dtype) -> dict:
    """One Arrow column per stored output; per-position outputs are kept at the real tokens (`mask`) only."""
    batch_size = mask.shape[0]
    lengths = mask.sum(1)
    record = {
        "index": pa.array(np.arange(start, start + batch_size, dtype=np.int64)),
        "num_positions": pa.array(lengths.cpu().numpy().astype(np.int32)),
    }

    def lists(values: torch.Tensor, per_row: torch.Tensor, arrow_type) -> pa.Array:
        offsets = np.concatenate([[0], np.cumsum(per_row.cpu().numpy())]).astype(np.int32)
        flat = values.reshape(-1).cpu().numpy()
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=arrow_type))

    for name, spec in settings["logit_fields"].items():
        if isinstance(out[name], TopKTargets):  # already the top k (a server teacher): kept as given
            k, mask_cpu = settings["top_k"], mask.to(out[name].ids.device)
            ids, values = out[name].ids[mask_cpu][:, :k], out[name].logprobs[mask_cpu][:, :k]
            record[f"{name}.topk_ids"] = lists(ids.to(torch.int32), lengths * k, pa.int32())
            record[f"{name}.topk_logprobs"] = lists(values.float(), lengths * k, pa.float32())
            continue
        logits = out[name].float()
        if spec["per_position"]:
            logits = logits[mask.to(logits.device)]  # (real tokens, classes) or (real tokens,)
            items_per_row = lengths
        else:
            items_per_row = torch.ones(batch_size, dtype=torch.long)
        if settings["top_k"]:
            k = settings["top_k"]
            if settings.get("logit_samples"):
                values, ids = _draw_classes(logits, settings, start)
            else:
                logprobs = torch.log_softmax(logits / settings["temperature"], dim=-1)
                values, ids = logprobs.topk(k, dim=-1)
            record[f"{name}.topk_ids"] = lists(ids.to(torch.int32), items_per_row * k, pa.int32())
            record[f"{name}.topk_logprobs"] = lists(values, items_per_row * k, pa.float32())
        else:
            width = logits.shape[-1] if logits.dim() > 1 else 1
            record[name] = lists(logits, items_per_row * width, pa.float32())
    arrow_hidden = pa.float16() if hidden_dtype == torch.float16 else pa.float32()
    for layer in settings["hidden_layers"]:
        hidden = out.hidden_states[layer][mask.to(out.hidden_states[layer].device)].to(hidden_dtype)
        record[f"hidden_states.{layer}"] = lists(hidden, lengths * hidden.shape[-1], arrow_hidden)
    return record


def _resume_point(cache_dir: str, info: dict) -> int:
    """The row to start from: after the finished shards of an unfinished cache of the same teacher, data and
    settings; 0 for an empty folder. Anything else there is refused, not overwritten."""
    info_path = os.path.join(cache_dir, CACHE_INFO_NAME)
    shards = _shard_files(cache_dir)
    if not os.path.isfile(info_path):
        if shards:
            raise CacheMismatchError(
                f"{cache_dir!r} holds shard files but no {CACHE_INFO_NAME}; give an empty folder for a new cache"
            )
        return 0
    previous = _read_info(cache_dir)
    same = all(previous.get(key) == info[key] for key in ("format_version", "num_rows", "columns", "settings"))
    same = same and previous.get("fingerprints") == info["fingerprints"]
    if not same:
        raise CacheMismatchError(
            f"{cache_dir!r} already holds a teacher cache of another teacher, tokenizer, data or settings; it is "
            "left as it is: remove it, or give another cache_dir"
        )
    if previous.get("complete"):
        raise CacheMismatchError(f"{cache_dir!r} already holds this finished teacher cache; use it as it is")
    ends = [int(os.path.basename(f).split("-")[2].split(".")[0]) for f in shards]
    start = max(ends, default=0)
    if start:
        logger.info(f"Resuming the teacher cache in {cache_dir} at row {start} of {info['num_rows']}")
    return start


def _read_info(cache_dir: str) -> dict:
    """`cache_info.json` of `cache_dir`, or a one-line error naming it when it is not a cache's record."""
    info_path = os.path.join(cache_dir, CACHE_INFO_NAME)
    try:
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (ValueError, UnicodeDecodeError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
    else:
        if isinstance(info, dict) and all(key in info for key in ("format_version", "num_rows", "settings")):
            return info
        problem = "no format_version, num_rows and settings"
    raise CacheMismatchError(
        f"{info_path} is not a teacher cache record ({problem}); the folder is left as it is: build it again in an "
        f"empty folder (remove {cache_dir}, or give another cache_dir)"
    )


def check_cache_folder(cache_dir: str) -> None:
    """Refuses, before anything is written, a path that is a file or a non-empty folder that is not a teacher cache:
    a cache is built in a new or empty folder, or resumed in the folder of an unfinished one."""
    if not os.path.exists(cache_dir):
        return
    if not os.path.isdir(cache_dir):
        raise CacheMismatchError(f"cache_dir {cache_dir!r} is a file, not a folder: give a new or empty folder")
    if os.path.isfile(os.path.join(cache_dir, CACHE_INFO_NAME)):
        return  # a cache: _resume_point decides whether it can be resumed
    others = sorted(name for name in os.listdir(cache_dir) if name not in (_SHARDS, CACHE_INFO_NAME + ".tmp"))
    if others:
        shown = ", ".join(others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6 else "")
        raise CacheMismatchError(
            f"cache_dir {cache_dir!r} holds {shown} and no {CACHE_INFO_NAME}: it is not a teacher cache, and nothing "
            "was written into it. Give a new or empty folder for the cache (cache_dir=...)"
        )


def _write_info(cache_dir: str, info: dict) -> None:
    tmp = os.path.join(cache_dir, CACHE_INFO_NAME + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(info, handle, indent=2)
    os.replace(tmp, os.path.join(cache_dir, CACHE_INFO_NAME))
