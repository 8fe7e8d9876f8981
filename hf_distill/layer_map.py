"""Which student layer learns from which teacher layer, and which teacher layers a built student copies.

Layers are numbered as `hidden_states` numbers them: layer 0 is the embedding output, layer `i` (1-based) is the output
of the `i`-th transformer block. `attentions` has no entry for the embeddings, so the attention map of layer `i` is
`attentions[i - 1]`; this offset is handled here and nowhere else.

One vocabulary of layer strategies serves both the student builder and the layer map: for a strategy, a teacher of `n`
layers and a student of `k`, [`strategy_teacher_layers`] gives the teacher layers; [`~hf_distill.build_student`]
copies student block `i` from teacher block `layer - 1` (the block that writes that layer), and [`LayerMap`] pairs
student layer `i` with the same teacher layer. So a student built with `"uniform"` and trained with
`layer_map="uniform"` learns each layer from the teacher layer it was copied from.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_LAYER_MAP_STRATEGY",
    "DEFAULT_STUDENT_STRATEGY",
    "LAYER_MAP_STRATEGIES",
    "LAYER_STRATEGIES",
    "LayerMap",
    "LayerPair",
    "parse_layer_pairs",
    "strategy_teacher_layers",
]

LAYER_STRATEGIES = ("uniform", "every_other", "first", "last")
# What `build_student` (and the command's student_layer_strategy) use unless told otherwise: DistilBERT's choice.
DEFAULT_STUDENT_STRATEGY = "every_other"
# What the hidden-state and attention losses pair unless told otherwise: TinyBERT's mapping.
DEFAULT_LAYER_MAP_STRATEGY = "uniform"
# `LayerMap` also accepts "skip" (deprecated): teacher layer i * (n // k), which is "uniform" when k divides n.
LAYER_MAP_STRATEGIES = (*LAYER_STRATEGIES, "skip")


def strategy_teacher_layers(
    strategy: str, num_teacher_layers: int, num_student_layers: int | None = None
) -> list[int]:
    """
    The teacher layers, in `hidden_states` numbering (1..n), that student layers 1..k take after under `strategy`.

    - `"uniform"`: round(i * n / k), so the last student layer matches the last teacher layer (TinyBERT's mapping;
      12 -> 4 gives 3, 6, 9, 12; 6 -> 3 gives 2, 4, 6);
    - `"every_other"`: 1, 3, 5, ... (the outputs of blocks 0, 2, 4, ..., DistilBERT's choice); `k` defaults to
      ceil(n / 2) and may not exceed it;
    - `"first"`: 1..k;
    - `"last"`: n-k+1..n.

    Args:
        strategy (`str`): One of `LAYER_STRATEGIES`.
        num_teacher_layers (`int`): The teacher's number of layers `n`.
        num_student_layers (`int`, *optional*): The student's number of layers `k`; required except for
            `"every_other"`.

    Returns:
        `list[int]`: `k` strictly increasing teacher layers in 1..n; student layer `i` (1-based) takes entry `i - 1`.

    Raises:
        `ValueError`: for an unknown strategy or a `k` the strategy cannot serve.
    """
    n, k = num_teacher_layers, num_student_layers
    if strategy not in LAYER_STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; valid strategies are {', '.join(LAYER_STRATEGIES)}.")
    if strategy == "every_other":
        most = math.ceil(n / 2)
        k = most if k is None else k
        if not 1 <= k <= most:
            raise ValueError(f"every_other from {n} teacher layers allows 1 <= num_layers <= {most}, got {k}.")
        return [2 * i - 1 for i in range(1, k + 1)]
    if k is None:
        raise ValueError(f"strategy={strategy!r} requires `num_layers`.")
    if not 1 <= k <= n:
        raise ValueError(f"num_layers must satisfy 1 <= num_layers <= {n} (teacher layers), got {k}.")
    if strategy == "first":
        return list(range(1, k + 1))
    if strategy == "last":
        return list(range(n - k + 1, n + 1))
    # Spacing n / k >= 1, so rounding keeps the layers distinct and increasing, from >= 1 up to exactly n.
    return [round(i * n / k) for i in range(1, k + 1)]


@dataclass(frozen=True)
class LayerPair:
    """One matched pair, in `hidden_states` numbering (0 = embeddings, i = output of block i)."""

    teacher: int
    student: int


@dataclass(frozen=True)
class LayerMap:
    """An ordered set of teacher-student layer pairs.

    Build one with [`LayerMap.from_spec`], which accepts a strategy name or explicit pairs:

    - a strategy of `LAYER_STRATEGIES`: student layer i (1..k) learns from the teacher layer that
      [`strategy_teacher_layers`] gives, the same that [`~hf_distill.build_student`] copies for that strategy:
      `"uniform"` round(i * n / k), so the last student layer matches the last teacher layer (TinyBERT's mapping,
      the default; 6 -> 3 layers gives 2:1, 4:2, 6:3); `"every_other"` 2i - 1; `"first"` i; `"last"` n - k + i;
    - `"skip"` (deprecated, use `"uniform"`): teacher layer i * (n // k);
    - explicit pairs `"teacher:student,..."` (e.g. `"0:0,3:1,6:2"`), or a list of `[teacher, student]` pairs.
    """

    pairs: tuple[LayerPair, ...]

    @classmethod
    def from_spec(
        cls, spec: str | Sequence[Sequence[int]], num_teacher_layers: int, num_student_layers: int
    ) -> LayerMap:
        """Resolves `spec` (see the class docstring) against the layer counts and validates the result.

        Raises:
            `ValueError`: unknown strategy, malformed pairs, or a layer out of range for the given counts.
        """
        n, k = num_teacher_layers, num_student_layers
        if isinstance(spec, str) and spec in LAYER_MAP_STRATEGIES:
            if k > n:
                raise ValueError(
                    f"layer_map={spec!r} needs a student with at most {n} layers (the teacher's), got {k}"
                )
            if spec == "skip":
                warnings.warn(
                    "layer_map='skip' is deprecated and will be removed; use 'uniform', which pairs the same layers "
                    "when the teacher's layer count is a multiple of the student's",
                    FutureWarning,
                    stacklevel=2,
                )
                teacher_layers = [i * (n // k) for i in range(1, k + 1)]
            else:
                try:
                    teacher_layers = strategy_teacher_layers(spec, n, k)
                except ValueError as error:
                    raise ValueError(f"layer_map={spec!r}: {error}") from None
            layer_map = cls(tuple(LayerPair(t, i) for i, t in enumerate(teacher_layers, start=1)))
        else:
            layer_map = cls(tuple(LayerPair(t, s) for t, s in parse_layer_pairs(spec)))
        layer_map.validate(n, k)
        return layer_map

    def validate(self, num_teacher_layers: int, num_student_layers: int) -> None:
        """Checks every pair against the number of blocks of each model (index 0, the embeddings, is allowed)."""
        if not self.pairs:
            raise ValueError("layer_map has no pairs")
        for pair in self.pairs:
            for side, index, count in (
                ("teacher", pair.teacher, num_teacher_layers),
                ("student", pair.student, num_student_layers),
            ):
                if not 0 <= index <= count:
                    raise ValueError(
                        f"layer_map pair {pair.teacher}:{pair.student} is out of range: the {side} has {count} "
                        f"layers, so its layer index must be in 0..{count} (0 is the embedding output)"
                    )
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError(f"layer_map has duplicate pairs: {self.spec()}")

    def hidden_state_indices(self) -> list[tuple[int, int]]:
        """(teacher, student) indices into `outputs.hidden_states`, one per pair."""
        return [(p.teacher, p.student) for p in self.pairs]

    def attention_indices(self) -> list[tuple[int, int]]:
        """(teacher, student) indices into `outputs.attentions`; pairs involving the embeddings have no attention."""
        return [(p.teacher - 1, p.student - 1) for p in self.pairs if p.teacher > 0 and p.student > 0]

    def spec(self) -> str:
        """The explicit `"teacher:student,..."` form, for logs, configs and model cards."""
        return ",".join(f"{p.teacher}:{p.student}" for p in self.pairs)


def parse_layer_pairs(spec: str | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Parses explicit pairs, `"2:1,4:2"` or `[[2, 1], [4, 2]]`, into `[(2, 1), (4, 2)]` (teacher, student).

    Raises:
        `ValueError`: naming the malformed part and the expected form.
    """
    expected = (
        f"a strategy ({', '.join(LAYER_STRATEGIES)}) or teacher:student pairs such as '2:1,4:2,6:3' "
        "(layer 0 is the embedding output)"
    )
    if isinstance(spec, str):
        items = [part.strip() for part in spec.split(",") if part.strip()]
        pairs = []
        for item in items:
            teacher, sep, student = item.partition(":")
            if not sep or not teacher.strip().isdigit() or not student.strip().isdigit():
                raise ValueError(f"layer_map: cannot read {item!r} in {spec!r}; expected {expected}")
            pairs.append((int(teacher), int(student)))
    else:
        pairs = []
        for item in spec:
            if len(item) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in item):
                raise ValueError(f"layer_map: cannot read {item!r}; expected {expected}")
            pairs.append((item[0], item[1]))
    if not pairs:
        raise ValueError(f"layer_map is empty; expected {expected}")
    return pairs
