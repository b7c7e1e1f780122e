"""Consistent hashing of keys onto storage threads.

A stable hash (BLAKE2b) replaces the original's ``std::hash``, whose values differ between builds and languages,
so every component computes the same owners.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

_T = TypeVar("_T", bound=Hashable)

#: Virtual positions per member: enough to spread keys evenly over a handful of members.
VIRTUAL_NODES = 256


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing(Generic[_T]):
    """Maps keys to an ordered list of distinct members.

    Args:
        members: The members; their ``str`` form names their ring positions.
        virtual_nodes: Ring positions per member.

    Raises:
        ValueError: There are no members.
    """

    def __init__(self, members: Iterable[_T], virtual_nodes: int = VIRTUAL_NODES) -> None:
        self._members = list(dict.fromkeys(members))
        if not self._members:
            raise ValueError("a hash ring needs at least one member")
        positions = sorted(
            (stable_hash(f"{member}#{replica}"), index)
            for index, member in enumerate(self._members)
            for replica in range(virtual_nodes)
        )
        self._hashes = [position for position, _ in positions]
        self._owners = [index for _, index in positions]

    @property
    def members(self) -> list[_T]:
        """The ring's members, in insertion order."""
        return list(self._members)

    def owners(self, key: str, count: int = 1) -> list[_T]:
        """The first ``count`` distinct members clockwise from the key's position (fewer if the ring is smaller)."""
        count = min(count, len(self._members))
        if count == len(self._members) == 1:
            return [self._members[0]]  # a one-member ring needs no hashing (the common single-thread node)
        start = bisect.bisect_left(self._hashes, stable_hash(key))
        found: list[int] = []
        for step in range(len(self._hashes)):
            index = self._owners[(start + step) % len(self._hashes)]
            if index not in found:
                found.append(index)
                if len(found) == count:
                    break
        return [self._members[index] for index in found]
