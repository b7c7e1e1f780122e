"""Calls whose arguments include futures not resolved yet: the client, which owns those futures, sends such a call
the moment the last of their results arrives, with small results inline.

Sending it at once instead, with the futures as references, routes it through the scheduler and leaves its executor
polling the KVS with back-off until the upstream result is stored: a hop and a store more, and a tail of tens of
milliseconds. Here the upstream result reaches the caller as it always does (pushed), and the call that takes it
goes straight to an executor, as any other call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cloudburst.client.future import Future
from cloudburst.protocol.messages import SerializerType
from cloudburst.protocol.runtime_messages import EncodedValue

#: Results up to this size (bytes) travel inside the calls that take them; larger ones go by reference, read where
#: they are cached (and the call placed near them).
INLINE_LIMIT = 100 * 1024
#: Seconds a call waits before its late dependencies are first looked for in the KVS.
FIRST_CHECK = 1.0


def inline_value(future: Future) -> EncodedValue | None:
    """The result of ``future`` to pass inline to a call (``None``: pass a reference to it).

    An error is never inlined (a NORMAL call taking one fails at the client with it, unsent).
    """
    value = future.encoded()
    if value is None or value.serializer == SerializerType.ERROR or len(value.body) > INLINE_LIMIT:
        return None
    return value


@dataclass(slots=True)
class WaitingCall:
    """A call waiting for the results of some of its arguments.

    Attributes:
        key: The call's result key.
        dependencies: The futures it waits for.
        since: When it was made (monotonic seconds).
        deadline: The call's deadline (wall seconds; 0: none): still waiting then, it fails.
    """

    key: str
    dependencies: tuple[Future, ...]
    since: float
    deadline: float = 0.0
    _pending: int = 0
    _next_check: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._pending = len(self.dependencies)
        self._next_check = self.since + FIRST_CHECK

    def one_ready(self) -> bool:
        """Counts one dependency resolved; True for the last one (exactly once)."""
        with self._lock:
            self._pending -= 1
            return self._pending == 0

    def check_due(self, now: float) -> bool:
        """Whether its late dependencies are to be looked for in the KVS now; if so, the next look is due when it
        will have waited twice as long."""
        if now < self._next_check:
            return False
        self._next_check = now + (now - self.since)
        return True

    def late(self) -> Sequence[Future]:
        """The dependencies still unresolved."""
        return [future for future in self.dependencies if not future.done()]


class WaitingCalls:
    """The calls of one connection waiting for their arguments, by result key."""

    def __init__(self) -> None:
        self._calls: dict[str, WaitingCall] = {}
        self._lock = threading.Lock()

    def wait(self, call: WaitingCall, send: Callable[[], None]) -> None:
        """Runs ``send`` (in the thread that resolves the last dependency) once every dependency is resolved."""
        with self._lock:
            self._calls[call.key] = call

        def one_ready() -> None:
            if call.one_ready():
                with self._lock:
                    self._calls.pop(call.key, None)
                send()

        for future in call.dependencies:
            future.when_done(one_ready)

    def due(self, now: float) -> list[WaitingCall]:
        """The calls waiting long enough that their late dependencies are checked in the KVS now (in case a
        notification was lost): after ``FIRST_CHECK`` seconds, then at doubling intervals."""
        with self._lock:
            return [call for call in self._calls.values() if call.check_due(now)]

    def expired(self, now: float) -> list[WaitingCall]:
        """Takes the calls whose deadline passed (``now`` in wall seconds) while they waited: they are not sent."""
        with self._lock:
            expired = [call for call in self._calls.values() if call.deadline and now >= call.deadline]
            for call in expired:
                del self._calls[call.key]
        return expired

    def __len__(self) -> int:
        return len(self._calls)
