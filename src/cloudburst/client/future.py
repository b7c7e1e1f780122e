"""Futures for call results: resolved by a pushed notification, checked against the KVS as a fallback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from cloudburst.errors import DeadlineExceeded
from cloudburst.protocol.messages import SerializerType
from cloudburst.protocol.runtime_messages import EncodedValue
from cloudburst.protocol.values import decode

#: Pause before the first KVS check for a result whose notification has not arrived, doubling after each check.
_FIRST_FALLBACK_CHECK = 1.0
_FILL_LOCK = threading.Lock()


class ResultSlot:
    """Where the result of one request lands; filled by the client's receiver thread."""

    __slots__ = ("_callbacks", "_event", "value")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.value: EncodedValue | None = None
        self._callbacks: list[Callable[[], None]] | None = None

    def fill(self, value: EncodedValue) -> bool:
        """Stores the result and wakes every waiter; the first value wins (a request run again after its executor
        was lost may answer twice, and a cancelled one keeps its cancellation).

        Returns:
            Whether this value was taken.
        """
        with _FILL_LOCK:  # the receiver thread and a cancelling caller may race
            if self.value is not None:
                return False
            self.value = value
            callbacks, self._callbacks = self._callbacks, None
        self._event.set()
        for callback in callbacks or ():
            callback()
        return True

    def when_filled(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the result is there: at once if it is, else in the thread that fills the slot
        (so it must be quick and must not raise)."""
        with _FILL_LOCK:
            if self.value is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback()

    def filled(self) -> bool:
        """Whether the result is there."""
        return self.value is not None

    def wait(self, seconds: float) -> bool:
        """Waits up to ``seconds`` for the result; True once it is there."""
        return self._event.wait(seconds)


class Future:
    """The eventual result of a function or DAG call.

    The executor pushes the result to the client as soon as it is computed, so waiting costs no polling. A result
    that is also stored (``stored``) is read from the KVS as a fallback, with growing pauses, should the
    notification be late. A call's result is stored only when it is passed on by reference (see
    :mod:`cloudburst.client.waiting`).

    Args:
        obj_id: The request's result key.
        slot: Filled when the result notification arrives.
        fetch: Reads the stored result from the KVS (``None`` while absent).
        default_timeout: Deadline of :meth:`get` and of :meth:`result` without a timeout.
        release: Called once the result is taken, so the client forgets the slot.
        cancel: Asks the cluster to stop the request (see :meth:`cancel`).
        stored: Whether the result is stored in the KVS under ``obj_id`` too (or will be).
    """

    def __init__(
        self,
        obj_id: str,
        slot: ResultSlot,
        fetch: Callable[[], EncodedValue | None],
        default_timeout: float,
        release: Callable[[], None],
        cancel: Callable[[], bool] | None = None,
        *,
        stored: bool = True,
    ) -> None:
        self.obj_id = obj_id
        self.stored = stored
        self._slot = slot
        self._fetch = fetch
        self._default_timeout = default_timeout
        self._release = release
        self._cancel = cancel

    def cancel(self) -> bool:
        """Stops the request: work not started is dropped, running work is interrupted (an executor whose code does
        not stop within its grace period is restarted), and a DAG's later stages never start. :meth:`result` then
        raises :class:`~cloudburst.errors.Cancelled`.

        Returns:
            False when the result had already arrived (nothing is stopped then), else True.
        """
        if self._cancel is None or self.done():
            return False
        return self._cancel()

    def __repr__(self) -> str:
        return f"Future({self.obj_id!r}, done={self.done()})"

    def done(self) -> bool:
        """Whether the result notification has arrived."""
        return self._slot.value is not None

    def failed(self) -> bool:
        """Whether the result is there and is an error."""
        value = self._slot.value
        return value is not None and value.serializer == SerializerType.ERROR

    def encoded(self) -> EncodedValue | None:
        """The result as it arrived (``None`` until it has), for passing it on without decoding it."""
        return self._slot.value

    def wait_encoded(self, timeout: float) -> EncodedValue:
        """Waits for the result as it arrives, without decoding it; a stored result is read with growing pauses
        should its notification be late.

        Raises:
            DeadlineExceeded: No result within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        pause = _FIRST_FALLBACK_CHECK
        while self._slot.value is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"no result for request {self.obj_id!r} in time", request_id=self.obj_id)
            if self._slot.wait(min(pause, remaining)) or self.check_stored():
                break
            pause *= 2
        assert self._slot.value is not None
        return self._slot.value

    def when_done(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the result is there (see :meth:`ResultSlot.when_filled`)."""
        self._slot.when_filled(callback)

    def check_stored(self) -> bool:
        """Reads the stored result, for when its notification is late; True once the result is there."""
        if self._slot.value is None and self.stored:
            stored = self._fetch()
            if stored is not None:
                self._slot.fill(stored)
        return self._slot.value is not None

    def result(self, timeout: float | None = None) -> Any:  # noqa: ANN401 - the user function's result
        """Waits for and returns the result.

        Args:
            timeout: Seconds to wait; the connection's default when ``None``.

        Raises:
            RemoteExecutionError: The function raised (the remote traceback is attached).
            DeadlineExceeded: No result within the timeout.
        """
        value = self.wait_encoded(self._default_timeout if timeout is None else timeout)
        self._release()
        return decode(value, f"result of request {self.obj_id!r}")

    def get(self) -> Any:  # noqa: ANN401 - the user function's result
        """The result, waiting up to the connection's default timeout (the original API's name).

        Raises:
            RemoteExecutionError: The function raised.
            DeadlineExceeded: No result in time.
        """
        return self.result()

    async def result_async(self, timeout: float | None = None) -> Any:  # noqa: ANN401, ASYNC109 - a remote deadline
        """Awaits the result without blocking the event loop.

        Raises:
            RemoteExecutionError: The function raised.
            DeadlineExceeded: No result within the timeout.
        """
        return await asyncio.to_thread(self.result, timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result_async().__await__()
