"""Ray as a contender: default tasks on a local Ray instance with two CPUs."""

from __future__ import annotations

import contextlib
import sys
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
    ray_session,
    square,
    verify,
)

NAME = "ray"


def timed_read(boxed: list[object]) -> int:
    """Nanoseconds one ``ray.get`` of the object ref in ``boxed`` takes.

    The ref comes inside a list, which Ray passes as is, so the read happens here rather than before the call.
    """
    import ray  # the module is importable without Ray

    started = time.perf_counter_ns()
    value = ray.get(boxed[0])
    elapsed = time.perf_counter_ns() - started
    if value != SMALL_VALUE:
        raise LookupError(f"the object ref read as {value!r}")
    return elapsed


@contextlib.contextmanager
def started(cpus: int) -> Iterator[Contender]:
    """Starts (or joins) the local Ray instance; raises ``ImportError`` without Ray."""
    with ray_session.session(cpus, sys.modules[__name__]) as ray:
        call, plus_one, squared, read = (ray.remote(task) for task in (identity, increment, square, timed_read))
        small = [ray.put(SMALL_VALUE)]

        def burst(count: int) -> None:
            ray.get([call.remote(index) for index in range(count)])

        yield verify(
            Contender(
                NAME,
                f"ray {ray.__version__}: ray.init(num_cpus={cpus}, include_dashboard=False, log_to_driver=False), "
                "default tasks",
                {
                    NULL: Op(lambda index: ray.get(call.remote(index)), "ray.get(f.remote(i))"),
                    CHAIN: Op(
                        lambda _index: ray.get(squared.remote(plus_one.remote(CHAIN_ARGUMENT))),
                        "ray.get(square.remote(increment.remote(x))), the ref passed on",
                    ),
                    LARGE: Op(lambda _index: ray.get(call.remote(LARGE_ARGUMENT)), "ray.get(f.remote(data))"),
                    THROUGHPUT: Op(burst, "ray.get([f.remote(i) for i in range(n)])"),
                    READ: Op(
                        lambda _index: ray.get(read.remote(small)),
                        "ray.get(ref) inside the task of an object ref made with ray.put and read before",
                    ),
                },
            )
        )
