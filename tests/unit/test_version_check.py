"""The versions a scheduler's info port tells, and which differences keep a client from shipping functions."""

import dataclasses
import json
import pickle
import platform

import cloudpickle
import pytest

import cloudburst
from cloudburst.errors import CloudburstError, DecodeError, VersionMismatch
from cloudburst.protocol.errors import failure_response
from cloudburst.protocol.runtime_messages import ErrorCode
from cloudburst.protocol.versions import (
    MAX_INFO_BYTES,
    PROTOCOL_VERSION,
    VersionInfo,
    check_compatible,
    incompatibilities,
    local_version_info,
    major_minor,
)

HERE = VersionInfo(cloudburst="0.1.0", python="3.11.7", cloudpickle="3.1.3", protocol=1)


def test_this_process_reports_its_own_versions():
    info = local_version_info()
    assert info == VersionInfo(cloudburst.__version__, platform.python_version(), cloudpickle.__version__, 1)
    assert info.protocol == PROTOCOL_VERSION


def test_the_answer_round_trips_and_is_plain_json():
    assert VersionInfo.decode(HERE.encode()) == HERE
    assert json.loads(HERE.encode()) == {
        "cloudburst": "0.1.0",
        "python": "3.11.7",
        "cloudpickle": "3.1.3",
        "protocol": 1,
    }


def test_fields_a_reader_does_not_know_are_ignored():
    newer = json.dumps({**json.loads(HERE.encode()), "gpu": True, "features": ["x"]}).encode()
    assert VersionInfo.decode(newer) == HERE


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"cloudburst": "0.1.0", "python": "3.11.7", "cloudpickle": "3.1.3"}',
        b'{"cloudburst": "0.1.0", "python": 3.11, "cloudpickle": "3.1.3", "protocol": 1}',
        b'{"cloudburst": "0.1.0", "python": "3.11.7", "cloudpickle": "3.1.3", "protocol": true}',
        b'{"cloudburst": "0.1.0", "python": "3.11.7", "cloudpickle": "3.1.3", "protocol": "1"}',
        b'{"pad": "' + b"x" * MAX_INFO_BYTES + b'"}',
    ],
)
def test_anything_else_is_a_decode_error(answer):
    with pytest.raises(DecodeError, match="scheduler info"):
        VersionInfo.decode(answer)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.11.7", (3, 11)),
        ("3.13.0rc1", (3, 13)),
        ("3.1", (3, 1)),
        ("10.20.30.dev4", (10, 20)),
        ("3", None),
        ("", None),
    ],
)
def test_major_minor(version, expected):
    assert major_minor(version) == expected


@pytest.mark.parametrize(
    "cluster",
    [
        HERE,
        VersionInfo("0.1.0", "3.11.2", "3.1.0", 1),  # patch releases differ
        VersionInfo("0.9.0", "3.11.7", "3.1.3", 1),  # cloudburst differs: the wire stays compatible
        VersionInfo("0.1.0", "3.11.7", "3.1.3", 2),
        VersionInfo("0.1.0", "unknown", "3.1.3", 1),  # cannot be compared: not held against the connection
    ],
)
def test_compatible_versions(cluster):
    assert incompatibilities(HERE, cluster) == ()
    check_compatible(HERE, cluster, "127.0.0.9")


def test_another_python_minor_version_is_a_mismatch():
    assert incompatibilities(HERE, VersionInfo("0.1.0", "3.12.1", "3.1.3", 1)) == (("Python", "3.11.7", "3.12.1"),)


def test_another_cloudpickle_minor_version_is_a_mismatch():
    assert incompatibilities(HERE, VersionInfo("0.1.0", "3.11.7", "3.0.0", 1)) == (("cloudpickle", "3.1.3", "3.0.0"),)


def test_the_error_names_both_sides_why_and_the_way_out():
    with pytest.raises(VersionMismatch) as raised:
        check_compatible(HERE, VersionInfo("0.1.0", "3.12.1", "2.2.1", 1), "127.0.0.9")
    error = raised.value
    assert isinstance(error, CloudburstError)
    assert error.differences == (("Python", "3.11.7", "3.12.1"), ("cloudpickle", "3.1.3", "2.2.1"))
    message = str(error)
    assert "cluster at 127.0.0.9" in message
    assert "Python 3.11.7 here, 3.12.1 there" in message
    assert "cloudpickle 3.1.3 here, 2.2.1 there" in message
    assert "cloudpickle bytecode" in message
    assert "check_versions=False" in message
    assert "\n" not in message


def test_the_error_survives_pickling():
    error = VersionMismatch("127.0.0.9", (("Python", "3.11.7", "3.12.1"),))
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is VersionMismatch
    assert restored.differences == error.differences
    assert str(restored) == str(error)


def test_the_error_has_no_wire_code_of_its_own():
    # The client raises it before any request; were a server ever to send it, it goes as an invalid request.
    assert failure_response(VersionMismatch("h", (("Python", "3.11.7", "3.12.1"),))).error is ErrorCode.INVALID_REQUEST


def test_a_schedulers_incarnation_crosses_and_older_answers_without_it_still_read():
    info = dataclasses.replace(HERE, incarnation="abc")
    assert VersionInfo.decode(info.encode()) == info
    without = json.dumps({"cloudburst": "0.1.0", "python": "3.11.7", "cloudpickle": "3.1.3", "protocol": 1})
    assert VersionInfo.decode(without.encode()).incarnation == ""
    odd = json.dumps(
        {"cloudburst": "0.1.0", "python": "3.11.7", "cloudpickle": "3.1.3", "protocol": 1, "incarnation": 5}
    )
    assert VersionInfo.decode(odd.encode()).incarnation == ""
