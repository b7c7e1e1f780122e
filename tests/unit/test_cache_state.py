"""The node cache's pure state machine: events in, instructions out, no sockets, no clock, no KVS."""

import pytest

from cloudburst.cache.policy import LruEvictionPolicy
from cloudburst.cache.state import (
    CacheConfig,
    CacheFetchDoneEvent,
    CacheFetchInstruction,
    CacheGetEvent,
    CacheGetReplyInstruction,
    CacheKeyResult,
    CachePushEvent,
    CachePutEvent,
    CachePutReplyInstruction,
    CacheReportInstruction,
    CacheState,
    CacheTickEvent,
    CacheWriteDoneEvent,
    CacheWriteInstruction,
)
from cloudburst.errors import ConfigError
from cloudburst.keys import cache_key_set_key
from cloudburst.kvs.engine import StoredValue
from cloudburst.lattices.lww import LwwLattice
from cloudburst.lattices.sets import SetLattice
from cloudburst.protocol.codec import decode_lattice, encode_lattice
from cloudburst.protocol.messages import AnnaError, LatticeType

IP = "10.0.0.7"


def lww(timestamp, value):
    return StoredValue(*encode_lattice(LwwLattice(timestamp, value)))


def sset(*members):
    return StoredValue(*encode_lattice(SetLattice(frozenset(members))))


def found(key, value, *, cached=False):
    return CacheKeyResult(key, AnnaError.NO_ERROR, value, cached=cached)


def dne(key, *, cached=False):
    return CacheKeyResult(key, AnnaError.KEY_DNE, cached=cached)


class Harness:
    """Drives a CacheState, validating after every step and splitting instructions by kind."""

    def __init__(self, **config):
        config.setdefault("validate", True)
        self.state = CacheState(IP, CacheConfig(**config))
        self.now = 0.0
        self.step(CacheTickEvent())  # the start-up report, out of the way

    def step(self, event, advance=0.0):
        self.now += advance
        out = self.state.handle(event, self.now)
        self.state.validate()
        return out

    def get(self, request_id, *keys, advance=0.0):
        return self.step(CacheGetEvent(request_id, keys), advance)

    def put(self, request_id, key, value, advance=0.0):
        return self.step(CachePutEvent(request_id, key, value.lattice_type, value.payload), advance)

    def push(self, key, value, advance=0.0):
        return self.step(CachePushEvent(key, value.lattice_type, value.payload), advance)

    def fetched(self, fetch_id, *results, advance=0.0):
        return self.step(CacheFetchDoneEvent(fetch_id, results), advance)

    def load(self, key, value):
        """Caches ``key`` through a GET miss answered by the KVS."""
        (fetch,) = of(self.get("load-" + key, key), CacheFetchInstruction)
        return self.fetched(fetch.fetch_id, found(key, value))

    def value(self, key):
        cached = self.state.get_cached(key)
        return None if cached is None else decode_lattice(cached.lattice_type, cached.payload)


def of(instructions, kind):
    return [i for i in instructions if isinstance(i, kind)]


@pytest.fixture
def cache():
    return Harness()


# -- reads -----------------------------------------------------------------------------------------------------


def test_miss_fetches_then_hit_answers_at_once(cache):
    out = cache.get("r1", "k")
    assert of(out, CacheGetReplyInstruction) == []
    (fetch,) = of(out, CacheFetchInstruction)
    assert fetch.keys == ("k",)
    out = cache.fetched(fetch.fetch_id, found("k", lww(1, b"v")))
    assert of(out, CacheGetReplyInstruction) == [CacheGetReplyInstruction("r1", (found("k", lww(1, b"v")),))]
    out = cache.get("r2", "k")
    # The second read is a hit, and says so (request traces show it).
    assert out == [CacheGetReplyInstruction("r2", (found("k", lww(1, b"v"), cached=True),))]
    stats = cache.state.statistics()
    assert (stats.hits, stats.misses, stats.keys, stats.bytes_held) == (1, 1, 1, len(lww(1, b"v").payload))


def test_concurrent_misses_share_one_fetch(cache):
    (first,) = of(cache.get("r1", "a", "b"), CacheFetchInstruction)
    out = cache.get("r2", "b", "c")
    (second,) = of(out, CacheFetchInstruction)
    assert first.keys == ("a", "b")
    assert second.keys == ("c",)
    assert cache.state.statistics().pending_fetches == 3


def test_request_answered_only_when_all_keys_resolved(cache):
    cache.load("hot", lww(1, b"h"))
    (f1,) = of(cache.get("r1", "hot", "a"), CacheFetchInstruction)
    (f2,) = of(cache.get("r2", "a", "b"), CacheFetchInstruction)
    out = cache.fetched(f1.fetch_id, found("a", lww(2, b"x")))
    assert of(out, CacheGetReplyInstruction) == [
        CacheGetReplyInstruction("r1", (found("hot", lww(1, b"h"), cached=True), found("a", lww(2, b"x"))))
    ]
    out = cache.fetched(f2.fetch_id, dne("b"))
    assert of(out, CacheGetReplyInstruction) == [CacheGetReplyInstruction("r2", (found("a", lww(2, b"x")), dne("b")))]
    assert cache.state.statistics().pending_gets == 0


def test_fetch_errors_reach_the_reader_and_are_not_cached(cache):
    (fetch,) = of(cache.get("r1", "a", "b"), CacheFetchInstruction)
    out = cache.fetched(fetch.fetch_id, CacheKeyResult("a", AnnaError.NO_SERVERS))
    (reply,) = of(out, CacheGetReplyInstruction)
    assert reply.results == (CacheKeyResult("a", AnnaError.NO_SERVERS), CacheKeyResult("b", AnnaError.TIMEOUT))
    assert of(cache.get("r2", "a"), CacheFetchInstruction)  # not negative-cached


def test_unknown_fetch_answer_is_ignored(cache):
    assert cache.fetched(999, found("k", lww(1, b"v"))) == []
    assert cache.state.get_cached("k") is None


def test_duplicate_keys_in_one_get_are_answered_once(cache):
    (fetch,) = of(cache.get("r", "k", "k"), CacheFetchInstruction)
    assert fetch.keys == ("k",)
    (reply,) = of(cache.fetched(fetch.fetch_id, dne("k")), CacheGetReplyInstruction)
    assert reply.results == (dne("k"),)


def test_empty_get_is_answered_at_once(cache):
    assert cache.get("r") == [CacheGetReplyInstruction("r", ())]


# -- negative caching ------------------------------------------------------------------------------------------


def missing_key(cache, key="k"):
    (fetch,) = of(cache.get("probe", key), CacheFetchInstruction)
    cache.fetched(fetch.fetch_id, dne(key))


def test_missing_key_is_remembered_for_the_ttl(cache):
    missing_key(cache)
    assert cache.get("r1", "k", advance=0.05) == [CacheGetReplyInstruction("r1", (dne("k", cached=True),))]
    assert cache.state.statistics().negative_hits == 1
    out = cache.get("r2", "k", advance=0.06)
    assert of(out, CacheFetchInstruction)
    assert of(out, CacheGetReplyInstruction) == []


def test_tick_purges_expired_negative_entries(cache):
    missing_key(cache)
    assert cache.state.statistics().negative_keys == 1
    cache.step(CacheTickEvent(), advance=1.0)
    assert cache.state.statistics().negative_keys == 0


def test_push_clears_negative_entry(cache):
    missing_key(cache)
    cache.push("k", lww(5, b"new"))
    assert of(cache.get("r", "k"), CacheFetchInstruction)


def test_local_put_clears_negative_entry(cache):
    missing_key(cache)
    cache.put("w", "k", lww(5, b"new"))
    assert of(cache.get("r", "k"), CacheFetchInstruction)


def test_negative_entries_are_bounded():
    cache = Harness(max_negative_keys=2)
    for key in ("a", "b", "c"):
        missing_key(cache, key)
    assert cache.state.statistics().negative_keys == 2
    assert of(cache.get("r", "a"), CacheFetchInstruction)  # the oldest was forgotten


# -- writes ----------------------------------------------------------------------------------------------------


def test_put_is_read_through_the_node_at_once_but_acknowledged_only_by_the_kvs(cache):
    cache.load("s", sset(b"a"))
    out = cache.put("w1", "s", sset(b"b"))
    assert of(out, CachePutReplyInstruction) == []
    (write,) = of(out, CacheWriteInstruction)
    assert (write.key, write.lattice_type, write.payload) == ("s", LatticeType.SET, sset(b"b").payload)
    (reply,) = of(cache.get("r", "s"), CacheGetReplyInstruction)
    assert reply.results == (found("s", sset(b"a", b"b"), cached=True),)
    out = cache.step(CacheWriteDoneEvent(write.write_id, AnnaError.NO_ERROR))
    assert out == [CachePutReplyInstruction("w1", "s", AnnaError.NO_ERROR)]
    assert cache.state.statistics().pending_writes == 0


def test_put_of_uncached_key_writes_through_without_caching(cache):
    (write,) = of(cache.put("w", "k", lww(1, b"v")), CacheWriteInstruction)
    assert cache.state.get_cached("k") is None
    assert write.key == "k"


def test_kvs_type_mismatch_reaches_the_writer_and_drops_the_copy(cache):
    cache.load("k", lww(1, b"v"))
    (write,) = of(cache.put("w", "k", lww(2, b"w")), CacheWriteInstruction)
    out = cache.step(CacheWriteDoneEvent(write.write_id, AnnaError.LATTICE, "holds a SET"))
    assert of(out, CachePutReplyInstruction) == [CachePutReplyInstruction("w", "k", AnnaError.LATTICE, "holds a SET")]
    assert cache.state.get_cached("k") is None


def test_put_conflicting_with_cached_type_is_rejected_at_once(cache):
    cache.load("k", lww(1, b"v"))
    out = cache.put("w", "k", sset(b"x"))
    (reply,) = out
    assert isinstance(reply, CachePutReplyInstruction)
    assert (reply.request_id, reply.error) == ("w", AnnaError.LATTICE)
    assert cache.value("k") == LwwLattice(1, b"v")


def test_put_with_undecodable_payload_is_rejected(cache):
    (reply,) = cache.step(CachePutEvent("w", "k", LatticeType.NONE, b""))
    assert isinstance(reply, CachePutReplyInstruction)
    assert reply.error == AnnaError.LATTICE


def test_write_during_fetch_is_merged_into_the_fetched_value(cache):
    (fetch,) = of(cache.get("r", "s"), CacheFetchInstruction)
    cache.put("w", "s", sset(b"mine"))
    (reply,) = of(cache.fetched(fetch.fetch_id, found("s", sset(b"old"))), CacheGetReplyInstruction)
    assert reply.results == (found("s", sset(b"mine", b"old")),)
    assert cache.value("s") == SetLattice(frozenset({b"mine", b"old"}))


# -- pushes ----------------------------------------------------------------------------------------------------


def test_push_unions_a_set(cache):
    cache.load("s", sset(b"a"))
    cache.push("s", sset(b"b"))
    assert cache.value("s") == SetLattice(frozenset({b"a", b"b"}))
    assert cache.state.statistics().pushes_applied == 1


def test_push_lww_newer_wins_older_is_ignored(cache):
    cache.load("k", lww(10, b"ten"))
    cache.push("k", lww(5, b"five"))
    assert cache.value("k") == LwwLattice(10, b"ten")
    cache.push("k", lww(20, b"twenty"))
    assert cache.value("k") == LwwLattice(20, b"twenty")


def test_push_for_uncached_key_is_ignored(cache):
    cache.push("k", lww(1, b"v"))
    assert cache.state.get_cached("k") is None
    assert cache.state.statistics().pushes_ignored == 1


def test_push_of_empty_lww_deletes_and_remembers_missing(cache):
    cache.load("k", lww(1, b"v"))
    cache.push("k", lww(2, b""))
    assert cache.state.get_cached("k") is None
    assert cache.get("r", "k") == [CacheGetReplyInstruction("r", (dne("k", cached=True),))]


def test_push_of_another_type_replaces_the_entry(cache):
    cache.load("k", lww(1, b"v"))
    cache.push("k", sset(b"x"))
    assert cache.value("k") == SetLattice(frozenset({b"x"}))


def test_push_does_not_refresh_recency():
    cache = Harness(max_keys=2)
    cache.load("a", lww(1, b"a"))
    cache.load("b", lww(1, b"b"))
    cache.push("a", lww(2, b"a2"))
    cache.load("c", lww(1, b"c"))
    assert cache.state.cached_keys() == ("b", "c")


# -- eviction --------------------------------------------------------------------------------------------------


def test_eviction_by_count_is_lru_and_spares_touched_keys():
    cache = Harness(max_keys=3)
    for key in ("a", "b", "c"):
        cache.load(key, lww(1, key.encode()))
    cache.get("touch", "a")
    cache.load("d", lww(1, b"d"))
    assert cache.state.cached_keys() == ("c", "a", "d")
    assert cache.state.statistics().evictions == 1


def test_eviction_by_bytes_evicts_as_many_as_needed():
    size = len(lww(1, b"x" * 10).payload)
    cache = Harness(max_bytes=3 * size)
    for key in ("a", "b", "c"):
        cache.load(key, lww(1, b"x" * 10))
    big = lww(1, b"y" * (len(lww(1, b"x" * 10).payload) * 2))
    cache.load("big", big)
    assert cache.state.statistics().bytes_held <= 3 * size
    evictions = cache.state.statistics().evictions
    assert evictions >= 2
    assert cache.state.cached_keys() == ("a", "b", "c", "big")[evictions:]


def test_value_larger_than_the_cache_is_answered_but_not_kept():
    cache = Harness(max_bytes=4)
    (fetch,) = of(cache.get("r", "k"), CacheFetchInstruction)
    (reply,) = of(cache.fetched(fetch.fetch_id, found("k", lww(1, b"too big"))), CacheGetReplyInstruction)
    assert reply.results == (found("k", lww(1, b"too big")),)
    assert cache.state.cached_keys() == ()


def test_lru_policy_stops_once_within_bounds():
    policy = LruEvictionPolicy()
    order = [("a", 5), ("b", 5), ("c", 5)]
    assert policy.victims(order, 3, 15, max_keys=3, max_bytes=15) == []
    assert policy.victims(order, 3, 15, max_keys=1, max_bytes=100) == ["a", "b"]
    assert policy.victims(order, 3, 15, max_keys=10, max_bytes=6) == ["a", "b"]


# -- key-set reports -------------------------------------------------------------------------------------------


def test_first_event_reports_the_empty_set():
    state = CacheState(IP, CacheConfig(validate=True))
    assert state.handle(CacheTickEvent(), 0.0) == [CacheReportInstruction(cache_key_set_key(IP), ())]


def test_reports_are_batched_per_interval_and_only_on_change(cache):
    cache.load("a", lww(1, b"a"))
    cache.load("b", lww(1, b"b"))
    assert of(cache.step(CacheTickEvent(), advance=0.05), CacheReportInstruction) == []
    reports = of(cache.step(CacheTickEvent(), advance=0.05), CacheReportInstruction)
    assert reports == [CacheReportInstruction(cache_key_set_key(IP), ("a", "b"))]
    assert of(cache.step(CacheTickEvent(), advance=0.2), CacheReportInstruction) == []
    cache.push("a", lww(2, b"a2"))  # a value change, not a key-set change
    assert of(cache.step(CacheTickEvent(), advance=0.2), CacheReportInstruction) == []
    reports = of(cache.push("a", lww(3, b"")), CacheReportInstruction)  # a deletion drops the key: due at once
    assert reports == [CacheReportInstruction(cache_key_set_key(IP), ("b",))]
    cache.load("c", lww(1, b"c"))
    assert of(cache.step(CacheTickEvent(), advance=0.05), CacheReportInstruction) == []
    reports = of(cache.step(CacheTickEvent(), advance=0.06), CacheReportInstruction)
    assert reports == [CacheReportInstruction(cache_key_set_key(IP), ("b", "c"))]


def test_full_report_every_refresh_interval_without_changes(cache):
    cache.load("a", lww(1, b"a"))
    cache.step(CacheTickEvent(), advance=0.1)
    assert of(cache.step(CacheTickEvent(), advance=4.0), CacheReportInstruction) == []
    reports = of(cache.step(CacheTickEvent(), advance=1.0), CacheReportInstruction)
    assert reports == [CacheReportInstruction(cache_key_set_key(IP), ("a",))]


# -- metadata keys ---------------------------------------------------------------------------------------------


def test_metadata_keys_bypass_the_cache(cache):
    key = cache_key_set_key("10.0.0.9")
    (fetch,) = of(cache.get("r1", key), CacheFetchInstruction)
    cache.fetched(fetch.fetch_id, found(key, lww(1, b"x")))
    assert cache.state.cached_keys() == ()
    assert of(cache.get("r2", key), CacheFetchInstruction)
    (fetch,) = of(cache.get("r3", "ANNA_METADATA|other"), CacheFetchInstruction)
    cache.fetched(fetch.fetch_id, dne("ANNA_METADATA|other"))
    assert of(cache.get("r4", "ANNA_METADATA|other"), CacheFetchInstruction)  # never negative-cached
    assert of(cache.put("w", key, lww(2, b"y")), CacheWriteInstruction)
    cache.push(key, lww(3, b"z"))
    assert cache.state.cached_keys() == ()


# -- bounds and config -----------------------------------------------------------------------------------------


def test_pending_gets_are_bounded():
    cache = Harness(max_pending_gets=1)
    cache.get("r1", "a")
    (reply,) = of(cache.get("r2", "b"), CacheGetReplyInstruction)
    assert reply.results == (CacheKeyResult("b", AnnaError.TIMEOUT),)


def test_pending_writes_are_bounded():
    cache = Harness(max_pending_writes=1)
    cache.put("w1", "a", lww(1, b"a"))
    (reply,) = cache.put("w2", "b", lww(1, b"b"))
    assert isinstance(reply, CachePutReplyInstruction)
    assert reply.error == AnnaError.TIMEOUT


@pytest.mark.parametrize("field", ["max_keys", "max_bytes", "max_negative_keys"])
def test_config_rejects_non_positive_bounds(field):
    with pytest.raises(ConfigError):
        CacheConfig(**{field: 0})


def test_config_rejects_negative_intervals():
    with pytest.raises(ConfigError):
        CacheConfig(negative_ttl=-1.0)
