"""``cloudburst demo``: start a local deployment, run a representative workload, print what happened.

Today the deployment is the durable lattice KVS; the demo shows lattice merges from concurrent writers, value
serialization, latency over loopback, and that acknowledged writes survive the node being killed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cloudburst.clock import TimestampGenerator, writer_id_for
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.lattices import SetLattice
from cloudburst.protocol.values import from_lattice, to_lattice


def _latencies(operation: Callable[[int], object], count: int) -> tuple[float, float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        operation(i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99) - 1] * 1e6


def run_demo(data_dir: Path | None, operations: int) -> int:
    """Runs the demo; returns the exit code (non-zero if any check failed)."""
    with tempfile.TemporaryDirectory(prefix="cloudburst-demo-") as scratch:
        directory = data_dir or Path(scratch)
        print(f"Starting a KVS node (data in {directory}) ...")
        with KvsProcess(directory) as node:
            print(f"  routing {node.routing}")
            return _workload(node, operations)


def _workload(node: KvsProcess, operations: int) -> int:
    failures = 0

    def check(label: str, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        print(f"  [{'ok' if ok else 'FAILED'}] {label}")

    alice_clock = TimestampGenerator(writer_id_for("alice"))
    bob_clock = TimestampGenerator(writer_id_for("bob"))
    with KvsClient(node.routing) as alice, KvsClient(node.routing) as bob:
        print("Values and lattices:")
        profile = {"name": "Ada", "languages": ["python", "c"], "score": 42.5}
        alice.put("demo/profile", to_lattice(profile, alice_clock))
        check("a dict round-trips through the KVS", from_lattice(alice.get("demo/profile")) == profile)  # type: ignore[arg-type]
        blob = bytes(range(256)) * 4096
        alice.put("demo/blob", to_lattice(blob, alice_clock))
        check("1 MiB of raw bytes round-trips unchanged", from_lattice(alice.get("demo/blob")) == blob)  # type: ignore[arg-type]

        alice.put("demo/tags", to_lattice({"fast", "stateful"}, alice_clock))
        bob.put("demo/tags", to_lattice({"serverless"}, bob_clock))
        tags = alice.get("demo/tags")
        check(
            "concurrent set writes merge by union: " + str(sorted(from_lattice(tags) if tags else [])),
            isinstance(tags, SetLattice) and len(tags.values) == 3,
        )
        alice.put("demo/leader", to_lattice("alice", alice_clock))
        bob.put("demo/leader", to_lattice("bob", bob_clock))
        check("last writer wins on registers: leader = bob", from_lattice(alice.get("demo/leader")) == "bob")  # type: ignore[arg-type]

        print(f"Latency over loopback ({operations} operations each):")
        payload = to_lattice(b"x" * 64, alice_clock)
        put_p50, put_p99 = _latencies(lambda i: alice.put(f"demo/bench/{i % 100}", payload), operations)
        get_p50, get_p99 = _latencies(lambda i: alice.get(f"demo/bench/{i % 100}"), operations)
        print(f"  PUT (durable merge): median {put_p50:7.1f} us   p99 {put_p99:7.1f} us")
        print(f"  GET                : median {get_p50:7.1f} us   p99 {get_p99:7.1f} us")

        acknowledged = {f"demo/durable/{i}": i for i in range(200)}
        for key, value in acknowledged.items():
            alice.put(key, to_lattice(value, alice_clock))

    print("Crash recovery:")
    node.kill()
    print("  killed the KVS node with SIGKILL; restarting it on the same data directory")
    node.start()
    with KvsClient(node.routing) as reader:
        stored = reader.get_many(acknowledged)
        survived = sum(
            1 for key, value in acknowledged.items() if (found := stored[key]) and from_lattice(found) == value
        )
        check(
            f"{survived}/{len(acknowledged)} acknowledged writes survived the crash",
            survived == len(acknowledged),
        )
        check("merged set survived too", reader.get("demo/tags") == tags)
    print("Demo finished." if not failures else f"Demo finished with {failures} failed check(s).")
    return 1 if failures else 0
