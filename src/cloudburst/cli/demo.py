"""``cloudburst demo``: start a throwaway local cluster, run a representative workload, print what happened."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cloudburst.client.connection import Connection
from cloudburst.cluster.local import LocalSession

if TYPE_CHECKING:
    from cloudburst.executor.user_library import UserLibrary


class _Checks:
    def __init__(self) -> None:
        self.failures = 0

    def __call__(self, label: str, ok: bool) -> None:
        self.failures += not ok
        print(f"  [{'ok' if ok else 'FAILED'}] {label}", flush=True)


def _latency(operation: Callable[[], object], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[max(0, int(len(samples) * 0.99) - 1)] * 1e3


def run_demo(operations: int) -> int:
    """Runs the demo; returns the exit code (non-zero if any check failed)."""
    print(
        "Starting a local cluster (KVS, scheduler, node cache, 3 executors) on a private loopback address ...",
        flush=True,
    )
    started = time.perf_counter()
    with LocalSession(executors=3) as cb:
        print(f"  ready in {time.perf_counter() - started:.1f} s", flush=True)
        return _workload(cb, operations)


def _workload(cb: Connection, operations: int) -> int:
    check = _Checks()

    print("Functions:", flush=True)
    square = cb.register(lambda _, x: x * x, "square")
    cb.register(lambda _, x: x + 1, "increment")
    check("square(7) = 49", square(7).result() == 49)

    def count_visits(lib: UserLibrary, page: str) -> int:
        visits = (lib.get(f"visits/{page}") or 0) + 1
        lib.put(f"visits/{page}", visits)
        return int(visits)

    visit = cb.register(count_visits, "count_visits")
    for _ in range(5):
        visit("home").result()
    check("a stateful counter via the user library's get/put reached 5", cb.get_object("visits/home") == 5)

    print("DAGs:", flush=True)
    cb.register(lambda _, a, b: (a, b, a * 10 + b), "combine")
    cb.register_dag("fan_in", ["increment", "square", "combine"], [("increment", "combine"), ("square", "combine")])
    result = cb.call_dag(cb.build_dag_call("fan_in", {"increment": 1, "square": 3})).result()
    check(f"fan-in DAG passes upstream results in edge order: {result}", result == (2, 9, 29))

    class Greeter:
        def __init__(self, lib: UserLibrary, greeting: str) -> None:
            self.greeting = greeting
            self.calls = 0

        def run(self, lib: UserLibrary, name: str) -> str:
            self.calls += 1
            return f"{self.greeting}, {name} (call {self.calls} on this instance)"

    cb.register((Greeter, ("Hello",)), "greeter")
    cb.register_dag("greet", ["greeter"], [])
    first = cb.call_dag(cb.build_dag_call("greet", {"greeter": "Ada"})).result()
    second = cb.call_dag(cb.build_dag_call("greet", {"greeter": "Grace"})).result()
    check(f"a registered class keeps its state between calls: {second!r}", first.endswith("1 on this instance)"))

    print(f"Latency ({operations} sequential calls each, milliseconds):", flush=True)
    cb.register(lambda _: None, "noop")
    cb.register_dag("square_of_increment", ["increment", "square"], [("increment", "square")])
    rows = {
        "one-shot call, result pushed": _latency(lambda: cb.call("noop").result(), operations),
        "square(increment(x)) DAG": _latency(
            lambda: cb.call_dag(cb.build_dag_call("square_of_increment", {"increment": 1})).result(), operations
        ),
        "put_object": _latency(lambda: cb.put_object("bench", b"x" * 64), operations),
        "get_object": _latency(lambda: cb.get_object("bench"), operations),
    }
    print(f"  {'workload':<32} {'median':>8} {'p99':>8}")
    for label, (median, p99) in rows.items():
        print(f"  {label:<32} {median:>8.2f} {p99:>8.2f}")

    def time_reads(lib: UserLibrary, key: str, count: int) -> float:
        lib.get(key)
        start = time.perf_counter()
        for _ in range(count):
            lib.get(key)
        return (time.perf_counter() - start) / count * 1e6

    cb.put_object("demo/hot", {"small": "value"})
    micros = cb.register(time_reads, "time_reads")("demo/hot", 10_000).result()
    print(f"  cache-hit read inside a function: {micros:.1f} us (the executor's local copy, kept coherent)")
    print("Demo finished." if not check.failures else f"Demo finished with {check.failures} failed check(s).")
    return 1 if check.failures else 0
