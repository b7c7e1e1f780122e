"""Running a KVS node as a child process: start it, wait until it listens, stop or kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudburst.errors import DeadlineExceeded
from cloudburst.kvs.server import KvsAddresses


class KvsProcess:
    """A KVS node in a child process, on free ports unless told otherwise.

    Args:
        data_dir: The node's data directory; ``None`` keeps data in memory.
        host: The address to bind.
        threads: Storage threads.
        routing_port: 0 for a free port.
        storage_port: 0 for free ports.
        startup_timeout: Seconds to wait for the node to listen.
    """

    def __init__(
        self,
        data_dir: Path | None,
        *,
        host: str = "127.0.0.1",
        threads: int = 1,
        routing_port: int = 0,
        storage_port: int = 0,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = data_dir
        self._args = [
            sys.executable,
            "-m",
            "cloudburst",
            "kvs",
            "--host",
            host,
            "--threads",
            str(threads),
            "--routing-port",
            str(routing_port),
            "--storage-port",
            str(storage_port),
            *(["--data-dir", str(data_dir)] if data_dir is not None else ["--in-memory"]),
        ]
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="cloudburst-kvs-")
        self.addresses: KvsAddresses | None = None

    def __enter__(self) -> KvsProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._workdir.cleanup()

    @property
    def routing(self) -> str:
        """The routing endpoint of the running node."""
        assert self.addresses is not None, "the KVS process is not running"
        return self.addresses.routing

    @property
    def pid(self) -> int:
        """The node's process id."""
        assert self._process is not None, "the KVS process is not running"
        return self._process.pid

    def start(self) -> KvsAddresses:
        """Starts the node and waits until it listens.

        Raises:
            DeadlineExceeded: It did not listen within the startup timeout (its output is in the message).
        """
        ready = Path(self._workdir.name) / "ready.json"
        ready.unlink(missing_ok=True)
        log = open(Path(self._workdir.name) / "kvs.log", "ab")  # noqa: SIM115 - the child writes to it
        self._process = subprocess.Popen([*self._args, "--ready-file", str(ready)], stdout=log, stderr=log)
        log.close()
        give_up = time.monotonic() + self._startup_timeout
        while not ready.exists():
            if self._process.poll() is not None or time.monotonic() > give_up:
                output = self.log_text()
                self.kill()
                raise DeadlineExceeded(f"the KVS process did not start; its output:\n{output}")
            time.sleep(0.01)
        self.addresses = KvsAddresses.from_json(ready.read_text())
        return self.addresses

    def log_text(self) -> str:
        """What the node has logged so far."""
        path = Path(self._workdir.name) / "kvs.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the node gracefully (SIGTERM), killing it if it does not exit in time."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Kills the node with SIGKILL, as a crash would."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None
