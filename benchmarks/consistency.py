"""The cost of consistency: the same DAGs in NORMAL, SINGLE and MULTI, measured in one run.

The Retwis-like DAGs of :mod:`cloudburst.testing.retwis` (a post: two stages, three reads, two writes; a read of a
feed: two stages, up to a dozen reads) on a three-node local cluster. Modes alternate in rounds, so a drift of the
machine affects all alike. Latency is end to end at the client, with ``--clients`` requests outstanding.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

import cloudburst
from benchmarks.common import percentile, write_atomically
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.testing import retwis

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = (ConsistencyType.NORMAL, ConsistencyType.SINGLE, ConsistencyType.MULTI)
DAGS = ("retwis-post", "retwis-read")


def measure(requests: int, rounds: int, clients: int) -> dict[str, dict[str, list[float]]]:
    """Latencies in seconds by mode, then DAG."""
    latencies: dict[str, dict[str, list[float]]] = {mode.name: {dag: [] for dag in DAGS} for mode in MODES}
    with cloudburst.local(executors=2, nodes=3) as connection:
        retwis.register(connection)
        # Warm every function on every executor once, outside the measurement.
        for mode in MODES:
            retwis.run(connection, mode, requests=60, clients=clients)
        for round_number in range(rounds):
            for mode in MODES:
                outcome = retwis.run(connection, mode, requests=requests // rounds, clients=clients, seed=round_number)
                if outcome.errors:
                    raise RuntimeError(f"{mode.name}: {len(outcome.errors)} requests failed: {outcome.errors[0]}")
                for dag, values in outcome.latencies.items():
                    latencies[mode.name][dag].extend(values)
    return latencies


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``consistency`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="300 requests per mode instead of 3,000")
    parser.add_argument("--clients", type=int, default=2, help="requests outstanding at once (default 2)")


def main(args: argparse.Namespace) -> int:
    """Measures, prints and records the latencies."""
    requests = 300 if args.quick else 3000
    latencies = measure(requests, rounds=5, clients=args.clients)
    rows = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for dag in DAGS:
        normal_p99 = percentile(sorted(latencies["NORMAL"][dag]), 0.99)
        for mode in MODES:
            values = sorted(latencies[mode.name][dag])
            p50, p99 = statistics.median(values), percentile(values, 0.99)
            summary.setdefault(mode.name, {})[dag] = {"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "n": len(values)}
            rows.append(
                f"| {dag} | {mode.name} | {len(values)} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | {p99 / normal_p99:.2f}x |"
            )
    table = (
        "# The same DAGs in NORMAL, SINGLE and MULTI\n\n"
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, Python {platform.python_version()}, "
        f"3 nodes x 2 executors on loopback, {args.clients} requests outstanding, modes alternating in 5 rounds.\n\n"
        "| DAG | mode | requests | p50 (ms) | p99 (ms) | p99 / NORMAL p99 |\n|---|---|---:|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
    )
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    write_atomically(RESULTS_DIR / "consistency.md", table)
    write_atomically(RESULTS_DIR / "consistency.json", json.dumps({"clients": args.clients, "modes": summary}))
    return 0
