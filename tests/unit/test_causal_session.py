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


def test_reading_raises_the_floor_of_the_key_read_and_under_multi_of_its_dependencies():
    session = CausalSession("r", SINGLE)
    session.absorb("post", value(vc(w=2), user=vc(w=1)))
    assert session.lower_bounds(["post", "user", "other"]) == (KeyVersion("post", vc(w=2)),)
    # Under MULTI a later read of the cause returns it or newer, on any node (its cache learns the bound).
    session = CausalSession("r", MULTI)
    session.absorb("post", value(vc(w=2), user=vc(w=1)))
    assert session.lower_bounds(["post", "user", "other"]) == (
        KeyVersion("post", vc(w=2)),
        KeyVersion("user", vc(w=1)),
    )


def test_an_effect_whose_cause_was_read_older_is_a_conflict_under_multi():
    session = CausalSession("r", MULTI)
    session.absorb("user", value(vc(w=1)))
    with pytest.raises(CausalConflict, match=r"'post'.*'user'"):
        session.absorb("post", value(vc(w=3), user=vc(w=2)))


def test_a_conflict_with_another_requests_write_can_be_retried_and_one_with_its_own_cannot():
    session = CausalSession("req-1", MULTI)
    session.absorb("x", value(vc(w=1)))
    elsewhere = MultiKeyCausalLattice.of(vc(v=1), (b"y",), {"x": vc(w=2)}, origin="req-0")
    with pytest.raises(CausalConflict) as caught:
        session.absorb("y", elsewhere)
    assert caught.value.retryable
    # Written by this request in a branch that ran alongside: every retry would race the same way.
    ours = MultiKeyCausalLattice.of(vc(v=2), (b"y",), {"x": vc(w=2)}, origin="req-1")
    with pytest.raises(CausalConflict, match="this same request") as caught:
        session.absorb("y", ours)
    assert not caught.value.retryable


def test_multi_writes_name_their_request_and_single_writes_do_not():
    (multi,) = CausalSession("req-1", MULTI).new_version("k", b"x", WriterCounter("me")).versions
    (single,) = CausalSession("req-1", SINGLE).new_version("k", b"x", WriterCounter("me")).versions
    assert (multi.origin, single.origin) == ("req-1", "")


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


def test_a_kept_version_read_upstream_counts_as_read_for_conflicts():
    kept = {"tcp://a:7250": (KeyVersion("x", vc(w=1)),)}
    session = CausalSession("r", MULTI, SessionMetadata(kept, (KeyVersion("x", vc(w=1)),), observed=("x",)))
    with pytest.raises(CausalConflict):
        session.absorb("y", value(vc(v=1), x=vc(w=2)))


def test_an_unread_reserved_version_gives_way_to_a_newer_one_a_read_depends_on():
    # Kept for a declared key that no function read yet: nothing saw it, so the request reads the newer version
    # instead of failing.
    session = CausalSession("r", MULTI, SessionMetadata({"tcp://a:7250": (KeyVersion("x", vc(w=1)),)}))
    session.absorb("y", value(vc(v=1), x=vc(w=2)))
    assert session.kept_reads(["x"]) == {}
    assert session.lower_bounds(["x"]) == (KeyVersion("x", vc(w=2)),)


def test_a_function_rereads_its_own_write_after_having_read_the_key():
    session = CausalSession("r", MULTI, SessionMetadata({"tcp://a:7250": (KeyVersion("k", vc(w=1)),)}))
    session.absorb("k", value(vc(w=1), b"old"))
    written = session.new_version("k", b"new", WriterCounter("me"))
    assert session.already_read(["k"]) == {"k": written}
    # Another key read afterwards may depend on the write: it is what the request observed of k.
    session.absorb("j", value(vc(v=1), k=written.vector_clock))
    assert session.metadata().observed == ("j", "k")


def test_a_new_version_dominates_what_the_session_knows_and_carries_its_dependencies():
    session = CausalSession("r", MULTI)
    session.absorb("timeline", value(vc(a=4, b=1)))
    session.absorb("post", value(vc(c=1)))
    counter = WriterCounter("me")
    written = session.new_version("timeline", b"new", counter)
    (version,) = written.versions
    assert version.vector_clock == vc(a=4, b=1, me=1)
    assert dict(version.dependencies.items()) == {"post": vc(c=1)}
    # The original lost the bump of an absent entry; the written clock strictly dominates what was read.
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


def test_metadata_hands_on_kept_versions_by_cache_the_floors_and_what_was_observed():
    session = CausalSession("r", MULTI)
    session.note_kept("tcp://a:7250", (KeyVersion("x", vc(w=1)),))
    session.absorb("x", value(vc(w=1), y=vc(v=2)))
    session.absorb("z", value(vc(v=3)))
    metadata = session.metadata()
    assert dict(metadata.version_locations) == {"tcp://a:7250": (KeyVersion("x", vc(w=1)),)}
    assert metadata.dependencies == (
        KeyVersion("x", vc(w=1)),
        KeyVersion("y", vc(v=2)),
        KeyVersion("z", vc(v=3)),
    )
    assert metadata.observed == ("x", "z")
    # A write depends on what the request observed, not on the versions those depend on in turn.
    (version,) = session.new_version("out", b"o", WriterCounter("me")).versions
    assert dict(version.dependencies.items()) == {"x": vc(w=1), "z": vc(v=3)}


def test_fan_in_metadata_is_joined():
    left = SessionMetadata({"tcp://a": (KeyVersion("x", vc(w=1)),)}, (KeyVersion("k", vc(a=1)),), ("k",))
    right = SessionMetadata(
        {"tcp://a": (KeyVersion("y", vc(w=1)),), "tcp://b": (KeyVersion("x", vc(w=2)),)},
        (KeyVersion("k", vc(b=1)),),
        ("j", "k"),
    )
    joined = join_metadata([left, right])
    assert dict(joined.version_locations) == {
        "tcp://a": (KeyVersion("x", vc(w=1)), KeyVersion("y", vc(w=1))),
        "tcp://b": (KeyVersion("x", vc(w=2)),),
    }
    assert joined.dependencies == (KeyVersion("k", vc(a=1, b=1)),)
    assert joined.observed == ("j", "k")
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


def test_of_concurrent_siblings_a_request_reads_one_reaching_its_own_write():
    mine = CausalVersion(vc(me=1), MapLattice.of({}), frozenset({b"mine"}))
    theirs = CausalVersion(vc(other=5), MapLattice.of({}), frozenset({b"theirs"}))
    value = MultiKeyCausalLattice.from_versions([mine, theirs])
    assert latest_value(value) == b"theirs"  # the fixed order, for requests that wrote neither
    assert latest_value(value, vc(me=1)) == b"mine"
    session = CausalSession("r", MULTI)
    written = session.new_version("k", b"mine", WriterCounter("me"))
    downstream = CausalSession("r", MULTI, session.metadata())
    assert downstream.own_write("k") == written.vector_clock
    assert downstream.own_write("other") is None
