"""A student of another tokenizer than the teacher's: two tokenizations of each example, batched side by side.

When the student's vocabulary differs from the teacher's ([`~hf_distill.alignment.vocabulary_difference`]: the
token -> id maps are compared, not the sizes), each example is tokenised by both tokenizers. The paired data holds:

- the student's columns under their usual names (`input_ids`, `attention_mask`, `labels`, ...);
- the teacher's model inputs (and its own labels, where a task has per-token labels) under the same names prefixed
  with `teacher_` (`teacher_input_ids`, `teacher_attention_mask`, ...);
- the per-token facts the task aligns the two with, prefixed with `align_` (each token's character span or word),
  which [`PairedCollator`] turns into the task's alignment tensors (`Task.align_batch`) once both sides are padded.

Each task's `prepare_datasets(..., teacher_tokenizer=...)` writes the paired columns, each task's `align_batch` and
`logit_targets` say how its outputs cross, and each loss term declares whether it can cross at all
([`~hf_distill.terms.LossTerm.cross_tokenizer_refusal`]). With one tokenizer none of this runs: the trainer takes
the same path as before, at no extra cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from .alignment import shared_vocabulary, vocabulary_difference
from .architectures import unwrap
from .model_files import VOCABULARY_FILES
from .references import teacher_reference

TEACHER_PREFIX = "teacher_"
ALIGN_PREFIX = "align_"
# The columns of the teacher's tokenization that evaluation reads beside its inputs and labels (question answering
# maps predicted spans back to the context through them).
TEACHER_EVAL_COLUMNS = ("offset_mapping",)

__all__ = [
    "ALIGN_PREFIX",
    "TEACHER_PREFIX",
    "PairedCollator",
    "TokenizerPair",
    "check_fast",
    "own_tokenizer",
    "teacher_encoding",
    "teacher_inputs",
]


def teacher_encoding(teacher_tokenizer, texts, pairs=None, **kwargs) -> tuple[dict[str, list], Any]:
    """The teacher's tokenization of `texts` (and `pairs`): its model inputs as `teacher_`-prefixed columns, and the
    whole `BatchEncoding` (for the word ids and character spans a task aligns with). `kwargs` go to the tokenizer
    (`truncation`, `max_length`, `return_offsets_mapping`, ...)."""
    encoding = teacher_tokenizer(texts, pairs, **kwargs)
    names = [name for name in teacher_tokenizer.model_input_names if name in encoding]
    columns = {TEACHER_PREFIX + name: encoding[name] for name in names}
    return columns, encoding


def teacher_inputs(inputs: dict) -> dict:
    """The teacher's side of a paired batch: its `teacher_`-prefixed entries under their plain names."""
    return {key[len(TEACHER_PREFIX) :]: value for key, value in inputs.items() if key.startswith(TEACHER_PREFIX)}


def check_fast(tokenizer, role: str) -> None:
    """Refuses a slow (Python) tokenizer: aligning two tokenizations reads each token's characters
    (`offset_mapping`) or words (`word_ids`), which only fast tokenizers give."""
    if not getattr(tokenizer, "is_fast", False):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"the {role}'s tokenizer {name!r} is a slow {type(tokenizer).__name__}: a teacher and a student of "
            "different tokenizers are aligned through each token's characters (offset_mapping), which only fast "
            "tokenizers give; load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )


def own_tokenizer(model):
    """The tokenizer saved beside a model loaded from a local folder (its vocabulary files are there), or `None`."""
    from transformers import AutoTokenizer

    folder = getattr(unwrap(model), "name_or_path", None)
    if not folder or not os.path.isdir(folder):
        return None
    if not any(os.path.isfile(os.path.join(folder, name)) for name in VOCABULARY_FILES):
        return None
    return AutoTokenizer.from_pretrained(folder)


@dataclass
class TokenizerPair:
    """The teacher's and the student's tokenizers, when their vocabularies differ ([`TokenizerPair.of`]).

    Attributes:
        teacher, student: the two tokenizers.
        difference (`str`): how the vocabularies differ, for messages.
    """

    teacher: Any
    student: Any
    difference: str

    @classmethod
    def of(cls, teacher, student) -> TokenizerPair | None:
        """The pair of `teacher` and `student`, or `None` when they read the same ids (the same vocabulary): one
        tokenization then serves both models, as before."""
        if teacher is None or student is None:
            return None
        difference = vocabulary_difference(teacher, student)
        if difference is None:
            return None
        check_fast(teacher, "teacher")
        check_fast(student, "student")
        return cls(teacher, student, difference)

    @cached_property
    def shared_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens both vocabularies spell alike: `(teacher ids, student ids)`, as long tensors."""
        teacher_ids, student_ids = shared_vocabulary(self.teacher, self.student)
        return torch.tensor(teacher_ids, dtype=torch.long), torch.tensor(student_ids, dtype=torch.long)

    def teacher_names(self, task) -> tuple[str, ...]:
        """The plain names of the teacher's columns in paired data: its tokenizer's model inputs and the task's
        label inputs (the teacher's own labels, where they are per token)."""
        return tuple(dict.fromkeys([*self.teacher.model_input_names, *task.label_names]))

    def columns(self, task) -> list[str]:
        """Every paired-data column the student's forward does not read but a paired batch needs: the teacher's,
        and the task's alignment columns."""
        return [TEACHER_PREFIX + name for name in self.teacher_names(task)] + list(task.alignment_columns)

    def check_crosses(self, task, terms) -> None:
        """Refuses, with a one-line error naming it, a loss term (of `terms`, the active ones) or a task that cannot
        cross from the teacher's tokens to the student's."""
        for term in terms:
            if term.cross_tokenizer_refusal:
                raise ValueError(
                    f"{term.weight_field} > 0 cannot cross tokenizers: {term.cross_tokenizer_refusal} (the student's "
                    f"vocabulary differs from the teacher's: {self.difference}); set {term.weight_field}=0, or give "
                    "the student the teacher's tokenizer"
                )
        refusal = task.cross_tokenizer_refusal({term.name for term in terms})
        if refusal:
            raise ValueError(
                f"the student's tokenizer differs from the teacher's ({self.difference}), and {refusal}; give the "
                "student the teacher's tokenizer (a student built from the teacher reads it)"
            )

    def check_data(self, dataset, task, where: str) -> None:
        """Refuses data that holds one tokenization (or lacks the task's alignment columns), naming the fix."""
        names = getattr(dataset, "column_names", None)
        if names is None:
            return  # an iterable dataset: its first batch will say
        wanted = [TEACHER_PREFIX + "input_ids", *task.alignment_columns]
        missing = [column for column in wanted if column not in names]
        if missing:
            raise ValueError(
                f"{where} holds only one tokenization (no {', '.join(missing)}), but the student's tokenizer differs "
                f"from the teacher's ({self.difference}): tokenise each example with both, e.g. "
                "task.prepare_datasets(raw, student_tokenizer, data_args, teacher_tokenizer=teacher_tokenizer), or "
                "give the student the teacher's tokenizer"
            )

    def teacher_view(self, dataset, task):
        """The teacher's own view of paired data: its `teacher_` columns under their plain names, in place of the
        student's, without the alignment columns (the data the teacher is evaluated on)."""
        plain = [*self.teacher_names(task), *TEACHER_EVAL_COLUMNS]
        renames = {TEACHER_PREFIX + name: name for name in plain if TEACHER_PREFIX + name in dataset.column_names}
        dropped = [c for c in dataset.column_names if c in renames.values() or c.startswith(ALIGN_PREFIX)]
        return dataset.remove_columns(dropped).rename_columns(renames)

    def collator(self, collator, task) -> PairedCollator:
        """`collator` (the student's batches) wrapped to batch the teacher's tokenization beside them."""
        return PairedCollator(collator, task.data_collator(self.teacher), task, self.teacher_names(task))

    def settings(self, task, args) -> dict:
        """What the metrics file and the card say: both tokenizers (a local folder by its name only), their sizes, and
        how the task's outputs cross from one to the other."""
        return {
            "teacher": _reference(self.teacher),
            "teacher_tokens": len(self.teacher),
            "student": _reference(self.student),
            "student_tokens": len(self.student),
            **task.cross_tokenizer_card(args),
        }


def _reference(tokenizer) -> str | None:
    name = getattr(tokenizer, "name_or_path", None)
    return teacher_reference(os.fspath(name)) if name else None


class PairedCollator:
    """Batches paired examples: the student's columns through the student's collator, the teacher's (`teacher_`
    columns) through the task's collator for the teacher's tokenizer (so each side is padded with its own pad token,
    on its own side), then the task's alignment tensors from the `align_` columns (`Task.align_batch`), in the padded
    positions of both sides."""

    def __init__(self, collator, teacher_collator, task, teacher_names: tuple[str, ...]):
        self.collator = collator
        self.teacher_collator = teacher_collator
        self.task = task
        self.teacher_names = frozenset(teacher_names)

    def __call__(self, features: list[dict]) -> dict:
        student, teacher, facts = [], [], []
        for feature in features:
            own, theirs, aligned = {}, {}, {}
            for key, value in feature.items():
                if key.startswith(ALIGN_PREFIX):
                    aligned[key] = value
                elif key.startswith(TEACHER_PREFIX) and key[len(TEACHER_PREFIX) :] in self.teacher_names:
                    theirs[key[len(TEACHER_PREFIX) :]] = value
                else:
                    own[key] = value
            student.append(own)
            teacher.append(theirs)
            facts.append(aligned)
        batch = dict(self.collator(student))
        batch.update({TEACHER_PREFIX + key: value for key, value in self.teacher_collator(teacher).items()})
        batch.update(self.task.align_batch(batch, facts))
        return batch


def place_rows(rows: list[list], attention_mask: torch.Tensor, fill) -> list[list]:
    """Each row's per-token values put at the real positions of its padded row (`attention_mask`), `fill` at the
    padding: a row's tokens are its real positions in order, whichever side its collator padded."""
    placed = []
    for values, mask in zip(rows, attention_mask.tolist()):
        row, values = [fill] * len(mask), list(values)
        real = [position for position, keep in enumerate(mask) if keep]
        if len(real) != len(values):
            raise ValueError(
                f"an example has {len(values)} per-token alignment values for {len(real)} real tokens: the paired "
                "data's align_ columns must come from the same tokenization as its input ids"
            )
        for position, value in zip(real, values):
            row[position] = value
        placed.append(row)
    return placed
