"""This project's contender: a local cluster with an in-memory KVS, driven through the public client API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import cloudburst
from benchmarks.contenders import (
    CHAIN,
    CHAIN_ARGUMENT,
    DAG,
    LARGE,
    LARGE_ARGUMENT,
    NULL,
    READ,
    SMALL_KEY,
    SMALL_VALUE,
    THROUGHPUT,
    Contender,
    Op,
    verify,
)
from cloudburst.executor.user_library import UserLibrary

NAME = "cloudburst"
#: Seconds every result may take; generous, so a slow burst is measured rather than failed.
RESULT_TIMEOUT = 120.0


def identity(_lib: object, value: object) -> object:
    return value


def increment(_lib: object, value: int) -> int:
    return value + 1


def square(_lib: object, value: int) -> int:
    return value * value


def timed_read(lib: UserLibrary, key: str) -> int:
    """Nanoseconds one ``lib.get`` of ``key`` takes."""
    started = time.perf_counter_ns()
    value = lib.get(key)
    elapsed = time.perf_counter_ns() - started
    if value != SMALL_VALUE:
        raise LookupError(f"{key!r} read as {value!r}")
    return elapsed


@contextlib.contextmanager
def started(executors: int) -> Iterator[Contender]:
    """Starts ``cloudburst.local(executors=executors)`` and registers the functions."""
    with cloudburst.local(executors=executors) as cb:
        call = cb.register(identity, "suite_identity")
        plus_one = cb.register(increment, "suite_increment")
        squared = cb.register(square, "suite_square")
        read = cb.register(timed_read, "suite_timed_read")
        cb.register_dag("suite_chain", ["suite_increment", "suite_square"], [("suite_increment", "suite_square")])
        chain_call = cb.build_dag_call("suite_chain", {"suite_increment": CHAIN_ARGUMENT}, direct_response=True)
        cb.put_object(SMALL_KEY, SMALL_VALUE)

        def burst(count: int) -> None:
            futures = [call(index) for index in range(count)]
            for future in futures:
                future.result(timeout=RESULT_TIMEOUT)

        yield verify(
            Contender(
                NAME,
                f"cloudburst.local(executors={executors}): a local cluster, its KVS in memory",
                {
                    NULL: Op(lambda index: call(index).result(timeout=RESULT_TIMEOUT), "f(i).result()"),
                    CHAIN: Op(
                        lambda _index: squared(plus_one(CHAIN_ARGUMENT)).result(timeout=RESULT_TIMEOUT),
                        "square(increment(x)).result(), the first call's future passed on",
                    ),
                    DAG: Op(
                        lambda _index: cb.call_dag(chain_call).result(timeout=RESULT_TIMEOUT),
                        "call_dag(square(increment(x))).result(), a registered DAG, the result pushed only",
                    ),
                    LARGE: Op(lambda _index: call(LARGE_ARGUMENT).result(timeout=RESULT_TIMEOUT), "f(data).result()"),
                    THROUGHPUT: Op(burst, "n x f(i), then .result() of each"),
                    READ: Op(
                        lambda _index: read(SMALL_KEY).result(timeout=RESULT_TIMEOUT),
                        "lib.get(key) of a key the executor read before (put once with put_object)",
                    ),
                },
            )
        )
