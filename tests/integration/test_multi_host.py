"""Roles started one by one, as each host of a multi-host deployment starts its own: from one config file, and
``cloudburst node`` supervising its executors until they depart."""

import json
import os
import re
import signal
import socket
import subprocess

import pytest
import zmq

from cloudburst.client.connection import Connection
from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.local import random_loopback_host
from cloudburst.config import KvsConfig, RuntimePorts
from cloudburst.management.server import send_self_depart
from cloudburst.testing import wait_until
from cloudburst.transport.zmq import PushSocketCache

pytestmark = pytest.mark.integration

PORTS = RuntimePorts()
#: One port of each role: the KVS routing port, the scheduler's, the management service's, the cache's and the
#: first executor's.
ROLE_PORTS = (KvsConfig().routing_port, PORTS.connect, PORTS.management, 7160, PORTS.executor_control)

#: Every role on one address, as ``cloudburst up`` runs them; on separate hosts only the addresses would differ.
DEPLOYMENT = """
[kvs]
host = "{host}"
in_memory = true

[scheduler]
host = "{host}"
kvs = "tcp://{host}:6450"
management = "{host}"
report_period = 0.5

[management]
host = "{host}"
provisioner = "none"
report_period = 0.5

[node]
host = "{host}"
kvs = "tcp://{host}:6450"
management = "{host}"
executors = 2
report_period = 0.5
"""


def pids_running(pattern):
    found = subprocess.run(["pgrep", "-f", re.escape(pattern)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def port_free(host, port):
    with socket.socket() as probe:
        # As the roles' sockets do: connections left in TIME_WAIT do not hold the port, a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError:
            return False
        return True


def stop_gracefully(child):
    """SIGTERM, then the exit code the child chose."""
    child.terminate()
    wait_until(lambda: child.exit_code() is not None, f"{child.name} to exit")
    code = child.exit_code()
    child.stop()
    return code


def running_executors(connection):
    return sum(status.running for status in connection.status().executors)


def test_kvs_scheduler_management_and_a_node_from_one_config_file_serve_a_call_and_stop_cleanly(tmp_path, monkeypatch):
    host = random_loopback_host()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # The node's temporary work directory must go with it.
    monkeypatch.setenv("TMPDIR", str(scratch))
    config = tmp_path / "cloudburst.toml"
    config.write_text(DEPLOYMENT.format(host=host))
    roles: dict[str, ChildProcess] = {}
    ready: dict[str, str] = {}
    try:
        for role in ("kvs", "scheduler", "management", "node"):
            roles[role] = ChildProcess([role, "--config", str(config)], tmp_path / "logs", role, startup_timeout=60)
            ready[role] = roles[role].start()
        assert json.loads(ready["node"])["host"] == host
        assert json.loads(ready["node"])["executors"] == [0, 1]
        with Connection(host, host=host, timeout=30) as connection:
            # The node was told no scheduler: its executors find it through the management service.
            wait_until(lambda: running_executors(connection) == 2, "the node's executors to reach the scheduler")
            square = connection.register(lambda _, x: x * x, "multi_host_square")
            assert square(7).result(timeout=30) == 49
        for role in ("node", "management", "scheduler", "kvs"):
            assert stop_gracefully(roles[role]) == 0, roles[role].log_text()[-3000:]
    finally:
        for child in roles.values():
            child.stop()
    assert pids_running(f"--host {host}") == [], "the node's cache and executors are gone"
    assert pids_running(str(config)) == [], "every role is gone"
    assert [port for port in ROLE_PORTS if not port_free(host, port)] == []
    assert list(scratch.iterdir()) == [], "the node removed its work directory"


def test_a_node_restarts_a_crashed_executor_and_exits_with_0_once_its_executors_departed(tmp_path):
    host = random_loopback_host()
    kvs = f"tcp://{host}:6450"
    children = [
        ChildProcess(["kvs", "--host", host, "--in-memory"], tmp_path, "kvs"),
        ChildProcess(["scheduler", "--host", host, "--kvs", kvs, "--report-period", "0.5"], tmp_path, "scheduler"),
    ]
    node_args = ["node", "--host", host, "--scheduler", host, "--kvs", kvs, "--executors", "2"]
    node = ChildProcess([*node_args, "--work-dir", str(tmp_path / "node")], tmp_path, "node", startup_timeout=60)
    try:
        for child in [*children, node]:
            child.start()
        first = f"executor --host {host} --tid 0"
        (victim,) = pids_running(first)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: [pid for pid in pids_running(first) if pid != victim], "the restart")
        assert "restarting it" in node.log_text()
        # The supervisor waits until the restarted executor listens again before it looks at the others.
        wait_until(lambda: (tmp_path / "node" / f"executor-0@{host}.ready").exists(), "the restarted executor")

        context: zmq.Context = zmq.Context()
        push = PushSocketCache(context)
        try:
            send_self_depart(push, PORTS, host, [0, 1])
        finally:
            push.close()
            context.term()
        wait_until(lambda: node.exit_code() is not None, "the drained node to exit")
        assert node.exit_code() == 0, node.log_text()[-3000:]
        assert "every executor of node" in node.log_text()
        assert pids_running(f"--host {host} --tid") == [], "departed executors are not restarted"
        assert pids_running(f"cache --host {host}") == []
    finally:
        for child in [node, *reversed(children)]:
            child.stop()
