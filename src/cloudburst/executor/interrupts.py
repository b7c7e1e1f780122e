"""Stopping user code that runs too long: cancellation and deadlines that bind.

User code runs inline on the executor's main thread, so whatever stops it comes from another thread (the sentinel,
:mod:`cloudburst.executor.sentinel`). :class:`Interrupter` is their meeting point:

* The main thread runs each invocation inside :meth:`Interrupter.invocation`, naming the requests it serves and
  their deadline.
* The sentinel calls :meth:`Interrupter.cancel` when a cancellation arrives and :meth:`Interrupter.expire` as time
  passes. If the running invocation serves a cancelled request or outlived its deadline, an exception is raised in
  the main thread at its next bytecode (:func:`ctypes.pythonapi.PyThreadState_SetAsyncExc`); a signal wakes it
  from a blocking call first when it is the process's main thread. Code stuck in C for longer than the grace
  period is beyond that: the sentinel then ends the process, which the node's supervisor restarts. C code that
  also keeps the interpreter lock (a runaway regular expression, say) starves the sentinel too; for it, each
  invocation with a deadline arms the process's real-time interval timer (``setitimer``) with ``SIGALRM`` left at
  its default action: the kernel ends the process at the deadline plus the grace period, with no Python code
  involved (a cancellation cannot reach such code before that). Arming and disarming are two system calls;
  :func:`faulthandler.dump_traceback_later`, which would do the same, starts and joins a thread each time, which
  cost a fifth of a null call.
* Requests cancelled before they start are remembered (for a while, bounded), so their queued work never starts.

The exception raised is :class:`InvocationInterrupted`, a ``BaseException`` so that user code's ``except
Exception`` does not swallow it; the runtime turns it into the caller's :class:`~cloudburst.errors.Cancelled` or
:class:`~cloudburst.errors.DeadlineExceeded`.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cloudburst.clock import Clock
from cloudburst.errors import Cancelled, CloudburstError, DeadlineExceeded

#: Cancelled request ids remembered at once (the oldest are forgotten first).
MAX_CANCELLED = 10_000
#: Seconds a cancellation is remembered: work for the request arriving later than this is not expected.
CANCELLED_TTL = 600.0
#: Woken from a blocking call by this signal, the main thread notices the pending exception.
WAKE_SIGNAL = signal.SIGUSR1
#: Left at its default action (the kernel ends the process), this signal is the hard stop.
HARD_STOP_SIGNAL = signal.SIGALRM
#: The furthest deadline the hard stop is armed for (seconds); later ones are stopped by the sentinel only.
MAX_HARD_STOP = 7 * 24 * 3600.0


_Result = TypeVar("_Result")


class InvocationInterrupted(BaseException):
    """Raised in the main thread to stop an invocation; see the module docstring."""


@dataclass(slots=True)
class _Running:
    requests: tuple[str, ...]
    deadline: float
    started: float
    #: Why it was interrupted (the error the caller gets), once it was.
    reason: CloudburstError | None = None
    interrupted_at: float = 0.0


class Interrupter:
    """Where the main thread's invocations and the sentinel's interruptions meet (see the module docstring).

    Args:
        clock: Monotonic time of the invocations' starts.
        hard_stop_after: With a value, an invocation still running this many seconds past its deadline ends the
            process, even stuck in C holding the interpreter lock (only for an executor that is a process of its own).
    """

    def __init__(self, clock: Clock, hard_stop_after: float | None = None) -> None:
        self._clock = clock
        self._hard_stop_after = hard_stop_after
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._running: _Running | None = None
        self._cancelled: OrderedDict[str, float] = OrderedDict()
        self._can_wake = False

    def attach(self) -> None:
        """Makes the calling thread the one whose invocations are stopped (the loop calls it as it starts).

        In the process's main thread, the wake signal also interrupts blocking calls.
        """
        self._thread_id = threading.get_ident()
        self._can_wake = threading.current_thread() is threading.main_thread()
        if self._can_wake:
            signal.signal(WAKE_SIGNAL, lambda signum, frame: None)
            if self._hard_stop_after is not None:
                signal.signal(HARD_STOP_SIGNAL, signal.SIG_DFL)

    # -- the main thread -------------------------------------------------------------------------------------------

    def refusal(self, requests: Iterable[str], deadline: float, now: float) -> CloudburstError | None:
        """Why work for ``requests`` must not start at all: one was cancelled, or the deadline passed."""
        with self._lock:
            cancelled = next((r for r in requests if r in self._cancelled), None)
        if cancelled is not None:
            return Cancelled(f"request {cancelled} was cancelled before it ran here", request_id=cancelled)
        if deadline and now >= deadline:
            return DeadlineExceeded("the request's deadline passed before it ran here")
        return None

    def call(
        self,
        requests: tuple[str, ...],
        deadline: float,
        function: Callable[..., _Result],
        *arguments: object,
    ) -> _Result:
        """Calls ``function`` as the invocation serving ``requests`` (until ``deadline``, wall seconds; 0: none).

        A plain method rather than a context manager: it runs once per call on the hot path.

        Raises:
            Cancelled: A request it serves was cancelled while it ran.
            DeadlineExceeded: It ran past its deadline.
        """
        running = _Running(requests, deadline, self._clock.now())
        with self._lock:
            self._running = running
        armed = bool(deadline) and self._hard_stop_after is not None and self._can_wake
        try:
            try:
                if armed:
                    assert self._hard_stop_after is not None
                    left = min(max(deadline - time.time(), 0.0), MAX_HARD_STOP) + self._hard_stop_after
                    signal.setitimer(signal.ITIMER_REAL, left)
                return function(*arguments)
            finally:
                # The exception may still land while leaving (it is raised at any bytecode): leave until it is done.
                while True:
                    try:
                        self._leave(running)
                        break
                    except InvocationInterrupted:
                        pass
                if armed:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except InvocationInterrupted:
            pass
        assert running.reason is not None
        raise running.reason

    def _leave(self, running: _Running) -> None:
        with self._lock:
            if self._running is running:
                self._running = None
                if running.reason is not None:
                    # Not raised yet if the block ended first: then never.
                    _set_async_exception(self._thread_id, None)

    # -- the sentinel ----------------------------------------------------------------------------------------------

    def cancel(self, request_id: str, now: float) -> bool:
        """Cancels a request: remembered so its queued work never starts, and its running invocation interrupted.

        Returns:
            Whether an invocation was interrupted.
        """
        with self._lock:
            self._cancelled[request_id] = now
            self._cancelled.move_to_end(request_id)
            while len(self._cancelled) > MAX_CANCELLED or (
                self._cancelled and now - next(iter(self._cancelled.values())) > CANCELLED_TTL
            ):
                self._cancelled.popitem(last=False)
            running = self._running
            if running is None or request_id not in running.requests or running.reason is not None:
                return False
            self._interrupt(running, Cancelled(f"request {request_id} was cancelled", request_id=request_id), now)
            return True

    def expire(self, wall_now: float, now: float) -> bool:
        """Interrupts the running invocation if it outlived its deadline (``wall_now`` in wall seconds).

        Returns:
            Whether it was interrupted now.
        """
        with self._lock:
            running = self._running
            if running is None or not running.deadline or wall_now < running.deadline or running.reason is not None:
                return False
            self._interrupt(running, DeadlineExceeded("the request ran past its deadline and was stopped"), now)
            return True

    def busy_since(self) -> float | None:
        """When the running invocation started (``None`` when none runs)."""
        with self._lock:
            return self._running.started if self._running is not None else None

    def stuck_since(self) -> float | None:
        """When the running invocation was interrupted, if it still runs (``None`` otherwise)."""
        with self._lock:
            running = self._running
            return running.interrupted_at if running is not None and running.reason is not None else None

    def _interrupt(self, running: _Running, reason: CloudburstError, now: float) -> None:
        running.reason = reason
        running.interrupted_at = now
        _set_async_exception(self._thread_id, InvocationInterrupted)
        if self._can_wake:
            signal.pthread_kill(self._thread_id, WAKE_SIGNAL)


def _set_async_exception(thread_id: int, exception: type[BaseException] | None) -> None:
    """Raises ``exception`` in thread ``thread_id`` at its next bytecode (``None`` cancels a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception is not None else None
    )
