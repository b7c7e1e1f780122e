"""Storage triggers at the KVS node: which writes fire which functions, and the runs still owed.

A write that a trigger matches makes the node owe one run of the trigger's function. The node writes the owed run
(a :class:`TriggerFiring`) to its engine before it acknowledges the write, hands it to a scheduler, and keeps it
until an executor acknowledges the run. A run that is not acknowledged within the trigger's ``ack_timeout``, or
that fails, is delivered again (with growing pauses after failures), up to ``max_attempts`` deliveries; then it is
set aside as dead, where an operator can read it. So every acknowledged write gets at least one run, and a lost
message, a crashed executor or a restarted node costs a duplicate run, never a missing one.

This module is the bookkeeping only: no sockets, no storage, time passed in.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from cloudburst.protocol.messages import LatticeType
from cloudburst.protocol.trigger_messages import TriggerAck, TriggerFiring, TriggerSpec

logger = logging.getLogger(__name__)

#: Triggers registered at once; definitions beyond this are ignored (they come from the network).
MAX_TRIGGERS = 10_000
#: Pause before the first redelivery of a run that failed; doubled per failure up to :data:`MAX_RETRY_PAUSE`.
FIRST_RETRY_PAUSE = 0.2
MAX_RETRY_PAUSE = 10.0


@dataclass(frozen=True, slots=True)
class TriggerDispatch:
    """Deliver ``firing`` to the scheduler at ``address`` (a scheduler's internal endpoint)."""

    address: str
    firing: TriggerFiring


@dataclass(frozen=True, slots=True)
class DeadFiring:
    """A firing given up on after ``firing.attempt`` deliveries; ``reason`` says why."""

    firing: TriggerFiring
    reason: str


class TriggerRegistry:
    """The registered triggers, indexed for matching a written key.

    Exact-key triggers are found with one lookup; prefix triggers are tested one by one, which is cheap for the
    few a deployment has.
    """

    def __init__(self) -> None:
        self._specs: dict[str, TriggerSpec] = {}
        self._by_key: dict[str, dict[str, TriggerSpec]] = {}
        self._by_prefix: dict[str, TriggerSpec] = {}

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> TriggerSpec | None:
        """The trigger named ``name``, if registered."""
        return self._specs.get(name)

    def put(self, spec: TriggerSpec) -> bool:
        """Registers or replaces ``spec``; False when :data:`MAX_TRIGGERS` others are registered."""
        if spec.name not in self._specs and len(self._specs) >= MAX_TRIGGERS:
            logger.warning("ignored trigger %r: %d triggers are registered already", spec.name, MAX_TRIGGERS)
            return False
        self.remove(spec.name)
        self._specs[spec.name] = spec
        if spec.key:
            self._by_key.setdefault(spec.key, {})[spec.name] = spec
        else:
            self._by_prefix[spec.name] = spec
        return True

    def remove(self, name: str) -> None:
        """Forgets the trigger named ``name`` (nothing if unknown)."""
        spec = self._specs.pop(name, None)
        if spec is None:
            return
        if spec.key:
            same_key = self._by_key[spec.key]
            del same_key[name]
            if not same_key:
                del self._by_key[spec.key]
        else:
            del self._by_prefix[name]

    def matching(self, key: str) -> list[TriggerSpec]:
        """The triggers a write of ``key`` fires, by name."""
        found = list(self._by_key.get(key, {}).values())
        found.extend(spec for spec in self._by_prefix.values() if key.startswith(spec.prefix))
        return sorted(found, key=lambda spec: spec.name)


@dataclass(slots=True)
class _Owed:
    firing: TriggerFiring
    spec: TriggerSpec
    #: When it is delivered (again) unless acknowledged first.
    due: float
    #: Whether a delivery is outstanding (False while it waits out a retry pause).
    delivered: bool


class TriggerOutbox:
    """The runs a node owes, from the write to the acknowledgement.

    Args:
        acknowledge_to: The node's trigger endpoint, where executors acknowledge runs.
        new_id: Makes a firing id unique across the deployment and across restarts (a UUID).
    """

    def __init__(self, acknowledge_to: str, new_id: Callable[[], str]) -> None:
        self.acknowledge_to = acknowledge_to
        self._new_id = new_id
        self._owed: dict[str, _Owed] = {}
        #: (due, id) of every owed run; entries whose run was acknowledged or re-timed are skipped when popped.
        self._timeline: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """How many runs are owed."""
        return len(self._owed)

    def fire(self, spec: TriggerSpec, key: str, lattice_type: LatticeType, payload: bytes) -> TriggerFiring:
        """The run a write of ``key`` owes ``spec``; it is owed from now on, but delivered only by :meth:`deliver`."""
        return TriggerFiring(
            id=self._new_id(),
            trigger=spec.name,
            function=spec.function,
            key=key,
            lattice_type=lattice_type,
            payload=payload,
            acknowledge_to=self.acknowledge_to,
        )

    def deliver(self, firing: TriggerFiring, spec: TriggerSpec, now: float) -> TriggerDispatch:
        """Records ``firing`` as owed and delivered now; the returned dispatch is to be sent."""
        owed = _Owed(firing, spec, now + spec.ack_timeout, delivered=True)
        self._owed[firing.id] = owed
        heapq.heappush(self._timeline, (owed.due, firing.id))
        return self._dispatch(owed)

    def restore(self, firings: Iterable[TriggerFiring], registry: TriggerRegistry, now: float) -> list[DeadFiring]:
        """Takes back the runs a node owed before it restarted; they are delivered at the next :meth:`due`.

        Returns:
            The firings whose trigger is gone: nobody can run them any more.
        """
        dead = []
        for firing in firings:
            spec = registry.get(firing.trigger)
            if spec is None:
                dead.append(DeadFiring(firing, f"trigger {firing.trigger!r} no longer exists"))
                continue
            # Delivered or not before the restart, nobody will acknowledge the old delivery to this process.
            self._owed[firing.id] = _Owed(replace(firing, acknowledge_to=self.acknowledge_to), spec, now, False)
            heapq.heappush(self._timeline, (now, firing.id))
        return dead

    def acknowledge(self, ack: TriggerAck, now: float) -> TriggerFiring | DeadFiring | None:
        """Takes an executor's (or scheduler's) word on a run.

        Returns:
            The firing, done with, when the run succeeded; a :class:`DeadFiring` when it failed on its last
            attempt; ``None`` when the run will be retried, or the id is unknown (a duplicate acknowledgement).
        """
        owed = self._owed.get(ack.id)
        if owed is None:
            return None
        if not ack.error:
            del self._owed[ack.id]
            return owed.firing
        owed.firing = replace(owed.firing, last_error=ack.error)
        if owed.firing.attempt >= owed.spec.max_attempts:
            del self._owed[ack.id]
            return DeadFiring(owed.firing, ack.error)
        logger.info(
            "run %s of trigger %r failed (attempt %d): %s", ack.id, owed.spec.name, owed.firing.attempt, ack.error
        )
        pause = min(MAX_RETRY_PAUSE, FIRST_RETRY_PAUSE * 2 ** (owed.firing.attempt - 1))
        owed.due = now + pause
        owed.delivered = False
        heapq.heappush(self._timeline, (owed.due, ack.id))
        return None

    def due(self, now: float) -> tuple[list[TriggerDispatch], list[DeadFiring]]:
        """The redeliveries due by ``now``, and the runs that have used up their attempts."""
        dispatches: list[TriggerDispatch] = []
        dead: list[DeadFiring] = []
        while self._timeline and self._timeline[0][0] <= now:
            at, firing_id = heapq.heappop(self._timeline)
            owed = self._owed.get(firing_id)
            if owed is None or owed.due != at:
                continue
            if owed.delivered and owed.firing.attempt >= owed.spec.max_attempts:
                del self._owed[firing_id]
                dead.append(DeadFiring(owed.firing, f"no acknowledgement within {owed.spec.ack_timeout} s"))
                continue
            owed.firing = replace(owed.firing, attempt=owed.firing.attempt + 1)
            owed.delivered = True
            owed.due = now + owed.spec.ack_timeout
            heapq.heappush(self._timeline, (owed.due, firing_id))
            dispatches.append(self._dispatch(owed))
        return dispatches, dead

    def next_due(self) -> float | None:
        """When :meth:`due` next has something to do (possibly a stale entry), or ``None``."""
        return self._timeline[0][0] if self._timeline else None

    @staticmethod
    def _dispatch(owed: _Owed) -> TriggerDispatch:
        schedulers = owed.spec.schedulers
        # Each redelivery goes to the next scheduler, so one that is down cannot hold a run forever.
        return TriggerDispatch(schedulers[(owed.firing.attempt - 1) % len(schedulers)], owed.firing)
