"""Benchmark entry point: ``python -m benchmarks <workload>``; each workload is a subcommand."""

from __future__ import annotations

import argparse
import signal
import sys

from benchmarks import autoscale, consistency, faults, kvs_latency, locality, runtime_latency, soak, suite, visibility


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs the chosen workload."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    workloads = parser.add_subparsers(dest="workload", required=True)
    kvs = workloads.add_parser("kvs", help="KVS GET/PUT latency against the bare pyzmq floor")
    kvs_latency.add_arguments(kvs)
    kvs.set_defaults(run=kvs_latency.main)
    runtime = workloads.add_parser("runtime", help="function call, DAG and throughput against bare pyzmq floors")
    runtime_latency.add_arguments(runtime)
    runtime.set_defaults(run=runtime_latency.main)
    cross_node = workloads.add_parser("visibility", help="how soon a write on one node is read on another")
    visibility.add_arguments(cross_node)
    cross_node.set_defaults(run=visibility.main)
    near_data = workloads.add_parser("locality", help="a function over 10 x 8 MB arrays, cached vs uncached")
    locality.add_arguments(near_data)
    near_data.set_defaults(run=locality.main)
    modes = workloads.add_parser("consistency", help="the same DAGs in NORMAL, SINGLE and MULTI")
    consistency.add_arguments(modes)
    modes.set_defaults(run=consistency.main)
    peers = workloads.add_parser("suite", help="this system, Ray and Dask on the same workloads against pyzmq floors")
    suite.add_arguments(peers)
    peers.set_defaults(run=suite.main)
    scaling = workloads.add_parser("autoscale", help="a rising load on an autoscaling cluster: latency and nodes")
    autoscale.add_arguments(scaling)
    scaling.set_defaults(run=autoscale.main)
    steady = workloads.add_parser("soak", help="a steady mixed load for a long time: RSS growth per process, errors")
    soak.add_arguments(steady)
    steady.set_defaults(run=soak.main)
    failures = workloads.add_parser("faults", help="throughput and p99 with an executor killed every second vs none")
    faults.add_arguments(failures)
    failures.set_defaults(run=faults.main)
    args = parser.parse_args(argv)
    # A terminated benchmark unwinds like an interrupted one, so its server processes are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
