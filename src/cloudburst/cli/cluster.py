"""``cloudburst up``, ``down`` and ``status``: a local cluster's lifecycle from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rich.console import Console

from cloudburst.cli.progress import STARTED, Steps
from cloudburst.cli.render import status_document, status_view
from cloudburst.client.connection import Connection
from cloudburst.cluster.local import ClusterConfig, LocalCluster, write_state
from cloudburst.config import DEFAULT_DATA_DIR, RuntimePorts
from cloudburst.errors import CloudburstError, ConfigError, DeadlineExceeded
from cloudburst.management.policy import ManagementPolicyConfig

_STATE_FILE = "cluster.json"
#: Where every running cluster is recorded by its host (besides its own data directory), so `down` and `status`
#: find a cluster started with another --data-dir.
_REGISTRY = DEFAULT_DATA_DIR / "running"
_SUPERVISE_EVERY = 0.2
#: A command's error in the output of ``cloudburst`` (see :func:`cloudburst.cli.main.main`), or argparse's.
_ERROR_LINE = re.compile(r"^cloudburst(?: [\w-]+)?: error: (.+)$", re.MULTILINE)


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


def running_cluster(data_dir: Path) -> dict[str, object] | None:
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


def _register(host: str, data_dir: Path, pid: int) -> None:
    _REGISTRY.mkdir(parents=True, exist_ok=True)
    (_REGISTRY / f"{host}.json").write_text(json.dumps({"host": host, "data_dir": str(data_dir), "pid": pid}))


def _unregister(host: str) -> None:
    (_REGISTRY / f"{host}.json").unlink(missing_ok=True)


def registered_clusters() -> dict[str, Path]:
    """The running clusters' data directories, by host (stale records are removed)."""
    found: dict[str, Path] = {}
    for record in sorted(_REGISTRY.glob("*.json")) if _REGISTRY.is_dir() else ():
        try:
            entry = json.loads(record.read_text())
            host, data_dir = str(entry["host"]), Path(entry["data_dir"])
        except (OSError, ValueError, KeyError):
            record.unlink(missing_ok=True)
            continue
        if running_cluster(data_dir) is not None:
            found[host] = data_dir
        else:
            record.unlink(missing_ok=True)
    return found


def down_command(data_dir: Path) -> str:
    """The command that stops the cluster recorded in ``data_dir``."""
    return "cloudburst down" if data_dir == DEFAULT_DATA_DIR else f"cloudburst down --data-dir {data_dir}"


def find_cluster(data_dir: Path, host: str | None, command: str) -> Path | None:
    """The data directory of the cluster ``command`` (``down`` or ``status``) is about.

    A host names it (``--host``); else ``data_dir`` if a cluster runs from it; else, when ``data_dir`` is the
    default, the one cluster running from any directory.

    Raises:
        CloudburstError: No cluster runs on ``host``, or several run and none was named.
    """
    clusters = registered_clusters()
    if host is not None:
        if host not in clusters:
            running = ", ".join(sorted(clusters)) or "none"
            raise CloudburstError(f"no cluster started by `cloudburst up` runs on {host} (running: {running})")
        return clusters[host]
    if running_cluster(data_dir) is not None or data_dir != DEFAULT_DATA_DIR:
        return data_dir
    if len(clusters) > 1:
        choices = "; ".join(f"`cloudburst {command} --host {h}` (data in {d})" for h, d in sorted(clusters.items()))
        raise CloudburstError(f"several clusters are running; name one: {choices}")
    return next(iter(clusters.values()), data_dir)


def up(args: argparse.Namespace) -> int:
    """Runs a local cluster in the foreground, or in the background with ``--detach``.

    Raises:
        CloudburstError: A cluster already runs on this data directory, or the cluster did not start.
    """
    existing = running_cluster(args.data_dir)
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
    console = Console()
    try:
        with _startup_logging(console, args.log_level), Steps(console) as steps:
            cluster.start(progress=steps.report)
        write_state(_state_path(args.data_dir), cluster, os.getpid())
        _register(args.host, args.data_dir, os.getpid())
        print(
            f"Cluster ready. Scheduler: {cluster.scheduler}   KVS: {cluster.kvs_routing}\n"
            f"Dashboard: {cluster.dashboard_url}\n"
            f"Connect with cloudburst.connect({cluster.scheduler!r}). Stop with Ctrl-C or "
            f"`{down_command(args.data_dir)}`.",
            flush=True,
        )
        while not stopping:
            cluster.supervise()
            time.sleep(_SUPERVISE_EVERY)
        print("Stopping the cluster ...", flush=True)
    finally:
        cluster.stop()
        _state_path(args.data_dir).unlink(missing_ok=True)
        _unregister(args.host)
    print("Cluster stopped.", flush=True)
    return 0


@contextlib.contextmanager
def _startup_logging(console: Console, level: str | None) -> Iterator[None]:
    """While a terminal shows the startup's progress, INFO logs (which would tear through the spinner and say the
    same) are held back, unless ``--log-level`` asked for them; warnings and errors still show."""
    root = logging.getLogger()
    before = root.level
    if console.is_terminal and level is None and before < logging.WARNING:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(before)


def _new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines written to ``path`` after byte ``offset``, and the offset after them."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            data = log.read()
    except OSError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode(errors="replace").splitlines(), offset + len(complete)


def _show_started(steps: Steps, log_path: Path, offset: int) -> int:
    """Shows the steps the detached supervisor has finished since ``offset``; returns the offset after them.

    The supervisor's output is a file, not a terminal, so its progress is plain lines, shown here as they come.
    """
    lines, offset = _new_lines(log_path, offset)
    for line in lines:
        if line.startswith(STARTED):
            steps.done(line)
    return offset


def _startup_failure(log_path: Path, offset: int) -> DeadlineExceeded:
    """Why the detached supervisor did not start the cluster: its error's first line, then its log's end."""
    output = log_path.read_bytes()[offset:].decode(errors="replace")
    found = _ERROR_LINE.search(output)
    headline = found.group(1) if found else "the cluster did not start"
    return DeadlineExceeded(f"{headline}\n\nThe cluster's log ({log_path}) ends with:\n{output[-3000:]}")


def _up_detached(args: argparse.Namespace) -> int:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.data_dir / "cluster.log"
    command = [sys.executable, "-m", "cloudburst", "up", "--host", args.host, "--executors", str(args.executors)]
    command += ["--nodes", str(args.nodes), "--gpu-executors", str(args.gpu_executors)]
    command += ["--report-period", str(args.report_period)]
    # The two are exclusive; in memory, the state file and the log use the default data directory, as here.
    command += ["--in-memory"] if args.in_memory else ["--data-dir", str(args.data_dir)]
    command += ["--kvs", args.kvs] if args.kvs else []
    command += ["--autoscale", "--max-nodes", str(args.max_nodes)] if args.autoscale else []
    with open(log_path, "ab") as log:
        # The log is appended to by every start: this start's lines are those after this offset.
        offset = read = log.tell()
        process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    give_up = time.monotonic() + 120
    with Steps(Console()) as steps:
        steps.spin("starting a cluster in the background ...")
        while (state := running_cluster(args.data_dir)) is None or state.get("pid") != process.pid:
            if process.poll() is not None or time.monotonic() > give_up:
                if process.poll() is None:
                    process.terminate()
                raise _startup_failure(log_path, offset)
            read = _show_started(steps, log_path, read)
            time.sleep(0.05)
        _show_started(steps, log_path, read)
    print(
        f"Cluster running in the background (supervisor pid {process.pid}, log {log_path}).\n"
        f"Scheduler: {state['scheduler']}   KVS: {state['kvs']}   Dashboard: {state.get('dashboard')}\n"
        f"Stop it with `{down_command(args.data_dir)}`."
    )
    return 0


def down(data_dir: Path, host: str | None = None) -> int:
    """Stops the cluster recorded in ``data_dir`` or running on ``host`` (see :func:`find_cluster`), with a spinner
    on a terminal while it stops.

    Raises:
        CloudburstError: No cluster runs on ``host``, or several run and none was named.
        DeadlineExceeded: Its supervisor did not stop within 60 s.
    """
    data_dir = find_cluster(data_dir, host, "down") or data_dir
    state = running_cluster(data_dir)
    if state is None:
        print("No cluster is running.")
        return 0
    pid = state["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    give_up = time.monotonic() + 60
    with Steps(Console()) as steps:
        steps.spin(f"stopping the cluster (supervisor pid {pid}) ...")
        while _alive(pid):
            if time.monotonic() > give_up:
                raise DeadlineExceeded(
                    f"the cluster supervisor (pid {pid}) did not stop within 60 s; its log is "
                    f"{data_dir / 'cluster.log'}, and `kill {pid}` asks it again"
                )
            time.sleep(0.05)
    _state_path(data_dir).unlink(missing_ok=True)
    print("Cluster stopped.")
    return 0


def scheduler_host(address: str, ports: RuntimePorts) -> str:
    """The scheduler's host from ``--scheduler``: a host, or its connect endpoint (``host:port``, ``tcp://...``).

    Raises:
        ConfigError: A port other than the scheduler's connect port.
    """
    host, colon, port = address.strip().removeprefix("tcp://").partition(":")
    # More than one colon is an IPv6 address, not a host and port.
    if not colon or ":" in port:
        return address.strip()
    if port != str(ports.connect):
        raise ConfigError(
            f"--scheduler {address!r}: schedulers answer on port {ports.connect}; give the host alone ({host!r})"
        )
    return host


def cancel(data_dir: Path, scheduler: str | None, request_id: str, timeout: float = 5.0) -> int:
    """Stops request ``request_id`` through the local cluster's scheduler, or ``scheduler``.

    Raises:
        CloudburstError: No cluster is running and no scheduler was given.
        DeadlineExceeded: The scheduler did not answer within ``timeout`` seconds.
    """
    host = _scheduler_of(data_dir, scheduler)
    with Connection(host, host="127.0.0.1", timeout=timeout, check_versions=False) as connection:
        connection.cancel(request_id)
    print(f"Cancelled {request_id}: work not started is dropped, running work is interrupted.")
    return 0


def _scheduler_of(data_dir: Path, scheduler: str | None) -> str:
    """The scheduler host a command talks to: ``--scheduler``, else the local cluster's.

    Raises:
        CloudburstError: No cluster is running and no scheduler was given.
        ConfigError: ``scheduler`` names a port other than the connect port.
    """
    if scheduler is None:
        state = running_cluster(find_cluster(data_dir, None, "status") or data_dir)
        if state is None:
            raise CloudburstError(
                f"no cluster is running from {data_dir} (none started by `cloudburst up` is recorded there): start "
                "one with `cloudburst up`, or ask a cluster elsewhere with --scheduler HOST"
            )
        scheduler = str(state["scheduler"])
    return scheduler_host(scheduler, RuntimePorts())


def status(data_dir: Path, scheduler: str | None, *, as_json: bool = False, timeout: float = 5.0) -> int:
    """Prints executors, pinned functions, DAGs and functions as the scheduler sees them: a table, or JSON.

    Raises:
        CloudburstError: No cluster is recorded in ``data_dir`` and no scheduler was given.
        ConfigError: ``scheduler`` names a port other than the connect port.
        DeadlineExceeded: The scheduler did not answer within ``timeout`` seconds.
    """
    ports = RuntimePorts()
    host = _scheduler_of(data_dir, scheduler)
    # Status ships no functions, so a cluster of other versions is still shown; the reply address is never used.
    with Connection(host, host="127.0.0.1", ports=ports, timeout=timeout, check_versions=False) as connection:
        view = connection.status()
    if as_json:
        print(json.dumps(status_document(host, view), indent=2))
    else:
        Console().print(status_view(host, view))
    return 0
