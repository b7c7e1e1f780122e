"""A fake, lively cluster for the dashboard: realistic data that moves with every poll.

:class:`DemoSource` implements :class:`~cloudburst.management.dashboard.DashboardSource` without a cluster. Each
call of ``cluster_view`` is one step of a small simulated cluster: every DAG's series gains a point, and every
few steps a node gains an executor (up to a limit), so a test can watch the page follow.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Mapping

TRACEBACK = """Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/cloudburst/executor/run.py", line 214, in call_function
    result = function(*arguments)
             ^^^^^^^^^^^^^^^^^^^^
  File "<user function normalize>", line 4, in normalize
    return [value / total for value in values]
            ~~~~~~^~~~~~~
ZeroDivisionError: division by zero"""

DAGS = {
    "pipeline": ["parse", "enrich", "score"],
    "recommend": ["lookup_user", "classify"],
}


class DemoSource:
    """A simulated cluster, one step per ``cluster_view`` call.

    Args:
        history: Series points each DAG starts with (one a second, ending now).
        executors_every: Steps between executor additions (0: never add).
        max_executors: Executors per node beyond which none are added.
        seed: Seeds the noise, so screenshots are reproducible.
    """

    def __init__(self, history: int = 60, executors_every: int = 2, max_executors: int = 4, seed: int = 7) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._start = time.time() - history
        self._steps = 0
        self._executors_every = executors_every
        self._max_executors = max_executors
        self._series: dict[str, list[dict[str, float]]] = {name: [] for name in DAGS}
        for index in range(history):
            self._add_points(self._start + index)
        self._nodes: list[dict[str, object]] = [
            self._node("127.0.0.1", "active", [("cpu", ["parse", "enrich"]), ("cpu", ["score", "lookup_user"])]),
            self._node("127.0.0.2", "active", [("cpu", ["parse"]), ("gpu", ["classify"])]),
            self._node("127.0.0.3", "draining", [("cpu", [])]),
        ]
        self._traces = self._make_traces()
        self._born = time.time()
        self.fail_next = 0
        """Calls of ``cluster_view`` still to fail (a test sets it to watch the page ride out failures)."""

    # ---- DashboardSource ----

    def cluster_view(self) -> Mapping[str, object]:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise RuntimeError("the view is being rebuilt")
            self._step()
            now = time.time()
            born = self._born
            return {
                "generated_at": now,
                "autoscale": True,
                "schedulers": ["127.0.0.1", "127.0.0.2"],
                "nodes": [self._node_view(node) for node in self._nodes],
                "functions": self._functions(),
                "dags": [self._dag_view(name) for name in DAGS],
                "errors": [
                    {
                        "time": born - 42.0,
                        "request_id": "9f1c2e7a-5d40-4b8e-a1f3-6c2b8e0d4a11",
                        "function": "normalize",
                        "dag": None,
                        "node": "127.0.0.2:0",
                        "error": "RemoteExecutionError",
                        "message": "ZeroDivisionError: division by zero",
                        "traceback": TRACEBACK,
                    },
                    {
                        "time": born - 7.5,
                        "request_id": "c3a81f0e-2b7d-4f6a-9e15-0d4b7c9a2e58",
                        "function": "score",
                        "dag": "pipeline",
                        "node": "127.0.0.1:1",
                        "error": "RemoteExecutionError",
                        "message": "KeyError: 'weights'",
                        "traceback": TRACEBACK.replace("ZeroDivisionError: division by zero", "KeyError: 'weights'"),
                    },
                ],
                "decisions": [
                    {"time": born - 95.0, "kind": "AddNodesInstruction", "reason": "average utilization 0.93 > 0.70"},
                    {
                        "time": born - 61.0,
                        "kind": "ReplicateFunctionInstruction",
                        "reason": "parse: 41.0 calls/s over 2 replicas, p99 12.4 ms > 10.0 ms",
                    },
                    {
                        "time": born - 12.0,
                        "kind": "DrainNodeInstruction",
                        "reason": "127.0.0.3: utilization 0.04 < 0.20 for 60 s",
                    },
                ],
                "traces": [
                    {key: trace[key] for key in ("request_id", "time", "name", "hops", "duration_ms", "ok")}
                    for trace in self._traces.values()
                ],
            }

    def trace_view(self, request_id: str) -> Mapping[str, object] | None:
        with self._lock:
            trace = self._traces.get(request_id)
            if trace is None:
                return None
            return {"request_id": request_id, "name": trace["name"], "ok": trace["ok"], "hops": trace["detail"]}

    def metrics_text(self) -> bytes:
        with self._lock:
            return f"# TYPE cloudburst_demo_steps counter\ncloudburst_demo_steps_total {self._steps}\n".encode()

    # ---- Introspection for tests ----

    def trace_ids(self) -> list[str]:
        """The request ids with a trace, oldest first."""
        with self._lock:
            return list(self._traces)

    def hops_of(self, request_id: str) -> int:
        """How many hops the trace of ``request_id`` has."""
        with self._lock:
            hops = self._traces[request_id]["detail"]
            assert isinstance(hops, list)
            return len(hops)

    # ---- The simulation ----

    def _step(self) -> None:
        self._steps += 1
        last = max(points[-1]["t"] for points in self._series.values()) if self._series["pipeline"] else time.time()
        self._add_points(max(last + 1.0, time.time()))
        if self._executors_every and self._steps % self._executors_every == 0:
            for node in self._nodes:
                executors = node["executors"]
                assert isinstance(executors, list)
                if node["state"] == "active" and len(executors) < self._max_executors:
                    executors.append(self._executor(len(executors), "cpu", []))
                    break
        for node in self._nodes:
            executors = node["executors"]
            assert isinstance(executors, list)
            for executor in executors:
                base = 0.05 if node["state"] == "draining" else 0.25 + 0.15 * len(executor["functions"])
                executor["utilization"] = round(min(0.99, max(0.0, base + self._random.uniform(-0.08, 0.08))), 3)
            cache = node["cache"]
            if isinstance(cache, dict):
                cache["hits"] += self._random.randint(20, 60)
                cache["misses"] += self._random.randint(0, 6)
                cache["keys"] += self._random.randint(0, 2)
                cache["bytes"] += self._random.randint(0, 4096)

    def _add_points(self, t: float) -> None:
        for index, name in enumerate(DAGS):
            phase = (t - self._start) / 9.0 + index
            rate = max(0.0, 38.0 - 14.0 * index + 9.0 * math.sin(phase) + self._random.uniform(-2.0, 2.0))
            p50 = 3.8 + 2.2 * index + 0.4 * math.sin(phase / 2) + self._random.uniform(-0.2, 0.2)
            spike = 9.0 if self._random.random() < 0.04 else 0.0
            p99 = p50 * 2.1 + 1.5 * math.cos(phase) + spike + self._random.uniform(0.0, 1.2)
            points = self._series[name]
            points.append({"t": t, "calls_per_s": round(rate, 2), "p50_ms": round(p50, 3), "p99_ms": round(p99, 3)})
            del points[:-120]

    def _node(self, address: str, state: str, executors: list[tuple[str, list[str]]]) -> dict[str, object]:
        cache = (
            None
            if state == "draining"
            else {"hits": 1800 + self._random.randint(0, 400), "misses": 210, "keys": 57, "bytes": 3_400_000}
        )
        return {
            "address": address,
            "state": state,
            "cache": cache,
            "executors": [self._executor(tid, kind, functions) for tid, (kind, functions) in enumerate(executors)],
        }

    @staticmethod
    def _executor(tid: int, kind: str, functions: list[str]) -> dict[str, object]:
        return {"tid": tid, "kind": kind, "utilization": 0.0, "running": True, "functions": functions}

    def _node_view(self, node: dict[str, object]) -> dict[str, object]:
        cache = node["cache"]
        executors = node["executors"]
        assert isinstance(executors, list)
        view = dict(node)
        if isinstance(cache, dict):
            lookups = cache["hits"] + cache["misses"]
            view["cache"] = {**cache, "hit_ratio": round(cache["hits"] / lookups, 4) if lookups else None}
        view["executors"] = [
            {**executor, "running": node["state"] != "draining"} for executor in executors if isinstance(executor, dict)
        ]
        return view

    def _functions(self) -> list[dict[str, object]]:
        replicas: dict[str, int] = {}
        for node in self._nodes:
            executors = node["executors"]
            assert isinstance(executors, list)
            for executor in executors:
                for function in executor["functions"]:
                    replicas[function] = replicas.get(function, 0) + 1
        rows: list[dict[str, object]] = []
        for index, name in enumerate(sorted([*replicas, "normalize"])):
            idle = name == "normalize"
            rows.append(
                {
                    "name": name,
                    "replicas": replicas.get(name, 0),
                    "calls_per_s": 0.0 if idle else round(12.0 + 7.5 * index + self._random.uniform(-1, 1), 2),
                    "p50_ms": None if idle else round(0.6 + 0.35 * index, 3),
                    "p99_ms": None if idle else round(1.9 + 0.8 * index + self._random.uniform(0, 0.5), 3),
                }
            )
        return rows

    def _dag_view(self, name: str) -> dict[str, object]:
        series = self._series[name]
        last = series[-1]
        return {
            "name": name,
            "functions": DAGS[name],
            "calls_per_s": last["calls_per_s"],
            "p50_ms": last["p50_ms"],
            "p99_ms": last["p99_ms"],
            "series": [dict(point) for point in series],
        }

    def _make_traces(self) -> dict[str, dict[str, object]]:
        traces: dict[str, dict[str, object]] = {}
        now = time.time()
        for index in range(10):
            request_id = f"{0x5EED0000 + index * 7919:08x}-{index:04x}-4c1d-9a7e-{index * 104729:012x}"
            name = "pipeline" if index % 3 else "recommend"
            ok = index != 6
            hops = self._hops(name, now - 30 + index * 2.7, ok)
            duration = (hops[-1]["start"] + hops[-1]["duration_ms"] / 1000 - hops[0]["start"]) * 1000
            traces[request_id] = {
                "request_id": request_id,
                "time": now - 30 + index * 2.7,
                "name": name,
                "hops": len(hops),
                "duration_ms": round(duration, 3),
                "ok": ok,
                "detail": hops,
            }
        return traces

    def _hops(self, dag: str, start: float, ok: bool) -> list[dict[str, object]]:
        functions = DAGS[dag]
        placement = [f"127.0.0.{1 + i % 2}:{i % 2}" for i in range(len(functions))]
        hops: list[dict[str, object]] = [
            {
                "role": "scheduler",
                "node": "127.0.0.1",
                "function": None,
                "dag": dag,
                "start": start,
                "duration_ms": 0.21,
                "queue_ms": None,
                "ok": True,
                "error": None,
                "detail": ", ".join(f"{f} -> {node}" for f, node in zip(functions, placement, strict=True)),
                "reads": [],
            }
        ]
        at = start + 0.0003
        for index, (function, node) in enumerate(zip(functions, placement, strict=True)):
            duration = round(0.7 + 0.9 * index + self._random.uniform(0, 0.6), 3)
            failed = not ok and index == len(functions) - 1
            reads = [
                {
                    "key": f"user:{1000 + index}",
                    "source": "cache" if index % 2 == 0 else "kvs",
                    "hit": index % 2 == 0,
                    "version": f"lww {int(at * 1000)}:{42 + index}",
                }
            ]
            if index == 0:
                reads.append({"key": "model/weights", "source": "cache", "hit": True, "version": "lww 1764000000123:7"})
            hops.append(
                {
                    "role": "executor",
                    "node": node,
                    "function": function,
                    "dag": dag,
                    "start": at,
                    "duration_ms": duration,
                    "queue_ms": round(0.03 + 0.02 * index, 3),
                    "ok": not failed,
                    "error": "KeyError: 'weights'" if failed else None,
                    "detail": "",
                    "reads": reads,
                }
            )
            at += duration / 1000 + 0.00015
        return hops
