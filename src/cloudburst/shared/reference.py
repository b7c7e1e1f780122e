"""``CloudburstReference``: an argument that stands for the KVS value under a key.

Passing a reference (or a future, which becomes one) as an argument tells the executor to substitute the value
stored under ``key`` before calling the function, waiting (with a deadline) for a value still being produced.

A reference pickles as the original client's does (this class's name with the instance dictionary as state), so
references travel both ways between original clients and ours.
"""

from __future__ import annotations


class CloudburstReference:
    """A reference to the value stored under ``key``.

    Args:
        key: The KVS key.
        deserialize: Substitute the Python value (True) or the raw lattice content (False).
    """

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

    def __setstate__(self, state: dict[str, object] | tuple[str, bool]) -> None:
        # Earlier versions of this class pickled a ``(key, deserialize)`` pair; values stored then still load.
        if isinstance(state, tuple):
            state = {"key": state[0], "deserialize": state[1]}
        self.key = str(state["key"])
        self.deserialize = bool(state.get("deserialize", True))
