"""The common mistakes get one clear line saying what is wrong and what to do, never a traceback.

Every test uses its own random loopback address and temporary directories, and leaves no process behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

import cloudburst.client.connection as connection_module
from cloudburst.client.connection import Connection
from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.local import random_loopback_host
from cloudburst.config import RuntimePorts
from cloudburst.errors import TransportError, VersionMismatch
from cloudburst.protocol.versions import VersionInfo, local_version_info
from cloudburst.transport.zmq import bind

pytestmark = pytest.mark.integration

PORTS = RuntimePorts()


@pytest.fixture
def home() -> Iterator[Path]:
    """A HOME of its own, so the default data directory (``~/.cloudburst``) is this test's, not the user's."""
    with tempfile.TemporaryDirectory(prefix="cloudburst-cli-errors-") as directory:
        yield Path(directory)


def cloudburst_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudburst", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HOME": str(home)},
    )


def running_with(host: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", f"host {host}"], capture_output=True, text=True, check=False).stdout
    return [line for line in found.splitlines() if not line.startswith(f"{os.getpid()} ")]


def assert_one_clear_line(stderr: str, start: str) -> str:
    assert "Traceback" not in stderr, stderr
    first = stderr.splitlines()[0]
    assert first.startswith(f"cloudburst: error: {start}"), stderr
    return first


def test_status_with_no_cluster_says_how_to_start_one(home):
    started = time.monotonic()
    result = cloudburst_cli(home, "status")
    assert result.returncode == 1
    line = assert_one_clear_line(result.stderr, "no cluster is running from ")
    assert "`cloudburst up`" in line
    assert "--scheduler HOST" in line
    assert result.stdout == ""
    assert time.monotonic() - started < 10


def test_status_of_an_address_where_no_scheduler_answers_fails_within_its_timeout(home):
    host = random_loopback_host()
    started = time.monotonic()
    result = cloudburst_cli(home, "status", "--scheduler", host, "--timeout", "1")
    took = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr == (
        f"cloudburst: error: no scheduler answered at tcp://{host}:5000 within 1 s: is a cluster running there? "
        "Start one with `cloudburst up`, or check the address\n"
    )
    # One second of waiting, plus starting Python.
    assert took < 8


def test_up_on_a_busy_port_names_it_and_leaves_nothing_running(home):
    host = random_loopback_host()
    with socket.socket() as squatter:
        squatter.bind((host, PORTS.connect))
        squatter.listen()
        result = cloudburst_cli(home, "up", "--host", host, "--in-memory")
        left = running_with(host)
    assert result.returncode == 1
    line = assert_one_clear_line(
        result.stderr, f"scheduler cannot listen on tcp://{host}:5000 (the scheduler's connect port): "
    )
    assert "already in use" in line
    assert "`cloudburst down`" in line
    assert "--host" in line
    # The role's own output follows the line, for whoever wants the details.
    assert f"cannot bind tcp://{host}:5000" in result.stderr.split("\n", 1)[1]
    assert left == []
    assert not (home / ".cloudburst" / "cluster.json").exists()


def test_detached_up_on_a_busy_port_says_the_same_first(home):
    host = random_loopback_host()
    data_dir = home / "data"
    with socket.socket() as squatter:
        squatter.bind((host, PORTS.connect))
        squatter.listen()
        result = cloudburst_cli(home, "up", "--detach", "--host", host, "--data-dir", str(data_dir))
        left = running_with(host)
    assert result.returncode == 1
    assert_one_clear_line(result.stderr, f"scheduler cannot listen on tcp://{host}:5000 (the scheduler's connect port)")
    assert str(data_dir / "cluster.log") in result.stderr
    assert left == []


def test_a_bind_error_names_the_address_the_port_and_why():
    host = random_loopback_host()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    first, second = context.socket(zmq.PULL), context.socket(zmq.PULL)
    try:
        port = bind(first, host, 0)
        with pytest.raises(TransportError) as raised:
            bind(second, host, port, "the test's port")
        assert str(raised.value) == (
            f"cannot bind tcp://{host}:{port} (the test's port): the address is already in use "
            "(another cluster or another program listens there)"
        )
        with pytest.raises(TransportError, match="no network interface of this machine has that address"):
            bind(second, "192.0.2.1", port)
    finally:
        first.close(linger=0)
        second.close(linger=0)
        context.term()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real scheduler (and the KVS it needs; no executors) on a random loopback address."""
    host = random_loopback_host()
    with tempfile.TemporaryDirectory(prefix="cloudburst-version-check-") as workdir:
        kvs = ChildProcess(["kvs", "--host", host, "--in-memory"], Path(workdir), "kvs")
        server = ChildProcess(["scheduler", "--host", host, "--kvs", f"tcp://{host}:6450"], Path(workdir), "scheduler")
        try:
            kvs.start()
            server.start()
            yield host
        finally:
            server.stop()
            kvs.stop()


def test_a_client_of_the_same_versions_connects(scheduler):
    with Connection(scheduler, host=scheduler, timeout=5) as connection:
        assert connection.list() == []


def test_another_cloudpickle_version_is_refused_unless_the_check_is_off(scheduler, monkeypatch):
    ours = local_version_info()
    older = VersionInfo(ours.cloudburst, ours.python, "2.2.1", ours.protocol)
    monkeypatch.setattr(connection_module, "local_version_info", lambda: older)
    with pytest.raises(VersionMismatch) as raised:
        Connection(scheduler, host=scheduler, timeout=5)
    message = str(raised.value)
    assert f"cloudpickle 2.2.1 here, {ours.cloudpickle} there" in message
    assert f"the cluster at {scheduler}" in message
    assert "check_versions=False" in message
    with Connection(scheduler, host=scheduler, timeout=5, check_versions=False) as connection:
        assert connection.list() == []


def test_a_scheduler_without_the_info_port_is_tolerated_at_once(scheduler):
    # What a scheduler from before the info port looks like: nothing listens there.
    probe = socket.socket()
    probe.bind((scheduler, 0))
    unused = probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    with Connection(scheduler, host=scheduler, timeout=5, ports=RuntimePorts(info=unused)) as connection:
        took = time.monotonic() - started
        assert connection.list() == []
    # Far below the check's own deadline (a second): the refused connection is noticed, not waited out.
    assert took < 0.5


def test_the_info_port_answers_anything_with_json_and_keeps_serving(scheduler):
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(PORTS.info_endpoint(scheduler))
    try:
        for request in ([b"", b"\xff\x00garbage"], [b"no delimiter"], [b"", b"a", b"b", b"c"], [b"", b""]):
            dealer.send_multipart(request)
            assert dealer.poll(5_000), f"no answer to {request!r}"
            answer = dealer.recv_multipart()[-1]
            assert json.loads(answer)["cloudpickle"] == local_version_info().cloudpickle
        assert dataclasses.replace(VersionInfo.decode(answer), incarnation="") == local_version_info()
    finally:
        dealer.close()
        context.term()


def test_status_of_a_scheduler_without_executors_in_json(scheduler, home):
    result = cloudburst_cli(home, "status", "--scheduler", f"tcp://{scheduler}:5000", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"scheduler": scheduler, "executors": [], "dags": [], "functions": []}
    table = cloudburst_cli(home, "status", "--scheduler", scheduler)
    assert table.returncode == 0, table.stderr
    assert "No executor has reported yet." in table.stdout


@pytest.mark.parametrize("check_versions", [True, False])
def test_a_scheduler_given_as_a_url_is_a_clear_error_not_a_hang(check_versions):
    with pytest.raises(TransportError, match="give the scheduler as a host"):
        Connection("tcp://127.0.0.1:5000", timeout=1, check_versions=check_versions)
