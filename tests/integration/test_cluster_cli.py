# ruff: noqa: E501 - the original example is quoted verbatim
"""``cloudburst up --detach``, ``status``, ``down`` and the original README example, as a user would run them."""

import os
import subprocess
import sys
import textwrap

import pytest

from cloudburst.cluster.local import random_loopback_host

pytestmark = pytest.mark.integration


def cloudburst_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "cloudburst", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def detached_cluster(tmp_path):
    host = random_loopback_host()
    started = cloudburst_cli("up", "--detach", "--host", host, "--data-dir", str(tmp_path), "--report-period", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    yield host, tmp_path
    stopped = cloudburst_cli("down", "--data-dir", str(tmp_path))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_original_readme_example_runs_unchanged(detached_cluster):
    host, _ = detached_cluster
    # The original example verbatim, except for the address of this test's private cluster.
    example = textwrap.dedent(
        f"""
        from cloudburst.client.client import CloudburstConnection
        c = CloudburstConnection('{host}', '{host}', local=True)
        sq = c.register(lambda _, x: x * x, 'square')
        print(sq(2).get(), end=' ')
        c.register(lambda _, a: a + 1, 'incr')
        ok, _ = c.register_dag('test_dag', ['incr', 'square'], [('incr', 'square')])
        print(c.call_dag('test_dag', {{'incr': 1}}).get(), ok, c.call_dag('test_dag', {{'incr': 1}}, direct_response=True))
        """
    )
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 4 True 4"


def test_status_lists_executors_and_dags(detached_cluster):
    host, data_dir = detached_cluster
    shown = cloudburst_cli("status", "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(f"{host}:") >= 3
    assert "running" in shown.stdout


def test_second_up_on_the_same_data_dir_is_refused(detached_cluster):
    host, data_dir = detached_cluster
    again = cloudburst_cli("up", "--detach", "--host", host, "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "already running" in again.stderr


def test_down_leaves_no_processes(tmp_path):
    host = random_loopback_host()
    assert cloudburst_cli("up", "--detach", "--host", host, "--data-dir", str(tmp_path)).returncode == 0
    try:
        pids = subprocess.run(["pgrep", "-f", f"host {host}"], capture_output=True, text=True, check=False)
        assert len(pids.stdout.split()) >= 6  # supervisor, KVS, scheduler, 3 executors
    finally:
        assert cloudburst_cli("down", "--data-dir", str(tmp_path)).returncode == 0
    left = subprocess.run(["pgrep", "-f", f"host {host}"], capture_output=True, text=True, check=False).stdout.split()
    assert [pid for pid in left if int(pid) != os.getpid()] == []
