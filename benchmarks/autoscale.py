"""Autoscaling under a rising load: a 50 ms function driven at increasing rates on a cluster that starts with one
node; the management service adds nodes, then drains them once the load stops.

The load is open-loop (calls are sent at the target rate whatever the latency), so queueing shows in the
latencies until capacity arrives. Every second the node count and the calls in flight are sampled; each completed
call's latency is recorded with its completion time. Output: a table per load phase, a PNG of p50/p99 latency and
node count over time, and the raw samples.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import percentile, write_atomically
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.errors import CloudburstError
from cloudburst.management.policy import ManagementPolicyConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SLEEP = 0.05
#: Target calls per second of each phase (one 2-executor node absorbs about 40 of these 50 ms calls a second).
FULL_RATES = (10, 30, 60, 90, 120)
QUICK_RATES = (10, 40, 80)


def sleepy(lib: object, seconds: float) -> float:
    """The workload: 50 ms of (simulated) work."""
    time.sleep(seconds)
    return seconds


@dataclass(slots=True)
class Recording:
    """What one run saw: (completion time, latency) per call, (time, nodes, in flight) per second, failures."""

    latencies: list[tuple[float, float]] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    phases: list[tuple[int, float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    drained_after: float | None = None


def run(rates: tuple[int, ...], phase_seconds: float, drain_timeout: float) -> Recording:
    """Drives the load and records it; returns once the cluster is back to one node (or the timeout passed)."""
    scaling = ManagementPolicyConfig(
        report_period=1.0,
        thread_timeout=3.0,
        grace_period=4.0,
        min_nodes=1,
        max_nodes=4,
        scale_increase=1,
        replica_cooldown=2.0,
    )
    config = ClusterConfig(
        host=random_loopback_host(), executors=2, data_dir=None, report_period=0.5, autoscale=True, scaling=scaling
    )
    recording = Recording()
    lock = threading.Lock()
    in_flight = 0
    with LocalCluster(config) as cluster:
        connection = cluster.connect(timeout=60)
        connection.register(sleepy, "sleepy")
        start = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                with lock:
                    recording.samples.append((time.monotonic() - start, len(cluster.nodes()), in_flight))

        def one_call() -> None:
            nonlocal in_flight
            sent = time.monotonic()
            try:
                connection.call("sleepy", SLEEP).result(timeout=60)
            except CloudburstError as error:
                with lock:
                    recording.failures.append(f"{type(error).__name__}: {error}")
            else:
                done = time.monotonic()
                with lock:
                    recording.latencies.append((done - start, done - sent))
            finally:
                with lock:
                    in_flight -= 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(max_workers=256) as pool:
            for rate in rates:
                phase_start = time.monotonic()
                sent = 0
                while (elapsed := time.monotonic() - phase_start) < phase_seconds:
                    due = int(elapsed * rate) + 1
                    while sent < due:
                        with lock:
                            in_flight += 1
                        pool.submit(one_call)
                        sent += 1
                    time.sleep(0.005)
                recording.phases.append((rate, phase_start - start, time.monotonic() - start))
        stopped = time.monotonic()
        while len(cluster.nodes()) > 1 and time.monotonic() - stopped < drain_timeout:
            time.sleep(0.5)
        if len(cluster.nodes()) == 1:
            recording.drained_after = time.monotonic() - stopped
        time.sleep(1.0)  # one more sample at the end
        stop_sampling.set()
        sampler.join()
        connection.close()
    return recording


def summarize(recording: Recording) -> list[dict[str, float | int]]:
    """Per phase: calls completed in it, p50/p99 latency, the most nodes seen."""
    rows = []
    for rate, begin, end in recording.phases:
        latencies = sorted(latency for done, latency in recording.latencies if begin <= done < end)
        nodes = max((n for t, n, _ in recording.samples if begin <= t < end), default=1)
        rows.append(
            {
                "rate": rate,
                "completed": len(latencies),
                "p50_ms": statistics.median(latencies) * 1e3 if latencies else float("nan"),
                "p99_ms": percentile(latencies, 0.99) * 1e3 if latencies else float("nan"),
                "nodes": nodes,
            }
        )
    return rows


def plot(recording: Recording, path: Path) -> bool:
    """p50/p99 per second and the node count over time; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    seconds = int(max((t for t, _ in recording.latencies), default=0)) + 1
    times, p50s, p99s = [], [], []
    for second in range(seconds):
        window = sorted(latency for done, latency in recording.latencies if second <= done < second + 1)
        if window:
            times.append(second + 0.5)
            p50s.append(statistics.median(window) * 1e3)
            p99s.append(percentile(window, 0.99) * 1e3)
    figure, latency_axis = plt.subplots(figsize=(9, 4.5))
    latency_axis.plot(times, p50s, label="p50 latency")
    latency_axis.plot(times, p99s, label="p99 latency")
    latency_axis.set_xlabel("seconds")
    latency_axis.set_ylabel("latency (ms)")
    latency_axis.set_yscale("log")
    node_axis = latency_axis.twinx()
    node_axis.step([t for t, _, _ in recording.samples], [n for _, n, _ in recording.samples], "k--", label="nodes")
    node_axis.set_ylabel("nodes")
    for rate, begin, _ in recording.phases:
        latency_axis.axvline(begin, color="grey", linewidth=0.5)
        latency_axis.text(begin + 0.2, latency_axis.get_ylim()[1] * 0.8, f"{rate}/s", fontsize=8)
    lines = latency_axis.get_legend_handles_labels()
    more = node_axis.get_legend_handles_labels()
    latency_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``autoscale`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="three short phases instead of five")


def main(args: argparse.Namespace) -> int:
    """Runs the load, prints and records the outcome."""
    rates, phase_seconds = (QUICK_RATES, 8.0) if args.quick else (FULL_RATES, 15.0)
    recording = run(rates, phase_seconds, drain_timeout=90.0)
    rows = summarize(recording)
    drained = "never" if recording.drained_after is None else f"{recording.drained_after:.1f} s"
    table = (
        "# Autoscaling under a rising load\n\n"
        f"A 50 ms function, open-loop load, {phase_seconds:g} s per phase; the cluster starts with 1 node of 2 "
        f"executors (max 4 nodes). Calls completed: {len(recording.latencies)}, failed: {len(recording.failures)}. "
        f"Back to 1 node {drained} after the load stopped.\n\n"
        "| calls/s | completed | p50 (ms) | p99 (ms) | nodes (max) |\n|---:|---:|---:|---:|---:|\n"
        + "\n".join(
            f"| {r['rate']} | {r['completed']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['nodes']} |" for r in rows
        )
        + "\n"
    )
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    write_atomically(RESULTS_DIR / "autoscale.md", table)
    raw = {
        "phases": rows,
        "samples": recording.samples,
        "failures": recording.failures,
        "drained_after_s": recording.drained_after,
    }
    write_atomically(RESULTS_DIR / "autoscale.json", json.dumps(raw))
    if not plot(recording, RESULTS_DIR / "autoscale.png"):
        print("matplotlib is not installed: no chart (pip install matplotlib)")
    return 0 if not recording.failures else 1
