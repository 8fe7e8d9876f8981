"""Extractive question answering: a start and an end distribution over the positions of each example.

- Data: SQuAD-style `question`, `context` and `answers` (`{"text": [...], "answer_start": [...]}`) columns ->
  `start_positions` and `end_positions` (0, the first token, when the answer was cut off or there is none); one
  feature per example (the context is cut to `max_length`). Evaluation splits keep `QA_EVAL_COLUMNS`, which the
  metrics read (the trainer drops them from the batches).
- Metrics: exact match and F1 over the answer strings, as the SQuAD evaluation script computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from datasets import DatasetDict
from transformers import AutoModelForQuestionAnswering

from .. import losses
from ..alignment import edge_positions
from ..cross_tokenizer import TEACHER_EVAL_COLUMNS, TEACHER_PREFIX, place_rows
from ..data_settings import DataSettings
from ..metrics import exact_match, squad_scores
from ..provenance import source_of
from .base import IGNORE_INDEX, CardMetric, ExampleScores, LogitTarget, Task, TaskEvaluation
from .registry import register_task

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase


# Where padding is, both models' span logits are set to this: no probability, whatever the model put there, so padding
# changes nothing. Finite (and within float16's range), so that 0 * log 0 never turns into nan.
_PADDING_LOGIT = -1e4
# Columns that evaluation needs beside the model inputs (question answering maps spans back to answer strings).
QA_EVAL_COLUMNS = ("offset_mapping", "context", "answers")


@dataclass
class QuestionAnsweringArguments:
    """The flags of question answering."""

    question_column: str = field(default="question", metadata={"help": "Question answering: the question column."})
    context_column: str = field(default="context", metadata={"help": "Question answering: the context column."})
    answers_column: str = field(
        default="answers",
        metadata={
            "help": "Question answering: the answers column, SQuAD style: {'text': [...], 'answer_start': [...]}."
        },
    )
    max_answer_length: int = field(
        default=30, metadata={"help": "Question answering: the longest answer span (tokens) evaluation predicts."}
    )

    def __post_init__(self):
        if self.max_answer_length <= 0:
            raise ValueError(f"--max_answer_length must be positive, got {self.max_answer_length}")


class QuestionAnswering(Task):
    """Span heads: `start_logits` and `end_logits` of shape `(batch, seq_len)`, labels `start_positions` and
    `end_positions` of shape `(batch,)`.

    The soft-target loss is the KL between the teacher's and the student's distributions over the positions, for the
    start and for the end, averaged (the trainer averages over the logit pairs), per example. The label loss is
    transformers' (CE(start) + CE(end)) / 2, per example; a position outside the sequence (transformers clamps and
    ignores it) counts as a zero loss. Padded positions get no probability in either model, in the soft targets and
    in the label loss alike.
    """

    name = "question-answering"
    pipeline_tag = "question-answering"
    auto_class = AutoModelForQuestionAnswering
    mapping_name = "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"
    peft_task_type = "QUESTION_ANS"
    data_arguments = QuestionAnsweringArguments
    usage_example = ("qa", 'qa(question="Where do I live?", context="My name is Sarah and I live in London.")')
    label_names = ("start_positions", "end_positions")
    logit_fields = ("start_logits", "end_logits")
    card_metrics = (
        CardMetric("exact_match", "Exact match", "exact_match"),
        CardMetric("f1", "F1", "f1"),
    )

    # Both sides' character spans in the context (paired data), from which `align_batch` moves the teacher's span
    # probabilities onto the student's tokens.
    alignment_columns = ("align_spans", "align_teacher_spans")

    def cached_logits(self, teacher):
        # One logit per token of the context, whose length varies: stored whole, per position.
        return {name: {"classes": 0, "per_position": True} for name in self.logit_fields}

    def logit_targets(self, student_out, teacher_out, inputs):
        mask = inputs.get("attention_mask")
        targets = []
        for side in ("start", "end"):
            teacher = getattr(teacher_out, f"{side}_logits")
            moves = inputs.get(f"answer_{side}_moves")
            if moves is not None:  # two tokenizations: the teacher's probabilities moved onto the student's tokens
                teacher = moved_logits(teacher, inputs["teacher_attention_mask"], moves, mask.shape[-1])
            targets.append(
                LogitTarget(
                    _mask_padding(getattr(student_out, f"{side}_logits"), mask),
                    _mask_padding(teacher, mask),
                    None,
                    "examples",
                    classes=None if mask is None else mask.bool(),
                )
            )
        return targets

    def labels(self, inputs):
        start, end = inputs.get("start_positions"), inputs.get("end_positions")
        if start is None or end is None:
            return None
        return start, end

    def label_loss(self, student_out, inputs, counts):
        mask = inputs.get("attention_mask")
        total = 0.0
        for logits, positions in zip((student_out.start_logits, student_out.end_logits), self.labels(inputs)):
            positions = positions.reshape(-1).long()
            outside = (positions < 0) | (positions >= logits.shape[-1])
            positions = positions.masked_fill(outside, IGNORE_INDEX)
            total = total + losses.task_cross_entropy(
                _mask_padding(logits, mask), positions, num_items=counts["examples"]
            )
        return total / 2, "examples"

    def predictions(self, outputs):
        return outputs.start_logits, outputs.end_logits

    # ---- two tokenizers --------------------------------------------------------------------------------------------

    def cross_tokenizer_refusal(self, term_names):
        if "logit_mse" in term_names:
            return (
                "the logit MSE (logit_mse_weight > 0) compares span logits position by position, and across "
                "tokenizers the teacher's span distributions are moved onto the student's tokens as probabilities, "
                "not logits; set logit_mse_weight=0"
            )
        return None

    def cross_tokenizer_card(self, args):
        return {
            "alignment": (
                "the teacher's start and end probabilities moved onto the student's tokens through character offsets "
                "(each teacher token's start to the student token where its characters begin, its end to where they "
                "end; an unanswerable question's first token to the student's first), then softened at the "
                "temperature"
            )
        }

    def align_batch(self, batch, facts):
        """`answer_start_moves` and `answer_end_moves`, `(batch, teacher_len)`: for each teacher position, the student
        position its start (end) probability moves to ([`~hf_distill.alignment.edge_positions`] over the context's
        characters), or -1; each side's first real token (where an unanswerable question points) to the other's."""
        if not facts or "align_spans" not in facts[0]:
            return {}
        student_mask, teacher_mask = batch["attention_mask"], batch["teacher_attention_mask"]
        student = place_rows([f["align_spans"] for f in facts], student_mask, None)
        teacher = place_rows([f["align_teacher_spans"] for f in facts], teacher_mask, None)
        student_first, teacher_first = student_mask.int().argmax(1).tolist(), teacher_mask.int().argmax(1).tolist()
        moves = {}
        for edge in ("start", "end"):
            rows = [edge_positions(t, s, edge) for t, s in zip(teacher, student)]
            for row, s_first, t_first in zip(rows, student_first, teacher_first):
                row[t_first] = s_first
            moves[f"answer_{edge}_moves"] = torch.tensor(rows, dtype=torch.long)
        return moves

    def augmentation_refusal(self) -> str | None:
        return (
            "question answering labels a span of characters of the context, which replaced or deleted words move or "
            "destroy; augmentation builds transfer sets for text classification only"
        )

    def prepare_datasets(self, raw, tokenizer, data_args, task_args=None, teacher_config=None, teacher_tokenizer=None):
        if "unlabeled" in raw:
            raise ValueError(
                f"{source_of(raw, 'unlabeled')}: question answering cannot learn from unlabeled examples yet (its "
                "label loss is averaged over every example); leave out --unlabeled_file"
            )
        return prepare_question_answering(raw, tokenizer, data_args, self.task_arguments(task_args), teacher_tokenizer)

    def evaluation(self, eval_dataset=None, teacher_config=None, task_args=None):
        if eval_dataset is None:
            raise ValueError("question answering metrics need the evaluation split (its contexts and answers)")
        task_args = self.task_arguments(task_args)
        metrics = QuestionAnsweringMetrics(eval_dataset, task_args.max_answer_length)
        return TaskEvaluation(metrics, example_scores=metrics.example_scores)


def moved_logits(
    teacher_logits: torch.Tensor, teacher_mask: torch.Tensor, moves: torch.Tensor, student_length: int
) -> torch.Tensor:
    """The teacher's span distribution `(batch, teacher_len)`, moved onto the student's positions: each teacher
    position's probability added to the student position `moves` names (-1: dropped), renormalised over what moved,
    returned as log-probabilities `(batch, student_len)` (floored at log 1e-30 where nothing moved). The divergence
    softens them at the temperature as it does logits."""
    probabilities = torch.softmax(_mask_padding(teacher_logits.float(), teacher_mask), dim=-1)
    moves = moves.to(probabilities.device)
    kept = probabilities.masked_fill(moves < 0, 0.0)
    moved = probabilities.new_zeros(probabilities.shape[0], student_length).scatter_add(1, moves.clamp_min(0), kept)
    moved = moved / moved.sum(-1, keepdim=True).clamp_min(1e-30)
    return moved.clamp_min(1e-30).log()


def _mask_padding(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return logits
    return logits.masked_fill(~attention_mask.to(logits.device, torch.bool), _PADDING_LOGIT)


# ---- data ----------------------------------------------------------------------------------------------------------


def prepare_question_answering(
    raw: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataSettings,
    task_args: QuestionAnsweringArguments,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> DatasetDict:
    """Tokenises (question, context) pairs, one feature per example (the context is cut to `max_length`), with the
    answer's first and last token as `start_positions` / `end_positions`; (0, 0) when the answer was cut off or
    there is none. Evaluation splits also keep `QA_EVAL_COLUMNS`.

    With `teacher_tokenizer`, the same for the teacher's tokenization (`teacher_input_ids`, `teacher_start_positions`,
    ..., and `teacher_offset_mapping` for its evaluation), and each side's tokens' characters in the context
    (`align_spans`, `align_teacher_spans`; `[0, 0]` outside the context)."""
    columns = raw["train"].column_names
    for name in (task_args.question_column, task_args.context_column, task_args.answers_column):
        if name not in columns:
            raise ValueError(
                f"question answering needs the columns question, context and answers; {name!r} is not in the data "
                f"(available columns: {columns}). Pass --question_column, --context_column or --answers_column"
            )

    def encode(own, batch, keep_for_eval: bool, spans: bool = False) -> tuple[dict, list | None]:
        pad_right = own.padding_side == "right"
        questions = [q.lstrip() for q in batch[task_args.question_column]]
        contexts = batch[task_args.context_column]
        first, second = (questions, contexts) if pad_right else (contexts, questions)
        encoded = own(
            first,
            second,
            truncation="only_second" if pad_right else "only_first",
            max_length=data_args.max_length,
            return_offsets_mapping=True,
        )
        context_index = 1 if pad_right else 0
        starts, ends, offsets = [], [], []
        for i, answers in enumerate(batch[task_args.answers_column]):
            sequence_ids = encoded.sequence_ids(i)
            start, end = _answer_span(answers, encoded["offset_mapping"][i], sequence_ids, context_index)
            starts.append(start)
            ends.append(end)
            offsets.append(
                [o if s == context_index else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids)]
            )
        encoded["start_positions"], encoded["end_positions"] = starts, ends
        encoded.pop("offset_mapping")
        if keep_for_eval:
            encoded["offset_mapping"] = offsets
        if not spans:
            return dict(encoded), None
        # The characters of the context each token covers ([0, 0] outside it), for the alignment of two tokenizations.
        return dict(encoded), [[list(o) if o is not None else [0, 0] for o in row] for row in offsets]

    def tokenize(batch, keep_for_eval: bool):
        paired = teacher_tokenizer is not None
        encoded, spans = encode(tokenizer, batch, keep_for_eval, spans=paired)
        if keep_for_eval:
            encoded["context"] = batch[task_args.context_column]
            encoded["answers"] = batch[task_args.answers_column]
        if not paired:
            return encoded
        theirs, teacher_spans = encode(teacher_tokenizer, batch, keep_for_eval, spans=True)
        names = [*teacher_tokenizer.model_input_names, *QuestionAnswering.label_names, *TEACHER_EVAL_COLUMNS]
        encoded.update({f"{TEACHER_PREFIX}{name}": theirs[name] for name in names if name in theirs})
        return {**encoded, "align_spans": spans, "align_teacher_spans": teacher_spans}

    return DatasetDict(
        {
            name: split.map(
                tokenize,
                batched=True,
                remove_columns=split.column_names,
                fn_kwargs={"keep_for_eval": name != "train"},
                desc=f"Tokenizing {name}",
            )
            for name, split in raw.items()
        }
    )


def _answer_span(answers: dict, offsets: list, sequence_ids: list, context_index: int) -> tuple[int, int]:
    texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    if not texts or not starts:
        return 0, 0
    start_char, end_char = int(starts[0]), int(starts[0]) + len(texts[0])
    context = [i for i, s in enumerate(sequence_ids) if s == context_index]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0  # cut off by the truncation
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end


# ---- metrics -------------------------------------------------------------------------------------------------------


def best_span(start_logits, end_logits, offsets, max_answer_length: int = 30, n_best: int = 20) -> tuple[int, int]:
    """The context span `(start, end)` (token indices, end included) with the highest start + end logit, among the
    `n_best` best starts and ends; `(-1, -1)` when the context has no token. Padding positions (beyond `offsets`) and
    tokens outside the context (offset `None`) are never chosen."""
    length = len(offsets)
    starts = np.argsort(start_logits[:length])[::-1][:n_best]
    ends = np.argsort(end_logits[:length])[::-1][:n_best]
    best, best_score = (-1, -1), -np.inf
    for s in starts:
        for e in ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = start_logits[s] + end_logits[e]
            if score > best_score:
                best, best_score = (int(s), int(e)), score
    return best


class QuestionAnsweringMetrics:
    """Exact match and F1 of the predicted answer strings, for the rows of `eval_dataset` in order (one feature
    per question, with `offset_mapping` (`None` outside the context), `context` and `answers`)."""

    def __init__(self, eval_dataset, max_answer_length: int = 30):
        self.offsets = eval_dataset["offset_mapping"]
        self.contexts = eval_dataset["context"]
        self.answers = [a.get("text") or [] for a in eval_dataset["answers"]]
        self.max_answer_length = max_answer_length

    def answer_texts(self, start_logits: np.ndarray, end_logits: np.ndarray) -> list[str]:
        texts = []
        for i, (offsets, context) in enumerate(zip(self.offsets, self.contexts)):
            s, e = best_span(start_logits[i], end_logits[i], offsets, self.max_answer_length)
            texts.append("" if s < 0 else context[offsets[s][0] : offsets[e][1]])
        return texts

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        start_logits, end_logits = (np.asarray(p) for p in prediction.predictions[:2])
        if len(start_logits) != len(self.contexts):
            raise ValueError(
                f"{len(start_logits)} predictions for {len(self.contexts)} evaluation questions: these metrics "
                "were built for another evaluation set"
            )
        return squad_scores(self.answer_texts(start_logits, end_logits), self.answers)

    def example_scores(self, prediction: EvalPrediction) -> ExampleScores:
        """Per-question exact match (McNemar's test on the questions where one model is right)."""
        start_logits, end_logits = (np.asarray(p) for p in prediction.predictions[:2])
        texts = self.answer_texts(start_logits, end_logits)
        correct = np.array([exact_match(text, answers) == 1.0 for text, answers in zip(texts, self.answers)])
        return ExampleScores("exact_match", correct=correct)


register_task(QuestionAnswering)
