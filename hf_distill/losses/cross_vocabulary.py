"""Losses across tokenizers: a teacher and a student of different vocabularies (causal language models).

Two vocabularies have no class-by-class comparison: these losses compare the probability vectors of aligned
predictions without a token-to-token map (ULD), or with one only for the tokens both vocabularies spell alike (span
alignment). Which predictions are aligned is a `TokenAlignment`: by rank, as ULD aligns them, or by the text the
tokens cover (`hf_distill.alignment.span_groups`, batched by the causal-LM task).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reduction import _reduce

__all__ = ["TokenAlignment", "span_alignment_loss", "universal_logit_distillation"]


@dataclass(frozen=True)
class TokenAlignment:
    r"""Which student and teacher predictions a cross-vocabulary loss compares, in a batch of two tokenizations.

    Item $g$ of row $b$ pairs the student's prediction at logit position `student_positions[b, g]` with the teacher's
    at `teacher_positions[b, g]` (a causal LM's logits at position $i$ predict the token at $i + 1$). Rows hold
    different numbers of items; `mask` marks those that exist.

    With merges (an item whose text one side spells in several tokens), `student_merges[b, i] = g` marks each logit
    position $i$ that predicts a later token of item $g$, and `student_next[b, i]` is the token it predicts; the
    probabilities of those tokens multiply into the item's distribution ([`span_alignment_loss`]). The same for the
    teacher.

    Attributes:
        student_positions (`torch.LongTensor` of shape `(batch, G)`): the student's logit position of each item.
        teacher_positions (`torch.LongTensor` of shape `(batch, G)`): the teacher's.
        mask (`torch.BoolTensor` of shape `(batch, G)`): True for the items that exist.
        student_merges (`torch.LongTensor` of shape `(batch, student_len)`, *optional*): item of each later-token
            position, -1 elsewhere. `teacher_merges` likewise, `(batch, teacher_len)`.
        student_next (`torch.LongTensor`, the shape of the merges, *optional*): the token each logit position
            predicts (read where the merges are >= 0). `teacher_next` likewise.
    """

    student_positions: torch.Tensor
    teacher_positions: torch.Tensor
    mask: torch.Tensor
    student_merges: torch.Tensor | None = None
    teacher_merges: torch.Tensor | None = None
    student_next: torch.Tensor | None = None
    teacher_next: torch.Tensor | None = None

    @classmethod
    def by_rank(cls, student_targets: torch.Tensor, teacher_targets: torch.Tensor) -> TokenAlignment:
        """The $k$-th scored prediction of each side paired with the $k$-th of the other, $k$ up to the shorter side's
        count (ULD's alignment: Boizard et al. compare the answers' tokens position by position).

        Args:
            student_targets (`torch.BoolTensor` of shape `(batch, student_len)`): the logit positions that predict a
                scored token; `teacher_targets` likewise.
        """
        count = torch.minimum(student_targets.sum(1), teacher_targets.sum(1))
        width = int(count.max()) if count.numel() else 0
        # A stable sort of "not scored" puts each row's scored positions first, in order.
        student = torch.argsort((~student_targets).to(torch.int8), dim=1, stable=True)[:, :width]
        teacher = torch.argsort((~teacher_targets).to(torch.int8), dim=1, stable=True)[:, :width]
        mask = torch.arange(width, device=count.device)[None, :] < count[:, None]
        return cls(student, teacher.to(student.device), mask.to(student.device))


def _rows(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`values[b, positions[b, g]]` for every row and item: `(batch, G, ...)`."""
    batch = torch.arange(values.shape[0], device=values.device)[:, None]
    return values[batch, positions.to(values.device)]


def _sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`sum_r |sort_desc(p)_r - sort_desc(q)_r|` over the last dimension, the shorter one zero-padded."""
    p = p.sort(dim=-1, descending=True).values
    q = q.sort(dim=-1, descending=True).values
    width = max(p.shape[-1], q.shape[-1])
    p = F.pad(p, (0, width - p.shape[-1]))
    q = F.pad(q, (0, width - q.shape[-1]))
    return (p - q).abs().sum(-1)


def universal_logit_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alignment: TokenAlignment,
    temperature: float = 1.0,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Universal Logit Distillation (ULD; Boizard et al. 2024, *Towards Cross-Tokenizer Distillation: the Universal
    Logit Distillation Loss for LLMs*): aligned predictions of two vocabularies compared by their sorted probabilities.

    With $p^s = \mathrm{softmax}(z^s_i / T)$ over the student's $V_s$ tokens and $p^t = \mathrm{softmax}(z^t_j / T)$
    over the teacher's $V_t$ for an aligned pair $(i, j)$, each sorted in decreasing order and zero-padded to
    $V = \max(V_s, V_t)$ (the union vocabulary), per pair:

    $$\ell = \sum_{r=1}^{V} \big|\, \mathrm{sort}_\downarrow(p^s)_r - \mathrm{sort}_\downarrow(p^t)_r \,\big|$$

    the paper's closed form of the Wasserstein distance between the two distributions, which needs no map from one
    vocabulary to the other. Not scaled by $T^2$ (it compares probabilities, not log-probabilities).

    Args:
        student_logits (`torch.Tensor` of shape `(batch, student_len, V_s)`): the student's logits on its own
            tokenization.
        teacher_logits (`torch.Tensor` of shape `(batch, teacher_len, V_t)`): the teacher's, on its own.
        alignment ([`TokenAlignment`]): the pairs (ULD pairs by rank: [`TokenAlignment.by_rank`]).
        temperature (`float`): $T > 0$, applied to both.
        num_items (*optional*): divisor of the summed loss; defaults to the number of pairs.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p_s = torch.softmax(_rows(student_logits, alignment.student_positions).float() / temperature, dim=-1)
    p_t = torch.softmax(_rows(teacher_logits, alignment.teacher_positions).float() / temperature, dim=-1)
    return _reduce(_sorted_l1(p_s, p_t.to(p_s.device)), alignment.mask, num_items)


def _merged_probabilities(
    log_p: torch.Tensor,
    positions: torch.Tensor,
    merges: torch.Tensor | None,
    next_tokens: torch.Tensor | None,
) -> torch.Tensor:
    """Each item's distribution at its first position, times the probabilities of its later tokens: `(batch, G,
    V)`."""
    first = _rows(log_p, positions)
    if merges is None:
        return first.exp()
    merges, next_tokens = merges.to(log_p.device), next_tokens.to(log_p.device)
    later = merges >= 0
    predicted = log_p.gather(-1, next_tokens.clamp_min(0)[..., None]).squeeze(-1).masked_fill(~later, 0.0)
    log_mass = torch.zeros(positions.shape, dtype=log_p.dtype, device=log_p.device)
    log_mass = log_mass.scatter_add(1, merges.clamp_min(0), predicted)
    return (first + log_mass[..., None]).exp()


def span_alignment_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alignment: TokenAlignment,
    shared: tuple[torch.Tensor, torch.Tensor],
    temperature: float = 1.0,
    num_items: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Span alignment across vocabularies, in the manner of GOLD (Patiño et al. 2025, TRL's hybrid ULD) and MinED
    (Wan et al. 2024): predictions aligned by the text their tokens cover, the tokens both vocabularies spell alike
    compared one to one, [`universal_logit_distillation`]'s sorted comparison for the rest.

    An item $g$ is a group of tokens covering the same text on both sides ([`~hf_distill.alignment.span_groups`]):
    student tokens $s_1 \dots s_k$, whose first is predicted at logit position $i$, and teacher tokens $t_1 \dots t_m$,
    first predicted at $j$. With $p^s_i = \mathrm{softmax}(z^s_i / T)$ and $p^t_j$ likewise, a side that spells the
    text in several tokens has its mass of the merged span combined (GOLD's "observed" merge): the distribution at the
    first position times the probabilities of the later tokens,

    $$q^s_g(v) = p^s_i(v) \prod_{l=2}^{k} p^s(s_l \mid s_{<l}), \qquad
      q^t_g(u) = p^t_j(u) \prod_{l=2}^{m} p^t(t_l \mid t_{<l}),$$

    so that $q^s_g(s_1)$ is the student's probability of the whole span. With $M$ the pairs $(u, v)$ of teacher and
    student ids of the tokens spelled alike in both vocabularies, per item:

    $$\ell_g = \sum_{(u, v) \in M} \big|q^t_g(u) - q^s_g(v)\big|
      + \sum_r \big|\,\mathrm{sort}_\downarrow(q^t_g|_{V_t \setminus M})_r
      - \mathrm{sort}_\downarrow(q^s_g|_{V_s \setminus M})_r\,\big|$$

    (the shorter sorted vector zero-padded). Where both vocabularies spell every token alike this is the L1 distance
    of the two distributions; where they share none, ULD. Not scaled by $T^2$.

    Args:
        student_logits (`torch.Tensor` of shape `(batch, student_len, V_s)`): the student's logits on its own
            tokenization.
        teacher_logits (`torch.Tensor` of shape `(batch, teacher_len, V_t)`): the teacher's, on its own.
        alignment ([`TokenAlignment`]): the groups' first positions, and the merges of their later tokens.
        shared (`tuple[torch.Tensor, torch.Tensor]`): the teacher ids and the student ids of the tokens spelled alike
            (`hf_distill.alignment.shared_vocabulary`), in pairs.
        temperature (`float`): $T > 0$, applied to both.
        num_items (*optional*): divisor of the summed loss; defaults to the number of groups.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1).to(log_p_s.device)
    q_s = _merged_probabilities(log_p_s, alignment.student_positions, alignment.student_merges, alignment.student_next)
    q_t = _merged_probabilities(log_p_t, alignment.teacher_positions, alignment.teacher_merges, alignment.teacher_next)
    teacher_ids, student_ids = (ids.to(q_s.device, torch.long) for ids in shared)
    matched = (q_t[..., teacher_ids] - q_s[..., student_ids]).abs().sum(-1)
    unmatched = _sorted_l1(_without(q_s, student_ids), _without(q_t, teacher_ids))
    return _reduce(matched + unmatched, alignment.mask, num_items)


def _without(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`values` without the classes `ids` (last dimension)."""
    keep = torch.ones(values.shape[-1], dtype=torch.bool, device=values.device)
    keep[ids] = False
    return values[..., keep]
