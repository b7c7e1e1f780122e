"""Parsing the management service's scheduler list, as schedulers and executors receive it."""

import pytest

from cloudburst.errors import DecodeError
from cloudburst.management.client import MAX_LISTED_SCHEDULERS, parse_scheduler_list
from cloudburst.protocol import codec


def test_a_list_of_hosts_is_taken_in_order_without_repeats():
    payload = codec.encode_string_set(["10.0.0.2", "10.0.0.1", "10.0.0.2"])
    assert parse_scheduler_list(payload) == ("10.0.0.2", "10.0.0.1")
    assert parse_scheduler_list(codec.encode_string_set([])) == ()


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\x00 not a StringSet",
        codec.encode_string_set([""]),
        codec.encode_string_set(["tcp://10.0.0.1:5007"]),
        codec.encode_string_set(["a host"]),
        codec.encode_string_set([f"10.0.{i // 256}.{i % 256}" for i in range(MAX_LISTED_SCHEDULERS + 1)]),
    ],
    ids=["garbage", "empty", "endpoint", "space", "too-many"],
)
def test_anything_else_is_refused(payload):
    with pytest.raises(DecodeError):
        parse_scheduler_list(payload)
