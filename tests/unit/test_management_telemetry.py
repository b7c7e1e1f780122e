"""The management service's telemetry: traces, errors, cache figures and series, and the dashboard's views."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.errors import DecodeError
from cloudburst.lattices import LwwLattice, SetLattice, SingleKeyCausalLattice, VectorClock
from cloudburst.management import telemetry as telemetry_module
from cloudburst.management.state import ManagementState, ThreadStatusEvent
from cloudburst.management.telemetry import TelemetryStore, summarize
from cloudburst.management.views import cluster_view, hop_view
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import ThreadStatus
from cloudburst.protocol.telemetry_messages import CacheReport, ReadRecord, TelemetryReport, TraceHop, describe_version

T0 = 1_800_000_000.0


def executor_hop(request_id, function, start, duration, *, dag="", end_to_end=0.0, error="", node="10.0.0.5:0"):
    return TraceHop(request_id, "executor", node, start, duration, function, dag, end_to_end=end_to_end, error=error)


def placement(request_id, dag, start, stages):
    return TraceHop(request_id, "scheduler", "10.0.0.1", start, 0.0002, dag=dag, stages=stages, detail="a -> x")


def report(*hops, cache=None):
    return TelemetryReport("10.0.0.5:0", tuple(hops), cache)


def test_a_trace_gathers_a_requests_hops_from_every_role_in_start_order():
    store = TelemetryStore()
    store.add(report(executor_hop("r1", "b", T0 + 0.002, 0.001, dag="d")), T0)
    store.add(report(placement("r1", "d", T0, 2), executor_hop("r1", "a", T0 + 0.001, 0.001, dag="d")), T0)
    hops = store.trace("r1")
    assert [(hop.role, hop.function) for hop in hops] == [("scheduler", ""), ("executor", "a"), ("executor", "b")]
    assert store.trace("unknown") is None
    summary = summarize("r1", hops)
    assert (summary.name, summary.hops, summary.ok) == ("d", 3, True)
    assert summary.duration == pytest.approx(0.003, abs=1e-6)


def test_only_the_most_recent_requests_are_kept(monkeypatch):
    monkeypatch.setattr(telemetry_module, "MAX_TRACES", 3)
    store = TelemetryStore()
    for index in range(5):
        store.add(report(executor_hop(f"r{index}", "f", T0 + index, 0.001)), T0 + index)
    assert store.trace("r0") is None
    assert store.trace("r1") is None
    assert [summary.request_id for summary in store.recent_traces()] == ["r4", "r3", "r2"]


def test_failed_steps_are_listed_newest_first_with_their_details():
    store = TelemetryStore()
    store.add(report(executor_hop("r1", "f", T0, 0.1, error="RemoteExecutionError")), T0)
    store.add(report(executor_hop("r2", "g", T0, 0.1, error="KvsError")), T0)
    assert [hop.request_id for hop in store.errors()] == ["r2", "r1"]
    assert summarize("r1", store.trace("r1")).ok is False


def test_dag_series_count_requests_per_second_with_latency_percentiles_and_fill_quiet_seconds():
    store = TelemetryStore()
    hops = [executor_hop(f"r{i}", "sink", T0 + 0.5, 0.001, dag="d", end_to_end=(i + 1) / 1000) for i in range(100)]
    hops.append(executor_hop("late", "sink", T0 + 3.2, 0.001, dag="d", end_to_end=0.5))
    # A failed stage ends its request too (without a latency sample); a non-sink stage is not a request's end.
    hops.append(executor_hop("bad", "a", T0 + 3.3, 0.001, dag="d", error="KvsError"))
    hops.append(executor_hop("mid", "a", T0 + 3.4, 0.001, dag="d"))
    store.add(report(*hops), T0)
    points = store.dag_series(T0 + 4.1)["d"]
    assert [(p.t, p.calls) for p in points] == [(T0, 100), (T0 + 1, 0), (T0 + 2, 0), (T0 + 3, 2)]
    assert (points[0].p50, points[0].p99) == (pytest.approx(0.050), pytest.approx(0.099))
    assert (points[3].p50, points[3].p99) == (0.5, 0.5)
    # The current second is not complete yet.
    assert [p.t for p in store.dag_series(T0 + 3.5)["d"]] == [T0, T0 + 1, T0 + 2]


def test_function_figures_cover_the_last_complete_window():
    store = TelemetryStore()
    store.add(report(*(executor_hop(f"r{i}", "f", T0 + i % 10, 0.002) for i in range(50))), T0)
    figures = store.function_figures(T0 + 10.5)["f"]
    assert figures.calls_per_second == pytest.approx(5.0)
    assert figures.p50 == figures.p99 == pytest.approx(0.002)
    assert store.function_figures(T0 + 30)["f"].calls_per_second == 0


def test_a_late_report_is_filed_in_time_order():
    store = TelemetryStore()
    store.add(report(executor_hop("r2", "f", T0 + 2, 0.0, dag="d", end_to_end=0.1)), T0)
    store.add(report(executor_hop("r1", "f", T0 + 1, 0.0, dag="d", end_to_end=0.1)), T0)
    assert [p.t for p in store.dag_series(T0 + 3)["d"]] == [T0 + 1, T0 + 2]


def test_cache_figures_are_the_latest_and_expire():
    store = TelemetryStore()
    store.add(report(cache=CacheReport("10.0.0.5", hits=3, misses=1, keys=2, bytes=10)), T0)
    store.add(report(cache=CacheReport("10.0.0.5", hits=9, misses=1, keys=4, bytes=20)), T0 + 1)
    assert store.caches(T0 + 2)["10.0.0.5"].hits == 9
    assert store.caches(T0 + 1 + telemetry_module.CACHE_REPORT_TTL + 1) == {}


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["r1", "r2", "r3", "r4"]), st.sampled_from(["f", "g"]), st.floats(0, 100)),
        max_size=60,
    )
)
def test_memory_stays_bounded_and_kept_traces_are_exact(hops):
    limits = {"MAX_TRACES": 2, "MAX_HOPS_PER_TRACE": 5, "SERIES_SECONDS": 7, "MAX_SERIES_NAMES": 1}
    saved = {name: getattr(telemetry_module, name) for name in limits}
    try:
        for name, value in limits.items():
            setattr(telemetry_module, name, value)
        store = TelemetryStore()
        for request_id, function, start in hops:
            store.add(report(executor_hop(request_id, function, T0 + start, 0.0, dag="d", end_to_end=0.01)), T0)
        kept = [summary.request_id for summary in store.recent_traces(10)]
        assert len(kept) <= 2
        if hops:
            assert kept[0] == hops[-1][0]  # the request heard of last is always kept
        for request_id in kept:
            made = [(function, T0 + start) for rid, function, start in hops if rid == request_id]
            got = [(hop.function, hop.start) for hop in store.trace(request_id)]
            assert len(got) <= 5
            assert all(hop in made for hop in got)
        assert len(store.dag_series(T0 + 200)) <= 1
        assert all(len(points) <= 7 for points in store.dag_series(T0 + 200).values())
    finally:
        for name, value in saved.items():
            setattr(telemetry_module, name, value)


def test_the_cluster_view_has_the_dashboards_shape_and_is_json():
    state = ManagementState(autoscale=False)
    state.handle(ThreadStatusEvent(ThreadStatus("10.0.0.5", 0, ("f",), 0.25)), 10.0)
    store = TelemetryStore()
    store.add(
        report(
            placement("r1", "d", T0, 1),
            executor_hop("r1", "f", T0, 0.001, dag="d", end_to_end=0.002),
            executor_hop("r2", "f", T0, 0.001, error="RemoteExecutionError"),
            cache=CacheReport("10.0.0.5", hits=3, misses=1, keys=2, bytes=10),
        ),
        T0,
    )
    view = json.loads(json.dumps(cluster_view(state, store, T0 + 1.5, 11.0)))
    assert view["autoscale"] is False
    (node,) = view["nodes"]
    assert node["address"] == "10.0.0.5"
    assert node["state"] == "active"
    assert node["cache"] == {"hits": 3, "misses": 1, "hit_ratio": 0.75, "keys": 2, "bytes": 10}
    assert node["executors"] == [{"tid": 0, "kind": "cpu", "utilization": 0.25, "running": True, "functions": ["f"]}]
    (function,) = view["functions"]
    assert (function["name"], function["replicas"]) == ("f", 1)
    (dag,) = view["dags"]
    assert (dag["name"], dag["functions"]) == ("d", ["a"])
    assert dag["series"] == [{"t": T0, "calls_per_s": 1, "p50_ms": 2.0, "p99_ms": 2.0}]
    assert [error["request_id"] for error in view["errors"]] == ["r2"]
    assert {trace["request_id"] for trace in view["traces"]} == {"r1", "r2"}


def test_a_hop_view_names_the_error_and_shows_reads():
    hop = TraceHop(
        "r1",
        "executor",
        "n:0",
        T0,
        0.0015,
        "f",
        "d",
        queue=0.0005,
        error="KvsError",
        message="boom",
        reads=(ReadRecord("k", "cache", True, "lww x"),),
    )
    view = hop_view(hop)
    assert (view["duration_ms"], view["queue_ms"], view["ok"], view["error"]) == (1.5, 0.5, False, "KvsError: boom")
    assert view["reads"] == [{"key": "k", "source": "cache", "hit": True, "version": "lww x"}]


def test_telemetry_round_trips_and_only_the_management_port_takes_it():
    hop = TraceHop("r", "executor", "n:1", T0, 0.1, "f", reads=(ReadRecord("k", "executor", True, "v"),), stages=0)
    original = TelemetryReport("n:1", (hop,), CacheReport("n", 1, 2, 3, 4, 5))
    data = codec.encode_telemetry_report(original)
    assert codec.decode_management_report(data) == original
    with pytest.raises(DecodeError, match="management service"):
        codec.decode_scheduler_message(data)


def test_versions_read_are_described_for_people():
    assert describe_version(None) == ""
    assert describe_version(LwwLattice((1_700_000_000_000_000 << 12) | 7, b"x")) == (
        "lww 2023-11-14 22:13:20.000000 UTC by writer 7"
    )
    causal = SingleKeyCausalLattice.of(VectorClock.of({"a": 2, "b": 1}), [b"v"])
    assert describe_version(causal) == "causal {a: 2, b: 1} (1 version(s))"
    assert describe_version(SetLattice(frozenset({b"1", b"2"}))) == "set of 2"
