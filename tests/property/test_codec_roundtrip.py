"""Every storable lattice survives encoding, and the wire form never changes a merge's result."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.lattices import (
    CausalVersion,
    LwwLattice,
    MapLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
    VectorClock,
)
from cloudburst.protocol import codec
from cloudburst.protocol.values import deserialize, serialize

small_bytes = st.binary(max_size=6)
clocks = st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), max_size=3).map(VectorClock.of)
dependencies = st.dictionaries(st.sampled_from(["k1", "k2"]), clocks, max_size=2).map(MapLattice.of)
versions = st.builds(
    CausalVersion, clocks, dependencies, st.frozensets(small_bytes, max_size=2), st.sampled_from(["", "req-1", "r2"])
)

KINDS = [
    st.builds(LwwLattice, st.integers(0, 2**64 - 1), small_bytes),
    st.builds(SetLattice, st.frozensets(small_bytes, max_size=4)),
    st.lists(small_bytes, max_size=4).map(OrderedSetLattice.of),
    st.builds(PriorityLattice, st.floats(allow_nan=False), small_bytes),
    st.lists(versions, max_size=3).map(
        lambda vs: SingleKeyCausalLattice.from_versions(
            CausalVersion(v.vector_clock, MapLattice.of({}), v.values) for v in vs
        )
    ),
    st.lists(versions, max_size=3).map(MultiKeyCausalLattice.from_versions),
]
storable = st.one_of(KINDS)


@settings(max_examples=500)
@given(storable)
def test_encode_decode_is_identity(lattice):
    lattice_type, payload = codec.encode_lattice(lattice)
    assert codec.decode_lattice(lattice_type, payload) == lattice


@settings(max_examples=300)
@given(st.data())
def test_merging_decoded_lattices_equals_merging_originals(data):
    kind = data.draw(st.sampled_from(KINDS))
    a, b = data.draw(kind), data.draw(kind)
    decoded = [codec.decode_lattice(*codec.encode_lattice(x)) for x in (a, b)]
    assert decoded[0].merge(decoded[1]) == a.merge(b)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500)
@given(json_like)
def test_values_round_trip(value):
    assert deserialize(serialize(value)) == value
