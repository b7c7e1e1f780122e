"""Cloudburst call latency and throughput on a local cluster, each next to a bare pyzmq floor from the same run.

Three workloads, each paired with the transport floor it cannot beat:

* a null call (``call("noop").result()``) against a REQ/REP echo, the client's request socket pattern;
* the DAG ``square(increment(x))`` against a two-hop PUSH chain (client -> A -> B -> client), one hop per function;
* ``N`` null calls outstanding at once against ``N`` messages in flight through a PUSH/PULL echo server.

The ratio to the floor is the number to watch: it is what the runtime's scheduling, serialization and Python layers
cost on top of the sockets, and it moves far less with the machine than the absolute latency. As in
:mod:`benchmarks.kvs_latency`, all systems are measured in alternating rounds, so noise hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from benchmarks.common import (
    System,
    measure_round,
    percentile,
    pin_process,
    placement,
    placement_text,
    write_atomically,
)
from benchmarks.floor import FloorChain, FloorServer, PushPullClient, ReqRepClient
from cloudburst.client.connection import Connection
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: A little more than an encoded one-shot or DAG call request (60-80 bytes).
FLOOR_PAYLOAD = b"p" * 100
REPORT_PERIOD = 1.0
DAG_ARGUMENT = 1
DAG_RESULT = (DAG_ARGUMENT + 1) ** 2


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    mode: str
    rounds: int
    calls_per_round: int
    outstanding: int
    warmup_calls: int
    executors: int = 2
    pin: bool = True


QUICK = Config(mode="quick", rounds=5, calls_per_round=200, outstanding=200, warmup_calls=50)
FULL = Config(mode="full", rounds=7, calls_per_round=2000, outstanding=2000, warmup_calls=200)


@dataclass
class Burst:
    """A throughput system: ``run(n)`` puts ``n`` requests in flight, then waits for all of them.

    The CPU time the ``watched`` processes (pid -> role) spend during the bursts is added up per role, which
    tells whether a burst is bound by one process or by the CPUs the servers share.
    """

    name: str
    run: Callable[[int], object]
    watched: dict[int, str] = field(default_factory=dict)
    round_rates: list[float] = field(default_factory=list)
    calls: int = 0
    elapsed_ns: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_burst(burst: Burst, count: int) -> None:
    """Times one burst of ``count`` requests and adds its rate (and the watched processes' CPU) to ``burst``."""
    gc.collect()
    cpu_before = {pid: cpu_seconds(pid) for pid in burst.watched}
    started = time.perf_counter_ns()
    burst.run(count)
    elapsed = time.perf_counter_ns() - started
    for pid, name in burst.watched.items():
        burst.cpu_s[name] = burst.cpu_s.get(name, 0.0) + cpu_seconds(pid) - cpu_before[pid]
    burst.calls += count
    burst.elapsed_ns += elapsed
    burst.round_rates.append(count / (elapsed / 1e9))


@dataclass
class Workload:
    """A Cloudburst system and the floor it is compared with."""

    name: str
    floor: System | Burst
    system: System | Burst


# -- processes ----------------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # it exited while we looked
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending += children.get(child, [])
    return sorted(found)


def role(pid: int) -> str:
    """What a child runs, e.g. ``cloudburst executor`` or ``benchmarks.floor pushpull``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "exited"
    if len(argv) >= 4 and argv[1] == "-m":
        return f"{argv[2]} {argv[3]}"
    return " ".join(argv[:2])


def pin_children(cpus: set[int]) -> Counter[str]:
    """Pins every process this benchmark started (floor servers, KVS, scheduler, executors) to ``cpus``.

    Children inherit the client's CPU when they start, so they are re-pinned once everything runs; calling this
    again before measuring catches threads started in between.
    """
    roles: Counter[str] = Counter()
    for pid in descendants(os.getpid()):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            pin_process(pid, cpus)
            roles[role(pid)] += 1
    return roles


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent busy since boot (``/proc/stat``), summed."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_load(busy_before: float, own_before: float, started: float) -> float:
    """The share of the machine's CPU time used by processes outside this benchmark since ``started``.

    A run that shared the machine (a test suite, another benchmark) says so in its results instead of passing for
    a quiet one. Kernel time spent on our loopback traffic outside our processes counts as other load, so a quiet
    run reads a few percent, not zero.
    """
    ours = cpu_seconds(os.getpid()) - own_before + sum(cpu_seconds(pid) for pid in descendants(os.getpid()))
    elapsed = time.monotonic() - started
    return max(0.0, (machine_busy_seconds() - busy_before - ours) / (elapsed * (os.cpu_count() or 1)))


def _dump_logs(cluster: LocalCluster) -> None:
    """Prints the tail of every cluster process's log, which the cluster deletes when it stops."""
    for log in sorted(cluster.workdir.glob("*.log")):
        text = log.read_text(errors="replace")[-3000:]
        print(f"--- {log.name} (tail) ---\n{text}", file=sys.stderr)


# -- systems ------------------------------------------------------------------------------------------------------


def _register(connection: Connection) -> None:
    """Registers the functions and the DAG, and checks each gives the expected result once."""
    connection.register(lambda _: None, "noop")
    connection.register(lambda _, x: x + 1, "increment")
    connection.register(lambda _, x: x * x, "square")
    connection.register_dag("chain", ["increment", "square"], [("increment", "square")])
    noop = connection.call("noop").result()
    if noop is not None:
        raise RuntimeError(f"noop returned {noop!r}, not None")
    chained = connection.call_dag(connection.build_dag_call("chain", {"increment": DAG_ARGUMENT})).result()
    if chained != DAG_RESULT:
        raise RuntimeError(f"the DAG square(increment({DAG_ARGUMENT})) returned {chained!r}, not {DAG_RESULT}")


def echo_op(client: PushPullClient | ReqRepClient, name: str) -> Callable[[int], object]:
    if client.round_trip(FLOOR_PAYLOAD) != FLOOR_PAYLOAD:
        raise RuntimeError(f"{name} did not echo its payload")

    def op(_index: int) -> object:
        return client.round_trip(FLOOR_PAYLOAD)

    return op


def echo_burst(client: PushPullClient) -> Callable[[int], object]:
    def run(count: int) -> None:
        for _ in range(count):
            client.send(FLOOR_PAYLOAD)
        for _ in range(count):
            client.receive()

    return run


def _cloudburst_systems(connection: Connection) -> tuple[System, System, Burst]:
    def null_call(_index: int) -> object:
        return connection.call("noop").result()

    def dag_call(_index: int) -> object:
        return connection.call_dag(connection.build_dag_call("chain", {"increment": DAG_ARGUMENT})).result()

    def null_burst(count: int) -> None:
        futures = [connection.call("noop") for _ in range(count)]
        for future in futures:
            future.result()

    return (
        System('call("noop").result()', null_call),
        System("call_dag(square(increment(x))).result()", dag_call),
        Burst('N x call("noop"), then wait for all', null_burst),
    )


# -- the run ------------------------------------------------------------------------------------------------------


def run(config: Config) -> dict[str, object]:
    """Starts the floors and a cluster, measures everything in alternating rounds, stops it all, returns results."""
    cpus = placement() if config.pin else None
    pinned: Counter[str] = Counter()
    started, busy_before, own_before = time.monotonic(), machine_busy_seconds(), cpu_seconds(os.getpid())
    with contextlib.ExitStack() as stack:
        if cpus is not None:
            # Before any zmq context exists, so the client's I/O threads inherit the client CPU.
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, cpus[0])

        reqrep_server = stack.enter_context(FloorServer("reqrep"))
        reqrep = ReqRepClient(reqrep_server.endpoint)
        stack.callback(reqrep.close)
        chain_client = PushPullClient()
        stack.callback(chain_client.close)
        chain = stack.enter_context(FloorChain(chain_client.reply_address, hops=2))
        chain_client.connect(chain.endpoint)
        # Unlimited queues: the whole burst is sent before any echo is read.
        burst_client = PushPullClient(high_water_mark=0)
        stack.callback(burst_client.close)
        echo_server = stack.enter_context(FloorServer("pushpull", burst_client.reply_address))
        burst_client.connect(echo_server.endpoint)

        cluster_config = ClusterConfig(
            host=random_loopback_host(), executors=config.executors, data_dir=None, report_period=REPORT_PERIOD
        )
        cluster = stack.enter_context(LocalCluster(cluster_config))
        if cpus is not None:
            pin_children(cpus[1])
        try:
            connection = stack.enter_context(cluster.connect())
            _register(connection)
            null_call, dag_call, null_burst = _cloudburst_systems(connection)
            null_burst.watched = {
                pid: role(pid) for pid in descendants(os.getpid()) if role(pid).startswith("cloudburst")
            }
            null_burst.watched[os.getpid()] = "client (this process)"
            workloads = [
                Workload("null call", System("floor: REQ/REP echo", echo_op(reqrep, "the REQ/REP floor")), null_call),
                Workload(
                    "2-function DAG",
                    System("floor: 2-hop PUSH chain", echo_op(chain_client, "the 2-hop floor chain")),
                    dag_call,
                ),
                Workload(
                    f"throughput, {config.outstanding} outstanding",
                    Burst("floor: N PUSH, then N PULL", echo_burst(burst_client)),
                    null_burst,
                ),
            ]
            everything = [entry for workload in workloads for entry in (workload.floor, workload.system)]
            for entry in everything:
                if isinstance(entry, System):
                    for index in range(config.warmup_calls):
                        entry.op(index)
                else:
                    entry.run(min(config.outstanding, config.warmup_calls * 4))
            if cpus is not None:
                pinned = pin_children(cpus[1])
            for number in range(1, config.rounds + 1):
                print(f"round {number}/{config.rounds}", file=sys.stderr, flush=True)
                for entry in everything:
                    if isinstance(entry, System):
                        measure_round(entry, config.calls_per_round)
                    else:
                        measure_burst(entry, config.outstanding)
            # Before anything stops: a process that is gone no longer tells its CPU time.
            foreign = other_load(busy_before, own_before, started)
        except BaseException:
            _dump_logs(cluster)
            raise

    return {
        "benchmark": "runtime_latency",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "config": {
            "mode": config.mode,
            "rounds": config.rounds,
            "calls_per_round": config.calls_per_round,
            "outstanding": config.outstanding,
            "warmup_calls": config.warmup_calls,
            "executors": config.executors,
            "kvs": "in-memory",
            "report_period_s": REPORT_PERIOD,
            "floor_payload_bytes": len(FLOOR_PAYLOAD),
            "cpu_affinity": None if cpus is None else {"client": sorted(cpus[0]), "servers": sorted(cpus[1])},
            "pinned_processes": dict(sorted(pinned.items())),
        },
        "other_load": round(foreign, 3),
        "workloads": {workload.name: summarize(workload) for workload in workloads},
    }


def latency_row(system: System, floor_median_ns: float) -> dict[str, object]:
    ordered = sorted(system.latencies_ns)
    median = statistics.median(ordered)
    return {
        "median_us": round(median / 1000, 1),
        "p99_us": round(percentile(ordered, 0.99) / 1000, 1),
        "calls_per_s": round(len(ordered) / (system.elapsed_ns / 1e9)),
        "ratio_to_floor": round(median / floor_median_ns, 2),
        "round_medians_us": [round(value / 1000, 1) for value in system.round_medians_ns],
        "calls": len(ordered),
    }


def throughput_row(burst: Burst, floor_rate: float) -> dict[str, object]:
    rate = statistics.median(burst.round_rates)
    row: dict[str, object] = {
        "calls_per_s": round(rate),
        # Time per call relative to the floor's, so that, as for latency, 3.0 means "three times the floor's cost".
        "ratio_to_floor": round(floor_rate / rate, 2),
        "throughput_fraction_of_floor": round(rate / floor_rate, 4),
        "round_calls_per_s": [round(value) for value in burst.round_rates],
        "overall_calls_per_s": round(burst.calls / (burst.elapsed_ns / 1e9)),
        "calls": burst.calls,
    }
    if burst.cpu_s:
        row["cpu_us_per_call"] = {
            name: round(seconds * 1e6 / burst.calls) for name, seconds in sorted(burst.cpu_s.items())
        }
    return row


def summarize(workload: Workload) -> dict[str, dict[str, object]]:
    """The reported numbers of a workload's floor and system (latencies in microseconds)."""
    if isinstance(workload.floor, System) and isinstance(workload.system, System):
        floor_median = statistics.median(workload.floor.latencies_ns)
        return {
            workload.floor.name: latency_row(workload.floor, floor_median),
            workload.system.name: latency_row(workload.system, floor_median),
        }
    assert isinstance(workload.floor, Burst)
    assert isinstance(workload.system, Burst)
    floor_rate = statistics.median(workload.floor.round_rates)
    return {
        workload.floor.name: throughput_row(workload.floor, floor_rate),
        workload.system.name: throughput_row(workload.system, floor_rate),
    }


def markdown(results: dict[str, object]) -> str:
    """The results as a Markdown table, with the conditions they were measured under."""
    config = results["config"]
    workloads = results["workloads"]
    assert isinstance(config, dict)
    assert isinstance(workloads, dict)
    other = results["other_load"]
    assert isinstance(other, float | int)
    lines = [
        "# Cloudburst runtime latency and throughput over loopback",
        "",
        f"{results['date']}, Python {str(results['python']).split()[0]}, {results['cpu_count']} CPUs, "
        f"pyzmq {results['pyzmq']} (libzmq {results['libzmq']}). {config['mode']} run: "
        f"{config['rounds']} alternating rounds; per round, {config['calls_per_round']} sequential calls per "
        f"latency system and one burst of {config['outstanding']} outstanding calls per throughput system. "
        f"Local cluster: in-memory KVS, 1 scheduler, {config['executors']} executors, "
        f"report period {config['report_period_s']:g} s; {config['floor_payload_bytes']}-byte floor payload; "
        f"{placement_text(config['cpu_affinity'])}. Processes outside the benchmark used "
        f"{other:.0%} of the machine's CPU time during the run.",
        "",
        "| workload | system | median (us) | p99 (us) | calls/s | x floor | per round |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for workload, systems in workloads.items():
        for name, row in systems.items():
            if "median_us" in row:
                spread = ", ".join(f"{value:g}" for value in row["round_medians_us"])
                timing = f"{row['median_us']:.1f} | {row['p99_us']:.1f}"
            else:
                spread = ", ".join(f"{value:,}" for value in row["round_calls_per_s"])
                timing = "- | -"
            lines.append(
                f"| {workload} | {name} | {timing} | {row['calls_per_s']:,} | {row['ratio_to_floor']:.2f}x | {spread} |"
            )
    for systems in workloads.values():
        for name, row in systems.items():
            if "cpu_us_per_call" in row:
                shares = ", ".join(f"{role} {value} us" for role, value in row["cpu_us_per_call"].items())
                lines += ["", f"CPU time per call during the `{name}` bursts (executors summed): {shares}."]
    lines += [
        "",
        "`x floor` compares each system with the floor row above it, measured in the same run: median latency over "
        "the floor's median for the latency rows, the floor's calls/s over the system's for the throughput rows "
        "(both: how many times the floor's time per call). `per round` lists each round's median latency (us) or "
        "calls/s. The latency rows' calls/s is sequential, one call at a time. The throughput rows' calls/s is the "
        "median over rounds; a Cloudburst call's submission waits for the scheduler's acknowledgement, so the "
        "burst measures how fast the client can submit as much as how fast the executors run.",
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``runtime`` subcommand's flags."""
    parser.add_argument("--quick", action="store_true", help="small run for CI smoke tests (well under a minute)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--calls", type=int, help="override the sequential calls per latency system per round")
    parser.add_argument("--outstanding", type=int, help="override the calls in flight per throughput burst")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the scheduler place client and servers (noisier floor)"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark, prints the table and writes ``runtime_latency.md`` and ``runtime_latency.json``."""
    config = QUICK if args.quick else FULL
    config = Config(
        mode=config.mode,
        rounds=args.rounds or config.rounds,
        calls_per_round=args.calls or config.calls_per_round,
        outstanding=args.outstanding or config.outstanding,
        warmup_calls=config.warmup_calls,
        executors=config.executors,
        pin=not args.no_pin,
    )
    results = run(config)
    table = markdown(results)
    print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output_dir / "runtime_latency.md", table)
    write_atomically(args.output_dir / "runtime_latency.json", json.dumps(results, indent=2) + "\n")
    return 0
