"""Public helpers for testing code that uses Cloudburst: a controllable clock, a KVS in a child process, and
waiting for what other processes do."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cloudburst.errors import DeadlineExceeded
from cloudburst.kvs.process import KvsProcess

_T = TypeVar("_T")


def wait_until(condition: Callable[[], _T], what: str, timeout: float = 30.0, interval: float = 0.05) -> _T:
    """Calls ``condition`` until it returns something true, and returns that.

    Args:
        condition: Polled every ``interval`` seconds.
        what: Names what is awaited, in the error.
        timeout: Seconds to wait at most.
        interval: Seconds between two calls.

    Raises:
        DeadlineExceeded: ``condition`` was still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


class FakeClock:
    """A clock that moves only when told to, for deterministic tests of time-dependent logic.

    Args:
        start: The initial monotonic time, in seconds.
        wall_start_ns: The initial wall-clock time, in nanoseconds since the epoch.
    """

    def __init__(self, start: float = 0.0, wall_start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now = start
        self._wall_offset_ns = wall_start_ns - int(start * 1e9)

    def now(self) -> float:
        """The current monotonic time."""
        return self._now

    def wall_ns(self) -> int:
        """The current wall-clock time; it moves with :meth:`advance` unless :meth:`set_wall_ns` steps it."""
        return self._wall_offset_ns + int(self._now * 1e9)

    def advance(self, seconds: float) -> None:
        """Moves time forward.

        Raises:
            ValueError: ``seconds`` is negative (monotonic time never goes back).
        """
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += seconds

    def set_wall_ns(self, wall_ns: int) -> None:
        """Steps the wall clock (for example backwards, as NTP may), leaving monotonic time alone."""
        self._wall_offset_ns = wall_ns - int(self._now * 1e9)


__all__ = ["FakeClock", "KvsProcess", "wait_until"]
