"""The runtime's pure argument and batch helpers (the parts that run user code are in the integration tests)."""

from collections import namedtuple

import pytest

from cloudburst.executor.runtime import (
    batch_result_problem,
    collect_references,
    flatten_arguments,
    substitute_references,
    transpose_batch,
)
from cloudburst.shared.reference import CloudburstReference

Pair = namedtuple("Pair", "a b")


def test_only_exact_tuples_are_spliced_into_the_positional_arguments():
    assert flatten_arguments([1, (2, 3), [4, 5], Pair(6, 7), ()]) == [1, 2, 3, [4, 5], Pair(6, 7)]


def test_top_level_references_are_collected_and_nested_ones_left_alone():
    ref = CloudburstReference("k")
    nested = CloudburstReference("nested")
    assert collect_references([1, ref, {"x": nested}, [nested]]) == [ref]


def test_references_inside_lists_count_when_every_argument_is_a_list():
    a, b = CloudburstReference("a"), CloudburstReference("b", deserialize=False)
    assert collect_references([[a, 1], [2, b]]) == [a, b]
    assert collect_references([]) == []


def test_references_are_replaced_by_key_and_deserialize_mode():
    resolved = {("k", True): "value", ("k", False): b"raw"}
    arguments = [CloudburstReference("k"), 1, CloudburstReference("k", deserialize=False)]
    assert substitute_references(arguments, resolved) == ["value", 1, b"raw"]
    assert substitute_references([[CloudburstReference("k"), 2]], resolved) == [["value", 2]]


def test_a_batch_is_transposed_into_one_list_per_argument_position():
    assert transpose_batch([[1, "a"], [2, "b"], [3, "c"]]) == [[1, 2, 3], ["a", "b", "c"]]
    assert transpose_batch([[], []]) == []


def test_a_ragged_batch_is_refused():
    with pytest.raises(ValueError, match="different argument counts"):
        transpose_batch([[1], [1, 2]])


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ([1, 2], None),
        ((1, 2), "returned a 'tuple'"),
        (7, "returned a 'int'"),
        ([1], "returned 1 results for a batch of 2"),
        ([1, 2, 3], "returned 3 results for a batch of 2"),
    ],
)
def test_batch_results_must_be_a_list_with_one_result_per_request(result, problem):
    found = batch_result_problem(result, 2)
    if problem is None:
        assert found is None
    else:
        assert problem in found
        assert found.endswith("it must return a list with one result per request")
