"""Ray Compiled Graphs as a contender: actor graphs compiled ahead of time (``experimental_compile``), which move
arguments over shared-memory channels without Ray's task machinery. Only rows with a static shape: a null call and
a 1 MB argument through one actor, the chain (and so the registered DAG) through two."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from benchmarks.contenders import (
    CHAIN,
    CHAIN_ARGUMENT,
    DAG,
    LARGE,
    LARGE_ARGUMENT,
    NULL,
    Contender,
    Op,
    ray_actors,
    ray_session,
    ray_tasks,
    verify,
)

NAME = "ray compiled"


@contextlib.contextmanager
def started(cpus: int) -> Iterator[Contender]:
    """Compiles the graphs on the shared local Ray instance; raises ``ImportError`` without Ray."""
    with ray_session.session(cpus, sys.modules[__name__], ray_actors, ray_tasks) as ray:
        from ray.dag import InputNode

        actor = ray.remote(num_cpus=0, resources={ray_session.ACTOR_RESOURCE: 1})(ray_actors.Worker)
        echo, first, second = stages = [actor.remote() for _ in range(3)]
        with InputNode() as given:
            one_hop = echo.identity.bind(given)
        with InputNode() as given:
            two_hops = second.square.bind(first.increment.bind(given))
        graphs = []
        try:
            graphs.append(null := one_hop.experimental_compile())
            graphs.append(chain := two_hops.experimental_compile())
            yield verify(
                Contender(
                    NAME,
                    f"ray {ray.__version__}: compiled graphs of actors (experimental_compile), on the same Ray "
                    "instance",
                    {
                        NULL: Op(lambda index: ray.get(null.execute(index)), "ray.get(graph.execute(i)), one actor"),
                        CHAIN: Op(
                            lambda _index: ray.get(chain.execute(CHAIN_ARGUMENT)),
                            "ray.get(graph.execute(x)), square(increment(x)) over two actors",
                        ),
                        DAG: Op(
                            lambda _index: ray.get(chain.execute(CHAIN_ARGUMENT)),
                            "the same compiled graph: it is Ray's registered DAG",
                        ),
                        LARGE: Op(lambda _index: ray.get(null.execute(LARGE_ARGUMENT)), "ray.get(graph.execute(data))"),
                    },
                )
            )
        finally:
            for graph in graphs:
                graph.teardown()
            for stage in stages:
                ray.kill(stage)
