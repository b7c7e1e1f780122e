"""Unit tests for the specific behaviours of each lattice, especially where they differ from the original system."""

from __future__ import annotations

import copy
import math
import pickle

import pytest

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


def vc(**counters: int) -> VectorClock:
    return VectorClock.of(counters)


# -- LWW ------------------------------------------------------------------------------------------------------


def test_lww_newer_timestamp_wins() -> None:
    old, new = LwwLattice(1, b"zzz"), LwwLattice(2, b"a")
    assert old.merge(new) == new
    assert new.merge(old) == new
    assert new.reveal() == b"a"


def test_lww_tie_is_broken_by_value_bytes_in_both_orders() -> None:
    a, b = LwwLattice(7, b"apple"), LwwLattice(7, b"banana")
    assert a.merge(b) == b
    assert b.merge(a) == b


@pytest.mark.parametrize("timestamp", [-1, 2**64, 2**70])
def test_lww_rejects_out_of_range_timestamps(timestamp: int) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        LwwLattice(timestamp, b"x")


def test_lww_accepts_the_uint64_bounds() -> None:
    assert LwwLattice(0, b"").timestamp == 0
    assert LwwLattice(2**64 - 1, b"").timestamp == 2**64 - 1


def test_lww_rejects_non_bytes_value() -> None:
    with pytest.raises(TypeError):
        LwwLattice(1, "text")  # type: ignore[arg-type]


def test_lww_is_frozen() -> None:
    lattice = LwwLattice(1, b"x")
    with pytest.raises(AttributeError):
        lattice.timestamp = 2  # type: ignore[misc]


# -- Priority, Max, Bool ------------------------------------------------------------------------------------


def test_priority_lowest_wins() -> None:
    low, high = PriorityLattice(0.5, b"zz"), PriorityLattice(3.0, b"aa")
    assert low.merge(high) == low
    assert high.merge(low) == low
    assert low.merge(high).reveal() == b"zz"


def test_priority_tie_is_broken_by_smaller_value_in_both_orders() -> None:
    a, b = PriorityLattice(1.0, b"a"), PriorityLattice(1.0, b"b")
    assert a.merge(b) == a
    assert b.merge(a) == a


def test_priority_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        PriorityLattice(math.nan, b"x")


def test_max_keeps_the_largest_without_truncation() -> None:
    big = MaxLattice(2**100)
    assert MaxLattice(5).merge(big) == big
    assert big.merge(MaxLattice(1.5)).reveal() == 2**100
    with pytest.raises(ValueError, match="NaN"):
        MaxLattice(math.nan)


def test_bool_is_logical_or() -> None:
    assert BoolLattice(False).merge(BoolLattice(True)).reveal() is True
    assert BoolLattice(False).merge(BoolLattice(False)).reveal() is False


# -- Sets -----------------------------------------------------------------------------------------------------


def test_set_merge_is_union_and_operands_are_unchanged() -> None:
    a, b = SetLattice(frozenset({b"a"})), SetLattice(frozenset({b"b"}))
    assert a.merge(b).reveal() == frozenset({b"a", b"b"})
    assert a.reveal() == frozenset({b"a"})


def test_ordered_set_rejects_unsorted_or_duplicated_tuples() -> None:
    with pytest.raises(ValueError, match="sorted"):
        OrderedSetLattice((b"b", b"a"))
    with pytest.raises(ValueError, match="sorted"):
        OrderedSetLattice((b"a", b"a"))


def test_ordered_set_of_normalises() -> None:
    lattice = OrderedSetLattice.of([b"c", b"a", b"b", b"a", b"\xff", b""])
    assert lattice.reveal() == (b"", b"a", b"b", b"c", b"\xff")
    assert lattice == OrderedSetLattice.of(reversed(lattice.values))


def test_ordered_set_merge_stays_sorted() -> None:
    merged = OrderedSetLattice.of([b"b", b"d"]).merge(OrderedSetLattice.of([b"a", b"d", b"e"]))
    assert merged.reveal() == (b"a", b"b", b"d", b"e")


# -- Map ------------------------------------------------------------------------------------------------------


def test_map_merges_key_wise_and_keeps_one_sided_keys() -> None:
    left = MapLattice.of({"a": MaxLattice(1), "b": MaxLattice(5)})
    right = MapLattice.of({"b": MaxLattice(3), "c": MaxLattice(2)})
    merged = left.merge(right)
    assert merged.reveal() == {"a": 1, "b": 5, "c": 2}
    assert len(merged) == 3
    assert "c" in merged
    assert merged["b"] == MaxLattice(5)
    assert merged.get("zz") is None
    assert set(merged.keys()) == {"a", "b", "c"}
    assert left.reveal() == {"a": 1, "b": 5}


def test_map_is_hashable_and_equal_by_content_and_isolated_from_its_input() -> None:
    source = {"x": SetLattice(frozenset({b"1"})), "y": SetLattice()}
    lattice = MapLattice.of(source)
    source["z"] = SetLattice()
    assert "z" not in lattice
    reordered = MapLattice.of({"y": SetLattice(), "x": SetLattice(frozenset({b"1"}))})
    assert lattice == reordered
    assert hash(lattice) == hash(reordered)
    assert lattice != MapLattice.of({"x": SetLattice()})


def test_map_survives_pickle_and_copy() -> None:
    lattice = MapLattice.of({"k": vc(a=1)})
    assert pickle.loads(pickle.dumps(lattice)) == lattice
    assert copy.deepcopy(lattice) == lattice


# -- Vector clocks --------------------------------------------------------------------------------------------


def test_vector_clock_of_drops_zeros_and_sorts() -> None:
    clock = VectorClock.of({"b": 2, "a": 1, "c": 0})
    assert clock.entries == (("a", 1), ("b", 2))
    assert clock == vc(a=1, b=2)
    assert clock.get("c") == 0
    assert clock.as_dict() == {"a": 1, "b": 2}
    assert VectorClock.of() == VectorClock()
    assert not VectorClock.of({"a": 0})
    assert clock


def test_vector_clock_rejects_non_canonical_entries() -> None:
    with pytest.raises(ValueError, match="sorted"):
        VectorClock((("b", 1), ("a", 1)))
    with pytest.raises(ValueError, match="0"):
        VectorClock((("a", 0),))


@pytest.mark.parametrize("counter", [2**32, -1])
def test_vector_clock_rejects_counters_outside_uint32(counter: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*32"):
        VectorClock.of({"a": counter})
    with pytest.raises(ValueError, match="2\\*\\*32"):
        VectorClock((("a", counter),))


def test_vector_clock_increment_adds_absent_ids_and_refuses_overflow() -> None:
    assert VectorClock().increment("n1") == vc(n1=1)
    assert vc(n1=1, n2=4).increment("n1") == vc(n1=2, n2=4)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        VectorClock.of({"a": 2**32 - 1}).increment("a")


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        (vc(a=1), vc(a=2), CausalOrder.BEFORE),
        (vc(a=1, b=1), vc(a=1), CausalOrder.AFTER),
        (vc(a=1, b=2), vc(b=2, a=1), CausalOrder.EQUAL),
        (vc(a=1), vc(b=1), CausalOrder.CONCURRENT),
        (VectorClock(), vc(a=1), CausalOrder.BEFORE),
    ],
)
def test_vector_clock_compare(left: VectorClock, right: VectorClock, order: CausalOrder) -> None:
    assert left.compare(right) is order
    assert left.dominates(right) == (order in (CausalOrder.AFTER, CausalOrder.EQUAL))


def test_vector_clock_merge_is_pointwise_max() -> None:
    assert vc(a=3, b=1).merge(vc(b=2, c=1)) == vc(a=3, b=2, c=1)
    assert vc(a=3).reveal() == {"a": 3}


# -- Causal ---------------------------------------------------------------------------------------------------


def test_causal_merge_is_associative_where_the_original_was_not() -> None:
    a = SingleKeyCausalLattice.of(vc(x=1), [b"va"])
    b = SingleKeyCausalLattice.of(vc(y=1), [b"vb"])
    c = SingleKeyCausalLattice.of(vc(x=2), [b"vc"])  # supersedes a
    left_first = a.merge(b).merge(c)
    right_first = a.merge(b.merge(c))
    assert left_first == right_first
    assert left_first.reveal() == frozenset({b"vb", b"vc"})
    assert b"va" not in left_first.values
    assert left_first.vector_clock == vc(x=2, y=1)


def test_causal_keeps_concurrent_versions_and_prunes_dominated_ones() -> None:
    a = SingleKeyCausalLattice.of(vc(x=1), [b"va"])
    b = SingleKeyCausalLattice.of(vc(y=1), [b"vb"])
    both = a.merge(b)
    assert len(both.versions) == 2
    newer = SingleKeyCausalLattice.of(vc(x=1, y=1), [b"resolved"])
    assert both.merge(newer) == newer


def test_causal_combines_versions_with_equal_clocks() -> None:
    a = MultiKeyCausalLattice.of(vc(x=1), [b"a"], {"k": vc(n=1)})
    b = MultiKeyCausalLattice.of(vc(x=1), [b"b"], MapLattice.of({"k": vc(n=2), "l": vc(m=1)}))
    merged = a.merge(b)
    assert len(merged.versions) == 1
    assert merged.values == frozenset({b"a", b"b"})
    assert merged.dependencies == MapLattice.of({"k": vc(n=2), "l": vc(m=1)})


def test_causal_from_versions_normalises_and_constructor_rejects_non_antichains() -> None:
    older = CausalVersion(vc(x=1), MapLattice.of({}), frozenset({b"old"}))
    newer = CausalVersion(vc(x=2), MapLattice.of({}), frozenset({b"new"}))
    assert SingleKeyCausalLattice.from_versions([older, newer]).versions == frozenset({newer})
    with pytest.raises(ValueError, match="canonical"):
        SingleKeyCausalLattice(frozenset({older, newer}))


def test_single_key_causal_rejects_dependencies() -> None:
    version = CausalVersion(vc(x=1), MapLattice.of({"k": vc(a=1)}), frozenset({b"v"}))
    with pytest.raises(ValueError, match="dependencies"):
        SingleKeyCausalLattice.from_versions([version])


def test_causal_bool_and_reveal() -> None:
    assert not SingleKeyCausalLattice()
    assert not MultiKeyCausalLattice()
    assert SingleKeyCausalLattice().reveal() == frozenset()
    assert SingleKeyCausalLattice.of(VectorClock(), []) == SingleKeyCausalLattice()
    tombstone = SingleKeyCausalLattice.of(vc(x=3), [])
    assert not tombstone
    assert tombstone.vector_clock == vc(x=3)
    live = MultiKeyCausalLattice.of(vc(x=1), [b"v1", b"v2"])
    assert live
    assert live.reveal() == frozenset({b"v1", b"v2"})
    assert live.dependencies == MapLattice.of({})


# -- Shared properties ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lattice",
    [
        LwwLattice(1, b"x"),
        SetLattice(frozenset({b"x"})),
        OrderedSetLattice.of([b"x"]),
        MaxLattice(1),
        BoolLattice(True),
        PriorityLattice(1.0, b"x"),
        MapLattice.of({"k": MaxLattice(1)}),
        vc(a=1),
        SingleKeyCausalLattice.of(vc(a=1), [b"x"]),
        MultiKeyCausalLattice.of(vc(a=1), [b"x"], {"k": vc(b=1)}),
    ],
    ids=lambda lattice: type(lattice).__name__,
)
def test_every_lattice_is_a_hashable_picklable_lattice(lattice: Lattice) -> None:
    assert isinstance(lattice, Lattice)
    assert hash(lattice) == hash(copy.deepcopy(lattice))
    assert pickle.loads(pickle.dumps(lattice)) == lattice
    assert type(lattice.merge(lattice)) is type(lattice)
