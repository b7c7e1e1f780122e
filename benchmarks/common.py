"""Helpers every latency benchmark shares: CPU placement, timed rounds, percentiles, result files."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def placement() -> tuple[set[int], set[int]] | None:
    """CPUs for this (client) process and for the servers, or ``None`` when there are too few to split.

    Without pinning, a loopback round trip costs about twice as much when the scheduler puts client and
    server on different CPUs (a cross-CPU wake-up) as when it puts them on the same one, and the placement
    changes from round to round, which made the floor bimodal and the ratios swing between runs. Keeping
    client and servers on separate CPUs makes every system pay the cross-CPU cost, as it would across machines.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pins every current thread of process ``pid``; threads it starts later inherit their creator's CPUs."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(thread), cpus)


def placement_text(affinity: dict[str, list[int]] | None) -> str:
    """How client and servers were placed, for a results header."""
    if affinity is None:
        return "client and servers placed by the scheduler"
    return f"client pinned to CPU {affinity['client']}, servers to CPUs {affinity['servers']}"


@dataclass
class System:
    """One thing being measured: ``op(i)`` performs the i-th operation."""

    name: str
    op: Callable[[int], object]
    latencies_ns: list[int] = field(default_factory=list)
    elapsed_ns: int = 0
    round_medians_ns: list[float] = field(default_factory=list)


def measure_round(system: System, count: int) -> None:
    """Times ``count`` operations one by one and adds them to ``system``."""
    op = system.op
    clock = time.perf_counter_ns
    latencies = [0] * count
    gc.collect()
    started = clock()
    for index in range(count):
        before = clock()
        op(index)
        latencies[index] = clock() - before
    system.elapsed_ns += clock() - started
    system.latencies_ns.extend(latencies)
    system.round_medians_ns.append(statistics.median(latencies))


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def write_atomically(path: Path, text: str) -> None:
    """Replaces ``path`` atomically, so an interrupted run never leaves half a result file."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)
