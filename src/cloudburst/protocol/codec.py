"""Conversion between protobuf bytes and Cloudburst's typed objects.

This is the only module that imports generated ``*_pb2`` code (besides the compatibility shim for old user
code). Every decoder raises :class:`~cloudburst.errors.DecodeError` naming the message and field that was wrong,
never a protobuf exception, so servers can reject bad input and keep serving.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message

from cloudburst.errors import DecodeError, EncodeError
from cloudburst.lattices import (
    CausalVersion,
    Lattice,
    LwwLattice,
    MapLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
    VectorClock,
)
from cloudburst.protocol.messages import (
    AnnaError,
    KeyAddress,
    KeyAddressRequest,
    KeyAddressResponse,
    KeyRequest,
    KeyResponse,
    KeyTuple,
    LatticeType,
    RequestType,
    SerializerType,
)
from cloudburst.protocol.wire import anna_pb2, cloudburst_pb2, shared_pb2

_M = TypeVar("_M", bound=Message)
_E = TypeVar("_E", RequestType, LatticeType, AnnaError, SerializerType)

#: The lattices a KVS can store, i.e. those with a wire payload.
StorableLattice = (
    LwwLattice | SetLattice | OrderedSetLattice | PriorityLattice | SingleKeyCausalLattice | MultiKeyCausalLattice
)

_UINT32_LIMIT = 2**32


def _parse(message_class: type[_M], data: bytes, what: str) -> _M:
    try:
        return message_class.FromString(data)
    except (_ProtobufDecodeError, RuntimeError, ValueError, TypeError) as error:
        raise DecodeError(what, f"malformed protobuf ({error})") from None


def _enum(enum_class: type[_E], value: int, what: str) -> _E:
    try:
        return enum_class(value)
    except ValueError:
        raise DecodeError(what, f"unknown {enum_class.__name__} value {value}") from None


def _serialize(message: Message, what: str) -> bytes:
    try:
        return message.SerializeToString(deterministic=True)
    except (ValueError, TypeError) as error:
        raise EncodeError(f"cannot encode {what}: {error}") from None


# -- KVS requests and responses -------------------------------------------------------------------------------


def _tuple_to_pb(item: KeyTuple, out: anna_pb2.KeyTuple) -> None:
    out.key = item.key
    out.lattice_type = item.lattice_type  # type: ignore[assignment]
    out.error = item.error  # type: ignore[assignment]
    out.payload = item.payload
    out.address_cache_size = item.address_cache_size
    out.invalidate = item.invalidate


def _tuple_from_pb(item: anna_pb2.KeyTuple, what: str) -> KeyTuple:
    return KeyTuple(
        key=item.key,
        lattice_type=_enum(LatticeType, item.lattice_type, f"{what}.lattice_type"),
        error=_enum(AnnaError, item.error, f"{what}.error"),
        payload=item.payload,
        address_cache_size=item.address_cache_size,
        invalidate=item.invalidate,
    )


def encode_key_request(request: KeyRequest) -> bytes:
    """Encodes a KVS GET/PUT request.

    Raises:
        EncodeError: A field is out of range for the wire format.
    """
    pb = anna_pb2.KeyRequest(
        type=request.type,  # type: ignore[arg-type]
        response_address=request.response_address,
        request_id=request.request_id,
    )
    for item in request.tuples:
        _tuple_to_pb(item, pb.tuples.add())
    return _serialize(pb, "KeyRequest")


def decode_key_request(data: bytes) -> KeyRequest:
    """Decodes a KVS GET/PUT request.

    Raises:
        DecodeError: The bytes are not a valid ``KeyRequest``.
    """
    pb = _parse(anna_pb2.KeyRequest, data, "KeyRequest")
    return KeyRequest(
        type=_enum(RequestType, pb.type, "KeyRequest.type"),
        tuples=tuple(_tuple_from_pb(t, "KeyRequest.tuples") for t in pb.tuples),
        response_address=pb.response_address,
        request_id=pb.request_id,
    )


def encode_key_response(response: KeyResponse) -> bytes:
    """Encodes a KVS response.

    Raises:
        EncodeError: A field is out of range for the wire format.
    """
    pb = anna_pb2.KeyResponse(
        type=response.type,  # type: ignore[arg-type]
        response_id=response.response_id,
        error=response.error,  # type: ignore[arg-type]
    )
    for item in response.tuples:
        _tuple_to_pb(item, pb.tuples.add())
    return _serialize(pb, "KeyResponse")


def decode_key_response(data: bytes) -> KeyResponse:
    """Decodes a KVS response.

    Raises:
        DecodeError: The bytes are not a valid ``KeyResponse``.
    """
    pb = _parse(anna_pb2.KeyResponse, data, "KeyResponse")
    return KeyResponse(
        type=_enum(RequestType, pb.type, "KeyResponse.type"),
        tuples=tuple(_tuple_from_pb(t, "KeyResponse.tuples") for t in pb.tuples),
        response_id=pb.response_id,
        error=_enum(AnnaError, pb.error, "KeyResponse.error"),
    )


def encode_key_address_request(request: KeyAddressRequest) -> bytes:
    """Encodes a routing-tier address lookup."""
    pb = anna_pb2.KeyAddressRequest(
        response_address=request.response_address, keys=request.keys, request_id=request.request_id
    )
    return _serialize(pb, "KeyAddressRequest")


def decode_key_address_request(data: bytes) -> KeyAddressRequest:
    """Decodes a routing-tier address lookup.

    Raises:
        DecodeError: The bytes are not a valid ``KeyAddressRequest``.
    """
    pb = _parse(anna_pb2.KeyAddressRequest, data, "KeyAddressRequest")
    return KeyAddressRequest(response_address=pb.response_address, keys=tuple(pb.keys), request_id=pb.request_id)


def encode_key_address_response(response: KeyAddressResponse) -> bytes:
    """Encodes the routing tier's answer."""
    pb = anna_pb2.KeyAddressResponse(
        error=response.error,  # type: ignore[arg-type]
        response_id=response.response_id,
    )
    for address in response.addresses:
        pb.addresses.add(key=address.key, ips=address.ips)
    return _serialize(pb, "KeyAddressResponse")


def decode_key_address_response(data: bytes) -> KeyAddressResponse:
    """Decodes the routing tier's answer.

    Raises:
        DecodeError: The bytes are not a valid ``KeyAddressResponse``.
    """
    pb = _parse(anna_pb2.KeyAddressResponse, data, "KeyAddressResponse")
    return KeyAddressResponse(
        addresses=tuple(KeyAddress(key=a.key, ips=tuple(a.ips)) for a in pb.addresses),
        error=_enum(AnnaError, pb.error, "KeyAddressResponse.error"),
        response_id=pb.response_id,
    )


def encode_string_set(keys: Iterable[str]) -> bytes:
    """Encodes a ``StringSet`` (a cache's key set, a list of names or addresses)."""
    return _serialize(shared_pb2.StringSet(keys=keys), "StringSet")


def decode_string_set(data: bytes, what: str = "StringSet") -> tuple[str, ...]:
    """Decodes a ``StringSet``.

    Raises:
        DecodeError: The bytes are not a valid ``StringSet``.
    """
    return tuple(_parse(shared_pb2.StringSet, data, what).keys)


# -- Values ---------------------------------------------------------------------------------------------------


def encode_value(body: bytes, serializer: SerializerType) -> bytes:
    """Wraps an encoded body in the ``Value`` message every argument and result travels in."""
    return cloudburst_pb2.Value(body=body, type=serializer).SerializeToString()  # type: ignore[arg-type]


def decode_value(data: bytes, what: str = "Value") -> tuple[bytes, SerializerType]:
    """Unwraps a ``Value`` message into its body and serializer.

    Raises:
        DecodeError: The bytes are not a valid ``Value`` or name an unknown serializer.
    """
    pb = _parse(cloudburst_pb2.Value, data, what)
    return pb.body, _enum(SerializerType, pb.type, f"{what}.type")


# -- Lattice payloads -----------------------------------------------------------------------------------------


def _clock_to_pb(clock: VectorClock, out: object, what: str) -> None:
    target = out  # a protobuf map<string, uint32>
    for node, counter in clock.entries:
        if counter >= _UINT32_LIMIT:
            raise EncodeError(f"cannot encode {what}: vector clock counter {counter} for {node!r} exceeds uint32")
        target[node] = counter  # type: ignore[index]


def _clock_from_pb(entries: object, what: str) -> VectorClock:
    try:
        return VectorClock.of(dict(entries))  # type: ignore[call-overload]
    except ValueError as error:
        raise DecodeError(what, str(error)) from None


def _causal_version_to_pb(version: CausalVersion, out: anna_pb2.MultiKeyCausalValue, what: str) -> None:
    _clock_to_pb(version.vector_clock, out.vector_clock, what)
    for key, clock in sorted(version.dependencies.items()):
        dependency = out.dependencies.add(key=key)
        _clock_to_pb(clock, dependency.vector_clock, what)
    out.values.extend(sorted(version.values))


def _dependencies_from_pb(items: Sequence[shared_pb2.KeyVersion], what: str) -> MapLattice[str, VectorClock]:
    merged: dict[str, VectorClock] = {}
    for item in items:
        clock = _clock_from_pb(item.vector_clock, f"{what}.dependencies")
        merged[item.key] = merged[item.key].merge(clock) if item.key in merged else clock
    return MapLattice.of(merged)


def _causal_versions_from_pb(pb: anna_pb2.MultiKeyCausalValue, what: str) -> list[CausalVersion]:
    """Reads either the exact per-version form or, from writers that predate it, the single joined version."""
    sources: Iterable[anna_pb2.MultiKeyCausalValue] = pb.versions if len(pb.versions) else (pb,)
    return [
        CausalVersion(
            vector_clock=_clock_from_pb(source.vector_clock, f"{what}.vector_clock"),
            dependencies=_dependencies_from_pb(source.dependencies, what),
            values=frozenset(source.values),
        )
        for source in sources
    ]


def encode_lattice(lattice: Lattice) -> tuple[LatticeType, bytes]:
    """Serializes a storable lattice into its ``anna.proto`` payload.

    Concurrent causal versions are written twice: joined into the original top-level fields (what older readers
    understand) and individually in the ``versions`` extension (what keeps merges exact).

    Raises:
        EncodeError: The lattice has no wire form (Max, Bool, Map, VectorClock) or a field is out of range.
    """
    if isinstance(lattice, LwwLattice):
        return LatticeType.LWW, anna_pb2.LWWValue(timestamp=lattice.timestamp, value=lattice.value).SerializeToString()
    if isinstance(lattice, SetLattice):
        return LatticeType.SET, anna_pb2.SetValue(values=sorted(lattice.values)).SerializeToString()
    if isinstance(lattice, OrderedSetLattice):
        return LatticeType.ORDERED_SET, anna_pb2.SetValue(values=lattice.values).SerializeToString()
    if isinstance(lattice, PriorityLattice):
        return LatticeType.PRIORITY, anna_pb2.PriorityValue(
            priority=lattice.priority, value=lattice.value
        ).SerializeToString()
    if isinstance(lattice, SingleKeyCausalLattice | MultiKeyCausalLattice):
        multi = isinstance(lattice, MultiKeyCausalLattice)
        what = "MultiKeyCausalValue" if multi else "SingleKeyCausalValue"
        joined = anna_pb2.MultiKeyCausalValue()
        _causal_version_to_pb(
            CausalVersion(
                vector_clock=lattice.vector_clock,
                dependencies=lattice.dependencies if isinstance(lattice, MultiKeyCausalLattice) else MapLattice.of({}),
                values=lattice.values,
            ),
            joined,
            what,
        )
        if len(lattice.versions) > 1:
            for version in sorted(lattice.versions, key=lambda v: (v.vector_clock.entries, sorted(v.values))):
                _causal_version_to_pb(version, joined.versions.add(), what)
        if multi:
            return LatticeType.MULTI_CAUSAL, _serialize(joined, what)
        single = anna_pb2.SingleKeyCausalValue(values=joined.values, versions=joined.versions)
        single.vector_clock.update(joined.vector_clock)
        return LatticeType.SINGLE_CAUSAL, _serialize(single, what)
    raise EncodeError(f"a {type(lattice).__name__} has no KVS wire form; store it inside a storable lattice")


def decode_lattice(lattice_type: LatticeType, payload: bytes, what: str = "payload") -> StorableLattice:
    """Parses an ``anna.proto`` lattice payload.

    Args:
        lattice_type: The payload's declared lattice type.
        payload: The serialized lattice.
        what: Names the payload in error messages (for example the key it belongs to).

    Raises:
        DecodeError: The type is ``NONE`` or unknown, or the payload is not a valid lattice of that type.
    """
    if lattice_type == LatticeType.LWW:
        lww = _parse(anna_pb2.LWWValue, payload, f"{what} (LWW)")
        return LwwLattice(timestamp=lww.timestamp, value=lww.value)
    if lattice_type == LatticeType.SET:
        return SetLattice(frozenset(_parse(anna_pb2.SetValue, payload, f"{what} (SET)").values))
    if lattice_type == LatticeType.ORDERED_SET:
        return OrderedSetLattice.of(_parse(anna_pb2.SetValue, payload, f"{what} (ORDERED_SET)").values)
    if lattice_type == LatticeType.PRIORITY:
        priority = _parse(anna_pb2.PriorityValue, payload, f"{what} (PRIORITY)")
        if math.isnan(priority.priority):
            raise DecodeError(f"{what} (PRIORITY)", "priority is NaN")
        return PriorityLattice(priority=priority.priority, value=priority.value)
    if lattice_type == LatticeType.MULTI_CAUSAL:
        multi = _parse(anna_pb2.MultiKeyCausalValue, payload, f"{what} (MULTI_CAUSAL)")
        return MultiKeyCausalLattice.from_versions(_causal_versions_from_pb(multi, f"{what} (MULTI_CAUSAL)"))
    if lattice_type == LatticeType.SINGLE_CAUSAL:
        single = _parse(anna_pb2.SingleKeyCausalValue, payload, f"{what} (SINGLE_CAUSAL)")
        as_multi = anna_pb2.MultiKeyCausalValue(values=single.values, versions=single.versions)
        as_multi.vector_clock.update(single.vector_clock)
        versions = _causal_versions_from_pb(as_multi, f"{what} (SINGLE_CAUSAL)")
        return SingleKeyCausalLattice.from_versions(
            CausalVersion(v.vector_clock, MapLattice.of({}), v.values) for v in versions
        )
    raise DecodeError(what, f"lattice type {lattice_type.name} has no payload format")


def lattice_type_of(lattice: Lattice) -> LatticeType:
    """The wire lattice type of a storable lattice.

    Raises:
        EncodeError: The lattice has no wire form.
    """
    for cls, lattice_type in _LATTICE_TYPES:
        if isinstance(lattice, cls):
            return lattice_type
    raise EncodeError(f"a {type(lattice).__name__} has no KVS wire form")


_LATTICE_TYPES: tuple[tuple[type, LatticeType], ...] = (
    (LwwLattice, LatticeType.LWW),
    (SetLattice, LatticeType.SET),
    (OrderedSetLattice, LatticeType.ORDERED_SET),
    (PriorityLattice, LatticeType.PRIORITY),
    (SingleKeyCausalLattice, LatticeType.SINGLE_CAUSAL),
    (MultiKeyCausalLattice, LatticeType.MULTI_CAUSAL),
)
