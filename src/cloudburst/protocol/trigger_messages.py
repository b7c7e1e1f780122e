"""Typed messages of storage-triggered calls (``trigger.proto``).

A :class:`TriggerSpec` is stored in the KVS; every write it matches makes the KVS node owe one run, a
:class:`TriggerFiring`, which travels KVS → scheduler → executor and ends with a :class:`TriggerAck` back to the
KVS node. Until the ack the node keeps the firing durably and redelivers it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudburst.protocol.messages import LatticeType

#: Seconds a triggered run may take before it is delivered again, by default.
DEFAULT_ACK_TIMEOUT = 30.0
#: Deliveries of one firing, by default, before it is set aside as dead.
DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """Run ``function`` on every write of ``key``, or of any key starting with ``prefix`` (exactly one is set).

    Attributes:
        schedulers: Internal endpoints of the schedulers that place the runs; redeliveries rotate through them.
        ack_timeout: Seconds a run may take before it is delivered again.
        max_attempts: Deliveries before the firing is set aside as dead.
    """

    name: str
    function: str
    schedulers: tuple[str, ...]
    key: str = ""
    prefix: str = ""
    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def matches(self, key: str) -> bool:
        """Whether a write of ``key`` fires this trigger."""
        return key == self.key if self.key else key.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class TriggerFiring:
    """One run a write owes: ``function(key, value)`` with the value as written (``lattice_type``/``payload``).

    Attributes:
        attempt: 1 on the first delivery.
        acknowledge_to: The KVS endpoint that takes the :class:`TriggerAck`.
        last_error: Why the last delivery failed, if it did.
    """

    id: str
    trigger: str
    function: str
    key: str
    lattice_type: LatticeType
    payload: bytes
    attempt: int = 1
    acknowledge_to: str = ""
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class TriggerAck:
    """The end of a run: it ran (``error`` empty), or it could not be placed or it raised ``error``."""

    id: str
    error: str = ""
