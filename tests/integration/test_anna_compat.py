"""The original Anna Python client works against our KVS unchanged.

This test speaks raw protobuf exactly as that client does: it binds PULL sockets for KVS responses and address
responses, PUSHes a ``KeyAddressRequest`` to the routing port with a ``"<ip>:<n>"`` request id, PUSHes one-key
``KeyRequest``s to the returned storage address, and stamps LWW values with its own coarse timestamps
(``int(time.time() * 10)``) and ``cloudpickle`` bodies wrapped in a ``Value``.
"""

import time

import cloudpickle
import pytest
import zmq

from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol.values import from_lattice
from cloudburst.protocol.wire import anna_pb2, cloudburst_pb2

pytestmark = pytest.mark.integration


class OriginalStyleClient:
    """Reproduces the original client's socket pattern and messages (not its code)."""

    def __init__(self, routing: str):
        self.context = zmq.Context()
        self.responses = self.context.socket(zmq.PULL)
        self.key_addresses = self.context.socket(zmq.PULL)
        port = self.responses.bind_to_random_port("tcp://127.0.0.1")
        address_port = self.key_addresses.bind_to_random_port("tcp://127.0.0.1")
        self.response_address = f"tcp://127.0.0.1:{port}"
        self.address_response_address = f"tcp://127.0.0.1:{address_port}"
        self.routing = self.context.socket(zmq.PUSH)
        self.routing.connect(routing)
        self.counter = 0
        self.pushers: dict[str, zmq.Socket] = {}

    def close(self):
        self.context.destroy(linger=0)

    def _request_id(self) -> str:
        self.counter = (self.counter + 1) % 10000
        return f"127.0.0.1:{self.counter}"

    def _recv(self, socket, message_class, request_id):
        while True:
            assert socket.poll(5000), "no response from the server"
            response = message_class.FromString(socket.recv())
            if response.response_id == request_id:
                return response

    def addresses(self, key: str) -> list[str]:
        request = anna_pb2.KeyAddressRequest(response_address=self.address_response_address, keys=[key])
        request.request_id = self._request_id()
        self.routing.send(request.SerializeToString())
        response = self._recv(self.key_addresses, anna_pb2.KeyAddressResponse, request.request_id)
        assert response.error == anna_pb2.NO_ERROR
        return list(response.addresses[0].ips)

    def _send(self, key: str, request):
        address = self.addresses(key)[0]
        if address not in self.pushers:
            self.pushers[address] = self.context.socket(zmq.PUSH)
            self.pushers[address].connect(address)
        request.response_address = self.response_address
        request.request_id = self._request_id()
        self.pushers[address].send(request.SerializeToString())
        return self._recv(self.responses, anna_pb2.KeyResponse, request.request_id)

    def put_lww(self, key: str, value: object) -> anna_pb2.KeyResponse:
        body = cloudburst_pb2.Value(body=cloudpickle.dumps(value), type=cloudburst_pb2.DEFAULT)
        lww = anna_pb2.LWWValue(timestamp=int(time.time() * 10), value=body.SerializeToString())
        request = anna_pb2.KeyRequest(type=anna_pb2.PUT)
        request.tuples.add(key=key, lattice_type=anna_pb2.LWW, payload=lww.SerializeToString())
        return self._send(key, request)

    def put_set(self, key: str, items: list[bytes]) -> anna_pb2.KeyResponse:
        request = anna_pb2.KeyRequest(type=anna_pb2.PUT)
        payload = anna_pb2.SetValue(values=items).SerializeToString()
        request.tuples.add(key=key, lattice_type=anna_pb2.SET, payload=payload)
        return self._send(key, request)

    def get(self, key: str) -> anna_pb2.KeyTuple:
        request = anna_pb2.KeyRequest(type=anna_pb2.GET)
        request.tuples.add(key=key)
        return self._send(key, request).tuples[0]


@pytest.fixture
def original(kvs_node):
    client = OriginalStyleClient(kvs_node.routing)
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
