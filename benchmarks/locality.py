"""A function over 10 x 8 MB arrays: read through the executor's local copies (cached) vs fetched (uncached).

Uncached rounds reference ten freshly written arrays, which the executor must fetch through its node cache from
the KVS; cached rounds reference the same arrays again, which the executor already holds. The function only
touches each array (so the figure is data movement, not arithmetic).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import write_atomically
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.shared.reference import CloudburstReference

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ARRAYS = 10
ARRAY_BYTES = 8 * 1024 * 1024


def first_elements(_: object, *arrays: np.ndarray) -> float:
    """Touches every array without doing real arithmetic on it."""
    return float(sum(array[0] for array in arrays))


def run(rounds: int) -> dict[str, list[float]]:
    """Per-round latencies in milliseconds for uncached and cached calls."""
    config = ClusterConfig(host=random_loopback_host(), executors=1, nodes=1, data_dir=None, report_period=1.0)
    timings: dict[str, list[float]] = {"uncached": [], "cached": []}
    with LocalCluster(config) as cluster:
        connection = cluster.connect(timeout=120)
        try:
            touch = connection.register(first_elements, "locality_touch")
            for round_number in range(rounds):
                keys = [f"locality/{round_number}/{i}" for i in range(ARRAYS)]
                for i, key in enumerate(keys):
                    connection.put_object(key, np.full(ARRAY_BYTES // 8, float(i), dtype=np.float64))
                references = [CloudburstReference(key) for key in keys]
                for label in ("uncached", "cached"):
                    start = time.perf_counter()
                    touch(*references).result()
                    timings[label].append((time.perf_counter() - start) * 1e3)
        finally:
            connection.close()
    return timings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``locality`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 6")


def main(args: argparse.Namespace) -> int:
    """Measures, prints and records the speed-up."""
    rounds = 2 if args.quick else 6
    timings = run(rounds)
    uncached, cached = statistics.median(timings["uncached"]), statistics.median(timings["cached"])
    table = (
        "# A function over 10 x 8 MB arrays: cached vs uncached\n\n"
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, Python {platform.python_version()}, "
        f"{rounds} rounds, 1 node, 1 executor, in-memory KVS.\n\n"
        "| reads | median call latency (ms) |\n|---|---:|\n"
        f"| uncached (fetched through the node cache from the KVS) | {uncached:.1f} |\n"
        f"| cached (the executor's local copies) | {cached:.1f} |\n\n"
        f"Speed-up: {uncached / cached:.1f}x\n"
    )
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    write_atomically(RESULTS_DIR / "locality.md", table)
    write_atomically(RESULTS_DIR / "locality.json", json.dumps({"rounds": rounds, **timings}))
    return 0
