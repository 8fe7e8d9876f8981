import warnings

import pytest

from hf_distill import LayerMap, LayerPair
from hf_distill.layer_map import (
    DEFAULT_LAYER_MAP_STRATEGY,
    LAYER_MAP_STRATEGIES,
    LAYER_STRATEGIES,
    strategy_teacher_layers,
)


@pytest.mark.parametrize(
    "spec, n, k, expected",
    [
        ("uniform", 6, 3, "2:1,4:2,6:3"),
        ("uniform", 12, 4, "3:1,6:2,9:3,12:4"),
        ("uniform", 4, 3, "1:1,3:2,4:3"),
        ("every_other", 6, 3, "1:1,3:2,5:3"),
        ("every_other", 12, 4, "1:1,3:2,5:3,7:4"),
        ("every_other", 5, 3, "1:1,3:2,5:3"),
        ("first", 6, 2, "1:1,2:2"),
        ("last", 6, 2, "5:1,6:2"),
        ("0:0,3:1,6:2", 6, 2, "0:0,3:1,6:2"),
        ([[0, 0], [6, 2]], 6, 2, "0:0,6:2"),
    ],
)
def test_strategies_and_explicit_pairs(spec, n, k, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is deprecated
        assert LayerMap.from_spec(spec, n, k).spec() == expected


@pytest.mark.parametrize(
    "n, k, expected",
    [(12, 4, "3:1,6:2,9:3,12:4"), (7, 3, "2:1,4:2,6:3")],
)
def test_skip_still_works_with_a_future_warning(n, k, expected):
    with pytest.warns(FutureWarning, match="'skip' is deprecated.*'uniform'"):
        layer_map = LayerMap.from_spec("skip", n, k)
    assert layer_map.spec() == expected
    if n % k == 0:  # the same as uniform when k divides n
        assert layer_map == LayerMap.from_spec("uniform", n, k)


def test_one_vocabulary_and_defaults():
    assert LAYER_STRATEGIES == ("uniform", "every_other", "first", "last")
    assert LAYER_MAP_STRATEGIES == (*LAYER_STRATEGIES, "skip")
    assert DEFAULT_LAYER_MAP_STRATEGY == "uniform"  # existing recipes keep their pairs


@pytest.mark.parametrize(
    "strategy, n, k, expected",
    [
        ("uniform", 12, 4, [3, 6, 9, 12]),
        ("uniform", 6, 3, [2, 4, 6]),
        ("every_other", 12, 4, [1, 3, 5, 7]),
        ("every_other", 12, None, [1, 3, 5, 7, 9, 11]),
        ("every_other", 5, None, [1, 3, 5]),
        ("first", 6, 2, [1, 2]),
        ("last", 6, 2, [5, 6]),
    ],
)
def test_strategy_teacher_layers_in_hidden_states_numbering(strategy, n, k, expected):
    assert strategy_teacher_layers(strategy, n, k) == expected


def test_embedding_offset_is_handled_in_one_place():
    layer_map = LayerMap.from_spec("0:0,2:1,4:2", 4, 2)
    assert layer_map.hidden_state_indices() == [(0, 0), (2, 1), (4, 2)]
    # attentions has no embedding entry: layer i is attentions[i - 1], and the 0:0 pair has no attention map.
    assert layer_map.attention_indices() == [(1, 0), (3, 1)]
    assert layer_map.pairs[0] == LayerPair(teacher=0, student=0)


@pytest.mark.parametrize(
    "spec, n, k, message",
    [
        ("7:1", 6, 2, "out of range: the teacher has 6 layers"),
        ("2:3", 6, 2, "out of range: the student has 2 layers"),
        ("-1:1", 6, 2, "cannot read '-1:1'"),
        ("2-1", 6, 2, "cannot read '2-1'"),
        ("middle", 6, 2, "cannot read 'middle'"),
        ("uniform", 2, 3, "at most 2 layers"),
        ("every_other", 6, 4, r"layer_map='every_other': every_other from 6 teacher layers allows .* <= 3, got 4"),
        ("2:1,2:1", 6, 2, "duplicate pairs"),
        ([[1, 2, 3]], 6, 2, "cannot read"),
    ],
)
def test_bad_specs_name_the_problem(spec, n, k, message):
    with pytest.raises(ValueError, match=message):
        LayerMap.from_spec(spec, n, k)
