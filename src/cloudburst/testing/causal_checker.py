"""Finds causal anomalies in what requests read, from the requests' own records. Pure; no I/O.

Every value a workload writes names its write (a unique id) and the writes its request had observed when it
wrote (its direct causes). A request's record lists what it read: per read, the key, the stage (DAG function)
that read it, and the writes the value held (several when concurrent writes left siblings; none when the key did
not exist). From the causes the checker rebuilds happened-before and reports, per request:

* **missing cause**: it read a write whose causal past holds a write ``a`` of key ``k``, and it read ``k`` at a
  version that does not include ``a`` (an effect without its cause);
* **went backwards**: a later stage read a key at a version that does not include the version an earlier stage
  read (a downstream function saw an older version than an upstream one);
* **non-repeatable read**: it read one key twice, with no write of its own to the key in between, and got two
  different versions, so its reads were not one snapshot;
* **missed own write**: it read a key after writing it and got a version that does not include that write.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObservedWrite:
    """A write as a reader saw it: its id and the writes it directly depends on, as ``(key, write id)``."""

    write_id: str
    causes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedRead:
    """One read: ``stage`` (its position in the DAG, 0 first) read ``key`` and saw ``writes`` (none: missing).

    ``own`` lists the request's own writes of ``key`` made before the read (in this stage or upstream): the read
    must include them, and only reads after the same own writes must agree with each other.
    """

    stage: int
    key: str
    writes: tuple[ObservedWrite, ...]
    own: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request read, in order, and the writes it made (key, write) so their keys are known."""

    request_id: str
    reads: tuple[ObservedRead, ...]
    writes: tuple[tuple[str, ObservedWrite], ...] = ()


class AnomalyKind(enum.Enum):
    """The kinds of anomaly; see the module docstring."""

    MISSING_CAUSE = "missing cause"
    WENT_BACKWARDS = "went backwards"
    NON_REPEATABLE_READ = "non-repeatable read"
    MISSED_OWN_WRITE = "missed own write"


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly in one request."""

    kind: AnomalyKind
    request_id: str
    detail: str


class CausalChecker:
    """Collects request records and checks them against the happened-before relation of every write seen."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._causes: dict[str, frozenset[str]] = {}
        self._key_of: dict[str, str] = {}
        self._past: dict[str, frozenset[str]] = {}

    def add(self, record: RequestRecord) -> None:
        """Adds one request's record (and learns every write it mentions)."""
        self._records.append(record)
        for read in record.reads:
            for write in read.writes:
                self._learn(read.key, write)
        for key, write in record.writes:
            self._learn(key, write)

    def _learn(self, key: str, write: ObservedWrite) -> None:
        self._key_of[write.write_id] = key
        for cause_key, cause in write.causes:
            self._key_of.setdefault(cause, cause_key)
        causes = frozenset(cause for _, cause in write.causes)
        self._causes[write.write_id] = self._causes.get(write.write_id, frozenset()) | causes

    @property
    def requests(self) -> int:
        """How many records were added."""
        return len(self._records)

    def past(self, write_id: str) -> frozenset[str]:
        """Every write that happened before ``write_id`` (its transitive causes)."""
        cached = self._past.get(write_id)
        if cached is not None:
            return cached
        # Iterative post-order, so long causal chains do not exhaust the stack.
        stack: list[tuple[str, bool]] = [(write_id, False)]
        while stack:
            current, expanded = stack.pop()
            if current in self._past:
                continue
            causes = self._causes.get(current, frozenset())
            if expanded:
                past: set[str] = set(causes)
                for cause in causes:
                    past |= self._past.get(cause, frozenset())
                self._past[current] = frozenset(past)
                continue
            stack.append((current, True))
            stack.extend((cause, False) for cause in causes if cause not in self._past)
        return self._past[write_id]

    def _includes(self, writes: Iterable[ObservedWrite], needed: str) -> bool:
        return any(write.write_id == needed or needed in self.past(write.write_id) for write in writes)

    def check(self) -> list[Anomaly]:
        """Every anomaly in every record added so far."""
        anomalies: list[Anomaly] = []
        for record in self._records:
            anomalies.extend(self._check_record(record))
        return anomalies

    def _check_record(self, record: RequestRecord) -> list[Anomaly]:
        found: list[Anomaly] = []
        by_key: dict[str, list[ObservedRead]] = {}
        for read in record.reads:
            by_key.setdefault(read.key, []).append(read)
        for key, reads in by_key.items():
            epochs: dict[tuple[str, ...], set[frozenset[str]]] = {}
            for read in reads:
                epochs.setdefault(read.own, set()).add(frozenset(write.write_id for write in read.writes))
            for versions in epochs.values():
                if len(versions) > 1:
                    seen = " vs ".join(sorted(",".join(sorted(v)) or "missing" for v in versions))
                    found.append(Anomaly(AnomalyKind.NON_REPEATABLE_READ, record.request_id, f"{key}: {seen}"))
            for read in reads:
                for own in read.own:
                    if not self._includes(read.writes, own):
                        seen = ",".join(sorted(write.write_id for write in read.writes)) or "missing"
                        detail = f"{key}: stage {read.stage} wrote {own}, then read {seen}"
                        found.append(Anomaly(AnomalyKind.MISSED_OWN_WRITE, record.request_id, detail))
        for key, reads in by_key.items():
            for earlier in reads:
                for later in reads:
                    if later.stage <= earlier.stage:
                        continue
                    for write in earlier.writes:
                        if not self._includes(later.writes, write.write_id):
                            detail = f"{key}: stage {earlier.stage} read {write.write_id}, stage {later.stage} did not"
                            found.append(Anomaly(AnomalyKind.WENT_BACKWARDS, record.request_id, detail))
        own_writes = {write.write_id for _, write in record.writes}
        for read in record.reads:
            for write in read.writes:
                for needed in self.past(write.write_id):
                    needed_key = self._key_of.get(needed)
                    for other in by_key.get(needed_key or "", ()):
                        if self._includes(other.writes, needed):
                            continue
                        if needed in own_writes and needed not in other.own:
                            continue  # read before the request made that write
                        kind = AnomalyKind.MISSING_CAUSE
                        detail = (
                            f"stage {read.stage} read {read.key}={write.write_id}, which follows "
                            f"{needed_key}={needed}, but stage {other.stage} read {needed_key} without it"
                        )
                        found.append(Anomaly(kind, record.request_id, detail))
        return found


def summarize(anomalies: Iterable[Anomaly]) -> Mapping[AnomalyKind, int]:
    """Anomalies counted by kind (every kind present, zero included)."""
    counts = Counter(anomaly.kind for anomaly in anomalies)
    return {kind: counts.get(kind, 0) for kind in AnomalyKind}
