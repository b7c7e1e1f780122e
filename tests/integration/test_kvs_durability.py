"""Acknowledged writes survive SIGKILL of the KVS node."""

import pytest

from cloudburst.clock import TimestampGenerator
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.lattices import LwwLattice, SetLattice

pytestmark = pytest.mark.integration

N = 1000


def test_acknowledged_puts_survive_sigkill_and_restart(tmp_path, fast_retry):
    data = tmp_path / "data"
    stamp = TimestampGenerator(3)
    expected: dict[str, object] = {}
    with KvsProcess(data) as node:
        with KvsClient(node.routing, retry=fast_retry) as client:
            for i in range(N):
                key = f"lww/{i % 250}"
                lattice = LwwLattice(timestamp=stamp(), value=f"v{i}".encode())
                client.put(key, lattice)
                expected[key] = lattice
                set_key = f"set/{i % 100}"
                client.put(set_key, SetLattice(frozenset({str(i).encode()})))
                previous = expected.get(set_key, SetLattice(frozenset()))
                expected[set_key] = previous.merge(SetLattice(frozenset({str(i).encode()})))
        node.kill()
        node.start()
        with KvsClient(node.routing, retry=fast_retry) as client:
            stored = client.get_many(expected)
    lost = [key for key, value in expected.items() if stored[key] != value]
    assert lost == [], f"{len(lost)} of {len(expected)} keys lost or stale after SIGKILL"
    assert sum(len(v.values) for k, v in stored.items() if k.startswith("set/")) == N
