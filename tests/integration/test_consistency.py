"""Consistency per call on a three-node cluster: the causal API, and the Retwis-like checker in every mode.

The checker's figures are printed (``pytest -s``) for the record.
"""

import threading

import pytest

import cloudburst
from cloudburst.errors import CausalModeUnavailable, RemoteExecutionError
from cloudburst.shared.reference import CloudburstReference
from cloudburst.testing import retwis
from cloudburst.testing.causal_checker import AnomalyKind, CausalChecker, summarize

pytestmark = pytest.mark.integration

MULTI_REQUESTS = 2000
NORMAL_REQUESTS = 600


@pytest.fixture(scope="module")
def cb():
    with cloudburst.local(executors=2, nodes=3) as connection:
        yield connection


def write(lib, key, value):
    lib.causal_put(key, value)
    return lib.getid()[0]


def read(lib, key):
    return lib.causal_get(key)


def test_causal_writes_and_reads_in_single_and_multi(cb):
    cb.register(write, "cc_write")
    cb.register(read, "cc_read")
    for mode in (cloudburst.SINGLE, cloudburst.MULTI):
        cb.call("cc_write", f"cc/{mode.name}", [1, 2], consistency=mode).result(timeout=30)
        assert cb.call("cc_read", f"cc/{mode.name}", consistency=mode).result(timeout=30) == [1, 2]
    assert cb.call("cc_read", "cc/never-written", consistency=cloudburst.MULTI).result(timeout=30) is None


def test_causal_calls_outside_causal_requests_fail_with_a_typed_error(cb):
    cb.register(read, "cc_read_normal")
    with pytest.raises(RemoteExecutionError, match="CausalModeUnavailable") as caught:
        cb.call("cc_read_normal", "cc/x").result(timeout=30)
    assert caught.value.function == "cc_read_normal"
    assert issubclass(CausalModeUnavailable, cloudburst.CloudburstError)


def test_a_multi_dag_reads_one_snapshot_across_nodes_and_writes_its_output_causally(cb):
    def first(lib, seen):
        # A write between the stages must not show downstream: the snapshot was taken here.
        lib.causal_put("cc/other", "ignored")
        return (lib.getid()[0], seen)

    def second(lib, pinned, where, seen):
        return {"where": where, "here": lib.getid()[0], "first": seen, "again": pinned}

    def bump(lib, key, value):
        lib.causal_put(key, value)

    cb.register(first, "cc_first")
    cb.register(second, "cc_second")
    cb.register(bump, "cc_bump")
    cb.register(read, "cc_read_out")
    cb.register_dag("cc_snapshot", ["cc_first", "cc_second"], [("cc_first", "cc_second")])
    cb.call("cc_bump", "cc/pinned", 0, consistency=cloudburst.MULTI).result(timeout=30)
    nodes = set()
    for round_number in range(20):
        call = cb.build_dag_call(
            "cc_snapshot",
            {
                "cc_first": [CloudburstReference("cc/pinned", True)],
                "cc_second": [CloudburstReference("cc/pinned", True)],
            },
            consistency=cloudburst.MULTI,
            output_key=f"cc/out/{round_number}",
        )
        future = cb.call_dag(call)
        cb.call("cc_bump", "cc/pinned", round_number + 1, consistency=cloudburst.MULTI).result(timeout=30)
        result = future.result(timeout=30)
        assert result["first"] == result["again"]
        nodes.add((result["where"], result["here"]))
        stored = cb.call("cc_read_out", f"cc/out/{round_number}", consistency=cloudburst.MULTI).result(timeout=30)
        assert stored == result
    assert any(upstream != downstream for upstream, downstream in nodes), "no request crossed nodes"


def check(outcome):
    checker = CausalChecker()
    for record in outcome.records:
        checker.add(record)
    anomalies = checker.check()
    for anomaly in anomalies[:3]:
        print(anomaly)
    return summarize(anomalies)


def test_the_checker_finds_no_anomaly_under_multi_and_finds_them_under_normal_in_one_cluster(cb):
    retwis.register(cb)
    outcomes = {}

    def drive(mode, requests):
        outcomes[mode] = retwis.run(cb, mode, requests=requests, clients=3, users=3, pause=0.003, seed=7)

    # Both modes at once, in one cluster, on separate keys.
    threads = [
        threading.Thread(target=drive, args=(cloudburst.MULTI, MULTI_REQUESTS)),
        threading.Thread(target=drive, args=(cloudburst.NORMAL, NORMAL_REQUESTS)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    multi, normal = outcomes[cloudburst.MULTI], outcomes[cloudburst.NORMAL]
    multi_counts, normal_counts = check(multi), check(normal)
    print(f"\nMULTI: {len(multi.records)} requests, {len(multi.errors)} errors, anomalies {multi_counts}")
    print(f"NORMAL: {len(normal.records)} requests, {len(normal.errors)} errors, anomalies {normal_counts}")
    assert not multi.errors, multi.errors[:3]
    assert not normal.errors, normal.errors[:3]
    assert len(multi.records) == MULTI_REQUESTS
    assert sum(multi_counts.values()) == 0, multi_counts
    # Last-writer-wins reads through caches are not snapshots: the same checker sees it.
    assert normal_counts[AnomalyKind.NON_REPEATABLE_READ] > 0, normal_counts
