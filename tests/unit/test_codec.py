import pytest

from cloudburst.errors import DecodeError, EncodeError
from cloudburst.lattices import (
    BoolLattice,
    CausalVersion,
    LwwLattice,
    MapLattice,
    MaxLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
    VectorClock,
)
from cloudburst.protocol import codec
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
)
from cloudburst.protocol.wire import anna_pb2

VC = VectorClock.of


def test_key_request_round_trip():
    request = KeyRequest(
        RequestType.PUT,
        (KeyTuple("a", LatticeType.LWW, payload=b"p", address_cache_size=2), KeyTuple("b")),
        "tcp://127.0.0.1:9000",
        "client:1",
    )
    assert codec.decode_key_request(codec.encode_key_request(request)) == request


def test_key_response_round_trip():
    response = KeyResponse(
        RequestType.GET,
        (KeyTuple("a", error=AnnaError.KEY_DNE, invalidate=True),),
        "client:1",
        AnnaError.NO_ERROR,
    )
    assert codec.decode_key_response(codec.encode_key_response(response)) == response


def test_big_payloads_travel_as_frames_of_their_own_for_requesters_that_read_them():
    big, small = b"v" * codec.PAYLOAD_FRAME_BYTES, b"s"
    response = KeyResponse(
        RequestType.GET,
        (KeyTuple("a", LatticeType.LWW, payload=big), KeyTuple("b", LatticeType.LWW, payload=small), KeyTuple("c")),
        "client:1",
    )
    frames = codec.encode_key_response(response, payload_frames=True)
    assert len(frames) == 2
    assert frames[1] is big  # sent as it is, no copy
    assert big not in frames[0]
    assert codec.decode_key_response(frames) == response
    # An original client never asks for frames: one message, every payload inside it.
    (single,) = codec.encode_key_response(response)
    assert codec.decode_key_response([single]) == response
    request = KeyRequest(RequestType.GET, (KeyTuple("a"),), "tcp://127.0.0.1:9000", "client:2", payload_frames=True)
    assert codec.decode_key_request(codec.encode_key_request(request)) == request
    with pytest.raises(DecodeError, match="frame 1 of 1"):
        codec.decode_key_response(frames[:1])
    with pytest.raises(DecodeError, match="empty message"):
        codec.decode_key_response([])


def test_address_messages_round_trip():
    request = KeyAddressRequest("tcp://127.0.0.1:1", ("x", "y"), "id")
    assert codec.decode_key_address_request(codec.encode_key_address_request(request)) == request
    response = KeyAddressResponse((KeyAddress("x", ("tcp://h:6200",)), KeyAddress("", ())), AnnaError.NO_ERROR, "id")
    assert codec.decode_key_address_response(codec.encode_key_address_response(response)) == response


def test_string_set_round_trip():
    assert codec.decode_string_set(codec.encode_string_set(["b", "a"])) == ("b", "a")


def test_field_numbers_match_the_original_wire_format():
    # Hand-assembled bytes as the original clients send them: type=GET(1), one tuple {key="k"}, response
    # address "r", request id "i".
    original = b"\x08\x01" + b"\x12\x03\x0a\x01k" + b"\x1a\x01r" + b"\x22\x01i"
    assert codec.decode_key_request(original) == KeyRequest(RequestType.GET, (KeyTuple("k"),), "r", "i")
    lww = anna_pb2.LWWValue(timestamp=5, value=b"v").SerializeToString()
    assert lww == b"\x08\x05\x12\x01v"


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80"])
def test_garbage_is_a_decode_error(data):
    with pytest.raises(DecodeError, match="KeyRequest"):
        codec.decode_key_request(data)


def test_unknown_enum_value_is_a_decode_error():
    with pytest.raises(DecodeError, match=r"KeyRequest\.type"):
        codec.decode_key_request(b"\x08\x07")


LATTICES = [
    LwwLattice(timestamp=2**63 + 5, value=b"v"),
    SetLattice(frozenset({b"a", b"b"})),
    SetLattice(frozenset()),
    OrderedSetLattice.of([b"b", b"a"]),
    PriorityLattice(priority=-1.5, value=b"p"),
    SingleKeyCausalLattice.of(VC({"n1": 2}), [b"x"]),
    SingleKeyCausalLattice.of(VC({"n1": 1}), [b"x"]).merge(SingleKeyCausalLattice.of(VC({"n2": 1}), [b"y"])),
    MultiKeyCausalLattice.of(VC({"c": 3}), [b"v"], {"dep": VC({"c": 2})}),
    MultiKeyCausalLattice.of(VC({"a": 1}), [b"1"], {"d": VC({"a": 1})}).merge(
        MultiKeyCausalLattice.of(VC({"b": 1}), [b"2"], {"e": VC({"b": 1})})
    ),
]


@pytest.mark.parametrize("lattice", LATTICES, ids=lambda lattice: type(lattice).__name__)
def test_lattice_payload_round_trip(lattice):
    lattice_type, payload = codec.encode_lattice(lattice)
    assert lattice_type == codec.lattice_type_of(lattice)
    assert codec.decode_lattice(lattice_type, payload) == lattice


def test_concurrent_versions_are_also_written_in_the_original_joined_form():
    siblings = SingleKeyCausalLattice.of(VC({"n1": 1}), [b"x"]).merge(SingleKeyCausalLattice.of(VC({"n2": 1}), [b"y"]))
    _, payload = codec.encode_lattice(siblings)
    pb = anna_pb2.SingleKeyCausalValue.FromString(payload)
    assert dict(pb.vector_clock) == {"n1": 1, "n2": 1}
    assert sorted(pb.values) == [b"x", b"y"]
    assert len(pb.versions) == 2


def test_original_causal_payload_without_versions_is_one_version():
    pb = anna_pb2.MultiKeyCausalValue(values=[b"a", b"b"])
    pb.vector_clock["base"] = 1
    pb.dependencies.add(key="k").vector_clock["base"] = 1
    lattice = codec.decode_lattice(LatticeType.MULTI_CAUSAL, pb.SerializeToString())
    assert lattice == MultiKeyCausalLattice.from_versions(
        [CausalVersion(VC({"base": 1}), MapLattice.of({"k": VC({"base": 1})}), frozenset({b"a", b"b"}))]
    )


@pytest.mark.parametrize("lattice", [MaxLattice(1), BoolLattice(True), MapLattice.of({"a": MaxLattice(1)}), VC({})])
def test_lattices_without_a_wire_form_are_refused(lattice):
    with pytest.raises(EncodeError, match="no KVS wire form"):
        codec.encode_lattice(lattice)


def test_bad_payload_names_the_key():
    with pytest.raises(DecodeError, match=r"key 'k' \(LWW\)"):
        codec.decode_lattice(LatticeType.LWW, b"\xff\xff", "key 'k'")
    with pytest.raises(DecodeError, match="NONE"):
        codec.decode_lattice(LatticeType.NONE, b"")


def test_nan_priority_is_refused():
    payload = anna_pb2.PriorityValue(priority=float("nan"), value=b"v").SerializeToString()
    with pytest.raises(DecodeError, match="NaN"):
        codec.decode_lattice(LatticeType.PRIORITY, payload)
