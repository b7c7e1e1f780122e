"""Hypothesis proofs that every lattice's merge is a join: associative, commutative, idempotent, monotone.

The strategies draw from tiny alphabets on purpose: with few node ids, keys and values, equal clocks, dominated
clocks, concurrent clocks, timestamp ties and shared keys all occur often, which is where merges go wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.lattices import (
    BoolLattice,
    CausalOrder,
    CausalVersion,
    Lattice,
    LwwLattice,
    MapLattice,
    MaxLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
    VectorClock,
)

EXAMPLES = 500

small_bytes = st.sampled_from([b"", b"a", b"b", b"ab", b"\x00", b"\xff"])
small_keys = st.sampled_from(["k", "l", "m"])

lww = st.builds(
    LwwLattice,
    timestamp=st.integers(0, 3) | st.integers(0, 2**64 - 1),
    value=small_bytes | st.binary(max_size=4),
)
sets = st.frozensets(small_bytes, max_size=4).map(SetLattice)
ordered_sets = st.lists(small_bytes, max_size=5).map(OrderedSetLattice.of)
maxes = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, 2**70]),
).map(MaxLattice)
bools = st.booleans().map(BoolLattice)
priorities = st.builds(
    PriorityLattice,
    priority=st.sampled_from([0.0, -0.0, 1.0, 1, -1.5]) | st.floats(allow_nan=False),
    value=small_bytes,
)
max_maps = st.dictionaries(small_keys, maxes, max_size=3).map(MapLattice.of)
set_maps = st.dictionaries(small_keys, sets, max_size=3).map(MapLattice.of)

vector_clocks = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 3) | st.integers(0, 2**32 - 1),
    max_size=3,
).map(VectorClock.of)
# Two nodes and counters up to 2 give only nine clocks, so versions often tie, dominate or are concurrent.
causal_clocks = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 2), max_size=2).map(VectorClock.of)
causal_values = st.frozensets(st.sampled_from([b"x", b"y", b"z"]), max_size=2)
no_dependencies: MapLattice[str, VectorClock] = MapLattice.of({})
dependencies = st.dictionaries(st.sampled_from(["k", "l"]), causal_clocks, max_size=2).map(MapLattice.of)

single_versions = st.builds(CausalVersion, causal_clocks, st.just(no_dependencies), causal_values)
multi_versions = st.builds(CausalVersion, causal_clocks, dependencies, causal_values, st.sampled_from(["", "r1", "r2"]))
single_causal = st.lists(single_versions, max_size=3).map(SingleKeyCausalLattice.from_versions)
multi_causal = st.lists(multi_versions, max_size=3).map(MultiKeyCausalLattice.from_versions)

KINDS = [
    pytest.param(lww, id="lww"),
    pytest.param(sets, id="set"),
    pytest.param(ordered_sets, id="ordered_set"),
    pytest.param(maxes, id="max"),
    pytest.param(bools, id="bool"),
    pytest.param(priorities, id="priority"),
    pytest.param(max_maps, id="map_of_max"),
    pytest.param(set_maps, id="map_of_set"),
    pytest.param(vector_clocks, id="vector_clock"),
    pytest.param(single_causal, id="single_key_causal"),
    pytest.param(multi_causal, id="multi_key_causal"),
]
CAUSAL_KINDS = [
    pytest.param(single_causal, id="single_key_causal"),
    pytest.param(multi_causal, id="multi_key_causal"),
]


def _draw(data: st.DataObject, kind: st.SearchStrategy[Any], count: int) -> list[Any]:
    return [data.draw(kind, label=name) for name in "abc"[:count]]


def _assert_same(left: Lattice, right: Lattice) -> None:
    assert left == right
    assert hash(left) == hash(right), "equal lattices must hash equally"


def _assert_antichain(lattice: SingleKeyCausalLattice | MultiKeyCausalLattice) -> None:
    clocks = [version.vector_clock for version in lattice.versions]
    assert len(clocks) == len(set(clocks)), "two versions share a clock"
    for a in clocks:
        for b in clocks:
            assert a.compare(b) is not CausalOrder.BEFORE, f"{a} is strictly dominated by {b}"


def _associative(a: Any, b: Any, c: Any) -> None:
    _assert_same(a.merge(b).merge(c), a.merge(b.merge(c)))


def _commutative(a: Any, b: Any, c: Any) -> None:
    _assert_same(a.merge(b), b.merge(a))
    _assert_same(b.merge(c), c.merge(b))


def _idempotent(a: Any, b: Any, c: Any) -> None:
    _assert_same(a.merge(a), a)
    _assert_same(b.merge(b), b)


def _monotone(a: Any, b: Any, c: Any) -> None:
    joined = a.merge(b)
    assert type(joined) is type(a)
    _assert_same(joined.merge(a), joined)
    _assert_same(joined.merge(b), joined)
    _assert_same(a.merge(joined), joined)


LAWS: dict[str, Callable[[Any, Any, Any], None]] = {
    "associativity": _associative,
    "commutativity": _commutative,
    "idempotence": _idempotent,
    "monotonicity": _monotone,
}


# One test checks all four laws on each drawn triple: the draws dominate the run time, so sharing them keeps
# the file fast while every law still sees EXAMPLES triples for every kind.
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_merge_is_a_join(kind: st.SearchStrategy[Any], data: st.DataObject) -> None:
    a, b, c = _draw(data, kind, 3)
    before = [(x, hash(x)) for x in (a, b, c)]
    for name, law in LAWS.items():
        try:
            law(a, b, c)
        except AssertionError as error:
            raise AssertionError(f"{name} violated: {error}") from error
    assert [(x, hash(x)) for x in (a, b, c)] == before, "merge changed an operand"


@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_merged_causal_lattices_are_antichains(kind: st.SearchStrategy[Any], data: st.DataObject) -> None:
    a, b, c = _draw(data, kind, 3)
    for lattice in (a, b, a.merge(b), a.merge(b).merge(c), c.merge(b.merge(a))):
        _assert_antichain(lattice)
    joined = a.merge(b)
    assert joined.vector_clock == a.vector_clock.merge(b.vector_clock)
    assert joined.values <= a.values | b.values


@settings(max_examples=EXAMPLES, deadline=None)
@given(a=vector_clocks, b=vector_clocks)
def test_vector_clock_order_agrees_with_merge(a: VectorClock, b: VectorClock) -> None:
    joined = a.merge(b)
    assert joined.dominates(a)
    assert joined.dominates(b)
    order = a.compare(b)
    assert (
        order
        is {
            (True, True): CausalOrder.EQUAL,
            (True, False): CausalOrder.AFTER,
            (False, True): CausalOrder.BEFORE,
            (False, False): CausalOrder.CONCURRENT,
        }[(a.dominates(b), b.dominates(a))]
    )
    assert (order is CausalOrder.EQUAL) == (a == b)
    assert (joined == a) == a.dominates(b)
