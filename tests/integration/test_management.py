"""Nodes joining and draining, by hand and by the management service; the service's query ports; executors that
find schedulers started after them (the original fixed an executor's list at start).

Figures are printed (``pytest -s``) for the record.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from cloudburst.cli.dashboard_api import get_json
from cloudburst.client.connection import Connection
from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.config import ManagementConfig, RuntimePorts
from cloudburst.errors import InvalidRequest, ProvisioningError
from cloudburst.management.client import request_drain
from cloudburst.management.policy import ManagementPolicyConfig
from cloudburst.management.server import ManagementServer, NullProvisioner
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import ExecutorStatistics, GenericResponse, ThreadStatus

pytestmark = pytest.mark.integration

IN_FLIGHT = 200
PORTS = RuntimePorts()
#: A policy that never adds or drains a node by itself: drains in these tests are asked for.
HANDS_OFF = ManagementPolicyConfig(
    report_period=1.0,
    thread_timeout=3.0,
    min_nodes=1,
    max_nodes=2,
    min_utilization=0.0,
    max_utilization=1.0,
    max_pinned_ratio=100.0,
)


def wait_until(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def executor_ips(connection):
    return {status.ip for status in connection.status().executors if status.running}


def cluster_view(cluster):
    """The management service's view, from its dashboard's JSON API."""
    return get_json(cluster.dashboard_url + "api/cluster")


def reporting_threads(cluster, node):
    nodes = {entry["address"]: entry for entry in cluster_view(cluster)["nodes"]}
    return len(nodes[node]["executors"]) if node in nodes else 0


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sleepy(lib, seconds, n):
    time.sleep(seconds)
    return n


def test_a_node_drained_through_the_management_service_with_calls_in_flight_loses_none_and_is_released():
    config = ClusterConfig(
        host=random_loopback_host(),
        executors=2,
        nodes=2,
        data_dir=None,
        report_period=0.5,
        autoscale=True,
        scaling=HANDS_OFF,
    )
    first, second = config.node_hosts()
    drains = PORTS.management_drains_endpoint(config.host)
    with LocalCluster(config) as cluster:
        connection = cluster.connect()
        try:
            connection.register(sleepy, "sleepy")
            wait_until(lambda: executor_ips(connection) == {first, second}, "both nodes' executors")
            wait_until(lambda: reporting_threads(cluster, second) == 2, "the management's view")
            pids = cluster.node_pids(second)
            assert len(pids) == 3  # the cache and two executors

            futures = [connection.call("sleepy", 0.02, n) for n in range(IN_FLIGHT)]
            drain = request_drain(drains, second, timeout=30)
            started = time.monotonic()
            assert drain["threads"] == [0, 1]
            results = [future.result(timeout=60) for future in futures]

            assert results == list(range(IN_FLIGHT))
            wait_until(lambda: second not in cluster.nodes(), "the node's release")
            released_after = time.monotonic() - started
            assert not [pid for pid in pids if alive(pid)], "a released node's processes are gone"
            view = cluster_view(cluster)
            releases = [d["reason"] for d in view["decisions"] if d["kind"] == "ReleaseNodeInstruction"]
            assert releases == [f"every thread of {second} departed (2)"]
            assert second not in {entry["address"] for entry in view["nodes"]}
            wait_until(lambda: executor_ips(connection) == {first}, "the scheduler to forget the node")
            with pytest.raises(InvalidRequest, match="fewer than min_nodes=1"):
                request_drain(drains, first, timeout=30)
            with pytest.raises(InvalidRequest, match="not a known node"):
                request_drain(drains, second, timeout=30)
            # The cluster still serves after the drain.
            assert connection.call("sleepy", 0, "after").result(timeout=30) == "after"
            print(f"\n{IN_FLIGHT} calls in flight across the drain all completed; released {released_after:.1f} s in")
        finally:
            connection.close()


def test_without_autoscaling_a_node_is_drained_by_hand():
    config = ClusterConfig(host=random_loopback_host(), executors=1, nodes=2, data_dir=None, report_period=0.5)
    first, second = config.node_hosts()
    with LocalCluster(config) as cluster:
        pids = cluster.node_pids(second)
        cluster.drain_node(second)
        assert cluster.nodes() == [first]
        assert not [pid for pid in pids if alive(pid)]
        with pytest.raises(InvalidRequest):
            cluster.drain_node(second)


def test_the_management_service_adds_a_node_under_load_and_drains_it_when_the_load_stops():
    scaling = ManagementPolicyConfig(
        report_period=1.0,
        thread_timeout=3.0,
        grace_period=3.0,
        min_nodes=1,
        max_nodes=2,
        scale_increase=1,
        replica_cooldown=1.0,
    )
    config = ClusterConfig(
        host=random_loopback_host(),
        executors=2,
        nodes=1,
        data_dir=None,
        report_period=0.5,
        autoscale=True,
        scaling=scaling,
    )
    with LocalCluster(config) as cluster:
        connection = cluster.connect()
        stop = threading.Event()
        completed, failed = [], []

        def load():
            while not stop.is_set():
                try:
                    completed.append(connection.call("sleepy", 0.05, 0).result(timeout=60))
                except Exception as error:  # counted, and the assertion below shows them
                    failed.append(error)

        try:
            connection.register(sleepy, "sleepy")
            clients = [threading.Thread(target=load) for _ in range(6)]
            for client in clients:
                client.start()
            started = time.monotonic()
            wait_until(lambda: len(cluster.nodes()) == 2, "a node added under load", timeout=60)
            added_after = time.monotonic() - started
            stop.set()
            for client in clients:
                client.join(timeout=60)
            stopped = time.monotonic()
            # Either node may go (the least loaded); the first node's KVS and scheduler are not part of it.
            wait_until(lambda: len(cluster.nodes()) == 1, "an idle node drained", timeout=60)
            drained_after = time.monotonic() - stopped
            view = cluster_view(cluster)
            reasons = [decision["reason"] for decision in view["decisions"]]
            print(
                f"\nnode added {added_after:.1f} s into the load, drained {drained_after:.1f} s after it stopped; "
                f"{len(completed)} calls completed, {len(failed)} failed; decisions: {reasons}"
            )
            assert not failed, failed[:3]
            assert any("utilization" in reason for reason in reasons), reasons
            assert view["schedulers"] == [config.host]
        finally:
            stop.set()
            connection.close()


class RecordingProvisioner:
    def __init__(self):
        self.added, self.drained, self.released = [], [], []

    def add_nodes(self, count):
        self.added.append(count)
        return []

    def drain(self, node):
        self.drained.append(node)

    def release(self, node):
        self.released.append(node)


def test_the_management_port_takes_reports_and_drops_garbage(serve_in_thread):
    server = serve_in_thread(ManagementServer(ManagementConfig(host=random_loopback_host()), RecordingProvisioner()))
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(server.report_address)
        socket.send(b"\xff\x00 not a report")
        socket.send(codec.encode_scheduler_message(GenericResponse(True)))
        socket.send(codec.encode_scheduler_message(ThreadStatus("10.0.0.7", 0, ("f",), 0.5)))
        wait_until(lambda: server.rejected_messages >= 2, "the rejections")
        wait_until(lambda: "10.0.0.7" in server.nodes(), "the reporting node")
        socket.close()
    finally:
        context.term()


def test_without_a_provisioner_a_drain_is_refused_and_the_node_stays_active(serve_in_thread):
    config = ManagementConfig(host=random_loopback_host(), policy=HANDS_OFF)
    server = serve_in_thread(ManagementServer(config, NullProvisioner()))
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(server.report_address)
        for ip in ("10.0.0.7", "10.0.0.8"):
            socket.send(codec.encode_scheduler_message(ThreadStatus(ip, 0)))
        wait_until(lambda: len(server.nodes()) == 2, "both nodes")
        with pytest.raises(ProvisioningError, match="no provisioner"):
            server.drain_node("10.0.0.8")
        assert not server.nodes()["10.0.0.8"].draining
        socket.close()
    finally:
        context.term()


def ask_schedulers(context, endpoint):
    request = context.socket(zmq.REQ)
    request.setsockopt(zmq.LINGER, 0)
    request.setsockopt(zmq.RCVTIMEO, 10_000)
    request.connect(endpoint)
    try:
        request.send(b"")
        return codec.decode_string_set(request.recv())
    finally:
        request.close()


def test_the_management_process_answers_the_scheduler_and_executor_list_queries_and_survives_garbage(tmp_path):
    host = random_loopback_host()
    process = ChildProcess(["management", "--host", host, "--scheduler", "10.9.0.1"], tmp_path, "management")
    context = zmq.Context()
    try:
        ready = json.loads(process.start())
        assert ready["schedulers"] == PORTS.management_schedulers_endpoint(host)
        assert ask_schedulers(context, ready["schedulers"]) == ("10.9.0.1",)

        reports = context.socket(zmq.PUSH)
        reports.setsockopt(zmq.LINGER, 0)
        reports.connect(ready["reports"])
        reports.send(codec.encode_scheduler_message(ExecutorStatistics(reporter="scheduler:10.9.0.2")))
        reports.send(codec.encode_scheduler_message(ThreadStatus("10.8.0.1", 0)))
        reports.send(b"\xff garbage")
        wait_until(lambda: ask_schedulers(context, ready["schedulers"]) == ("10.9.0.1", "10.9.0.2"), "a reporter")

        replies = context.socket(zmq.PULL)
        replies.setsockopt(zmq.LINGER, 0)
        replies.setsockopt(zmq.RCVTIMEO, 10_000)
        reply_address = f"tcp://{host}:{replies.bind_to_random_port(f'tcp://{host}')}"
        queries = context.socket(zmq.PUSH)
        queries.setsockopt(zmq.LINGER, 0)
        queries.connect(ready["executors"])
        queries.send(b"\xff\xfe not text")
        queries.send(b"tcp://10.0.0.1:9999")  # not loopback: the service is bound to loopback, so refused
        queries.send(b"no address at all")
        queries.send(reply_address.encode())
        assert codec.decode_string_set(replies.recv()) == ("10.8.0.1",)

        # A DEALER without the delimiter, and several frames: still answered, still serving.
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(ready["schedulers"])
        dealer.send_multipart([b"odd", b"frames"])
        assert dealer.poll(10_000)
        dealer.recv_multipart()
        assert ask_schedulers(context, ready["schedulers"]) == ("10.9.0.1", "10.9.0.2")
        assert process.running()
        log = process.log_text()
        assert "rejected input (executor list port)" in log
        assert "rejected input (report port)" in log
        for socket in (reports, replies, queries, dealer):
            socket.close()
    finally:
        context.term()
        process.stop()


def test_an_executor_that_knows_only_the_management_service_finds_a_scheduler_started_after_it(tmp_path, node):
    """The original gave each executor a fixed scheduler list at start."""
    host = random_loopback_host()
    period = ["--report-period", "0.5"]
    management = ChildProcess(["management", "--host", host, "--report-period", "0.5"], tmp_path, "management")
    executor = ChildProcess(
        ["executor", "--host", host, "--kvs", node.routing, "--management", host, *period], tmp_path, "executor"
    )
    scheduler = ChildProcess(
        ["scheduler", "--host", host, "--kvs", node.routing, "--management", host, *period], tmp_path, "scheduler"
    )
    try:
        management.start()
        executor.start()
        time.sleep(1.0)  # the executor reports, and asks for schedulers, before any exists
        scheduler.start()
        started = time.monotonic()
        with Connection(host, host=host, timeout=30) as connection:
            wait_until(lambda: executor_ips(connection) == {host}, "the scheduler to hear of the executor")
            found_after = time.monotonic() - started
            connection.register(sleepy, "sleepy")
            assert connection.call("sleepy", 0, "ran").result(timeout=30) == "ran"
        print(f"\nthe executor reported to the later scheduler {found_after:.1f} s after it started")
    finally:
        for child in (scheduler, executor, management):
            child.stop()


def test_cloudburst_drain_drains_a_node_through_the_management_service_and_shows_it_go():
    config = ClusterConfig(host=random_loopback_host(), executors=2, nodes=2, data_dir=None, report_period=0.5)
    first, second = config.node_hosts()
    with LocalCluster(config) as cluster:
        pids = cluster.node_pids(second)
        command = [sys.executable, "-m", "cloudburst", "drain", "--management", config.host, "--timeout", "60"]
        shown = subprocess.run([*command, second], capture_output=True, text=True, timeout=90)
        print(shown.stdout)
        assert shown.returncode == 0, shown.stderr
        assert f"draining {second}: 2 executor(s) told to finish their work and depart" in shown.stdout
        assert f"released {second}" in shown.stdout
        assert cluster.nodes() == [first]
        assert not [pid for pid in pids if alive(pid)]
        # Refusals say why, in one line, with exit code 1.
        for node, reason in ((second, "is not a known node"), (first, "would leave no active node")):
            refused = subprocess.run([*command, node], capture_output=True, text=True, timeout=90)
            assert refused.returncode == 1
            assert reason in refused.stderr
            assert "Traceback" not in refused.stderr
