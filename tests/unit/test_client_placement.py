"""Where a client sends the calls and DAG requests it places itself (leases): where the fewest calls wait, counting
its own; and what it remembers of its requests in flight, to place them again when a process that took one is lost."""

import random
from collections import Counter

from cloudburst.client.in_flight import RequestsInFlight, SentRequest
from cloudburst.client.leases import DagLeaseView, Lease, location_of
from cloudburst.config import RuntimePorts
from cloudburst.protocol.runtime_messages import (
    BEGIN,
    Dag,
    DagCall,
    EncodedValue,
    FunctionCall,
    FunctionReference,
    Link,
    ResultDelivery,
    SerializerType,
)

E1, E2, E3 = "tcp://10.0.1.1:4000", "tcp://10.0.1.2:4000", "tcp://10.0.1.3:4000"


def lease(queued=(0, 0, 0), pinned=(False, False, False)):
    return Lease(1, (E1, E2, E3), expires=10.0, queued=queued, pinned=pinned, incarnations=("i1", "i2", "i3"))


def call(key):
    return FunctionCall("f", response_key=str(key))


def sent(key, executor, incarnation, now):
    return SentRequest(str(key), call(key), ((executor, incarnation),), "", now)


def test_calls_in_flight_take_an_executor_each_until_all_are_busy():
    rng, in_flight, granted = random.Random(1), RequestsInFlight(), lease()
    picks = []
    for key in range(6):
        executor, incarnation = granted.pick(rng, in_flight.counts)
        assert incarnation == {E1: "i1", E2: "i2", E3: "i3"}[executor]
        picks.append(executor)
        in_flight.sent(sent(key, executor, incarnation, now=0.0))
    assert sorted(picks[:3]) == [E1, E2, E3]
    assert sorted(picks[3:]) == [E1, E2, E3]
    assert in_flight.done("1").executors == ((picks[1], {E1: "i1", E2: "i2", E3: "i3"}[picks[1]]),)
    assert granted.pick(rng, in_flight.counts)[0] == picks[1]


def test_the_leases_own_figures_and_pins_count_too():
    rng, in_flight = random.Random(2), RequestsInFlight()
    assert granted_picks(lease(queued=(2, 0, 1)), rng, in_flight) == {E2}
    assert granted_picks(lease(pinned=(True, False, True)), rng, in_flight) == {E2}
    # Busy unpinned executors lose to an idle pinned one.
    assert granted_picks(lease(queued=(1, 1, 0), pinned=(False, False, True)), rng, in_flight) == {E3}


def test_ties_are_broken_at_random():
    rng, in_flight = random.Random(3), RequestsInFlight()
    counts = Counter(lease().pick(rng, in_flight.counts)[0] for _ in range(3000))
    assert min(counts.values()) > 800


def test_calls_in_flight_remember_where_they_went_and_which_process_took_them():
    in_flight = RequestsInFlight()
    in_flight.sent(sent("a", E1, "i1", now=1.0))
    in_flight.sent(sent("b", E2, "i2", now=5.0))
    assert in_flight.where("a") == (E1,)
    assert [(d.call.response_key, d.executors) for d in in_flight.older_than(2.0)] == [("a", ((E1, "i1"),))]
    assert in_flight.done("a") is not None
    assert in_flight.done("a") is None  # answered once
    assert in_flight.where("a") == ()


def test_results_that_never_come_do_not_grow_the_count_forever(monkeypatch):
    monkeypatch.setattr("cloudburst.client.in_flight.MAX_IN_FLIGHT", 10)
    in_flight = RequestsInFlight()
    for key in range(25):
        in_flight.sent(sent(key, E1, "i1", now=0.0))
    assert in_flight.counts[E1] <= 10
    in_flight.done("unknown")  # a result for a call counted before a reset
    assert sum(in_flight.counts.values()) <= 10


def test_requests_the_scheduler_placed_are_remembered_but_not_counted_at_any_executor():
    in_flight = RequestsInFlight()
    in_flight.sent(SentRequest("d", DagCall("pipeline", output_key="d"), (), "scheduler-1", 1.0))
    in_flight.sent(sent("c", E1, "i1", now=1.0))
    assert in_flight.counts == {E1: 1}
    assert in_flight.where("d") == ()  # cancelled through the scheduler, which knows where it runs
    assert {(r.key, r.direct) for r in in_flight.older_than(2.0)} == {("d", False), ("c", True)}
    # Placed again (through the scheduler): the same key, no longer counted at the executor.
    in_flight.sent(SentRequest("c", call("c"), (), "scheduler-1", 3.0))
    assert in_flight.counts == {}
    assert len(in_flight) == 2


def granted_picks(granted, rng, in_flight):
    return {granted.pick(rng, in_flight.counts)[0] for _ in range(100)}


# -- DAG requests under a lease -------------------------------------------------------------------------------------

PORTS = RuntimePorts()
A1, A2 = "tcp://10.0.2.1:4000", "tcp://10.0.2.2:4001"
B1, B2 = "tcp://10.0.2.1:4002", "tcp://10.0.2.2:4003"


def dag_lease(dag, per_function, queued=None):
    leases = tuple(
        Lease(
            0,
            executors,
            10.0,
            (queued or {}).get(name, (0,) * len(executors)),
            (True,) * len(executors),
            tuple(f"inc-{e}" for e in executors),
        )
        for name, executors in per_function
    )
    return DagLeaseView(dag, leases, expires=10.0)


def test_a_dag_request_goes_to_its_sources_with_every_location_and_argument():
    dag = Dag("pipe", (FunctionReference("a"), FunctionReference("b")), (Link("a", "b"),))
    view = dag_lease(dag, [("a", (A1,)), ("b", (B2,))])
    argument = EncodedValue(b"1", SerializerType.DEFAULT)
    call = DagCall(
        "pipe",
        {"a": (argument,)},
        "tcp://client:6000",
        output_key="out",
        delivery=ResultDelivery.NOTIFY_ONLY,
        deadline=99.0,
        stamp=7,
    )
    placement = view.place(call, "req-1", random.Random(1), {}, PORTS)
    [(endpoint, schedule)] = placement.schedules  # only the source: the sink's schedule rides on its trigger
    assert endpoint == A1
    assert (schedule.id, schedule.target_function, schedule.triggers) == ("req-1", "a", (BEGIN,))
    assert schedule.locations == {"a": "10.0.2.1:0", "b": "10.0.2.2:3"}
    assert schedule.arguments == {"a": (argument,)}
    assert (schedule.output_key, schedule.response_address, schedule.deadline, schedule.stamp) == (
        "out",
        "tcp://client:6000",
        99.0,
        7,
    )
    assert schedule.placed_by == ""  # no scheduler placed it: its executors carry the schedule on
    assert placement.executors == ((A1, f"inc-{A1}"), (B2, f"inc-{B2}"))
    assert location_of(B2, PORTS) == "10.0.2.2:3"


def test_each_function_goes_where_the_fewest_requests_wait_counting_this_clients_own():
    dag = Dag("pipe", (FunctionReference("a"), FunctionReference("b")), (Link("a", "b"),))
    view = dag_lease(dag, [("a", (A1, A2)), ("b", (B1, B2))], queued={"a": (3, 0), "b": (0, 0)})
    placement = view.place(DagCall("pipe"), "r", random.Random(2), {B1: 2}, PORTS)
    assert dict(placement.executors).keys() == {A2, B2}


def test_colocated_functions_share_a_host_when_the_lease_allows_it():
    dag = Dag("pipe", (FunctionReference("a"), FunctionReference("b")), (Link("a", "b"),), colocated=("a", "b"))
    view = dag_lease(dag, [("a", (A1, A2)), ("b", (B1, B2))], queued={"a": (1, 0), "b": (0, 5)})
    for seed in range(20):
        placement = view.place(DagCall("pipe"), "r", random.Random(seed), {}, PORTS)
        assert [executor for executor, _ in placement.executors] == [A2, B2]  # b follows a, though B2 is busier


def test_a_direct_dag_request_counts_at_every_executor_it_uses():
    in_flight = RequestsInFlight()
    in_flight.sent(SentRequest("r", DagCall("pipe", output_key="r"), ((A1, "i"), (B1, "j")), "", 0.0))
    assert in_flight.counts == {A1: 1, B1: 1}
    assert in_flight.where("r") == (A1, B1)
    assert in_flight.find("r").direct
    in_flight.done("r")
    assert in_flight.counts == {}


def test_a_request_is_placed_again_once_and_a_late_answer_still_finds_it():
    in_flight = RequestsInFlight()
    direct = SentRequest("r", DagCall("pipe", output_key="r"), ((A1, "i"),), "", 0.0)
    in_flight.sent(direct)
    placing = SentRequest("r", direct.call, (), "scheduler-1", 1.0, after_direct=True)
    assert in_flight.swap(direct, placing)
    assert not in_flight.swap(direct, placing)  # a second placement of the same attempt does nothing
    assert in_flight.find("r") is placing  # a refusal of the direct attempt arriving now is known as stale
    assert in_flight.counts == {}
    assert in_flight.swap(placing, direct)  # placing failed: back as it was
    assert in_flight.counts == {A1: 1}
