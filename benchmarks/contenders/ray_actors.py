"""Ray actors as a contender: two long-lived worker processes, the peer a user compares pinned functions with."""

from __future__ import annotations

import contextlib
import sys
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
    ray_tasks,
    square,
    verify,
)

NAME = "ray actors"
#: Two actors, as the two executors this system gets.
ACTORS = 2


class Worker:
    """The actor: the suite's functions as methods (also the stages of the compiled graphs)."""

    def identity(self, value: object) -> object:
        return identity(value)

    def increment(self, value: int) -> int:
        return increment(value)

    def square(self, value: int) -> int:
        return square(value)

    def timed_read(self, boxed: list[object]) -> int:
        return ray_tasks.timed_read(boxed)


@contextlib.contextmanager
def started(cpus: int) -> Iterator[Contender]:
    """Starts two actors on the shared local Ray instance; raises ``ImportError`` without Ray."""
    with ray_session.session(cpus, sys.modules[__name__], ray_tasks) as ray:
        actor = ray.remote(num_cpus=0, resources={ray_session.ACTOR_RESOURCE: 1})(Worker)
        first, second = workers = [actor.remote() for _ in range(ACTORS)]
        small = [ray.put(SMALL_VALUE)]

        def burst(count: int) -> None:
            ray.get([workers[index % ACTORS].identity.remote(index) for index in range(count)])

        try:
            yield verify(
                Contender(
                    NAME,
                    f"ray {ray.__version__}: {ACTORS} actors (each its own process), on the same Ray instance",
                    {
                        NULL: Op(lambda index: ray.get(first.identity.remote(index)), "ray.get(a.f.remote(i))"),
                        CHAIN: Op(
                            lambda _index: ray.get(second.square.remote(first.increment.remote(CHAIN_ARGUMENT))),
                            "ray.get(b.square.remote(a.increment.remote(x))), the ref passed on",
                        ),
                        LARGE: Op(
                            lambda _index: ray.get(first.identity.remote(LARGE_ARGUMENT)), "ray.get(a.f.remote(data))"
                        ),
                        THROUGHPUT: Op(burst, "ray.get([actors[i % 2].f.remote(i) for i in range(n)])"),
                        READ: Op(
                            lambda _index: ray.get(first.timed_read.remote(small)),
                            "ray.get(ref) inside an actor method, of an object ref made with ray.put and read before",
                        ),
                    },
                )
            )
        finally:
            for worker in workers:
                ray.kill(worker)
