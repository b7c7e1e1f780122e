"""The requests a scheduler placed and not yet heard finished: what to run again when an executor is lost. Pure.

Each one-shot call and DAG request the scheduler places is entered with the executors it went to (and their
incarnations), until the executor that ends it -- the call's executor, the DAG's sink, or any stage that fails it --
reports it done (``ThreadStatus.finished``). When an executor is lost (it restarted, stopped reporting, or its node
went away), every entry that used it is run again, from the start, with a fresh attempt (a DAG request under a new
schedule id whose result still goes where the caller waits), up to the request's retry budget and before its
deadline; otherwise its caller gets :class:`~cloudburst.errors.ExecutorLost` naming each lost attempt.

Duplicates are harmless: a result is delivered under the request's key, and callers take the first (an attempt
wrongly taken for lost may still finish). The entries double as the scheduler's knowledge of which executors are
busy, and of where to send a cancellation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloudburst.protocol.runtime_messages import DEFAULT_MAX_RETRIES, DagCall, FunctionCall
from cloudburst.scheduler.policy import ExecutorId, location_string

#: Requests remembered at once; beyond that the oldest are forgotten (they are then neither retried nor counted).
MAX_ENTRIES = 100_000
#: Pause before the first try of a re-run that could not be placed (the lost executor's functions being pinned
#: again, say), doubled after each failure.
FIRST_RETRY_PAUSE = 0.1
MAX_RETRY_PAUSE = 2.0


@dataclass(slots=True)
class LedgerEntry:
    """One request in flight.

    Attributes:
        key: Where its result goes (a call's response key; a DAG request's output key, else its first id): what its
            caller waits on and cancels it by.
        call: What to send again: the call, or the DAG call (its output key set to ``key``).
        attempt_id: The current attempt's id (a DAG request's schedule id; a call's response key).
        executors: The current attempt's executors and their incarnations.
        attempt: The current attempt, from 1.
        max_retries: How many times it may run again.
        deadline: When its caller stops waiting (wall seconds; 0: never).
        losses: Per lost attempt, the executor and why it was lost.
        cancelled: Its caller cancelled it: never run again.
        retry_at: When to try placing a re-run again (monotonic), once it could not be placed.
        pause: The next back-off.
        unplaced: Why it could not be placed, the last time it could not.
    """

    key: str
    call: FunctionCall | DagCall
    attempt_id: str
    executors: dict[ExecutorId, str]
    attempt: int = 1
    max_retries: int = DEFAULT_MAX_RETRIES
    deadline: float = 0.0
    losses: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    retry_at: float | None = None
    pause: float = FIRST_RETRY_PAUSE
    unplaced: str = ""

    @property
    def one_shot(self) -> bool:
        """Whether it is a one-shot call (else a DAG request)."""
        return isinstance(self.call, FunctionCall)

    def may_retry(self, wall_now: float) -> bool:
        """Whether another attempt is allowed now."""
        in_time = not self.deadline or wall_now < self.deadline
        return not self.cancelled and in_time and self.attempt <= self.max_retries


class RequestLedger:
    """The requests in flight (see the module docstring), indexed by attempt id, result key and executor."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._by_attempt: OrderedDict[str, LedgerEntry] = OrderedDict()
        self._by_key: dict[str, LedgerEntry] = {}
        self._at: dict[ExecutorId, dict[str, None]] = {}
        #: Re-runs that could not be placed yet, by key, until their ``retry_at``.
        self._waiting: dict[str, LedgerEntry] = {}
        #: Entries forgotten because the ledger was full.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_attempt) + len(self._waiting)

    def add(self, entry: LedgerEntry) -> None:
        """Enters (or re-enters, after a re-run was placed) a request; one entered under the same attempt id before
        (a caller reusing a response key) is replaced."""
        replaced = self._by_attempt.get(entry.attempt_id)
        if replaced is not None:
            self._unindex(replaced)
        self._unindex(entry)
        self._waiting.pop(entry.key, None)
        entry.retry_at, entry.pause = None, FIRST_RETRY_PAUSE
        self._by_attempt[entry.attempt_id] = entry
        self._by_key[entry.key] = entry
        for eid in entry.executors:
            self._at.setdefault(eid, {})[entry.attempt_id] = None
        while len(self._by_attempt) > self.max_entries:
            _, oldest = self._by_attempt.popitem(last=False)
            self._unindex(oldest)
            self.evicted += 1

    def finish(self, attempt_ids: Iterable[str]) -> list[LedgerEntry]:
        """Forgets the requests whose attempts an executor reported done; returns them."""
        done = []
        for attempt_id in attempt_ids:
            entry = self._by_attempt.get(attempt_id)
            if entry is not None:
                self._unindex(entry)
                done.append(entry)
        return done

    def find(self, key: str) -> LedgerEntry | None:
        """The request whose result goes to ``key`` (or whose attempt id it is)."""
        return self._by_key.get(key) or self._by_attempt.get(key) or self._waiting.get(key)

    def wait(self, entry: LedgerEntry, now: float) -> None:
        """Holds a re-run that could not be placed, to be tried again after a back-off."""
        entry.retry_at = now + entry.pause
        entry.pause = min(entry.pause * 2, MAX_RETRY_PAUSE)
        self._waiting[entry.key] = entry

    def due(self, now: float) -> list[LedgerEntry]:
        """The held re-runs whose back-off is over, taken out (the caller places or fails them)."""
        due = [entry for entry in self._waiting.values() if entry.retry_at is not None and entry.retry_at <= now]
        for entry in due:
            del self._waiting[entry.key]
        return due

    def queued(self, eid: ExecutorId) -> int:
        """One-shot calls in flight at ``eid`` (an executor runs one at a time)."""
        return sum(1 for attempt_id in self._at.get(eid, ()) if self._by_attempt[attempt_id].one_shot)

    def check(self) -> None:
        """Asserts the indexes agree (for tests)."""
        for eid, attempts in self._at.items():
            for attempt_id in attempts:
                assert eid in self._by_attempt[attempt_id].executors, (eid, attempt_id)
        for entry in self._by_key.values():
            assert self._by_attempt.get(entry.attempt_id) is entry or entry.key in self._waiting

    def lose(self, eid: ExecutorId, reason: str) -> list[LedgerEntry]:
        """Takes out every request whose current attempt used ``eid``, recording the loss; the caller runs them again
        or fails them."""
        lost = []
        for attempt_id in list(self._at.get(eid, ())):
            entry = self._by_attempt[attempt_id]
            self._unindex(entry)
            entry.losses.append((location_string(eid), reason))
            lost.append(entry)
        return lost

    def _unindex(self, entry: LedgerEntry) -> None:
        if self._by_attempt.get(entry.attempt_id) is entry:
            del self._by_attempt[entry.attempt_id]
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]
        for eid in entry.executors:
            attempts = self._at.get(eid)
            if attempts is not None:
                attempts.pop(entry.attempt_id, None)
                if not attempts:
                    del self._at[eid]
