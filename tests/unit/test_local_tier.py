"""The executor's local read tier: copies are dropped by invalidations, and everything on a sequence gap."""

import time

import pytest
import zmq

from cloudburst.executor.local_tier import LocalReadTier
from cloudburst.lattices import LwwLattice


class CountingStore:
    """The node cache stand-in: a dict that counts reads, so tests see what the tier answered itself."""

    def __init__(self):
        self.data = {}
        self.reads = 0
        self.last_cached = frozenset()

    def get_many(self, keys, *, timeout=None):
        self.reads += 1
        return {key: self.data.get(key) for key in keys}

    def put_many(self, items, *, timeout=None):
        self.data.update(items)


@pytest.fixture
def rig():
    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    address = "inproc://invalidations"
    publisher.bind(address)
    store = CountingStore()
    tier = LocalReadTier(store, address, context)
    sequence = iter(range(1, 1000))

    def publish(*keys, skip=0):
        for _ in range(skip):
            next(sequence)
        publisher.send_multipart([next(sequence).to_bytes(8, "big"), *(k.encode() for k in keys)])
        time.sleep(0.01)  # inproc delivery is asynchronous; the tier drains without blocking

    time.sleep(0.05)  # let the subscription reach the publisher (a SUB joins asynchronously)
    yield tier, store, publish
    tier.close()
    publisher.close()
    context.term()


def test_nothing_is_kept_before_the_stream_is_heard(rig):
    tier, store, publish = rig
    store.data["k"] = LwwLattice(1, b"a")
    tier.get("k")
    tier.get("k")
    assert store.reads == 2
    publish()  # heartbeat
    tier.get("k")
    tier.get("k")
    assert store.reads == 3


def test_invalidated_keys_are_read_again(rig):
    tier, store, publish = rig
    publish()
    store.data["k"] = LwwLattice(1, b"a")
    assert tier.get("k") == LwwLattice(1, b"a")
    store.data["k"] = LwwLattice(2, b"b")
    assert tier.get("k") == LwwLattice(1, b"a")  # a hit: no invalidation yet
    publish("k")
    assert tier.get("k") == LwwLattice(2, b"b")


def test_a_sequence_gap_drops_every_copy(rig):
    tier, store, publish = rig
    publish()
    store.data.update({"a": LwwLattice(1, b"a"), "b": LwwLattice(1, b"b")})
    tier.get_many(["a", "b"])
    reads = store.reads
    publish(skip=1)  # one message lost
    tier.get_many(["a", "b"])
    assert store.reads == reads + 1


def test_own_writes_drop_the_local_copy(rig):
    tier, store, publish = rig
    publish()
    store.data["k"] = LwwLattice(1, b"a")
    tier.get("k")
    tier.put("k", LwwLattice(2, b"b"))
    assert tier.get("k") == LwwLattice(2, b"b")


def test_each_read_tells_which_keys_were_answered_here_and_which_the_cache_had_in_memory(rig):
    tier, store, publish = rig
    publish()
    store.data.update({"a": LwwLattice(1, b"a"), "b": LwwLattice(1, b"b")})
    store.last_cached = frozenset({"b"})
    tier.get_many(["a"])
    assert (tier.last_hits, tier.last_cached) == (frozenset(), frozenset({"b"}))
    store.last_cached = frozenset()
    tier.get_many(["a", "b"])
    assert (tier.last_hits, tier.last_cached) == (frozenset({"a"}), frozenset())
    tier.get_many(["a", "b"])
    assert (tier.last_hits, tier.last_cached) == (frozenset({"a", "b"}), frozenset())
