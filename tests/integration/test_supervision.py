"""The local supervisor: crashed executors come back, and Ctrl-C leaves nothing running."""

import json
import os
import signal
import subprocess
import sys
import threading
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


def role_pid(host, role):
    """The process of ``role`` (``kvs``, ``cache``) of the cluster on ``host``."""
    pid = role_pid_or_none(host, role)
    assert pid is not None, f"no single {role} process on {host}"
    return pid


@pytest.mark.timeout(300)
def test_under_cloudburst_up_writers_ride_out_a_kvs_and_then_a_cache_killed(tmp_path):
    home, data, host = tmp_path / "home", tmp_path / "data", random_loopback_host()
    environment = {**os.environ, "HOME": str(home)}

    def cli(*args):
        command = [sys.executable, "-m", "cloudburst", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)

    deadline = 20.0
    started = cli("up", "--detach", "--host", host, "--data-dir", str(data), "--executors", "2", "--report-period", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        with cloudburst.Connection(host, host=host, timeout=deadline) as setup:
            setup.register(lambda lib, key, value: lib.put(key, value), "sv_write")
        acknowledged, outcomes, stop = {}, [], threading.Event()

        def writer(name):
            # Half straight to the KVS, half from a function through the node cache.
            with cloudburst.Connection(host, host=host, timeout=deadline) as connection:
                i = 0
                while not stop.is_set():
                    key, began = f"sv/{name}/{i}", time.monotonic()
                    try:
                        if i % 2:
                            connection.put_object(key, i)
                        else:
                            connection.call("sv_write", key, i).result()
                        acknowledged[key] = i
                        outcomes.append(("ok", time.monotonic() - began))
                    except cloudburst.CloudburstError as error:
                        outcomes.append((f"{type(error).__name__}: {error}", time.monotonic() - began))
                    i += 1

        writers = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
        for thread in writers:
            thread.start()
        try:
            time.sleep(2)
            for role in ("kvs", "cache"):
                victim = role_pid(host, role)
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
                while (back := role_pid_or_none(host, role)) in (None, victim):
                    assert time.monotonic() - killed < 30, f"the {role} did not come back"
                    time.sleep(0.1)
                print(f"\n{role} back as pid {back} {time.monotonic() - killed:.1f} s after its kill")
                time.sleep(3)  # writes go on through the restarted role
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        failed = [(what, took) for what, took in outcomes if what != "ok"]
        slowest = max(took for _, took in outcomes)
        print(f"{len(outcomes)} writes, {len(acknowledged)} acknowledged, slowest {slowest:.1f} s; failed: {failed}")
        assert len(acknowledged) > 50
        # None waited out its whole deadline: the roles were back within seconds, and writes went on.
        assert slowest < deadline - 5
        with cloudburst.Connection(host, host=host, timeout=deadline) as reader:
            assert {key: reader.get_object(key) for key in acknowledged} == acknowledged
    finally:
        stopped = cli("down", "--data-dir", str(data))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def role_pid_or_none(host, role):
    found = subprocess.run(
        ["pgrep", "-f", f"cloudburst {role} --host {host} "], capture_output=True, check=False, text=True
    )
    pids = [int(pid) for pid in found.stdout.split()]
    return pids[0] if len(pids) == 1 else None
