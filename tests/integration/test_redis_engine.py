"""The Redis engine under concurrent writers and under server restarts: no acknowledged update is ever lost.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
from functools import reduce

import pytest

from cloudburst.errors import KvsError, StorageUnavailable
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.engine import MemoryEngine
from cloudburst.kvs.process import KvsProcess
from cloudburst.kvs.redis_engine import RedisEngine
from cloudburst.lattices import LwwLattice, SetLattice, SingleKeyCausalLattice, VectorClock
from cloudburst.protocol import codec
from cloudburst.testing.redis import LocalRedis, free_port

pytestmark = pytest.mark.integration

WRITERS = 8
MERGES = 2000
CAUSAL_MERGES = 200


def lww_writes(writer: int) -> list[LwwLattice]:
    """A writer's LWW writes: few timestamps, so writers often tie and the value bytes decide."""
    rng = random.Random(writer)
    return [LwwLattice(rng.randrange(500), rng.randbytes(2)) for _ in range(MERGES)]


def causal_writes(writer: int) -> list[SingleKeyCausalLattice]:
    """A writer's causal writes: each supersedes its previous one and is concurrent with every other writer's."""
    return [
        SingleKeyCausalLattice.of(VectorClock.of({f"w{writer}": i + 1}), [f"{writer}/{i}".encode()])
        for i in range(CAUSAL_MERGES)
    ]


def write(url: str, writer: int, barrier, results) -> None:
    """One writer process: MERGES set and LWW merges, and CAUSAL_MERGES causal ones, one call each."""
    engine = RedisEngine(url)
    lww, causal = lww_writes(writer), causal_writes(writer)
    barrier.wait()
    started = time.monotonic()
    for i in range(MERGES):
        assert engine.merge_many([("set", SetLattice(frozenset({f"{writer}/{i}".encode()})))]) == [None]
        assert engine.merge_many([("lww", lww[i])]) == [None]
        if i < CAUSAL_MERGES:
            assert engine.merge_many([("causal", causal[i])]) == [None]
    results.put((writer, time.monotonic() - started, engine.conflicts))
    engine.close()


def collect(results, writers) -> list[tuple[int, float, int]]:
    """Every writer's report; fails as soon as a writer dies without one."""
    reports: list[tuple[int, float, int]] = []
    give_up = time.monotonic() + 240
    while len(reports) < len(writers):
        try:
            reports.append(results.get(timeout=0.5))
        except queue.Empty:
            crashed = [p.exitcode for p in writers if p.exitcode not in (None, 0)]
            assert not crashed, f"writers exited with {crashed}"
            assert time.monotonic() < give_up, "writers did not finish in time"
    return reports


def read(engine, key):
    (stored,) = engine.get_many([key])
    return codec.decode_lattice(stored.lattice_type, stored.payload)


@pytest.mark.timeout(300)
def test_concurrent_writers_through_the_cluster_lose_no_update(redis_cluster, open_redis_engine):
    engine = open_redis_engine("redis-cluster")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS), context.Queue()
    writers = [context.Process(target=write, args=(redis_cluster.url, w, barrier, results)) for w in range(WRITERS)]
    try:
        for process in writers:
            process.start()
        reports = collect(results, writers)
        for process in writers:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        for process in writers:
            if process.is_alive():
                process.kill()
                process.join()

    stored_set, stored_lww, stored_causal = (read(engine, key) for key in ("set", "lww", "causal"))
    engine.close()
    expected_set = {f"{w}/{i}".encode() for w in range(WRITERS) for i in range(MERGES)}
    expected_lww = max((x for w in range(WRITERS) for x in lww_writes(w)), key=lambda x: (x.timestamp, x.value))
    expected_causal = reduce(lambda a, b: a.merge(b), [c for w in range(WRITERS) for c in causal_writes(w)])
    elapsed = max(seconds for _, seconds, _ in reports)
    merges = WRITERS * (2 * MERGES + CAUSAL_MERGES)
    print(
        f"\n{WRITERS} writers x ({MERGES} set + {MERGES} LWW + {CAUSAL_MERGES} causal merges) through a 3-master"
        f" cluster: {merges} merges in {elapsed:.1f} s ({merges / elapsed:.0f}/s);"
        f" set {len(stored_set.values)}/{len(expected_set)} elements,"
        f" LWW winner ts={stored_lww.timestamp} value={stored_lww.value.hex()} (expected"
        f" ts={expected_lww.timestamp} value={expected_lww.value.hex()}),"
        f" causal {len(stored_causal.versions)}/{len(expected_causal.versions)} versions,"
        f" {sum(conflicts for _, _, conflicts in reports)} compare-and-set conflicts redone"
    )
    assert stored_set.values == expected_set
    assert stored_lww == expected_lww
    assert stored_causal == expected_causal


STREAMS = 4


@pytest.mark.timeout(120)
def test_acknowledged_writes_survive_restarts_and_outages_fail_typed(tmp_path):
    with LocalRedis(tmp_path / "redis") as server:
        url = server.url + "?deadline=2&timeout=1"
        acknowledged: list[int] = []
        failed: list[int] = []
        slow: list[int] = []  # acknowledged only after riding out an outage
        stop = threading.Event()

        def write_stream(stream: int) -> None:
            engine = RedisEngine(url)
            for i in range(stream, 10**9, STREAMS):
                if stop.is_set():
                    break
                batch = [(f"k/{i}", LwwLattice(i + 1, b"v%d" % i)), ("set", SetLattice(frozenset({b"%d" % i})))]
                started = time.monotonic()
                try:
                    outcomes = engine.merge_many(batch)
                except StorageUnavailable:
                    failed.append(i)
                    continue
                assert outcomes == [None, None]
                acknowledged.append(i)
                if time.monotonic() - started > 0.2:
                    slow.append(i)
            engine.close()

        def await_acks(count: int) -> None:
            target = len(acknowledged) + count
            give_up = time.monotonic() + 30
            while len(acknowledged) < target and time.monotonic() < give_up:
                time.sleep(0.01)

        writers = [threading.Thread(target=write_stream, args=(s,), name=f"writer {s}") for s in range(STREAMS)]
        for writer in writers:
            writer.start()
        try:
            await_acks(300)
            server.restart(crash=True, downtime=0.5)  # shorter than the deadline: writes wait it out
            await_acks(300)
            server.restart(downtime=0.5)  # graceful this time
            await_acks(300)
            server.restart(crash=True, downtime=2.5)  # longer than the deadline: in-flight writes fail, typed
            await_acks(300)
        finally:
            stop.set()
            for writer in writers:
                writer.join(timeout=30)
        assert not any(writer.is_alive() for writer in writers)

        server.restart(crash=True)  # and whatever was acknowledged last is on disk too
        check = RedisEngine(server.url)
        attempted = acknowledged + failed
        stored = dict(zip(attempted, check.get_many([f"k/{i}" for i in attempted]), strict=True))
        (stored_set,) = check.get_many(["set"])
        check.close()
    elements = codec.decode_lattice(stored_set.lattice_type, stored_set.payload).values
    lost = [i for i in acknowledged if stored[i] is None or b"%d" % i not in elements]
    wrong = [
        i
        for i in acknowledged
        if stored[i] is not None and codec.decode_lattice(stored[i].lattice_type, stored[i].payload).timestamp != i + 1
    ]
    applied_anyway = [i for i in failed if stored[i] is not None]
    print(
        f"\n{len(acknowledged)} writes acknowledged by {STREAMS} writers across 3 restarts (2 SIGKILL), {len(slow)}"
        f" of them after riding out an outage; {len(failed)} failed with StorageUnavailable"
        f" ({len(applied_anyway)} of those applied anyway); {len(lost)} acknowledged writes lost"
    )
    assert lost == []
    assert wrong == []
    assert slow, "no write rode out a short outage"
    assert failed, "no write failed during the outage longer than the deadline"


def test_a_kvs_node_started_with_a_redis_engine_stores_there(redis_server, open_redis_engine, fast_retry):
    engine = open_redis_engine("redis")
    with KvsProcess(None, engine=redis_server.url) as node, KvsClient(node.routing, retry=fast_retry) as client:
        client.put("k", LwwLattice(timestamp=3, value=b"v"))
        client.put("s", SetLattice(frozenset({b"a"})))
        engine.merge_many([("s", SetLattice(frozenset({b"b"})))])  # another node's write, straight to Redis
        assert client.get("k") == LwwLattice(timestamp=3, value=b"v")
        assert client.get("s") == SetLattice(frozenset({b"a", b"b"}))
    assert read(engine, "k") == LwwLattice(timestamp=3, value=b"v")
    engine.close()


def test_an_unreachable_redis_fails_typed_at_the_deadline():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"did not acknowledge within 0\.5 s"):
        RedisEngine(f"redis://127.0.0.1:{port}?deadline=0.5&timeout=0.2")
    assert time.monotonic() - started < 5


def test_a_flushed_script_cache_is_reloaded(redis_server, open_redis_engine):
    engine = open_redis_engine("redis")
    with redis_server.client() as client:
        client.script_flush()
    assert engine.merge_many([("k", SetLattice(frozenset({b"a"})))]) == [None]
    assert read(engine, "k") == SetLattice(frozenset({b"a"}))
    engine.close()


def test_prefixes_keep_deployments_apart_and_globs_match_literally(redis_server, open_redis_engine):
    engine = open_redis_engine("redis")
    other = RedisEngine(redis_server.url + "?prefix=other%5B*%5D%3A")  # "other[*]:"
    keys = ["a*", "a?b", "a[x]", "a\\c", "ab"]
    engine.merge_many([(key, SetLattice(frozenset({b"v"}))) for key in keys])
    other.merge_many([("a*", LwwLattice(1, b"mine"))])
    assert engine.keys_with_prefix("a*") == ["a*"]
    assert engine.keys_with_prefix("a[") == ["a[x]"]
    assert engine.keys_with_prefix("a\\") == ["a\\c"]
    assert engine.keys_with_prefix("a") == sorted(keys)
    assert other.keys_with_prefix("") == ["a*"]
    assert read(other, "a*") == LwwLattice(1, b"mine")
    assert read(engine, "a*") == SetLattice(frozenset({b"v"}))
    other.close()
    engine.close()


def test_a_foreign_value_under_the_prefix_is_refused_not_overwritten(redis_server, open_redis_engine):
    engine = open_redis_engine("redis")
    with redis_server.client() as client:
        client.rpush(b"cb:list", b"x")
        with pytest.raises(KvsError, match="not a stored lattice"):
            engine.merge_many([("list", LwwLattice(1, b"v"))])
        with pytest.raises(KvsError):
            engine.get_many(["list"])
        assert client.lrange(b"cb:list", 0, -1) == [b"x"]
    engine.close()


def test_one_batch_spanning_every_master_and_every_lattice_type(open_redis_engine):
    engine = open_redis_engine("redis-cluster")
    reference = MemoryEngine()
    causal = SingleKeyCausalLattice.of(VectorClock.of({"n": 1}), [b"c"])
    items = [(f"key/{i}", [LwwLattice(i, b"v"), SetLattice(frozenset({b"%d" % i})), causal][i % 3]) for i in range(300)]
    items += [(key, lattice) for key, lattice in items[:30]]  # the same writes again, in the same batch
    assert engine.merge_many(items) == reference.merge_many(items)
    keys = [key for key, _ in items]
    assert engine.get_many(keys) == reference.get_many(keys)
    assert engine.keys_with_prefix("key/") == reference.keys_with_prefix("key/")
    engine.close()
