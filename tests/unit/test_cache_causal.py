"""The node cache's causal choices and the versions it keeps per session."""

from __future__ import annotations

from cloudburst.cache.causal import (
    CausalCut,
    KeptVersion,
    SessionVersions,
    SessionVersionsConfig,
    satisfies,
    superseded_versions,
)
from cloudburst.lattices import MultiKeyCausalLattice, VectorClock
from cloudburst.protocol import codec
from cloudburst.protocol.causal_messages import (
    CausalKeyResult,
    CausalReadRequest,
    CausalReadResponse,
    SessionVersionRequest,
    SessionVersionResponse,
)
from cloudburst.protocol.messages import AnnaError, ConsistencyType
from cloudburst.protocol.runtime_messages import KeyVersion


def vc(**entries: int) -> VectorClock:
    return VectorClock.of(entries)


def value(clock: VectorClock, **deps: VectorClock) -> MultiKeyCausalLattice:
    return MultiKeyCausalLattice.of(clock, (b"v",), deps)


def test_one_sibling_must_reach_the_clock_unless_the_value_is_complete():
    # Needed {me:5, x:1}; the cache holds {me:6} and {x:1, y:1}, which join above it but lack it.
    siblings = MultiKeyCausalLattice.of(vc(me=6), (b"a",)).merge(MultiKeyCausalLattice.of(vc(x=1, y=1), (b"b",)))
    assert not satisfies(siblings, vc(me=5, x=1), complete=False)
    assert satisfies(siblings, vc(me=5, x=1), complete=True)
    assert satisfies(siblings, vc(me=6), complete=False)


def test_the_cut_covers_versions_at_least_as_new_as_asked():
    cut = CausalCut()
    assert cut.covers("a", VectorClock())
    assert not cut.covers("a", vc(w=1))
    cut.admit("a", value(vc(w=2)))
    assert cut.covers("a", vc(w=1))
    assert cut.covers("a", vc(w=2))
    assert not cut.covers("a", vc(w=3))
    assert not cut.covers("a", vc(v=1))


def test_a_version_lists_the_dependencies_the_cut_does_not_cover_yet():
    cut = CausalCut()
    cut.admit("user", value(vc(w=1)))
    post = value(vc(w=3), user=vc(w=2), topic=vc(t=1))
    assert sorted(cut.uncovered_dependencies(post)) == [("topic", vc(t=1)), ("user", vc(w=2))]
    cut.admit("user", value(vc(w=2)))
    cut.admit("topic", value(vc(t=1)))
    assert cut.uncovered_dependencies(post) == []


def test_a_value_from_the_kvs_covers_up_to_its_joined_clock():
    cut = CausalCut()
    siblings = MultiKeyCausalLattice.of(vc(me=6), (b"a",)).merge(MultiKeyCausalLattice.of(vc(x=1), (b"b",)))
    cut.admit("k", siblings)
    assert not cut.covers("k", vc(me=5, x=1))
    cut.admit("k", siblings, complete_clock=siblings.vector_clock)
    assert cut.covers("k", vc(me=5, x=1))


def test_the_cut_forgets_its_least_recently_used_keys_beyond_its_bound():
    cut = CausalCut(max_keys=2)
    cut.admit("a", value(vc(w=1)))
    cut.admit("b", value(vc(w=1)))
    assert cut.get("a") is not None
    cut.admit("c", value(vc(w=1)))
    assert len(cut) == 2
    assert cut.get("b") is None
    assert cut.get("a") is not None


def test_the_first_kept_version_of_a_key_wins_and_release_forgets_the_session():
    store = SessionVersions()
    first = store.keep("s", "k", KeptVersion(b"one", vc(w=1)), now=0.0)
    second = store.keep("s", "k", KeptVersion(b"two", vc(w=2)), now=0.0)
    assert first == second == KeptVersion(b"one", vc(w=1))
    assert store.get("s", ["k", "x"], now=0.0) == {"k": first}
    assert store.kept_bytes == 3
    store.release("s")
    assert store.get("s", ["k"], now=0.0) == {}
    assert len(store) == 0
    assert store.kept_bytes == 0


def test_a_version_kept_below_the_sessions_bound_is_superseded_and_replaced():
    # Read-your-writes wins over repeatable reads: the session wrote the key (its bound rose) since it was kept.
    store = SessionVersions()
    store.keep("s", "k", KeptVersion(b"old", vc(w=1)), now=0.0)
    store.keep("s", "missing", KeptVersion(b"", VectorClock()), now=0.0)
    store.keep("s", "same", KeptVersion(b"v", vc(w=3)), now=0.0)
    kept = store.get("s", ["k", "missing", "same"], now=0.0)
    bounds = {"k": vc(w=1, me=1), "missing": vc(me=2), "same": vc(w=2), "other": vc(w=9)}
    assert superseded_versions(kept, bounds) == {"k", "missing"}
    newer = store.keep("s", "k", KeptVersion(b"newer", vc(w=1, me=1)), now=0.0, replace=True)
    assert newer == KeptVersion(b"newer", vc(w=1, me=1))
    assert store.get("s", ["k"], now=0.0) == {"k": newer}
    assert store.kept_bytes == len(b"newer") + len(b"v")


def test_sessions_never_released_expire_after_their_ttl_from_last_use():
    store = SessionVersions(SessionVersionsConfig(ttl=10.0))
    store.keep("old", "k", KeptVersion(b"x", vc(w=1)), now=0.0)
    store.keep("used", "k", KeptVersion(b"x", vc(w=1)), now=0.0)
    store.get("used", ["k"], now=8.0)
    store.expire(now=12.0)
    assert store.get("old", ["k"], now=12.0) == {}
    assert store.get("used", ["k"], now=12.0) != {}
    assert store.dropped == 1


def test_kept_versions_are_bounded_in_sessions_and_bytes():
    store = SessionVersions(SessionVersionsConfig(max_sessions=2, max_bytes=10))
    for index in range(5):
        store.keep(f"s{index}", "k", KeptVersion(b"abc", vc(w=1)), now=0.0)
    assert len(store) == 2
    assert store.kept_bytes <= 10
    store.keep("big", "k", KeptVersion(b"x" * 9, vc(w=1)), now=0.0)
    assert len(store) == 1
    assert store.get("big", ["k"], now=0.0)


def test_causal_messages_round_trip_through_the_wire_format():
    bounds = (KeyVersion("a", vc(w=1, v=2)),)
    request = CausalReadRequest("s", ConsistencyType.MULTI, ("a", "b"), "tcp://h:1", "r1", ("c",), bounds)
    assert codec.decode_causal_read_request(codec.encode_causal_read_request(request)) == request
    keep = CausalReadRequest("s", ConsistencyType.MULTI, (), "tcp://h:1", "r3", keep=(CausalKeyResult("k", b"v"),))
    assert codec.decode_causal_read_request(codec.encode_causal_read_request(keep)) == keep
    results = (CausalKeyResult("a", b"payload"), CausalKeyResult("b", error=AnnaError.KEY_DNE))
    response = CausalReadResponse("r1", results, "tcp://h:7250", bounds)
    assert codec.decode_causal_read_response(codec.encode_causal_read_response(response)) == response
    kept = SessionVersionRequest("s", ("a",), "tcp://h:1", "r2")
    assert codec.decode_session_version_request(codec.encode_session_version_request(kept)) == kept
    release = SessionVersionRequest("s")
    assert codec.decode_session_version_request(codec.encode_session_version_request(release)) == release
    answer = SessionVersionResponse("s", "r2", results)
    assert codec.decode_session_version_response(codec.encode_session_version_response(answer)) == answer
