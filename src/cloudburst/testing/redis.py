"""Private ``redis-server`` processes and Redis Clusters for tests, cleaned up even when a test fails.

Every server binds 127.0.0.1 on a free port, keeps its files in its own directory and runs with
``appendonly yes`` / ``appendfsync always`` (and no RDB snapshots), so a write Redis acknowledged survives a
restart on the same directory: that is what the fault tests rely on. On Linux the servers are also told to die
with the thread that started them (``PR_SET_PDEATHSIG``), so a killed test run leaves no strays; start them from
a thread that outlives them, such as the main thread.

Needs the ``redis`` extra and the ``redis-server`` / ``redis-cli`` executables on ``PATH``.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from cloudburst.cluster.child import kill_process, stop_process
from cloudburst.errors import DeadlineExceeded

#: The cluster bus of a cluster node listens on its port plus this offset.
CLUSTER_BUS_OFFSET = 10000
_HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port(*, cluster_bus: bool = False) -> int:
    """A TCP port free on 127.0.0.1 right now (checked, not reserved).

    Args:
        cluster_bus: Also require the cluster bus port (``port + 10000``) to be free.

    Raises:
        RuntimeError: No such port was found.
    """
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((_HOST, 0))
            port: int = probe.getsockname()[1]
        if not cluster_bus:
            return port
        if port + CLUSTER_BUS_OFFSET < 65536 and _bindable(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((_HOST, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """Runs in the child before ``exec``: SIGKILL it when the parent dies, so no server outlives a killed run."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise DeadlineExceeded(f"{what} within {timeout} s")
        time.sleep(0.02)


class LocalRedis:
    """One private ``redis-server``.

    Args:
        data_dir: Where the server keeps its append-only file and log; a temporary directory (removed by
            :meth:`close`) when ``None``.
        port: The port to listen on; a free one when 0.
        cluster: Start it as a Redis Cluster node (``cluster-enabled yes``); see :class:`LocalRedisCluster`.
        startup_timeout: Seconds to wait for the server to answer ``PING``.
        executable: The ``redis-server`` to run.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int = 0,
        cluster: bool = False,
        startup_timeout: float = 20.0,
        executable: str = "redis-server",
    ) -> None:
        self._owned_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="cloudburst-redis-")) if data_dir is None else data_dir
        self.port = port
        self.cluster = cluster
        self._startup_timeout = startup_timeout
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The engine URL of this server (``redis://127.0.0.1:<port>``)."""
        return f"redis://{_HOST}:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{_HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.data_dir / "redis.log"

    def log_text(self) -> str:
        """What the server has logged so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> LocalRedis:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        """The server's process id.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._process is None:
            raise RuntimeError(f"redis-server on port {self.port} is not running")
        return self._process.pid

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Starts the server (on a free port unless one was given or used before) and waits for ``PING``.

        Raises:
            DeadlineExceeded: It did not answer in time, or exited (its log is in the message).
        """
        if self.running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(cluster_bus=self.cluster)
        command = [self._executable, "--port", str(self.port), "--bind", _HOST, "--dir", str(self.data_dir)]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        command += ["--logfile", str(self.log_file)]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.data_dir / "nodes.conf")]
            command += ["--cluster-node-timeout", "2000"]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # before any thread exists
        )
        try:
            _wait(self._answers_ping, self._startup_timeout, f"redis-server on port {self.port} did not answer")
        except DeadlineExceeded as error:
            self.kill()
            raise DeadlineExceeded(f"{error}; its log:\n{self.log_text()[-4000:]}") from None

    def _answers_ping(self) -> bool:
        if not self.running():
            raise DeadlineExceeded(f"redis-server on port {self.port} exited with {self._exit_code()}")
        with self.client() as client:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                return False  # not listening yet, or still loading its append-only file

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def client(self) -> redis.Redis:
        """A new client of this server (close it, or use it as a context manager)."""
        return redis.Redis(host=_HOST, port=self.port, socket_timeout=5, socket_connect_timeout=1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server gracefully (SIGTERM), killing it if it does not exit in time."""
        if self._process is not None:
            stop_process(self._process, timeout)
        self._process = None

    def kill(self) -> None:
        """Kills the server with SIGKILL, as a crash would."""
        if self._process is not None:
            kill_process(self._process)
        self._process = None

    def restart(self, *, crash: bool = False, downtime: float = 0.0) -> None:
        """Stops the server and starts it again on the same port and data directory.

        Args:
            crash: Kill it with SIGKILL instead of a graceful shutdown.
            downtime: Seconds to stay down before starting again.

        Raises:
            DeadlineExceeded: It did not come back in time.
        """
        if crash:
            self.kill()
        else:
            self.stop()
        time.sleep(downtime)
        self.start()

    def flush(self) -> None:
        """Deletes every key of every database (loaded scripts stay)."""
        with self.client() as client:
            client.flushall()

    def close(self) -> None:
        """Stops the server and removes its directory if it was a temporary one."""
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class LocalRedisCluster:
    """A private Redis Cluster of ``masters`` masters and no replicas, every node a :class:`LocalRedis`.

    Args:
        masters: How many master nodes share the 16384 slots (Redis Cluster needs at least 3).
        startup_timeout: Seconds to wait for each node, and for the cluster to report ``cluster_state:ok``.
        cli: The ``redis-cli`` that creates the cluster.
    """

    def __init__(self, masters: int = 3, *, startup_timeout: float = 30.0, cli: str = "redis-cli") -> None:
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, not {masters}")
        self._root = Path(tempfile.mkdtemp(prefix="cloudburst-redis-cluster-"))
        self._startup_timeout = startup_timeout
        self._cli = cli
        self.nodes = [
            LocalRedis(self._root / f"node{i}", cluster=True, startup_timeout=startup_timeout) for i in range(masters)
        ]

    @property
    def url(self) -> str:
        """The engine URL of the cluster (``redis+cluster://127.0.0.1:<port>,...``)."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def __enter__(self) -> LocalRedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Starts every node, joins them into one cluster and waits until every node reports it healthy.

        Raises:
            DeadlineExceeded: A node did not start, or the cluster did not become healthy in time.
            RuntimeError: ``redis-cli --cluster create`` failed (its output is in the message).
        """
        for node in self.nodes:
            node.start()
        addresses = [node.address for node in self.nodes]
        created = subprocess.run(
            [self._cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self._startup_timeout,
            check=False,
        )
        if created.returncode != 0:
            output = (created.stdout + created.stderr).decode(errors="replace")
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output[-4000:]}")
        _wait(self._healthy, self._startup_timeout, "the Redis Cluster did not report cluster_state:ok")

    def _healthy(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.cluster("INFO")
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def flush(self) -> None:
        """Deletes every key on every master."""
        for node in self.nodes:
            node.flush()

    def close(self) -> None:
        """Stops every node and removes their directories."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close()
        shutil.rmtree(self._root, ignore_errors=True)
