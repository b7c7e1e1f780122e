"""Typed messages of the causal modes, between executors and node caches (``causal.proto``).

An executor reading in a causal session asks its node's cache with a :class:`CausalReadRequest`; the cache keeps
the versions it handed out for the session and tells the executor where to ask for them again
(:attr:`CausalReadResponse.version_address`). Functions downstream, possibly on other nodes, read those exact
versions with a :class:`SessionVersionRequest`; a request naming no keys ends the session there.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudburst.protocol.messages import AnnaError, ConsistencyType
from cloudburst.protocol.runtime_messages import KeyVersion


@dataclass(frozen=True, slots=True)
class CausalKeyResult:
    """One key's answer: the serialized ``MultiKeyCausalValue``, or why there is none."""

    key: str
    payload: bytes = b""
    error: AnnaError = AnnaError.NO_ERROR


@dataclass(frozen=True, slots=True)
class CausalReadRequest:
    """Read ``keys`` for causal session ``session_id``.

    Attributes:
        future_read_set: Keys that functions downstream will read; under MULTI the cache also keeps versions of
            them consistent with this read, so the whole request sees one snapshot.
        lower_bounds: The least version of each key the session may see (what it already depends on).
        keep: Versions the session just wrote (MULTI): the cache keeps them for it, replacing what it kept, so that
            every later read in the request returns exactly its write.
    """

    session_id: str
    consistency: ConsistencyType
    keys: tuple[str, ...]
    response_address: str
    request_id: str
    future_read_set: tuple[str, ...] = ()
    lower_bounds: tuple[KeyVersion, ...] = ()
    keep: tuple[CausalKeyResult, ...] = ()


@dataclass(frozen=True, slots=True)
class CausalReadResponse:
    """The versions read, and (under MULTI) every version the cache now keeps for the session.

    Attributes:
        version_address: Where :class:`SessionVersionRequest` for the kept versions go.
    """

    request_id: str
    results: tuple[CausalKeyResult, ...]
    version_address: str = ""
    kept: tuple[KeyVersion, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionVersionRequest:
    """Read the versions a cache keeps for a session; with no ``keys``, release them (the session ended)."""

    session_id: str
    keys: tuple[str, ...] = ()
    response_address: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class SessionVersionResponse:
    """The kept versions; a key kept as missing has an empty payload, one the cache keeps nothing for is ``KEY_DNE``."""

    session_id: str
    request_id: str
    results: tuple[CausalKeyResult, ...]
