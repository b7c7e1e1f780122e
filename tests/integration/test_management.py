"""Nodes joining and draining, by hand and by the management service, on a local cluster.

Figures are printed (``pytest -s``) for the record.
"""

import threading
import time

import pytest
import zmq

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.management.policy import ManagementPolicyConfig
from cloudburst.management.server import ManagementServer
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import GenericResponse, ThreadStatus

pytestmark = pytest.mark.integration

IN_FLIGHT = 200


def wait_until(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def executor_ips(connection):
    return {status.ip for status in connection.status().executors if status.running}


def sleepy(lib, seconds, n):
    time.sleep(seconds)
    return n


def test_a_node_joins_and_then_drains_with_calls_in_flight_and_none_is_lost():
    config = ClusterConfig(host=random_loopback_host(), executors=2, nodes=1, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        connection = cluster.connect()
        try:
            connection.register(sleepy, "sleepy")
            second = cluster.add_node()
            assert second != config.host
            wait_until(lambda: executor_ips(connection) == {config.host, second}, "the new node's executors")
            futures = [connection.call("sleepy", 0.02, n) for n in range(IN_FLIGHT)]
            cluster.drain(second)
            results = [future.result(timeout=60) for future in futures]
            assert results == list(range(IN_FLIGHT))
            assert wait_until(cluster.finished_drains, "the drain to finish") == [second]
            assert cluster.nodes() == [config.host]
            wait_until(lambda: executor_ips(connection) == {config.host}, "the scheduler to forget the node")
            # The cluster still serves after the drain.
            assert connection.call("sleepy", 0, "after").result(timeout=30) == "after"
        finally:
            connection.close()


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
            reasons = [decision.reason for decision in cluster.management.state.decisions()]
            print(
                f"\nnode added {added_after:.1f} s into the load, drained {drained_after:.1f} s after it stopped; "
                f"{len(completed)} calls completed, {len(failed)} failed; decisions: {reasons}"
            )
            assert not failed, failed[:3]
            assert any("utilization" in reason for reason in reasons), reasons
        finally:
            stop.set()
            connection.close()


class RecordingProvisioner:
    def __init__(self):
        self.added, self.drained = [], []

    def add_nodes(self, count):
        self.added.append(count)
        return []

    def drain(self, node):
        self.drained.append(node)

    def finished_drains(self):
        return []


def test_the_management_port_takes_reports_and_drops_garbage(serve_in_thread):
    server = serve_in_thread(ManagementServer(random_loopback_host(), RecordingProvisioner()))
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(server.report_address)
        socket.send(b"\xff\x00 not a report")
        socket.send(codec.encode_scheduler_message(GenericResponse(True)))
        socket.send(codec.encode_scheduler_message(ThreadStatus("10.0.0.7", 0, ("f",), 0.5)))
        wait_until(lambda: server.rejected_messages >= 2, "the rejections")
        wait_until(lambda: "10.0.0.7" in server.state.nodes(), "the reporting node")
        socket.close()
    finally:
        context.term()
