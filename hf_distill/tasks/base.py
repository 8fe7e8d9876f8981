"""The `Task` interface: everything hf_distill knows about one kind of head, in one object.

A task says how its models are loaded (`auto_class`) and named (`pipeline_tag`), which logits the losses compare
([`Task.logit_targets`]) and what the hard-label loss is ([`Task.label_loss`]), how its data is read, tokenised and
batched ([`Task.prepare_datasets`], [`Task.data_collator`], its own `data_arguments` flags), how it is scored
([`Task.evaluation`]), and which of those scores the model card shows ([`Task.card_metrics`]).

Units are `examples`, `tokens` (real tokens, from the attention mask) and `labels` (the items that the task scores:
labels that are not -100, or, for causal language modelling, the next-token targets).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data_settings import DataSettings
from ..losses import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import DatasetDict
    from transformers import EvalPrediction, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


UNITS = ("examples", "tokens", "labels")
# Matches the names `PretrainedConfig` invents when a checkpoint has no real label names.
_DEFAULT_LABEL_NAME = re.compile(r"LABEL_(\d+)")


@dataclass(frozen=True)
class LogitTarget:
    """Student and teacher logits to compare, the items that count, and the unit they are averaged over.

    `classes` marks, when they vary from item to item, the classes (last dimension) that exist: the real positions
    of span logits, whose padding the logit MSE must not average over.
    """

    student: torch.Tensor
    teacher: torch.Tensor
    mask: torch.Tensor | None
    unit: str
    classes: torch.Tensor | None = None


@dataclass(frozen=True)
class CardMetric:
    """One row of the model card's result table, and one `model-index` metric.

    Args:
        key: the key of the metric in a model's metrics (e.g. `"accuracy"`, `"f1"`, `"perplexity"`).
        label: the table row's label (e.g. `"Entity F1"`).
        model_index_type: the `model-index` metric type (`"accuracy"`, `"f1"`, `"exact_match"`, `"perplexity"`, ...).
        percent: whether the value is a fraction shown as a percentage (`False`: a plain number, e.g. perplexity).
        args: the `model-index` metric arguments, e.g. `{"average": "macro"}`.
        higher_is_better: whether a larger value is better (`False` for perplexity and MSE).
    """

    key: str
    label: str
    model_index_type: str
    percent: bool = True
    args: dict | None = None
    higher_is_better: bool = True


@dataclass(frozen=True)
class ExampleScores:
    """The per-example data behind a task's headline metric (its first card metric), for comparing two models on the
    same examples ([`hf_distill.stats`]).

    Exactly one of:
    - `correct`: `(n,)` booleans, the metric being their mean (accuracy, exact match): McNemar's exact test applies;
    - `stats` and `combine`: `(n, k)` per-example sufficient statistics whose column sums `combine` turns into the
      metric (entity F1 from true positives, predicted and gold entities; perplexity from summed NLL and tokens; MSE
      from squared errors): a paired bootstrap over the examples applies.

    `confidence` (classification only): the probability each prediction gave its class, for calibration (ECE).
    """

    metric: str
    correct: np.ndarray | None = None
    stats: np.ndarray | None = None
    combine: Callable[[np.ndarray], float] | None = None
    confidence: np.ndarray | None = None

    @property
    def paired_test(self) -> str:
        return "mcnemar_exact" if self.correct is not None else "paired_bootstrap"

    def value(self) -> float:
        """The metric over all the examples."""
        if self.correct is not None:
            return float(np.mean(self.correct))
        return float(self.combine(np.asarray(self.stats, dtype=np.float64).sum(0)))

    def statistics(self) -> np.ndarray:
        """`(n, k)` sufficient statistics of the metric (correctness as the columns `(correct, 1)`)."""
        if self.correct is not None:
            correct = np.asarray(self.correct, dtype=np.float64).reshape(-1, 1)
            return np.concatenate([correct, np.ones_like(correct)], axis=1)
        return np.asarray(self.stats, dtype=np.float64)

    def combiner(self) -> Callable[[np.ndarray], float]:
        return mean_combiner if self.correct is not None else self.combine

    def __len__(self) -> int:
        return len(self.correct if self.correct is not None else self.stats)


def mean_combiner(sums: np.ndarray) -> float:
    """The mean of per-example values, from the sums of `(value, 1)` columns."""
    return float(sums[0] / sums[1]) if sums[1] else float("nan")


@dataclass
class TaskEvaluation:
    """What a Trainer needs to compute a task's metrics: `compute_metrics` and `preprocess_logits_for_metrics`; and
    `example_scores`, the per-example data of the headline metric from the same predictions (for the paired test of
    `--baseline`), when the task gives it."""

    compute_metrics: Callable[[EvalPrediction], dict[str, float]]
    preprocess_logits_for_metrics: Callable | None = None
    example_scores: Callable[[EvalPrediction], ExampleScores] | None = None


class Task(abc.ABC):
    """Base class of a task head; one subclass per task, registered with [`hf_distill.tasks.register_task`].

    Subclasses set the class attributes and implement the abstract [`logit_targets`], [`label_loss`],
    [`prepare_datasets`] and [`evaluation`] (a subclass missing one cannot be instantiated); the others, such as
    [`data_collator`], have defaults that fit heads with one `labels` input and one `logits` output.
    """

    # hf_distill's name of the task (`--task` accepts it, and `pipeline_tag`).
    name: str = ""
    # The Hub / transformers pipeline name (`text-classification`, `fill-mask`, ...).
    pipeline_tag: str = ""
    # The transformers auto class that loads a model of this task.
    auto_class: type | None = None
    # The transformers auto mapping whose classes are of this task (infers the task of a model class).
    mapping_name: str = ""
    # PEFT's `task_type` for this head (None: the generic PeftModel).
    peft_task_type: str | None = None
    # Outputs over the vocabulary (language models): teacher and student output vocabularies must match.
    vocabulary_outputs: bool = False
    # Outputs are classes named by `config.id2label`: teacher and student labels must match.
    labelled_outputs: bool = False
    # A dataclass of this task's own command-line flags (field names unique across tasks), or None.
    data_arguments: type | None = None
    # How the card shows the model in use: (variable, call) of a transformers pipeline; `{mask_token}` in the call
    # stands for the tokenizer's mask token.
    usage_example: tuple[str, str] | None = None
    # Whether the soft targets are class distributions (KL at a temperature) or real values (regression: MSE).
    is_regression: bool = False
    # The label inputs of the head, as transformers names them (`find_labels`).
    label_names: tuple[str, ...] = ("labels",)
    # The outputs holding the logits the soft targets come from (what a teacher cache stores, what ensembles average).
    logit_fields: tuple[str, ...] = ("logits",)
    # The metrics the card's result table and `model-index` show, headline first.
    card_metrics: tuple[CardMetric, ...] = ()
    # Whether the logits have a row per token (tokens, spans, language models) rather than one per example: how a
    # teacher cache stores them.
    per_position_logits: bool = True
    # Whether the hard-label loss is a cross entropy of each row of the logits against one label (`label_rows`): then
    # passes that compute it together with the soft targets apply (`hf_distill.terms.FUSED_PASSES`).
    label_loss_per_row: bool = False

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> Task:
        """The task of `model` (a model of this task): subclasses read settings such as regression from its config."""
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ---- training ------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def logit_targets(self, student_out, teacher_out, inputs: dict) -> list[LogitTarget]:
        """The student and teacher logits the soft-target terms compare, with the items that count."""

    @abc.abstractmethod
    def label_loss(self, student_out, inputs: dict, counts: dict) -> tuple[torch.Tensor, str]:
        """The hard-label loss of a batch that has labels (a sum over the batch divided by `counts[unit]`), and its
        unit."""

    def label_rows(self, inputs: dict, shape) -> tuple[torch.Tensor | None, torch.Tensor]:
        """For a task whose label loss is per row (`label_loss_per_row`): the label of each row of logits of `shape`
        (`(..., num_classes)`; `None` when the batch has no labels) and the mask of the rows that count."""
        raise NotImplementedError(f"{type(self).__name__}'s label loss is not a cross entropy per row of its logits")

    def cached_logits(self, teacher) -> dict[str, dict]:
        """What a teacher cache stores of this task's logits: output name -> `{"classes": the width of the last
        dimension (0 when it varies from example to example), "per_position": one row per token}`."""
        classes = teacher.get_output_embeddings().out_features if self.vocabulary_outputs else None
        classes = classes or teacher.config.num_labels
        return {name: {"classes": classes, "per_position": self.per_position_logits} for name in self.logit_fields}

    def labels(self, inputs: dict) -> Any | None:
        """The hard labels of a batch (a tuple for heads with several label inputs), or `None` when it has none."""
        return inputs.get("labels")

    def predictions(self, outputs) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return outputs.logits

    def count_items(self, batch: dict) -> dict[str, torch.Tensor]:
        """Counts the examples, real tokens and labels of one batch, as int64 CPU tensors keyed by `UNITS`."""
        return count_items(batch)

    # ---- data ----------------------------------------------------------------------------------------------------

    def augmentation_refusal(self) -> str | None:
        """Why `--augment` (augmented copies of the training inputs, labelled by the teacher alone) does not fit this
        task, or `None` when it does."""
        return (
            f"{self.pipeline_tag} trains on the text itself as its labels, so an augmented text would be learnt as "
            "real text; augmentation builds transfer sets for text classification only"
        )

    def task_arguments(self, task_args=None):
        """`task_args`, or this task's default flags (None for a task without flags)."""
        if task_args is not None or self.data_arguments is None:
            return task_args
        return self.data_arguments()

    @abc.abstractmethod
    def prepare_datasets(
        self,
        raw: DatasetDict,
        tokenizer: PreTrainedTokenizerBase,
        data_args: DataSettings,
        task_args=None,
        teacher_config: PretrainedConfig | None = None,
        teacher_tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> DatasetDict:
        """Tokenises the raw splits of [`hf_distill.data.load_raw_datasets`]: `"train"`, `"validation"` (when there is
        one), `"test"` (when given) and `"unlabeled"` (the transfer set, tokenised so that the hard-label loss ignores
        it; the run path trains on train + unlabeled).

        With `teacher_tokenizer` (the teacher's, when the student's `tokenizer` has another vocabulary), each example
        is tokenised by both: the student's columns as usual, the teacher's prefixed with `teacher_`, and the
        task's `alignment_columns` (see [`hf_distill.cross_tokenizer`])."""

    def data_collator(self, tokenizer: PreTrainedTokenizerBase, task_args=None):
        """The batch maker (dynamic padding)."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---- two tokenizers: a student of another vocabulary than the teacher's -----------------------------------------

    # The per-token columns (`align_...`) the paired data of this task carries for `align_batch`.
    alignment_columns: tuple[str, ...] = ()

    def cross_tokenizer_refusal(self, term_names: set[str]) -> str | None:
        """Why a student of another tokenizer than the teacher's cannot learn this task with the active loss terms
        named in `term_names`, or `None` when it can. A task crosses tokenizers only where it says how: refused by
        default."""
        return f"{self.pipeline_tag} has no alignment between two tokenizations"

    def cross_tokenizer_card(self, args) -> dict[str, str]:
        """How this task's outputs cross from the teacher's tokens to the student's, for the metrics file and the card:
        `{"alignment": sentence}`, and `"soft_targets"` when the soft-target term is another loss than `divergence`."""
        return {}

    def align_batch(self, batch: dict, facts: list[dict]) -> dict[str, torch.Tensor]:
        """The alignment tensors of a paired batch, from each example's `align_` columns (`facts`) and the padded
        batch of both sides (`batch`, the teacher's side under `teacher_` names): what `logit_targets` and
        `cross_tokenizer_soft_targets` read. None by default."""
        return {}

    def cross_tokenizer_soft_targets(self, ctx) -> tuple[torch.Tensor, str] | None:
        """The soft-target (kd) term of a paired batch, where the task computes it its own way (two vocabularies have
        no class-by-class comparison); `None`: the configured divergence on `logit_targets`, which align the
        teacher's outputs with the student's.

        Args:
            ctx ([`~hf_distill.terms.LossContext`]): the batch, both models' outputs and the run's settings.
        """
        return None

    # ---- evaluation ----------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def evaluation(self, eval_dataset=None, teacher_config: PretrainedConfig | None = None, task_args=None):
        """The [`TaskEvaluation`] of this task on `eval_dataset` (the tokenised split it will score, in order)."""


def count_items(batch: dict) -> dict[str, torch.Tensor]:
    """Counts the examples, real tokens and labels (not -100) of one batch, as int64 tensors."""
    labels = batch.get("labels")
    num_labels = (labels != IGNORE_INDEX).sum() if labels is not None else torch.tensor(0)
    return _counts(batch, num_labels)


def _counts(batch: dict, num_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    input_ids = batch.get("input_ids")
    reference = input_ids if input_ids is not None else batch.get("inputs_embeds")
    attention_mask = batch.get("attention_mask")
    tokens = attention_mask.sum() if attention_mask is not None else torch.tensor(reference.shape[:2].numel())
    counts = {"examples": torch.tensor(reference.shape[0]), "tokens": tokens, "labels": num_labels}
    return {unit: value.to(torch.long).cpu() for unit, value in counts.items()}


def attention_mask_of(inputs: dict) -> torch.Tensor | None:
    mask = inputs.get("attention_mask")
    return mask.bool() if mask is not None else None


def argmax_logits(logits, labels):
    """`preprocess_logits_for_metrics` that keeps only the predicted class of each item."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def is_default_id2label(id2label: dict[int, str] | None) -> bool:
    """Whether `id2label` is missing or only holds the placeholder names `LABEL_0`, `LABEL_1`, ... of transformers."""
    if not id2label:
        return True
    return all(
        (match := _DEFAULT_LABEL_NAME.fullmatch(str(name))) is not None and int(match.group(1)) == int(index)
        for index, name in id2label.items()
    )
