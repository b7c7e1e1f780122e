"""A KVS node in a child process, on free ports unless told otherwise (for tests, benchmarks and the demo)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cloudburst.cluster.child import ChildProcess
from cloudburst.kvs.server import KvsAddresses


class KvsProcess:
    """A KVS node in a child process.

    Args:
        data_dir: The node's data directory; ``None`` keeps data in memory (unless ``engine`` is given).
        host: The address to bind.
        threads: Storage threads.
        routing_port: 0 for a free port.
        storage_port: 0 for free ports.
        trigger_port: Where storage triggers' runs are acknowledged; 0 for a free port.
        startup_timeout: Seconds to wait for the node to listen.
        engine: A Redis engine URL to store in instead of ``data_dir`` (``cloudburst kvs --engine``).
    """

    def __init__(
        self,
        data_dir: Path | None,
        *,
        host: str = "127.0.0.1",
        threads: int = 1,
        routing_port: int = 0,
        storage_port: int = 0,
        trigger_port: int = 0,
        startup_timeout: float = 30.0,
        engine: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self._workdir = tempfile.TemporaryDirectory(prefix="cloudburst-kvs-")
        self._child = ChildProcess(
            [
                "kvs",
                "--host",
                host,
                "--threads",
                str(threads),
                "--routing-port",
                str(routing_port),
                "--storage-port",
                str(storage_port),
                "--trigger-port",
                str(trigger_port),
                *_storage_args(data_dir, engine),
            ],
            Path(self._workdir.name),
            "kvs",
            startup_timeout,
        )
        self.addresses: KvsAddresses | None = None

    def __enter__(self) -> KvsProcess:
        try:
            self.start()
        except BaseException:
            self._workdir.cleanup()  # __exit__ is not called when __enter__ raises
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._workdir.cleanup()

    @property
    def routing(self) -> str:
        """The routing endpoint of the running node.

        Raises:
            RuntimeError: The node has not been started.
        """
        if self.addresses is None:
            raise RuntimeError("the KVS process has not been started")
        return self.addresses.routing

    @property
    def pid(self) -> int:
        """The node's process id."""
        return self._child.pid

    def start(self) -> KvsAddresses:
        """Starts the node and waits until it listens.

        Raises:
            DeadlineExceeded: It did not listen in time (its output is in the message).
        """
        self.addresses = KvsAddresses.from_json(self._child.start())
        return self.addresses

    def log_text(self) -> str:
        """What the node has logged so far."""
        return self._child.log_text()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the node gracefully, killing it if it does not exit in time."""
        self._child.stop(timeout)

    def kill(self) -> None:
        """Kills the node with SIGKILL, as a crash would."""
        self._child.kill()


def _storage_args(data_dir: Path | None, engine: str | None) -> list[str]:
    if engine is not None:
        return ["--engine", engine]
    return ["--data-dir", str(data_dir)] if data_dir is not None else ["--in-memory"]
