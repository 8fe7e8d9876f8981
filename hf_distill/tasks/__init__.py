"""The task registry: one [`Task`] class per kind of head, each in its own file of this folder.

A task is inferred from the model class (`BertForSequenceClassification` -> sequence classification), through the
auto-model mapping each task names. See [`Task`] for what a task owns.

| task (pipeline tag) | heads | soft targets | label loss |
| --- | --- | --- | --- |
| `sequence-classification` (`text-classification`) | `*ForSequenceClassification` | KL per example (MSE) | CE (MSE) |
| `token-classification` | `*ForTokenClassification` | KL per labelled token | CE per labelled token |
| `question-answering` | `*ForQuestionAnswering` | (KL start + KL end) / 2 per example | (CE start + CE end) / 2 |
| `masked-lm` (`fill-mask`) | `*ForMaskedLM` | KL per masked token | MLM loss |
| `causal-lm` (`text-generation`) | `*ForCausalLM`, `*LMHeadModel` | shifted KL per next-token target | LM loss |

Adding a task: one file here that ends with `register_task(TheTask)` (the registry is `registry.py`), and its import
line below.
"""

from __future__ import annotations

from .base import (  # noqa: I001
    IGNORE_INDEX,
    UNITS,
    CardMetric,
    ExampleScores,
    LogitTarget,
    Task,
    TaskEvaluation,
    count_items,
    is_default_id2label,
)
from .registry import (
    TASKS,
    get_task,
    register_task,
    resolve_task_name,
    task_for,
    task_name_of,
    task_name_of_class,
)

# Each task registers itself; the order of these imports is the precedence of `task_name_of_class`.
# isort: off
from .text_classification import SequenceClassification
from .token_classification import TokenClassification
from .question_answering import QuestionAnswering
from .language_modeling import CausalLM, MaskedLM, next_token_mask

# isort: on

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "UNITS",
    "CardMetric",
    "CausalLM",
    "ExampleScores",
    "LogitTarget",
    "MaskedLM",
    "QuestionAnswering",
    "SequenceClassification",
    "Task",
    "TaskEvaluation",
    "TokenClassification",
    "count_items",
    "get_task",
    "is_default_id2label",
    "next_token_mask",
    "register_task",
    "resolve_task_name",
    "task_for",
    "task_name_of",
    "task_name_of_class",
]
