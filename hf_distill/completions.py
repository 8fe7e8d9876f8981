"""On-policy and sequence-level distillation of causal language models: training batches whose completions a model
generates.

- On-policy (GKD, Agarwal et al. 2024): in a fraction `lmbda` of the training batches the student completes the
  prompts of the batch itself, and the teacher scores those completions: the student learns from the teacher on the
  sequences it will actually produce, not only on the dataset's.
- Sequence-level KD (Kim & Rush 2016), `seq_kd`: in the other batches the teacher completes the prompts, and the
  student learns the teacher's distributions on the teacher's own sequences.

The prompt of an example is the part of it that is not a target: the tokens before its first label (a
prompt/completion example, whose prompt TRL and `DataCollatorForCompletionOnlyLM`-style data leave at -100), or,
for plain text (every token a target), its first `prompt_length` tokens. A completed batch holds the prompt followed
by the generated tokens up to and including the first end-of-sequence token, right-padded as ordinary batches are (so
positions are those of training and of the teacher's scoring); its labels are the generated tokens only (prompt and
padding at -100), so every loss term of the causal-LM task counts the generated tokens only.

Which batches are completed, and by whom, is drawn from the seed, the optimizer step and the batch's place in it:
a run is reproducible under its seed, and a resumed run draws what the uninterrupted one drew. The sampling of the
tokens uses its own generator, seeded the same way, and leaves the training's random state alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig

from .cross_tokenizer import TEACHER_PREFIX, teacher_inputs
from .tasks.base import IGNORE_INDEX

# The configuration fields of this module: refused together with a teacher cache, named in the error.
GENERATION_FIELDS = ("lmbda", "seq_kd")


def check_completion_settings(args, teacher_cache=None, task=None) -> None:
    """Refuses on-policy / sequence-level settings where they cannot work, at start-up.

    Raises:
        `ValueError`: with a teacher cache (the teacher must score sequences that exist only once generated), or for
            a task other than causal language modelling.
    """
    if not uses_completions(args):
        return
    given = _settings_given(args)
    if teacher_cache is not None:
        raise ValueError(
            f"on-policy / sequence-level distillation ({given}) needs a live teacher to generate or score new "
            "sequences, but teacher_cache is set (it holds the teacher's outputs on the dataset's tokens only): drop "
            "teacher_cache, or set lmbda=0 and seq_kd=False"
        )
    if task is not None and task.name != "causal-lm":
        raise ValueError(
            f"on-policy / sequence-level distillation ({given}) generates completions, which only a causal language "
            f"model does; this student is {task.name}: set lmbda=0 and seq_kd=False"
        )


def uses_completions(args) -> bool:
    return bool(getattr(args, "lmbda", 0) or getattr(args, "seq_kd", False))


def _settings_given(args) -> str:
    """The completion settings that are on, as an error message names them (`lmbda=0.5, seq_kd=True`)."""
    return ", ".join(f"{name}={getattr(args, name)!r}" for name in GENERATION_FIELDS if getattr(args, name))


@dataclass
class TextRoundTrip:
    """Across tokenizers: a completion is decoded to text and tokenised again for the model that did not write it.

    Attributes:
        tokenizers ([`~hf_distill.cross_tokenizer.TokenizerPair`]): the teacher's and the student's tokenizers.
        configs (`dict[str, GenerationConfig]`): each model's generation settings (its own pad and end-of-sequence
            ids), under `"student"` and `"teacher"`.
        collate (`Callable`): the trainer's paired collator, which batches the completed pairs and aligns them.
    """

    tokenizers: Any
    configs: dict[str, GenerationConfig]
    collate: Callable[[list[dict]], dict]


class CompletionSource:
    """Decides, batch by batch, whether the student, the teacher or nobody completes the batch's prompts, and builds
    the completed batch. Built from a [`DistillationConfig`] by [`CompletionSource.from_args`] (None when unused).

    With a student of another tokenizer (`across`), the writer's completion is decoded to text and the other model
    reads that text in its own tokens ([`CompletionSource.complete`])."""

    def __init__(
        self,
        lmbda: float,
        seq_kd: bool,
        generation_config: GenerationConfig,
        prompt_length: int,
        pad_token_id: int,
        seed: int = 0,
        across: TextRoundTrip | None = None,
    ):
        self.lmbda = lmbda
        self.seq_kd = seq_kd
        self.generation_config = generation_config
        self.prompt_length = prompt_length
        self.pad_token_id = pad_token_id
        self.seed = seed
        self.across = across

    @classmethod
    def from_args(
        cls,
        args,
        model: nn.Module,
        pad_token_id: int | None,
        eos_token_id: int | None = None,
        tokenizers=None,
        teacher: nn.Module | None = None,
        collate: Callable | None = None,
    ) -> CompletionSource | None:
        """The completion source of `args` for the student `model` (None without `lmbda` or `seq_kd`); `pad_token_id`
        and `eos_token_id` are the tokenizer's, used where the model's generation config names none. With
        `tokenizers` (a student of another tokenizer), the teacher's own generation settings too, and the paired
        `collate` that batches completed pairs.

        Raises:
            `ValueError`: no end-of-sequence token anywhere (a completion could never end: every one would run to
            `max_new_tokens`, and the student would learn never to stop), or no padding token.
        """
        if not uses_completions(args):
            return None
        config = _generation_config(args, model, pad_token_id, eos_token_id)
        across = None
        if tokenizers is not None:
            configs = {
                "student": config,
                "teacher": _generation_config(
                    args, teacher, tokenizers.teacher.pad_token_id, tokenizers.teacher.eos_token_id
                ),
            }
            across = TextRoundTrip(tokenizers, configs, collate)
        return cls(args.lmbda, args.seq_kd, config, args.prompt_length, config.pad_token_id, args.seed, across)

    def choose(self, step: int, index: int) -> Literal["student", "teacher"] | None:
        """Who completes the `index`-th batch of optimizer step `step`: the student with probability `lmbda`, else
        the teacher with `seq_kd`, else nobody (the dataset's batch as it is)."""
        draw = np.random.default_rng([self.seed, step, index]).random()
        if draw < self.lmbda:
            return "student"
        return "teacher" if self.seq_kd else None

    def complete(
        self, batch: Mapping, step: int, index: int, student: nn.Module, teacher: nn.Module | None
    ) -> tuple[dict, str | None]:
        """The batch completed by the model [`choose`] names, and that name (the batch unchanged and None when
        nobody completes it)."""
        who = self.choose(step, index)
        if who is None:
            return dict(batch), None
        model = student if who == "student" else teacher
        device = next(model.parameters()).device
        if self.across is not None:
            return {k: v.to(device) for k, v in self._complete_as_text(batch, who, model, step, index).items()}, who
        prompts = prompts_of(batch, self.prompt_length)
        completions = self._generate(model, prompts, self.generation_config, step, index)
        eos = self.generation_config.eos_token_id
        completed = completion_batch(prompts, completions, eos, self.pad_token_id)
        return {k: v.to(device) for k, v in completed.items()}, who

    def _generate(
        self, model: nn.Module, prompts: list[torch.Tensor], config: GenerationConfig, step: int, index: int
    ) -> torch.Tensor:
        """`(batch, new_tokens)`: `model`'s completions of the left-padded `prompts`, sampled with a generator seeded
        by the seed, the step and the batch (the training's random state is left alone)."""
        device = next(model.parameters()).device
        prompt_ids, prompt_mask = left_pad(prompts, config.pad_token_id, device)
        generator_seed = int(np.random.default_rng([self.seed, step, index, 1]).integers(2**62))
        devices = [device] if device.type == "cuda" else []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(generator_seed)
                sequences = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
        finally:
            model.train(was_training)
        return sequences[:, prompt_ids.shape[1] :]

    def _complete_as_text(self, batch: Mapping, who: str, model: nn.Module, step: int, index: int) -> dict:
        """Across tokenizers: `who` completes the prompts of its own side of the batch; each completion, cut after its
        first end-of-sequence token, is decoded to text, and the other model reads the prompt's text and the
        completion's text in its own tokens (its own end-of-sequence token after a completion that ended). The writer
        keeps the tokens it generated (on-policy: what it would produce), spanning the text their decoding spells.
        Both sides, with their spans of the completion's characters, go through the paired collator, which pads them
        and aligns them as any paired batch."""
        tokenizers, configs = self.across.tokenizers, self.across.configs
        other = "teacher" if who == "student" else "student"
        writer = tokenizers.student if who == "student" else tokenizers.teacher
        reader = tokenizers.teacher if who == "student" else tokenizers.student
        prompts = prompts_of(batch if who == "student" else teacher_inputs(batch), self.prompt_length)
        completions = self._generate(model, prompts, configs[who], step, index).cpu()
        features = []
        for prompt, completion in zip(prompts, completions):
            tokens, ended = _until_stop(completion.tolist(), configs[who].eos_token_id)
            text, spans = decoded_spans(writer, tokens)
            written = _completed_row(prompt.tolist(), tokens, spans, _first_stop(configs[who]) if ended else None)
            theirs = reader(text, add_special_tokens=False, return_offsets_mapping=True)
            read = _completed_row(
                reader(writer.decode(prompt, skip_special_tokens=True))["input_ids"],
                theirs["input_ids"],
                [list(span) for span in theirs["offset_mapping"]],
                _first_stop(configs[other]) if ended else None,
            )
            student, teacher = (written, read) if who == "student" else (read, written)
            feature = {k: v for k, v in student.items() if k != "spans"}
            feature.update({f"{TEACHER_PREFIX}{k}": v for k, v in teacher.items() if k != "spans"})
            features.append({**feature, "align_spans": student["spans"], "align_teacher_spans": teacher["spans"]})
        return dict(self.across.collate(features))


def prompts_of(batch: Mapping, prompt_length: int) -> list[torch.Tensor]:
    """The prompt of each example of a causal-LM batch: its real tokens (attention mask) before its first target
    (labels not -100), or its first `prompt_length` real tokens when its targets start at its first token (plain
    text). At least one token each, at most the whole example."""
    input_ids = batch["input_ids"]
    attention = batch.get("attention_mask")
    attention = torch.ones_like(input_ids, dtype=torch.bool) if attention is None else attention.bool()
    labels = batch.get("labels")
    prompts = []
    for row in range(input_ids.shape[0]):
        real = input_ids[row][attention[row]]
        first = 0
        if labels is not None:
            targets = labels[row][attention[row]] != IGNORE_INDEX
            first = int(targets.int().argmax()) if targets.any() else len(real)
        length = first if first > 0 else prompt_length
        prompts.append(real[: max(1, min(length, len(real)))])
    return prompts


def left_pad(rows: list[torch.Tensor], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` left-padded into one `(batch, longest)` tensor of ids and its attention mask (what `generate` reads)."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, longest - len(row) :] = row
        mask[i, longest - len(row) :] = 1
    return ids, mask


def completion_batch(
    prompts: list[torch.Tensor],
    completions: torch.Tensor,
    eos_token_id: int | list[int] | None,
    pad_token_id: int,
) -> dict[str, torch.Tensor]:
    """A training batch of prompts followed by their generated completions.

    Each completion is cut after its first end-of-sequence token (kept: it is a token the model chose); what
    `generate` wrote after it is padding. The rows are right-padded with `pad_token_id`; `labels` are the completion
    tokens, -100 on the prompt and the padding.

    Args:
        prompts: each example's prompt tokens (no padding).
        completions: `(batch, new_tokens)`, the generated tokens after the prompts.
        eos_token_id: the end-of-sequence id(s); None: completions run to their full length.
        pad_token_id: the padding id.

    Returns:
        `dict` with `input_ids`, `attention_mask` and `labels`, each `(batch, longest)` on the CPU.
    """
    stops = [] if eos_token_id is None else eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    rows, targets = [], []
    for prompt, completion in zip(prompts, completions):
        completion = completion.cpu()
        ended = torch.isin(completion, torch.tensor(stops, dtype=completion.dtype))
        length = int(ended.int().argmax()) + 1 if ended.any() else len(completion)
        rows.append(torch.cat([prompt.cpu(), completion[:length]]))
        targets.append(torch.cat([torch.full((len(prompt),), IGNORE_INDEX), completion[:length]]))
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, (row, target) in enumerate(zip(rows, targets)):
        input_ids[i, : len(row)] = row
        labels[i, : len(row)] = target
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _generation_config(
    args, model: nn.Module, pad_token_id: int | None, eos_token_id: int | None = None
) -> GenerationConfig:
    """The generation settings of `args` for `model`: its end-of-sequence id(s) (the tokenizer's `eos_token_id`
    where neither its generation config nor its config names one), `pad_token_id` (default: the first
    end-of-sequence id)."""
    own = getattr(model, "generation_config", None)
    eos = own.eos_token_id if own is not None else None
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        eos = eos_token_id
    if eos is None or eos == []:
        given = _settings_given(args)
        raise ValueError(
            f"on-policy / sequence-level distillation ({given}) ends each completion at the end-of-sequence "
            "token, but neither the tokenizer, nor the model's config or generation config names one: every "
            "completion would run to max_new_tokens and the student would learn never to stop. Give the tokenizer "
            "an eos_token, or set model.generation_config.eos_token_id"
        )
    if pad_token_id is None:
        pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
    sample = args.generation_temperature > 0
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=sample,
        temperature=args.generation_temperature if sample else None,
        top_p=args.top_p if sample else None,
        top_k=0 if sample else None,  # no top-k cut: the distribution, or its top_p nucleus
        pad_token_id=pad_token_id,
        eos_token_id=eos,
        use_cache=not args.gradient_checkpointing,
    )


def _stops(eos_token_id) -> list[int]:
    if eos_token_id is None:
        return []
    return list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]


def _first_stop(config: GenerationConfig) -> int | None:
    stops = _stops(config.eos_token_id)
    return stops[0] if stops else None


def _until_stop(tokens: list[int], eos_token_id) -> tuple[list[int], bool]:
    """The generated tokens before the first end-of-sequence token, and whether one ended them."""
    stops = set(_stops(eos_token_id))
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position], True
    return tokens, False


def decoded_spans(tokenizer, tokens: list[int]) -> tuple[str, list[list[int]]]:
    """The text `tokens` decode to (special tokens left out), and each token's span of it: the characters its
    decoding adds to the text of the tokens before it (a token that adds none, such as a special token or the first
    bytes of a character, spans none)."""
    spans, end = [], 0
    for count in range(1, len(tokens) + 1):
        length = max(end, len(tokenizer.decode(tokens[:count], skip_special_tokens=True)))
        spans.append([end, length])
        end = length
    return tokenizer.decode(tokens, skip_special_tokens=True), spans


def _completed_row(prompt: list[int], tokens: list[int], spans: list[list[int]], stop: int | None) -> dict:
    """One side of a completed pair: the prompt (not scored, covering no character of the completion), the
    completion's tokens (scored, with their spans), and the end-of-sequence token when the completion ended."""
    ended = [stop] if stop is not None else []
    ids = prompt + tokens + ended
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(prompt) + tokens + ended,
        "spans": [[0, 0]] * len(prompt) + spans + [[0, 0]] * len(ended),
    }
