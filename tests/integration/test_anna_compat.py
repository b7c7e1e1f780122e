"""The original Anna Python client works against our KVS unchanged.

These tests speak raw protobuf exactly as that client does (:class:`original_client.AnnaStyleClient`), with
``cloudpickle`` bodies wrapped in a ``Value``.
"""

import time

import cloudpickle
import pytest
from original_client import AnnaStyleClient

from cloudburst.kvs.process import KvsProcess
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol.values import from_lattice
from cloudburst.protocol.wire import anna_pb2, cloudburst_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def original(kvs_node):
    client = AnnaStyleClient(kvs_node.routing)
    yield client
    client.close()


def test_original_client_put_and_get(original):
    response = original.put_lww("legacy", {"from": "the original client"})
    assert response.type == anna_pb2.PUT
    assert response.tuples[0].error == anna_pb2.NO_ERROR
    assert response.tuples[0].lattice_type == anna_pb2.LWW
    item = original.get("legacy")
    assert item.error == anna_pb2.NO_ERROR
    value = cloudburst_pb2.Value.FromString(anna_pb2.LWWValue.FromString(item.payload).value)
    assert cloudpickle.loads(value.body) == {"from": "the original client"}


def test_original_client_sees_missing_keys_as_key_dne(original):
    assert original.get("never-written").error == anna_pb2.KEY_DNE


def test_original_and_new_clients_share_data(original, client):
    original.put_lww("shared", [1, 2, 3])
    assert from_lattice(client.get("shared")) == [1, 2, 3]
    client.put("from-new", SetLattice(frozenset({b"x"})))
    original.put_set("from-new", [b"y"])
    item = original.get("from-new")
    assert item.lattice_type == anna_pb2.SET
    assert sorted(anna_pb2.SetValue.FromString(item.payload).values) == [b"x", b"y"]


def test_new_writes_beat_original_coarse_timestamps(original, client):
    # Original writers stamp tenths of a second; our writers stamp microseconds with a writer id, so a later
    # write from either side is never lost to a coarse stamp.
    original.put_lww("race", "old")
    client.put("race", LwwLattice(timestamp=int(time.time() * 1e6) << 12, value=b"ignored-format"))
    assert anna_pb2.LWWValue.FromString(original.get("race").payload).value == b"ignored-format"


def test_type_mismatch_is_reported_to_the_original_client(original):
    original.put_lww("typed", 1)
    assert original.put_set("typed", [b"x"]).tuples[0].error == anna_pb2.LATTICE


def test_clients_outside_local_mode_reach_any_of_the_four_routing_ports(tmp_path, kvs_host):
    # The Anna client outside local mode asks a random one of 6450-6453 for each lookup.
    with KvsProcess(None, host=kvs_host, routing_port=6450) as node:
        for port in range(6450, 6454):
            client = AnnaStyleClient(f"tcp://{kvs_host}:{port}", host=kvs_host)
            try:
                assert client.put_lww(f"via-{port}", port).tuples[0].error == anna_pb2.NO_ERROR
                assert client.get(f"via-{port}").error == anna_pb2.NO_ERROR
            finally:
                client.close()
        assert node.routing == f"tcp://{kvs_host}:6450"
