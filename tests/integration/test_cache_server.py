"""The node cache against a real KVS node: read-through, write-through, pushes, key-set reports, bad input.

The cache runs in a thread on its own loopback ip (the KVS pushes to ``<ip>:7150``), the KVS in a child process.
"""

import statistics
import time

import pytest
import zmq

from cloudburst.cache.client import NodeCacheClient
from cloudburst.cache.server import CacheServer
from cloudburst.cache.state import CacheConfig
from cloudburst.cluster.local import random_loopback_host
from cloudburst.errors import LatticeTypeMismatch
from cloudburst.keys import cache_key_set_key
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol import codec
from cloudburst.protocol.messages import KeyRequest, KeyTuple, RequestType

pytestmark = pytest.mark.integration

PUSH_WRITES = 200
DEADLINE = 10.0


def wait_for(condition, what, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def server(node, kvs_host, fast_retry, serve_in_thread):
    server = CacheServer(
        random_loopback_host(kvs_host),
        node.routing,
        request_port=0,
        config=CacheConfig(validate=True),
        kvs_retry=fast_retry,
    )
    return serve_in_thread(server)


@pytest.fixture
def cache(server, fast_retry):
    with NodeCacheClient(server.request_address, host="127.0.0.1", retry=fast_retry) as client:
        yield client


def reported_keys(kvs, ip):
    report = kvs.get(cache_key_set_key(ip))
    if report is None:
        return set()
    assert isinstance(report, LwwLattice)
    return set(codec.decode_string_set(report.value))


def test_reads_go_through_the_cache_once(kvs, server, cache):
    kvs.put("a", LwwLattice(1, b"one"))
    before = server.state.statistics()
    assert cache.get("a") == LwwLattice(1, b"one")
    assert cache.get_many(["a", "missing"]) == {"a": LwwLattice(1, b"one"), "missing": None}
    after = server.state.statistics()
    assert after.misses - before.misses == 2  # "a" once, "missing" once
    assert after.hits - before.hits == 1
    assert server.state.get_cached("a") is not None


def test_writes_reach_the_kvs_and_are_read_back_through_the_cache(kvs, cache):
    assert cache.get("w") is None  # remembered as missing; the write must forget that
    cache.put("w", LwwLattice(5, b"five"))
    assert kvs.get("w") == LwwLattice(5, b"five")
    assert cache.get("w") == LwwLattice(5, b"five")
    cache.put_many({"w": LwwLattice(6, b"six"), "s": SetLattice(frozenset({b"x"}))})
    assert cache.get_many(["w", "s"]) == {"w": LwwLattice(6, b"six"), "s": SetLattice(frozenset({b"x"}))}
    assert kvs.get("s") == SetLattice(frozenset({b"x"}))


def test_the_key_set_report_reaches_the_kvs(kvs, server, cache):
    kvs.put("reported", LwwLattice(1, b"r"))
    cache.get("reported")
    wait_for(lambda: "reported" in reported_keys(kvs, server.node_ip), "the key-set report")


def test_writes_of_other_clients_are_pushed_into_the_cache(kvs, server, cache):
    kvs.put("hot", LwwLattice(1, b"v0"))
    assert cache.get("hot") == LwwLattice(1, b"v0")
    wait_for(lambda: "hot" in reported_keys(kvs, server.node_ip), "the key-set report")
    delays = []
    for i in range(2, PUSH_WRITES + 2):
        expected = LwwLattice(i, f"v{i}".encode())
        kvs.put("hot", expected)
        acknowledged = time.perf_counter()
        deadline = acknowledged + DEADLINE
        while cache.get("hot") != expected:
            assert time.perf_counter() < deadline, f"write {i} never became visible through the cache"
        delays.append(time.perf_counter() - acknowledged)
    # Every write was served from the cache after the first: visibility came from pushes, not refetches.
    assert server.state.statistics().pushes_applied >= PUSH_WRITES
    cuts = statistics.quantiles(delays, n=100)
    print()
    print(
        f"visible through the cache after the KVS acknowledgement, over {len(delays)} writes: "
        f"p50 {cuts[49] * 1e6:.0f} us, p99 {cuts[98] * 1e6:.0f} us, max {max(delays) * 1e6:.0f} us"
    )


def test_a_type_mismatch_reaches_the_writer(kvs, cache):
    kvs.put("typed", SetLattice(frozenset({b"a"})))
    with pytest.raises(LatticeTypeMismatch):
        cache.put("typed", LwwLattice(1, b"x"))  # not cached: the KVS refuses it
    assert cache.get("typed") == SetLattice(frozenset({b"a"}))
    with pytest.raises(LatticeTypeMismatch):
        cache.put("typed", LwwLattice(2, b"x"))  # cached: the cache refuses it
    assert cache.get("typed") == SetLattice(frozenset({b"a"}))


def test_garbage_on_both_ports_is_dropped_and_serving_goes_on(kvs, server, cache):
    context = zmq.Context()
    try:
        sockets = []
        for address in (server.request_address, server.update_address):
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(address)
            sockets.append(socket)
        requests, updates = sockets
        requests.send(b"\xff\x00 not a protobuf")
        updates.send(b"\xff\x00 not a protobuf either")
        # A reply address off loopback is refused by a loopback-bound server.
        refused = KeyRequest(RequestType.GET, (KeyTuple("a"),), "tcp://8.8.8.8:9", "x")
        requests.send(codec.encode_key_request(refused))
        # A push that is not a PUT, and a push with a corrupt payload, are dropped too.
        updates.send(codec.encode_key_request(KeyRequest(RequestType.GET, (KeyTuple("a"),))))
        corrupt = KeyTuple("pushed", codec.encode_lattice(LwwLattice(1, b""))[0], payload=b"\xff\xff")
        updates.send(codec.encode_key_request(KeyRequest(RequestType.PUT, (corrupt,))))
        wait_for(lambda: server.rejected_messages >= 4, "the rejections")
        for socket in sockets:
            socket.close()
    finally:
        context.term()
    kvs.put("after", LwwLattice(1, b"still serving"))
    assert cache.get("after") == LwwLattice(1, b"still serving")
