import threading
import time

import pytest

from cloudburst.clock import TimestampGenerator
from cloudburst.errors import DeadlineExceeded, LatticeTypeMismatch
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.kvs.state import StorageTopology
from cloudburst.lattices import LwwLattice, MultiKeyCausalLattice, SetLattice, VectorClock
from cloudburst.protocol.values import from_lattice, to_lattice

pytestmark = pytest.mark.integration


def test_put_get_round_trip(client):
    stamp = TimestampGenerator(1)
    client.put("user/1", to_lattice({"name": "ada"}, stamp))
    assert from_lattice(client.get("user/1")) == {"name": "ada"}
    assert client.get("user/404") is None


def test_many_keys_in_one_call(client):
    items = {f"k{i}": LwwLattice(timestamp=i + 1, value=str(i).encode()) for i in range(300)}
    client.put_many(items)
    assert client.get_many([*list(items), "missing"]) == {**items, "missing": None}


def test_concurrent_writers_merge(kvs_node, fast_retry):
    def writer(name):
        with KvsClient(kvs_node.routing, retry=fast_retry) as own:
            for i in range(50):
                own.put("tags", SetLattice(frozenset({f"{name}-{i}".encode()})))

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with KvsClient(kvs_node.routing, retry=fast_retry) as reader:
        assert len(reader.get("tags").values) == 150


def test_type_mismatch_raises_a_typed_error(client):
    client.put("k", LwwLattice(timestamp=1, value=b"v"))
    with pytest.raises(LatticeTypeMismatch) as caught:
        client.put("k", SetLattice(frozenset({b"x"})))
    assert (caught.value.key, caught.value.stored, caught.value.given) == ("k", "LWW", "SET")


def test_causal_put_and_get(client):
    first = MultiKeyCausalLattice.of(VectorClock.of({"s1": 1}), [b"a"], {"dep": VectorClock.of({"s1": 1})})
    second = MultiKeyCausalLattice.of(VectorClock.of({"s2": 1}), [b"b"])
    client.causal_put("c", first)
    client.causal_put("c", second)
    assert client.causal_get(["c"])["c"] == first.merge(second)


def test_keys_spread_over_threads_and_survive_a_membership_change(tmp_path, fast_retry, port_block):
    routing = port_block(7)
    storage = routing + 4  # after the four routing ports the KVS answers on
    data = tmp_path / "data"
    keys = [f"key/{i}" for i in range(60)]
    before = StorageTopology("127.0.0.1", (storage, storage + 1, storage + 2))
    after = StorageTopology("127.0.0.1", (storage, storage + 1))
    assert {before.owners(k)[0] for k in keys} == {0, 1, 2}
    moved = [k for k in keys if before.endpoint(before.owners(k)[0]) != after.endpoint(after.owners(k)[0])]
    assert len(moved) > 10, "the test needs keys whose owner changes"
    with KvsProcess(data, threads=3, routing_port=routing, storage_port=storage) as node:
        client = KvsClient(node.routing, retry=fast_retry)
        client.put_many({k: SetLattice(frozenset({k.encode()})) for k in keys})
        node.stop()
        # Same ports, fewer threads: a third of the cached addresses are now wrong or dead.
        with KvsProcess(data, threads=2, routing_port=routing, storage_port=storage):
            stored = client.get_many(keys, timeout=10)
            assert all(stored[k] == SetLattice(frozenset({k.encode()})) for k in keys)
        client.close()


def test_calls_fail_with_deadline_exceeded_when_the_node_is_gone(kvs_node, client):
    client.put("k", LwwLattice(timestamp=1, value=b"v"))
    kvs_node.kill()
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.get("k", timeout=0.5)
    assert time.monotonic() - start < 5


def test_fresh_keys_guessed_onto_the_wrong_thread_are_redirected(tmp_path, fast_retry):
    with KvsProcess(tmp_path / "data", threads=4) as node, KvsClient(node.routing, retry=fast_retry) as client:
        client.put("first", SetLattice(frozenset({b"0"})))  # now the client knows exactly one storage endpoint
        items = {f"fresh/{i}": SetLattice(frozenset({str(i).encode()})) for i in range(60)}
        client.put_many(items)
        assert client.get_many(items) == items
        for key, lattice in items.items():
            assert client.get(key) == lattice


def wait_settled(client, request_ids, seconds=5.0):
    outcomes = {}
    give_up = time.monotonic() + seconds
    while set(outcomes) < set(request_ids) and time.monotonic() < give_up:
        outcomes |= client.settle()
        time.sleep(0.005)
    return outcomes


def test_merges_sent_without_waiting_are_settled_later_even_across_other_calls(client):
    assert client.put_nowait({"k0": LwwLattice(1, b"v")}) is None  # no owner known yet: the caller must wait
    client.put("k0", LwwLattice(1, b"v"))
    sent = [client.put_nowait({f"k{i}": LwwLattice(1, b"v")}) for i in range(1, 50)]
    assert None not in sent
    assert client.get("k1") is not None  # the blocking read keeps the acknowledgements that arrive meanwhile
    assert wait_settled(client, sent) == dict.fromkeys(sent, ())
    assert client.unsettled == 0
    assert client.get_many([f"k{i}" for i in range(50)]) == {f"k{i}": LwwLattice(1, b"v") for i in range(50)}


def test_a_merge_sent_to_the_wrong_thread_is_reported_not_stored(tmp_path, fast_retry):
    with KvsProcess(tmp_path / "data", threads=4) as node, KvsClient(node.routing, retry=fast_retry) as client:
        client.put("first", SetLattice(frozenset({b"0"})))  # one endpoint known: fresh keys are guessed onto it
        sent = {client.put_nowait({f"fresh/{i}": SetLattice(frozenset({b"x"}))}): f"fresh/{i}" for i in range(40)}
        outcomes = wait_settled(client, sent)
        refused = {sent[rid] for rid, failed in outcomes.items() if failed}
        assert refused  # 40 keys over 4 threads: most were guessed wrong
        assert all(outcomes[rid] in ((), (key,)) for rid, key in sent.items())
        client.put_many({key: SetLattice(frozenset({b"x"})) for key in refused})  # the retry looks them up
        assert all(client.get(key) == SetLattice(frozenset({b"x"})) for key in sent.values())
