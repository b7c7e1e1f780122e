"""The local supervisor: crashed executors come back, and Ctrl-C leaves nothing running."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import cloudburst
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host

pytestmark = pytest.mark.integration


def running_with(host):
    found = subprocess.run(["pgrep", "-f", f"host {host}"], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def test_a_killed_executor_is_restarted_and_serves_again():
    with LocalCluster(
        ClusterConfig(host=random_loopback_host(), executors=2, data_dir=None, report_period=0.5)
    ) as cluster:
        connection = cluster.connect(timeout=20)
        try:
            square = connection.register(lambda _, x: x * x, "sv_square")
            assert square(3).result() == 9
            victim = cluster.executor_pids()[0]
            os.kill(victim, signal.SIGKILL)
            give_up = time.monotonic() + 10
            while not cluster.supervise():
                assert time.monotonic() < give_up, "the supervisor did not notice the crash"
                time.sleep(0.05)
            assert cluster.executor_pids()[0] != victim
            # Enough calls that the restarted executor takes some of them.
            assert [square(i).result() for i in range(20)] == [i * i for i in range(20)]
        finally:
            connection.close()


def test_ctrl_c_stops_a_foreground_cluster_and_all_its_processes(tmp_path):
    host = random_loopback_host()
    log = tmp_path / "up.log"
    with open(log, "wb") as output:
        up = subprocess.Popen(
            [sys.executable, "-m", "cloudburst", "up", "--host", host, "--data-dir", str(tmp_path)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        give_up = time.monotonic() + 60
        while not (tmp_path / "cluster.json").exists():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < give_up
            time.sleep(0.05)
        assert json.loads((tmp_path / "cluster.json").read_text())["pid"] == up.pid
        assert len(running_with(host)) >= 6
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert running_with(host) == []
    assert not (tmp_path / "cluster.json").exists()


def crash(_):
    os._exit(1)


def test_a_local_cluster_brings_back_an_executor_whose_function_exited_the_process():
    with cloudburst.local(executors=2) as cb:
        cb.register(lambda _, x: x + 1, "sv_incr")
        cb.register(crash, "sv_crash")
        before = set(cb_session_executors(cb))
        with pytest.raises(cloudburst.CloudburstError):
            cb.call("sv_crash").result(timeout=5)
        # Back within seconds, under a new incarnation, and serving.
        give_up = time.monotonic() + 15
        while set(cb_session_executors(cb)) == before or len(cb_session_executors(cb)) < 2:
            assert time.monotonic() < give_up, "the crashed executor did not come back"
            time.sleep(0.1)
        assert [cb.call("sv_incr", i).result(timeout=10) for i in range(10)] == list(range(1, 11))


def cb_session_executors(cb):
    """The running executors' (address, incarnation) pairs, as the scheduler knows them."""
    return [(e.ip, e.tid, e.incarnation) for e in cb.status().executors if e.running]


def test_a_killed_kvs_is_restarted_on_its_data_and_loses_no_acknowledged_write(tmp_path):
    host = random_loopback_host()
    with LocalCluster(ClusterConfig(host=host, executors=1, data_dir=tmp_path, report_period=0.5)) as cluster:
        cluster.supervise_in_background(0.1)
        connection = cluster.connect(timeout=20)
        try:
            acknowledged = {}
            for i in range(20):
                connection.put_object(f"sv/k{i}", i)
                acknowledged[f"sv/k{i}"] = i
            os.kill(cluster.kvs_pid(), signal.SIGKILL)
            # Writes during the gap succeed late (the client retries until its deadline) rather than fail at once.
            started = time.monotonic()
            for i in range(20, 30):
                connection.put_object(f"sv/k{i}", i, timeout=20)
                acknowledged[f"sv/k{i}"] = i
            assert time.monotonic() - started < 15
            assert {key: connection.get_object(key) for key in acknowledged} == acknowledged
            # Functions reach it again too.
            connection.register(lambda lib, key: lib.get(key), "sv_read")
            assert connection.call("sv_read", "sv/k5").result(timeout=20) == 5
        finally:
            connection.close()


def test_plain_down_finds_a_cluster_started_with_another_data_directory(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "elsewhere"
    host = random_loopback_host()
    environment = {**os.environ, "HOME": str(home)}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "cloudburst", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=environment,
            check=False,
        )

    started = cli("up", "--detach", "--host", host, "--data-dir", str(data), "--report-period", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        # up names the command that stops it; plain status and down find it anyway.
        assert f"cloudburst down --data-dir {data}" in started.stdout
        shown = cli("status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert host in shown.stdout
        stopped = cli("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "Cluster stopped." in stopped.stdout
        assert running_with(host) == []
    finally:
        cli("down", "--data-dir", str(data))
