"""Throughput and tail latency under failures: the same mixed load (3-stage DAG requests and one-shot calls from
four client threads) on a fresh local cluster, once with no failure and once with a random executor killed with
SIGKILL every second. Every request must still end with its correct result; the cost of the failures shows as
lower throughput and a longer tail (requests re-run after their executor died wait for the loss to be noticed).

Conditions alternate over rounds, each on its own cluster, so that drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import percentile, write_atomically
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.testing.chaos import ProcessKiller, register_workload, run_load

RESULTS_DIR = Path(__file__).resolve().parent / "results"
THREADS = 4
EXECUTORS = 4
DEADLINE = 60.0
KILL_EVERY = 1.0


@dataclass
class Round:
    """One round's figures."""

    kills: int
    requests: int
    seconds: float
    outcomes: dict[str, int]
    late: int
    p50_ms: float
    p99_ms: float
    client_retries: dict[str, int]


def measure(kill: bool, seconds: float) -> Round:
    """One round: the load for ``seconds`` on a fresh cluster, with or without kills."""
    config = ClusterConfig(
        host=random_loopback_host(), executors=EXECUTORS, data_dir=None, report_period=1.0, max_restarts=100_000
    )
    with LocalCluster(config) as cluster:
        cluster.supervise_in_background(0.05)
        with cluster.connect(timeout=DEADLINE) as connection:
            register_workload(connection)
            run_load(connection, THREADS, 50, deadline=DEADLINE)  # warm: functions loaded, DAG pinned
            killer = ProcessKiller(cluster, KILL_EVERY) if kill else None
            stop = threading.Event()
            timer = threading.Timer(seconds, stop.set)
            started = time.monotonic()
            timer.start()
            if killer is not None:
                killer.start()
            try:
                tally = run_load(connection, THREADS, None, deadline=DEADLINE, until=stop)
            finally:
                timer.cancel()
                if killer is not None:
                    killer.stop()
            took = time.monotonic() - started
            retries = connection.retry_counts()
    micros = sorted(int(latency * 1e6) for latency in tally.latencies) or [0]
    return Round(
        kills=len(killer.kills) if killer is not None else 0,
        requests=tally.ended,
        seconds=took,
        outcomes=dict(tally.outcomes),
        late=len(tally.late),
        p50_ms=percentile(micros, 0.5) / 1e3,
        p99_ms=percentile(micros, 0.99) / 1e3,
        client_retries=retries,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``faults`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="one 8 s round per condition instead of three of 20 s")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where faults.md and .json go")


def main(args: argparse.Namespace) -> int:
    """Measures both conditions, alternating, prints and records the table."""
    rounds, seconds = (1, 8.0) if args.quick else (3, 20.0)
    results: dict[str, list[Round]] = {"none": [], "kill": []}
    for _ in range(rounds):
        for condition in ("none", "kill"):
            results[condition].append(measure(condition == "kill", seconds))
            print(condition, json.dumps(asdict(results[condition][-1])), flush=True)
    rows = []
    for condition, label in (("none", "no failure"), ("kill", f"an executor killed every {KILL_EVERY:g} s")):
        runs = results[condition]
        requests = sum(run.requests for run in runs)
        elapsed = sum(run.seconds for run in runs)
        outcomes: Counter[str] = Counter()
        for run in runs:
            outcomes.update(run.outcomes)
        p50 = sorted(run.p50_ms for run in runs)[len(runs) // 2]
        p99 = max(run.p99_ms for run in runs)
        kills = sum(run.kills for run in runs)
        wrong = requests - outcomes["correct"]
        rows.append(
            f"| {label} | {requests / elapsed:,.0f} | {p50:.2f} | {p99:.1f} | {kills} | {requests:,} | {wrong} |"
        )
    table = (
        "# Throughput and tail latency under failures\n\n"
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, Python {platform.python_version()}, "
        f"{rounds} round(s) of {seconds:g} s per condition, alternating, each on a fresh local cluster of "
        f"{EXECUTORS} executors; {THREADS} client threads, 8 requests in flight each, half 3-stage DAG requests and "
        "half one-shot calls. p50 is the median of the rounds' medians, p99 the worst round's.\n\n"
        "| condition | requests/s | p50 (ms) | p99 (ms) | kills | requests | not correct |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output_dir / "faults.md", table)
    as_json = {condition: [asdict(run) for run in runs] for condition, runs in results.items()}
    write_atomically(args.output_dir / "faults.json", json.dumps(as_json, indent=1))
    return 0
