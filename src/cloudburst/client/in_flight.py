"""The requests a connection sent and has no result for yet: what it places again when the process that took one
is lost. Pure (the connection's watchdog thread asks who is alive and acts on the answer).

A call or DAG request sent straight to executors (through a lease) is unknown to the scheduler, so only its caller
can run it again when one of those executors dies. A request placed through the scheduler is in the scheduler's
ledger, which re-runs it when an executor is lost, unless the scheduler itself restarts and forgets it: the caller
places it again then.
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
        executors: The control endpoint of each executor it went to, with the incarnation (life) of that executor
            when it did; empty when the scheduler placed it.
        incarnation: Which life of the scheduler placed it (empty for a direct request).
        sent_at: When it was sent (monotonic seconds).
        after_direct: It went through the scheduler after a direct attempt, whose late refusal (``NotPinned``,
            from an executor that restarted since the lease) is not its answer.
    """

    key: str
    call: FunctionCall | DagCall
    executors: tuple[tuple[str, str], ...]
    incarnation: str
    sent_at: float
    after_direct: bool = False

    @property
    def direct(self) -> bool:
        """Whether it went straight to executors (else through the scheduler)."""
        return bool(self.executors)


class RequestsInFlight:
    """The connection's requests in flight, with the direct ones counted per executor (for placing the next)."""

    def __init__(self) -> None:
        self._requests: dict[str, SentRequest] = {}
        #: Direct requests in flight per executor endpoint.
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
            for executor, _ in request.executors:
                self.counts[executor] = self.counts.get(executor, 0) + 1

    def done(self, key: str) -> SentRequest | None:
        """Forgets the request whose result arrived (or that was cancelled); returns it if it was in flight."""
        with self._lock:
            return self._take(key)

    def swap(self, old: SentRequest, new: SentRequest) -> bool:
        """Replaces ``old`` with ``new`` (the same key) if ``old`` is still in flight; whether it was. Placing a
        request again starts with this, so that it is placed once, and a late answer of the old attempt still
        finds what it belonged to."""
        with self._lock:
            if self._requests.get(old.key) is not old:
                return False
            self._take(old.key)
            self._requests[new.key] = new
            for executor, _ in new.executors:
                self.counts[executor] = self.counts.get(executor, 0) + 1
            return True

    def find(self, key: str) -> SentRequest | None:
        """The request in flight under ``key``, if any."""
        with self._lock:
            return self._requests.get(key)

    def where(self, key: str) -> tuple[str, ...]:
        """The executors a direct request went to, while it is in flight (none for other requests)."""
        with self._lock:
            request = self._requests.get(key)
            return tuple(executor for executor, _ in request.executors) if request is not None else ()

    def older_than(self, sent_before: float) -> list[SentRequest]:
        """The requests in flight sent before ``sent_before`` (monotonic seconds)."""
        with self._lock:
            return [request for request in self._requests.values() if request.sent_at < sent_before]

    def _take(self, key: str) -> SentRequest | None:
        request = self._requests.pop(key, None)
        for executor, _ in request.executors if request is not None else ():
            left = self.counts[executor] - 1
            if left:
                self.counts[executor] = left
            else:
                del self.counts[executor]
        return request
