"""Hypothesis: merges made inside Redis (Lua scripts, compare-and-set) equal the Python lattice merges exactly.

Random batches of writes go to a :class:`RedisEngine` and to the in-memory reference engine; the outcomes (type
mismatches included) and the stored bytes must match, and each key must read back as the fold of the lattice
``merge`` over everything written to it. Timestamps, priorities and values come from tiny alphabets with the
edge cases mixed in (varint length boundaries, the largest uint64, -0.0 and infinities, empty and NUL bytes), so
ties, and the tie-breaks on the value bytes, are frequent.
"""

from __future__ import annotations

import math
from functools import reduce

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudburst.kvs.engine import MemoryEngine
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

pytestmark = pytest.mark.integration

values = st.sampled_from([b"", b"a", b"b", b"ab", b"\x00", b"\x00\x01", b"\xff", b"a" * 5000]) | st.binary(max_size=6)
timestamps = st.sampled_from([0, 1, 127, 128, 255, 16383, 16384, 2**53, 2**53 + 1, 2**63, 2**64 - 1])
priorities = st.sampled_from([0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, 5e-324]) | st.floats(allow_nan=False)
clocks = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 2), max_size=2).map(VectorClock.of)
dependencies = st.dictionaries(st.sampled_from(["k", "l"]), clocks, max_size=2).map(MapLattice.of)
no_dependencies: MapLattice[str, VectorClock] = MapLattice.of({})

LATTICES = {
    "lww": st.builds(LwwLattice, timestamps | st.integers(0, 2**64 - 1), values),
    "priority": st.builds(PriorityLattice, priorities, values),
    "set": st.frozensets(values, max_size=4).map(SetLattice),
    "ordered": st.lists(values, max_size=4).map(OrderedSetLattice.of),
    "single": st.lists(
        st.builds(CausalVersion, clocks, st.just(no_dependencies), st.frozensets(values, max_size=2))
    ).map(SingleKeyCausalLattice.from_versions),
    "multi": st.lists(st.builds(CausalVersion, clocks, dependencies, st.frozensets(values, max_size=2))).map(
        MultiKeyCausalLattice.from_versions
    ),
}
# One key per lattice kind takes only that kind; "mixed" takes any, so type mismatches happen too.
writes = st.one_of(
    *(st.tuples(st.just(kind), lattices) for kind, lattices in LATTICES.items()),
    st.tuples(st.just("mixed"), st.one_of(*LATTICES.values())),
)
batches = st.lists(st.lists(writes, min_size=1, max_size=6), min_size=1, max_size=5)
KEYS = [*LATTICES, "mixed"]


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def redis_engine(request, open_redis_engine):
    engine = open_redis_engine(request.param)
    yield engine
    engine.close()


def outcome(result):
    return None if result is None else (result.key, result.stored, result.given)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches)
def test_redis_merges_equal_the_python_merges(redis_engine, batches):
    redis_engine.flush()
    reference = MemoryEngine()
    for batch in batches:
        assert list(map(outcome, redis_engine.merge_many(batch))) == list(map(outcome, reference.merge_many(batch)))
    assert redis_engine.get_many(KEYS) == reference.get_many(KEYS)
    for key in LATTICES:
        written = [lattice for batch in batches for k, lattice in batch if k == key]
        (stored,) = redis_engine.get_many([key])
        if written:
            assert codec.decode_lattice(stored.lattice_type, stored.payload) == reduce(lambda a, b: a.merge(b), written)
        else:
            assert stored is None
