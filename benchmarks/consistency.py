"""The cost of consistency: the same DAGs in NORMAL, SINGLE and MULTI, measured in one run.

The Retwis-like DAGs of :mod:`cloudburst.testing.retwis` (a post: two stages, three reads, two writes; a read of a
feed: two stages, up to a dozen reads; an edit: read, write, re-read, write, then both read again downstream) on a
three-node local cluster, in each mode and in MULTI without declared reads. Variants alternate in rounds, so a drift
of the machine affects all alike. Latency is end to end at the client, with ``--clients`` requests outstanding.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cloudburst
from benchmarks.common import percentile, write_atomically
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.testing import retwis

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DAGS = retwis.DAGS


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a mode, and whether the first stages declare what they read."""

    name: str
    mode: ConsistencyType
    declare_reads: bool = True


VARIANTS = (
    Variant("NORMAL", ConsistencyType.NORMAL),
    Variant("SINGLE", ConsistencyType.SINGLE),
    Variant("MULTI", ConsistencyType.MULTI),
    Variant("MULTI, undeclared reads", ConsistencyType.MULTI, declare_reads=False),
)


@dataclass
class Measured:
    """Latencies in seconds by variant, then DAG; conflict retries and failed requests by variant."""

    latencies: dict[str, dict[str, list[float]]]
    retries: dict[str, int]
    failures: dict[str, list[str]]


def measure(requests: int, rounds: int, clients: int) -> Measured:
    """Runs every variant in alternating rounds."""
    measured = Measured(
        {v.name: {dag: [] for dag in DAGS} for v in VARIANTS},
        dict.fromkeys((v.name for v in VARIANTS), 0),
        {v.name: [] for v in VARIANTS},
    )
    with cloudburst.local(executors=2, nodes=3) as connection:
        retwis.register(connection)

        def run(variant: Variant, count: int, seed: int) -> retwis.RetwisRun:
            return retwis.run(
                connection,
                variant.mode,
                requests=count,
                clients=clients,
                read_ratio=0.4,
                edit_ratio=0.2,
                declare_reads=variant.declare_reads,
                seed=seed,
            )

        # Warm every function on every executor once, outside the measurement.
        for variant in VARIANTS:
            run(variant, 60, seed=99)
        for round_number in range(rounds):
            for variant in VARIANTS:
                outcome = run(variant, requests // rounds, seed=round_number)
                measured.failures[variant.name].extend(f"{type(e).__name__}: {e}" for e in outcome.errors)
                measured.retries[variant.name] += outcome.conflicts
                for dag, values in outcome.latencies.items():
                    measured.latencies[variant.name][dag].extend(values)
    return measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``consistency`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="300 requests per variant instead of 3,000")
    parser.add_argument("--clients", type=int, default=2, help="requests outstanding at once (default 2)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    """Measures, prints and records the latencies."""
    requests = 300 if args.quick else 3000
    measured = measure(requests, rounds=5, clients=args.clients)
    latencies = measured.latencies
    rows = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for dag in DAGS:
        normal_p99 = percentile(sorted(latencies["NORMAL"][dag]), 0.99)
        for variant in VARIANTS:
            values = sorted(latencies[variant.name][dag])
            if not values:
                rows.append(f"| {dag} | {variant.name} | 0 | - | - | - |")
                continue
            p50, p99 = statistics.median(values), percentile(values, 0.99)
            summary.setdefault(variant.name, {})[dag] = {"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "n": len(values)}
            rows.append(
                f"| {dag} | {variant.name} | {len(values)} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | "
                f"{p99 / normal_p99:.2f}x |"
            )
    conflicts = ", ".join(f"{name}: {count}" for name, count in measured.retries.items())
    failed = ", ".join(f"{name}: {len(errors)}" for name, errors in measured.failures.items())
    examples = sorted({error.split(" (")[0] for errors in measured.failures.values() for error in errors})[:3]
    table = (
        "# The same DAGs in NORMAL, SINGLE and MULTI\n\n"
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, Python {platform.python_version()}, "
        f"3 nodes x 2 executors on loopback, {args.clients} requests outstanding, variants alternating in 5 rounds; "
        "40 % reads, 20 % edits (read-write-reread-write), 40 % posts. A request is timed from its first attempt to "
        f"its result, retries after a retryable CausalConflict included (at most 5 attempts). Retries: {conflicts}. "
        f"Failed requests: {failed}{' (' + '; '.join(examples) + ')' if examples else ''}.\n\n"
        "| DAG | mode | requests | p50 (ms) | p99 (ms) | p99 / NORMAL p99 |\n|---|---|---:|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
    )
    print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output_dir / "consistency.md", table)
    result = {
        "clients": args.clients,
        "variants": summary,
        "conflict_retries": measured.retries,
        "failed": {name: len(errors) for name, errors in measured.failures.items()},
    }
    write_atomically(args.output_dir / "consistency.json", json.dumps(result))
    return 0
