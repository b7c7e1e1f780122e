"""Dask distributed as a contender: futures on a local cluster of two single-threaded worker processes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from benchmarks.contenders import (
    CHAIN,
    CHAIN_ARGUMENT,
    LARGE,
    LARGE_ARGUMENT,
    NULL,
    READ,
    SMALL_VALUE,
    THROUGHPUT,
    Contender,
    Op,
    identity,
    increment,
    square,
    verify,
)

NAME = "dask"


def timed_read(_value: object, key: str) -> int:
    """Nanoseconds one read of the scattered value ``key`` from this worker's memory takes.

    Dask hands a scattered value to a task by reading it from the worker's data store before the call; passing its
    future (``_value``) makes Dask run the task on a worker holding it, and this repeats that read inside the task.
    """
    from distributed import get_worker  # the module is importable without Dask

    data = get_worker().data
    started = time.perf_counter_ns()
    value = data[key]
    elapsed = time.perf_counter_ns() - started
    if value != SMALL_VALUE:
        raise LookupError(f"{key!r} read as {value!r}")
    return elapsed


@contextlib.contextmanager
def started(workers: int) -> Iterator[Contender]:
    """Starts a local Dask cluster and a client (raises ``ImportError`` without Dask), closes both afterwards."""
    import distributed  # Dask is optional

    with (
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        small = client.scatter(SMALL_VALUE)

        def call(function: object, *args: object) -> distributed.Future:
            return client.submit(function, *args, pure=False)

        def burst(count: int) -> None:
            client.gather([call(identity, index) for index in range(count)])

        yield verify(
            Contender(
                NAME,
                f"dask distributed {distributed.__version__}: LocalCluster(n_workers={workers}, "
                "threads_per_worker=1, processes=True) and a Client (the scheduler runs in the client's process)",
                {
                    NULL: Op(lambda index: call(identity, index).result(), "client.submit(f, i).result()"),
                    CHAIN: Op(
                        lambda _index: call(square, call(increment, CHAIN_ARGUMENT)).result(),
                        "client.submit(square, client.submit(increment, x)).result(), the future passed on",
                    ),
                    LARGE: Op(
                        lambda _index: call(identity, LARGE_ARGUMENT).result(), "client.submit(f, data).result()"
                    ),
                    THROUGHPUT: Op(burst, "client.gather([client.submit(f, i) for i in range(n)])"),
                    READ: Op(
                        lambda _index: call(timed_read, small, small.key).result(),
                        "the worker's read of a value put with client.scatter, as Dask does for a task's argument",
                    ),
                },
            )
        )
