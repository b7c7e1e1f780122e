"""The executor's pure state machine: events in, instructions out, no sockets, no clock, no user code."""

import dataclasses
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.config import ExecutorConfig
from cloudburst.errors import (
    ConfigError,
    FunctionNotFound,
    InvalidRequest,
    NoResources,
    NotPinned,
    RemoteExecutionError,
)
from cloudburst.executor import state as state_module
from cloudburst.executor.causal import SessionMetadata
from cloudburst.executor.state import (
    DEPART_GRACE,
    MAX_BATCH,
    DagRunDoneEvent,
    EncodedResult,
    ExecutorState,
    ExitInstruction,
    FunctionLoadedEvent,
    FunctionLoadFailedEvent,
    ListSchedulersInstruction,
    LoadFunctionInstruction,
    OneShotDoneEvent,
    OutputForm,
    RequestsReceivedEvent,
    RunDagInstruction,
    RunFailed,
    RunOneShotInstruction,
    RunSucceeded,
    SchedulersListedEvent,
    SendInstruction,
    StartEvent,
    StoreResultInstruction,
    TickEvent,
    UnloadFunctionInstruction,
)
from cloudburst.lattices import VectorClock
from cloudburst.protocol import codec, values
from cloudburst.protocol.messages import ConsistencyType, LatticeType, SerializerType
from cloudburst.protocol.runtime_messages import (
    BEGIN,
    CallResult,
    Continuation,
    Dag,
    DagCall,
    DagSchedule,
    DagTrigger,
    EncodedValue,
    ErrorCode,
    ExecutionType,
    ExecutorStatistics,
    ExecutorType,
    FunctionCall,
    FunctionReference,
    GenericResponse,
    KeyVersion,
    Link,
    PinFunction,
    ResultDelivery,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.telemetry_messages import ReadRecord
from cloudburst.protocol.trigger_messages import TriggerFiring

HOST = "10.0.0.5"
TID = 2
NODE = f"{HOST}:{TID}"
OTHER = "10.0.0.6:1"
SCHEDULERS = ("10.0.0.1", "10.0.0.2")
SCHEDULER_ENDPOINTS = ("tcp://10.0.0.1:5007", "tcp://10.0.0.2:5007")
PIN_REPLY = "tcp://10.0.0.1:5007"
CLIENT = "tcp://10.0.0.9:9000"


def make_config(**overrides):
    settings_ = {
        "host": HOST,
        "tid": TID,
        "schedulers": SCHEDULERS,
        "report_period": 5.0,
        "request_ttl": 60.0,
        "dedup_ttl": 10.0,
    }
    settings_.update(overrides)
    return ExecutorConfig(**settings_)


class Harness:
    """Drives one state, checking its invariants after every event."""

    def __init__(self, **overrides):
        self.state = ExecutorState(make_config(**overrides), "incarnation-1")
        self.now = 0.0

    def step(self, event):
        out = self.state.handle(event, self.now)
        self.state.validate()
        return out

    def receive(self, *requests):
        return self.step(RequestsReceivedEvent(tuple(requests)))

    def pin(self, name, batching=False, request_id="pin-1"):
        out = self.receive(PinFunction(name, PIN_REPLY, request_id, batching))
        assert out == [LoadFunctionInstruction(name)]
        return self.step(FunctionLoadedEvent(name, duration=0.0))

    def finish(self, run, *outcomes, duration=0.0, wall_time=0.0):
        return self.step(DagRunDoneEvent(run.run_id, tuple(outcomes), duration, wall_time))

    def advance(self, seconds):
        self.now += seconds


def make_dag(name, functions, links=(), multiexec=None, batching=()):
    multiexec = multiexec or {}
    references = tuple(
        FunctionReference(
            f,
            ExecutionType.MULTIEXEC if f in multiexec else ExecutionType.REGULAR,
            tuple(values.serialize(v) for v in multiexec.get(f, ())),
            batching=f in batching,
        )
        for f in functions
    )
    return Dag(name, references, tuple(Link(a, b) for a, b in links))


def make_schedule(dag, function, request_id="r1", arguments=None, locations=None, **fields):
    return DagSchedule(
        id=request_id,
        dag=dag,
        target_function=function,
        triggers=dag.upstream(function) or (BEGIN,),
        locations=locations or {f.name: NODE for f in dag.functions},
        arguments={function: tuple(values.encode(a) for a in (arguments or ()))},
        **fields,
    )


def make_trigger(request_id, target, source, *arguments):
    return DagTrigger(request_id, target, source, tuple(values.encode(a) for a in arguments))


def runs(out):
    return [i for i in out if isinstance(i, RunDagInstruction)]


def only_run(out):
    (run,) = runs(out)
    return run


def sends(out, kind=None):
    return [i for i in out if isinstance(i, SendInstruction) and (kind is None or isinstance(i.message, kind))]


def stores(out):
    return [i for i in out if isinstance(i, StoreResultInstruction)]


def decoded(arguments):
    return [values.decode(a) for a in arguments]


def result_of(value):
    return RunSucceeded(result=EncodedResult(values.encode(value)))


def arguments_of(*items):
    return RunSucceeded(arguments=tuple(values.encode(i) for i in items))


def raises_from(value, error_class):
    with pytest.raises(error_class) as caught:
        values.decode(value)
    return caught.value


SINGLE = make_dag("single", ["f"])
CHAIN = make_dag("chain", ["f", "g"], [("f", "g")])
FAN_IN = make_dag("fan-in", ["a", "b", "c", "join"], [("a", "join"), ("b", "join"), ("c", "join")])


# -- start, pins, unpins ---------------------------------------------------------------------------------------


def test_start_announces_the_executor_to_every_scheduler():
    harness = Harness(gpu=True)
    out = harness.step(StartEvent())
    assert [s.address for s in out] == list(SCHEDULER_ENDPOINTS)
    status = out[0].message
    assert status == ThreadStatus(HOST, TID, (), 0.0, True, ExecutorType.GPU, "incarnation-1")


def test_pin_replies_only_after_the_function_is_loaded_and_after_reporting_it_to_every_scheduler():
    harness = Harness()
    out = harness.receive(PinFunction("f", PIN_REPLY, "pin-7"))
    assert out == [LoadFunctionInstruction("f")]
    assert harness.state.pinned_functions() == ()
    out = harness.step(FunctionLoadedEvent("f"))
    # The status goes out first, so no scheduler learns of the commit before the location.
    assert out[-1] == SendInstruction(PIN_REPLY, GenericResponse(True, "pin-7"))
    statuses = sends(out, ThreadStatus)
    assert [s.address for s in statuses] == list(SCHEDULER_ENDPOINTS)
    assert statuses[0].message.functions == ("f",)


def test_pin_of_an_unregistered_function_is_refused_with_func_not_found():
    harness = Harness()
    harness.receive(PinFunction("ghost", PIN_REPLY, "pin-1"))
    out = harness.step(FunctionLoadFailedEvent("ghost", FunctionNotFound("no function 'ghost'")))
    (reply,) = sends(out)
    assert reply.message.success is False
    assert reply.message.error == ErrorCode.FUNC_NOT_FOUND
    assert reply.message.response_id == "pin-1"
    assert harness.state.pinned_functions() == ()


def test_pinning_the_same_function_again_is_idempotent():
    harness = Harness(max_pinned_functions=1)
    harness.pin("f")
    out = harness.receive(PinFunction("f", PIN_REPLY, "pin-2"))
    assert not [i for i in out if isinstance(i, LoadFunctionInstruction)]
    assert sends(out, GenericResponse)[0].message == GenericResponse(True, "pin-2")
    assert harness.state.pinned_functions() == ("f",)


def test_pins_beyond_the_limit_are_refused_with_no_resources():
    harness = Harness(max_pinned_functions=1)
    harness.pin("f")
    out = harness.receive(PinFunction("g", PIN_REPLY, "pin-2"))
    (reply,) = sends(out)
    assert (reply.message.success, reply.message.error, reply.message.response_id) == (
        False,
        ErrorCode.NO_RESOURCES,
        "pin-2",
    )
    assert harness.state.pinned_functions() == ("f",)


def test_concurrent_pins_of_one_function_share_a_load():
    harness = Harness()
    harness.receive(PinFunction("f", PIN_REPLY, "a"), PinFunction("f", PIN_REPLY, "b"))
    out = harness.step(FunctionLoadedEvent("f"))
    assert [s.message for s in sends(out, GenericResponse)] == [GenericResponse(True, "a"), GenericResponse(True, "b")]


def test_each_functions_batching_flag_is_its_own():
    harness = Harness()
    harness.pin("f", batching=True)
    harness.pin("g", batching=False)
    dag_f, dag_g = make_dag("df", ["f"]), make_dag("dg", ["g"])
    out = harness.receive(
        make_schedule(dag_f, "f", "r1"),
        make_trigger("r1", "f", BEGIN),
        make_schedule(dag_g, "g", "r2"),
        make_trigger("r2", "g", BEGIN),
    )
    assert {run.function: run.batching for run in runs(out)} == {"f": True, "g": False}


def test_unpin_of_an_idle_function_unloads_it_and_reports():
    harness = Harness()
    harness.pin("f")
    out = harness.receive(UnpinFunction("f"))
    assert UnloadFunctionInstruction("f") in out
    assert sends(out, ThreadStatus)[0].message.functions == ()


def test_unpin_waits_for_the_requests_that_still_need_the_function():
    harness = Harness()
    harness.pin("f")
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1")))
    out = harness.receive(UnpinFunction("f"))
    assert not [i for i in out if isinstance(i, UnloadFunctionInstruction)]
    assert sends(out, ThreadStatus)[0].message.functions == ()
    assert harness.state.loaded_functions() == ("f",)
    out = harness.finish(run, result_of(1))
    assert UnloadFunctionInstruction("f") in out
    assert harness.state.loaded_functions() == ()


def test_unpin_of_an_unknown_function_is_ignored():
    harness = Harness()
    assert harness.receive(UnpinFunction("nope")) == []


def test_unpin_during_the_load_unpins_once_loaded():
    harness = Harness()
    harness.receive(PinFunction("f", PIN_REPLY, "p"))
    harness.receive(UnpinFunction("f"))
    out = harness.step(FunctionLoadedEvent("f"))
    assert sends(out, GenericResponse)[0].message.success
    assert UnloadFunctionInstruction("f") in out
    assert harness.state.pinned_functions() == ()


def test_a_failed_load_fails_the_requests_waiting_for_it():
    harness = Harness()
    harness.receive(PinFunction("f", PIN_REPLY, "p"))
    schedule = make_schedule(SINGLE, "f", "r1", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
    harness.receive(schedule, make_trigger("r1", "f", BEGIN))
    out = harness.step(FunctionLoadFailedEvent("f", FunctionNotFound("gone")))
    (pushed,) = [s for s in sends(out) if s.address == CLIENT]
    assert "could not be pinned" in str(raises_from(pushed.message.value, NotPinned))
    assert harness.state.pending_requests() == ()


# -- DAG requests ----------------------------------------------------------------------------------------------


def test_a_sources_schedule_starts_it_and_a_begin_trigger_as_the_original_sent_is_a_repeat():
    harness = Harness()
    harness.pin("f")
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1", arguments=[7, "x"])))
    (item,) = run.items
    assert (run.function, item.request_id, item.dag, item.output) == ("f", "r1", "single", OutputForm.RESULT)
    assert decoded(item.arguments) == [7, "x"]
    assert runs(harness.receive(make_trigger("r1", "f", BEGIN))) == []
    assert harness.state.counters().duplicates_dropped == 1


def test_a_begin_trigger_before_the_schedule_waits_for_it():
    harness = Harness()
    harness.pin("f")
    assert runs(harness.receive(make_trigger("r1", "f", BEGIN))) == []
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1", arguments=[7])))
    assert decoded(run.items[0].arguments) == [7]
    assert harness.state.counters().duplicates_dropped == 0


def test_fan_in_arguments_follow_edge_order_whatever_the_arrival_order():
    harness = Harness()
    harness.pin("join")
    out = harness.receive(
        make_trigger("r1", "join", "c", "from c"),
        make_schedule(FAN_IN, "join", "r1", arguments=["fixed"]),
        make_trigger("r1", "join", "a", "from a", "a2"),
    )
    assert runs(out) == []
    run = only_run(harness.receive(make_trigger("r1", "join", "b", "from b")))
    assert decoded(run.items[0].arguments) == ["fixed", "from a", "a2", "from b", "from c"]


def test_a_repeated_trigger_for_a_pending_request_is_dropped():
    harness = Harness()
    harness.pin("join")
    harness.receive(make_schedule(FAN_IN, "join", "r1"), make_trigger("r1", "join", "a", 1))
    out = harness.receive(
        make_trigger("r1", "join", "a", 999), make_trigger("r1", "join", "b", 2), make_trigger("r1", "join", "c", 3)
    )
    assert decoded(only_run(out).items[0].arguments) == [1, 2, 3]
    assert harness.state.counters().duplicates_dropped == 1


def test_triggers_for_a_finished_request_are_dropped_until_the_dedup_ttl():
    harness = Harness(dedup_ttl=10.0)
    harness.pin("f")
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1")))
    harness.finish(run, result_of(1))
    harness.advance(9.0)
    assert harness.receive(make_trigger("r1", "f", BEGIN), make_schedule(SINGLE, "f", "r1")) == []
    assert harness.state.pending_requests() == ()
    assert harness.state.counters().duplicates_dropped == 2
    harness.advance(2.0)
    harness.receive(make_trigger("r1", "f", BEGIN))
    assert harness.state.pending_requests() == (("r1", "f"),)


def test_a_trigger_from_a_function_that_is_not_upstream_is_dropped():
    harness = Harness()
    harness.pin("g")
    harness.receive(make_trigger("r1", "g", "stranger", 1))
    out = harness.receive(make_schedule(CHAIN, "g", "r1"), make_trigger("r1", "g", "f", 2))
    assert decoded(only_run(out).items[0].arguments) == [2]
    assert harness.state.counters().unexpected_triggers_dropped == 1


def test_a_result_becomes_triggers_for_the_downstream_executor():
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(CHAIN, "f", "r1", locations={"f": NODE, "g": OTHER}, placed_by="10.0.0.7")
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    assert run.items[0].output is OutputForm.TRIGGER_ARGUMENTS
    out = harness.finish(run, arguments_of(1, 2))
    (send,) = sends(out)
    assert send.address == "tcp://10.0.0.6:4001"
    assert send.message == DagTrigger("r1", "g", "f", (values.encode(1), values.encode(2)))
    assert stores(out) == []


# -- requests sent straight to a DAG's sources (under a lease, no scheduler) -----------------------------------------

THREE = make_dag("three", ["f", "g", "h"], [("f", "g"), ("g", "h")])


def test_a_direct_requests_trigger_carries_the_targets_schedule_with_only_the_arguments_still_needed():
    harness = Harness()
    harness.pin("f")
    schedule = dataclasses.replace(
        make_schedule(THREE, "f", "r1", locations={"f": NODE, "g": OTHER, "h": OTHER}),
        arguments={"f": (values.encode(1),), "g": (values.encode(2),), "h": (values.encode(3),)},
    )
    run = only_run(harness.receive(schedule))  # a source's schedule starts it
    (send,) = sends(harness.finish(run, arguments_of(10)))
    carried = send.message.schedule
    assert (carried.id, carried.target_function, carried.triggers) == ("r1", "g", ("f",))
    assert carried.arguments == {"g": (values.encode(2),), "h": (values.encode(3),)}
    assert (carried.locations, carried.placed_by) == (schedule.locations, "")


def test_a_trigger_carrying_a_schedule_runs_its_target_and_a_second_copy_changes_nothing():
    harness = Harness()
    harness.pin("join")
    schedule = make_schedule(FAN_IN, "join", "r1", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
    for source, value in (("a", 1), ("b", 2)):
        assert (
            runs(harness.receive(dataclasses.replace(make_trigger("r1", "join", source, value), schedule=schedule)))
            == []
        )
    run = only_run(harness.receive(dataclasses.replace(make_trigger("r1", "join", "c", 3), schedule=schedule)))
    assert decoded(run.items[0].arguments) == [1, 2, 3]
    (send,) = sends(harness.finish(run, result_of(6)))
    assert (send.address, send.message.id) == (CLIENT, "r1")
    assert harness.state.counters().duplicates_dropped == 0


def test_a_direct_request_reaching_an_executor_without_its_function_fails_with_not_pinned_for_its_caller():
    harness = Harness()  # the caller's lease is out of date: the caller places the request again
    schedule = make_schedule(CHAIN, "g", "r1", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
    (send,) = sends(harness.receive(dataclasses.replace(make_trigger("r1", "g", "f", 1), schedule=schedule)))
    assert send.address == CLIENT
    assert raises_from(send.message.value, NotPinned).request_id == "r1"
    assert harness.state.pending_requests() == ()


def test_a_trigger_carrying_another_requests_schedule_is_dropped():
    harness = Harness()
    harness.pin("g")
    schedule = make_schedule(CHAIN, "g", "other")
    assert harness.receive(dataclasses.replace(make_trigger("r1", "g", "f", 1), schedule=schedule)) == []
    assert harness.state.counters().unexpected_triggers_dropped == 1


def test_a_direct_requests_first_source_reports_where_its_client_placed_it():
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(
        CHAIN, "f", "r1", locations={"f": NODE, "g": OTHER}, response_address=CLIENT, start_time=50.0
    )
    harness.receive(schedule)
    (hop,) = harness.state.take_hops()
    assert (hop.request_id, hop.role, hop.node, hop.start, hop.dag) == ("r1", "client", "10.0.0.9", 50.0, "chain")
    assert (hop.detail, hop.stages) == (f"f -> {NODE}, g -> {OTHER}", 2)


def test_direct_requests_are_counted_at_their_first_source_for_the_schedulers():
    harness = Harness(report_period=5.0)
    harness.step(StartEvent())
    harness.pin("f")
    harness.pin("g", request_id="pin-2")
    for request_id in ("r1", "r2"):
        harness.receive(make_schedule(CHAIN, "f", request_id))
    harness.receive(make_schedule(CHAIN, "f", "placed", placed_by="10.0.0.7"))
    harness.receive(dataclasses.replace(make_trigger("r1", "g", "f", 1), schedule=make_schedule(CHAIN, "g", "r1")))
    harness.advance(5.0)
    (statistics, _) = sends(harness.step(TickEvent()), ExecutorStatistics)
    assert [(d.name, d.direct_calls) for d in statistics.message.dags] == [("chain", 2)]


def test_a_missing_downstream_location_is_reported_to_the_caller():
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(
        CHAIN, "f", "r1", locations={"f": NODE}, response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY
    )
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    (send,) = sends(harness.finish(run, arguments_of(1)))
    assert send.address == CLIENT
    assert "no valid location" in str(raises_from(send.message.value, InvalidRequest))


def test_a_function_not_pinned_here_gets_a_not_pinned_error_and_no_queue_entry():
    harness = Harness()
    schedule = make_schedule(SINGLE, "f", "r1", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
    out = harness.receive(make_trigger("r1", "f", BEGIN), schedule)
    (send,) = sends(out)
    assert send.address == CLIENT
    assert send.message.id == "r1"
    error = raises_from(send.message.value, NotPinned)
    assert (error.function, error.dag, error.node, error.request_id) == ("f", "single", NODE, "r1")
    assert harness.state.pending_requests() == ()
    assert harness.receive(make_trigger("r1", "f", BEGIN)) == []


def test_a_request_its_scheduler_placed_on_a_function_not_pinned_here_goes_back_to_that_scheduler():
    harness = Harness()  # restarted since the scheduler placed it: the caller must not see NotPinned
    schedule = make_schedule(SINGLE, "f", "r1", response_address=CLIENT, placed_by="10.0.0.7")
    out = harness.receive(make_trigger("r1", "f", BEGIN), schedule)
    (refusal,) = sends(out)
    assert refusal.address == "tcp://10.0.0.7:5007"
    assert refusal.message.refused == ("r1",)
    assert refusal.message.finished == ()
    assert harness.state.pending_requests() == ()


# -- MULTIEXEC -------------------------------------------------------------------------------------------------


def test_multiexec_first_valid_result_wins_and_later_triggers_are_dropped():
    dag = make_dag("race", ["a", "b", "c", "pick"], [("a", "pick"), ("b", "pick"), ("c", "pick")], {"pick": [None]})
    harness = Harness()
    harness.pin("pick")
    harness.receive(make_schedule(dag, "pick", "r1", response_address=CLIENT))
    first = only_run(harness.receive(make_trigger("r1", "pick", "b", "from b")))
    assert decoded(first.items[0].arguments) == ["from b"]
    assert first.items[0].invalid_results == (values.serialize(None),)
    out = harness.finish(first, RunSucceeded(valid=False))
    assert sends(out) == []
    assert stores(out) == []
    assert harness.state.pending_requests() == (("r1", "pick"),)
    second = only_run(harness.receive(make_trigger("r1", "pick", "a", "from a")))
    assert decoded(second.items[0].arguments) == ["from a"]
    (pushed,) = sends(harness.finish(second, result_of("winner")))
    assert values.decode(pushed.message) == "winner"
    assert harness.receive(make_trigger("r1", "pick", "c", "late")) == []
    assert harness.state.pending_requests() == ()


def test_multiexec_runs_one_trigger_at_a_time_and_takes_the_next_after_an_invalid_result():
    dag = make_dag("race", ["a", "b", "pick"], [("a", "pick"), ("b", "pick")], {"pick": [0]})
    harness = Harness()
    harness.pin("pick")
    out = harness.receive(
        make_schedule(dag, "pick", "r1"), make_trigger("r1", "pick", "a", 1), make_trigger("r1", "pick", "b", 2)
    )
    first = only_run(out)
    assert decoded(first.items[0].arguments) == [1]
    second = only_run(harness.finish(first, RunSucceeded(valid=False)))
    assert decoded(second.items[0].arguments) == [2]


# -- batching --------------------------------------------------------------------------------------------------


def test_ready_requests_of_a_batching_function_run_as_one_batch():
    dag = make_dag("batched", ["f"], batching=["f"])
    harness = Harness()
    harness.pin("f", batching=True)
    messages = []
    for i in range(3):
        messages += [make_schedule(dag, "f", f"r{i}", arguments=[i]), make_trigger(f"r{i}", "f", BEGIN)]
    run = only_run(harness.receive(*messages))
    assert run.batching
    assert [decoded(item.arguments) for item in run.items] == [[0], [1], [2]]
    out = harness.finish(run, result_of("a"), result_of("b"), result_of("c"))
    assert [s.key for s in stores(out)] == ["r0", "r1", "r2"]
    assert [values.decode(s.result.value) for s in stores(out)] == ["a", "b", "c"]


def test_a_failed_batch_fails_every_request_in_it():
    harness = Harness()
    harness.pin("f", batching=True)
    messages = []
    for i in range(2):
        schedule = make_schedule(SINGLE, "f", f"r{i}", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
        messages += [schedule, make_trigger(f"r{i}", "f", BEGIN)]
    run = only_run(harness.receive(*messages))
    failures = [
        RunFailed(RemoteExecutionError("batching function 'f' returned 1 results for a batch of 2", request_id=r))
        for r in ("r0", "r1")
    ]
    out = harness.finish(run, *failures)
    assert [s.message.id for s in sends(out, CallResult)] == ["r0", "r1"]
    for send in sends(out, CallResult):
        assert "returned 1 results" in str(raises_from(send.message.value, RemoteExecutionError))
    assert harness.state.pending_requests() == ()


def test_batches_are_capped_and_requests_from_later_turns_run_separately():
    harness = Harness()
    harness.pin("f", batching=True)
    messages = []
    for i in range(MAX_BATCH + 3):
        messages += [make_schedule(SINGLE, "f", f"r{i}"), make_trigger(f"r{i}", "f", BEGIN)]
    assert [len(run.items) for run in runs(harness.receive(*messages))] == [MAX_BATCH, 3]
    out = harness.receive(make_schedule(SINGLE, "f", "late"), make_trigger("late", "f", BEGIN))
    assert [len(run.items) for run in runs(out)] == [1]


def test_a_short_outcome_list_fails_the_whole_run_instead_of_hanging_requests():
    harness = Harness()
    harness.pin("f", batching=True)
    run = only_run(
        harness.receive(
            make_schedule(SINGLE, "f", "r0"),
            make_trigger("r0", "f", BEGIN),
            make_schedule(SINGLE, "f", "r1"),
            make_trigger("r1", "f", BEGIN),
        )
    )
    out = harness.finish(run, result_of(1))
    assert [s.key for s in stores(out)] == ["r0", "r1"]
    assert harness.state.pending_requests() == ()


# -- delivery --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "address", "expected"),
    [
        (ResultDelivery.LEGACY, CLIENT, ["bare value"]),
        (ResultDelivery.LEGACY, "", ["store"]),
        (ResultDelivery.NOTIFY_AND_STORE, CLIENT, ["call result", "store"]),
        (ResultDelivery.NOTIFY_ONLY, CLIENT, ["call result"]),
    ],
)
def test_sink_delivery_rules(delivery, address, expected):
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(SINGLE, "f", "r1", response_address=address, delivery=delivery, output_key="out")
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    out = harness.finish(run, result_of(42))
    kinds = []
    for instruction in out:
        if isinstance(instruction, StoreResultInstruction):
            assert instruction.key == "out"
            assert values.decode(instruction.result.value) == 42
            kinds.append("store")
        elif isinstance(instruction.message, EncodedValue):
            assert instruction.address == CLIENT
            assert values.decode(instruction.message) == 42
            kinds.append("bare value")
        elif isinstance(instruction.message, CallResult):
            assert instruction.address == CLIENT
            assert instruction.message.id == "out"
            kinds.append("call result")
    assert kinds == expected


def test_a_sink_result_is_stored_under_the_request_id_without_an_output_key():
    harness = Harness()
    harness.pin("f")
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1"), make_trigger("r1", "f", BEGIN)))
    members = (values.serialize(1), values.serialize(2))
    out = harness.finish(run, RunSucceeded(result=EncodedResult(values.encode({1, 2}), members)))
    assert stores(out) == [StoreResultInstruction("r1", EncodedResult(values.encode({1, 2}), members))]


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        (ResultDelivery.LEGACY, ["store"]),
        (ResultDelivery.NOTIFY_AND_STORE, ["call result", "store"]),
        (ResultDelivery.NOTIFY_ONLY, ["call result"]),
    ],
)
def test_one_shot_calls_run_regardless_of_pins_and_follow_the_delivery_rules(delivery, expected):
    harness = Harness(max_pinned_functions=0)
    call = FunctionCall("square", (values.encode(3),), response_key="k1", response_address=CLIENT, delivery=delivery)
    (run,) = harness.receive(call)
    assert isinstance(run, RunOneShotInstruction)
    assert run.call == call
    out = harness.step(OneShotDoneEvent(run.run_id, result_of(9), 0.01))
    kinds = ["store" if isinstance(i, StoreResultInstruction) else "call result" for i in out]
    assert kinds == expected
    for instruction in out:
        if isinstance(instruction, StoreResultInstruction):
            assert instruction.key == "k1"
        else:
            assert instruction.message == CallResult("k1", values.encode(9))


def test_the_scheduler_that_placed_a_call_hears_when_it_is_done():
    harness = Harness()
    first = FunctionCall("f", response_key="k1", placed_by="10.0.0.7")
    second = FunctionCall("f", response_key="k2")  # sent straight by a client: no scheduler is waiting to hear
    run_first, run_second = harness.receive(first, second)
    out = harness.step(OneShotDoneEvent(run_first.run_id, result_of(1)))
    (done,) = sends(out, ThreadStatus)
    assert done.address == "tcp://10.0.0.7:5007"
    assert (done.message.finished, done.message.queued) == (("k1",), 1)
    assert sends(harness.step(OneShotDoneEvent(run_second.run_id, result_of(2))), ThreadStatus) == []
    assert harness.state.status().queued == 0


def test_a_one_shot_error_is_delivered_as_an_error_value():
    harness = Harness()
    call = FunctionCall("boom", response_key="k1", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_AND_STORE)
    (run,) = harness.receive(call)
    error = RemoteExecutionError("ValueError: no", "builtins.ValueError", function="boom", remote_traceback="tb")
    out = harness.step(OneShotDoneEvent(run.run_id, RunFailed(error)))
    pushed = sends(out, CallResult)[0].message
    raised = raises_from(pushed.value, RemoteExecutionError)
    assert (raised.function, raised.node, raised.remote_traceback) == ("boom", NODE, "tb")
    assert stores(out)[0].result.value == pushed.value


@pytest.mark.parametrize("address", ["", CLIENT])
def test_original_clients_get_their_own_forms_of_bytes_sets_and_errors(address):
    # The LEGACY delivery is an original client's: its serializer reads bytes untagged as DEFAULT, a set as a SET
    # lattice of such values, and a failure as the pickled ('ERROR: <message>', GenericResponse) pair.
    harness = Harness()
    outcomes = {
        "k-bytes": result_of(b"raw"),
        "k-set": RunSucceeded(result=EncodedResult(values.encode({b"m"}), (values.serialize(b"m"),))),
        "k-error": RunFailed(RemoteExecutionError("ValueError: no", "builtins.ValueError", function="f")),
    }
    delivered = {}
    for key, outcome in outcomes.items():
        (run,) = harness.receive(FunctionCall("f", response_key=key, response_address=address))
        out = harness.step(OneShotDoneEvent(run.run_id, outcome))
        (store,) = stores(out)  # one-shot results are stored, as the original stored them
        delivered[key] = store.result
    assert delivered["k-bytes"].value == EncodedValue(b"raw", SerializerType.DEFAULT)
    assert delivered["k-set"].set_members == (codec.encode_value(b"m", SerializerType.DEFAULT),)
    text, response = pickle.loads(delivered["k-error"].value.body)
    assert text == "ERROR: ValueError: no"
    assert codec.decode_generic_response(response).error == ErrorCode.EXECUTION_ERROR


def test_a_dag_result_pushed_to_an_original_client_is_in_its_form():
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(SINGLE, "f", "r1", response_address=CLIENT)
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    (item,) = run.items
    assert item.legacy  # values the function stores are in the original's forms too
    (send,) = sends(harness.finish(run, result_of(b"raw")))
    assert send.message == EncodedValue(b"raw", SerializerType.DEFAULT)
    schedule = make_schedule(SINGLE, "f", "r2", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
    run = only_run(harness.receive(schedule, make_trigger("r2", "f", BEGIN)))
    assert not run.items[0].legacy
    (send,) = sends(harness.finish(run, result_of(b"raw")))
    assert send.message.value == EncodedValue(b"raw", SerializerType.BYTES)


def test_a_sink_with_a_continuation_sends_it_to_the_schedulers_in_turn():
    harness = Harness()
    harness.pin("f")
    next_call = DagCall("next-dag", response_address=CLIENT)
    continuation = Continuation("next-dag", call=next_call)
    addresses = []
    for request in ("r1", "r2"):
        schedule = make_schedule(SINGLE, "f", request, continuation=continuation, response_address="tcp://x:1")
        run = only_run(harness.receive(schedule, make_trigger(request, "f", BEGIN)))
        (send,) = harness.finish(run, result_of((1, 2)))
        addresses.append(send.address)
        expected = Continuation("next-dag", request, codec.encode_encoded_value(values.encode((1, 2))), next_call)
        assert send.message == expected
    assert addresses == list(SCHEDULER_ENDPOINTS)


def test_an_error_goes_to_the_end_of_the_continuation_chain_and_skips_downstream():
    last = DagCall("third", response_address=CLIENT, output_key="final", delivery=ResultDelivery.NOTIFY_ONLY)
    middle = DagCall("second", response_address="tcp://wrong:1", continuation=Continuation("third", call=last))
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(
        CHAIN, "f", "r1", continuation=Continuation("second", call=middle), response_address="tcp://wrong:2"
    )
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    error = RemoteExecutionError("KeyError: 'x'", function="f", dag="chain", request_id="r1")
    (send,) = harness.finish(run, RunFailed(error))
    assert send.address == CLIENT
    assert send.message.id == "final"
    assert raises_from(send.message.value, RemoteExecutionError).function == "f"
    assert harness.state.pending_requests() == ()


# -- reports ---------------------------------------------------------------------------------------------------


def test_status_and_statistics_are_reported_each_period():
    harness = Harness(report_period=5.0)
    harness.step(StartEvent())
    harness.pin("f")
    schedule = make_schedule(SINGLE, "f", "r1", start_time=1000.0)
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    harness.finish(run, result_of(1), duration=1.0, wall_time=1000.25)
    (one_shot,) = harness.receive(FunctionCall("g", response_key="k"))
    harness.step(OneShotDoneEvent(one_shot.run_id, result_of(2), 0.5))
    harness.advance(4.0)
    assert harness.step(TickEvent()) == []
    harness.advance(1.0)
    out = harness.step(TickEvent())
    statuses = sends(out, ThreadStatus)
    assert [s.address for s in statuses] == list(SCHEDULER_ENDPOINTS)
    assert statuses[0].message.utilization == pytest.approx(1.5 / 5.0)
    assert statuses[0].message.functions == ("f",)
    (statistics, _) = sends(out, ExecutorStatistics)
    report = statistics.message
    assert report.reporter == NODE
    assert {(f.name, f.call_count, f.runtimes) for f in report.functions} == {("f", 1, (1.0,)), ("g", 1, (0.5,))}
    assert [(d.name, d.runtimes) for d in report.dags] == [("single", (0.25,))]
    harness.advance(5.0)
    out = harness.step(TickEvent())
    assert sends(out, ExecutorStatistics) == []
    assert sends(out, ThreadStatus)[0].message.utilization == 0.0


def test_orphans_are_dropped_after_the_request_ttl():
    harness = Harness(request_ttl=30.0, report_period=5.0)
    harness.pin("join")
    harness.receive(make_schedule(FAN_IN, "join", "r1"), make_trigger("r1", "join", "a", 1))
    harness.receive(make_trigger("r2", "join", "b", 2))
    harness.advance(25.0)
    harness.step(TickEvent())
    assert len(harness.state.pending_requests()) == 2
    harness.advance(5.0)
    harness.step(TickEvent())
    assert harness.state.pending_requests() == ()
    assert harness.state.counters().orphans_dropped == 2
    assert [what for _, what, _ in harness.state.story("r1")][-1] == "expired"


# -- the management service's scheduler list -------------------------------------------------------------------


def test_with_a_management_service_the_scheduler_list_is_asked_for_at_start_and_each_period():
    harness = Harness(management="10.0.0.8", report_period=5.0)
    out = harness.step(StartEvent())
    assert out[-1] == ListSchedulersInstruction()
    assert [s.address for s in sends(out, ThreadStatus)] == [*SCHEDULER_ENDPOINTS, "tcp://10.0.0.8:7003"]
    harness.advance(4.0)
    assert harness.step(TickEvent()) == []
    harness.advance(1.0)
    assert ListSchedulersInstruction() in harness.step(TickEvent())


def test_without_a_management_service_nothing_is_asked():
    harness = Harness()
    assert ListSchedulersInstruction() not in harness.step(StartEvent())
    harness.advance(5.0)
    assert ListSchedulersInstruction() not in harness.step(TickEvent())


def test_listed_schedulers_hear_the_status_at_once_and_every_report_after():
    harness = Harness(management="10.0.0.8", report_period=5.0)
    harness.step(StartEvent())

    out = harness.step(SchedulersListedEvent(("10.0.0.2", "10.0.0.3")))

    assert [(s.address, s.message.running) for s in out] == [("tcp://10.0.0.3:5007", True)], "only the new one"
    assert harness.state.schedulers() == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    harness.advance(5.0)
    out = harness.step(TickEvent())
    assert [s.address for s in sends(out, ThreadStatus)] == [
        *SCHEDULER_ENDPOINTS,
        "tcp://10.0.0.3:5007",
        "tcp://10.0.0.8:7003",
    ]
    # The next answer replaces the list; the configured schedulers stay.
    harness.step(SchedulersListedEvent(()))
    harness.advance(5.0)
    assert [s.address for s in sends(harness.step(TickEvent()), ThreadStatus)] == [
        *SCHEDULER_ENDPOINTS,
        "tcp://10.0.0.8:7003",
    ]


def test_an_executor_may_start_knowing_only_the_management_service():
    harness = Harness(management="10.0.0.8", schedulers=())
    out = harness.step(StartEvent())
    assert [s.address for s in sends(out)] == ["tcp://10.0.0.8:7003"]
    out = harness.step(SchedulersListedEvent(("10.0.0.4",)))
    assert [s.address for s in sends(out, ThreadStatus)] == ["tcp://10.0.0.4:5007"]


def test_a_continuation_with_no_scheduler_known_fails_the_request_instead_of_crashing():
    harness = Harness(management="10.0.0.8", schedulers=())
    harness.pin("f")
    next_call = DagCall("next-dag", response_address=CLIENT, delivery=ResultDelivery.NOTIFY_ONLY)
    schedule = make_schedule(SINGLE, "f", "r1", continuation=Continuation("next-dag", call=next_call))
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))

    (send,) = sends(harness.finish(run, result_of(1)), CallResult)

    assert send.address == CLIENT
    with pytest.raises(NoResources, match="no scheduler is known"):
        values.decode(send.message.value)


def test_an_executor_without_schedulers_or_management_is_refused():
    with pytest.raises(ConfigError):
        make_config(schedulers=())


# -- departure -------------------------------------------------------------------------------------------------


def test_departure_refuses_pins_drains_pending_work_then_exits():
    harness = Harness()
    harness.pin("join")
    harness.receive(make_schedule(FAN_IN, "join", "r1"), make_trigger("r1", "join", "a", 1))
    out = harness.receive(SelfDepart())
    status = sends(out, ThreadStatus)[0].message
    assert (status.running, status.functions) == (False, ())
    refused = sends(harness.receive(PinFunction("g", PIN_REPLY, "p")), GenericResponse)[0].message
    assert (refused.success, refused.error) == (False, ErrorCode.NO_RESOURCES)
    (one_shot,) = harness.receive(FunctionCall("h", response_key="k"))
    harness.step(OneShotDoneEvent(one_shot.run_id, result_of(0)))
    harness.advance(DEPART_GRACE)
    assert harness.step(TickEvent()) == []
    run = only_run(harness.receive(make_trigger("r1", "join", "b", 2), make_trigger("r1", "join", "c", 3)))
    out = harness.finish(run, result_of(6))
    assert stores(out)
    assert out[-1] == ExitInstruction(0)
    assert harness.state.exited
    assert harness.step(TickEvent()) == []


def test_an_idle_departure_waits_out_the_grace_period():
    harness = Harness()
    harness.receive(SelfDepart())
    harness.advance(DEPART_GRACE / 2)
    (call,) = harness.receive(FunctionCall("late", response_key="k"))
    harness.step(OneShotDoneEvent(call.run_id, result_of(1)))
    harness.advance(DEPART_GRACE / 2)
    assert harness.step(TickEvent())[-1] == ExitInstruction(0)


def test_a_drained_departure_reports_departed_to_every_scheduler_and_management_before_exiting():
    harness = Harness(management="10.0.0.8")
    harness.step(StartEvent())
    harness.pin("f")
    harness.receive(SelfDepart())
    harness.advance(DEPART_GRACE)

    out = harness.step(TickEvent())

    *reports, exit_ = out
    assert exit_ == ExitInstruction(0)
    assert [r.address for r in reports] == [*SCHEDULER_ENDPOINTS, "tcp://10.0.0.8:7003"]
    final = ThreadStatus(HOST, TID, (), 0.0, False, ExecutorType.CPU, "incarnation-1", departed=True)
    assert all(r.message == final for r in reports)


def test_a_load_that_completes_after_depart_is_refused():
    harness = Harness()
    harness.receive(PinFunction("f", PIN_REPLY, "p"), SelfDepart())
    out = harness.step(FunctionLoadedEvent("f"))
    assert UnloadFunctionInstruction("f") in out
    assert sends(out, GenericResponse)[0].message.error == ErrorCode.NO_RESOURCES


# -- properties ------------------------------------------------------------------------------------------------


def _fan_in_messages():
    schedule = make_schedule(FAN_IN, "join", "r1", arguments=["fixed"])
    triggers = [make_trigger("r1", "join", source, source.upper()) for source in ("a", "b", "c")]
    return [schedule, *triggers]


@settings(max_examples=150, deadline=None)
@given(
    order=st.permutations(range(4)),
    duplicates=st.lists(st.integers(0, 3), max_size=4),
    cuts=st.lists(st.integers(0, 8), max_size=4),
)
def test_any_arrival_order_with_duplicates_runs_once_with_edge_ordered_arguments(order, duplicates, cuts):
    messages = _fan_in_messages()
    arrivals = [messages[i] for i in order] + [messages[i] for i in duplicates]
    turns, start = [], 0
    for cut in sorted({*cuts, len(arrivals)}):
        cut = min(cut, len(arrivals))
        if cut > start:
            turns.append(arrivals[start:cut])
            start = cut
    harness = Harness()
    harness.pin("join")
    all_runs = []
    for turn in turns:
        out = harness.receive(*turn)
        for run in runs(out):
            all_runs.append(run)
            harness.finish(run, result_of("done"))
    (run,) = all_runs
    assert decoded(run.items[0].arguments) == ["fixed", "A", "B", "C"]
    assert harness.state.pending_requests() == ()


# -- bounds and debugging --------------------------------------------------------------------------------------


def test_past_the_pending_limit_the_oldest_idle_request_is_evicted(monkeypatch):
    monkeypatch.setattr(state_module, "MAX_PENDING_REQUESTS", 3)
    harness = Harness()
    harness.pin("f")
    harness.pin("join", request_id="pin-2")
    running = only_run(harness.receive(make_schedule(SINGLE, "f", "busy"), make_trigger("busy", "f", BEGIN)))
    harness.receive(make_trigger("r1", "join", "a", 1), make_trigger("r2", "join", "a", 2))
    harness.receive(make_trigger("r3", "join", "a", 3))
    assert harness.state.pending_requests() == (("busy", "f"), ("r2", "join"), ("r3", "join"))
    assert harness.state.counters().requests_evicted == 1
    assert stores(harness.finish(running, result_of(0)))[0].key == "busy"


def test_pinning_a_function_that_is_still_unpinning_takes_it_back_without_a_reload():
    harness = Harness()
    harness.pin("f")
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1")))
    harness.receive(UnpinFunction("f"))
    out = harness.receive(PinFunction("f", PIN_REPLY, "again"))
    assert not [i for i in out if isinstance(i, LoadFunctionInstruction)]
    assert sends(out, GenericResponse)[0].message == GenericResponse(True, "again")
    assert not [i for i in harness.finish(run, result_of(1)) if isinstance(i, UnloadFunctionInstruction)]
    assert harness.state.pinned_functions() == ("f",)


def test_the_story_of_a_request_tells_what_happened_to_it():
    harness = Harness()
    harness.pin("f")
    harness.receive(make_trigger("r1", "f", BEGIN))
    harness.advance(1.0)
    run = only_run(harness.receive(make_schedule(SINGLE, "f", "r1")))
    harness.finish(run, result_of(1))
    assert harness.state.story("r1") == [
        ("f", "trigger from BEGIN", 0.0),
        ("f", "schedule", 1.0),
        ("f", f"run {run.run_id}", 1.0),
        ("f", "delivered", 1.0),
    ]


# -- causal requests ---------------------------------------------------------------------------------------------


def test_a_causal_request_carries_its_session_and_hands_it_downstream():
    chain3 = make_dag("chain3", ["f", "g", "h"], [("f", "g"), ("g", "h")])
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(
        chain3, "f", "r1", locations={"f": NODE, "g": OTHER, "h": OTHER}, consistency=ConsistencyType.MULTI
    )
    later_arguments = (values.encode("for g"),)
    schedule = dataclasses.replace(schedule, arguments={"g": later_arguments})
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    (item,) = run.items
    assert item.causal is not None
    assert item.causal.session_id == "r1"
    assert item.causal.consistency == ConsistencyType.MULTI
    assert not item.causal.sink
    # Downstream functions' fixed arguments travel along: their references form the future read set.
    assert item.causal.future_arguments == (later_arguments, ())
    kept = {"tcp://10.0.0.5:7250": (KeyVersion("k", VectorClock.of({"w": 1})),)}
    floors = (KeyVersion("k", VectorClock.of({"w": 1})),)
    out = harness.finish(run, RunSucceeded(arguments=(values.encode(1),), session=SessionMetadata(kept, floors)))
    (send,) = sends(out)
    assert dict(send.message.version_locations) == kept
    assert send.message.dependencies == floors


def test_fan_in_causal_triggers_join_their_sessions_and_the_sink_knows_its_output_key():
    harness = Harness()
    harness.pin("join")
    schedule = make_schedule(FAN_IN, "join", "r1", consistency=ConsistencyType.SINGLE, output_key="out")
    triggers = [
        DagTrigger("r1", "join", source, (values.encode(n),), {}, (KeyVersion("k", VectorClock.of({source: 1})),))
        for n, source in enumerate(("a", "b", "c"))
    ]
    run = only_run(harness.receive(schedule, *triggers))
    (item,) = run.items
    assert item.causal.sink
    assert item.causal.output_key == "out"
    assert item.causal.metadata == SessionMetadata({}, (KeyVersion("k", VectorClock.of({"a": 1, "b": 1, "c": 1})),))


def test_causal_requests_never_batch_and_a_causally_stored_result_is_not_stored_again():
    dag = make_dag("batched", ["f"], batching=["f"])
    harness = Harness()
    harness.pin("f", batching=True)
    messages = []
    for i in range(2):
        schedule = make_schedule(dag, "f", f"r{i}", consistency=ConsistencyType.MULTI, output_key=f"out{i}")
        messages += [schedule, make_trigger(f"r{i}", "f", BEGIN)]
    out = harness.receive(*messages)
    assert [len(run.items) for run in runs(out)] == [1, 1]
    assert not any(run.batching for run in runs(out))
    stored = RunSucceeded(result=EncodedResult(values.encode("x")), stored=True)
    assert stores(harness.finish(runs(out)[0], stored)) == []


def test_normal_requests_hand_on_the_keys_written_upstream():
    harness = Harness()
    harness.pin("f")
    harness.pin("g", request_id="pin-2")
    run = only_run(harness.receive(make_schedule(CHAIN, "f", "r1"), make_trigger("r1", "f", BEGIN)))
    assert run.items[0].causal is None
    assert run.items[0].upstream_writes == ()
    written = SessionMetadata({}, (KeyVersion("k", VectorClock()),))
    out = harness.finish(run, RunSucceeded(arguments=(values.encode(1),), session=written))
    (send,) = sends(out)
    assert send.message.dependencies == (KeyVersion("k", VectorClock()),)
    downstream = only_run(harness.receive(make_schedule(CHAIN, "g", "r1"), send.message))
    assert downstream.items[0].upstream_writes == ("k",)


# -- storage triggers' runs --------------------------------------------------------------------------------------

TRIGGER_ACK = "tcp://10.0.0.9:6960"


@pytest.mark.parametrize("succeeded", [True, False])
def test_the_executor_acknowledges_a_run_instead_of_delivering_a_result(succeeded):
    harness = Harness()
    firing = TriggerFiring("id1", "t", "f", "in/1", LatticeType.LWW, b"p", 1, TRIGGER_ACK)
    (run,) = harness.receive(FunctionCall("f", response_key="id1", trigger=firing))
    assert isinstance(run, RunOneShotInstruction)
    error = RemoteExecutionError("ValueError: no", "builtins.ValueError", function="f")
    outcome = RunSucceeded(result=EncodedResult(values.encode(None))) if succeeded else RunFailed(error)
    out = harness.step(OneShotDoneEvent(run.run_id, outcome, 0.01))
    assert not [i for i in out if isinstance(i, StoreResultInstruction)]
    (ack,) = [i for i in out if isinstance(i, SendInstruction)]
    assert ack.address == TRIGGER_ACK
    assert ack.message.id == "id1"
    assert (ack.message.error == "") is succeeded


# -- trace hops ------------------------------------------------------------------------------------------------


def test_each_finished_stage_leaves_a_hop_with_its_queue_wait_reads_and_for_the_sink_the_whole_request():
    harness = Harness()
    harness.pin("f")
    harness.pin("g")
    schedule = make_schedule(CHAIN, "f", "r1", start_time=100.0, placed_by="10.0.0.7")
    run = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN)))
    harness.advance(0.5)
    read = ReadRecord("k", "cache", True, "lww x")
    harness.step(DagRunDoneEvent(run.run_id, (arguments_of(1),), 0.2, 100.6, (read,)))
    (hop,) = harness.state.take_hops()
    assert (hop.request_id, hop.role, hop.node, hop.function, hop.dag) == ("r1", "executor", NODE, "f", "chain")
    assert hop.start == pytest.approx(100.4)
    assert (hop.duration, hop.reads, hop.end_to_end, hop.ok) == (0.2, (read,), 0.0, True)
    assert hop.queue == pytest.approx(0.3)  # arrived at 0, ran from 0.3 to 0.5
    run = only_run(harness.receive(make_schedule(CHAIN, "g", "r1", start_time=100.0), make_trigger("r1", "g", "f", 1)))
    harness.step(DagRunDoneEvent(run.run_id, (result_of(2),), 0.1, 100.9))
    (sink,) = harness.state.take_hops()
    assert (sink.function, sink.end_to_end) == ("g", pytest.approx(0.9))
    assert harness.state.take_hops() == []


def test_a_failed_stage_hop_carries_the_error_and_its_remote_traceback():
    harness = Harness()
    harness.pin("f")
    harness.state.take_hops()
    run = only_run(
        harness.receive(make_schedule(SINGLE, "f", "r9", placed_by="10.0.0.7"), make_trigger("r9", "f", BEGIN))
    )
    error = RemoteExecutionError(
        "ZeroDivisionError: division by zero", "builtins.ZeroDivisionError", remote_traceback="tb"
    )
    harness.finish(run, RunFailed(error), duration=0.01, wall_time=5.0)
    (hop,) = harness.state.take_hops()
    assert (hop.request_id, hop.ok, hop.error, hop.message, hop.traceback) == (
        "r9",
        False,
        "RemoteExecutionError",
        "ZeroDivisionError: division by zero",
        "tb",
    )


def test_a_one_shot_call_leaves_a_hop_under_its_response_key():
    harness = Harness()
    (run,) = harness.receive(FunctionCall("square", response_key="k7", response_address=CLIENT))
    harness.step(OneShotDoneEvent(run.run_id, result_of(4), 0.003, 50.0))
    (hop,) = harness.state.take_hops()
    assert (hop.request_id, hop.function, hop.dag, hop.end_to_end, hop.start) == (
        "k7",
        "square",
        "",
        0.003,
        pytest.approx(49.997),
    )


def test_hops_nobody_takes_are_bounded():
    harness = Harness()
    for index in range(state_module.MAX_PENDING_HOPS + 10):
        (run,) = harness.receive(FunctionCall("f", response_key=f"k{index}", response_address=CLIENT))
        harness.step(OneShotDoneEvent(run.run_id, result_of(index)))
    hops = harness.state.take_hops()
    assert len(hops) == state_module.MAX_PENDING_HOPS
    assert hops[-1].request_id == f"k{state_module.MAX_PENDING_HOPS + 9}"


def test_the_scheduler_that_placed_a_dag_request_hears_when_its_sink_delivers_or_a_stage_fails_it():
    harness = Harness()
    harness.pin("f")
    harness.pin("g")
    schedule = make_schedule(CHAIN, "g", "r1", response_address=CLIENT, placed_by="10.0.0.7")
    run = only_run(harness.receive(schedule, make_trigger("r1", "g", "f", 1)))
    (done,) = sends(harness.finish(run, result_of(2)), ThreadStatus)
    assert (done.address, done.message.finished) == ("tcp://10.0.0.7:5007", ("r1",))
    # A stage that fails ends the request too.
    schedule = make_schedule(CHAIN, "f", "r2", response_address=CLIENT, placed_by="10.0.0.7")
    run = only_run(harness.receive(schedule, make_trigger("r2", "f", BEGIN)))
    error = RemoteExecutionError("ValueError: no", "builtins.ValueError", function="f")
    (done,) = sends(harness.finish(run, RunFailed(error)), ThreadStatus)
    assert done.message.finished == ("r2",)
    # A stage handing its result downstream does not.
    schedule = make_schedule(CHAIN, "f", "r3", response_address=CLIENT, placed_by="10.0.0.7")
    run = only_run(harness.receive(schedule, make_trigger("r3", "f", BEGIN)))
    assert sends(harness.finish(run, arguments_of(1)), ThreadStatus) == []


def test_a_run_item_carries_its_deadline_and_the_key_callers_cancel_it_by():
    harness = Harness()
    harness.pin("f")
    schedule = make_schedule(SINGLE, "f", "r1", output_key="out", deadline=123.0)
    (item,) = only_run(harness.receive(schedule, make_trigger("r1", "f", BEGIN))).items
    assert (item.deadline, item.names) == (123.0, ("r1", "out"))
