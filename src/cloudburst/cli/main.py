"""Entry point of the ``cloudburst`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from cloudburst.config import DEFAULT_DATA_DIR, KvsConfig
from cloudburst.errors import CloudburstError


def _add_kvs_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kvs = commands.add_parser("kvs", help="run a KVS node (Anna protocol) in the foreground")
    kvs.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    kvs.add_argument("--advertise-host", help="address clients reach this node at (default: --host)")
    kvs.add_argument("--routing-port", type=int, default=6450, help="0 picks a free port (default: %(default)s)")
    kvs.add_argument("--storage-port", type=int, default=6200, help="thread t listens on this + t; 0 picks free ports")
    kvs.add_argument("--threads", type=int, default=1, help="storage threads (default: %(default)s)")
    storage = kvs.add_mutually_exclusive_group()
    storage.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state directory (default: %(default)s)"
    )
    storage.add_argument("--in-memory", action="store_true", help="keep data in memory only (lost on exit)")
    kvs.add_argument(
        "--durability",
        choices=["NORMAL", "FULL"],
        default="NORMAL",
        help="NORMAL survives a killed process, FULL also power loss (default: %(default)s)",
    )
    kvs.add_argument("--ready-file", type=Path, help="write the bound addresses here once listening")


def _add_demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="start a local deployment, run a representative workload, report")
    demo.add_argument("--data-dir", type=Path, help="keep the demo's data here (default: a temporary directory)")
    demo.add_argument("--operations", type=int, default=2000, help="operations per latency measurement")


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(prog="cloudburst", description="Low-latency stateful functions on a lattice KVS.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_kvs_parser(commands)
    _add_demo_parser(commands)
    return parser


def _run_kvs(args: argparse.Namespace) -> int:
    from cloudburst.kvs.server import KvsServer

    config = KvsConfig(
        host=args.host,
        advertise_host=args.advertise_host,
        routing_port=args.routing_port,
        storage_port=args.storage_port,
        threads=args.threads,
        data_dir=None if args.in_memory else args.data_dir / "kvs",
        durability=args.durability,
    )
    server = KvsServer(config)

    def _stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if args.ready_file:
            server.write_ready_file(args.ready_file)
        server.serve_forever()
    finally:
        server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the ``cloudburst`` command.

    Returns:
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "kvs":
            return _run_kvs(args)
        from cloudburst.cli.demo import run_demo

        return run_demo(data_dir=args.data_dir, operations=args.operations)
    except CloudburstError as error:
        print(f"cloudburst: error: {error}", file=sys.stderr)
        return 1
