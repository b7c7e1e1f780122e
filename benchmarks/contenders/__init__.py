"""The systems :mod:`benchmarks.suite` compares, each behind one interface so the suite can alternate them.

A system's ``started()`` context manager starts it (processes included), yields a :class:`Contender` and stops it
again. The contender maps each workload it runs to an :class:`Op`; how an op is timed depends on the workload:

* :data:`NULL`, :data:`CHAIN`, :data:`DAG`, :data:`LARGE`: ``run(i)`` makes one call and waits for its result (timed
  by the suite);
* :data:`THROUGHPUT`: ``run(n)`` puts ``n`` calls in flight, then waits for all of them;
* :data:`READ`: ``run(i)`` makes one call whose function reads a value it read before and returns how long that
  read took, in nanoseconds, measured inside the function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NULL = "null call"
CHAIN = "square(increment(x))"
#: The same chain declared ahead of time: a registered DAG here, a compiled graph in Ray (the static-shape peers).
DAG = "registered DAG incr -> square"
LARGE = "1 MB argument"
THROUGHPUT = "throughput"
READ = "cached read in a function"
WORKLOADS = (NULL, CHAIN, DAG, LARGE, THROUGHPUT, READ)

#: Returned unchanged by the ``LARGE`` calls, so it crosses the wire both ways.
LARGE_ARGUMENT = b"m" * 1_000_000
#: The value the ``READ`` functions read.
SMALL_VALUE = b"v" * 100
SMALL_KEY = "suite/small-value"
#: ``CHAIN`` computes square(increment(CHAIN_ARGUMENT)).
CHAIN_ARGUMENT = 1
CHAIN_RESULT = (CHAIN_ARGUMENT + 1) ** 2


@dataclass(frozen=True)
class Op:
    """One workload as a system runs it; ``does`` says how, for the report."""

    run: Callable[[int], object]
    does: str


@dataclass(frozen=True)
class Contender:
    """A started system: its name, how it was set up (for the report) and the workloads it runs."""

    name: str
    setup: str
    ops: dict[str, Op]


def identity(value: object) -> object:
    """The null call's task for the peers (module-level, so their workers load it by reference)."""
    return value


def increment(value: int) -> int:
    """The chain's first task for the peers."""
    return value + 1


def square(value: int) -> int:
    """The chain's second task for the peers."""
    return value * value


def verify(contender: Contender) -> Contender:
    """Runs each op once and checks its result, so a broken setup fails before it is timed."""
    wanted: dict[str, Callable[[object], bool]] = {
        NULL: lambda result: result == 7,
        CHAIN: lambda result: result == CHAIN_RESULT,
        DAG: lambda result: result == CHAIN_RESULT,
        LARGE: lambda result: result == LARGE_ARGUMENT,
        THROUGHPUT: lambda _result: True,
        READ: lambda result: isinstance(result, int) and result >= 0,
    }
    for workload, op in contender.ops.items():
        result = op.run(10 if workload == THROUGHPUT else 7)
        if not wanted[workload](result):
            raise RuntimeError(f"{contender.name}: {workload} ({op.does}) returned {str(result)[:80]!r}")
    return contender
