"""Several nodes on distinct loopback addresses: each a cache and its executors."""

import time

import pytest

import cloudburst

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cb():
    with cloudburst.local(executors=1, nodes=3) as connection:
        yield connection


def test_executors_run_on_three_node_addresses(cb):
    give_up = time.monotonic() + 20
    while len({e.ip for e in cb.status().executors}) < 3:
        assert time.monotonic() < give_up, cb.status()
        time.sleep(0.1)
    where = cb.register(lambda lib: lib.getid()[0], "mn_where")
    seen = {where().result(timeout=30) for _ in range(60)}
    assert len(seen) >= 2


def test_a_write_on_one_node_is_read_on_the_others(cb):
    cb.register(lambda lib, key, value: lib.put(key, value) and lib.getid()[0], "mn_write")

    def read(lib, key, expected):
        give_up = time.monotonic() + 10
        while lib.get(key) != expected:
            if time.monotonic() > give_up:
                return None
            time.sleep(0.005)
        return lib.getid()[0]

    cb.register(read, "mn_read")
    readers = set()
    for version in range(30):
        writer = cb.call("mn_write", "mn/shared", version).result(timeout=30)
        reader = cb.call("mn_read", "mn/shared", version).result(timeout=30)
        assert reader is not None, f"version {version} written on {writer} was never seen"
        readers.add((writer, reader))
    assert any(w != r for w, r in readers), "no read happened on another node than the write"
