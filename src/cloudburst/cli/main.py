"""Entry point of the ``cloudburst`` command: the only code that reads arguments."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cloudburst.cli.config_file import (
    DURABILITY_LEVELS,
    PROVISIONERS,
    ROLE_OPTIONS,
    SCHEDULER_POLICIES,
    apply_file_options,
    load_role_options,
)
from cloudburst.cli.drain import add_drain_parser, run_drain
from cloudburst.cli.trace import add_trace_parser, run_trace
from cloudburst.cluster.serve import serve_until_signalled
from cloudburst.config import DEFAULT_DATA_DIR, ExecutorConfig, KvsConfig, ManagementConfig, NodeConfig, SchedulerConfig
from cloudburst.errors import CloudburstError, ConfigError
from cloudburst.management.policy import ManagementPolicyConfig
from cloudburst.transport.security import SecurityConfig, generate_keys

if TYPE_CHECKING:
    from cloudburst.management.server import Provisioner

_Commands = argparse._SubParsersAction  # the type argparse gives no public name


def _add_child_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ready-file", type=Path, help="write the bound addresses here once listening")
    parser.add_argument("--parent-pid", type=int, help="exit when this process exits (set by supervisors)")


def _add_schedulers_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--scheduler", dest="schedulers", metavar="HOST", action="append", default=[], help=help_text)


def _add_curve_options(parser: argparse.ArgumentParser) -> None:
    curve = parser.add_argument_group("CURVE (authentication and encryption; see docs/security.md)")
    curve.add_argument("--curve-server-secret", type=Path, metavar="FILE", help="the cluster keypair's secret file")
    curve.add_argument("--curve-client-secret", type=Path, metavar="FILE", help="this role's client secret file")
    curve.add_argument(
        "--curve-authorized", type=Path, metavar="DIR", help="directory of the authorized client public keys (*.key)"
    )


def _role_security(args: argparse.Namespace) -> SecurityConfig | None:
    """The CURVE keys the role's flags name; ``None`` when none is given.

    Raises:
        ConfigError: Some but not all three are given, or a key file is missing or malformed.
    """
    files = (args.curve_server_secret, args.curve_client_secret, args.curve_authorized)
    if all(path is None for path in files):
        return None
    if any(path is None for path in files):
        raise ConfigError("CURVE needs all of --curve-server-secret, --curve-client-secret and --curve-authorized")
    return SecurityConfig.for_role(*files)


def _add_config_option(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"read options from the [{role}] table of this TOML file; flags override it (see docs/deploy.md)",
    )


def _add_kvs_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    kvs = commands.add_parser("kvs", help="run a KVS node (Anna protocol) in the foreground")
    kvs.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    kvs.add_argument("--advertise-host", help="address clients reach this node at (default: --host)")
    kvs.add_argument("--routing-port", type=int, default=6450, help="0 picks a free port (default: %(default)s)")
    kvs.add_argument(
        "--routing-ports",
        type=int,
        default=4,
        help="consecutive ports from --routing-port that answer lookups, as Anna's routing threads (default: 4)",
    )
    kvs.add_argument("--storage-port", type=int, default=6200, help="thread t listens on this + t; 0 picks free ports")
    kvs.add_argument(
        "--trigger-port", type=int, default=6960, help="where storage triggers' runs are acknowledged; 0: a free port"
    )
    kvs.add_argument("--threads", type=int, default=1, help="storage threads (default: %(default)s)")
    storage = kvs.add_mutually_exclusive_group()
    storage.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state directory (default: %(default)s)"
    )
    storage.add_argument("--in-memory", action="store_true", help="keep data in memory only (lost on exit)")
    storage.add_argument(
        "--engine",
        metavar="URL",
        help="store in Redis: redis://host:port[/db] or redis+cluster://host:port,... (see docs/storage.md)",
    )
    kvs.add_argument(
        "--durability",
        choices=DURABILITY_LEVELS,
        default="NORMAL",
        help="NORMAL survives a killed process, FULL also power loss (default: %(default)s)",
    )
    _add_config_option(kvs, "kvs")
    _add_curve_options(kvs)
    _add_child_options(kvs)


def _add_scheduler_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    scheduler = commands.add_parser("scheduler", help="run a scheduler in the foreground")
    scheduler.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    scheduler.add_argument("--kvs", default="tcp://127.0.0.1:6450", help="KVS routing endpoint")
    scheduler.add_argument(
        "--peer",
        dest="peers",
        metavar="HOST",
        action="append",
        default=[],
        help="another scheduler's host (repeatable)",
    )
    scheduler.add_argument("--report-period", type=float, default=5.0, help="seconds between reports")
    scheduler.add_argument("--policy", choices=SCHEDULER_POLICIES, default="locality", help="placement policy")
    scheduler.add_argument(
        "--management", help="the management service's host: gets call statistics, lists schedulers to gossip with"
    )
    _add_config_option(scheduler, "scheduler")
    _add_curve_options(scheduler)
    _add_child_options(scheduler)


def _add_executor_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    executor = commands.add_parser("executor", help="run one executor in the foreground")
    executor.add_argument("--host", default="127.0.0.1", help="node address to bind (default: %(default)s)")
    executor.add_argument("--tid", type=int, default=0, help="executor id on this node; selects its ports")
    executor.add_argument("--scheduler", action="append", default=[], help="a scheduler's host (repeatable)")
    executor.add_argument("--kvs", default="tcp://127.0.0.1:6450", help="KVS routing endpoint")
    executor.add_argument("--gpu", action="store_true", help="a GPU executor (takes only GPU functions)")
    executor.add_argument("--cache", help="the node cache's request endpoint (default: use the KVS directly)")
    executor.add_argument("--cache-invalidations", help="the node cache's invalidation endpoint (local copies)")
    executor.add_argument("--cache-causal", help="the node cache's causal-read endpoint (SINGLE and MULTI calls)")
    executor.add_argument("--management", help="the management service's host, which gets the reports too")
    executor.add_argument("--report-period", type=float, default=5.0, help="seconds between reports")
    _add_curve_options(executor)
    _add_child_options(executor)


def _add_management_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    defaults = ManagementPolicyConfig()
    management = commands.add_parser(
        "management", help="run the management service (scaling, executor and scheduler lists) in the foreground"
    )
    management.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    _add_schedulers_option(management, "a scheduler's host, always listed (repeatable)")
    management.add_argument(
        "--provisioner",
        choices=PROVISIONERS,
        default="none",
        help="where nodes come from; none: node decisions are only logged; kubernetes: the pods of a Deployment; "
        "local: a local cluster's supervisor, at --provisioner-endpoint (default: %(default)s)",
    )
    management.add_argument(
        "--provisioner-endpoint", metavar="ENDPOINT", help="with --provisioner local: where the supervisor answers"
    )
    management.add_argument(
        "--watch-only",
        action="store_true",
        help="make no scaling decision: serve the lists, the dashboard, traces and operators' drains only",
    )
    kubernetes = management.add_argument_group("kubernetes provisioner")
    kubernetes.add_argument("--k8s-namespace", default="default", help="the executor Deployment's namespace")
    kubernetes.add_argument("--k8s-deployment", default="cloudburst-node", help="the executor nodes' Deployment")
    kubernetes.add_argument(
        "--k8s-selector", default="app=cloudburst-node", help="label selector of that Deployment's pods"
    )
    kubernetes.add_argument(
        "--k8s-ready-timeout", type=float, default=120.0, help="seconds to wait for new pods to become ready"
    )
    policy = management.add_argument_group("policy")
    policy.add_argument(
        "--report-period", type=float, default=defaults.report_period, help="seconds between policy runs"
    )
    policy.add_argument(
        "--thread-timeout",
        type=float,
        help="seconds of silence before an executor or scheduler is forgotten (default: 3 report periods)",
    )
    policy.add_argument("--min-nodes", type=int, default=defaults.min_nodes, help="default: %(default)s")
    policy.add_argument("--max-nodes", type=int, default=defaults.max_nodes, help="default: %(default)s")
    policy.add_argument("--scale-increase", type=int, default=defaults.scale_increase, help="nodes added at once")
    policy.add_argument(
        "--grace-period", type=float, default=defaults.grace_period, help="seconds between node changes"
    )
    policy.add_argument(
        "--max-utilization", type=float, default=defaults.max_utilization, help="add nodes above this mean"
    )
    policy.add_argument(
        "--min-utilization", type=float, default=defaults.min_utilization, help="drain a node below this mean"
    )
    policy.add_argument(
        "--max-pinned-ratio", type=float, default=defaults.max_pinned_ratio, help="add nodes above this pin ratio"
    )
    policy.add_argument(
        "--scale-up-load", type=float, default=defaults.scale_up_load, help="add replicas above this load share"
    )
    policy.add_argument(
        "--scale-down-load", type=float, default=defaults.scale_down_load, help="remove replicas below this share"
    )
    policy.add_argument(
        "--max-latency-deviation",
        type=float,
        default=defaults.max_latency_deviation,
        help="add replicas when latency exceeds its history by this factor",
    )
    policy.add_argument("--min-replicas", type=int, default=defaults.min_replicas, help="default: %(default)s")
    policy.add_argument(
        "--replica-cooldown", type=float, help="seconds between replica changes of a function (default: 2 periods)"
    )
    policy.add_argument(
        "--hot-thread-utilization",
        type=float,
        default=defaults.hot_thread_utilization,
        help="threads busier than this get more replicas",
    )
    policy.add_argument(
        "--hot-thread-replicas", type=int, default=defaults.hot_thread_replicas, help="replicas added per hot thread"
    )
    policy.add_argument(
        "--node-join-timeout",
        type=float,
        default=defaults.node_join_timeout,
        help="seconds a requested node may take to report",
    )
    _add_config_option(management, "management")
    _add_curve_options(management)
    _add_child_options(management)


def _add_node_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    node = commands.add_parser(
        "node", help="run an executor node (a node cache and its executors, supervised) in the foreground"
    )
    node.add_argument("--host", default="127.0.0.1", help="the node's address (default: %(default)s)")
    _add_schedulers_option(node, "a scheduler's host the executors report to (repeatable)")
    node.add_argument("--management", help="the management service's host: reports, and the scheduler list")
    node.add_argument("--kvs", default="tcp://127.0.0.1:6450", help="KVS routing endpoint")
    node.add_argument("--executors", type=int, default=3, help="executor processes (default: %(default)s)")
    node.add_argument("--gpu-executors", type=int, default=0, help="GPU executors besides, for GPU functions")
    node.add_argument("--report-period", type=float, default=5.0, help="seconds between reports")
    node.add_argument(
        "--work-dir", type=Path, help="where the children's logs go (default: a temporary directory, removed on exit)"
    )
    _add_config_option(node, "node")
    _add_curve_options(node)
    _add_child_options(node)


def _add_cache_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser("cache", help="run a node's cache (shared by the node's executors) in the foreground")
    cache.add_argument("--host", default="127.0.0.1", help="the node's address (default: %(default)s)")
    cache.add_argument("--kvs", default="tcp://127.0.0.1:6450", help="KVS routing endpoint")
    cache.add_argument("--management", help="the management service's host, which gets the cache's figures")
    _add_curve_options(cache)
    _add_child_options(cache)


def _add_cluster_parsers(commands: _Commands[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="run a local cluster (KVS, scheduler, executors)")
    up.add_argument("--executors", type=int, default=3, help="executor processes per node (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=1, help="nodes on consecutive addresses from --host (default: 1)")
    up.add_argument("--gpu-executors", type=int, default=0, help="GPU executors per node, for GPU functions")
    up.add_argument("--host", default="127.0.0.1", help="address every role binds (default: %(default)s)")
    storage = up.add_mutually_exclusive_group()
    storage.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: %(default)s")
    storage.add_argument("--in-memory", action="store_true", help="throw the data away when the cluster stops")
    up.add_argument("--kvs", metavar="URL", help="the KVS stores in Redis at this engine URL (see kvs --engine)")
    up.add_argument("--detach", action="store_true", help="return once the cluster is ready; stop it with down")
    up.add_argument("--report-period", type=float, default=5.0, help="seconds between reports")
    up.add_argument(
        "--autoscale",
        action="store_true",
        help="run the management service: add nodes under load and drain idle ones, down to --nodes",
    )
    up.add_argument("--max-nodes", type=int, default=8, help="with --autoscale, the most nodes (default: %(default)s)")
    down = commands.add_parser("down", help="stop a cluster started with up --detach")
    down.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the cluster started with this data directory (default: %(default)s, or the one cluster running)",
    )
    down.add_argument("--host", help="the cluster started on this host")
    cancel = commands.add_parser(
        "cancel",
        help="stop a request: work not started is dropped, running work interrupted",
        description="Stops a request (a call's or DAG request's id, as futures and `cloudburst trace` show it): "
        "work for it not started yet is dropped, running work is interrupted, and its caller gets Cancelled.",
    )
    cancel.add_argument("request_id", help="the request to stop")
    cancel.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: %(default)s")
    cancel.add_argument("--scheduler", metavar="HOST", help="ask this scheduler host instead of the local cluster's")
    status = commands.add_parser("status", help="show executors, pinned functions and DAGs")
    status.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: %(default)s")
    status.add_argument("--scheduler", metavar="HOST", help="ask this scheduler host instead of the local cluster's")
    status.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of tables")
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the scheduler (default: %(default)s)"
    )


def _add_keys_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="manage CURVE keys (see docs/security.md)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    generate = actions.add_parser("generate", help="write a new keypair: DIR/NAME.key (public), DIR/NAME.key_secret")
    generate.add_argument("directory", type=Path, metavar="DIR", help="where to write (created if missing)")
    generate.add_argument("--name", default="cloudburst", help="the files' base name (default: %(default)s)")


def _run_keys(args: argparse.Namespace) -> int:
    public, secret = generate_keys(args.directory, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0


def _add_demo_parser(commands: _Commands[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="start a local deployment, run a representative workload, report")
    demo.add_argument("--operations", type=int, default=500, help="calls per latency measurement")


def build_parser(role_defaults: Mapping[str, Mapping[str, object]] | None = None) -> argparse.ArgumentParser:
    """The command-line grammar.

    Args:
        role_defaults: Defaults to use instead of the built-in ones, by command and option destination.
    """
    parser = argparse.ArgumentParser(prog="cloudburst", description="Low-latency stateful functions on a lattice KVS.")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO for servers, WARNING for commands that print their own report",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_kvs_parser(commands)
    _add_scheduler_parser(commands)
    _add_executor_parser(commands)
    _add_node_parser(commands)
    _add_cache_parser(commands)
    _add_management_parser(commands)
    _add_cluster_parsers(commands)
    _add_keys_parser(commands)
    _add_demo_parser(commands)
    add_trace_parser(commands)
    add_drain_parser(commands)
    for command, defaults in (role_defaults or {}).items():
        commands.choices[command].set_defaults(**defaults)
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line, with the options of a role's ``--config`` file under those the command line gives.

    Raises:
        ConfigError: The config file cannot be read or is invalid.
        SystemExit: The command line is invalid (argparse has printed the usage).
    """
    args = build_parser().parse_args(argv)
    path = getattr(args, "config", None)
    if path is None:
        return args
    file_options = load_role_options(path, args.command)
    # Parsed again with the role's defaults all None, an option that is not None is one the command line gave.
    unset = dict.fromkeys(ROLE_OPTIONS[args.command])
    probe = build_parser({args.command: unset}).parse_args(argv)
    given = {key for key in unset if getattr(probe, key) is not None}
    return argparse.Namespace(**apply_file_options(vars(args), file_options, given, args.command))


def _exit_with_parent(parent_pid: int | None) -> None:
    """Sends ourselves SIGTERM (a graceful stop) once the supervising parent is gone, so no stray survives it."""
    if parent_pid is None:
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run_kvs(args: argparse.Namespace) -> int:
    from cloudburst.kvs.server import KvsServer

    config = KvsConfig(
        host=args.host,
        advertise_host=args.advertise_host,
        routing_port=args.routing_port,
        routing_ports=args.routing_ports,
        storage_port=args.storage_port,
        trigger_port=args.trigger_port,
        threads=args.threads,
        data_dir=None if args.in_memory else args.data_dir / "kvs",
        durability=args.durability,
        engine_url=args.engine,
        security=_role_security(args),
    )
    return serve_until_signalled(KvsServer(config), args.ready_file)


def _run_scheduler(args: argparse.Namespace) -> int:
    from cloudburst.scheduler.server import run_scheduler

    config = SchedulerConfig(
        host=args.host,
        kvs_routing=args.kvs,
        peers=tuple(args.peers),
        report_period=args.report_period,
        policy=args.policy,
        management=args.management,
        security=_role_security(args),
    )
    return run_scheduler(config, args.ready_file)


def _run_executor(args: argparse.Namespace) -> int:
    from cloudburst.executor.server import run_executor

    config = ExecutorConfig(
        host=args.host,
        tid=args.tid,
        schedulers=_schedulers(args.scheduler, args.management),
        kvs_routing=args.kvs,
        gpu=args.gpu,
        report_period=args.report_period,
        cache_address=args.cache,
        cache_invalidations=args.cache_invalidations,
        cache_causal=args.cache_causal,
        management=args.management,
        security=_role_security(args),
    )
    return run_executor(config, args.ready_file)


def _schedulers(given: list[str], management: str | None) -> tuple[str, ...]:
    """The schedulers executors report to: those given, else the local one unless a management service lists them."""
    # With a management service to list them, an executor may start knowing no scheduler (the original's executors
    # needed their full list at start).
    return tuple(given or ([] if management else ["127.0.0.1"]))


def _run_node(args: argparse.Namespace) -> int:
    from cloudburst.cluster.node import run_node

    config = NodeConfig(
        host=args.host,
        kvs_routing=args.kvs,
        schedulers=_schedulers(args.schedulers, args.management),
        management=args.management,
        executors=args.executors,
        gpu_executors=args.gpu_executors,
        report_period=args.report_period,
        security=_role_security(args),
    )
    return run_node(config, args.work_dir, args.ready_file)


def _provisioner(args: argparse.Namespace) -> Provisioner:
    """The provisioner ``--provisioner`` names (one of :data:`PROVISIONERS`).

    Raises:
        ConfigError: An unknown name.
    """
    from cloudburst.management.server import NullProvisioner

    if args.provisioner == "none":
        return NullProvisioner()
    if args.provisioner == "kubernetes":
        from cloudburst.management.kubernetes import KubernetesProvisioner, KubernetesProvisionerConfig

        config = KubernetesProvisionerConfig(
            namespace=args.k8s_namespace,
            deployment=args.k8s_deployment,
            label_selector=args.k8s_selector,
            ready_timeout=args.k8s_ready_timeout,
        )
        return KubernetesProvisioner.from_environment(config)
    if args.provisioner == "local":
        if not args.provisioner_endpoint:
            raise ConfigError("--provisioner local needs --provisioner-endpoint (the supervisor's link)")
        from cloudburst.management.provisioner_link import RemoteProvisioner

        return RemoteProvisioner(args.provisioner_endpoint)
    raise ConfigError(f"unknown provisioner {args.provisioner!r}; choose one of {', '.join(PROVISIONERS)}")


def _run_management(args: argparse.Namespace) -> int:
    from cloudburst.management.server import run_management

    policy = ManagementPolicyConfig(
        report_period=args.report_period,
        thread_timeout=args.thread_timeout if args.thread_timeout is not None else 3 * args.report_period,
        min_nodes=args.min_nodes,
        max_nodes=args.max_nodes,
        scale_increase=args.scale_increase,
        grace_period=args.grace_period,
        max_utilization=args.max_utilization,
        min_utilization=args.min_utilization,
        max_pinned_ratio=args.max_pinned_ratio,
        scale_up_load=args.scale_up_load,
        scale_down_load=args.scale_down_load,
        max_latency_deviation=args.max_latency_deviation,
        min_replicas=args.min_replicas,
        replica_cooldown=args.replica_cooldown if args.replica_cooldown is not None else 2 * args.report_period,
        hot_thread_utilization=args.hot_thread_utilization,
        hot_thread_replicas=args.hot_thread_replicas,
        node_join_timeout=args.node_join_timeout,
    )
    config = ManagementConfig(
        host=args.host,
        schedulers=tuple(args.schedulers),
        policy=policy,
        autoscale=not args.watch_only,
        security=_role_security(args),
    )
    return run_management(config, _provisioner(args), args.ready_file)


def _run_cache(args: argparse.Namespace) -> int:
    from cloudburst.cache.server import run_cache

    return run_cache(args.host, args.kvs, args.ready_file, _role_security(args), args.management)


def main(argv: list[str] | None = None) -> int:
    """Runs the ``cloudburst`` command.

    Returns:
        The process exit code.
    """
    try:
        args = parse_arguments(argv)
    except ConfigError as error:
        print(f"cloudburst: error: {error}", file=sys.stderr)
        return 2
    quiet = args.command in ("demo", "status", "down", "keys", "trace", "drain", "cancel")
    level = args.log_level or ("WARNING" if quiet else "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _exit_with_parent(getattr(args, "parent_pid", None))
    try:
        if args.command == "kvs":
            return _run_kvs(args)
        if args.command == "scheduler":
            return _run_scheduler(args)
        if args.command == "executor":
            return _run_executor(args)
        if args.command == "node":
            return _run_node(args)
        if args.command == "cache":
            return _run_cache(args)
        if args.command == "management":
            return _run_management(args)
        if args.command == "keys":
            return _run_keys(args)
        if args.command == "trace":
            return run_trace(args)
        if args.command == "drain":
            return run_drain(args)
        from cloudburst.cli import cluster

        if args.command == "up":
            return cluster.up(args)
        if args.command == "down":
            return cluster.down(args.data_dir, args.host)
        if args.command == "status":
            return cluster.status(args.data_dir, args.scheduler, as_json=args.json, timeout=args.timeout)
        if args.command == "cancel":
            return cluster.cancel(args.data_dir, args.scheduler, args.request_id)
        from cloudburst.cli.demo import run_demo

        return run_demo(args.operations)
    except CloudburstError as error:
        print(f"cloudburst: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C during a command that installs no handler of its own: the user knows why it stopped.
        print("cloudburst: interrupted", file=sys.stderr)
        return 130
