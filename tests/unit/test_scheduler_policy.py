"""The scheduler's pure placement policy and DAG validation: no sockets, seeded randomness."""

import itertools
import random
import uuid
from collections import Counter

import pytest

from cloudburst.errors import InvalidDag
from cloudburst.protocol.runtime_messages import Dag, FunctionReference, Link
from cloudburst.scheduler.policy import ExecutorCandidate, PlacementPolicy, PolicyOptions, location_string
from cloudburst.scheduler.validation import find_cycle, validate_dag


def dag(name, functions, links=(), colocated=()):
    return Dag(
        name,
        tuple(FunctionReference(f) for f in functions),
        tuple(Link(s, t) for s, t in links),
        tuple(colocated),
    )


# -- DAG validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [
        dag("single", ["a"]),
        dag("chain", ["a", "b", "c"], [("a", "b"), ("b", "c")]),
        dag("diamond", ["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]),
        dag("fan-in", ["a", "b", "c"], [("a", "c"), ("b", "c")], colocated=["a", "c"]),
    ],
)
def test_well_formed_dags_pass(candidate):
    validate_dag(candidate, {"a", "b", "c", "d"})
    validate_dag(candidate, None)


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (dag("", ["a"]), "has no name"),
        (dag("d", []), "has no functions"),
        (dag("d", ["a", ""]), "has no name"),
        (dag("d", ["a", "b", "a"], [("a", "b")]), "functions 'a' appear more than once"),
        (dag("d", ["a", "b"], [("a", "b")], colocated=["a", "z"]), "colocated functions 'z' are not in the DAG"),
        (dag("d", ["a", "b"], [("a", "b"), ("b", "x")]), "link 'b' -> 'x' names 'x', which is not in the DAG"),
        (dag("d", ["a", "b"], [("y", "b")]), "link 'y' -> 'b' names 'y', which is not in the DAG"),
        (dag("d", ["a", "b"], [("a", "b"), ("b", "b")]), "link 'b' -> 'b' is a self-loop"),
        (dag("d", ["a", "b"], [("a", "b"), ("a", "b")]), "links 'a' -> 'b' appear more than once"),
        (
            dag("d", ["a", "b", "c", "s"], [("a", "b"), ("b", "c"), ("c", "a"), ("c", "s")]),
            "has a cycle 'a' -> 'b' -> 'c' -> 'a'",
        ),
        (dag("d", ["a", "b", "c"], [("a", "b"), ("a", "c")]), "has 2 sinks ('b', 'c')"),
        (dag("d", ["a", "b", "c", "e"], [("a", "b"), ("c", "e")]), "functions 'c', 'e' are not connected to 'a'"),
        (dag("d", ["a", "b"]), "functions 'b' are not connected to 'a'"),
    ],
)
def test_malformed_dags_are_rejected_with_a_message_naming_the_problem(candidate, expected):
    with pytest.raises(InvalidDag) as caught:
        validate_dag(candidate, None)
    assert expected in caught.value.message
    assert caught.value.message.startswith(f"DAG {candidate.name!r} is invalid")


def test_unregistered_functions_are_named():
    with pytest.raises(InvalidDag, match=r"functions 'b', 'c' are not registered"):
        validate_dag(dag("d", ["a", "b", "c"], [("a", "b"), ("b", "c")]), {"a"})


def test_structure_is_checked_before_registration():
    # A DAG that is wrong twice over reports the structural problem, which needs no KVS to find.
    with pytest.raises(InvalidDag, match="self-loop"):
        validate_dag(dag("d", ["a"], [("a", "a")]), set())


def test_find_cycle_reports_none_for_acyclic_and_the_cycle_otherwise():
    assert find_cycle(dag("d", ["a", "b", "c"], [("a", "b"), ("a", "c"), ("b", "c")])) is None
    assert find_cycle(dag("d", ["a", "b"], [("a", "b"), ("b", "a")])) == ("a", "b", "a")


def test_find_cycle_handles_chains_deeper_than_the_recursion_limit():
    names = [f"f{i}" for i in range(5000)]
    links = list(itertools.pairwise(names))
    assert find_cycle(dag("long", names, links)) is None
    validate_dag(dag("long", names, links), None)
    looped = dag("long", names, [*links, (names[-1], names[0])])
    cycle = find_cycle(looped)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 5001


# -- placement ----------------------------------------------------------------------------------------------


def candidates(*specs):
    return [ExecutorCandidate((ip, tid), **extra) for ip, tid, extra in specs]


def test_location_string_is_ip_colon_tid():
    assert location_string(("10.0.0.1", 3)) == "10.0.0.1:3"


def test_choose_is_deterministic_for_a_seed_and_rejects_empty_input():
    picks = [PlacementPolicy(random.Random(5)).choose(list(range(10))) for _ in range(3)]
    assert len(set(picks)) == 1
    with pytest.raises(ValueError, match="empty"):
        PlacementPolicy(random.Random(5)).choose([])


def test_new_uuid_is_a_version_4_uuid_drawn_from_the_rng():
    first = PlacementPolicy(random.Random(1)).new_uuid()
    again = PlacementPolicy(random.Random(1)).new_uuid()
    assert first == again
    assert uuid.UUID(first).version == 4


def test_pick_for_call_is_none_without_candidates():
    policy = PlacementPolicy(random.Random(0))
    assert policy.pick_for_call([]) is None
    assert policy.pick_for_pin([]) is None


def test_pick_for_call_does_not_depend_on_the_order_of_candidates():
    pool = candidates(*[(f"10.0.0.{i}", 0, {}) for i in range(8)])
    shuffled = list(pool)
    random.Random(3).shuffle(shuffled)
    picks_sorted = [PlacementPolicy(random.Random(seed)).pick_for_call(pool) for seed in range(20)]
    picks_shuffled = [PlacementPolicy(random.Random(seed)).pick_for_call(shuffled) for seed in range(20)]
    assert picks_sorted == picks_shuffled


def test_pick_for_call_spreads_uniformly():
    policy = PlacementPolicy(random.Random(11))
    pool = candidates(("10.0.0.1", 0, {}), ("10.0.0.2", 0, {}), ("10.0.0.3", 0, {}))
    counts = Counter(policy.pick_for_call(pool) for _ in range(3000))
    assert set(counts) == {c.executor for c in pool}
    assert min(counts.values()) > 800


def test_pick_for_call_prefers_colocated_nodes():
    policy = PlacementPolicy(random.Random(2))
    pool = candidates(("10.0.0.1", 0, {}), ("10.0.0.2", 0, {}), ("10.0.0.2", 1, {}))
    picks = {policy.pick_for_call(pool, {"10.0.0.2"}) for _ in range(200)}
    assert picks == {("10.0.0.2", 0), ("10.0.0.2", 1)}
    # A preferred node with no candidate does not empty the pool.
    assert policy.pick_for_call(pool, {"10.9.9.9"}) is not None


def test_idle_first_takes_the_least_queued_then_unpinned_executors():
    policy = PlacementPolicy(random.Random(5))
    pool = candidates(
        ("10.0.0.1", 0, {"queued": 1}),
        ("10.0.0.2", 0, {"queued": 0, "pinned": 2}),
        ("10.0.0.3", 0, {"queued": 0}),
        ("10.0.0.4", 0, {"queued": 0, "backed_off": True}),
    )
    # Idle and unpinned, whether backed off or not; back-off then decides between those.
    assert {policy.pick_for_call(pool, idle_first=True) for _ in range(200)} == {("10.0.0.3", 0)}
    busy = candidates(("10.0.0.1", 0, {"queued": 2}), ("10.0.0.2", 0, {"queued": 1, "pinned": 1}))
    assert policy.pick_for_call(busy, idle_first=True) == ("10.0.0.2", 0)
    # Without idle_first (DAG functions), the queue does not matter.
    assert {policy.pick_for_call(busy) for _ in range(200)} == {("10.0.0.1", 0), ("10.0.0.2", 0)}


def test_idle_first_keeps_locality_among_equally_idle_executors():
    policy = PlacementPolicy(random.Random(8), PolicyOptions(random_threshold=0.0))
    pool = candidates(("10.0.0.1", 0, {}), ("10.0.0.2", 0, {}), ("10.0.0.2", 1, {"queued": 1}))
    locations = {"k": ("10.0.0.2",)}
    picks = {policy.pick_for_call(pool, references=["k"], key_locations=locations, idle_first=True) for _ in range(50)}
    # The idle executor on the node caching the key, never the busy one beside it.
    assert picks == {("10.0.0.2", 0)}


def test_backed_off_executors_are_avoided_unless_they_are_all_there_is():
    policy = PlacementPolicy(random.Random(4))
    pool = candidates(("10.0.0.1", 0, {"backed_off": True}), ("10.0.0.2", 0, {}))
    assert {policy.pick_for_call(pool) for _ in range(200)} == {("10.0.0.2", 0)}
    alone = candidates(("10.0.0.1", 0, {"backed_off": True}))
    assert policy.pick_for_call(alone) == ("10.0.0.1", 0)


def test_overloaded_executors_are_shed_with_probability_one_minus_the_threshold():
    options = PolicyOptions(random_threshold=0.2, shed_limit=10)
    policy = PlacementPolicy(random.Random(9), options)
    pool = candidates(("10.0.0.1", 0, {"recent_assignments": 11}), ("10.0.0.2", 0, {"recent_assignments": 10}))
    counts = Counter(policy.pick_for_call(pool) for _ in range(4000))
    # The overloaded one survives shedding 20 % of the time and then wins half of the draws: about 10 %.
    share = counts[("10.0.0.1", 0)] / 4000
    assert 0.06 < share < 0.14


def test_shedding_never_empties_the_pool():
    policy = PlacementPolicy(random.Random(9), PolicyOptions(random_threshold=0.0, shed_limit=1))
    pool = candidates(("10.0.0.1", 0, {"recent_assignments": 50}), ("10.0.0.2", 0, {"recent_assignments": 5}))
    assert {policy.pick_for_call(pool) for _ in range(100)} == {("10.0.0.2", 0)}


def test_pick_for_pin_takes_the_fewest_pinned_and_breaks_ties_at_random():
    policy = PlacementPolicy(random.Random(6))
    pool = candidates(("10.0.0.1", 0, {"pinned": 2}), ("10.0.0.2", 0, {"pinned": 0}), ("10.0.0.3", 0, {"pinned": 0}))
    picks = Counter(policy.pick_for_pin(pool) for _ in range(400))
    assert set(picks) == {("10.0.0.2", 0), ("10.0.0.3", 0)}
    assert min(picks.values()) > 120


def test_pick_for_pin_prefers_colocated_nodes_over_fewer_pins():
    policy = PlacementPolicy(random.Random(6))
    pool = candidates(("10.0.0.1", 0, {"pinned": 3}), ("10.0.0.2", 0, {"pinned": 0}))
    assert policy.pick_for_pin(pool, {"10.0.0.1"}) == ("10.0.0.1", 0)


@pytest.mark.parametrize(
    ("utilization", "replicas", "expected"),
    [
        (0.9, [2, 3], True),
        (0.9, [], True),
        (0.9, [2, 1], False),  # the only replica of something: never backed off
        (0.7, [2], False),
        (0.1, [5], False),
    ],
)
def test_back_off_needs_high_utilization_and_no_sole_replica(utilization, replicas, expected):
    assert PlacementPolicy(random.Random(0)).should_back_off(utilization, replicas) is expected
