"""Malformed input on every KVS port is rejected and the node keeps serving."""

import random

import pytest
import zmq

from cloudburst.kvs.client import KvsClient
from cloudburst.lattices import LwwLattice
from cloudburst.protocol import codec
from cloudburst.protocol.messages import KeyAddressRequest, KeyRequest, KeyTuple, LatticeType, RequestType

pytestmark = pytest.mark.integration

MESSAGES_PER_PORT = 3000


def bad_messages(rng: random.Random, valid: list[bytes]):
    """Random bytes, truncations and byte flips of valid messages, and empty frames."""
    for i in range(MESSAGES_PER_PORT):
        kind = i % 4
        if kind == 0:
            yield rng.randbytes(rng.randint(0, 200))
        elif kind == 1:
            message = rng.choice(valid)
            yield message[: rng.randint(0, len(message) - 1)]
        elif kind == 2:
            message = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                message[rng.randrange(len(message))] = rng.randrange(256)
            yield bytes(message)
        else:
            yield b""


def valid_messages(response_address: str) -> list[bytes]:
    lww = codec.encode_lattice(LwwLattice(timestamp=7, value=b"v"))[1]
    return [
        codec.encode_key_request(KeyRequest(RequestType.GET, (KeyTuple("k"),), response_address, "r1")),
        codec.encode_key_request(
            KeyRequest(RequestType.PUT, (KeyTuple("k", LatticeType.LWW, payload=lww),), response_address, "r2")
        ),
        codec.encode_key_address_request(KeyAddressRequest(response_address, ("k", "j"), "r3")),
    ]


def test_every_port_survives_garbage_then_serves(kvs_node, fast_retry):
    context = zmq.Context()
    sink = context.socket(zmq.PULL)
    sink_address = f"tcp://127.0.0.1:{sink.bind_to_random_port('tcp://127.0.0.1')}"
    rng = random.Random(20261124)
    valid = valid_messages(sink_address)
    try:
        for endpoint in (kvs_node.routing, *kvs_node.addresses.storage):
            push = context.socket(zmq.PUSH)
            push.connect(endpoint)
            for message in bad_messages(rng, valid):
                push.send(message)
            push.close(linger=5000)
        # Replies that garbled messages still earned (valid enough to answer) are drained, not checked.
        while sink.poll(200):
            sink.recv()
        with KvsClient(kvs_node.routing, retry=fast_retry) as client:
            client.put("after-fuzz", LwwLattice(timestamp=1, value=b"still serving"))
            assert client.get("after-fuzz") == LwwLattice(timestamp=1, value=b"still serving")
    finally:
        context.destroy(linger=0)
    assert "rejected input (storage thread 0)" in kvs_node.log_text()


def test_reply_addresses_off_loopback_are_refused(kvs_node):
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.connect(kvs_node.addresses.storage[0])
        request = KeyRequest(RequestType.GET, (KeyTuple("k"),), "tcp://192.0.2.1:9", "x")
        push.send(codec.encode_key_request(request))
        push.close(linger=2000)
    finally:
        context.destroy(linger=0)
    with KvsClient(kvs_node.routing) as client:
        assert client.get("k") is None
    assert "not on loopback" in kvs_node.log_text()
