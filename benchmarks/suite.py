"""Cloudburst next to Ray (tasks, actors and Compiled Graphs), Dask distributed and bare-ZeroMQ floors: the same
workloads, one run, one report.

Every system is started by the benchmark, measured in alternating rounds (the order rotating from round to round,
so a drift of the machine hits all alike) and stopped afterwards. Each system's figure is compared with the floor
measured in the same run, the bare pyzmq transport its calls cannot beat; that ratio moves far less with the
machine than absolute latency does. Ray and Dask are optional: a system that cannot be imported (or fails to start)
is skipped with a note. The three Ray contenders share one Ray instance. The locality workload (a function over
10 x 8 MB arrays, cached vs uncached) has no peer equivalent on one machine and runs for Cloudburst only, after the
others have stopped.

Results: a Markdown table on stdout and in ``suite.md``, the numbers in ``suite.json``, the ratios in ``suite.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import zmq

from benchmarks import locality
from benchmarks.common import System, measure_round, percentile, placement, placement_text, write_atomically
from benchmarks.contenders import (
    LARGE_ARGUMENT,
    NULL,
    READ,
    THROUGHPUT,
    WORKLOADS,
    Contender,
    cloudburst_functions,
    dask_futures,
    floors,
    ray_actors,
    ray_compiled,
    ray_tasks,
)
from benchmarks.progress import RunProgress
from benchmarks.runtime_latency import (
    Burst,
    cpu_seconds,
    descendants,
    latency_row,
    machine_busy_seconds,
    measure_burst,
    other_load,
    pin_children,
    role,
    throughput_row,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Optional peers: name, the context manager that starts one, given how many workers (CPUs) it may use.
PEERS: tuple[tuple[str, Callable[[int], contextlib.AbstractContextManager[Contender]]], ...] = (
    (ray_tasks.NAME, ray_tasks.started),
    (ray_actors.NAME, ray_actors.started),
    (ray_compiled.NAME, ray_compiled.started),
    (dask_futures.NAME, dask_futures.started),
)
#: The packages whose versions a result records.
PACKAGES = ("cloudburst", "pyzmq", "ray", "dask", "distributed", "numpy", "matplotlib")


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    mode: str
    rounds: int
    calls_per_round: int
    outstanding: int
    warmup_calls: int
    locality_rounds: int
    workers: int = 2
    pin: bool = True


QUICK = Config(mode="quick", rounds=4, calls_per_round=50, outstanding=2_000, warmup_calls=20, locality_rounds=2)
FULL = Config(mode="full", rounds=7, calls_per_round=300, outstanding=10_000, warmup_calls=100, locality_rounds=6)


@dataclass(eq=False)
class Entry:
    """One system's measurement of one workload (compared by identity)."""

    contender: str
    workload: str
    does: str
    measured: System | Burst


def measure_reads(system: System, count: int) -> None:
    """Like :func:`benchmarks.common.measure_round`, but records the time each call says its read took."""
    gc.collect()
    started = time.perf_counter_ns()
    reads = [cast(int, system.op(index)) for index in range(count)]
    system.elapsed_ns += time.perf_counter_ns() - started
    system.latencies_ns.extend(reads)
    system.round_medians_ns.append(statistics.median(reads))


def measure(entry: Entry, config: Config) -> None:
    """Adds one round of ``entry``'s workload to it."""
    if isinstance(entry.measured, Burst):
        measure_burst(entry.measured, config.outstanding)
    elif entry.workload == READ:
        measure_reads(entry.measured, config.calls_per_round)
    else:
        measure_round(entry.measured, config.calls_per_round)


def warm_up(entry: Entry, config: Config) -> None:
    """Runs ``entry``'s workload untimed, so first-call costs (imports, connections, caches) stay out of it."""
    if isinstance(entry.measured, Burst):
        entry.measured.run(min(config.outstanding, config.warmup_calls * 5))
    else:
        for index in range(config.warmup_calls):
            entry.measured.op(index)


@contextlib.contextmanager
def started_systems(config: Config, progress: RunProgress) -> Iterator[tuple[list[Contender], dict[str, str]]]:
    """Starts the floors, Cloudburst and every importable peer; stops them all on exit.

    Yields the started contenders, the floors first, and why each skipped peer was skipped.
    """
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        progress.phase("starting the floors and cloudburst")
        contenders = [
            stack.enter_context(floors.started()),
            stack.enter_context(cloudburst_functions.started(config.workers)),
        ]
        for name, started in PEERS:
            progress.phase(f"starting {name}")
            try:
                contenders.append(stack.enter_context(started(config.workers)))
            except ImportError as error:
                skipped[name] = f"not importable ({error})"
                progress.note(f"note: {name} skipped, {skipped[name]}")
            except Exception as error:  # a peer's own failure (an experimental feature, say) must not stop ours
                skipped[name] = f"failed to start ({type(error).__name__}: {error})"
                progress.note(f"note: {name} skipped, {skipped[name]}")
        yield contenders, skipped
        progress.phase("stopping every system")


def entries_by_workload(contenders: list[Contender]) -> dict[str, list[Entry]]:
    """What to measure: per workload, an entry for each contender that runs it, the floor first."""
    table: dict[str, list[Entry]] = {workload: [] for workload in WORKLOADS}
    for contender in contenders:
        for workload, op in contender.ops.items():
            measured = Burst(contender.name, op.run) if workload == THROUGHPUT else System(contender.name, op.run)
            table[workload].append(Entry(contender.name, workload, op.does, measured))
    return table


def run_rounds(config: Config, progress: RunProgress) -> dict[str, Any]:
    """Starts everything, measures in alternating rounds, stops everything; the summary of what was measured."""
    cpus = placement() if config.pin else None
    started, busy_before, own_before = time.monotonic(), machine_busy_seconds(), cpu_seconds(os.getpid())
    with contextlib.ExitStack() as stack:
        if cpus is not None:
            # Before any zmq context or peer runtime exists, so the client's threads inherit the client CPU.
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, cpus[0])
        contenders, skipped = stack.enter_context(started_systems(config, progress))
        if cpus is not None:
            pin_children(cpus[1])
        table = entries_by_workload(contenders)
        every = [entry for entries in table.values() for entry in entries]
        progress.phase("warming up", len(every))
        for entry in every:
            with progress.step(f"{entry.workload}, {entry.contender}"):
                warm_up(entry, config)
        # Again after the warm-up, which may have started worker processes (later ones inherit the pinning).
        processes = Counter(map(role, descendants(os.getpid()))) if cpus is None else pin_children(cpus[1])
        progress.phase("measuring", config.rounds * len(every))
        for number in range(config.rounds):
            progress.plain(f"round {number + 1}/{config.rounds}")
            for entries in table.values():
                shift = number % len(entries)
                for entry in entries[shift:] + entries[:shift]:
                    with progress.step(f"round {number + 1}/{config.rounds}, {entry.workload}, {entry.contender}"):
                        measure(entry, config)
        # Before anything stops: a process that is gone no longer tells its CPU time.
        foreign = other_load(busy_before, own_before, started)
    return {
        "affinity": None if cpus is None else {"client": sorted(cpus[0]), "servers": sorted(cpus[1])},
        "server_processes": dict(sorted(processes.items())),
        "other_load": round(foreign, 3),
        "skipped": skipped,
        "setup": {contender.name: contender.setup for contender in contenders},
        "workloads": {workload: summarize(entries, table) for workload, entries in table.items()},
    }


def summarize(entries: list[Entry], table: dict[str, list[Entry]]) -> dict[str, dict[str, object]]:
    """Each system's numbers for one workload and its ratio to the floor (for reads, the null-call floor)."""
    floor = (table[NULL] if entries[0].workload == READ else entries)[0]
    assert floor.contender == floors.NAME
    rows: dict[str, dict[str, object]] = {}
    for entry in entries if floor in entries else [floor, *entries]:
        if isinstance(entry.measured, Burst):
            assert isinstance(floor.measured, Burst)
            row = throughput_row(entry.measured, statistics.median(floor.measured.round_rates))
        else:
            assert isinstance(floor.measured, System)
            row = latency_row(entry.measured, statistics.median(floor.measured.latencies_ns))
            if entry.workload == READ:
                del row["calls_per_s"]  # the round trips' rate, not the reads'
        rows[entry.contender] = {"does": entry.does if entry in entries else f"the {NULL} floor", **row}
    return rows


def locality_rows(rounds: int) -> dict[str, dict[str, object]]:
    """Cloudburst's cached and uncached calls over 10 x 8 MB arrays (:mod:`benchmarks.locality`), in milliseconds."""
    rows: dict[str, dict[str, object]] = {}
    for label, per_round in locality.run(rounds).items():
        rows[label] = {
            "median_ms": round(statistics.median(per_round), 1),
            "p99_ms": round(percentile(sorted(per_round), 0.99), 1),
            "round_ms": [round(value, 1) for value in per_round],
        }
    return rows


def leftover_processes() -> list[str]:
    """Processes this benchmark started that still run once every system has stopped (there should be none).

    Multiprocessing's resource tracker, which starting Dask's worker processes starts, does not count: it belongs to
    this process and exits with it.
    """
    found = []
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if b"multiprocessing.resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(f"{pid} {role(pid)}")
    return found


def versions() -> dict[str, str]:
    """The installed version of each package a result depends on."""
    found: dict[str, str] = {"libzmq": zmq.zmq_version()}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


def run(config: Config) -> dict[str, Any]:
    """Measures everything and returns the results (showing how far it is on stderr)."""
    with RunProgress() as progress:
        measured = run_rounds(config, progress)
        leftovers = leftover_processes()
        if leftovers:
            progress.note(f"note: still running after every system stopped: {leftovers}")
        progress.phase(f"locality, {config.locality_rounds} rounds")
        locality_results = locality_rows(config.locality_rounds)
    return {
        "benchmark": "suite",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "config": {
            "mode": config.mode,
            "rounds": config.rounds,
            "calls_per_round": config.calls_per_round,
            "outstanding": config.outstanding,
            "warmup_calls": config.warmup_calls,
            "locality_rounds": config.locality_rounds,
            "workers": config.workers,
            "large_argument_bytes": len(LARGE_ARGUMENT),
        },
        **measured,
        "leftover_processes": leftovers,
        "locality": locality_results,
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: conditions, one table of every workload, the locality table, what each row ran."""
    config, workloads, found = results["config"], results["workloads"], results["versions"]
    setup, skipped, locality_results = results["setup"], results["skipped"], results["locality"]
    lines = [
        "# Cloudburst, Ray and Dask against bare-ZeroMQ floors",
        "",
        f"{results['date']}, Python {results['python']}, {results['cpu_count']} CPUs; "
        + ", ".join(f"{name} {version}" for name, version in found.items())
        + f". {config['mode']} run: {config['rounds']} rounds alternating the systems (order rotating per round); "
        f"per round and system, {config['calls_per_round']} sequential calls per latency workload and one burst of "
        f"{config['outstanding']:,} outstanding calls; {config['warmup_calls']} untimed calls first. Each system "
        f"gets {config['workers']} workers; {placement_text(results['affinity'])}. Processes outside the benchmark "
        f"used {results['other_load']:.0%} of the machine's CPU time during the run.",
        "",
    ]
    for name, reason in skipped.items():
        lines += [f"**{name} skipped**: {reason}.", ""]
    lines += [
        "| workload | system | median (us) | p99 (us) | calls/s | x floor | per round |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for workload, systems in workloads.items():
        for name, row in systems.items():
            if "median_us" in row:
                timing = f"{row['median_us']:,.1f} | {row['p99_us']:,.1f}"
                spread = ", ".join(f"{value:g}" for value in row["round_medians_us"])
            else:
                timing = "- | -"
                spread = ", ".join(f"{value:,}" for value in row["round_calls_per_s"])
            rate = f"{row['calls_per_s']:,}" if "calls_per_s" in row else "-"
            lines.append(f"| {workload} | {name} | {timing} | {rate} | {row['ratio_to_floor']:.2f}x | {spread} |")
    uncached, cached = locality_results["uncached"]["median_ms"], locality_results["cached"]["median_ms"]
    lines += [
        "",
        f"Locality, Cloudburst only ({config['locality_rounds']} rounds of `python -m benchmarks locality`: "
        "1 executor, a function touching 10 x 8 MB arrays passed as references):",
        "",
        "| reads | median (ms) | p99 (ms) | per round |",
        "|---|---:|---:|---|",
    ]
    for label, row in locality_results.items():
        per_round = ", ".join(f"{value:,g}" for value in row["round_ms"])
        lines.append(f"| {label} | {row['median_ms']:,.1f} | {row['p99_ms']:,.1f} | {per_round} |")
    lines += ["", f"Cached is {uncached / cached:.1f}x faster than uncached."]
    lines += ["", "What each row runs:", ""]
    for name, how in setup.items():
        lines.append(f"* **{name}**: {how}.")
        lines += [
            f"  * {workload}: {systems[name]['does']}" for workload, systems in workloads.items() if name in systems
        ]
    lines += [
        "",
        "`x floor` compares each system with the floor of the same workload measured in the same run: median "
        "latency over the floor's median for the latency rows, the floor's calls/s over the system's for "
        "throughput (both: how many times the floor's time per call). The cached-read rows time the read alone, "
        "inside the function, and are compared with the null-call floor (a round trip to another process, what a "
        "read from a store outside the function costs at least); below 1x means the read never left the process. "
        "`per round` lists each round's median latency (us) or calls/s; the latency rows' calls/s is sequential, "
        "one call at a time. Dask batches its messages (the client's to the scheduler at most every 10 ms, the "
        "scheduler's to a worker every 5 ms), which accounts for much of its sequential latency, not its throughput.",
        "",
    ]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> bool:
    """Draws each system's ratio to the floor per workload as grouped bars; ``False`` without matplotlib."""
    try:
        import matplotlib  # the chart is optional

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    workloads, config = results["workloads"], results["config"]
    systems = list(dict.fromkeys(name for rows in workloads.values() for name in rows if name != floors.NAME))
    figure, axes = pyplot.subplots(figsize=(10, 5))
    width = 0.8 / max(1, len(systems))
    for number, name in enumerate(systems):
        positions = [index + (number - (len(systems) - 1) / 2) * width for index in range(len(workloads))]
        ratios = [rows[name]["ratio_to_floor"] if name in rows else 0 for rows in workloads.values()]
        bars = axes.bar(positions, ratios, width, label=name)
        axes.bar_label(bars, labels=[f"{ratio:g}x" if ratio else "" for ratio in ratios], fontsize=7)
    axes.axhline(1, color="black", linewidth=0.8, linestyle="--", label="floor (bare pyzmq)")
    axes.set_yscale("log")
    axes.set_xticks(range(len(workloads)), list(workloads), fontsize=8)
    axes.set_ylabel("time per call / floor's (log scale)")
    axes.set_title(f"Ratio to the bare-ZeroMQ floor, {results['date']} ({config['mode']} run)")
    axes.legend()
    figure.tight_layout()
    partial = path.with_name(path.name + ".tmp.png")
    figure.savefig(partial, dpi=120)
    pyplot.close(figure)
    partial.replace(path)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``suite`` subcommand's flags."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples, under two minutes")
    size.add_argument("--full", action="store_true", help="stable numbers, several minutes (the default)")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the scheduler place client and servers (noisier floor)"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    """Runs the suite, prints the table and writes ``suite.md``, ``suite.json`` and ``suite.png``."""
    chosen = QUICK if args.quick else FULL
    config = Config(
        mode=chosen.mode,
        rounds=chosen.rounds,
        calls_per_round=chosen.calls_per_round,
        outstanding=chosen.outstanding,
        warmup_calls=chosen.warmup_calls,
        locality_rounds=chosen.locality_rounds,
        pin=not args.no_pin,
    )
    results = run(config)
    table = markdown(results)
    print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output_dir / "suite.md", table)
    write_atomically(args.output_dir / "suite.json", json.dumps(results, indent=2) + "\n")
    if not chart(results, args.output_dir / "suite.png"):
        print("note: matplotlib is not importable, so no suite.png", file=sys.stderr)
    return 0
