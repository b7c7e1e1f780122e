"""Serialization of user values into ``Value`` messages and KVS lattices.

Choices, in order of speed:

* ``bytes`` travel raw (serializer ``BYTES``) and ``str`` as UTF-8 (``STRING``); neither is ever unpickled, so a
  byte string that happens to look like a pickle stays a byte string.
* Scalars and small flat containers of scalars go through the C pickler: cloudpickle would give the same bytes
  about ten times slower, and such values cannot reference code that only exists in the caller's ``__main__``.
* Everything else goes through cloudpickle (functions, classes, lambdas, closures) with pickle protocol 5. If the
  object hands out out-of-band buffers (NumPy arrays, pandas frames, ``PickleBuffer``), they are framed after the
  pickle stream (serializer ``NUMPY``) and loaded back as views of the received bytes, without a copy. Arrays
  loaded that way are read-only, as with other zero-copy runtimes.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

import cloudpickle

from cloudburst.errors import CloudburstError, DecodeError, EncodeError, FunctionNotFound
from cloudburst.lattices import (
    Lattice,
    LwwLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
)
from cloudburst.protocol.codec import decode_value, encode_generic_response, encode_value
from cloudburst.protocol.errors import failure_response
from cloudburst.protocol.messages import SerializerType
from cloudburst.protocol.original_forms import (
    OriginalFormUnavailable,
    dump_arrow,
    is_arrow_body,
    is_arrow_value,
    load_arrow,
)
from cloudburst.protocol.runtime_messages import EncodedValue, ErrorCode

_SCALARS: frozenset[type] = frozenset({int, float, bool, complex, str, bytes, type(None)})
_SMALL_CONTAINER = 32
#: Out-of-band buffers start on this boundary so NumPy sees aligned memory.
_ALIGN = 64
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")


def _is_plain(value: object) -> bool:
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind in (tuple, list, set, frozenset) and len(value) <= _SMALL_CONTAINER:  # type: ignore[arg-type]
        return all(type(item) in _SCALARS for item in value)  # type: ignore[attr-defined]
    if kind is dict and len(value) <= _SMALL_CONTAINER:  # type: ignore[arg-type]
        return all(type(k) in _SCALARS and type(v) in _SCALARS for k, v in value.items())  # type: ignore[attr-defined]
    return False


def _frame(stream: bytes, buffers: list[pickle.PickleBuffer]) -> bytes:
    """Lays out ``count | lengths | stream | pad | buffer | pad | buffer ...`` with aligned buffers."""
    views = [buffer.raw() for buffer in buffers]
    header = _COUNT.pack(len(views)) + b"".join(_LENGTH.pack(n) for n in (len(stream), *(v.nbytes for v in views)))
    parts: list[bytes | memoryview] = [header, stream]
    offset = len(header) + len(stream)
    for view in views:
        pad = -offset % _ALIGN
        parts.append(b"\0" * pad)
        parts.append(view)
        offset += pad + view.nbytes
    return b"".join(parts)


def _unframe(body: bytes) -> tuple[memoryview, list[memoryview]]:
    data = memoryview(body)
    (count,) = _COUNT.unpack_from(data, 0)
    if count > len(body):  # each buffer needs at least a length field
        raise ValueError(f"frame claims {count} buffers")
    lengths = [_LENGTH.unpack_from(data, _COUNT.size + i * _LENGTH.size)[0] for i in range(count + 1)]
    offset = _COUNT.size + (count + 1) * _LENGTH.size
    stream = data[offset : offset + lengths[0]]
    offset += lengths[0]
    buffers = []
    for length in lengths[1:]:
        offset += -offset % _ALIGN
        buffers.append(data[offset : offset + length])
        offset += length
    if offset > len(body):
        raise ValueError("frame is truncated")
    return stream, buffers


def encode(value: object, *, legacy: bool = False) -> EncodedValue:
    """Encodes a Python value into a ``Value`` body and its serializer type.

    Args:
        value: The value.
        legacy: Use the forms the original client's serializer reads (for requests that come from one).

    Raises:
        EncodeError: The value cannot be pickled (or, with ``legacy``, an array or frame cannot be written in
            pyarrow's format; the message names the extra to install).
    """
    if legacy:
        return _encode_legacy(value)
    kind = type(value)
    if kind is bytes:
        return EncodedValue(value, SerializerType.BYTES)  # type: ignore[arg-type]
    if kind is str:
        return EncodedValue(value.encode(), SerializerType.STRING)  # type: ignore[attr-defined]
    if kind in (bytearray, memoryview):
        return EncodedValue(bytes(value), SerializerType.BYTES)  # type: ignore[call-overload]
    try:
        if _is_plain(value):
            return EncodedValue(pickle.dumps(value, protocol=5), SerializerType.DEFAULT)
        buffers: list[pickle.PickleBuffer] = []
        stream = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception as error:
        raise EncodeError(f"cannot serialize a {kind.__qualname__}: {error}") from error
    if buffers:
        return EncodedValue(_frame(stream, buffers), SerializerType.NUMPY)
    return EncodedValue(stream, SerializerType.DEFAULT)


def _encode_legacy(value: object) -> EncodedValue:
    kind = type(value)
    if kind is bytes:
        return EncodedValue(value, SerializerType.DEFAULT)  # type: ignore[arg-type]
    if kind is str:
        return EncodedValue(value.encode(), SerializerType.STRING)  # type: ignore[attr-defined]
    try:
        if is_arrow_value(value):
            return EncodedValue(dump_arrow(value), SerializerType.NUMPY)
        # In-band buffers: the original reader has no out-of-band framing.
        stream = pickle.dumps(value, protocol=5) if _is_plain(value) else cloudpickle.dumps(value, protocol=5)
    except OriginalFormUnavailable as error:
        raise EncodeError(str(error)) from None
    except Exception as error:
        raise EncodeError(f"cannot serialize a {kind.__qualname__}: {error}") from error
    return EncodedValue(stream, SerializerType.DEFAULT)


def legacy_form(value: EncodedValue) -> EncodedValue:
    """``value`` in the form the original client's serializer reads; values already in such a form are kept.

    Raises:
        EncodeError: The value is an array or frame and pyarrow's format is not available (the message names the
            extra to install).
    """
    serializer = value.serializer
    if serializer == SerializerType.BYTES:
        return EncodedValue(value.body, SerializerType.DEFAULT)
    if serializer == SerializerType.ERROR:
        try:
            decode(value, "error result")
        except CloudburstError as error:
            return legacy_error(error)
    if serializer == SerializerType.NUMPY and not is_arrow_body(value.body):
        return _encode_legacy(decode(value, "result"))
    return value


def legacy_serialized(data: bytes) -> bytes:
    """:func:`legacy_form` of serialized ``Value`` bytes (a set result's members).

    Raises:
        DecodeError: The bytes are not a ``Value``.
        EncodeError: As :func:`legacy_form`.
    """
    converted = legacy_form(EncodedValue(*decode_value(data, "set member")))
    return encode_value(converted.body, converted.serializer)


def legacy_error(error: CloudburstError) -> EncodedValue:
    """A failed call as the original stored it: the pickled pair ``('ERROR: <message>', GenericResponse bytes)``,
    with a bare ``'ERROR'`` when the function was not found."""
    text = "ERROR" if isinstance(error, FunctionNotFound) else f"ERROR: {error.message}"
    response = encode_generic_response(failure_response(error, unlisted=ErrorCode.EXECUTION_ERROR))
    return EncodedValue(pickle.dumps((text, response), protocol=5), SerializerType.DEFAULT)


def encode_error(error: CloudburstError) -> EncodedValue:
    """Encodes an error as a result: whoever loads the result gets the error raised."""
    try:
        return EncodedValue(cloudpickle.dumps(error, protocol=5), SerializerType.ERROR)
    except Exception as failure:  # an unpicklable attribute: keep the message and the traceback text
        plain = CloudburstError(
            f"{error} (the original error could not be serialized: {failure})",
            function=error.function,
            dag=error.dag,
            node=error.node,
            request_id=error.request_id,
            remote_traceback=error.remote_traceback,
        )
        return EncodedValue(cloudpickle.dumps(plain, protocol=5), SerializerType.ERROR)


def decode(value: EncodedValue, what: str = "value") -> Any:  # noqa: ANN401 - user data, like json.loads
    """Decodes a ``Value`` body.

    Raises:
        CloudburstError: The value is an error result (its own class, e.g. ``RemoteExecutionError``).
        DecodeError: The body is not a valid encoding for its serializer (``what`` names the key or field).
    """
    body, serializer = value.body, value.serializer
    try:
        if serializer == SerializerType.BYTES:
            return body
        if serializer == SerializerType.STRING:
            return body.decode()
        if serializer == SerializerType.NUMPY:
            if is_arrow_body(body):
                return load_arrow(body)
            stream, buffers = _unframe(body)
            return pickle.loads(stream, buffers=buffers)
        loaded = pickle.loads(body)
    except (ImportError, AttributeError) as error:
        # The pickle names code this process lacks: a real problem, whoever wrote it.
        raise DecodeError(what, f"{serializer.name} body does not load ({type(error).__name__}: {error})") from None
    except OriginalFormUnavailable as error:
        raise DecodeError(what, str(error)) from None
    except Exception as error:
        if serializer == SerializerType.DEFAULT:
            # Original clients stored bytes untagged as DEFAULT; their reader gives the body back when it does not
            # unpickle, and so do we.
            return body
        raise DecodeError(what, f"{serializer.name} body does not load ({type(error).__name__}: {error})") from None
    if serializer == SerializerType.ERROR:
        if isinstance(loaded, CloudburstError):
            raise loaded
        raise DecodeError(what, f"an ERROR body holds a {type(loaded).__name__}, not an error")
    return loaded


def serialize(value: object, *, legacy: bool = False) -> bytes:
    """Serializes a Python value into ``Value`` message bytes (in the original client's forms with ``legacy``).

    Raises:
        EncodeError: The value cannot be encoded.
    """
    encoded = encode(value, legacy=legacy)
    return encode_value(encoded.body, encoded.serializer)


def deserialize(data: bytes, what: str = "value") -> Any:  # noqa: ANN401 - user data, like json.loads
    """Loads a Python value from ``Value`` message bytes.

    Raises:
        CloudburstError: The value is an error result.
        DecodeError: The bytes are not a ``Value`` or its body does not load.
    """
    body, serializer = decode_value(data, what)
    return decode(EncodedValue(body, serializer), what)


def to_lattice(value: object, timestamp: Callable[[], int], *, legacy: bool = False) -> Lattice:
    """Wraps a Python value the way user ``put`` calls store it.

    A ``set``/``frozenset`` becomes a :class:`SetLattice` of serialized elements (concurrent writers' sets are
    unioned); anything else becomes an LWW register stamped by ``timestamp``.

    Args:
        value: The value.
        timestamp: The LWW timestamp source.
        legacy: Store it in the original client's forms (a function of a request from one is writing it).

    Raises:
        EncodeError: The value (or a set element) cannot be encoded.
    """
    if type(value) in (set, frozenset):
        return SetLattice(frozenset(serialize(item, legacy=legacy) for item in value))  # type: ignore[attr-defined]
    return LwwLattice(timestamp=timestamp(), value=serialize(value, legacy=legacy))


def from_lattice(lattice: Lattice, what: str = "value") -> Any:  # noqa: ANN401 - user data, like json.loads
    """Unwraps a stored lattice into the Python value user ``get`` calls return.

    LWW and priority registers give their value; sets and causal values give a list of their (concurrent) values,
    in a deterministic order.

    Raises:
        DecodeError: The lattice holds bytes that are not a ``Value`` (``what`` names the key).
    """
    if isinstance(lattice, LwwLattice | PriorityLattice):
        return deserialize(lattice.value, what)
    if isinstance(lattice, SetLattice | SingleKeyCausalLattice | MultiKeyCausalLattice):
        return [deserialize(item, what) for item in sorted(lattice.values)]
    if isinstance(lattice, OrderedSetLattice):
        return [deserialize(item, what) for item in lattice.values]
    raise DecodeError(what, f"a {type(lattice).__name__} does not hold user values")


def lattice_argument(lattice: Lattice, what: str = "value") -> EncodedValue:
    """A stored lattice as a call argument that loads to what :func:`from_lattice` gives.

    A register's ``Value`` travels as it is (nothing is unpickled here); other lattices are unwrapped and encoded
    again.

    Raises:
        DecodeError: The lattice holds bytes that are not a ``Value``.
        EncodeError: An unwrapped value cannot be encoded again.
    """
    if isinstance(lattice, LwwLattice | PriorityLattice):
        body, serializer = decode_value(lattice.value, what)
        return EncodedValue(body, serializer)
    return encode(from_lattice(lattice, what))
