"""Cross-node visibility of a NORMAL write: how long after a write is acknowledged on one node another node's cache
serves the new value.

Two nodes of a local cluster (each a cache on its own loopback address). The writer writes through node A's cache;
a reader polls node B's cache, which already holds the key, until it returns the new value. The delay is measured
from the writer's acknowledgement, so it is what a reader on another node waits beyond the write itself; it
includes one cache round trip per poll, so it overstates the KVS push slightly.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import percentile, write_atomically
from cloudburst.cache.client import NodeCacheClient
from cloudburst.clock import TimestampGenerator, writer_id_for
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.lattices import LwwLattice

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KEY = "visibility/probe"
#: A reader gives up on one write after this long (it never should: pushes arrive in microseconds).
GIVE_UP_SECONDS = 5.0


def measure(writes: int) -> list[int]:
    """Delays in nanoseconds, one per write."""
    config = ClusterConfig(host=random_loopback_host(), executors=1, nodes=2, data_dir=None, report_period=1.0)
    stamp = TimestampGenerator(writer_id_for("visibility-bench"))
    delays = []
    with LocalCluster(config) as cluster:
        node_a, node_b = config.node_hosts()
        with (
            NodeCacheClient(cluster.cache_addresses[node_a], host=node_a) as writer,
            NodeCacheClient(cluster.cache_addresses[node_b], host=node_b) as reader,
        ):
            writer.put(KEY, LwwLattice(stamp(), b"0"))
            reader.get(KEY)  # node B now caches the key and reports it
            time.sleep(0.5)
            for n in range(1, writes + 1):
                value = str(n).encode()
                writer.put(KEY, LwwLattice(stamp(), value))
                acknowledged = time.perf_counter_ns()
                while True:
                    seen = reader.get(KEY)
                    if isinstance(seen, LwwLattice) and seen.value == value:
                        break
                    if time.perf_counter_ns() - acknowledged > GIVE_UP_SECONDS * 1e9:
                        raise RuntimeError(f"write {n} never became visible on the other node")
                delays.append(time.perf_counter_ns() - acknowledged)
    return delays


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``visibility`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="100 writes instead of 2,000")


def main(args: argparse.Namespace) -> int:
    """Measures, prints and records the delays."""
    writes = 100 if args.quick else 2000
    delays = sorted(measure(writes))
    p50, p99 = statistics.median(delays) / 1e3, percentile(delays, 0.99) / 1e3
    table = (
        "# Cross-node visibility of a NORMAL write\n\n"
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, Python {platform.python_version()}, "
        f"{writes} writes through node A's cache, read through node B's cache (2 nodes on loopback).\n\n"
        "| delay after the writer's acknowledgement | p50 (us) | p99 (us) | max (us) |\n|---|---:|---:|---:|\n"
        f"| until node B's cache serves the new value | {p50:.1f} | {p99:.1f} | {delays[-1] / 1e3:.1f} |\n"
    )
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    write_atomically(RESULTS_DIR / "visibility.md", table)
    write_atomically(
        RESULTS_DIR / "visibility.json",
        json.dumps({"writes": writes, "p50_us": p50, "p99_us": p99, "delays_ns": delays}),
    )
    return 0
