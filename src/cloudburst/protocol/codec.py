"""Conversion between protobuf bytes and Cloudburst's typed objects.

This is the only module that imports generated ``*_pb2`` code (besides the compatibility shim for old user
code). Every decoder raises :class:`~cloudburst.errors.DecodeError` naming the message and field that was wrong,
never a protobuf exception, so servers can reject bad input and keep serving.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from enum import Enum
from typing import TypeVar

from google.protobuf.internal.containers import MessageMap
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
from cloudburst.protocol.causal_messages import (
    CausalKeyResult,
    CausalReadRequest,
    CausalReadResponse,
    SessionVersionRequest,
    SessionVersionResponse,
)
from cloudburst.protocol.messages import (
    AnnaError,
    ConsistencyType,
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
from cloudburst.protocol.runtime_messages import (
    Arguments,
    CallResult,
    CancelRequest,
    ClusterStatus,
    Continuation,
    Dag,
    DagCall,
    DagLease,
    DagSchedule,
    DagStatistics,
    DagTrigger,
    EncodedValue,
    ErrorCode,
    ExecutionType,
    ExecutorRequest,
    ExecutorStatistics,
    ExecutorType,
    Function,
    FunctionCall,
    FunctionLease,
    FunctionLocation,
    FunctionReference,
    FunctionStatistics,
    GenericResponse,
    KeyVersion,
    Link,
    PinFunction,
    ResultDelivery,
    SchedulerMessage,
    SchedulerStatus,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.telemetry_messages import CacheReport, ReadRecord, TelemetryReport, TraceHop
from cloudburst.protocol.trigger_messages import TriggerAck, TriggerFiring, TriggerSpec
from cloudburst.protocol.wire import anna_pb2, causal_pb2, cloudburst_pb2, internal_pb2, shared_pb2, trigger_pb2

_M = TypeVar("_M", bound=Message)
_E = TypeVar(
    "_E",
    RequestType,
    LatticeType,
    AnnaError,
    SerializerType,
    ConsistencyType,
    ErrorCode,
    ExecutionType,
    ResultDelivery,
    ExecutorType,
)

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


#: Each enum's members by value: a dictionary lookup, where calling the enum class costs several times more on
#: every decoded message.
_ENUM_MEMBERS: dict[type[Enum], dict[int, Enum]] = {}


def _enum(enum_class: type[_E], value: int, what: str) -> _E:
    members = _ENUM_MEMBERS.get(enum_class)
    if members is None:
        members = _ENUM_MEMBERS[enum_class] = {member.value: member for member in enum_class}
    member = members.get(value)
    if member is None:
        raise DecodeError(what, f"unknown {enum_class.__name__} value {value}")
    return member  # type: ignore[return-value]


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
    out.cached = item.cached


def _tuple_from_pb(item: anna_pb2.KeyTuple, what: str) -> KeyTuple:
    return KeyTuple(
        key=item.key,
        lattice_type=_enum(LatticeType, item.lattice_type, f"{what}.lattice_type"),
        error=_enum(AnnaError, item.error, f"{what}.error"),
        payload=item.payload,
        address_cache_size=item.address_cache_size,
        invalidate=item.invalidate,
        cached=item.cached,
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
        payload_frames=request.payload_frames,
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
        payload_frames=pb.payload_frames,
    )


#: Payloads from this size on travel as frames of their own when the requester reads them so
#: (``KeyRequest.payload_frames``): a protobuf around them costs a copy at each end, each field access one more.
PAYLOAD_FRAME_BYTES = 64 * 1024


def encode_key_response(response: KeyResponse, *, payload_frames: bool = False) -> list[bytes]:
    """Encodes a KVS response as the frames of one message: the ``KeyResponse``, then, with ``payload_frames``,
    each payload of :data:`PAYLOAD_FRAME_BYTES` or more as it is (named by its tuple's ``payload_frame``).

    Raises:
        EncodeError: A field is out of range for the wire format.
    """
    pb = anna_pb2.KeyResponse(
        type=response.type,  # type: ignore[arg-type]
        response_id=response.response_id,
        error=response.error,  # type: ignore[arg-type]
    )
    frames: list[bytes] = [b""]
    for item in response.tuples:
        out = pb.tuples.add()
        if payload_frames and len(item.payload) >= PAYLOAD_FRAME_BYTES:
            _tuple_to_pb(replace(item, payload=b""), out)
            out.payload_frame = len(frames)
            frames.append(item.payload)
        else:
            _tuple_to_pb(item, out)
    frames[0] = _serialize(pb, "KeyResponse")
    return frames


def decode_key_response(frames: Sequence[bytes]) -> KeyResponse:
    """Decodes a KVS response from the frames of its message (see :func:`encode_key_response`).

    Raises:
        DecodeError: The first frame is not a valid ``KeyResponse``, or a tuple names a frame the message lacks.
    """
    if not frames:
        raise DecodeError("KeyResponse", "an empty message")
    pb = _parse(anna_pb2.KeyResponse, frames[0], "KeyResponse")
    tuples = []
    for item in pb.tuples:
        decoded = _tuple_from_pb(item, "KeyResponse.tuples")
        if item.payload_frame:
            if item.payload_frame >= len(frames):
                raise DecodeError("KeyResponse", f"a payload in frame {item.payload_frame} of {len(frames)}")
            decoded = replace(decoded, payload=frames[item.payload_frame])
        tuples.append(decoded)
    return KeyResponse(
        type=_enum(RequestType, pb.type, "KeyResponse.type"),
        tuples=tuple(tuples),
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
    out.origin = version.origin


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
            origin=source.origin,
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
                # A lone version's origin; several carry theirs in ``versions``.
                origin=next(iter(lattice.versions)).origin if len(lattice.versions) == 1 else "",
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


# -- Function runtime -----------------------------------------------------------------------------------------


def _value_to_pb(value: EncodedValue, out: cloudburst_pb2.Value) -> None:
    out.body = value.body
    out.type = value.serializer  # type: ignore[assignment]


def _value_from_pb(pb: cloudburst_pb2.Value, what: str) -> EncodedValue:
    return EncodedValue(pb.body, _enum(SerializerType, pb.type, f"{what}.type"))


def _arguments_to_pb(arguments: Arguments, out: cloudburst_pb2.Arguments) -> None:
    for value in arguments:
        _value_to_pb(value, out.values.add())


def _arguments_from_pb(pb: cloudburst_pb2.Arguments, what: str) -> Arguments:
    return tuple(_value_from_pb(v, what) for v in pb.values)


def _argument_map_to_pb(arguments: Mapping[str, Arguments], out: MessageMap[str, cloudburst_pb2.Arguments]) -> None:
    for name, values in arguments.items():
        _arguments_to_pb(values, out[name])


def _argument_map_from_pb(pb: MessageMap[str, cloudburst_pb2.Arguments], what: str) -> dict[str, Arguments]:
    return {name: _arguments_from_pb(values, f"{what}[{name!r}]") for name, values in pb.items()}


def _key_version_to_pb(version: KeyVersion, out: shared_pb2.KeyVersion) -> None:
    out.key = version.key
    _clock_to_pb(version.vector_clock, out.vector_clock, "KeyVersion")


def _key_version_from_pb(pb: shared_pb2.KeyVersion, what: str) -> KeyVersion:
    return KeyVersion(pb.key, _clock_from_pb(pb.vector_clock, what))


def _dag_to_pb(dag: Dag, out: cloudburst_pb2.Dag) -> None:
    out.name = dag.name
    for ref in dag.functions:
        out.functions.add(
            name=ref.name,
            type=ref.type,
            invalid_results=ref.invalid_results,
            gpu=ref.gpu,
            batching=ref.batching,
        )
    for link in dag.connections:
        out.connections.add(source=link.source, sink=link.sink)
    out.colocated.extend(dag.colocated)


def _dag_from_pb(pb: cloudburst_pb2.Dag, what: str) -> Dag:
    return Dag(
        name=pb.name,
        functions=tuple(
            FunctionReference(
                name=ref.name,
                type=_enum(ExecutionType, ref.type, f"{what}.functions.type"),
                invalid_results=tuple(ref.invalid_results),
                gpu=ref.gpu,
                batching=ref.batching,
            )
            for ref in pb.functions
        ),
        connections=tuple(Link(link.source, link.sink) for link in pb.connections),
        colocated=tuple(pb.colocated),
    )


#: DAGs decoded from schedules and triggers, by their bytes (cleared past :data:`_MAX_KEPT_DAGS`): every request of a
#: DAG carries the same DAG, and building it again was a third of the work of decoding a schedule.
_SCHEDULED_DAGS: dict[bytes, Dag] = {}
_MAX_KEPT_DAGS = 1024


def _scheduled_dag_from_pb(pb: cloudburst_pb2.Dag, what: str) -> Dag:
    data = pb.SerializeToString(deterministic=True)
    dag = _SCHEDULED_DAGS.get(data)
    if dag is None:
        dag = _dag_from_pb(pb, what)
        if len(_SCHEDULED_DAGS) >= _MAX_KEPT_DAGS:
            _SCHEDULED_DAGS.clear()
        _SCHEDULED_DAGS[data] = dag
    return dag


@functools.lru_cache(maxsize=_MAX_KEPT_DAGS)
def _scheduled_dag_bytes(dag: Dag) -> bytes:
    """A DAG's encoding, for the schedules of its requests (the same DAG each time)."""
    pb = cloudburst_pb2.Dag()
    _dag_to_pb(dag, pb)
    return pb.SerializeToString(deterministic=True)


def _dag_call_to_pb(call: DagCall, out: cloudburst_pb2.DagCall) -> None:
    out.name = call.name
    _argument_map_to_pb(call.function_args, out.function_args)
    out.response_address = call.response_address
    out.consistency = call.consistency  # type: ignore[assignment]
    out.output_key = call.output_key
    out.client_id = call.client_id
    if call.continuation is not None:
        _continuation_to_pb(call.continuation, out.continuation)
    out.delivery = call.delivery  # type: ignore[assignment]
    for name, keys in call.references.items():
        out.references[name].keys.extend(keys)
    out.deadline = call.deadline
    if call.max_retries is not None:
        out.max_retries = call.max_retries
    out.retry_exceptions.extend(call.retry_exceptions)
    out.stamp = call.stamp


def _dag_call_from_pb(pb: cloudburst_pb2.DagCall, what: str) -> DagCall:
    return DagCall(
        name=pb.name,
        function_args=_argument_map_from_pb(pb.function_args, f"{what}.function_args"),
        response_address=pb.response_address,
        consistency=_enum(ConsistencyType, pb.consistency, f"{what}.consistency"),
        output_key=pb.output_key,
        client_id=pb.client_id,
        continuation=_continuation_from_pb(pb.continuation, f"{what}.continuation")
        if pb.HasField("continuation")
        else None,
        delivery=_enum(ResultDelivery, pb.delivery, f"{what}.delivery"),
        references={name: tuple(keys.keys) for name, keys in pb.references.items()},
        deadline=_finite(pb.deadline, f"{what}.deadline"),
        max_retries=pb.max_retries if pb.HasField("max_retries") else None,
        retry_exceptions=tuple(pb.retry_exceptions),
        stamp=pb.stamp,
    )


def _continuation_to_pb(continuation: Continuation, out: cloudburst_pb2.Continuation) -> None:
    out.name = continuation.name
    out.id = continuation.id
    out.result = continuation.result
    if continuation.call is not None:
        _dag_call_to_pb(continuation.call, out.call)


def _continuation_from_pb(pb: cloudburst_pb2.Continuation, what: str) -> Continuation:
    return Continuation(
        name=pb.name,
        id=pb.id,
        result=pb.result,
        call=_dag_call_from_pb(pb.call, f"{what}.call") if pb.HasField("call") else None,
    )


def _function_call_to_pb(call: FunctionCall, out: cloudburst_pb2.FunctionCall) -> None:
    out.name = call.name
    out.request_id = call.request_id
    _arguments_to_pb(call.arguments, out.arguments)
    out.response_key = call.response_key
    out.consistency = call.consistency  # type: ignore[assignment]
    out.locations.extend(call.locations)
    out.response_address = call.response_address
    out.delivery = call.delivery  # type: ignore[assignment]
    out.function_version = call.function_version
    out.references.extend(call.references)
    if call.trigger is not None:
        _firing_to_pb(call.trigger, out.trigger)
    out.placed_by = call.placed_by
    out.deadline = call.deadline
    if call.max_retries is not None:
        out.max_retries = call.max_retries
    out.attempt = call.attempt
    out.retry_exceptions.extend(call.retry_exceptions)
    out.stamp = call.stamp


def _function_call_from_pb(pb: cloudburst_pb2.FunctionCall, what: str) -> FunctionCall:
    return FunctionCall(
        name=pb.name,
        arguments=_arguments_from_pb(pb.arguments, f"{what}.arguments"),
        request_id=pb.request_id,
        response_key=pb.response_key,
        consistency=_enum(ConsistencyType, pb.consistency, f"{what}.consistency"),
        locations=tuple(pb.locations),
        response_address=pb.response_address,
        delivery=_enum(ResultDelivery, pb.delivery, f"{what}.delivery"),
        function_version=pb.function_version,
        references=tuple(pb.references),
        trigger=_firing_from_pb(pb.trigger, f"{what}.trigger") if pb.HasField("trigger") else None,
        placed_by=pb.placed_by,
        deadline=_finite(pb.deadline, f"{what}.deadline"),
        max_retries=pb.max_retries if pb.HasField("max_retries") else None,
        attempt=max(pb.attempt, 1),
        retry_exceptions=tuple(pb.retry_exceptions),
        stamp=pb.stamp,
    )


def _schedule_to_pb(schedule: DagSchedule, out: cloudburst_pb2.DagSchedule) -> None:
    out.id = schedule.id
    out.dag.MergeFromString(_scheduled_dag_bytes(schedule.dag))
    out.target_function = schedule.target_function
    out.consistency = schedule.consistency  # type: ignore[assignment]
    out.triggers.extend(schedule.triggers)
    for name, location in schedule.locations.items():
        out.locations[name] = location
    _argument_map_to_pb(schedule.arguments, out.arguments)
    out.response_address = schedule.response_address
    out.output_key = schedule.output_key
    out.client_id = schedule.client_id
    out.start_time = schedule.start_time
    if schedule.continuation is not None:
        _continuation_to_pb(schedule.continuation, out.continuation)
    out.delivery = schedule.delivery  # type: ignore[assignment]
    for name, keys in schedule.references.items():
        out.references[name].keys.extend(keys)
    out.deadline = schedule.deadline
    out.placed_by = schedule.placed_by
    if schedule.max_retries is not None:
        out.max_retries = schedule.max_retries
    out.retry_exceptions.extend(schedule.retry_exceptions)
    out.stamp = schedule.stamp


def _schedule_from_pb(pb: cloudburst_pb2.DagSchedule, what: str) -> DagSchedule:
    return DagSchedule(
        id=pb.id,
        dag=_scheduled_dag_from_pb(pb.dag, f"{what}.dag"),
        target_function=pb.target_function,
        triggers=tuple(pb.triggers),
        locations=dict(pb.locations),
        arguments=_argument_map_from_pb(pb.arguments, f"{what}.arguments"),
        consistency=_enum(ConsistencyType, pb.consistency, f"{what}.consistency"),
        response_address=pb.response_address,
        output_key=pb.output_key,
        client_id=pb.client_id,
        start_time=pb.start_time,
        continuation=_continuation_from_pb(pb.continuation, f"{what}.continuation")
        if pb.HasField("continuation")
        else None,
        delivery=_enum(ResultDelivery, pb.delivery, f"{what}.delivery"),
        references={name: tuple(keys.keys) for name, keys in pb.references.items()},
        deadline=_finite(pb.deadline, f"{what}.deadline"),
        placed_by=pb.placed_by,
        max_retries=pb.max_retries if pb.HasField("max_retries") else None,
        retry_exceptions=tuple(pb.retry_exceptions),
        stamp=pb.stamp,
    )


def _trigger_to_pb(trigger: DagTrigger, out: cloudburst_pb2.DagTrigger) -> None:
    out.id = trigger.id
    out.target_function = trigger.target_function
    out.source = trigger.source
    _arguments_to_pb(trigger.arguments, out.arguments)
    for address, versions in trigger.version_locations.items():
        for version in versions:
            _key_version_to_pb(version, out.version_locations[address].keys.add())
    for version in trigger.dependencies:
        _key_version_to_pb(version, out.dependencies.add())
    out.observed.extend(trigger.observed)
    for version in trigger.written:
        _key_version_to_pb(version, out.written.add())
    if trigger.schedule is not None:
        _schedule_to_pb(trigger.schedule, out.schedule)


def _trigger_from_pb(pb: cloudburst_pb2.DagTrigger, what: str) -> DagTrigger:
    return DagTrigger(
        id=pb.id,
        target_function=pb.target_function,
        source=pb.source,
        arguments=_arguments_from_pb(pb.arguments, f"{what}.arguments"),
        version_locations={
            address: tuple(_key_version_from_pb(v, f"{what}.version_locations") for v in versions.keys)
            for address, versions in pb.version_locations.items()
        },
        dependencies=tuple(_key_version_from_pb(v, f"{what}.dependencies") for v in pb.dependencies),
        observed=tuple(pb.observed),
        written=tuple(_key_version_from_pb(v, f"{what}.written") for v in pb.written),
        schedule=_schedule_from_pb(pb.schedule, f"{what}.schedule") if pb.HasField("schedule") else None,
    )


def _generic_response_to_pb(response: GenericResponse, out: cloudburst_pb2.GenericResponse) -> None:
    out.success = response.success
    out.response_id = response.response_id
    out.error = response.error  # type: ignore[assignment]
    out.error_message = response.error_message


def _generic_response_from_pb(pb: cloudburst_pb2.GenericResponse, what: str) -> GenericResponse:
    return GenericResponse(
        success=pb.success,
        response_id=pb.response_id,
        error=_enum(ErrorCode, pb.error, f"{what}.error"),
        error_message=pb.error_message,
    )


def _thread_status_to_pb(status: ThreadStatus, out: internal_pb2.ThreadStatus) -> None:
    out.ip = status.ip
    out.tid = status.tid
    out.functions.extend(status.functions)
    out.utilization = status.utilization
    out.running = status.running
    out.type = status.type  # type: ignore[assignment]
    out.incarnation = status.incarnation
    out.departed = status.departed
    out.queued = status.queued
    out.finished.extend(status.finished)
    out.crashed = status.crashed
    out.refused.extend(status.refused)


def _thread_status_from_pb(pb: internal_pb2.ThreadStatus, what: str) -> ThreadStatus:
    return ThreadStatus(
        ip=pb.ip,
        tid=pb.tid,
        functions=tuple(pb.functions),
        utilization=pb.utilization,
        running=pb.running,
        type=_enum(ExecutorType, pb.type, f"{what}.type"),
        incarnation=pb.incarnation,
        departed=pb.departed,
        queued=pb.queued,
        finished=tuple(pb.finished),
        crashed=pb.crashed,
        refused=tuple(pb.refused),
    )


def _statistics_to_pb(statistics: ExecutorStatistics, out: internal_pb2.ExecutorStatistics) -> None:
    for function in statistics.functions:
        out.functions.add(name=function.name, call_count=function.call_count, runtime=function.runtimes)
    for dag in statistics.dags:
        out.dags.add(
            name=dag.name,
            runtimes=dag.runtimes,
            interarrival=dag.interarrivals,
            call_count=dag.call_count,
            direct_calls=dag.direct_calls,
        )
    out.reporter = statistics.reporter


def _statistics_from_pb(pb: internal_pb2.ExecutorStatistics) -> ExecutorStatistics:
    return ExecutorStatistics(
        functions=tuple(FunctionStatistics(f.name, f.call_count, tuple(f.runtime)) for f in pb.functions),
        dags=tuple(
            DagStatistics(d.name, tuple(d.runtimes), tuple(d.interarrival), d.call_count, d.direct_calls)
            for d in pb.dags
        ),
        reporter=pb.reporter,
    )


def _gossip_to_pb(status: SchedulerStatus, out: internal_pb2.SchedulerStatus) -> None:
    out.dags.extend(status.dags)
    for location in status.function_locations:
        out.function_locations.add(name=location.name, ip=location.ip, tid=location.tid)
    out.deleted_dags.extend(status.deleted_dags)


def _gossip_from_pb(pb: internal_pb2.SchedulerStatus) -> SchedulerStatus:
    return SchedulerStatus(
        dags=tuple(pb.dags),
        function_locations=tuple(FunctionLocation(f.name, f.ip, f.tid) for f in pb.function_locations),
        deleted_dags=tuple(pb.deleted_dags),
    )


def encode_function(function: Function) -> bytes:
    """Encodes a function registration."""
    return _serialize(cloudburst_pb2.Function(name=function.name, body=function.body), "Function")


def decode_function(data: bytes) -> Function:
    """Decodes a function registration.

    Raises:
        DecodeError: The bytes are not a valid ``Function``.
    """
    pb = _parse(cloudburst_pb2.Function, data, "Function")
    return Function(pb.name, pb.body)


def encode_function_call(call: FunctionCall) -> bytes:
    """Encodes a one-shot call."""
    pb = cloudburst_pb2.FunctionCall()
    _function_call_to_pb(call, pb)
    return _serialize(pb, "FunctionCall")


def decode_function_call(data: bytes) -> FunctionCall:
    """Decodes a one-shot call.

    Raises:
        DecodeError: The bytes are not a valid ``FunctionCall``.
    """
    return _function_call_from_pb(_parse(cloudburst_pb2.FunctionCall, data, "FunctionCall"), "FunctionCall")


def encode_dag(dag: Dag) -> bytes:
    """Encodes a DAG registration."""
    pb = cloudburst_pb2.Dag()
    _dag_to_pb(dag, pb)
    return _serialize(pb, "Dag")


def decode_dag(data: bytes) -> Dag:
    """Decodes a DAG registration.

    Raises:
        DecodeError: The bytes are not a valid ``Dag``.
    """
    return _dag_from_pb(_parse(cloudburst_pb2.Dag, data, "Dag"), "Dag")


def encode_dag_call(call: DagCall) -> bytes:
    """Encodes a DAG call."""
    pb = cloudburst_pb2.DagCall()
    _dag_call_to_pb(call, pb)
    return _serialize(pb, "DagCall")


def decode_dag_call(data: bytes) -> DagCall:
    """Decodes a DAG call.

    Raises:
        DecodeError: The bytes are not a valid ``DagCall``.
    """
    return _dag_call_from_pb(_parse(cloudburst_pb2.DagCall, data, "DagCall"), "DagCall")


def encode_cancel_request(request: CancelRequest) -> bytes:
    """Encodes a cancellation."""
    return _serialize(cloudburst_pb2.CancelRequest(request_id=request.request_id), "CancelRequest")


def decode_cancel_request(data: bytes) -> CancelRequest:
    """Decodes a cancellation.

    Raises:
        DecodeError: The bytes are not a valid ``CancelRequest``, or it names no request.
    """
    pb = _parse(cloudburst_pb2.CancelRequest, data, "CancelRequest")
    if not pb.request_id:
        raise DecodeError("CancelRequest", "it names no request")
    return CancelRequest(pb.request_id)


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise DecodeError(what, f"must be a non-negative number of seconds, not {value}")
    return value


def encode_continuation(continuation: Continuation) -> bytes:
    """Encodes a continuation."""
    pb = cloudburst_pb2.Continuation()
    _continuation_to_pb(continuation, pb)
    return _serialize(pb, "Continuation")


def encode_generic_response(response: GenericResponse) -> bytes:
    """Encodes a scheduler's reply."""
    pb = cloudburst_pb2.GenericResponse()
    _generic_response_to_pb(response, pb)
    return _serialize(pb, "GenericResponse")


def decode_generic_response(data: bytes) -> GenericResponse:
    """Decodes a scheduler's reply.

    Raises:
        DecodeError: The bytes are not a valid ``GenericResponse``.
    """
    pb = _parse(cloudburst_pb2.GenericResponse, data, "GenericResponse")
    return _generic_response_from_pb(pb, "GenericResponse")


def _function_lease_to_pb(lease: FunctionLease, out: cloudburst_pb2.FunctionLease) -> None:
    out.function = lease.function
    out.function_version = lease.function_version
    out.executors.extend(lease.executors)
    out.ttl = lease.ttl
    out.error = lease.error  # type: ignore[assignment]
    out.error_message = lease.error_message
    out.queued.extend(lease.queued)
    out.pinned.extend(lease.pinned)
    out.incarnations.extend(lease.incarnations)


def _function_lease_from_pb(pb: cloudburst_pb2.FunctionLease, what: str) -> FunctionLease:
    if not (math.isfinite(pb.ttl) and pb.ttl >= 0):
        raise DecodeError(what, f"ttl must be a non-negative number, not {pb.ttl}")
    count = len(pb.executors)
    # A scheduler that does not report loads sends none: every executor counts as idle and unpinned.
    queued = tuple(pb.queued) or (0,) * count
    pinned = tuple(pb.pinned) or (False,) * count
    incarnations = tuple(pb.incarnations) or ("",) * count
    if not len(queued) == len(pinned) == len(incarnations) == count:
        raise DecodeError(
            what,
            f"{count} executors but {len(queued)} loads, {len(pinned)} pin flags and {len(incarnations)} incarnations",
        )
    return FunctionLease(
        function=pb.function,
        function_version=pb.function_version,
        executors=tuple(pb.executors),
        ttl=pb.ttl,
        error=_enum(ErrorCode, pb.error, f"{what}.error"),
        error_message=pb.error_message,
        queued=queued,
        pinned=pinned,
        incarnations=incarnations,
    )


def encode_function_lease(lease: FunctionLease) -> bytes:
    """Encodes a scheduler's answer to a lease request."""
    pb = cloudburst_pb2.FunctionLease()
    _function_lease_to_pb(lease, pb)
    return _serialize(pb, "FunctionLease")


def decode_function_lease(data: bytes) -> FunctionLease:
    """Decodes a scheduler's answer to a lease request.

    Raises:
        DecodeError: The bytes are not a valid ``FunctionLease``.
    """
    return _function_lease_from_pb(_parse(cloudburst_pb2.FunctionLease, data, "FunctionLease"), "FunctionLease")


def encode_dag_lease(lease: DagLease) -> bytes:
    """Encodes a scheduler's answer to a DAG lease request."""
    pb = cloudburst_pb2.DagLease(ttl=lease.ttl, error=lease.error, error_message=lease.error_message)  # type: ignore[arg-type]
    _dag_to_pb(lease.dag, pb.dag)
    for function in lease.functions:
        _function_lease_to_pb(function, pb.functions.add())
    return _serialize(pb, "DagLease")


def decode_dag_lease(data: bytes) -> DagLease:
    """Decodes a scheduler's answer to a DAG lease request.

    Raises:
        DecodeError: The bytes are not a valid ``DagLease``, or a granted one does not lease every function of its
            DAG.
    """
    pb = _parse(cloudburst_pb2.DagLease, data, "DagLease")
    if not (math.isfinite(pb.ttl) and pb.ttl >= 0):
        raise DecodeError("DagLease", f"ttl must be a non-negative number, not {pb.ttl}")
    lease = DagLease(
        dag=_dag_from_pb(pb.dag, "DagLease.dag"),
        functions=tuple(_function_lease_from_pb(f, "DagLease.functions") for f in pb.functions),
        ttl=pb.ttl,
        error=_enum(ErrorCode, pb.error, "DagLease.error"),
        error_message=pb.error_message,
    )
    leased = [function.function for function in lease.functions]
    if lease.error == ErrorCode.NO_CLOUDBURST_ERROR and leased != [ref.name for ref in lease.dag.functions]:
        raise DecodeError("DagLease", f"leases functions {leased}, not those of DAG {lease.dag.name!r}")
    return lease


def encode_encoded_value(value: EncodedValue) -> bytes:
    """Encodes a ``Value`` message."""
    return encode_value(value.body, value.serializer)


def decode_encoded_value(data: bytes, what: str = "Value") -> EncodedValue:
    """Decodes a ``Value`` message.

    Raises:
        DecodeError: The bytes are not a valid ``Value``.
    """
    body, serializer = decode_value(data, what)
    return EncodedValue(body, serializer)


def encode_call_result(result: CallResult) -> bytes:
    """Encodes a result pushed to a caller."""
    pb = internal_pb2.CallResult(id=result.id)
    _value_to_pb(result.value, pb.value)
    return _serialize(pb, "CallResult")


def decode_call_result(data: bytes) -> CallResult:
    """Decodes a result pushed to a caller.

    Raises:
        DecodeError: The bytes are not a valid ``CallResult``.
    """
    pb = _parse(internal_pb2.CallResult, data, "CallResult")
    return CallResult(pb.id, _value_from_pb(pb.value, "CallResult.value"))


def encode_cluster_status(status: ClusterStatus) -> bytes:
    """Encodes a cluster status answer."""
    pb = internal_pb2.ClusterStatus(dags=status.dags, functions=status.functions)
    for executor in status.executors:
        _thread_status_to_pb(executor, pb.executors.add())
    return _serialize(pb, "ClusterStatus")


def decode_cluster_status(data: bytes) -> ClusterStatus:
    """Decodes a cluster status answer.

    Raises:
        DecodeError: The bytes are not a valid ``ClusterStatus``.
    """
    pb = _parse(internal_pb2.ClusterStatus, data, "ClusterStatus")
    return ClusterStatus(
        executors=tuple(_thread_status_from_pb(e, "ClusterStatus.executors") for e in pb.executors),
        dags=tuple(pb.dags),
        functions=tuple(pb.functions),
    )


def encode_executor_request(request: ExecutorRequest) -> bytes:
    """Wraps a message for an executor's control socket in its envelope."""
    pb = internal_pb2.ExecutorRequest()
    if isinstance(request, PinFunction):
        pb.pin.name = request.name
        pb.pin.response_address = request.response_address
        pb.pin.batching = request.batching
        pb.pin.request_id = request.request_id
    elif isinstance(request, UnpinFunction):
        pb.unpin.name = request.name
    elif isinstance(request, FunctionCall):
        _function_call_to_pb(request, pb.call)
    elif isinstance(request, DagSchedule):
        _schedule_to_pb(request, pb.schedule)
    elif isinstance(request, DagTrigger):
        _trigger_to_pb(request, pb.trigger)
    else:
        pb.depart.SetInParent()
    return _serialize(pb, "ExecutorRequest")


def decode_executor_request(data: bytes) -> ExecutorRequest:
    """Unwraps a message received on an executor's control socket.

    Raises:
        DecodeError: The bytes are not a valid ``ExecutorRequest`` or the envelope is empty.
    """
    pb = _parse(internal_pb2.ExecutorRequest, data, "ExecutorRequest")
    kind = pb.WhichOneof("kind")
    if kind == "pin":
        return PinFunction(pb.pin.name, pb.pin.response_address, pb.pin.request_id, pb.pin.batching)
    if kind == "unpin":
        return UnpinFunction(pb.unpin.name)
    if kind == "call":
        return _function_call_from_pb(pb.call, "ExecutorRequest.call")
    if kind == "schedule":
        return _schedule_from_pb(pb.schedule, "ExecutorRequest.schedule")
    if kind == "trigger":
        return _trigger_from_pb(pb.trigger, "ExecutorRequest.trigger")
    if kind == "depart":
        return SelfDepart()
    raise DecodeError("ExecutorRequest", "the envelope holds no message")


def encode_scheduler_message(message: SchedulerMessage) -> bytes:
    """Wraps a message for a scheduler's internal socket in its envelope."""
    pb = internal_pb2.SchedulerMessage()
    if isinstance(message, ThreadStatus):
        _thread_status_to_pb(message, pb.status)
    elif isinstance(message, GenericResponse):
        _generic_response_to_pb(message, pb.pin_reply)
    elif isinstance(message, Continuation):
        _continuation_to_pb(message, pb.continuation)
    elif isinstance(message, SchedulerStatus):
        _gossip_to_pb(message, pb.gossip)
    elif isinstance(message, TriggerFiring):
        _firing_to_pb(message, pb.trigger_firing)
    else:
        _statistics_to_pb(message, pb.statistics)
    return _serialize(pb, "SchedulerMessage")


def decode_scheduler_message(data: bytes) -> SchedulerMessage:
    """Unwraps a message received on a scheduler's internal socket.

    Raises:
        DecodeError: The bytes are not a valid ``SchedulerMessage`` or the envelope is empty.
    """
    pb = _parse(internal_pb2.SchedulerMessage, data, "SchedulerMessage")
    kind = pb.WhichOneof("kind")
    if kind == "status":
        return _thread_status_from_pb(pb.status, "SchedulerMessage.status")
    if kind == "pin_reply":
        return _generic_response_from_pb(pb.pin_reply, "SchedulerMessage.pin_reply")
    if kind == "continuation":
        return _continuation_from_pb(pb.continuation, "SchedulerMessage.continuation")
    if kind == "gossip":
        return _gossip_from_pb(pb.gossip)
    if kind == "statistics":
        return _statistics_from_pb(pb.statistics)
    if kind == "trigger_firing":
        return _firing_from_pb(pb.trigger_firing, "SchedulerMessage.trigger_firing")
    if kind == "telemetry":
        raise DecodeError("SchedulerMessage", "a telemetry report is for the management service, not a scheduler")
    raise DecodeError("SchedulerMessage", "the envelope holds no message")


# -- Telemetry (schedulers, executors, caches -> management) ----------------------------------------------------


def encode_telemetry_report(report: TelemetryReport) -> bytes:
    """Wraps a telemetry report in the envelope the management service's report port takes."""
    pb = internal_pb2.SchedulerMessage()
    out = pb.telemetry
    out.reporter = report.reporter
    for hop in report.hops:
        hop_pb = out.hops.add(
            request_id=hop.request_id,
            role=hop.role,
            node=hop.node,
            function=hop.function,
            dag=hop.dag,
            start=hop.start,
            duration=hop.duration,
            queue=hop.queue,
            end_to_end=hop.end_to_end,
            error=hop.error,
            message=hop.message,
            traceback=hop.traceback,
            detail=hop.detail,
            stages=hop.stages,
        )
        for read in hop.reads:
            hop_pb.reads.add(key=read.key, source=read.source, hit=read.hit, version=read.version)
    if report.cache is not None:
        cache = report.cache
        out.cache.node = cache.node
        out.cache.hits = cache.hits
        out.cache.misses = cache.misses
        out.cache.negative_hits = cache.negative_hits
        out.cache.keys = cache.keys
        out.cache.bytes = cache.bytes
    return _serialize(pb, "TelemetryReport")


def decode_management_report(data: bytes) -> SchedulerMessage | TelemetryReport:
    """Unwraps a message received on the management service's report port: a scheduler message or telemetry.

    Raises:
        DecodeError: The bytes are not a valid ``SchedulerMessage`` or the envelope is empty.
    """
    pb = _parse(internal_pb2.SchedulerMessage, data, "SchedulerMessage")
    if pb.WhichOneof("kind") != "telemetry":
        return decode_scheduler_message(data)
    report = pb.telemetry
    # Positional and without empty generators: the management service decodes one hop per step of every request.
    hops = tuple(
        TraceHop(
            hop.request_id,
            hop.role,
            hop.node,
            hop.start,
            hop.duration,
            hop.function,
            hop.dag,
            hop.queue,
            hop.end_to_end,
            hop.error,
            hop.message,
            hop.traceback,
            hop.detail,
            tuple(ReadRecord(r.key, r.source, r.hit, r.version) for r in hop.reads) if hop.reads else (),
            hop.stages,
        )
        for hop in report.hops
    )
    cache = None
    if report.HasField("cache"):
        c = report.cache
        cache = CacheReport(c.node, c.hits, c.misses, c.negative_hits, c.keys, c.bytes)
    return TelemetryReport(report.reporter, hops, cache)


# -- Storage triggers (KVS <-> scheduler <-> executor) ----------------------------------------------------------


def _firing_to_pb(firing: TriggerFiring, out: trigger_pb2.TriggerFiring) -> None:
    out.id = firing.id
    out.trigger = firing.trigger
    out.function = firing.function
    out.key = firing.key
    out.lattice_type = firing.lattice_type  # type: ignore[assignment]
    out.payload = firing.payload
    out.attempt = firing.attempt
    out.acknowledge_to = firing.acknowledge_to
    out.last_error = firing.last_error


def _firing_from_pb(pb: trigger_pb2.TriggerFiring, what: str) -> TriggerFiring:
    if not pb.id or not pb.function:
        raise DecodeError(what, "a trigger firing needs an id and a function")
    return TriggerFiring(
        id=pb.id,
        trigger=pb.trigger,
        function=pb.function,
        key=pb.key,
        lattice_type=_enum(LatticeType, pb.lattice_type, f"{what}.lattice_type"),
        payload=pb.payload,
        attempt=pb.attempt,
        acknowledge_to=pb.acknowledge_to,
        last_error=pb.last_error,
    )


def encode_trigger_firing(firing: TriggerFiring) -> bytes:
    """Serializes a firing as the KVS node keeps it until the run is acknowledged."""
    pb = trigger_pb2.TriggerFiring()
    _firing_to_pb(firing, pb)
    return _serialize(pb, "TriggerFiring")


def decode_trigger_firing(data: bytes) -> TriggerFiring:
    """Parses a kept firing.

    Raises:
        DecodeError: The bytes are not a valid ``TriggerFiring``.
    """
    return _firing_from_pb(_parse(trigger_pb2.TriggerFiring, data, "TriggerFiring"), "TriggerFiring")


def encode_trigger_spec(spec: TriggerSpec) -> bytes:
    """Serializes a trigger's definition, as stored in the KVS."""
    pb = trigger_pb2.TriggerSpec(
        name=spec.name,
        function=spec.function,
        key=spec.key,
        prefix=spec.prefix,
        schedulers=spec.schedulers,
        ack_timeout=spec.ack_timeout,
        max_attempts=spec.max_attempts,
    )
    return _serialize(pb, "TriggerSpec")


def decode_trigger_spec(data: bytes, what: str = "TriggerSpec") -> TriggerSpec:
    """Parses a stored trigger definition.

    Raises:
        DecodeError: The bytes are not a valid ``TriggerSpec``, or it names no function, not exactly one of key
            and prefix, no scheduler, or limits that are not positive.
    """
    pb = _parse(trigger_pb2.TriggerSpec, data, what)
    if not pb.name or not pb.function:
        raise DecodeError(what, "a trigger needs a name and a function")
    if bool(pb.key) == bool(pb.prefix):
        raise DecodeError(what, f"trigger {pb.name!r} must set exactly one of key and prefix")
    if not pb.schedulers:
        raise DecodeError(what, f"trigger {pb.name!r} names no scheduler")
    if not (math.isfinite(pb.ack_timeout) and pb.ack_timeout > 0) or pb.max_attempts < 1:
        raise DecodeError(what, f"trigger {pb.name!r} needs a positive ack timeout and at least one attempt")
    return TriggerSpec(
        name=pb.name,
        function=pb.function,
        schedulers=tuple(pb.schedulers),
        key=pb.key,
        prefix=pb.prefix,
        ack_timeout=pb.ack_timeout,
        max_attempts=pb.max_attempts,
    )


def encode_trigger_ack(ack: TriggerAck) -> bytes:
    """Serializes an acknowledgement for a KVS node's trigger port."""
    return _serialize(trigger_pb2.TriggerAck(id=ack.id, error=ack.error), "TriggerAck")


def decode_trigger_ack(data: bytes) -> TriggerAck:
    """Parses an acknowledgement.

    Raises:
        DecodeError: The bytes are not a valid ``TriggerAck`` or it names no firing.
    """
    pb = _parse(trigger_pb2.TriggerAck, data, "TriggerAck")
    if not pb.id:
        raise DecodeError("TriggerAck", "the acknowledgement names no firing")
    return TriggerAck(pb.id, pb.error)


# -- Causal sessions (executor <-> node cache) ------------------------------------------------------------------


def _causal_results_to_pb(results: Iterable[CausalKeyResult], out: object) -> None:
    for result in results:
        out.add(key=result.key, payload=result.payload, error=int(result.error))  # type: ignore[attr-defined]


def _causal_results_from_pb(items: Iterable[causal_pb2.CausalTuple], what: str) -> tuple[CausalKeyResult, ...]:
    return tuple(
        CausalKeyResult(item.key, item.payload, _enum(AnnaError, item.error, f"{what}.error")) for item in items
    )


def encode_causal_read_request(request: CausalReadRequest) -> bytes:
    """Serializes a causal read into a ``CausalRequest``."""
    pb = causal_pb2.CausalRequest(
        consistency=int(request.consistency),  # type: ignore[arg-type]
        id=request.session_id,
        future_read_set=request.future_read_set,
        response_address=request.response_address,
        request_id=request.request_id,
    )
    for key in request.keys:
        pb.tuples.add(key=key)
    for version in request.lower_bounds:
        _key_version_to_pb(version, pb.lower_bounds.add())
    _causal_results_to_pb(request.keep, pb.keep)
    return _serialize(pb, "CausalRequest")


def decode_causal_read_request(data: bytes) -> CausalReadRequest:
    """Parses a ``CausalRequest``.

    Raises:
        DecodeError: The bytes are not a valid ``CausalRequest``.
    """
    what = "CausalRequest"
    pb = _parse(causal_pb2.CausalRequest, data, what)
    return CausalReadRequest(
        session_id=pb.id,
        consistency=_enum(ConsistencyType, pb.consistency, f"{what}.consistency"),
        keys=tuple(item.key for item in pb.tuples),
        response_address=pb.response_address,
        request_id=pb.request_id,
        future_read_set=tuple(pb.future_read_set),
        lower_bounds=tuple(_key_version_from_pb(v, f"{what}.lower_bounds") for v in pb.lower_bounds),
        keep=_causal_results_from_pb(pb.keep, f"{what}.keep"),
    )


def encode_causal_read_response(response: CausalReadResponse) -> bytes:
    """Serializes a causal read's answer into a ``CausalResponse``."""
    pb = causal_pb2.CausalResponse(key_version_query_address=response.version_address, request_id=response.request_id)
    _causal_results_to_pb(response.results, pb.tuples)
    for version in response.kept:
        _key_version_to_pb(version, pb.key_versions.add())
    return _serialize(pb, "CausalResponse")


def decode_causal_read_response(data: bytes) -> CausalReadResponse:
    """Parses a ``CausalResponse``.

    Raises:
        DecodeError: The bytes are not a valid ``CausalResponse``.
    """
    what = "CausalResponse"
    pb = _parse(causal_pb2.CausalResponse, data, what)
    return CausalReadResponse(
        request_id=pb.request_id,
        results=_causal_results_from_pb(pb.tuples, what),
        version_address=pb.key_version_query_address,
        kept=tuple(_key_version_from_pb(v, f"{what}.key_versions") for v in pb.key_versions),
    )


def encode_session_version_request(request: SessionVersionRequest) -> bytes:
    """Serializes a request for a session's kept versions (or their release) into a ``KeyVersionRequest``."""
    pb = causal_pb2.KeyVersionRequest(
        id=request.session_id,
        response_address=request.response_address,
        keys=request.keys,
        request_id=request.request_id,
    )
    return _serialize(pb, "KeyVersionRequest")


def decode_session_version_request(data: bytes) -> SessionVersionRequest:
    """Parses a ``KeyVersionRequest``.

    Raises:
        DecodeError: The bytes are not a valid ``KeyVersionRequest``.
    """
    pb = _parse(causal_pb2.KeyVersionRequest, data, "KeyVersionRequest")
    return SessionVersionRequest(pb.id, tuple(pb.keys), pb.response_address, pb.request_id)


def encode_session_version_response(response: SessionVersionResponse) -> bytes:
    """Serializes a session's kept versions into a ``KeyVersionResponse``."""
    pb = causal_pb2.KeyVersionResponse(id=response.session_id, request_id=response.request_id)
    _causal_results_to_pb(response.results, pb.tuples)
    return _serialize(pb, "KeyVersionResponse")


def decode_session_version_response(data: bytes) -> SessionVersionResponse:
    """Parses a ``KeyVersionResponse``.

    Raises:
        DecodeError: The bytes are not a valid ``KeyVersionResponse``.
    """
    what = "KeyVersionResponse"
    pb = _parse(causal_pb2.KeyVersionResponse, data, what)
    return SessionVersionResponse(pb.id, pb.request_id, _causal_results_from_pb(pb.tuples, what))
