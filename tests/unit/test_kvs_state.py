import pytest

from cloudburst.kvs.engine import MemoryEngine
from cloudburst.kvs.state import KvsState, StorageTopology
from cloudburst.lattices import LwwLattice, OrderedSetLattice, SetLattice
from cloudburst.protocol import codec
from cloudburst.protocol.messages import (
    AnnaError,
    KeyAddressRequest,
    KeyRequest,
    KeyTuple,
    LatticeType,
    RequestType,
)


def put(key, lattice, **fields):
    lattice_type, payload = codec.encode_lattice(lattice)
    return KeyRequest(RequestType.PUT, (KeyTuple(key, lattice_type, payload=payload, **fields),), "tcp://c:1", "p")


def get(*keys, **fields):
    return KeyRequest(RequestType.GET, tuple(KeyTuple(k, **fields) for k in keys), "tcp://c:1", "g")


@pytest.fixture
def state():
    return KvsState(StorageTopology("127.0.0.1", (6200,)), MemoryEngine())


def only(responses):
    (response,) = responses
    (item,) = response.tuples
    return item


def test_missing_key_is_key_dne(state):
    assert only(state.handle_key_requests(0, [get("nope")])).error == AnnaError.KEY_DNE


def test_put_then_get_returns_the_merge(state):
    state.handle_key_requests(0, [put("s", SetLattice(frozenset({b"a"})))])
    state.handle_key_requests(0, [put("s", SetLattice(frozenset({b"b"})))])
    item = only(state.handle_key_requests(0, [get("s")]))
    assert item.error == AnnaError.NO_ERROR
    assert codec.decode_lattice(item.lattice_type, item.payload) == SetLattice(frozenset({b"a", b"b"}))


def test_put_echoes_type_and_request_id(state):
    (response,) = state.handle_key_requests(0, [put("k", LwwLattice(timestamp=1, value=b"v"))])
    assert response.response_id == "p"
    assert response.type == RequestType.PUT
    assert response.tuples[0].lattice_type == LatticeType.LWW
    assert response.tuples[0].error == AnnaError.NO_ERROR


def test_type_mismatch_is_reported_not_swallowed(state):
    state.handle_key_requests(0, [put("k", LwwLattice(timestamp=1, value=b"v"))])
    assert only(state.handle_key_requests(0, [put("k", SetLattice(frozenset()))])).error == AnnaError.LATTICE
    item = only(state.handle_key_requests(0, [get("k")]))
    assert codec.decode_lattice(item.lattice_type, item.payload) == LwwLattice(timestamp=1, value=b"v")


def test_put_without_type_or_with_garbage_payload_is_a_lattice_error(state):
    no_type = KeyRequest(RequestType.PUT, (KeyTuple("k", payload=b"x"),), "", "")
    garbage = KeyRequest(RequestType.PUT, (KeyTuple("k", LatticeType.LWW, payload=b"\xff\xff"),), "", "")
    assert only(state.handle_key_requests(0, [no_type])).error == AnnaError.LATTICE
    assert only(state.handle_key_requests(0, [garbage])).error == AnnaError.LATTICE
    assert only(state.handle_key_requests(0, [get("k")])).error == AnnaError.KEY_DNE


def test_empty_lww_value_deletes_but_empty_ordered_set_exists(state):
    state.handle_key_requests(0, [put("k", LwwLattice(timestamp=1, value=b"v"))])
    state.handle_key_requests(0, [put("k", LwwLattice(timestamp=2, value=b""))])
    state.handle_key_requests(0, [put("o", OrderedSetLattice.of([]))])
    state.handle_key_requests(0, [put("s", SetLattice(frozenset()))])
    response = state.handle_key_requests(0, [get("k", "o", "s")])[0]
    assert [t.error for t in response.tuples] == [AnnaError.KEY_DNE, AnnaError.NO_ERROR, AnnaError.KEY_DNE]


def test_puts_in_a_batch_are_visible_to_gets_in_the_same_batch(state):
    responses = state.handle_key_requests(
        0,
        [
            get("k"),
            put("k", LwwLattice(timestamp=1, value=b"a")),
            put("k", LwwLattice(timestamp=2, value=b"b")),
        ],
    )
    item = responses[0].tuples[0]
    assert codec.decode_lattice(item.lattice_type, item.payload) == LwwLattice(timestamp=2, value=b"b")
    assert [r.response_id for r in responses] == ["g", "p", "p"]


def test_keys_owned_by_another_thread_are_wrong_thread():
    topology = StorageTopology("127.0.0.1", (6200, 6201, 6202))
    state = KvsState(topology, MemoryEngine())
    keys = [f"key{i}" for i in range(30)]
    for key in keys:
        (owner,) = topology.owners(key)
        other = (owner + 1) % 3
        assert only(state.handle_key_requests(other, [get(key)])).error == AnnaError.WRONG_THREAD
        assert only(state.handle_key_requests(owner, [get(key)])).error == AnnaError.KEY_DNE
    assert {topology.owners(k)[0] for k in keys} == {0, 1, 2}


def test_stale_address_cache_size_sets_invalidate(state):
    assert only(state.handle_key_requests(0, [get("k", address_cache_size=3)])).invalidate
    assert not only(state.handle_key_requests(0, [get("k", address_cache_size=1)])).invalidate
    assert not only(state.handle_key_requests(0, [get("k")])).invalidate


def test_address_lookup_names_the_owning_threads():
    state = KvsState(StorageTopology("127.0.0.9", (7000, 7001)), MemoryEngine())
    response = state.handle_address_request(KeyAddressRequest("tcp://c:1", ("a", ""), "r1"))
    assert response.response_id == "r1"
    first, empty = response.addresses
    (owner,) = state.topology.owners("a")
    assert first.ips == (f"tcp://127.0.0.9:{7000 + owner}",)
    assert empty.ips == ()
