"""The loss terms: each one declared once, here.

A [`LossTerm`] says everything the rest of the package needs to know about one term of the distillation loss: the
config field holding its weight (a flag of [`DistillationConfig`], made from the declaration), what it needs from the
models, whether a teacher cache can serve it, its line in the model card, and how to compute it from one
[`LossContext`]. The trainer loops over [`active_terms`]; the models' output flags, the teacher cache's default
hidden layers and refusals, the config's validation and the card's loss table are derived from the declarations.

Adding a term is one [`register_term`] call below (and its pure tensor function in `hf_distill/losses/`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, partial
from types import MappingProxyType
from typing import Any, Literal

import torch

from . import losses
from .fused_linear import LinearHead, fused_linear_distillation_loss, probe_linear_head
from .json_values import is_number
from .layer_map import LayerMap
from .relations import relation_loss_terms

# What a term can need from the models: the batch's hard labels, the teacher's logits, hidden states or attention
# maps, or the query/key/value projections of one layer (read by hooks as the models run).
NEEDS = frozenset({"labels", "logits", "hidden_states", "attentions", "qkv"})
# How the teacher's internals are described in error messages.
NEED_NAMES = {
    "logits": "logits",
    "hidden_states": "hidden states",
    "attentions": "attention maps",
    "qkv": "query/key/value projections (read as it runs)",
}


@dataclass
class LossContext:
    """What a term is computed from: one batch, both models' outputs, and the run's settings.

    Attributes:
        student: the student's outputs (`projected_hidden_states` holds the hidden states of the layer map's pairs,
            projected to the teacher's width, when a term needs hidden states).
        teacher: the teacher's outputs (from a cache in training, when there is one), or `None` when no teacher can
            give them (evaluation with only a teacher cache): terms that need the teacher are then skipped.
        inputs (`dict`): the batch.
        counts (`dict[str, torch.Tensor]`): the number of items per unit (`examples`, `tokens`, `labels`) that a sum
            is divided by: of the whole optimizer step in training, of this batch in evaluation.
        task: the [`~hf_distill.tasks.Task`] of the models.
        args: the [`DistillationConfig`].
        layer_map: the [`~hf_distill.layer_map.LayerMap`], when a term needs hidden states or attention maps.
        relations: the query/key/value captures of student and teacher (`.student`, `.teacher`, `.heads`), when a
            term needs them.
        training (`bool`): whether this is a training batch.
        tokenizers ([`~hf_distill.cross_tokenizer.TokenizerPair`], *optional*): the teacher's and the student's
            tokenizers when their vocabularies differ: the batch then holds both tokenizations (the teacher's under
            `teacher_` names, see [`~hf_distill.cross_tokenizer`]).
    """

    student: Any
    teacher: Any | None
    inputs: dict
    counts: dict
    task: Any
    args: Any
    layer_map: Any = None
    relations: Any = None
    training: bool = True
    tokenizers: Any = None

    @cached_property
    def logit_targets(self) -> list:
        """The task's pairs of student and teacher logits, computed once for every term that compares logits."""
        return self.task.logit_targets(self.student, self.teacher, self.inputs)

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return self.inputs.get("attention_mask")

    @property
    def across_tokenizers(self) -> bool:
        return self.tokenizers is not None

    @property
    def teacher_attention_mask(self) -> torch.Tensor | None:
        """The real tokens of the teacher's inputs: its own tokenization's, across tokenizers."""
        return self.inputs.get("teacher_attention_mask") if self.across_tokenizers else self.attention_mask


@dataclass(frozen=True)
class LossTerm:
    """One term of the distillation loss.

    Args:
        name (`str`): logged as `loss_<name>` (`eval_loss_<name>` in evaluation).
        weight_field (`str`): the [`DistillationConfig`] field (and flag) holding the term's weight (>= 0; 0 turns
            the term off).
        default_weight (`float`): the field's default.
        help (`str`): the flag's help text.
        unit (`str`): what the term is averaged over: `examples`, `tokens`, `labels`, or set by the task.
        needs (`frozenset[str]`): what it needs from the models, a subset of `NEEDS`.
        compute (`Callable[[LossContext], tuple[torch.Tensor, str] | None]`): the term's value (a sum divided by
            `counts[unit]`) and its unit, or `None` when this batch has nothing for it (evaluation without labels).
        card (`Callable[[dict], str]`): the model card's description, from the distillation settings.
        cache_logits (`"all"`, `"top_k"` or `None`): what a teacher cache must hold of the logits for this term:
            all of them, or a top-k cache at the run's temperature will do.
        projects_hidden_states (`bool`): the term compares student hidden states projected to the teacher's width
            (learned projections are trained with the student).
        reads_student_logits (`bool`): the term reads the student's logits (a step that makes none, the fused linear
            loss, must compute the term from the output layer's inputs: see [`LINEAR_HEAD`]).
        cross_tokenizer_refusal (`str`, *optional*): why the term cannot compare a teacher and a student of different
            tokenizers (their tokens differ, so what is compared token by token has no counterpart); `None`: it can
            (how, for the task's outputs, the task decides).
    """

    name: str
    weight_field: str
    default_weight: float
    help: str
    unit: str
    needs: frozenset
    compute: Callable[[LossContext], tuple[torch.Tensor, str] | None]
    card: Callable[[dict], str]
    cache_logits: Literal["all", "top_k"] | None = None
    projects_hidden_states: bool = False
    reads_student_logits: bool = False
    cross_tokenizer_refusal: str | None = None

    @property
    def needs_teacher(self) -> bool:
        return bool(self.needs - {"labels"})

    @property
    def cacheable(self) -> bool:
        """Whether a teacher cache can stand in for the teacher: it stores logits and hidden states only."""
        return self.needs <= {"labels", "logits", "hidden_states"}


_TERMS: dict[str, LossTerm] = {}
TERMS = MappingProxyType(_TERMS)  # read-only view, in registration order


def register_term(term: LossTerm) -> LossTerm:
    """Adds `term` to the registry; a name or weight field that is already taken is refused."""
    unknown = set(term.needs) - NEEDS
    if unknown:
        raise ValueError(f"loss term {term.name!r} needs {sorted(unknown)}, which are not among {sorted(NEEDS)}")
    for other in _TERMS.values():
        clash = {other.name, other.weight_field} & {term.name, term.weight_field}
        if clash:
            raise ValueError(f"loss term {term.name!r}: {sorted(clash)} already used by the term {other.name!r}")
    _TERMS[term.name] = term
    return term


def active_terms(args) -> list[LossTerm]:
    """The terms whose weight in `args` is above 0, in registration order."""
    return [term for term in _TERMS.values() if getattr(args, term.weight_field, 0)]


def needs_of(terms: Iterable[LossTerm]) -> set[str]:
    """Everything the given terms need from the models."""
    return set().union(*(term.needs for term in terms))


def teacher_hidden_layers(args, num_teacher_layers: int, num_student_layers: int | Callable[[], int]) -> list[int]:
    """The teacher hidden states (numbered as `hidden_states`) that the active terms of `args` compare: the teacher
    side of the layer map, or `[]` when no term needs hidden states.

    `num_student_layers` may be a function, called only when a term needs hidden states (finding the student's depth
    may mean building it).
    """
    if "hidden_states" not in needs_of(active_terms(args)):
        return []
    if callable(num_student_layers):
        num_student_layers = num_student_layers()
    layer_map = LayerMap.from_spec(args.layer_map, num_teacher_layers, num_student_layers)
    return sorted({t for t, _ in layer_map.hidden_state_indices()})


# ---- the terms ------------------------------------------------------------------------------------------------------


def _label(ctx: LossContext):
    if ctx.task.labels(ctx.inputs) is None:
        if ctx.training:
            names = " and ".join(repr(name) for name in ctx.task.label_names)
            raise ValueError(
                f"label_weight > 0 but the training batch has no {names}; add the labels or set label_weight=0"
            )
        return None
    return ctx.task.label_loss(ctx.student, ctx.inputs, ctx.counts)


def _kd(ctx: LossContext):
    if ctx.across_tokenizers:  # two vocabularies: the task may compare its outputs its own way (causal LMs)
        own = ctx.task.cross_tokenizer_soft_targets(ctx)
        if own is not None:
            return own
    # Averaged over the logit pairs (question answering has two: start and end), as the label loss is.
    targets, counts = ctx.logit_targets, ctx.counts
    if ctx.task.is_regression:
        value = sum(losses.task_mse(t.student, t.teacher, counts[t.unit]) for t in targets)
    else:
        divergence, temperature = soft_target_divergence(ctx.args), ctx.args.temperature
        value = sum(divergence(t.student, t.teacher, temperature, t.mask, counts[t.unit]) for t in targets)
    return value / len(targets), targets[0].unit


def soft_target_divergence(args) -> Callable[..., torch.Tensor]:
    """The soft-target loss of `args`, as a function of (student logits, teacher logits or top-k targets of a cache,
    temperature, mask, num_items): the divergence of [`divergence_of`], in chunks of `args.loss_chunk_size`
    positions when set (see [`~hf_distill.losses.soft_target_loss`])."""
    return partial(
        losses.soft_target_loss, divergence=divergence_of(args), chunk_size=getattr(args, "loss_chunk_size", None)
    )


def divergence_of(args) -> Callable[..., torch.Tensor]:
    """The divergence that `args.divergence` names (one of [`~hf_distill.losses.DIVERGENCES`]), with its mixing weight
    (`divergence_beta`, `divergence_alpha`) bound."""
    divergence = getattr(args, "divergence", "forward_kl")
    function = losses.DIVERGENCES[divergence]
    if divergence == "jsd":
        function = partial(function, beta=args.divergence_beta)
    elif divergence == "skew_kl":
        function = partial(function, alpha=args.divergence_alpha)
    return function


def _logit_mse(ctx: LossContext):
    targets, counts = ctx.logit_targets, ctx.counts
    value = sum(losses.logit_mse(t.student, t.teacher, t.mask, counts[t.unit], t.classes) for t in targets)
    return value / len(targets), targets[0].unit


def _hidden(ctx: LossContext):
    # Averaged over the pairs, so the weight means the same whatever the number of pairs.
    pairs = ctx.layer_map.hidden_state_indices()
    kind, mask, num_tokens = ctx.args.hidden_loss_type, ctx.attention_mask, ctx.counts["tokens"]
    if ctx.across_tokenizers:
        # The tokens differ, the examples do not: each example's states averaged over its own real tokens (the
        # projection is linear, so projecting then averaging is averaging then projecting).
        teacher_mask, num_examples = ctx.teacher_attention_mask, ctx.counts["examples"]
        value = sum(
            losses.hidden_state_loss(
                mean_over_tokens(s_h, mask)[:, None],
                mean_over_tokens(ctx.teacher.hidden_states[t], teacher_mask)[:, None],
                kind,
                None,
                num_examples,
            )
            for (t, _), s_h in zip(pairs, ctx.student.projected_hidden_states)
        )
        return value / len(pairs), "examples"
    value = sum(
        losses.hidden_state_loss(s_h, ctx.teacher.hidden_states[t], kind, mask, num_tokens)
        for (t, _), s_h in zip(pairs, ctx.student.projected_hidden_states)
    )
    return value / len(pairs), "tokens"


def _attention(ctx: LossContext):
    pairs = ctx.layer_map.attention_indices()
    s_att, t_att, kind = ctx.student.attentions, ctx.teacher.attentions, ctx.args.attention_loss_type
    mask, num_tokens = ctx.attention_mask, ctx.counts["tokens"]
    value = sum(losses.attention_loss(s_att[s], t_att[t], kind, mask, num_tokens) for t, s in pairs)
    return value / len(pairs), "tokens"


def _similarity(ctx: LossContext):
    pairs, mask, teacher_mask = ctx.layer_map.hidden_state_indices(), ctx.attention_mask, ctx.teacher_attention_mask
    value = sum(
        losses.similarity_loss(
            mean_over_tokens(ctx.student.hidden_states[s], mask),
            mean_over_tokens(ctx.teacher.hidden_states[t], teacher_mask),
            ctx.counts["examples"],
        )
        for t, s in pairs
    )
    return value / len(pairs), "examples"


def _relation(ctx: LossContext):
    captures = ctx.relations
    value = relation_loss_terms(
        captures.student.outputs,
        captures.teacher.outputs,
        captures.heads,
        ctx.attention_mask,
        ctx.counts["tokens"],
        relations=tuple(ctx.args.relation_types),
    )
    return value, "tokens"


def mean_over_tokens(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each example's hidden states averaged over its real tokens: `(batch, seq, width)` -> `(batch, width)`."""
    hidden = hidden.float()
    if mask is None:
        return hidden.mean(1)
    weights = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def _kd_card(settings: dict) -> str:
    tokenizers = settings.get("tokenizers")
    if isinstance(tokenizers, dict) and isinstance(tokenizers.get("soft_targets"), str):
        # Two vocabularies: the task's own comparison (causal LMs), on generated batches too.
        return tokenizers["soft_targets"] + _completions_card(settings.get("completions"))
    divergence = settings.get("divergence", "forward_kl")
    if divergence == "reverse_kl":
        text = "Reverse KL divergence, KL(student ‖ teacher), of the softened class probabilities (soft targets)"
    elif divergence == "jsd":
        beta = _mixing_weight(settings.get("divergence_beta"), "β")
        text = (
            f"Generalised Jensen-Shannon divergence{beta} (GKD, Agarwal et al. 2024) between the teacher's and the "
            "student's softened class probabilities (soft targets)"
        )
    elif divergence == "skew_kl":
        alpha = _mixing_weight(settings.get("divergence_alpha"), "α")
        text = (
            f"Skew KL divergence{alpha} (DistiLLM, Ko et al. 2024) to the teacher's softened class probabilities "
            "(soft targets)"
        )
    elif divergence == "tv":
        text = "Total variation distance to the teacher's softened class probabilities (soft targets)"
    else:
        text = "KL divergence to the teacher's softened class probabilities (soft targets)"
    temperature = settings.get("temperature")
    if is_number(temperature):
        text += f", at temperature T = {temperature:g}, scaled by T²"
    return text + _completions_card(settings.get("completions"))


def _completions_card(completions) -> str:
    """Which batches the kd term was computed on when some were generated (on-policy `lmbda`, sequence-level
    `seq_kd`: the `completions` settings of [`DistillationConfig.distillation_settings`]), and how; '' otherwise."""
    if not isinstance(completions, dict):
        return ""
    lmbda = completions.get("lmbda") if is_number(completions.get("lmbda")) else 0
    sources = []
    if lmbda > 0:
        share = "every batch" if lmbda >= 1 else f"a share λ = {lmbda:g} of the batches"
        sources.append(f"the student's own completions of the prompts (on-policy, GKD) in {share}")
    if completions.get("seq_kd") is True and lmbda < 1:
        other = "the other batches" if lmbda > 0 else "every batch"
        sources.append(f"the teacher's completions (sequence-level KD, Kim & Rush 2016) in {other}")
    if not sources:
        return ""
    temperature, top_p = completions.get("generation_temperature"), completions.get("top_p")
    if temperature == 0:
        sampling = "greedy decoding"
    else:
        sampling = "sampled" + (f" at temperature {temperature:g}" if is_number(temperature) else "")
        sampling += f", top-p {top_p:g}" if is_number(top_p) else ""
    new_tokens = completions.get("max_new_tokens")
    limit = f"up to {new_tokens} new tokens, " if is_number(new_tokens) else ""
    prompt = completions.get("prompt_length")
    prompts = f"; plain-text prompts: the first {prompt} tokens" if is_number(prompt) else ""
    return f"; on {' and '.join(sources)}, scored on the generated tokens ({limit}{sampling}{prompts})"


def _mixing_weight(value, symbol: str) -> str:
    return f" ({symbol} = {value:g})" if is_number(value) else ""


def _kind(loss_type) -> str:
    return f" ({loss_type})" if isinstance(loss_type, str) and loss_type else ""


def _hidden_card(settings: dict) -> str:
    kind = _kind(settings.get("hidden_loss_type"))
    if isinstance(settings.get("tokenizers"), dict):
        return (
            f"Hidden-state loss{kind} on the mapped layers, between each example's hidden states averaged over its "
            "own tokens (two tokenizers: the tokens differ, the examples do not)"
        )
    return f"Hidden-state loss{kind} on the mapped layers"


def _relation_card(settings: dict) -> str:
    types = settings.get("relation_types")
    if isinstance(types, (list, tuple)):
        types = ", ".join(types)
    elif isinstance(types, str):
        types = types.replace(",", ", ")
    layers = settings.get("relation_layers")
    return (
        "MiniLM self-attention relations"
        + (f" ({types})" if types else "")
        + (f", teacher:student layers {layers}" if layers else "")
    )


register_term(
    LossTerm(
        name="label",
        weight_field="label_weight",
        default_weight=0.5,
        help="Weight of the hard-label loss (>= 0): cross-entropy with the dataset's labels (squared error for "
        "regression). Needs labels.",
        unit="the labels or examples of the task's label loss",
        needs=frozenset({"labels"}),
        compute=_label,
        reads_student_logits=True,
        card=lambda settings: "Hard-label loss on the dataset's labels (cross-entropy; MSE for regression)",
    )
)
register_term(
    LossTerm(
        name="kd",
        weight_field="kd_weight",
        default_weight=0.5,
        help="Weight of the soft-target divergence to the teacher (`divergence`: forward KL by default), at the "
        "temperature, scaled by T^2 (>= 0); the squared error to the teacher's outputs for regression.",
        unit="the items the task scores (examples, tokens or labels)",
        needs=frozenset({"logits"}),
        compute=_kd,
        reads_student_logits=True,
        card=_kd_card,
        cache_logits="top_k",
    )
)
register_term(
    LossTerm(
        name="logit_mse",
        weight_field="logit_mse_weight",
        default_weight=0.0,
        help="Weight of the mean squared error between student and teacher logits (>= 0).",
        unit="the items the task scores (examples, tokens or labels)",
        needs=frozenset({"logits"}),
        compute=_logit_mse,
        reads_student_logits=True,
        card=lambda settings: "Mean squared error between student and teacher logits",
        cache_logits="all",
    )
)
register_term(
    LossTerm(
        name="hidden",
        weight_field="hidden_weight",
        default_weight=0.0,
        help="Weight of the hidden-state loss on the pairs of `layer_map` (>= 0). When the widths differ a learned "
        "linear projection maps the student to the teacher's width; it is kept in checkpoints but not in the saved "
        "student.",
        unit="real tokens",
        needs=frozenset({"hidden_states"}),
        compute=_hidden,
        card=_hidden_card,
        projects_hidden_states=True,
    )
)
register_term(
    LossTerm(
        name="attention",
        weight_field="attention_weight",
        default_weight=0.0,
        help="Weight of the attention-map loss on the pairs of `layer_map` (>= 0). Needs the same number of heads in "
        "teacher and student; switches both models to eager attention, which returns attention maps.",
        unit="real tokens",
        needs=frozenset({"attentions"}),
        compute=_attention,
        card=lambda settings: f"Attention-map loss{_kind(settings.get('attention_loss_type'))} on the mapped layers",
        cross_tokenizer_refusal="it compares attention maps token by token, and the two tokenizers' tokens differ",
    )
)
register_term(
    LossTerm(
        name="similarity",
        weight_field="similarity_weight",
        default_weight=0.0,
        help="Weight of the similarity-preserving loss (Tung & Mori 2019) on the pairs of `layer_map` (>= 0): the "
        "student matches the teacher's matrix of similarities between the examples of a batch, computed from each "
        "example's hidden states averaged over its real tokens. Works across widths, with no projection.",
        unit="the examples of a batch",
        needs=frozenset({"hidden_states"}),
        compute=_similarity,
        card=lambda settings: (
            "Similarity-preserving loss (Tung & Mori, 2019): example-to-example similarities within a batch"
        ),
    )
)
register_term(
    LossTerm(
        name="relation",
        weight_field="relation_weight",
        default_weight=0.0,
        help="Weight of the MiniLM self-attention relation loss (>= 0): KL between the teacher's and the student's "
        "query-query, key-key and value-value relations of `relation_layers`, taken from the models' own "
        "projections (works with sdpa attention, any head counts).",
        unit="real tokens",
        needs=frozenset({"qkv"}),
        compute=_relation,
        card=_relation_card,
        cross_tokenizer_refusal="it compares attention relations token by token, and the two tokenizers' tokens "
        "differ",
    )
)


# ---- passes that compute several terms at once -----------------------------------------------------------------


@dataclass(frozen=True)
class FusedPass:
    """Several terms computed in one pass over the student's outputs, where computing them one by one would cost more
    (time, or a second vocabulary-wide buffer); each value equals the term's own. The trainer runs the first pass
    of [`FUSED_PASSES`] that applies to a batch and computes the other active terms one by one.

    Args:
        name (`str`): what the pass is called.
        terms (`tuple[str, ...]`): the terms it can compute.
        applies (`Callable[[LossContext], bool]`): whether it computes this batch's terms.
        compute (`Callable[[LossContext], dict]`): term name -> (value, unit) for the terms it computed.
    """

    name: str
    terms: tuple[str, ...]
    applies: Callable[[LossContext], bool]
    compute: Callable[[LossContext], dict[str, tuple[torch.Tensor, str]]]


def _linear_head(ctx: LossContext) -> dict:
    """The kd and label terms from the student's final hidden states and output layer, chunk by chunk: the teacher's
    logits, top-k targets or own head; the same values and gradients as the terms from the logits. A training batch
    without labels leaves the label term to its own (refusing) function."""
    weights = ctx.args.loss_weights
    kd_weight = weights.get("kd", 0.0) if ctx.teacher is not None else 0.0
    label_weight = weights.get("label", 0.0) if ctx.task.labels(ctx.inputs) is not None else 0.0
    if not (kd_weight or label_weight):
        return {}
    labels, mask = ctx.task.label_rows(ctx.inputs, ctx.student.logits.shape)
    count = ctx.counts["labels"]
    kd, label = fused_linear_distillation_loss(
        ctx.student.logits, ctx.teacher.logits if kd_weight else None, labels if label_weight else None, mask,
        count, count, kd_weight, label_weight, ctx.args.temperature, divergence_of(ctx.args),
        ctx.args.loss_chunk_size,
    )  # fmt: skip
    terms = {"kd": (kd, "labels")} if kd_weight else {}
    return {**terms, "label": (label, "labels")} if label_weight else terms


def _forward_kl_and_label_applies(ctx: LossContext) -> bool:
    # At T = 1 the forward KL (from the live teacher's logits or a top-k cache) and a per-row cross entropy read the
    # same softmax of the same logits. Padded vocabularies (sliced logits, see `_forward_kl_and_label`) and other
    # divergences apart.
    args, weights = ctx.args, ctx.args.loss_weights
    return (
        ctx.task.label_loss_per_row
        and not ctx.across_tokenizers
        and ctx.teacher is not None
        and ctx.task.labels(ctx.inputs) is not None
        and weights.get("kd", 0) > 0
        and weights.get("label", 0) > 0
        and getattr(args, "divergence", "forward_kl") == "forward_kl"
        and args.temperature == 1
    )


def _forward_kl_and_label(ctx: LossContext) -> dict:
    """Both terms in one pass that keeps one vocabulary-wide buffer for both gradients (the plain label loss keeps
    one: its log-probabilities)."""
    targets = ctx.logit_targets
    if len(targets) != 1:
        return {}
    (target,) = targets
    if target.student is not ctx.student.logits or target.teacher.shape != target.student.shape:
        return {}
    labels, _ = ctx.task.label_rows(ctx.inputs, target.student.shape)
    kd, label = losses.forward_kl_and_cross_entropy(
        target.student, target.teacher, labels, target.mask, ctx.counts[target.unit], ctx.counts["labels"]
    )
    return {"kd": (kd, target.unit), "label": (label, "labels")}


# The fused linear loss (`hf_distill.fused_linear`): when the student's `logits` are a `LinearHead` (see
# [`linear_head_refusal`]), no logits over the vocabulary are made in a training step.
LINEAR_HEAD = FusedPass(
    "fused linear loss",
    ("kd", "label"),
    lambda ctx: ctx.task.label_loss_per_row and isinstance(getattr(ctx.student, "logits", None), LinearHead),
    _linear_head,
)
FORWARD_KL_AND_LABEL = FusedPass(
    "forward KL and cross entropy", ("kd", "label"), _forward_kl_and_label_applies, _forward_kl_and_label
)
FUSED_PASSES: tuple[FusedPass, ...] = (LINEAR_HEAD, FORWARD_KL_AND_LABEL)


def fused_terms(ctx: LossContext) -> dict[str, tuple[torch.Tensor, str]]:
    """The terms of the first pass of [`FUSED_PASSES`] that applies to this batch: term name -> (value, unit); `{}`
    when none does."""
    for fused in FUSED_PASSES:
        if fused.applies(ctx):
            return fused.compute(ctx)
    return {}


def linear_head_refusal(task, terms: list[LossTerm], student, placement: str) -> str | None:
    """Why a training step of this run cannot take the fused linear loss ([`LINEAR_HEAD`]), or `None` when it can.

    It can when the task's label loss is per row of the logits (`label_loss_per_row`), the pass computes every active
    term that reads the student's logits, at least one such term is active, teacher and student predict over the same
    classes (no padded vocabulary compared over the tokenizer's), the student's weights are whole on each process
    (not sharded by FSDP or DeepSpeed ZeRO-3) and its logits are its output layer's linear map
    ([`~hf_distill.fused_linear.probe_linear_head`]).

    Args:
        task ([`~hf_distill.tasks.Task`]): the models' task (after the compatibility checks).
        terms (`list[LossTerm]`): the active loss terms.
        student (`nn.Module`): the student.
        placement (`str`): how the engine places a model ([`~hf_distill.teacher.teacher_placement`]).
    """
    if not task.label_loss_per_row:
        return f"the {task.name} task has no fused linear loss"
    logits_terms = [term for term in terms if term.reads_student_logits]
    others = [term.weight_field for term in logits_terms if term.name not in LINEAR_HEAD.terms]
    if others:
        return f"{' and '.join(others)} > 0 compare the student's whole logits"
    if not logits_terms:
        return "no active loss term reads the student's logits"
    if getattr(task, "compared_vocabulary", None) is not None:
        return "teacher and student output widths differ by padding rows, compared over the tokenizer's tokens"
    if placement in ("deepspeed-zero3", "fsdp"):
        return f"the student's output layer is sharded ({placement})"
    return probe_linear_head(student)
