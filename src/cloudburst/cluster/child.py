"""One role (KVS, scheduler, executor) in a child process: start it, wait until it listens, stop or kill it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from cloudburst.errors import DeadlineExceeded

#: How :func:`cloudburst.transport.zmq.bind` words a port it cannot bind, as the role's error output shows it.
_BIND_ERROR = re.compile(r"cannot bind (?P<endpoint>tcp://\S+?)(?: \((?P<what>[^)]*)\))?: (?P<reason>[^\n]+)")


class ChildProcess:
    """A ``cloudburst <role>`` command in a child process.

    The child is told our pid and exits by itself if we die, so a crashed parent leaves no strays. It writes a
    ready file once its sockets are bound; :meth:`start` returns that file's content.

    Args:
        role_args: The arguments after ``cloudburst`` (role and its options).
        workdir: Where the ready file and the child's log go.
        name: Names the child in file names and errors.
        startup_timeout: Seconds to wait for the ready file.
    """

    def __init__(self, role_args: list[str], workdir: Path, name: str, startup_timeout: float = 30.0) -> None:
        self.name = name
        self._role_args = role_args
        self._workdir = workdir
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ready_file(self) -> Path:
        """Where the child reports that it listens."""
        return self._workdir / f"{self.name}.ready"

    @property
    def log_file(self) -> Path:
        """The child's combined output."""
        return self._workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        """The child's process id.

        Raises:
            RuntimeError: The child is not running.
        """
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def start(self) -> str:
        """Starts the child and waits until it listens.

        Returns:
            The ready file's content.

        Raises:
            DeadlineExceeded: It did not get ready in time or exited. The message's first line says why when the
                output tells (a port that cannot be bound, and what to do about it); the output's end follows.
        """
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "cloudburst", *self._role_args]
        command += ["--ready-file", str(self.ready_file), "--parent-pid", str(os.getpid())]
        with open(self.log_file, "ab") as log:
            # The log is appended to across restarts: only what follows this offset belongs to this start.
            offset = log.tell()
            self._process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        give_up = time.monotonic() + self._startup_timeout
        while not self.ready_file.exists():
            code = self._process.poll()
            if code is not None or time.monotonic() > give_up:
                self.kill()
                output = self.log_file.read_bytes()[offset:].decode(errors="replace")
                headline = bind_failure(self.name, output) or (
                    f"{self.name} exited with code {code} before it was ready"
                    if code is not None
                    else f"{self.name} was not ready within {self._startup_timeout:g} s"
                )
                raise DeadlineExceeded(f"{headline}\n\n{self.name}'s output ends with:\n{output[-4000:]}")
            time.sleep(0.01)
        return self.ready_file.read_text()

    def exit_code(self) -> int | None:
        """The child's exit code, or ``None`` while it runs (or was never started)."""
        return None if self._process is None else self._process.poll()

    def running(self) -> bool:
        """Whether the child is alive."""
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """What the child has logged so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def terminate(self) -> None:
        """Asks the child to stop (SIGTERM) without waiting, so several children stop in parallel."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the child gracefully (SIGTERM), killing it if it does not exit in time."""
        if self._process is not None:
            stop_process(self._process, timeout)
        self._process = None

    def kill(self) -> None:
        """Kills the child with SIGKILL, as a crash would."""
        if self._process is not None:
            kill_process(self._process)
        self._process = None


def bind_failure(name: str, output: str) -> str | None:
    """What to tell the user when a role's output shows it could not bind a port; ``None`` if it does not.

    Args:
        name: The role, as its :class:`ChildProcess` is named.
        output: What the role printed (its error names the address, e.g. ``cannot bind tcp://h:5000 (...): ...``).
    """
    found = _BIND_ERROR.search(output)
    if found is None:
        return None
    what = f" ({found['what']})" if found["what"] else ""
    return (
        f"{name} cannot listen on {found['endpoint']}{what}: {found['reason']}. Stop what listens there "
        "(`cloudburst down` stops a cluster started with `cloudburst up --detach`), or use another address with "
        "--host (every 127.x.y.z is this machine)"
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stops ``process`` gracefully (SIGTERM) and reaps it, killing it if it does not exit within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_process(process)
    process.wait()


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """Kills ``process`` with SIGKILL, as a crash would, and reaps it."""
    if process.poll() is None:
        process.kill()
    process.wait()
