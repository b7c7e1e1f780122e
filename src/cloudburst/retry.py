"""Retry timing as a pure policy, so every retry loop in the package backs off the same tested way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait for one attempt and between attempts.

    Attributes:
        attempt_timeout: Seconds to wait for a reply before sending the request again.
        min_backoff: Pause before the second attempt.
        max_backoff: Longest pause between attempts.
        multiplier: Growth of the pause per attempt.
    """

    attempt_timeout: float = 1.0
    min_backoff: float = 0.005
    max_backoff: float = 0.5
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1 for the first)."""
        return min(self.max_backoff, self.min_backoff * self.multiplier ** max(0, attempt - 1))
