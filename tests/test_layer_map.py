import pytest

from hf_distill import LayerMap, LayerPair


@pytest.mark.parametrize(
    "spec, n, k, expected",
    [
        ("uniform", 6, 3, "2:1,4:2,6:3"),
        ("uniform", 12, 4, "3:1,6:2,9:3,12:4"),
        ("uniform", 4, 3, "1:1,3:2,4:3"),
        ("skip", 12, 4, "3:1,6:2,9:3,12:4"),
        ("skip", 7, 3, "2:1,4:2,6:3"),
        ("first", 6, 2, "1:1,2:2"),
        ("last", 6, 2, "5:1,6:2"),
        ("0:0,3:1,6:2", 6, 2, "0:0,3:1,6:2"),
        ([[0, 0], [6, 2]], 6, 2, "0:0,6:2"),
    ],
)
def test_strategies_and_explicit_pairs(spec, n, k, expected):
    assert LayerMap.from_spec(spec, n, k).spec() == expected


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
        ("2:1,2:1", 6, 2, "duplicate pairs"),
        ([[1, 2, 3]], 6, 2, "cannot read"),
    ],
)
def test_bad_specs_name_the_problem(spec, n, k, message):
    with pytest.raises(ValueError, match=message):
        LayerMap.from_spec(spec, n, k)
