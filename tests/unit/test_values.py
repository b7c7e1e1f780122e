import importlib.util
import pickle

import numpy as np
import pytest

from cloudburst.errors import CloudburstError as RemoteError
from cloudburst.errors import DecodeError, EncodeError, FunctionNotFound
from cloudburst.lattices import LwwLattice, OrderedSetLattice, SetLattice
from cloudburst.protocol.codec import decode_generic_response, encode_value
from cloudburst.protocol.messages import SerializerType
from cloudburst.protocol.original_forms import is_arrow_body
from cloudburst.protocol.runtime_messages import EncodedValue, ErrorCode
from cloudburst.protocol.values import (
    decode,
    deserialize,
    encode,
    encode_error,
    from_lattice,
    legacy_error,
    legacy_form,
    serialize,
    to_lattice,
)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -7,
        2**80,
        3.25,
        True,
        None,
        complex(1, 2),
        "",
        "héllo",
        b"",
        b"\x00raw",
        (1, "a"),
        [1, 2.5],
        {"k": [1, {2}]},
    ],
)
def test_round_trip(value):
    assert deserialize(serialize(value)) == value


def test_bytes_are_never_unpickled():
    looks_like_a_pickle = pickle.dumps(["surprise"])
    assert encode(looks_like_a_pickle).serializer == SerializerType.BYTES
    assert deserialize(serialize(looks_like_a_pickle)) == looks_like_a_pickle


def test_str_uses_utf8_not_pickle():
    assert encode("abc") == EncodedValue(b"abc", SerializerType.STRING)


def test_functions_and_closures_use_cloudpickle():
    offset = 10

    def shifted(x):
        return x + offset

    restored = deserialize(serialize(shifted))
    assert restored(1) == 11
    assert deserialize(serialize(lambda y: y * 2))(4) == 8


def test_numpy_arrays_travel_out_of_band_and_load_without_copy():
    array = np.arange(100_000, dtype=np.float64).reshape(100, 1000)
    encoded = encode(array)
    assert encoded.serializer == SerializerType.NUMPY
    body = encoded.body
    restored = decode(encoded)
    assert isinstance(restored, np.ndarray)
    np.testing.assert_array_equal(restored, array)
    # A view of the received bytes, not a copy: the array's memory lies inside the body.
    assert not restored.flags.writeable
    assert np.shares_memory(restored, np.frombuffer(body, dtype=np.uint8))
    assert restored.ctypes.data % 64 == np.frombuffer(body, dtype=np.uint8).ctypes.data % 64


def test_numpy_in_a_container_round_trips():
    value = {"weights": np.ones((3, 3), dtype=np.float32), "name": "layer1"}
    restored = deserialize(serialize(value))
    assert restored["name"] == "layer1"
    np.testing.assert_array_equal(restored["weights"], value["weights"])


def test_unpicklable_value_raises_encode_error():
    import threading

    with pytest.raises(EncodeError, match="lock"):
        serialize(threading.Lock())


@pytest.mark.parametrize(
    ("body", "serializer"),
    [
        (b"\x80\x02cno_such_module_anywhere\nthing\n.", SerializerType.DEFAULT),
        (b"\xff\xfe", SerializerType.STRING),
        (b"\x01", SerializerType.NUMPY),
    ],
)
def test_undecodable_body_names_the_field(body, serializer):
    with pytest.raises(DecodeError, match="user/key"):
        decode(EncodedValue(body, serializer), "user/key")


def test_undecodable_value_message_names_the_field():
    with pytest.raises(DecodeError, match="arg 0"):
        deserialize(b"\xff\xff\xff", "arg 0")


def test_unknown_serializer_is_a_decode_error():
    data = encode_value(b"x", SerializerType.BYTES).replace(b"\x10\x03", b"\x10\x09")
    with pytest.raises(DecodeError, match="SerializerType"):
        deserialize(data)


def test_sets_become_set_lattices_and_other_values_lww():
    stamps = iter(range(100, 200))
    assert isinstance(to_lattice({1, 2}, lambda: next(stamps)), SetLattice)
    lww = to_lattice([1, 2], lambda: next(stamps))
    assert isinstance(lww, LwwLattice)
    assert lww.timestamp == 100  # sets take no timestamp
    assert from_lattice(lww) == [1, 2]
    assert sorted(from_lattice(to_lattice({3, 1}, lambda: 0))) == [1, 3]


def test_from_lattice_of_ordered_set_keeps_order():
    lattice = OrderedSetLattice.of([serialize("a"), serialize("b")])
    assert from_lattice(lattice) == [deserialize(v) for v in lattice.values]


def test_from_lattice_with_corrupt_value_names_the_key():
    with pytest.raises(DecodeError, match="users/7"):
        from_lattice(LwwLattice(timestamp=1, value=b"\xff\xff"), "users/7")


def test_error_results_raise_their_error_when_loaded():
    error = RemoteError("boom", function="f", request_id="r1", remote_traceback="Traceback ...")
    with pytest.raises(RemoteError) as caught:
        decode(encode_error(error))
    assert caught.value.function == "f"
    assert caught.value.remote_traceback == "Traceback ..."


def test_an_error_body_that_is_not_an_error_is_a_decode_error():
    with pytest.raises(DecodeError, match="not an error"):
        decode(EncodedValue(pickle.dumps(42), SerializerType.ERROR), "result")


def test_a_default_body_that_does_not_unpickle_is_the_raw_bytes_an_original_client_stored():
    # The original stored bytes untagged as DEFAULT and read back the raw body when it did not unpickle.
    assert decode(EncodedValue(b"\x80\x05garbage", SerializerType.DEFAULT)) == b"\x80\x05garbage"
    assert decode(EncodedValue(b"plain text bytes", SerializerType.DEFAULT)) == b"plain text bytes"


def test_legacy_encoding_uses_the_original_serializers_forms():
    assert encode(b"raw", legacy=True) == EncodedValue(b"raw", SerializerType.DEFAULT)
    assert encode("s", legacy=True) == EncodedValue(b"s", SerializerType.STRING)
    array_in_a_tuple = (np.arange(3), "x")
    encoded = encode(array_in_a_tuple, legacy=True)
    assert encoded.serializer == SerializerType.DEFAULT  # pickled in band: the original reader has no framing
    restored = pickle.loads(encoded.body)
    np.testing.assert_array_equal(restored[0], np.arange(3))
    assert legacy_form(encode(b"raw")) == EncodedValue(b"raw", SerializerType.DEFAULT)
    assert legacy_form(encode(array_in_a_tuple)).serializer == SerializerType.DEFAULT
    assert legacy_form(encode({"a": 1})) == encode({"a": 1})


def test_legacy_errors_are_the_original_pairs():
    text, response = pickle.loads(legacy_error(FunctionNotFound("no f")).body)
    assert text == "ERROR"
    assert decode_generic_response(response).error == ErrorCode.FUNC_NOT_FOUND
    text, response = pickle.loads(legacy_form(encode_error(RemoteError("boom"))).body)
    assert text == "ERROR: boom"
    assert decode_generic_response(response).error == ErrorCode.EXECUTION_ERROR


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="the original-clients extra is installed")
def test_without_the_extra_original_numpy_values_fail_naming_it():
    # pyarrow's header: four int32 counts, then the IPC stream's continuation marker.
    body = b"\x00" * 16 + b"\xff\xff\xff\xff" + b"\x00" * 16
    with pytest.raises(DecodeError, match=r"arg 0.*cloudburst\[original-clients\]"):
        decode(EncodedValue(body, SerializerType.NUMPY), "arg 0")
    with pytest.raises(EncodeError, match=r"cloudburst\[original-clients\]"):
        encode(np.arange(3), legacy=True)
    with pytest.raises(EncodeError, match=r"cloudburst\[original-clients\]"):
        legacy_form(encode(np.arange(3)))


def test_our_numpy_frames_are_never_taken_for_pyarrow_bodies():
    for array in (np.arange(1), np.zeros((64, 64)), np.ones(10**6, dtype=np.uint8)):
        assert not is_arrow_body(encode(array).body)
