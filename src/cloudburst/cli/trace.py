"""``cloudburst trace <request-id>``: one request's hops, as the management service recorded them.

The trace comes from the dashboard's JSON API (``/api/traces/<id>``) of the management service: the local
cluster's (recorded by ``cloudburst up``), or the one named with ``--management`` or ``--dashboard``. Steps are
reported by the roles within a fraction of a second, so the command waits briefly for a trace that is not there
yet, and for one whose DAG has not reported every stage.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from cloudburst.cli.dashboard_api import dashboard_address, get_json
from cloudburst.config import DEFAULT_DATA_DIR
from cloudburst.errors import DeadlineExceeded
from cloudburst.protocol.telemetry_messages import PLACING_ROLES

#: Characters of the waterfall column.
WATERFALL_WIDTH = 28
_POLL_SECONDS = 0.1


def add_trace_parser(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    """Adds ``trace`` to the command line."""
    trace = commands.add_parser("trace", help="show which scheduler and executors ran a request, with timings")
    trace.add_argument("request_id", help="the request id (a future's obj_id, or an error's request id)")
    trace.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: %(default)s")
    where = trace.add_mutually_exclusive_group()
    where.add_argument("--management", metavar="HOST", help="the management service's host")
    where.add_argument("--dashboard", metavar="URL", help="the dashboard's address, e.g. http://10.0.0.5:7080/")
    trace.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the trace (default: %(default)s)")
    trace.add_argument("--json", action="store_true", help="print the trace as JSON")


def run_trace(args: argparse.Namespace, console: Console | None = None) -> int:
    """Prints the trace of ``args.request_id``.

    Raises:
        CloudburstError: No dashboard is known or reachable.
        DeadlineExceeded: The management service keeps no trace of the request within ``--wait`` seconds.
    """
    base = dashboard_address(args.dashboard, args.management, args.data_dir)
    trace = fetch_trace(base, args.request_id, args.wait)
    if args.json:
        print(json.dumps(trace, indent=2))
        return 0
    (console or Console()).print(render_trace(trace))
    return 0


def fetch_trace(base: str, request_id: str, wait: float) -> dict[str, Any]:
    """The trace of ``request_id`` from the dashboard at ``base``.

    Waits up to ``wait`` seconds for it to appear and, for a DAG request, for every placed stage to report.

    Raises:
        CloudburstError: The dashboard cannot be reached, or answers something other than a trace.
        DeadlineExceeded: No trace of the request within ``wait`` seconds.
    """
    url = base + "api/traces/" + urllib.parse.quote(request_id, safe="")
    give_up = time.monotonic() + wait
    while True:
        trace: dict[str, Any] | None = get_json(url, timeout=max(1.0, wait), missing_ok=True)
        if trace is not None and (complete(trace) or time.monotonic() >= give_up):
            return trace
        if time.monotonic() >= give_up:
            raise DeadlineExceeded(
                f"the management service at {base} keeps no trace of request {request_id!r} "
                "(it keeps the most recent requests only)",
                request_id=request_id,
            )
        time.sleep(_POLL_SECONDS)


def complete(trace: Mapping[str, Any]) -> bool:
    """Whether every stage placed (by a scheduler or the client) has reported (or a step failed, which ends the
    request)."""
    hops: Sequence[Mapping[str, Any]] = trace.get("hops", [])
    if any(not hop.get("ok", True) for hop in hops):
        return True
    placed = [hop for hop in hops if hop.get("role") in PLACING_ROLES]
    executed = [hop for hop in hops if hop.get("role") == "executor"]
    if not placed:
        return bool(executed)
    return len(executed) >= sum(int(hop.get("stages") or 0) for hop in placed)


def render_trace(trace: Mapping[str, Any]) -> Group:
    """The trace as a table of hops with a waterfall, followed by any error's remote traceback."""
    hops: Sequence[Mapping[str, Any]] = trace.get("hops", [])
    first = min((float(hop["start"]) for hop in hops), default=0.0)
    last = max((float(hop["start"]) + (hop.get("duration_ms") or 0) / 1000 for hop in hops), default=first)
    span = max(last - first, 1e-6)
    status = "[green]ok[/]" if trace.get("ok") else "[red]failed[/]"
    title = (
        f"request {trace.get('request_id')}  {trace.get('name') or ''}  {status}  "
        f"{_number(trace.get('duration_ms'))} ms, {len(hops)} hops"
    )
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("#", "role", "node", "function", "at ms", "queue ms", "ms"):
        table.add_column(
            column, justify="right" if column in ("#", "at ms", "queue ms", "ms") else "left", no_wrap=True
        )
    table.add_column("", no_wrap=True)
    table.add_column("reads / placement")
    errors = []
    for index, hop in enumerate(hops, 1):
        start = float(hop["start"]) - first
        duration = (hop.get("duration_ms") or 0) / 1000
        offset = min(WATERFALL_WIDTH - 1, int(start / span * WATERFALL_WIDTH))
        width = max(1, min(WATERFALL_WIDTH - offset, round(duration / span * WATERFALL_WIDTH)))
        bar = Text(" " * offset + "█" * width, style="green" if hop.get("ok", True) else "red")
        what = hop.get("function") or hop.get("dag") or ""
        table.add_row(
            str(index),
            str(hop.get("role", "")),
            str(hop.get("node", "")),
            str(what),
            f"{start * 1000:.2f}",
            _number(hop.get("queue_ms")),
            _number(hop.get("duration_ms")),
            bar,
            _reads(hop) or str(hop.get("detail") or ""),
        )
        if not hop.get("ok", True):
            errors.append(hop)
    parts: list[Any] = [table]
    for hop in errors:
        parts.append(Text(f"\n{hop.get('node')}: {hop.get('error')}", style="bold red"))
        if hop.get("traceback"):
            parts.append(Text(str(hop["traceback"]).rstrip()))
    return Group(*parts)


def _reads(hop: Mapping[str, Any]) -> str:
    reads: Sequence[Mapping[str, Any]] = hop.get("reads") or []
    described = []
    for read in reads:
        outcome = "hit" if read.get("hit") else "miss"
        described.append(f"{read.get('key')} ({read.get('source')} {outcome}, {read.get('version') or 'missing'})")
    return "; ".join(described)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
