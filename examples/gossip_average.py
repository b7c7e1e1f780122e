"""Gossip averaging: functions running at the same time agree on the average of their numbers by messaging.

Each participant is a function of one DAG, pinned on its own executor, holding one number. Participants find each
other through the KVS (each stores ``lib.getid()``), then talk directly with ``lib.send``/``lib.recv``, in rounds:
every round a participant sends its value to its two neighbours on a ring and moves towards theirs
(``v += (left - v) / 3 + (right - v) / 3``). The weights are symmetric, so the sum of the values never changes and
every value converges to the average; no participant ever sees all the numbers.

Stopping is decentralised too. A participant whose neighbours agree with it within the tolerance proposes to stop
after round ``r + N + 1``; proposals travel with the values and the smallest wins. Since a proposal crosses the
ring in fewer than N rounds, every participant learns the winning round before it comes, and all stop after the
same round, so nobody is left waiting for a neighbour that has gone.

    python examples/gossip_average.py                      # a throwaway local cluster
    python examples/gossip_average.py --scheduler HOST     # a running cluster (needs 2+ free executors)

Exits with 1 if the participants' final values are not the true average within ``--tolerance``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import cloudburst

if TYPE_CHECKING:
    from cloudburst.executor.user_library import UserLibrary

DAG = "example-gossip-average"
COLLECT = "gossip_collect"
#: How far each value moves towards each neighbour's per round (at most 1/3 keeps the self-weight positive).
STEP = 1 / 3
#: Seconds a participant waits for its peers (to start, and for each round) before giving up.
PATIENCE = 20.0
#: A placement is retried this many times if the scheduler put two participants on one executor.
PLACEMENT_ATTEMPTS = 5


def participant(
    lib: UserLibrary, run: str, index: int, size: int, value: float, tolerance: float, max_rounds: int
) -> dict[str, Any]:
    """One participant: publishes where it runs, then gossips with its ring neighbours until everyone stops."""
    lib.put(f"examples/gossip/{run}/{index}", list(lib.getid()))
    give_up = time.monotonic() + PATIENCE
    keys = [f"examples/gossip/{run}/{peer}" for peer in range(size)]
    while None in (found := lib.get(keys)).values():  # the others may not have started yet
        if time.monotonic() > give_up:
            raise TimeoutError(f"participant {index}: not every peer started within {PATIENCE} s")
        time.sleep(0.005)
    address = {peer: (str(found[key][0]), int(found[key][1])) for peer, key in enumerate(keys)}
    neighbours = sorted({(index - 1) % size, (index + 1) % size} - {index})

    # Messages by (round, sender): a neighbour can be one round ahead of us, never more.
    pending: dict[tuple[int, int], dict[str, Any]] = {}
    stop_after: int | None = None
    agreed_at: int | None = None
    round_number = 0
    while True:
        message = {"run": run, "from": index, "round": round_number, "value": value, "stop_after": stop_after}
        payload = json.dumps(message).encode()
        for peer in neighbours:
            lib.send(address[peer], payload)
        give_up = time.monotonic() + PATIENCE
        while not all((round_number, peer) in pending for peer in neighbours):
            received = lib.recv()
            for _, data in received:
                incoming = json.loads(data)
                if incoming.get("run") == run:  # an inbox may hold leftovers of an earlier, failed run
                    pending[(incoming["round"], incoming["from"])] = incoming
            if not received:
                if time.monotonic() > give_up:
                    raise TimeoutError(f"participant {index}: no round {round_number} value from its neighbours")
                time.sleep(0.0005)
        heard = [pending.pop((round_number, peer)) for peer in neighbours]
        spread = max(abs(other["value"] - value) for other in heard)
        value += sum(STEP * (other["value"] - value) for other in heard)
        if stop_after == round_number:  # everyone sent this same proposal this round: all stop now
            break
        proposals = [p for p in (stop_after, *(other["stop_after"] for other in heard)) if p is not None]
        if spread <= tolerance or round_number + 1 >= max_rounds:
            agreed_at = round_number if agreed_at is None and spread <= tolerance else agreed_at
            proposals.append(round_number + size + 1)
        stop_after = min(proposals) if proposals else None
        round_number += 1
    return {
        "index": index,
        "value": value,
        "rounds": round_number + 1,
        "agreed_at": agreed_at,
        "executor": "{}:{}".format(*lib.getid()),
    }


def collect(lib: UserLibrary, *results: dict[str, Any]) -> list[dict[str, Any]]:
    """The DAG's sink: every participant's outcome, by index."""
    return sorted(results, key=lambda result: result["index"])


@contextlib.contextmanager
def open_cluster(scheduler: str | None, host: str, executors: int) -> Iterator[cloudburst.Connection]:
    """A connection to the cluster at ``scheduler``, or to a throwaway local cluster when it is ``None``."""
    if scheduler is not None:
        with cloudburst.connect(scheduler, host=host) as connection:
            yield connection
        return
    print(f"Starting a throwaway local cluster with {executors} executors ...", flush=True)
    with cloudburst.local(executors=executors) as connection:
        yield connection


def pin_apart(cb: cloudburst.Connection, size: int) -> dict[str, str]:
    """Registers the DAG with up to ``size`` participants, each pinned on its own executor; returns where each is.

    Participants must run at the same time, and an executor runs one function at a time, so two participants
    pinned together would wait for each other forever. The scheduler pins on the executors hosting the fewest
    functions, which keeps participants apart on an idle cluster; when other functions are pinned, a placement
    may still put two together, so it is tried again, with one participant fewer each time (down to 2).
    """
    for _ in range(PLACEMENT_ATTEMPTS):
        names = [f"gossip_avg_{index}" for index in range(size)]
        with contextlib.suppress(cloudburst.DagNotFound):
            cb.delete_dag(DAG)
        # The sink comes last, so the participants get the emptiest executors.
        cb.register_dag(DAG, [*names, COLLECT], [(name, COLLECT) for name in names])
        hosts: dict[str, list[str]] = {name: [] for name in names}
        for executor in cb.status().executors:
            for name in set(executor.functions) & set(names):
                hosts[name].append(f"{executor.ip}:{executor.tid}")
        placed = [where[0] for where in hosts.values() if len(where) == 1]
        if len(placed) == len(names) == len(set(placed)):
            return {name: where[0] for name, where in hosts.items()}
        size = max(2, size - 1)
    cb.delete_dag(DAG)
    raise cloudburst.NoResources("could not pin the participants on distinct executors")


def main(argv: list[str] | None = None) -> int:
    """Runs one gossip; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", help="a running cluster's scheduler host (default: start a local cluster)")
    parser.add_argument("--host", default="127.0.0.1", help="this machine's address as executors reach it")
    parser.add_argument("--participants", type=int, default=4, help="at most this many (one per executor)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="how close to the average every value must be")
    parser.add_argument("--max-rounds", type=int, default=500, help="stop even without agreement after this many")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    with open_cluster(args.scheduler, args.host, executors=args.participants) as cb:
        free = [e for e in cb.status().executors if e.running and not e.type]  # CPU executors
        size = min(args.participants, len(free))
        if size < 2:
            print(f"gossip_average: FAILED: needs at least 2 executors, the cluster has {len(free)}")
            return 1
        for index in range(size):
            cb.register(participant, f"gossip_avg_{index}")
        cb.register(collect, COLLECT)
        placement = pin_apart(cb, size)
        names, size = list(placement), len(placement)
        try:
            rng = random.Random(args.seed)
            values = [round(rng.uniform(0, 100), 3) for _ in range(size)]
            average = math.fsum(values) / size
            run = uuid.uuid4().hex[:12]
            # Agreeing with the neighbours much closer than the tolerance leaves the whole ring within it.
            local_tolerance = args.tolerance / (10 * size)
            arguments = {
                name: [run, index, size, values[index], local_tolerance, args.max_rounds]
                for index, name in enumerate(names)
            }
            started = time.perf_counter()
            results = cb.call_dag(cb.build_dag_call(DAG, arguments)).result(timeout=2 * PATIENCE + 10)
            elapsed = time.perf_counter() - started
        finally:
            cb.delete_dag(DAG)  # unpins the participants, so the executors are free for other work

    print(f"{size} participants, each on its own executor; true average {average:.6f}")
    print(f"{'#':>2}  {'executor':<22} {'start':>10} {'final':>14} {'rounds':>6}  agreed at round")
    for result in results:
        index = result["index"]
        agreed = "-" if result["agreed_at"] is None else str(result["agreed_at"])
        print(
            f"{index:>2}  {placement[names[index]]:<22} {values[index]:>10.3f} {result['value']:>14.8f} "
            f"{result['rounds']:>6}  {agreed}"
        )
    error = max(abs(result["value"] - average) for result in results)
    rounds = {result["rounds"] for result in results}
    print(f"{max(rounds)} rounds in {elapsed * 1e3:.0f} ms; largest distance from the average {error:.2e}")
    if len(results) != size or len(rounds) != 1 or error > args.tolerance:
        print(f"gossip_average: FAILED: error {error:.2e} (tolerance {args.tolerance:g}), rounds {sorted(rounds)}")
        return 1
    print(f"gossip_average: OK: {size} participants agreed on {average:.6f} after {rounds.pop()} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
