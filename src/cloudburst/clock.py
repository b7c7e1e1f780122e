"""Time sources, injected everywhere a decision depends on time.

Cores and policies take a :class:`Clock` instead of calling :mod:`time`, so tests drive them with
:class:`cloudburst.testing.FakeClock` and never sleep.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the current time comes from."""

    def now(self) -> float:
        """Monotonic seconds, for deadlines and periods."""
        ...

    def wall_ns(self) -> int:
        """Wall-clock nanoseconds since the Unix epoch, for timestamps users see."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def wall_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch."""
        return time.time_ns()


#: Low bits of an LWW timestamp that hold the writer id.
WRITER_BITS = 12
_WRITER_MASK = (1 << WRITER_BITS) - 1
#: Microseconds must fit in the remaining 52 bits of the uint64 wire field (until the year 2112).
_MAX_MICROS = (1 << (64 - WRITER_BITS)) - 1


def writer_id_for(name: str) -> int:
    """Derives a stable writer id (12 bits) from a node or client name.

    Collisions only make two writers' same-microsecond writes fall back to the value tie-break; they never break
    convergence.
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") & _WRITER_MASK


class TimestampGenerator:
    """Issues LWW timestamps: wall-clock microseconds with the writer id in the low bits.

    Timestamps from one generator strictly increase even if the wall clock stalls or steps back (each is at least
    one microsecond after the previous), and two writers never issue the same timestamp unless their ids collide.
    Thread-safe, since client threads share one generator.

    Args:
        writer_id: This writer's id, ``0 <= writer_id < 2**12``.
        clock: The wall-clock source.

    Raises:
        ValueError: ``writer_id`` is out of range.
    """

    def __init__(self, writer_id: int, clock: Clock | None = None) -> None:
        if not 0 <= writer_id <= _WRITER_MASK:
            raise ValueError(f"writer id {writer_id} is outside 0..{_WRITER_MASK}")
        self._writer_id = writer_id
        self._clock = clock or SystemClock()
        self._last_micros = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        """The next timestamp."""
        micros = self._clock.wall_ns() // 1000
        with self._lock:
            micros = max(micros, self._last_micros + 1)
            self._last_micros = micros
        return (min(micros, _MAX_MICROS) << WRITER_BITS) | self._writer_id


def split_timestamp(timestamp: int) -> tuple[int, int]:
    """Splits an LWW timestamp into ``(microseconds since the epoch, writer id)``."""
    return timestamp >> WRITER_BITS, timestamp & _WRITER_MASK


#: Microseconds of logical time each function of a request writes in: a function's writes are stamped after every
#: write of the functions upstream of it, and up to this many writes of one run get distinct timestamps.
STAGE_SPAN = 4096


class RequestTimestamps:
    """The LWW timestamps of one run of one function of a request: repeatable, so a retry's write is the same write.

    A request is stamped when it is first placed; the ``n``-th write of the function at depth ``d`` of its DAG is
    stamped ``stamp + d * STAGE_SPAN + n`` microseconds, with a writer id derived from the request's key. A run
    again after its executor was lost (or after an exception its caller asked to retry) writes with exactly the
    timestamps of the lost run, so it cannot overwrite a value someone else wrote since the request started, as
    a freshly stamped write would; and writes downstream in the request still win over writes upstream.

    Args:
        stamp: When the request was first placed (microseconds since the epoch).
        depth: The function's depth in the DAG (0 for a one-shot call).
        request: The request's key (what its result goes under).
    """

    def __init__(self, stamp: int, depth: int, request: str) -> None:
        self._base = stamp + depth * STAGE_SPAN
        self._request = request
        self._writer_id: int | None = None  # derived at the first write: most runs write nothing
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        """The next write's timestamp (the last one repeats once a run has written ``STAGE_SPAN`` times)."""
        with self._lock:
            offset = min(self._count, STAGE_SPAN - 1)
            self._count += 1
            if self._writer_id is None:
                self._writer_id = writer_id_for(self._request)
        return (min(self._base + offset, _MAX_MICROS) << WRITER_BITS) | self._writer_id
