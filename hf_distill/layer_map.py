"""Which student layer learns from which teacher layer.

Layers are numbered as `hidden_states` numbers them: layer 0 is the embedding output, layer `i` (1-based) is the output
of the `i`-th transformer block. `attentions` has no entry for the embeddings, so the attention map of layer `i` is
`attentions[i - 1]`; this offset is handled here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LAYER_MAP_STRATEGIES = ("uniform", "first", "last", "skip")


@dataclass(frozen=True)
class LayerPair:
    """One matched pair, in `hidden_states` numbering (0 = embeddings, i = output of block i)."""

    teacher: int
    student: int


@dataclass(frozen=True)
class LayerMap:
    """An ordered set of teacher-student layer pairs.

    Build one with [`LayerMap.from_spec`], which accepts a strategy name or explicit pairs:

    - `"uniform"`: student layer i (1..k) learns from teacher layer round(i * n / k), so the last student layer
      matches the last teacher layer (TinyBERT's mapping; 6 -> 3 layers gives 2:1, 4:2, 6:3);
    - `"skip"`: teacher layer i * (n // k);
    - `"first"`: teacher layer i;
    - `"last"`: teacher layer n - k + i;
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
            teacher_of = {
                "uniform": lambda i: round(i * n / k),
                "skip": lambda i: i * (n // k),
                "first": lambda i: i,
                "last": lambda i: n - k + i,
            }[spec]
            layer_map = cls(tuple(LayerPair(teacher_of(i), i) for i in range(1, k + 1)))
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
        f"a strategy ({', '.join(LAYER_MAP_STRATEGIES)}) or teacher:student pairs such as '2:1,4:2,6:3' "
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
