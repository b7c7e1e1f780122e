"""Structural validation of DAG registrations (the original accepted anything).

A dangling link made executors wait forever for a trigger, a cycle hung a request, several sinks raced to deliver
one result, and a function outside every link never ran. All of these are rejected at registration, with a message
naming the offending functions, so the error reaches the person who wrote the DAG.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from cloudburst.errors import InvalidDag
from cloudburst.protocol.runtime_messages import Dag


def find_cycle(dag: Dag) -> tuple[str, ...] | None:
    """A cycle through the DAG's links as ``(a, b, ..., a)``, or ``None`` if the links are acyclic.

    Only links between member functions are followed. The search is iterative, so deep chains cannot exhaust the
    interpreter stack.
    """
    members = [ref.name for ref in dag.functions]
    member_set = set(members)
    successors: dict[str, list[str]] = {name: [] for name in members}
    for link in dag.connections:
        if link.source in member_set and link.sink in member_set:
            successors[link.source].append(link.sink)
    done: set[str] = set()
    for root in members:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(successors[root])]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                stack.pop()
            elif following in on_path:
                return (*path[path.index(following) :], following)
            elif following not in done:
                path.append(following)
                on_path.add(following)
                stack.append(iter(successors[following]))
    return None


def _disconnected(dag: Dag) -> list[str]:
    """Member functions not reachable from the first one when links are followed in either direction."""
    members = [ref.name for ref in dag.functions]
    neighbours: dict[str, set[str]] = {name: set() for name in members}
    for link in dag.connections:
        neighbours[link.source].add(link.sink)
        neighbours[link.sink].add(link.source)
    reached = {members[0]}
    frontier = [members[0]]
    while frontier:
        for neighbour in neighbours[frontier.pop()] - reached:
            reached.add(neighbour)
            frontier.append(neighbour)
    return [name for name in members if name not in reached]


def _names(names: Collection[str]) -> str:
    return ", ".join(repr(name) for name in names)


def validate_dag(dag: Dag, registered_functions: Collection[str] | None) -> None:
    """Checks that ``dag`` can run: one connected, acyclic graph of registered functions with exactly one sink.

    Args:
        dag: The registration.
        registered_functions: The registered function names; ``None`` skips that check (for DAGs loaded from the
            KVS, whose creator already checked it).

    Raises:
        InvalidDag: The first problem found, named precisely (which functions, links or cycle).
    """

    def fail(reason: str) -> None:
        raise InvalidDag(f"DAG {dag.name!r} is invalid: {reason}", dag=dag.name or None)

    if not dag.name:
        fail("it has no name")
    if not dag.functions:
        fail("it has no functions")
    names = [ref.name for ref in dag.functions]
    if "" in names:
        fail("a function reference has no name")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        fail(f"functions {_names(duplicates)} appear more than once")
    members = set(names)
    strangers = sorted(set(dag.colocated) - members)
    if strangers:
        fail(f"colocated functions {_names(strangers)} are not in the DAG")
    for link in dag.connections:
        for end in (link.source, link.sink):
            if end not in members:
                fail(f"link {link.source!r} -> {link.sink!r} names {end!r}, which is not in the DAG")
        if link.source == link.sink:
            fail(f"link {link.source!r} -> {link.sink!r} is a self-loop")
    link_counts = Counter((link.source, link.sink) for link in dag.connections)
    repeated = sorted(f"{source!r} -> {sink!r}" for (source, sink), count in link_counts.items() if count > 1)
    if repeated:
        fail(f"links {', '.join(repeated)} appear more than once")
    if registered_functions is not None:
        unknown = [name for name in names if name not in registered_functions]
        if unknown:
            fail(f"functions {_names(unknown)} are not registered")
    cycle = find_cycle(dag)
    if cycle is not None:
        fail(f"it has a cycle {' -> '.join(repr(name) for name in cycle)}")
    # Checked before the sink count: a disconnected DAG always has several sinks, and "not connected" is the
    # message that tells its author what to fix.
    stray = _disconnected(dag)
    if stray:
        fail(f"functions {_names(stray)} are not connected to {names[0]!r}")
    sinks = [name for name in names if not dag.downstream(name)]
    if len(sinks) != 1:
        fail(f"it has {len(sinks)} sinks ({_names(sinks)}); exactly one function may have no outgoing link")
