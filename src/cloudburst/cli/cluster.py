"""``cloudburst up``, ``down`` and ``status``: a local cluster's lifecycle from the command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from cloudburst.client.connection import Connection
from cloudburst.cluster.local import ClusterConfig, LocalCluster, write_state
from cloudburst.errors import CloudburstError, DeadlineExceeded
from cloudburst.management.policy import ManagementPolicyConfig

_STATE_FILE = "cluster.json"
_SUPERVISE_EVERY = 0.2


def _state_path(data_dir: Path) -> Path:
    return data_dir / _STATE_FILE


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _running_cluster(data_dir: Path) -> dict[str, object] | None:
    """The recorded cluster if its supervisor still runs (a stale record is removed)."""
    path = _state_path(data_dir)
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if isinstance(pid, int) and _alive(pid):
        return state
    path.unlink(missing_ok=True)
    return None


def up(args: argparse.Namespace) -> int:
    """Runs a local cluster in the foreground, or in the background with ``--detach``.

    Raises:
        CloudburstError: A cluster already runs on this data directory, or the cluster did not start.
    """
    existing = _running_cluster(args.data_dir)
    if existing is not None:
        raise CloudburstError(
            f"a cluster is already running (supervisor pid {existing['pid']}, scheduler {existing['scheduler']}); "
            "stop it with `cloudburst down`"
        )
    if args.detach:
        return _up_detached(args)
    config = ClusterConfig(
        host=args.host,
        executors=args.executors,
        nodes=args.nodes,
        gpu_executors=args.gpu_executors,
        data_dir=None if args.in_memory else args.data_dir,
        kvs_engine=args.kvs,
        report_period=args.report_period,
        autoscale=args.autoscale,
        scaling=ManagementPolicyConfig(
            report_period=args.report_period,
            thread_timeout=3 * args.report_period,
            min_nodes=args.nodes,
            max_nodes=max(args.nodes, args.max_nodes),
        ),
    )
    cluster = LocalCluster(config)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"Starting a cluster on {args.host}: KVS, scheduler, {args.nodes} node(s) of a cache and "
        f"{args.executors} executors ...",
        flush=True,
    )
    try:
        cluster.start()
        write_state(_state_path(args.data_dir), cluster, os.getpid())
        print(
            f"Cluster ready. Scheduler: {cluster.scheduler}   KVS: {cluster.kvs_routing}\n"
            f"Connect with cloudburst.connect({cluster.scheduler!r}). Stop with Ctrl-C or `cloudburst down`.",
            flush=True,
        )
        while not stopping:
            cluster.supervise()
            time.sleep(_SUPERVISE_EVERY)
        print("Stopping the cluster ...", flush=True)
    finally:
        cluster.stop()
        _state_path(args.data_dir).unlink(missing_ok=True)
    print("Cluster stopped.", flush=True)
    return 0


def _up_detached(args: argparse.Namespace) -> int:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.data_dir / "cluster.log"
    command = [sys.executable, "-m", "cloudburst", "up", "--host", args.host, "--executors", str(args.executors)]
    command += ["--nodes", str(args.nodes), "--gpu-executors", str(args.gpu_executors)]
    command += ["--data-dir", str(args.data_dir), "--report-period", str(args.report_period)]
    command += ["--in-memory"] if args.in_memory else []
    command += ["--kvs", args.kvs] if args.kvs else []
    command += ["--autoscale", "--max-nodes", str(args.max_nodes)] if args.autoscale else []
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    give_up = time.monotonic() + 120
    while (state := _running_cluster(args.data_dir)) is None or state.get("pid") != process.pid:
        if process.poll() is not None or time.monotonic() > give_up:
            if process.poll() is None:
                process.terminate()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise DeadlineExceeded(f"the cluster did not start; its log ({log_path}) ends with:\n{tail}")
        time.sleep(0.05)
    print(
        f"Cluster running in the background (supervisor pid {process.pid}, log {log_path}).\n"
        f"Scheduler: {state['scheduler']}   KVS: {state['kvs']}   Stop it with `cloudburst down`."
    )
    return 0


def down(data_dir: Path) -> int:
    """Stops the cluster recorded in ``data_dir``."""
    state = _running_cluster(data_dir)
    if state is None:
        print("No cluster is running.")
        return 0
    pid = state["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    give_up = time.monotonic() + 60
    while _alive(pid):
        if time.monotonic() > give_up:
            raise DeadlineExceeded(f"the cluster supervisor (pid {pid}) did not stop within 60 s")
        time.sleep(0.05)
    _state_path(data_dir).unlink(missing_ok=True)
    print("Cluster stopped.")
    return 0


def status(data_dir: Path, scheduler: str | None) -> int:
    """Prints executors, pinned functions and DAGs as the scheduler sees them."""
    if scheduler is None:
        state = _running_cluster(data_dir)
        if state is None:
            raise CloudburstError("no cluster is running here; start one with `cloudburst up` or pass --scheduler")
        scheduler = str(state["scheduler"])
    with Connection(scheduler, host=scheduler, timeout=5.0) as connection:
        view = connection.status()
    print(
        f"Scheduler {scheduler}: {len(view.executors)} executors, {len(view.dags)} DAGs, "
        f"{len(view.functions)} functions"
    )
    print(f"{'EXECUTOR':<24} {'STATE':<10} {'UTIL':>6}  PINNED")
    for executor in sorted(view.executors, key=lambda e: (e.ip, e.tid)):
        state_name = "running" if executor.running else "departing"
        kind = " (GPU)" if executor.type else ""
        print(
            f"{executor.ip + ':' + str(executor.tid) + kind:<24} {state_name:<10} {executor.utilization:>6.1%}  "
            f"{', '.join(executor.functions) or '-'}"
        )
    print(f"DAGs: {', '.join(sorted(view.dags)) or '-'}")
    print(f"Functions: {', '.join(sorted(view.functions)) or '-'}")
    return 0
