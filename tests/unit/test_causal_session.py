"""The executor's causal session: floors, kept versions, conflicts, new versions and hand-over."""

from __future__ import annotations

import pytest

from cloudburst.errors import CausalConflict
from cloudburst.executor.causal import (
    CausalSession,
    SessionMetadata,
    WriterCounter,
    join_metadata,
    latest_value,
)
from cloudburst.lattices import CausalVersion, MapLattice, MultiKeyCausalLattice, VectorClock
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import KeyVersion

MULTI = ConsistencyType.MULTI
SINGLE = ConsistencyType.SINGLE


def vc(**entries: int) -> VectorClock:
    return VectorClock.of(entries)


def value(clock: VectorClock, payload: bytes = b"v", **deps: VectorClock) -> MultiKeyCausalLattice:
    return MultiKeyCausalLattice.of(clock, (payload,), deps)


def test_a_normal_request_has_no_causal_session():
    with pytest.raises(ValueError, match="SINGLE or MULTI"):
        CausalSession("r", ConsistencyType.NORMAL)


def test_reading_raises_the_floor_of_the_key_read_and_not_of_its_dependencies():
    # The cache's cut covers the dependencies; the floor of the version read brings them along.
    for mode in (MULTI, SINGLE):
        session = CausalSession("r", mode)
        session.absorb("post", value(vc(w=2), user=vc(w=1)))
        assert session.lower_bounds(["post", "user", "other"]) == (KeyVersion("post", vc(w=2)),)


def test_an_effect_whose_cause_was_read_older_is_a_conflict_under_multi():
    session = CausalSession("r", MULTI)
    session.absorb("user", value(vc(w=1)))
    with pytest.raises(CausalConflict, match=r"'post'.*'user'"):
        session.absorb("post", value(vc(w=3), user=vc(w=2)))


def test_an_effect_of_a_key_read_as_missing_is_a_conflict():
    session = CausalSession("r", MULTI)
    session.absorb("user", None)
    with pytest.raises(CausalConflict):
        session.absorb("post", value(vc(w=3), user=vc(w=2)))


def test_an_effect_whose_cause_was_read_at_least_as_new_is_accepted():
    session = CausalSession("r", MULTI)
    session.absorb("user", value(vc(w=2)))
    session.absorb("post", value(vc(w=3), user=vc(w=2)))
    assert set(session.already_read(["user", "post", "x"])) == {"user", "post"}


def test_single_never_reports_conflicts():
    session = CausalSession("r", SINGLE)
    session.absorb("user", value(vc(w=1)))
    session.absorb("post", value(vc(w=3), user=vc(w=2)))


def test_kept_versions_are_read_back_from_the_cache_that_keeps_them():
    metadata = SessionMetadata({"tcp://a:7250": (KeyVersion("x", vc(w=1)),)}, ())
    session = CausalSession("r", MULTI, metadata)
    assert session.kept_reads(["x", "y"]) == {"tcp://a:7250": ["x"]}
    assert session.holders() == ("tcp://a:7250",)
    assert CausalSession("r", SINGLE, metadata).kept_reads(["x"]) == {}


def test_a_kept_version_counts_as_read_for_conflicts():
    session = CausalSession("r", MULTI, SessionMetadata({"tcp://a:7250": (KeyVersion("x", vc(w=1)),)}))
    with pytest.raises(CausalConflict):
        session.absorb("y", value(vc(v=1), x=vc(w=2)))


def test_a_new_version_dominates_what_the_session_knows_and_carries_its_dependencies():
    session = CausalSession("r", MULTI)
    session.absorb("timeline", value(vc(a=4, b=1)))
    session.absorb("post", value(vc(c=1)))
    counter = WriterCounter("me")
    written = session.new_version("timeline", b"new", counter)
    (version,) = written.versions
    assert version.vector_clock == vc(a=4, b=1, me=1)
    assert dict(version.dependencies.items()) == {"post": vc(c=1)}
    # The original lost the bump of an absent entry (B33); the written clock strictly dominates what was read.
    assert version.vector_clock.dominates(vc(a=4, b=1))
    assert version.vector_clock != vc(a=4, b=1)


def test_after_a_write_the_session_reads_the_key_afresh_at_least_at_the_write():
    metadata = SessionMetadata({"tcp://a:7250": (KeyVersion("k", vc(w=1)),)})
    session = CausalSession("r", MULTI, metadata)
    session.new_version("k", b"x", WriterCounter("me"))
    assert session.kept_reads(["k"]) == {}
    assert session.lower_bounds(["k"]) == (KeyVersion("k", vc(w=1, me=1)),)


def test_the_writer_counter_only_grows():
    counter = WriterCounter("me")
    assert counter.next(0) == 1
    assert counter.next(10) == 11
    assert counter.next(3) == 12


def test_single_writes_carry_no_dependencies():
    session = CausalSession("r", SINGLE)
    session.absorb("a", value(vc(w=1)))
    (version,) = session.new_version("b", b"x", WriterCounter("me")).versions
    assert not version.dependencies


def test_metadata_hands_on_kept_versions_by_cache_and_the_floors():
    session = CausalSession("r", MULTI)
    session.note_kept("tcp://a:7250", (KeyVersion("x", vc(w=1)),))
    session.absorb("x", value(vc(w=1), y=vc(v=2)))
    session.absorb("z", value(vc(v=3)))
    metadata = session.metadata()
    assert dict(metadata.version_locations) == {"tcp://a:7250": (KeyVersion("x", vc(w=1)),)}
    assert metadata.dependencies == (KeyVersion("x", vc(w=1)), KeyVersion("z", vc(v=3)))


def test_fan_in_metadata_is_joined():
    left = SessionMetadata({"tcp://a": (KeyVersion("x", vc(w=1)),)}, (KeyVersion("k", vc(a=1)),))
    right = SessionMetadata(
        {"tcp://a": (KeyVersion("y", vc(w=1)),), "tcp://b": (KeyVersion("x", vc(w=2)),)},
        (KeyVersion("k", vc(b=1)),),
    )
    joined = join_metadata([left, right])
    assert dict(joined.version_locations) == {
        "tcp://a": (KeyVersion("x", vc(w=1)), KeyVersion("y", vc(w=1))),
        "tcp://b": (KeyVersion("x", vc(w=2)),),
    }
    assert joined.dependencies == (KeyVersion("k", vc(a=1, b=1)),)
    # The newer of two kept versions of one key is the one the request reads.
    assert CausalSession("r", MULTI, joined).kept_reads(["x"]) == {"tcp://b": ["x"]}


def test_latest_value_picks_the_same_sibling_whatever_the_order():
    versions = [
        CausalVersion(vc(a=1), MapLattice.of({}), frozenset({b"first"})),
        CausalVersion(vc(b=2), MapLattice.of({}), frozenset({b"second"})),
    ]
    one = MultiKeyCausalLattice.from_versions(versions)
    other = MultiKeyCausalLattice.from_versions(reversed(versions))
    assert latest_value(one) == latest_value(other) == b"second"
