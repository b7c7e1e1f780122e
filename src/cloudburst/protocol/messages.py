"""Typed messages of the KVS client protocol, mirroring ``anna.proto``.

These are what servers and clients handle; :mod:`cloudburst.protocol.codec` converts them to and from bytes.
Enum values equal the wire values, so an enum member can be written to protobuf as is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RequestType(enum.IntEnum):
    """Kind of a KVS request."""

    RT_UNSPECIFIED = 0
    GET = 1
    PUT = 2


class LatticeType(enum.IntEnum):
    """Which lattice a KVS payload holds."""

    NONE = 0
    LWW = 1
    SET = 2
    SINGLE_CAUSAL = 3
    MULTI_CAUSAL = 4
    ORDERED_SET = 5
    PRIORITY = 6


class AnnaError(enum.IntEnum):
    """Per-key (or whole-response) outcome of a KVS request."""

    NO_ERROR = 0
    KEY_DNE = 1
    WRONG_THREAD = 2
    TIMEOUT = 3
    LATTICE = 4
    NO_SERVERS = 5


class SerializerType(enum.IntEnum):
    """How a ``Value`` body is encoded."""

    DEFAULT = 0
    NUMPY = 1
    STRING = 2
    BYTES = 3
    ERROR = 4


class ConsistencyType(enum.IntEnum):
    """Consistency level of a call."""

    NORMAL = 0
    SINGLE = 1
    MULTI = 2


@dataclass(frozen=True, slots=True)
class KeyTuple:
    """One key of a KVS request or response; ``payload`` is a serialized lattice of ``lattice_type``."""

    key: str
    lattice_type: LatticeType = LatticeType.NONE
    error: AnnaError = AnnaError.NO_ERROR
    payload: bytes = b""
    address_cache_size: int = 0
    invalidate: bool = False
    #: A node cache answered this GET key from memory (a hit, or a key it knows is missing).
    cached: bool = False


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A GET or PUT of one or more keys; the response goes to ``response_address`` (none when empty)."""

    type: RequestType
    tuples: tuple[KeyTuple, ...]
    response_address: str = ""
    request_id: str = ""
    #: The requester reads big payloads from frames after the response (see :func:`codec.encode_key_response`).
    payload_frames: bool = False


@dataclass(frozen=True, slots=True)
class KeyResponse:
    """The answer to a :class:`KeyRequest`, one tuple per requested key."""

    type: RequestType
    tuples: tuple[KeyTuple, ...]
    response_id: str = ""
    error: AnnaError = AnnaError.NO_ERROR


@dataclass(frozen=True, slots=True)
class KeyAddressRequest:
    """Asks the routing tier which storage endpoints are responsible for ``keys``."""

    response_address: str
    keys: tuple[str, ...]
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class KeyAddress:
    """The storage endpoints (``tcp://host:port``) responsible for one key."""

    key: str
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyAddressResponse:
    """The routing tier's answer to a :class:`KeyAddressRequest`."""

    addresses: tuple[KeyAddress, ...]
    error: AnnaError = AnnaError.NO_ERROR
    response_id: str = ""
