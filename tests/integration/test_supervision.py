"""The local supervisor: crashed executors come back, and Ctrl-C leaves nothing running."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

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
