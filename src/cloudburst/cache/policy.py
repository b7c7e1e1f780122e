"""Which cached keys to evict: a small pure policy, so the cache's bookkeeping never hard-codes a rule.

The original cache dropped a fixed 10 least recently used keys per loop iteration once it held more than 1000 keys,
so a burst of inserts could leave it far over its bound, and it had no byte bound at all. A policy
here is asked after every insert and names exactly as many victims as it takes to get back under both bounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class EvictionPolicy(Protocol):
    """Chooses the keys to evict so that the cache fits its bounds again."""

    def victims(
        self, lru_order: Iterable[tuple[str, int]], key_count: int, held_bytes: int, max_keys: int, max_bytes: int
    ) -> list[str]:
        """The keys to evict, in eviction order.

        Args:
            lru_order: Every cached ``(key, size in bytes)``, least recently used first; consumed lazily, so a
                policy that stops early costs only what it reads.
            key_count: How many keys are cached.
            held_bytes: The sum of the cached sizes.
            max_keys: The most keys the cache may hold.
            max_bytes: The most bytes the cache may hold.

        Returns:
            Cached keys whose removal brings both the count and the bytes within their bounds.
        """
        ...


@dataclass(frozen=True, slots=True)
class LruEvictionPolicy:
    """Evicts least recently used keys first, as many as needed and no more."""

    def victims(
        self, lru_order: Iterable[tuple[str, int]], key_count: int, held_bytes: int, max_keys: int, max_bytes: int
    ) -> list[str]:
        """See :meth:`EvictionPolicy.victims`."""
        excess_keys = key_count - max_keys
        excess_bytes = held_bytes - max_bytes
        chosen: list[str] = []
        for key, size in lru_order:
            if excess_keys <= 0 and excess_bytes <= 0:
                break
            chosen.append(key)
            excess_keys -= 1
            excess_bytes -= size
        return chosen
