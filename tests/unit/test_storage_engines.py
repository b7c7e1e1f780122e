"""The storage-engine conformance suite: every engine must pass it unchanged."""

import pytest

from cloudburst.errors import LatticeTypeMismatch
from cloudburst.kvs import sqlite
from cloudburst.kvs.engine import MemoryEngine, StoredValue
from cloudburst.kvs.sqlite import SqliteEngine
from cloudburst.lattices import LwwLattice, MultiKeyCausalLattice, SetLattice, VectorClock
from cloudburst.protocol import codec
from cloudburst.protocol.messages import LatticeType

ENGINES = [
    "memory",
    "sqlite",
    # Its in-memory copies evicting at every turn (100 bytes), and none at all: answers must not change.
    "sqlite-tiny-cache",
    "sqlite-no-cache",
    # Real servers over loopback, shared by the session (tests/conftest.py) and flushed for each test.
    pytest.param("redis", marks=pytest.mark.integration),
    pytest.param("redis-cluster", marks=pytest.mark.integration),
]


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path):
    if request.param == "memory":
        engine = MemoryEngine()
    elif request.param == "sqlite":
        engine = SqliteEngine(tmp_path / "kvs.sqlite3")
    elif request.param.startswith("sqlite-"):
        engine = SqliteEngine(tmp_path / "kvs.sqlite3", cache_bytes=100 if request.param == "sqlite-tiny-cache" else 0)
    else:
        engine = request.getfixturevalue("open_redis_engine")(request.param)
    yield engine
    engine.close()


def read(engine, key):
    (stored,) = engine.get_many([key])
    return None if stored is None else codec.decode_lattice(stored.lattice_type, stored.payload)


def test_missing_key_reads_none(engine):
    assert engine.get_many(["absent", "also-absent"]) == [None, None]


def test_put_then_get(engine):
    assert engine.merge_many([("k", LwwLattice(timestamp=1, value=b"v"))]) == [None]
    assert engine.get_many(["k"]) == [StoredValue(LatticeType.LWW, codec.encode_lattice(LwwLattice(1, b"v"))[1])]


def test_merge_follows_the_lattice(engine):
    engine.merge_many([("k", LwwLattice(timestamp=5, value=b"new"))])
    engine.merge_many([("k", LwwLattice(timestamp=3, value=b"old"))])
    assert read(engine, "k") == LwwLattice(timestamp=5, value=b"new")
    engine.merge_many([("s", SetLattice(frozenset({b"a"}))), ("s", SetLattice(frozenset({b"b"})))])
    assert read(engine, "s") == SetLattice(frozenset({b"a", b"b"}))


def test_causal_merge_keeps_concurrent_versions(engine):
    a = MultiKeyCausalLattice.of(VectorClock.of({"x": 1}), [b"a"])
    b = MultiKeyCausalLattice.of(VectorClock.of({"y": 1}), [b"b"])
    engine.merge_many([("c", a)])
    engine.merge_many([("c", b)])
    assert read(engine, "c") == a.merge(b)


def test_type_mismatch_is_reported_and_leaves_the_value(engine):
    engine.merge_many([("k", LwwLattice(timestamp=1, value=b"v"))])
    outcomes = engine.merge_many([("k", SetLattice(frozenset({b"x"}))), ("other", SetLattice(frozenset({b"y"})))])
    assert isinstance(outcomes[0], LatticeTypeMismatch)
    assert outcomes[0].key == "k"
    assert (outcomes[0].stored, outcomes[0].given) == ("LWW", "SET")
    assert outcomes[1] is None
    assert read(engine, "k") == LwwLattice(timestamp=1, value=b"v")
    assert read(engine, "other") == SetLattice(frozenset({b"y"}))


def test_many_keys(engine):
    items = [(f"key/{i}", LwwLattice(timestamp=i + 1, value=str(i).encode())) for i in range(5000)]
    assert engine.merge_many(items) == [None] * len(items)
    stored = engine.get_many([key for key, _ in items])
    assert [codec.decode_lattice(s.lattice_type, s.payload) for s in stored] == [lattice for _, lattice in items]


def test_large_values(engine):
    big = bytes(range(256)) * (16 * 1024 * 1024 // 256)
    engine.merge_many([("big", LwwLattice(timestamp=1, value=big))])
    assert read(engine, "big") == LwwLattice(timestamp=1, value=big)
    engine.merge_many([("big", LwwLattice(timestamp=2, value=big[::-1]))])
    assert read(engine, "big").value == big[::-1]


def test_unicode_and_empty_keys(engine):
    engine.merge_many([("ключ/🔑", SetLattice(frozenset({b"1"}))), ("", SetLattice(frozenset({b"2"})))])
    assert read(engine, "ключ/🔑") == SetLattice(frozenset({b"1"}))
    assert read(engine, "") == SetLattice(frozenset({b"2"}))


def test_sqlite_engine_persists_across_reopen(tmp_path):
    path = tmp_path / "kvs.sqlite3"
    engine = SqliteEngine(path)
    engine.merge_many([("k", SetLattice(frozenset({b"a"})))])
    engine.close()
    reopened = SqliteEngine(path)
    reopened.merge_many([("k", SetLattice(frozenset({b"b"})))])
    assert read(reopened, "k") == SetLattice(frozenset({b"a", b"b"}))
    reopened.close()


def test_sqlite_engine_keeps_in_memory_only_what_it_committed(tmp_path, monkeypatch):
    path = tmp_path / "kvs.sqlite3"
    engine = SqliteEngine(path)
    engine.merge_many([("k", LwwLattice(1, b"old"))])
    real_merge = sqlite.merge_into

    def merge_failing_on_boom(key, stored, lattice):
        if key == "boom":
            raise ZeroDivisionError  # as a bug in a merge would
        return real_merge(key, stored, lattice)

    monkeypatch.setattr(sqlite, "merge_into", merge_failing_on_boom)
    with pytest.raises(ZeroDivisionError):  # a batch that fails midway is rolled back, in memory too
        engine.merge_many([("k", LwwLattice(2, b"new")), ("boom", LwwLattice(1, b"x"))])
    assert read(engine, "k") == LwwLattice(1, b"old")
    engine.merge_many([("k", LwwLattice(3, b"newer"))])
    engine.close()
    reopened = SqliteEngine(path)
    assert read(reopened, "k") == LwwLattice(3, b"newer")  # what memory answered, the file holds
    reopened.close()


def test_keys_with_prefix(engine):
    keys = ["ANNA_METADATA|cache_ip|10.0.0.2", "ANNA_METADATA|cache_ip|10.0.0.1", "ANNA_METADATA|cache_ipx", "a%_b"]
    keys += ["ANNA_METADATA|stats|t0", "ANNA_METADATA|cache_ip", "zzz", "pre\U0010ffff", "pre\U0010ffffz", "prf"]
    engine.merge_many([(key, SetLattice(frozenset({b"v"}))) for key in keys])
    engine.merge_many([("ANNA_METADATA|cache_ip|gone", LwwLattice(timestamp=1, value=b""))])  # reads as missing
    assert engine.keys_with_prefix("ANNA_METADATA|cache_ip|") == [
        "ANNA_METADATA|cache_ip|10.0.0.1",
        "ANNA_METADATA|cache_ip|10.0.0.2",
        "ANNA_METADATA|cache_ip|gone",
    ]
    assert engine.keys_with_prefix("a%") == ["a%_b"]
    assert engine.keys_with_prefix("a_") == []
    assert engine.keys_with_prefix("pre\U0010ffff") == ["pre\U0010ffff", "pre\U0010ffffz"]
    assert engine.keys_with_prefix("nothing") == []
    assert engine.keys_with_prefix("") == sorted([*keys, "ANNA_METADATA|cache_ip|gone"])


def test_delete_many_removes_keys_and_ignores_missing_ones(engine):
    engine.merge_many([("a", LwwLattice(1, b"x")), ("b", LwwLattice(1, b"y"))])
    engine.delete_many(["a", "never-written"])
    assert read(engine, "a") is None
    assert read(engine, "b") == LwwLattice(1, b"y")
    assert engine.keys_with_prefix("") == ["b"]
    engine.delete_many([])
