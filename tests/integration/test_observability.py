"""What people see of a running cluster: request traces (`cloudburst trace`), Prometheus metrics of every role
(scraped and parsed with the Prometheus text parser), and errors and cache figures in the dashboard's view."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudburst.cli.dashboard_api import get_json
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.config import KvsConfig, RuntimePorts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXECUTORS = 3
PORTS = RuntimePorts()


@pytest.fixture(scope="module")
def cluster():
    config = ClusterConfig(host=random_loopback_host(), executors=EXECUTORS, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def connection(cluster):
    connection = cluster.connect(timeout=30)
    yield connection
    connection.close()


def scrape(url):
    """The samples at a metrics endpoint, as ``{(name, frozenset(labels)): value}``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples, name, **labels):
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def wait_for(predicate, seconds=15.0):
    give_up = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > give_up:
            return value
        time.sleep(0.1)


def register_pipeline(connection, name):
    """A 3-stage DAG: read a key and add, double, subtract one."""
    connection.put_object(f"{name}/base", 40)
    connection.register(lambda lib, x, key=f"{name}/base": lib.get(key) + x, f"{name}_read")
    connection.register(lambda lib, x: x * 2, f"{name}_double")
    connection.register(lambda lib, x: x - 1, f"{name}_less")
    functions = [f"{name}_read", f"{name}_double", f"{name}_less"]
    connection.register_dag(name, functions, [(functions[0], functions[1]), (functions[1], functions[2])])
    return functions


def test_cloudburst_trace_shows_a_three_stage_requests_hops(cluster, connection):
    functions = register_pipeline(connection, "traced")
    connection.call_dag(connection.build_dag_call("traced", {functions[0]: [1]})).result(30)  # warms the cache
    future = connection.call_dag(connection.build_dag_call("traced", {functions[0]: [2]}))
    assert future.result(30) == 83
    command = [sys.executable, "-m", "cloudburst", "trace", future.obj_id, "--dashboard", cluster.dashboard_url]
    shown = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60, check=True)
    trace = json.loads(shown.stdout)
    hops = trace["hops"]
    # The client placed it under the DAG's lease (no scheduler on its path); its first source reports where to.
    assert [hop["role"] for hop in hops] == ["client", "executor", "executor", "executor"]
    assert [hop["function"] for hop in hops[1:]] == functions
    placement, first, _, sink = hops
    assert placement["node"] == cluster.config.host
    assert all(f"{function} -> {cluster.config.host}:" in placement["detail"] for function in functions)
    assert {hop["node"].rpartition(":")[0] for hop in hops[1:]} == {cluster.config.host}
    # Stages run in order, each after the one before it.
    assert hops[1]["start"] <= hops[2]["start"] <= hops[3]["start"]
    assert sink["end_to_end_ms"] > 0
    (read,) = first["reads"]
    assert (read["key"], read["source"], read["hit"]) == ("traced/base", "cache", True)
    assert read["version"].startswith("lww ")
    # The table people read names every hop.
    table = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True, env={"COLUMNS": "200"})
    print(table.stdout)
    assert future.obj_id in table.stdout
    for word in ("client", *functions, "cache hit"):
        assert word in table.stdout


def test_trace_of_an_unknown_request_fails_clearly(cluster):
    command = [sys.executable, "-m", "cloudburst", "trace", "no-such-request", "--dashboard", cluster.dashboard_url]
    shown = subprocess.run([*command, "--wait", "0.5"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1
    assert "keeps no trace of request 'no-such-request'" in shown.stderr


def test_every_role_serves_prometheus_metrics_that_count_the_calls(cluster, connection):
    functions = register_pipeline(connection, "counted")
    calls = 20
    for index in range(calls):
        assert connection.call_dag(connection.build_dag_call("counted", {functions[0]: [index]})).result(30) == (
            (40 + index) * 2 - 1
        )
    host = cluster.config.host
    executor_urls = [f"http://{host}:{PORTS.metrics_executor + tid}/metrics" for tid in range(EXECUTORS)]

    def executor_samples():
        # Each executor counts its runs at its next tick: wait for every stage's, not only the sink's.
        samples = [scrape(url) for url in executor_urls]
        counted = [sum(total(s, "cloudburst_function_calls_total", function=f) for s in samples) for f in functions]
        return samples if counted == [calls] * len(functions) else None

    samples = wait_for(executor_samples)
    assert samples, "the executors did not count every call"
    for function in functions:
        assert sum(total(s, "cloudburst_function_calls_total", function=function, dag="counted") for s in samples) == 20
        assert sum(total(s, "cloudburst_function_duration_seconds_count", function=function) for s in samples) == 20
    assert sum(total(s, "cloudburst_dag_latency_seconds_count", dag="counted") for s in samples) == calls
    # One read per call (and those of earlier tests), from the executor's own tier or the node cache.
    assert sum(total(s, "cloudburst_executor_reads_total") for s in samples) >= calls
    assert all(("cloudburst_executor_utilization", frozenset()) in s for s in samples)

    scheduler = scrape(f"http://{host}:{PORTS.metrics_scheduler}/metrics")
    # The DAG's requests went straight to its executors: the scheduler granted the lease they went under.
    assert total(scheduler, "cloudburst_scheduler_requests_total", kind="dag_lease") >= 1
    assert total(scheduler, "cloudburst_scheduler_request_duration_seconds_count", kind="dag_lease") >= 1
    assert total(scheduler, "cloudburst_scheduler_executors") == EXECUTORS

    cache = scrape(f"http://{host}:{PORTS.metrics_cache}/metrics")
    assert total(cache, "cloudburst_cache_hits_total") + total(cache, "cloudburst_cache_misses_total") >= 1
    assert total(cache, "cloudburst_cache_keys") >= 1

    kvs = scrape(f"http://{host}:{KvsConfig().metrics_port}/metrics")
    assert total(kvs, "cloudburst_kvs_requests_total", type="PUT") >= 1
    assert total(kvs, "cloudburst_kvs_request_duration_seconds_count", type="GET") >= 1

    management = scrape(cluster.dashboard_url + "metrics")
    assert total(management, "cloudburst_executor_threads") == EXECUTORS
    assert total(management, "cloudburst_nodes", state="active") == 1
    assert total(management, "cloudburst_trace_hops_received_total") >= 4 * calls


def test_errors_and_cache_figures_reach_the_dashboards_view(cluster, connection):
    def divide(lib, x):
        return x / 0

    connection.register(divide, "divide")
    future = connection.call("divide", 1)
    with pytest.raises(Exception, match="ZeroDivisionError"):
        future.result(30)

    def reported():
        view = get_json(cluster.dashboard_url + "api/cluster")
        errors = [error for error in view["errors"] if error["request_id"] == future.obj_id]
        return (view, errors[0]) if errors and view["nodes"] and view["nodes"][0]["cache"] else None

    found = wait_for(reported)
    assert found, "the error did not reach the dashboard"
    view, error = found
    assert (error["function"], error["error"]) == ("divide", "RemoteExecutionError")
    assert "ZeroDivisionError" in error["traceback"]
    (node,) = view["nodes"]
    assert len(node["executors"]) == EXECUTORS
    assert node["cache"]["hits"] + node["cache"]["misses"] >= 0
    assert view["autoscale"] is False
    assert any(trace["request_id"] == future.obj_id and not trace["ok"] for trace in view["traces"])
