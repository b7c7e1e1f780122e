"""A real KVS node pushes every change of a key a node cache reported holding, at once (the original waited
for its 10 s gossip).

A PULL socket on ``<loopback ip>:7150`` stands in for the node cache of that ip.
"""

import statistics
import time

import pytest
import zmq

from cloudburst.cluster.local import random_loopback_host
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol import codec
from cloudburst.protocol.messages import RequestType

pytestmark = pytest.mark.integration

WRITES = 600
PUSH_WAIT_MS = 10_000


class FakeCache:
    """The update port of a node cache: receives pushed KeyRequests."""

    def __init__(self, ip):
        self.ip = ip
        self.received_at = 0.0
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(f"tcp://{ip}:7150")

    def close(self):
        self._socket.close()
        self._context.term()

    def receive(self, timeout_ms=PUSH_WAIT_MS):
        """The next push as {key: lattice}; fails the test if none arrives in time."""
        assert self._socket.poll(timeout_ms), "no push arrived"
        data = self._socket.recv()
        self.received_at = time.perf_counter()
        request = codec.decode_key_request(data)
        assert request.type == RequestType.PUT
        assert request.response_address == ""
        return {t.key: codec.decode_lattice(t.lattice_type, t.payload) for t in request.tuples}

    def report(self, client, keys, timestamp=1):
        """Subscribes to ``keys`` the way the node cache does: an LWW of its key set under its metadata key."""
        client.put(f"ANNA_METADATA|cache_ip|{self.ip}", LwwLattice(timestamp, codec.encode_string_set(keys)))


@pytest.fixture
def cache(kvs_host):
    cache = FakeCache(random_loopback_host(kvs_host))
    yield cache
    cache.close()


def test_every_write_of_a_subscribed_key_is_pushed_with_its_merged_value(kvs, cache):
    lww_keys = ["user/a", "user/b", "user/c"]
    cache.report(kvs, [*lww_keys, "tags"])
    tags = set()
    delays = []
    write_to_cache = []
    for i in range(WRITES):
        if i % 4 == 3:
            tags.add(str(i).encode())
            key, lattice, expected = "tags", SetLattice(frozenset({str(i).encode()})), SetLattice(frozenset(tags))
        else:
            key = lww_keys[i % 4]
            lattice = expected = LwwLattice(timestamp=i + 1, value=f"v{i}".encode())
        started = time.perf_counter()
        kvs.put(key, lattice)
        acknowledged = time.perf_counter()  # a push that beat the acknowledgement counts as no delay
        assert cache.receive() == {key: expected}, f"write {i}"
        delays.append(cache.received_at - acknowledged)
        write_to_cache.append(cache.received_at - started)
    print()
    for what, samples in (("after the PUT acknowledgement", delays), ("from the start of the PUT", write_to_cache)):
        cuts = statistics.quantiles(samples, n=100)
        print(
            f"push arrival {what} over {len(samples)} writes: "
            f"p50 {cuts[49] * 1e6:.0f} us, p99 {cuts[98] * 1e6:.0f} us, max {max(samples) * 1e6:.0f} us"
        )


def test_unsubscribed_and_metadata_keys_are_not_pushed(kvs, cache):
    cache.report(kvs, ["watched"])
    kvs.put("unwatched", LwwLattice(1, b"x"))
    kvs.put("ANNA_METADATA|stats|t0", LwwLattice(1, b"x"))
    kvs.put("watched", LwwLattice(1, b"marker"))
    # Pushes to one cache arrive in order, so had the first writes been pushed they would come first.
    assert cache.receive() == {"watched": LwwLattice(1, b"marker")}
    cache.report(kvs, [], timestamp=2)
    kvs.put("watched", LwwLattice(2, b"after"))
    cache.report(kvs, ["other"], timestamp=3)
    kvs.put("other", LwwLattice(1, b"marker"))
    assert cache.receive() == {"other": LwwLattice(1, b"marker")}


def test_a_restarted_node_keeps_the_subscriptions(tmp_path, kvs_host, cache, fast_retry):
    with KvsProcess(tmp_path / "data", host=kvs_host) as node, KvsClient(node.routing, retry=fast_retry) as kvs:
        cache.report(kvs, ["k"])
        kvs.put("k", LwwLattice(1, b"before"))
        assert cache.receive() == {"k": LwwLattice(1, b"before")}
    with KvsProcess(tmp_path / "data", host=kvs_host) as node, KvsClient(node.routing, retry=fast_retry) as kvs:
        kvs.put("k", LwwLattice(2, b"after"))
        assert cache.receive() == {"k": LwwLattice(2, b"after")}
