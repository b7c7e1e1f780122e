"""KVS GET/PUT latency over loopback, next to the bare pyzmq round trip measured in the same run.

The KVS node is measured on each engine: SQLite (the default), in memory, and a private ``redis-server``
(append-only file, ``appendfsync always``) behind the Redis engine.

An absolute latency says little on its own (it moves with the machine and its load), so every KVS number is
reported as a ratio to a floor: a PUSH/PULL echo server doing exactly the socket work of a KVS request and
nothing else. The systems are measured in alternating rounds so that noise hits all of them alike, and each
round's median is kept so the spread between rounds is visible.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
from benchmarks.floor import FloorServer, PushPullClient, ReqRepClient
from cloudburst.clock import TimestampGenerator, writer_id_for
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.lattices import LwwLattice
from cloudburst.testing.redis import LocalRedis

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KEYS = tuple(f"bench-{index:03d}" for index in range(100))
VALUE = b"x" * 64
#: Close to the size of an encoded single-key KVS request carrying ``VALUE``.
FLOOR_PAYLOAD = b"p" * 100
FLOOR = "floor: PUSH/PULL echo"


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    mode: str
    rounds: int
    ops_per_round: int
    warmup_ops: int
    pin: bool = True


QUICK = Config(mode="quick", rounds=5, ops_per_round=200, warmup_ops=100)
FULL = Config(mode="full", rounds=5, ops_per_round=5000, warmup_ops=200)


def summarize(system: System, floor_median_ns: float) -> dict[str, object]:
    """The reported numbers of one system, in microseconds."""
    ordered = sorted(system.latencies_ns)
    median = statistics.median(ordered)
    return {
        "median_us": round(median / 1000, 1),
        "p99_us": round(percentile(ordered, 0.99) / 1000, 1),
        "ops_per_s": round(len(ordered) / (system.elapsed_ns / 1e9)),
        "ratio_to_floor": round(median / floor_median_ns, 2),
        "round_medians_us": [round(value / 1000, 1) for value in system.round_medians_ns],
        "operations": len(ordered),
    }


def _floor_op(client: PushPullClient | ReqRepClient) -> Callable[[int], object]:
    def op(_index: int) -> object:
        return client.round_trip(FLOOR_PAYLOAD)

    return op


def _kvs_systems(label: str, client: KvsClient, timestamps: TimestampGenerator) -> list[System]:
    """GET and PUT on one node; the PUT includes building the lattice, as a caller's write would."""

    def get(index: int) -> object:
        return client.get(KEYS[index % len(KEYS)])

    def put(index: int) -> object:
        client.put(KEYS[index % len(KEYS)], LwwLattice(timestamp=timestamps(), value=VALUE))
        return None

    return [System(f"KVS GET ({label})", get), System(f"KVS PUT ({label})", put)]


def _check_echo(client: PushPullClient | ReqRepClient, name: str) -> None:
    if client.round_trip(FLOOR_PAYLOAD) != FLOOR_PAYLOAD:
        raise RuntimeError(f"{name} did not echo its payload")


def _preload(client: KvsClient, timestamps: TimestampGenerator, label: str) -> None:
    """Writes every key so GETs read real values, and checks one comes back."""
    for key in KEYS:
        client.put(key, LwwLattice(timestamp=timestamps(), value=VALUE))
    stored = client.get(KEYS[0])
    if not isinstance(stored, LwwLattice) or stored.value != VALUE:
        raise RuntimeError(f"the {label} KVS returned {stored!r} for a key just written")


def run(config: Config) -> dict[str, object]:
    """Starts every server, measures all systems in alternating rounds, stops everything, returns the results."""
    timestamps = TimestampGenerator(writer_id_for("bench"))
    cpus = placement() if config.pin else None
    with contextlib.ExitStack() as stack:
        if cpus is not None:
            # Before any zmq context exists, so the client's I/O threads inherit the client CPU.
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, cpus[0])

        def pin_server(server: FloorServer | KvsProcess | LocalRedis) -> None:
            if cpus is not None:
                pin_process(server.pid, cpus[1])

        pushpull = PushPullClient()
        stack.callback(pushpull.close)
        floor = stack.enter_context(FloorServer("pushpull", pushpull.reply_address))
        pin_server(floor)
        pushpull.connect(floor.endpoint)
        floor = stack.enter_context(FloorServer("reqrep"))
        pin_server(floor)
        reqrep = ReqRepClient(floor.endpoint)
        stack.callback(reqrep.close)
        _check_echo(pushpull, "the PUSH/PULL floor server")
        _check_echo(reqrep, "the REQ/REP floor server")

        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cloudburst-bench-")))
        durable_node = stack.enter_context(KvsProcess(data_dir))
        pin_server(durable_node)
        durable = stack.enter_context(KvsClient(durable_node.routing))
        memory_node = stack.enter_context(KvsProcess(None))
        pin_server(memory_node)
        memory = stack.enter_context(KvsClient(memory_node.routing))
        redis_server = stack.enter_context(LocalRedis())
        pin_server(redis_server)
        redis_node = stack.enter_context(KvsProcess(None, engine=redis_server.url))
        pin_server(redis_node)
        redis_kvs = stack.enter_context(KvsClient(redis_node.routing))
        _preload(durable, timestamps, "SQLite")
        _preload(memory, timestamps, "in-memory")
        _preload(redis_kvs, timestamps, "Redis")

        systems = [
            System(FLOOR, _floor_op(pushpull)),
            System("floor: REQ/REP echo", _floor_op(reqrep)),
            *_kvs_systems("SQLite, default", durable, timestamps),
            *_kvs_systems("in-memory", memory, timestamps),
            *_kvs_systems("Redis, appendfsync always", redis_kvs, timestamps),
        ]
        for system in systems:
            for index in range(config.warmup_ops):
                system.op(index)
        for number in range(1, config.rounds + 1):
            print(f"round {number}/{config.rounds}", file=sys.stderr, flush=True)
            for system in systems:
                measure_round(system, config.ops_per_round)

    floor_median = statistics.median(systems[0].latencies_ns)
    return {
        "benchmark": "kvs_latency",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "config": {
            "mode": config.mode,
            "rounds": config.rounds,
            "ops_per_round": config.ops_per_round,
            "warmup_ops": config.warmup_ops,
            "keys": len(KEYS),
            "value_bytes": len(VALUE),
            "floor_payload_bytes": len(FLOOR_PAYLOAD),
            "ratio_base": FLOOR,
            "kvs_threads": 1,
            "sqlite": "default durability (synchronous=NORMAL, WAL)",
            "redis": "one local redis-server, appendonly yes, appendfsync always, no RDB snapshots",
            "cpu_affinity": None if cpus is None else {"client": sorted(cpus[0]), "servers": sorted(cpus[1])},
        },
        "systems": {system.name: summarize(system, floor_median) for system in systems},
    }


def markdown(results: dict[str, object]) -> str:
    """The results as a Markdown table, with the conditions they were measured under."""
    config = results["config"]
    systems = results["systems"]
    assert isinstance(config, dict)
    assert isinstance(systems, dict)
    lines = [
        "# KVS latency over loopback",
        "",
        f"{results['date']}, Python {str(results['python']).split()[0]}, {results['cpu_count']} CPUs, "
        f"pyzmq {results['pyzmq']} (libzmq {results['libzmq']}). {config['mode']} run: "
        f"{config['rounds']} alternating rounds x {config['ops_per_round']} sequential ops per system, "
        f"{config['keys']} keys, {config['value_bytes']}-byte LWW values, "
        f"{config['floor_payload_bytes']}-byte floor payload; {placement_text(config['cpu_affinity'])}.",
        "",
        "| system | median (us) | p99 (us) | ops/s | median / floor | round medians (us) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, row in systems.items():
        spread = ", ".join(f"{value:g}" for value in row["round_medians_us"])
        lines.append(
            f"| {name} | {row['median_us']:.1f} | {row['p99_us']:.1f} | {row['ops_per_s']:,} "
            f"| {row['ratio_to_floor']:.2f}x | {spread} |"
        )
    lines += ["", f"`median / floor` is relative to the {FLOOR} median, measured in the same run.", ""]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``kvs`` subcommand's flags."""
    parser.add_argument("--quick", action="store_true", help="small run for CI smoke tests (a few seconds)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--ops", type=int, help="override the operations per system per round")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the scheduler place client and servers (noisier floor)"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark, prints the table and writes ``kvs_latency.md`` and ``kvs_latency.json``."""
    config = QUICK if args.quick else FULL
    config = Config(
        mode=config.mode,
        rounds=args.rounds or config.rounds,
        ops_per_round=args.ops or config.ops_per_round,
        warmup_ops=config.warmup_ops,
        pin=not args.no_pin,
    )
    results = run(config)
    table = markdown(results)
    print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output_dir / "kvs_latency.md", table)
    write_atomically(args.output_dir / "kvs_latency.json", json.dumps(results, indent=2) + "\n")
    return 0
