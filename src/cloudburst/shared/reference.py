"""``CloudburstReference``: an argument that stands for the KVS value under a key.

Passing a reference (or a future, which becomes one) as an argument tells the executor to substitute the value
stored under ``key`` before calling the function, waiting (with a deadline) for a value still being produced.
"""

from __future__ import annotations


class CloudburstReference:
    """A reference to the value stored under ``key``.

    Args:
        key: The KVS key.
        deserialize: Substitute the Python value (True) or the raw lattice content (False).
    """

    __slots__ = ("deserialize", "key")

    def __init__(self, key: str, deserialize: bool = True) -> None:
        self.key = key
        self.deserialize = deserialize

    def __repr__(self) -> str:
        return f"CloudburstReference({self.key!r}, deserialize={self.deserialize})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CloudburstReference):
            return NotImplemented
        return (self.key, self.deserialize) == (other.key, other.deserialize)

    def __hash__(self) -> int:
        return hash((self.key, self.deserialize))

    def __getstate__(self) -> tuple[str, bool]:
        return self.key, self.deserialize

    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.key, self.deserialize = state
