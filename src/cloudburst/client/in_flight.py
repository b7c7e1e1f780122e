"""The requests a connection sent and has no result for yet: what it places again when the process that took one
is lost. Pure (the connection's watchdog thread asks who is alive and acts on the answer).

A call sent straight to an executor (through a lease) is unknown to the scheduler, so only its caller can run it
again when that executor dies. A request placed through the scheduler is in the scheduler's ledger, which re-runs it
when an executor is lost, unless the scheduler itself restarts and forgets it: the caller places it again then.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cloudburst.protocol.runtime_messages import DagCall, FunctionCall

#: Requests without a result a connection remembers; beyond that it starts afresh rather than grow.
MAX_IN_FLIGHT = 100_000


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request in flight.

    Attributes:
        key: Where its result goes (what its future waits on).
        call: What to send again.
        executor: The executor's control endpoint it went to; empty when the scheduler placed it.
        incarnation: Which life of that executor (or of the scheduler) took it.
        sent_at: When it was sent (monotonic seconds).
    """

    key: str
    call: FunctionCall | DagCall
    executor: str
    incarnation: str
    sent_at: float

    @property
    def direct(self) -> bool:
        """Whether it went straight to an executor (else through the scheduler)."""
        return bool(self.executor)


class RequestsInFlight:
    """The connection's requests in flight, with the direct calls counted per executor (for placing the next)."""

    def __init__(self) -> None:
        self._requests: dict[str, SentRequest] = {}
        #: Direct calls in flight per executor endpoint.
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._requests)

    def sent(self, request: SentRequest) -> None:
        """Remembers a request just sent (replacing an earlier attempt under the same key)."""
        with self._lock:
            if len(self._requests) >= MAX_IN_FLIGHT:
                self._requests.clear()
                self.counts.clear()
            self._take(request.key)
            self._requests[request.key] = request
            if request.direct:
                self.counts[request.executor] = self.counts.get(request.executor, 0) + 1

    def done(self, key: str) -> SentRequest | None:
        """Forgets the request whose result arrived (or that was cancelled); returns it if it was in flight."""
        with self._lock:
            return self._take(key)

    def where(self, key: str) -> str | None:
        """The executor a direct call went to, while it is in flight (``None`` for other requests)."""
        with self._lock:
            request = self._requests.get(key)
            return request.executor if request is not None and request.direct else None

    def older_than(self, sent_before: float) -> list[SentRequest]:
        """The requests in flight sent before ``sent_before`` (monotonic seconds)."""
        with self._lock:
            return [request for request in self._requests.values() if request.sent_at < sent_before]

    def _take(self, key: str) -> SentRequest | None:
        request = self._requests.pop(key, None)
        if request is not None and request.direct:
            left = self.counts[request.executor] - 1
            if left:
                self.counts[request.executor] = left
            else:
                del self.counts[request.executor]
        return request
