"""Consistency per call on a three-node cluster: the causal API, and the Retwis-like checker in every mode.

The checker's figures are printed (``pytest -s``) for the record.
"""

import threading

import pytest

import cloudburst
from cloudburst.errors import CausalModeUnavailable
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
    with pytest.raises(CausalModeUnavailable, match="SINGLE or MULTI") as caught:
        cb.call("cc_read_normal", "cc/x").result(timeout=30)
    assert caught.value.function == "cc_read_normal"
    assert "causal_get" in caught.value.remote_traceback


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
    cb.call("cc_bump", "cc/pinned", 0, consistency=cloudburst.MULTI).result(timeout=30)

    def run(dag, round_number):
        arguments = {name: [CloudburstReference("cc/pinned", True)] for name in ("cc_first", "cc_second")}
        call = cb.build_dag_call(dag, arguments, consistency=cloudburst.MULTI, output_key=f"cc/out/{round_number}")
        return cb.call_dag(call)

    def crosses(dag):
        probe = run(dag, -1).result(timeout=30)
        return probe["where"] != probe["here"]

    dag = register_across_nodes(cb, "cc_snapshot", ["cc_first", "cc_second"], crosses)
    for round_number in range(20):
        future = run(dag, round_number)
        cb.call("cc_bump", "cc/pinned", round_number + 1, consistency=cloudburst.MULTI).result(timeout=30)
        result = future.result(timeout=30)
        assert result["first"] == result["again"]
        stored = cb.call("cc_read_out", f"cc/out/{round_number}", consistency=cloudburst.MULTI).result(timeout=30)
        assert stored == result


def register_across_nodes(cb, prefix, functions, crosses):
    """Placement decides where stages run: registers copies of a two-stage DAG until ``crosses(name)`` says one
    runs its stages on two nodes, and returns that copy's name."""
    for copy in range(12):
        dag = f"{prefix}_{copy}"
        cb.register_dag(dag, functions, [tuple(functions)])
        if crosses(dag):
            return dag
    pytest.fail(f"no copy of {prefix} ran its stages on two nodes")


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
    print(
        f"\nMULTI: {len(multi.records)} requests, {len(multi.errors)} errors, {multi.conflicts} retried after a "
        f"CausalConflict, anomalies {multi_counts}"
    )
    print(f"NORMAL: {len(normal.records)} requests, {len(normal.errors)} errors, anomalies {normal_counts}")
    assert not multi.errors, multi.errors[:3]
    assert not normal.errors, normal.errors[:3]
    assert len(multi.records) == MULTI_REQUESTS
    assert sum(multi_counts.values()) == 0, multi_counts
    # Last-writer-wins reads through caches are not snapshots: the same checker sees it.
    assert normal_counts[AnomalyKind.NON_REPEATABLE_READ] > 0, normal_counts


def test_a_normal_request_reads_its_own_writes_on_every_node(cb):
    def put(lib, key, value):
        lib.put(key, value)
        return (key, value, lib.getid()[0])

    def get(lib, key, value, where):
        return lib.get(key) == value, where != lib.getid()[0]

    cb.register(put, "ryw_put")
    cb.register(get, "ryw_get")

    def run(dag, n):
        return cb.call_dag(cb.build_dag_call(dag, {"ryw_put": ["ryw/k", n]})).result(timeout=30)

    dag = register_across_nodes(cb, "ryw", ["ryw_put", "ryw_get"], lambda dag: run(dag, -1)[1])
    assert all(run(dag, n)[0] for n in range(300))
