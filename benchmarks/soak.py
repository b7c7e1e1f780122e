"""A local cluster at a steady load for a long time: does any process's memory keep growing, does anything fail?

The load is a fixed mix, paced to a steady rate: one-shot calls, a two-function DAG, KVS writes and reads through
functions (on a bounded key set, so the data itself stops growing) and, now and then, a causal MULTI call. Every
few seconds the resident set size of each cluster process (and of this client) is read from ``/proc``. After a
warm-up, the report gives each process's RSS at the start and at the end, a least-squares growth rate (MB/hour),
the calls completed and the errors by type.

The KVS keeps its data on disk, as deployments do: every one-shot call's result is stored under a fresh key, and
in memory that would be the data growing, not a leak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cloudburst
from benchmarks.common import write_atomically
from benchmarks.contenders.cloudburst_functions import increment, square
from cloudburst.client.connection import Connection
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Operations per second: a steady load two cores sustain with room to spare, so latency does not drift.
RATE = 40.0
#: Keys the KVS workload cycles through.
KEYS = 64
CALL_TIMEOUT = 30.0
MB = 1024 * 1024


def store_and_load(lib: object, key: str, value: int) -> int:
    """A KVS write, then a read of it, through the executor's user library."""
    lib.put(key, value)  # type: ignore[attr-defined]
    return int(lib.get(key))  # type: ignore[attr-defined]


def causal_bump(lib: object, key: str) -> int:
    """A causal read-modify-write."""
    value = (lib.causal_get(key) or 0) + 1  # type: ignore[attr-defined]
    lib.causal_put(key, value)  # type: ignore[attr-defined]
    return int(value)


def rss_bytes(pid: int) -> int | None:
    """The resident set size of ``pid`` (``VmRSS``), or ``None`` once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def cluster_processes(cluster: LocalCluster) -> dict[str, int]:
    """Each process of ``cluster`` by role name (``kvs``, ``scheduler``, ``cache@host``, ``executor-0@host``),
    and this process, which runs the client (and the management service, when there is one)."""
    # The cluster exposes its executors' pids only; the children themselves name every role.
    groups = list(cluster._nodes.values())
    children = [
        *([cluster._kvs] if cluster._kvs else []),
        *cluster._schedulers,
        *(group.cache for group in groups),
        *(executor for group in groups for executor in group.executors),
    ]
    return {"client": os.getpid(), **{child.name: child.pid for child in children if child.running()}}


def growth_per_hour(samples: list[tuple[float, int]]) -> float:
    """The least-squares slope of (seconds, bytes) samples, in MB per hour; 0 for fewer than two samples."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_v = sum(v for _, v in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread
    return slope * 3600 / MB


@dataclass
class Recording:
    """What one run saw: RSS samples (seconds since start, pid name -> bytes), calls and errors by operation."""

    warmup: float
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    completed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def series(self, name: str) -> list[tuple[float, int]]:
        """One process's samples after the warm-up."""
        return [(t, rss[name]) for t, rss in self.samples if t >= self.warmup and name in rss]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per process: RSS at the start (after warm-up) and at the end, in MB, and the growth rate in MB/hour."""
        names = sorted({name for _, rss in self.samples for name in rss})
        rows: dict[str, dict[str, float]] = {}
        for name in names:
            series = self.series(name)
            if series:
                rows[name] = {
                    "start_mb": series[0][1] / MB,
                    "end_mb": series[-1][1] / MB,
                    "growth_mb_per_hour": growth_per_hour(series),
                }
        return rows


def operations(connection: Connection) -> list[tuple[str, Callable[[int], object]]]:
    """The load's mix, one entry per operation slot: what each call sends and what it must return."""

    def one_shot(i: int) -> None:
        expect(connection.call("soak_increment", i).result(timeout=CALL_TIMEOUT), i + 1)

    def dag(i: int) -> None:
        call = connection.build_dag_call("soak_chain", {"soak_increment": i % 1000}, direct_response=True)
        expect(connection.call_dag(call).result(timeout=CALL_TIMEOUT), (i % 1000 + 1) ** 2)

    def kvs(i: int) -> None:
        expect(connection.call("soak_store", f"soak/{i % KEYS}", i).result(timeout=CALL_TIMEOUT), i)

    def causal(i: int) -> None:
        bumped = connection.call("soak_causal", f"soak/causal/{i % 4}", consistency=cloudburst.MULTI)
        if not isinstance(bumped.result(timeout=CALL_TIMEOUT), int):
            raise TypeError("a causal bump returned no count")

    mix = [("one-shot", one_shot), ("dag", dag), ("kvs", kvs)] * 6 + [("one-shot", one_shot)]
    return [*mix, ("causal-multi", causal)]


def expect(got: object, wanted: object) -> None:
    if got != wanted:
        raise ValueError(f"got {got!r}, expected {wanted!r}")


def register(connection: Connection) -> None:
    connection.register(increment, "soak_increment")
    connection.register(square, "soak_square")
    connection.register(store_and_load, "soak_store")
    connection.register(causal_bump, "soak_causal")
    connection.register_dag("soak_chain", ["soak_increment", "soak_square"], [("soak_increment", "soak_square")])


def run(seconds: float, warmup: float, sample_every: float, executors: int) -> Recording:
    """Runs the load for ``seconds`` (the warm-up included) and records it."""
    recording = Recording(warmup=warmup)
    with tempfile.TemporaryDirectory(prefix="cloudburst-soak-") as data:
        config = ClusterConfig(host=random_loopback_host(), executors=executors, data_dir=Path(data), report_period=1.0)
        with LocalCluster(config) as cluster, cluster.connect(timeout=60) as connection:
            register(connection)
            processes = cluster_processes(cluster)
            start = time.monotonic()
            stop = threading.Event()

            def sample() -> None:
                while True:
                    rss = {name: size for name, pid in processes.items() if (size := rss_bytes(pid)) is not None}
                    recording.samples.append((time.monotonic() - start, rss))
                    if stop.wait(sample_every):
                        return

            sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
            sampler.start()
            mix = operations(connection)
            index = 0
            try:
                while (elapsed := time.monotonic() - start) < seconds:
                    name, operation = mix[index % len(mix)]
                    try:
                        operation(index)
                    except Exception as error:  # every failure is a finding: counted by type, never fatal
                        recording.errors[f"{name}: {type(error).__name__}"] += 1
                        if len(recording.first_errors) < 10:
                            recording.first_errors.append(f"{elapsed:.1f} s, {name}: {type(error).__name__}: {error}")
                    else:
                        recording.completed[name] += 1
                    index += 1
                    # Paced, not flat out: a steady load is what shows a leak, a saturated one shows queueing.
                    time.sleep(max(0.0, start + index / RATE - time.monotonic()))
            finally:
                stop.set()
                sampler.join()
                recording.seconds = time.monotonic() - start
    return recording


def report(recording: Recording, minutes: float) -> str:
    """The Markdown table of a run."""
    calls = sum(recording.completed.values())
    errors = sum(recording.errors.values())
    lines = [
        "# Soak: a steady mixed load on a local cluster",
        "",
        f"{minutes:g} minutes at {RATE:g} operations/s (one-shot calls, a 2-function DAG, KVS writes and reads "
        f"through functions, 1 in 20 a causal MULTI call); RSS from /proc every few seconds, the first "
        f"{recording.warmup:g} s being warm-up. Calls completed: {calls} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(recording.completed.items()))}); errors: {errors}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(recording.errors.items()))})" if errors else "")
        + ".",
        "",
        "| process | RSS after warm-up (MB) | RSS at the end (MB) | growth (MB/hour, least squares) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in recording.summary().items():
        lines.append(f"| {name} | {row['start_mb']:.1f} | {row['end_mb']:.1f} | {row['growth_mb_per_hour']:+.1f} |")
    if recording.first_errors:
        lines += ["", "First errors:", "", *(f"- {line}" for line in recording.first_errors)]
    return "\n".join(lines) + "\n"


def plot(recording: Recording, path: Path) -> bool:
    """RSS of every process over time; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name in sorted({name for _, rss in recording.samples for name in rss}):
        series = [(t / 60, rss[name] / MB) for t, rss in recording.samples if name in rss]
        axis.plot([t for t, _ in series], [v for _, v in series], label=name)
    axis.axvline(recording.warmup / 60, color="grey", linewidth=0.5)
    axis.set_xlabel("minutes")
    axis.set_ylabel("RSS (MB)")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``soak`` subcommand's options."""
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run, warm-up included")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds before RSS counts (default: a tenth of the run, at most 60)"
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--executors", type=int, default=2, help="executors on the one node")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    """Runs the soak, prints and records the outcome; non-zero when any call failed."""
    seconds = args.minutes * 60
    warmup = min(60.0, seconds / 10) if args.warmup is None else args.warmup
    recording = run(seconds, warmup, args.sample_every, args.executors)
    table = report(recording, args.minutes)
    print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output_dir / "soak.md", table)
    raw = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "minutes": args.minutes,
        "seconds": recording.seconds,
        "warmup_s": recording.warmup,
        "rate_per_s": RATE,
        "completed": dict(recording.completed),
        "errors": dict(recording.errors),
        "first_errors": recording.first_errors,
        "processes": recording.summary(),
        "samples": [{"t": t, "rss": rss} for t, rss in recording.samples],
    }
    write_atomically(args.output_dir / "soak.json", json.dumps(raw, indent=2) + "\n")
    if not plot(recording, args.output_dir / "soak.png"):
        print("matplotlib is not installed: no chart (pip install matplotlib)")
    return 0 if not recording.errors else 1
