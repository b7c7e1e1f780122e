"""The child side of a role process: announce readiness, serve until told to stop, clean up."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Protocol


class RoleServer(Protocol):
    """What every role's server offers to the process that runs it."""

    def ready_info(self) -> str:
        """What the ready file says (where the server listens), as JSON."""
        ...

    def serve_forever(self) -> int | None:
        """Serves until :meth:`stop`; returns an exit code, ``None`` meaning 0."""
        ...

    def stop(self) -> None:
        """Makes :meth:`serve_forever` return; safe from a signal handler."""
        ...

    def close(self) -> None:
        """Releases sockets and storage."""
        ...


def write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` so that a reader polling for ``path`` never sees it half-written."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def serve_until_signalled(server: RoleServer, ready_file: Path | None) -> int:
    """Runs ``server`` in the foreground until SIGTERM or SIGINT (or until it stops by itself).

    Args:
        server: A bound server.
        ready_file: Written once the server is bound, for the supervising parent.

    Returns:
        The process exit code.
    """

    def _stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready_file is not None:
            write_atomically(ready_file, server.ready_info())
        return server.serve_forever() or 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
