"""The node cache's causal ports against a real KVS node: snapshots, kept versions, bounds, bad input.

The cache runs in a thread on its own loopback ip, the KVS in a child process. Sessions are driven with the
executor's own causal client, without executors.
"""

import time

import pytest
import zmq

from cloudburst.cache.client import NodeCacheClient
from cloudburst.cache.server import CacheServer
from cloudburst.cache.session_client import CausalCacheClient
from cloudburst.cluster.local import random_loopback_host
from cloudburst.errors import CausalConflict, SessionExpired
from cloudburst.executor.causal import CausalSession, WriterCounter, latest_value
from cloudburst.executor.causal_io import CausalDataClient
from cloudburst.lattices import LwwLattice, MultiKeyCausalLattice, VectorClock
from cloudburst.protocol import codec, values
from cloudburst.protocol.causal_messages import CausalReadRequest
from cloudburst.protocol.messages import ConsistencyType

pytestmark = pytest.mark.integration

MULTI = ConsistencyType.MULTI
SINGLE = ConsistencyType.SINGLE


@pytest.fixture
def cache_server(node, kvs_host, fast_retry, serve_in_thread):
    host = random_loopback_host(kvs_host)
    # No pushes reach this cache (its update port is not the one the KVS pushes to), so cached copies go stale: the
    # causal bounds and the cut must still never answer below what a session needs.
    server = CacheServer(host, node.routing, request_port=0, update_port=0, kvs_retry=fast_retry)
    return serve_in_thread(server)


@pytest.fixture
def causal(cache_server, fast_retry):
    with NodeCacheClient(cache_server.request_address, host="127.0.0.1", retry=fast_retry) as data:
        sessions = CausalCacheClient(host="127.0.0.1", timeout=5.0, retry=fast_retry)
        try:
            yield CausalDataClient(cache_server.causal_address, sessions, data, WriterCounter("test"), 5.0)
        finally:
            sessions.close()


def wait_true(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def write_once(causal, session_id, key, value, mode=MULTI):
    """A request that writes one key and ends, releasing what the cache kept for it (its write, under MULTI)."""
    session = CausalSession(session_id, mode)
    causal.write(session, key, value)
    causal.end(session)


def read_one(causal, session, key):
    found, not_causal = causal.read(session, [key])
    assert not not_causal
    value = found[key]
    return None if value is None else values.deserialize(latest_value(value))


def test_a_session_reads_what_an_earlier_session_wrote_and_its_reads_repeat(causal, cache_server):
    write_once(causal, "w1", "k", "first")
    reader = CausalSession("r1", MULTI)
    assert read_one(causal, reader, "k") == "first"
    assert wait_true(lambda: len(cache_server.sessions) == 1)
    # A later write does not change what the reading request sees of the key, downstream included.
    write_once(causal, "w2", "k", "second")
    downstream = CausalSession("r1", MULTI, reader.metadata())
    assert read_one(causal, downstream, "k") == "first"
    later = CausalSession("r2", MULTI)
    assert read_one(causal, later, "k") == "second"
    assert read_one(causal, CausalSession("r3", SINGLE), "k") == "second"  # SINGLE keeps nothing
    # Ending a request releases what the caches kept for it, and only that.
    causal.end(downstream)
    assert wait_true(lambda: len(cache_server.sessions) == 1)
    causal.end(later)
    assert wait_true(lambda: len(cache_server.sessions) == 0)


def test_an_effect_is_never_read_without_its_cause_even_from_a_stale_cached_copy(causal, kvs):
    # The cache holds user@1 and never hears of user@2 (no pushes reach it).
    write_once(causal, "setup", "user", "v1")
    assert read_one(causal, CausalSession("warm", MULTI), "user") == "v1"
    # Elsewhere: user@2 is written, then a post that depends on it.
    other = CausalSession("elsewhere", MULTI)
    found, _ = causal.read(other, ["user"])
    v1_clock = found["user"].vector_clock
    user_v2 = MultiKeyCausalLattice.of(v1_clock.increment("other"), (values.serialize("v2"),))
    kvs.put("user", user_v2)
    post = MultiKeyCausalLattice.of(
        VectorClock.of({"other": 1}), (values.serialize("post"),), {"user": user_v2.vector_clock}
    )
    kvs.put("post", post)
    # Reading the post and then the user in one request: the user is at least the version the post depends on.
    session = CausalSession("reader", MULTI)
    assert read_one(causal, session, "post") == "post"
    assert read_one(causal, session, "user") == "v2"
    # And together in one read too.
    together = CausalSession("together", MULTI)
    found, _ = causal.read(together, ["user", "post"])
    assert values.deserialize(latest_value(found["user"])) == "v2"


def test_single_reads_never_go_below_what_the_session_already_saw(causal, kvs):
    write_once(causal, "setup", "counter", 1, SINGLE)
    assert read_one(causal, CausalSession("warm", SINGLE), "counter") == 1
    found, _ = causal.read(CausalSession("peek", SINGLE), ["counter"])
    newer = MultiKeyCausalLattice.of(found["counter"].vector_clock.increment("other"), (values.serialize(2),))
    kvs.put("counter", newer)  # the cache's copy stays at 1 (no pushes)
    session = CausalSession("s", SINGLE)
    session.absorb("counter", newer)  # as if an upstream function had read it
    assert read_one(causal, session, "counter") == 2
    assert read_one(causal, CausalSession("fresh", SINGLE), "counter") == 1  # allowed: nothing seen yet


def test_a_version_depending_on_a_newer_version_than_the_request_read_is_a_conflict(causal, kvs):
    write_once(causal, "setup", "cause", "old")
    session = CausalSession("s", MULTI)
    assert read_one(causal, session, "cause") == "old"
    newer_cause = VectorClock.of({"other": 5})
    kvs.put("cause", MultiKeyCausalLattice.of(newer_cause, (values.serialize("new"),)))
    kvs.put("effect", MultiKeyCausalLattice.of(VectorClock.of({"other": 6}), (b"x",), {"cause": newer_cause}))
    with pytest.raises(CausalConflict, match=r"'effect'.*'cause'"):
        causal.read(session, ["effect"])


def test_declared_future_reads_are_kept_consistent_with_the_first_read(causal, kvs):
    write_once(causal, "setup", "later", "v1")
    first = CausalSession("req", MULTI)
    causal.read(first, ["now"], future_read_set=["later"])
    kvs.put("later", MultiKeyCausalLattice.of(VectorClock.of({"other": 9}), (values.serialize("v2"),)))
    downstream = CausalSession("req", MULTI, first.metadata())
    assert read_one(causal, downstream, "later") == "v1"


def test_keys_holding_plain_values_are_reported_not_causal(causal, kvs):
    kvs.put("plain", LwwLattice(1, values.serialize("x")))
    found, not_causal = causal.read(CausalSession("s", MULTI), ["plain", "missing"])
    assert not_causal == ("plain",)
    assert found == {"missing": None}


def test_garbage_on_the_causal_ports_is_dropped_and_serving_goes_on(causal, cache_server):
    context = zmq.Context()
    try:
        sockets = []
        for address in (cache_server.causal_address, cache_server.session_address):
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(address)
            sockets.append(socket)
        reads, sessions = sockets
        before = cache_server.rejected_messages
        reads.send(b"\xff\x00 not a protobuf")
        sessions.send(b"\xff\xff\xff")
        normal = CausalReadRequest("s", ConsistencyType.NORMAL, ("a",), "tcp://127.0.0.1:9", "x")
        reads.send(codec.encode_causal_read_request(normal))
        off_loopback = CausalReadRequest("s", MULTI, ("a",), "tcp://8.8.8.8:9", "y")
        reads.send(codec.encode_causal_read_request(off_loopback))
        assert wait_true(lambda: cache_server.rejected_messages >= before + 4)
        for socket in sockets:
            socket.close()
    finally:
        context.term()
    write_once(causal, "w", "after", "still serving")
    assert read_one(causal, CausalSession("r", MULTI), "after") == "still serving"


def test_a_read_of_a_version_the_cache_no_longer_keeps_is_a_typed_error(causal, cache_server):
    write_once(causal, "w", "k", 1)
    first = CausalSession("gone", MULTI)
    read_one(causal, first, "k")
    causal.end(first)  # as if the session had expired there
    assert wait_true(lambda: len(cache_server.sessions) == 0)
    with pytest.raises(SessionExpired, match="'k'"):
        causal.read(CausalSession("gone", MULTI, first.metadata()), ["k"])


def test_a_key_read_as_missing_stays_missing_for_the_request(causal):
    first = CausalSession("req", MULTI)
    assert read_one(causal, first, "later") is None
    write_once(causal, "w", "later", "exists now")
    downstream = CausalSession("req", MULTI, first.metadata())
    assert read_one(causal, downstream, "later") is None
    assert read_one(causal, CausalSession("other", MULTI), "later") == "exists now"
