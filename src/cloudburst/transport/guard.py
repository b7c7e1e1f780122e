"""What every server does with input it cannot trust: check reply addresses once, log rejections sparingly."""

from __future__ import annotations

import logging
import time
from collections import Counter

from cloudburst.transport.endpoints import ReplyPolicy

logger = logging.getLogger("cloudburst.rejected")

#: Each kind of rejection is logged at most this often (seconds); the rest are counted.
REJECT_LOG_INTERVAL = 60.0
_CHECKED_ADDRESSES = 4096


class RejectLog:
    """Logs each kind of rejected input at most once a minute, with a count of the ones not logged.

    Bad input must be visible, but a flood of it must not become a flood of log lines.
    """

    def __init__(self) -> None:
        self._suppressed: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self.total = 0

    def __call__(self, where: str, reason: str) -> None:
        """Records one rejection of input received at ``where``."""
        self.total += 1
        now = time.monotonic()
        if now - self._last.get(where, -REJECT_LOG_INTERVAL) < REJECT_LOG_INTERVAL:
            self._suppressed[where] += 1
            return
        if len(self._last) > _CHECKED_ADDRESSES:  # "where" may name peers: keep the map bounded
            self._last.clear()
        self._last[where] = now
        extra = f" ({self._suppressed.pop(where)} more since the last report)" if where in self._suppressed else ""
        logger.warning("rejected input (%s): %s%s", where, reason, extra)


class ReplyGate:
    """Checks reply addresses taken from requests against a :class:`ReplyPolicy`, each address once.

    Clients reuse one reply address for all their requests, so the check (address parsing) is cached.
    """

    def __init__(self, policy: ReplyPolicy) -> None:
        self._policy = policy
        self._checked: dict[str, str] = {}

    def check(self, address: str) -> str:
        """The canonical form of an allowed reply address.

        Raises:
            TransportError: The address is malformed or not allowed.
        """
        checked = self._checked.get(address)
        if checked is None:
            checked = self._policy.check(address)
            if len(self._checked) >= _CHECKED_ADDRESSES:
                self._checked.clear()
            self._checked[address] = checked
        return checked
