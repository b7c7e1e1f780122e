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

from cloudburst.errors import DecodeError, EncodeError
from cloudburst.lattices import (
    Lattice,
    LwwLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
)
from cloudburst.protocol.codec import decode_value, encode_value
from cloudburst.protocol.messages import SerializerType

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


def encode(value: object) -> tuple[bytes, SerializerType]:
    """Encodes a Python value into a ``Value`` body and its serializer type.

    Raises:
        EncodeError: The value cannot be pickled.
    """
    kind = type(value)
    if kind is bytes:
        return value, SerializerType.BYTES  # type: ignore[return-value]
    if kind is str:
        return value.encode(), SerializerType.STRING  # type: ignore[attr-defined]
    if kind in (bytearray, memoryview):
        return bytes(value), SerializerType.BYTES  # type: ignore[call-overload]
    try:
        if _is_plain(value):
            return pickle.dumps(value, protocol=5), SerializerType.DEFAULT
        buffers: list[pickle.PickleBuffer] = []
        stream = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception as error:
        raise EncodeError(f"cannot serialize a {kind.__qualname__}: {error}") from error
    if buffers:
        return _frame(stream, buffers), SerializerType.NUMPY
    return stream, SerializerType.DEFAULT


def decode(body: bytes, serializer: SerializerType, what: str = "value") -> object:
    """Decodes a ``Value`` body.

    Raises:
        DecodeError: The body is not a valid encoding for its serializer (``what`` names the key or field).
    """
    try:
        if serializer == SerializerType.BYTES:
            return body
        if serializer == SerializerType.STRING:
            return body.decode()
        if serializer == SerializerType.NUMPY:
            stream, buffers = _unframe(body)
            return pickle.loads(stream, buffers=buffers)
        return pickle.loads(body)
    except Exception as error:
        raise DecodeError(what, f"{serializer.name} body does not load ({type(error).__name__}: {error})") from None


def serialize(value: object) -> bytes:
    """Serializes a Python value into ``Value`` message bytes.

    Raises:
        EncodeError: The value cannot be pickled.
    """
    body, serializer = encode(value)
    return encode_value(body, serializer)


def deserialize(data: bytes, what: str = "value") -> object:
    """Loads a Python value from ``Value`` message bytes.

    Raises:
        DecodeError: The bytes are not a ``Value`` or its body does not load.
    """
    body, serializer = decode_value(data, what)
    return decode(body, serializer, what)


def to_lattice(value: object, timestamp: Callable[[], int]) -> Lattice:
    """Wraps a Python value the way user ``put`` calls store it.

    A ``set``/``frozenset`` becomes a :class:`SetLattice` of serialized elements (concurrent writers' sets are
    unioned); anything else becomes an LWW register stamped by ``timestamp``.

    Raises:
        EncodeError: The value (or a set element) cannot be pickled.
    """
    if type(value) in (set, frozenset):
        return SetLattice(frozenset(serialize(item) for item in value))  # type: ignore[attr-defined]
    return LwwLattice(timestamp=timestamp(), value=serialize(value))


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
