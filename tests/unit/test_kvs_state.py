import pytest

from cloudburst.kvs.engine import MemoryEngine
from cloudburst.kvs.sqlite import SqliteEngine
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


# -- cache subscriptions and pushes ---------------------------------------------------------------------------


def report(ip, keys, timestamp=1):
    """A cache's key-set report, as the node cache writes it."""
    return put(f"ANNA_METADATA|cache_ip|{ip}", LwwLattice(timestamp=timestamp, value=codec.encode_string_set(keys)))


def pushed(result):
    """The pushes of a batch as {address: {key: lattice}}, checking their fixed fields on the way."""
    out = {}
    for push in result.pushes:
        assert push.request.type == RequestType.PUT
        assert push.request.response_address == ""
        assert push.request.request_id.startswith("push:")
        assert push.address not in out, "one push per cache per batch"
        out[push.address] = {t.key: codec.decode_lattice(t.lattice_type, t.payload) for t in push.request.tuples}
    return out


def lww(timestamp, value):
    return LwwLattice(timestamp=timestamp, value=value)


def test_a_report_subscribes_and_a_write_of_a_subscribed_key_is_pushed(state):
    assert state.handle_batch(0, [report("10.0.0.1", ["a", "b"])]).pushes == ()
    assert state.subscriptions.keys_of("10.0.0.1") == {"a", "b"}
    assert pushed(state.handle_batch(0, [put("a", lww(1, b"x"))])) == {"tcp://10.0.0.1:7150": {"a": lww(1, b"x")}}
    assert state.handle_batch(0, [put("other", lww(1, b"x"))]).pushes == ()


def test_a_push_carries_the_merged_value_not_the_written_fragment(state):
    state.handle_batch(0, [report("10.0.0.1", ["s", "k"])])
    state.handle_batch(0, [put("s", SetLattice(frozenset({b"a"})))])
    result = state.handle_batch(0, [put("s", SetLattice(frozenset({b"b"}))), put("k", lww(5, b"new"))])
    assert pushed(result) == {"tcp://10.0.0.1:7150": {"s": SetLattice(frozenset({b"a", b"b"})), "k": lww(5, b"new")}}
    # An older write loses the merge; the cache is still sent the winner.
    assert pushed(state.handle_batch(0, [put("k", lww(2, b"old"))])) == {"tcp://10.0.0.1:7150": {"k": lww(5, b"new")}}


def test_one_push_per_cache_holds_all_its_keys_of_the_batch(state):
    state.handle_batch(0, [report("10.0.0.1", ["a", "b"]), report("10.0.0.2", ["b", "c"])])
    writes = [put(key, lww(1, key.encode())) for key in ("a", "b", "c", "d")]
    result = state.handle_batch(0, writes)
    assert pushed(result) == {
        "tcp://10.0.0.1:7150": {"a": lww(1, b"a"), "b": lww(1, b"b")},
        "tcp://10.0.0.2:7150": {"b": lww(1, b"b"), "c": lww(1, b"c")},
    }
    assert len({push.request.request_id for push in result.pushes}) == 2


def test_failed_puts_are_not_pushed(state):
    state.handle_batch(0, [report("10.0.0.1", ["k"]), put("k", lww(1, b"v"))])
    result = state.handle_batch(0, [put("k", SetLattice(frozenset({b"x"})))])
    assert result.responses[0].tuples[0].error == AnnaError.LATTICE
    assert result.pushes == ()


def test_an_empty_report_unsubscribes(state):
    state.handle_batch(0, [report("10.0.0.1", ["a"])])
    state.handle_batch(0, [report("10.0.0.1", [], timestamp=2)])
    assert state.subscriptions.caches == frozenset()
    assert state.subscriptions.caches_of("a") == frozenset()
    assert state.handle_batch(0, [put("a", lww(1, b"x"))]).pushes == ()


def test_deleting_the_report_unsubscribes(state):
    state.handle_batch(0, [report("10.0.0.1", ["a"])])
    state.handle_batch(0, [put("ANNA_METADATA|cache_ip|10.0.0.1", lww(2, b""))])
    assert state.handle_batch(0, [put("a", lww(1, b"x"))]).pushes == ()


def test_a_report_replaces_the_previous_set(state):
    state.handle_batch(0, [report("10.0.0.1", ["a", "b"])])
    state.handle_batch(0, [report("10.0.0.1", ["b", "c"], timestamp=2)])
    assert state.subscriptions.keys_of("10.0.0.1") == {"b", "c"}
    assert state.subscriptions.caches_of("a") == frozenset()
    result = state.handle_batch(0, [put(key, lww(1, b"v")) for key in ("a", "b", "c")])
    assert set(pushed(result)["tcp://10.0.0.1:7150"]) == {"b", "c"}


def test_a_late_older_report_does_not_roll_the_set_back(state):
    state.handle_batch(0, [report("10.0.0.1", ["new"], timestamp=5)])
    state.handle_batch(0, [report("10.0.0.1", ["old"], timestamp=3)])
    assert state.subscriptions.keys_of("10.0.0.1") == {"new"}


def test_a_report_applies_to_writes_in_the_same_batch(state):
    result = state.handle_batch(0, [put("a", lww(1, b"x")), report("10.0.0.1", ["a"])])
    assert pushed(result) == {"tcp://10.0.0.1:7150": {"a": lww(1, b"x")}}


def test_the_index_is_bounded():
    state = KvsState(StorageTopology("127.0.0.1", (6200,)), MemoryEngine(), max_caches=2, max_keys_per_cache=3)
    state.handle_batch(0, [report("10.0.0.1", ["a"]), report("10.0.0.2", ["a"])])
    state.handle_batch(0, [report("10.0.0.3", ["a"])])
    assert state.subscriptions.caches == {"10.0.0.1", "10.0.0.2"}  # a new cache past the cap is refused
    state.handle_batch(0, [report("10.0.0.1", ["k1", "k2", "k3", "k4", "k5"], timestamp=2)])
    assert state.subscriptions.keys_of("10.0.0.1") == {"k1", "k2", "k3"}  # subscribed caches still update
    state.handle_batch(0, [report("10.0.0.2", [], timestamp=2)])
    state.handle_batch(0, [report("10.0.0.3", ["a"], timestamp=2)])
    assert state.subscriptions.caches == {"10.0.0.1", "10.0.0.3"}  # room again once one unsubscribed


def test_metadata_keys_are_never_pushed(state):
    state.handle_batch(0, [report("10.0.0.1", ["ANNA_METADATA|stats|x", "ANNA_METADATA|cache_ip|10.0.0.2", "a"])])
    assert state.subscriptions.keys_of("10.0.0.1") == {"a"}
    result = state.handle_batch(
        0, [put("ANNA_METADATA|stats|x", lww(1, b"s")), report("10.0.0.2", ["a"]), report("10.0.0.1", ["a"], 2)]
    )
    assert result.pushes == ()


def test_invalid_reports_are_ignored(state):
    state.handle_batch(0, [report("10.0.0.1", ["a"])])
    garbage = put("ANNA_METADATA|cache_ip|10.0.0.1", lww(2, b"\xff\xff not a string set"))
    wrong_type = put("ANNA_METADATA|cache_ip|10.0.0.2", SetLattice(frozenset({b"a"})))
    no_ip = put("ANNA_METADATA|cache_ip|", lww(1, codec.encode_string_set(["a"])))
    state.handle_batch(0, [garbage, wrong_type, no_ip])
    assert state.subscriptions.caches == {"10.0.0.1"}
    assert state.subscriptions.keys_of("10.0.0.1") == {"a"}  # the last valid set stays


def test_the_writers_own_cache_is_pushed_too(state):
    state.handle_batch(0, [report("127.0.0.1", ["a"])])
    assert set(pushed(state.handle_batch(0, [put("a", lww(1, b"x"))]))) == {"tcp://127.0.0.1:7150"}


def test_push_address_uses_the_configured_port_and_brackets_ipv6():
    state = KvsState(StorageTopology("127.0.0.1", (6200,)), MemoryEngine(), cache_update_port=9000)
    assert state.push_address("10.1.2.3") == "tcp://10.1.2.3:9000"
    assert state.push_address("::1") == "tcp://[::1]:9000"


def test_subscriptions_are_rebuilt_from_stored_reports(tmp_path):
    engine = SqliteEngine(tmp_path / "kvs.sqlite3")
    first = KvsState(StorageTopology("127.0.0.1", (6200,)), engine)
    first.handle_batch(0, [report("10.0.0.1", ["a", "b"]), report("10.0.0.2", ["b"])])
    first.handle_batch(0, [report("10.0.0.2", [], timestamp=2), put("ANNA_METADATA|stats|x", lww(1, b"s"))])
    engine.close()
    engine = SqliteEngine(tmp_path / "kvs.sqlite3")
    try:
        restarted = KvsState(StorageTopology("127.0.0.1", (6200,)), engine)
        assert restarted.subscriptions.caches == {"10.0.0.1"}
        assert restarted.subscriptions.keys_of("10.0.0.1") == {"a", "b"}
        assert set(pushed(restarted.handle_batch(0, [put("b", lww(1, b"x"))]))) == {"tcp://10.0.0.1:7150"}
    finally:
        engine.close()


def test_pushes_are_numbered_uniquely(state):
    state.handle_batch(0, [report("10.0.0.1", ["a"])])
    ids = [p.request.request_id for _ in range(3) for p in state.handle_batch(0, [put("a", lww(1, b"x"))]).pushes]
    assert len(set(ids)) == 3


def test_newly_reported_keys_get_their_current_value_pushed(state):
    # The cache fetched "a" before reporting it; a write in between must still reach it.
    state.handle_batch(0, [put("a", lww(1, b"fetched")), put("a", lww(2, b"written meanwhile"))])
    result = state.handle_batch(0, [report("10.0.0.1", ["a", "never-written"])])
    assert pushed(result) == {"tcp://10.0.0.1:7150": {"a": lww(2, b"written meanwhile")}}
    # Keys the cache already held are not pushed again on the next report.
    assert state.handle_batch(0, [report("10.0.0.1", ["a", "never-written"], timestamp=2)]).pushes == ()
