"""``cloudburst drain <node>``: an operator drains a node through the management service and watches it go.

The management service tells the node's executors to depart (each finishes what it holds, reports, exits) and
releases the node once they all have; the command follows that on the dashboard's JSON API until the node is gone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from cloudburst.cli.dashboard_api import dashboard_address, get_json, management_host
from cloudburst.cli.progress import Steps
from cloudburst.config import DEFAULT_DATA_DIR, RuntimePorts
from cloudburst.errors import DeadlineExceeded
from cloudburst.management.client import request_drain

_POLL_SECONDS = 0.2


def add_drain_parser(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    """Adds ``drain`` to the command line."""
    drain = commands.add_parser("drain", help="drain a node: its executors finish their work, then it is released")
    drain.add_argument("node", help="the node's address, as the dashboard and `cloudburst status` show it")
    drain.add_argument("--management", metavar="HOST", help="the management service's host (default: the local one)")
    drain.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: %(default)s")
    drain.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the release (default: 120)")


def run_drain(args: argparse.Namespace, console: Console | None = None) -> int:
    """Asks for the drain, then waits until the node is released.

    Raises:
        CloudburstError: No management service is known, or it refused the drain (the message says why).
        DeadlineExceeded: The management service did not answer, or the node was not released in time.
    """
    host = management_host(args.management, args.data_dir)
    ports = RuntimePorts()
    with Steps(console or Console()) as steps:
        steps.spin(f"asking the management service on {host} to drain {args.node} ...")
        answer = request_drain(ports.management_drains_endpoint(host), args.node, timeout=10.0)
        threads = answer.get("threads", [])
        steps.done(f"draining {args.node}: {len(threads)} executor(s) told to finish their work and depart")
        started = time.monotonic()
        wait_for_release(dashboard_address(None, host, args.data_dir), args.node, args.timeout, steps)
        steps.done(f"released {args.node}", time.monotonic() - started)
    return 0


def wait_for_release(dashboard: str, node: str, timeout: float, steps: Steps) -> None:
    """Follows the node on the dashboard's cluster view until it is gone.

    Raises:
        DeadlineExceeded: It is still there after ``timeout`` seconds.
    """
    give_up = time.monotonic() + timeout
    while True:
        view = get_json(dashboard + "api/cluster")
        entry = next((n for n in view.get("nodes", []) if n.get("address") == node), None)
        if entry is None:
            return
        busy = sum(1 for executor in entry.get("executors", []) if executor.get("running"))
        left = len(entry.get("executors", []))
        steps.spin(f"{node} is draining: {left} executor(s) still reporting, {busy} not yet departing ...")
        if time.monotonic() > give_up:
            raise DeadlineExceeded(f"{node} was not released within {timeout:g} s; it is {entry.get('state')}")
        time.sleep(_POLL_SECONDS)
