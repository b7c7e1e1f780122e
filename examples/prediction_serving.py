"""Prediction serving: a three-stage DAG (preprocess -> model -> postprocess) answering a batch of requests.

The program trains a small softmax classifier (pure Python, on synthetic data) and stores its weights and feature
scaler in the KVS. The model stage is a registered class, ``(SoftmaxModel, (namespace,))``: each executor that
pins it builds one instance, whose constructor reads the weights once, and every later request is a method call on
that instance, with no loading in the request path. Each instance adds its id to a set in the KVS when it loads
(sets merge by union, so concurrent loads are all counted) and numbers the requests it serves; the program checks
that there was one load per replica and that each instance served its requests 1, 2, 3, ... without reloading.

The preprocessing stage reads the scaler with ``lib.get`` on every request: after the first read it comes from the
node's cache, next to the executor.

    python examples/prediction_serving.py                      # a throwaway local cluster
    python examples/prediction_serving.py --scheduler HOST     # a running cluster

Prints latency percentiles of sequential requests and the throughput of a burst; exits with 1 if any served
prediction differs from the same model run locally, or the model was loaded more than once per replica.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cloudburst

if TYPE_CHECKING:
    from cloudburst.executor.user_library import UserLibrary

DAG = "example-predict"
CLASSES = ("setosa-ish", "versicolor-ish", "virginica-ish")
FEATURES = 4
Vector = list[float]


# -- the model, shared by the program (training, checking) and the cluster (serving) -------------------------------


def softmax(logits: Sequence[float]) -> list[float]:
    """Probabilities from logits, stable for large ones."""
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


def scores(weights: Sequence[Sequence[float]], bias: Sequence[float], x: Sequence[float]) -> list[float]:
    """Class probabilities of a scaled feature vector."""
    logits = [math.fsum(w * xi for w, xi in zip(row, x, strict=True)) + b for row, b in zip(weights, bias, strict=True)]
    return softmax(logits)


def scale(scaler: dict[str, Vector], raw: Sequence[float]) -> Vector:
    """Standardizes raw features with the training set's mean and deviation."""
    return [(v - m) / s for v, m, s in zip(raw, scaler["mean"], scaler["std"], strict=True)]


def make_data(rng: random.Random, count: int) -> list[tuple[Vector, int]]:
    """Three overlapping Gaussian blobs in four dimensions, as ``(features, label)`` pairs."""
    centres = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]]
    data = []
    for _ in range(count):
        label = rng.randrange(len(centres))
        data.append(([c + rng.gauss(0, 0.35) for c in centres[label]], label))
    return data


def train(data: Sequence[tuple[Vector, int]], epochs: int = 150, rate: float = 0.5) -> dict[str, Any]:
    """Full-batch gradient descent on the cross-entropy; returns the weights, bias and scaler."""
    columns = list(zip(*(x for x, _ in data), strict=True))
    mean = [statistics.fmean(column) for column in columns]
    std = [statistics.pstdev(column) or 1.0 for column in columns]
    scaler = {"mean": mean, "std": std}
    xs = [scale(scaler, x) for x, _ in data]
    weights = [[0.0] * FEATURES for _ in CLASSES]
    bias = [0.0] * len(CLASSES)
    for _ in range(epochs):
        grad_w = [[0.0] * FEATURES for _ in CLASSES]
        grad_b = [0.0] * len(CLASSES)
        for x, (_, label) in zip(xs, data, strict=True):
            for k, p in enumerate(scores(weights, bias, x)):
                error = p - (k == label)
                grad_b[k] += error
                for j, xj in enumerate(x):
                    grad_w[k][j] += error * xj
        for k in range(len(CLASSES)):
            bias[k] -= rate * grad_b[k] / len(data)
            for j in range(FEATURES):
                weights[k][j] -= rate * grad_w[k][j] / len(data)
    return {"weights": weights, "bias": bias, "scaler": scaler}


# -- the three stages ---------------------------------------------------------------------------------------------


def preprocess(lib: UserLibrary, namespace: str, request: dict[str, Any]) -> dict[str, Any]:
    """Validates a request and scales its features (the scaler is a cached KVS read)."""
    raw = request["features"]
    if len(raw) != FEATURES or not all(isinstance(v, int | float) for v in raw):
        raise ValueError(f"request {request.get('id')!r}: expected {FEATURES} numbers, got {raw!r}")
    return {"id": request["id"], "x": scale(lib.get(f"{namespace}/scaler"), raw)}


class SoftmaxModel:
    """The model stage: loaded once per executor, then called for every request routed there."""

    def __init__(self, lib: UserLibrary, namespace: str) -> None:
        stored = lib.get(f"{namespace}/weights")
        if stored is None:
            raise LookupError(f"no model weights under {namespace}/weights")
        self.weights, self.bias = stored["weights"], stored["bias"]
        self.instance = uuid.uuid4().hex[:8]
        self.served = 0
        lib.put(f"{namespace}/loads", {self.instance})  # a set: concurrent loads on other executors union

    def run(self, lib: UserLibrary, item: dict[str, Any]) -> dict[str, Any]:
        self.served += 1
        probabilities = scores(self.weights, self.bias, item["x"])
        return {"id": item["id"], "p": probabilities, "instance": self.instance, "nth": self.served}


def postprocess(lib: UserLibrary, scored: dict[str, Any]) -> dict[str, Any]:
    """Turns probabilities into the response: the label and its confidence."""
    probabilities = scored["p"]
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {**scored, "label": CLASSES[best], "confidence": probabilities[best]}


# -- the program --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_cluster(scheduler: str | None, host: str) -> Iterator[cloudburst.Connection]:
    """A connection to the cluster at ``scheduler``, or to a throwaway local cluster when it is ``None``."""
    if scheduler is not None:
        with cloudburst.connect(scheduler, host=host) as connection:
            yield connection
        return
    print("Starting a throwaway local cluster ...", flush=True)
    with cloudburst.local() as connection:
        yield connection


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    """Trains, deploys, serves and checks; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", help="a running cluster's scheduler host (default: start a local cluster)")
    parser.add_argument("--host", default="127.0.0.1", help="this machine's address as executors reach it")
    parser.add_argument("--requests", type=int, default=300, help="requests in the batch")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    started = time.perf_counter()
    model = train(make_data(rng, 240))
    batch: list[dict[str, Any]] = [
        {"id": f"r{n}", "features": x, "truth": label} for n, (x, label) in enumerate(make_data(rng, args.requests))
    ]
    expected = {r["id"]: scores(model["weights"], model["bias"], scale(model["scaler"], r["features"])) for r in batch}
    print(f"Trained a {len(CLASSES)}-class softmax model in {time.perf_counter() - started:.2f} s")

    with open_cluster(args.scheduler, args.host) as cb:
        namespace = f"examples/predict/{uuid.uuid4().hex[:12]}"
        cb.put_object(f"{namespace}/weights", {"weights": model["weights"], "bias": model["bias"]})
        cb.put_object(f"{namespace}/scaler", model["scaler"])
        cb.register(preprocess, "predict_preprocess")
        cb.register((SoftmaxModel, (namespace,)), "predict_model")
        cb.register(postprocess, "predict_postprocess")
        with contextlib.suppress(cloudburst.DagNotFound):
            cb.delete_dag(DAG)  # left over by an interrupted run
        cb.register_dag(
            DAG,
            ["predict_preprocess", "predict_model", "predict_postprocess"],
            [("predict_preprocess", "predict_model"), ("predict_model", "predict_postprocess")],
        )
        try:
            replicas = sum("predict_model" in e.functions for e in cb.status().executors)

            def request(item: dict[str, Any]) -> cloudburst.Future:
                public = {"id": item["id"], "features": item["features"]}
                return cb.call_dag(cb.build_dag_call(DAG, {"predict_preprocess": [namespace, public]}))

            answers: list[dict[str, Any]] = []
            latencies = []
            for item in batch:  # one at a time: the latency a lone client sees
                sent = time.perf_counter()
                answers.append(request(item).result(timeout=30))
                latencies.append(time.perf_counter() - sent)
            sent = time.perf_counter()
            futures = [request(item) for item in batch]  # all outstanding at once: throughput
            answers += [future.result(timeout=60) for future in futures]
            burst = time.perf_counter() - sent
            loads = set(cb.get_object(f"{namespace}/loads") or [])
        finally:
            cb.delete_dag(DAG)

    truth = {item["id"]: CLASSES[item["truth"]] for item in batch}
    wrong = [
        a["id"]
        for a in answers
        if a["label"] != CLASSES[max(range(len(CLASSES)), key=expected[a["id"]].__getitem__)]
        or not all(math.isclose(p, q, abs_tol=1e-12) for p, q in zip(a["p"], expected[a["id"]], strict=True))
    ]
    accuracy = sum(a["label"] == truth[a["id"]] for a in answers) / len(answers)
    served: dict[str, list[int]] = defaultdict(list)
    for answer in answers:
        served[answer["instance"]].append(answer["nth"])
    reloaded = [i for i, nths in served.items() if sorted(nths) != list(range(1, len(nths) + 1))]

    print(f"{len(answers)} predictions ({len(batch)} sequential, then {len(batch)} at once)")
    print(
        f"  latency p50 {percentile(latencies, 0.5) * 1e3:.2f} ms, p99 {percentile(latencies, 0.99) * 1e3:.2f} ms; "
        f"burst {len(batch) / burst:,.0f} requests/s"
    )
    print(f"  accuracy against the true classes {accuracy:.1%}; {len(wrong)} differ from the local model")
    for instance, nths in sorted(served.items()):
        print(f"  model instance {instance}: loaded once, served {len(nths)} requests")
    print(f"  model loads recorded in the KVS: {len(loads)}, for {replicas} pinned replica(s)")
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} predictions differ from the local model, e.g. {wrong[:3]}")
    if len(loads) != replicas or not set(served) <= loads or reloaded:
        problems.append(f"{len(loads)} loads for {replicas} replicas; instances that reloaded: {reloaded}")
    if accuracy < 0.8:
        problems.append(f"accuracy {accuracy:.1%} is below 80 %")
    if problems:
        print(f"prediction_serving: FAILED: {'; '.join(problems)}")
        return 1
    print(f"prediction_serving: OK: {len(answers)} predictions match the local model, {len(loads)} model load(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
