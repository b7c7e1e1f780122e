"""The scheduler's pure state machine: events in, instructions out; no sockets, a fake clock, a seeded rng.

KVS instructions are executed against the KVS's real in-memory storage engine (merges included), so registrations,
tombstones and recovery are checked against real lattice semantics. ``validate()`` runs after every event.
"""

import pickle
import random
from collections import deque
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudburst import keys
from cloudburst.config import SchedulerConfig
from cloudburst.errors import DagNotFound, DeadlineExceeded, DecodeError, ExecutorLost, NoResources
from cloudburst.kvs.engine import MemoryEngine
from cloudburst.kvs.state import reads_as_missing
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol import codec, values
from cloudburst.protocol.codec import decode_lattice
from cloudburst.protocol.messages import LatticeType, SerializerType
from cloudburst.protocol.runtime_messages import (
    BEGIN,
    CallResult,
    CancelRequest,
    ClusterStatus,
    Continuation,
    Dag,
    DagCall,
    DagLease,
    DagSchedule,
    DagStatistics,
    DagTrigger,
    EncodedValue,
    ErrorCode,
    ExecutorStatistics,
    ExecutorType,
    Function,
    FunctionCall,
    FunctionLease,
    FunctionLocation,
    FunctionReference,
    FunctionStatistics,
    GenericResponse,
    Link,
    PinFunction,
    ResultDelivery,
    SchedulerStatus,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.trigger_messages import TriggerFiring
from cloudburst.scheduler import state as state_module
from cloudburst.scheduler.state import (
    CancelEvent,
    ConnectEvent,
    ConnectReply,
    DagCallEvent,
    DagCreateEvent,
    DagDeleteEvent,
    DagLeaseEvent,
    FunctionCallEvent,
    FunctionCreateEvent,
    FunctionLeaseEvent,
    FunctionListEvent,
    FunctionListReply,
    InFlightQueryEvent,
    InFlightReply,
    InternalMessageEvent,
    KvsReadDoneEvent,
    KvsReadInstruction,
    KvsWriteDoneEvent,
    KvsWriteInstruction,
    ListSchedulersInstruction,
    PushFailedEvent,
    PushInstruction,
    RecoverEvent,
    ReplyInstruction,
    SchedulersListedEvent,
    SchedulerState,
    SchedulerTickEvent,
    StatusQueryEvent,
)
from cloudburst.testing import FakeClock

HOST = "10.0.0.1"
PEER = "10.0.0.2"
INTERNAL = f"tcp://{HOST}:5007"
PERIOD = 5.0
PIN_TIMEOUT = 10.0
A = ("10.0.1.1", 0)
B = ("10.0.1.2", 0)
C = ("10.0.1.3", 0)
G = ("10.0.2.1", 0)


def endpoint(executor):
    return f"tcp://{executor[0]}:{4000 + executor[1]}"


def loc(executor):
    return f"{executor[0]}:{executor[1]}"


def make_dag(name, functions, links=(), colocated=(), gpu=(), batching=()):
    return Dag(
        name,
        tuple(FunctionReference(f, gpu=f in gpu, batching=f in batching) for f in functions),
        tuple(Link(s, t) for s, t in links),
        tuple(colocated),
    )


def value(text):
    return EncodedValue(text.encode(), SerializerType.STRING)


class Harness:
    """Drives one :class:`SchedulerState` the way the server does, collecting what it sends.

    KVS reads and writes run against ``kvs`` (a real storage engine) unless ``kvs_error`` is set, in which case they
    fail with it, as the network client would.
    """

    def __init__(
        self, kvs=None, *, host=HOST, peers=(HOST, PEER), kvs_routing="tcp://10.0.0.9:6450", seed=7, management=None
    ):
        self.clock = FakeClock(start=100.0)
        self.kvs = kvs if kvs is not None else MemoryEngine()
        self.kvs_error = None
        self.config = SchedulerConfig(
            host=host,
            kvs_routing=kvs_routing,
            peers=peers,
            report_period=PERIOD,
            pin_timeout=PIN_TIMEOUT,
            management=management,
        )
        self.state = SchedulerState(self.config, random.Random(seed))
        self.replies = {}
        self.kvs_reads = []
        self.kvs_writes = []
        #: How many times the state asked for the management service's scheduler list.
        self.list_queries = 0
        self._request_ids = iter(range(1, 1_000_000))

    # -- plumbing -------------------------------------------------------------------------------------------------

    def feed(self, event):
        """Handles ``event`` and everything its KVS operations lead to; returns the pushes, in order."""
        pushes = []
        pending = deque(self._handle(event))
        while pending:
            instruction = pending.popleft()
            if isinstance(instruction, KvsReadInstruction | KvsWriteInstruction):
                pending.extendleft(reversed(self._handle(self._run_kvs(instruction))))
            elif isinstance(instruction, ReplyInstruction):
                assert instruction.request_id not in self.replies, "a request was answered twice"
                self.replies[instruction.request_id] = instruction.reply
            elif isinstance(instruction, ListSchedulersInstruction):
                self.list_queries += 1
            else:
                assert isinstance(instruction, PushInstruction)
                pushes.append(instruction)
        return pushes

    def _handle(self, event):
        out = self.state.handle(event, self.clock.now(), self.clock.wall_ns())
        self.state.validate()
        return out

    def _run_kvs(self, instruction):
        if isinstance(instruction, KvsReadInstruction):
            self.kvs_reads.append(instruction.keys)
            if self.kvs_error is not None:
                return KvsReadDoneEvent(instruction.token, error=self.kvs_error)
            stored = self.kvs.get_many(list(instruction.keys))
            decoded = [None if item is None else decode_lattice(item.lattice_type, item.payload) for item in stored]
            # As the KVS answers: a tombstone (an empty LWW value) reads as a missing key.
            lattices = {
                key: None if lattice is None or reads_as_missing(lattice) else lattice
                for key, lattice in zip(instruction.keys, decoded, strict=True)
            }
            return KvsReadDoneEvent(instruction.token, lattices=lattices)
        self.kvs_writes.append(dict(instruction.items))
        if self.kvs_error is not None:
            return KvsWriteDoneEvent(instruction.token, error=self.kvs_error)
        outcomes = self.kvs.merge_many(list(instruction.items.items()))
        assert outcomes == [None] * len(outcomes)
        return KvsWriteDoneEvent(instruction.token)

    def request(self, make_event):
        """Sends a client request built by ``make_event(request_id)``; returns ``(request_id, pushes)``."""
        request_id = next(self._request_ids)
        return request_id, self.feed(make_event(request_id))

    def ask(self, make_event):
        """A client request that is answered at once: returns ``(reply, pushes)``."""
        request_id, pushes = self.request(make_event)
        assert request_id in self.replies, "the request was not answered"
        return self.replies.pop(request_id), pushes

    def tell(self, message):
        return self.feed(InternalMessageEvent(message))

    def tick(self, seconds=0.0):
        self.clock.advance(seconds)
        return self.feed(SchedulerTickEvent())

    def stored(self, key):
        item = self.kvs.get_many([key])[0]
        return None if item is None else decode_lattice(item.lattice_type, item.payload)

    # -- scenarios ------------------------------------------------------------------------------------------------

    def executor(self, executor, functions=(), *, gpu=False, incarnation="one", utilization=0.0, queued=0, finished=()):
        status = ThreadStatus(
            executor[0],
            executor[1],
            tuple(functions),
            utilization=utilization,
            type=ExecutorType.GPU if gpu else ExecutorType.CPU,
            incarnation=incarnation,
            queued=queued,
            finished=tuple(finished),
        )
        return self.tell(status)

    def call(self, name="f"):
        """A one-shot call: ``(response key, executor it was pushed to)``."""
        reply, [push] = self.ask(lambda rid: FunctionCallEvent(rid, FunctionCall(name)))
        return reply.response_id, next(e for e in (A, B, C, G) if endpoint(e) == push.address)

    def register(self, *names):
        for name in names:
            reply, _ = self.ask(
                lambda rid, name=name: FunctionCreateEvent(rid, Function(name, b"body of " + name.encode()))
            )
            assert reply == GenericResponse(success=True)

    def create_dag(self, dag, *, accept=True):
        """Starts a DAG creation; with ``accept``, every pin (including retries) is accepted by its executor."""
        request_id, pushes = self.request(lambda rid: DagCreateEvent(rid, dag))
        placements = {}
        while accept and (pins := [p for p in pushes if isinstance(p.message, PinFunction)]):
            pushes = []
            for push in pins:
                placements[push.message.name] = push.address
                pushes += self.tell(GenericResponse(success=True, response_id=push.message.request_id))
        return request_id, placements, pushes


def pins_of(pushes):
    return [(p.address, p.message) for p in pushes if isinstance(p.message, PinFunction)]


@pytest.fixture
def h():
    return Harness()


@pytest.fixture
def cluster(h):
    """Three CPU executors and three registered functions."""
    for executor in (A, B, C):
        h.executor(executor)
    h.register("f", "g", "k")
    return h


# -- connect, registration, listing ------------------------------------------------------------------------------


def test_connect_answers_a_bare_host_for_the_default_routing_port(h):
    reply, _ = h.ask(ConnectEvent)
    assert reply == ConnectReply("10.0.0.9")


def test_connect_answers_the_full_endpoint_for_another_port():
    h = Harness(kvs_routing="tcp://127.0.0.1:40001")
    reply, _ = h.ask(ConnectEvent)
    assert reply == ConnectReply("tcp://127.0.0.1:40001")


def test_function_registration_writes_the_body_and_the_index_and_records_the_version(h):
    h.register("square")
    stored = h.stored(keys.function_key("square"))
    assert isinstance(stored, LwwLattice)
    assert stored.value == b"body of square"
    assert h.stored(keys.FUNCTION_INDEX) == SetLattice(frozenset({b"funcs/square"}))
    assert h.state.functions() == {"square": stored.timestamp}


def test_re_registration_gets_a_newer_version(h):
    h.register("square")
    first = h.state.functions()["square"]
    h.clock.advance(1)
    h.register("square")
    assert h.state.functions()["square"] > first


@pytest.mark.parametrize(
    ("function", "message"),
    [(Function("", b"x"), "needs a name"), (Function("f", b""), "'f' has an empty body")],
)
def test_bad_registrations_are_invalid_requests(h, function, message):
    reply, _ = h.ask(lambda rid: FunctionCreateEvent(rid, function))
    assert reply.error == ErrorCode.INVALID_REQUEST
    assert message in reply.error_message
    assert h.kvs_writes == []


def test_registration_reports_a_kvs_failure(h):
    h.kvs_error = DeadlineExceeded("no answer")
    reply, _ = h.ask(lambda rid: FunctionCreateEvent(rid, Function("f", b"x")))
    assert not reply.success
    assert "cannot register function 'f'" in reply.error_message
    assert "no answer" in reply.error_message
    assert h.state.functions() == {}


def test_listing_filters_by_prefix_and_strips_the_namespace(h):
    h.register("square", "sqrt", "cube")
    assert h.ask(lambda rid: FunctionListEvent(rid, ""))[0] == FunctionListReply(("cube", "sqrt", "square"))
    assert h.ask(lambda rid: FunctionListEvent(rid, "sq"))[0] == FunctionListReply(("sqrt", "square"))
    assert h.ask(lambda rid: FunctionListEvent(rid, "zzz"))[0] == FunctionListReply(())


def test_listing_reads_the_index_so_a_second_scheduler_sees_every_function(h):
    h.register("square")
    other = Harness(h.kvs, host="10.0.0.3")
    assert other.ask(lambda rid: FunctionListEvent(rid, ""))[0] == FunctionListReply(("square",))


def test_listing_falls_back_to_known_functions_when_the_kvs_fails(h):
    h.register("square")
    h.kvs_error = DeadlineExceeded("down")
    assert h.ask(lambda rid: FunctionListEvent(rid, ""))[0] == FunctionListReply(("square",))


def test_listing_an_empty_kvs_is_empty(h):
    assert h.ask(lambda rid: FunctionListEvent(rid, ""))[0] == FunctionListReply(())


# -- one-shot calls ----------------------------------------------------------------------------------------------


def test_call_is_pushed_to_an_executor_with_a_fresh_response_key_and_the_version(cluster):
    arguments = (EncodedValue(b"\x80not a pickle at all", SerializerType.DEFAULT),)
    reply, pushes = cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f", arguments)))
    assert reply.success
    assert reply.response_id
    [push] = pushes
    assert push.address in {endpoint(e) for e in (A, B, C)}
    assert push.message == FunctionCall(
        "f",
        arguments,
        response_key=reply.response_id,
        function_version=cluster.state.functions()["f"],
        placed_by=HOST,  # the executor tells this scheduler when the call is done
        stamp=1_700_000_000_000_000,  # first placed now: its LWW writes are stamped from here, in every run
    )


def test_call_keeps_a_given_response_key(cluster):
    reply, pushes = cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f", response_key="mine")))
    assert reply.response_id == "mine"
    assert pushes[0].message.response_key == "mine"


def test_calls_get_distinct_response_keys(cluster):
    keys_seen = {cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f")))[0].response_id for _ in range(20)}
    assert len(keys_seen) == 20


def test_call_of_an_unknown_function_is_func_not_found(cluster):
    reply, pushes = cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("nope")))
    assert reply.error == ErrorCode.FUNC_NOT_FOUND
    assert reply.error_message == "no function named 'nope' is registered"
    assert pushes == []


def test_call_of_a_function_registered_through_another_scheduler_is_found_in_the_kvs(cluster):
    other = Harness(cluster.kvs, host="10.0.0.3")
    other.register("elsewhere")
    reply, pushes = cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("elsewhere")))
    assert reply.success
    assert pushes[0].message.function_version == other.state.functions()["elsewhere"]
    # Learned once: the next call needs no KVS round trip.
    reads = len(cluster.kvs_reads)
    cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("elsewhere")))
    assert len(cluster.kvs_reads) == reads


def test_call_without_executors_is_no_resources(h):
    h.register("f")
    reply, pushes = h.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f")))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert "no CPU executor" in reply.error_message
    assert pushes == []


def test_calls_never_go_to_gpu_executors(h):
    h.register("f")
    h.executor(G, gpu=True)
    assert h.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f")))[0].error == ErrorCode.NO_RESOURCES
    h.executor(A)
    for _ in range(20):
        assert h.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f")))[1][0].address == endpoint(A)


def test_calls_prefer_executors_without_pins_but_use_pinned_ones_when_all_are(cluster):
    cluster.executor(A, ["g"])
    cluster.executor(B, ["k"])
    for _ in range(30):  # each call done before the next: the unpinned executor is always free
        key, target = cluster.call()
        assert target == C
        cluster.executor(C, finished=[key])
    cluster.executor(C, ["g"])
    targets = set()
    for _ in range(60):
        key, target = cluster.call()
        targets.add(target)
        cluster.executor(target, ["g"] if target in (A, C) else ["k"], finished=[key])
    assert targets == {A, B, C}


def test_calls_go_to_idle_executors_first_so_functions_that_wait_for_each_other_all_run(cluster):
    # Three calls at once take the three executors, whatever the random source says.
    first = [cluster.call() for _ in range(3)]
    assert {target for _, target in first} == {A, B, C}
    cluster.call()  # a fourth waits behind one of them
    # The executor that reports its call done is the one free executor for the next call.
    key, target = first[1]
    cluster.executor(target, finished=[key])
    assert cluster.call()[1] == target


def test_idle_executors_with_pins_take_calls_before_busy_ones_without(cluster):
    cluster.executor(A, ["g"])
    _, first = cluster.call()
    _, second = cluster.call()
    assert {first, second} == {B, C}
    assert cluster.call()[1] == A  # pinned but idle, rather than queued behind a running call


def test_an_executors_own_report_of_its_queue_counts_too(cluster):
    # Calls sent straight to it by clients (leases) or by other schedulers show in its reports.
    cluster.executor(A, queued=2)
    cluster.executor(B, queued=1)
    assert cluster.call()[1] == C
    assert cluster.call()[1] in (B, C)


def test_calls_lost_with_a_restarted_executor_run_again_with_the_next_attempt(cluster):
    placed = [cluster.call() for _ in range(6)]
    lost = sorted(key for key, target in placed if target == A)
    assert len(lost) == 2
    pushes = cluster.executor(A, incarnation="two")  # its process died: what it ran is gone
    again = sorted((p.message.response_key, p.message.attempt) for p in pushes if isinstance(p.message, FunctionCall))
    assert again == [(key, 2) for key in lost]
    # Reported done, a call is never run again.
    finished = [key for key, target in placed if target == B]
    cluster.executor(B, finished=finished)
    pushes = cluster.executor(B, incarnation="two")
    assert [p for p in pushes if isinstance(p.message, FunctionCall)] == []


def test_calls_avoid_backed_off_executors(h):
    h.register("f")
    h.executor(A, utilization=0.95)
    h.executor(B, utilization=0.1)
    for _ in range(30):
        key, target = h.call()
        assert target == B
        h.executor(B, utilization=0.1, finished=[key])


def test_a_backed_off_idle_executor_takes_a_call_rather_than_it_queuing(h):
    h.register("f")
    h.executor(A, utilization=0.95)
    h.executor(B, utilization=0.1)
    assert h.call()[1] == B
    assert h.call()[1] == A


def test_each_error_reply_is_its_own_object(cluster):
    """The original mutated one shared response, so a rejection carried the last code written anywhere."""
    missing, _ = cluster.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("nope")))
    no_dag, _ = cluster.ask(lambda rid: DagCallEvent(rid, DagCall("nope")))
    assert missing.error == ErrorCode.FUNC_NOT_FOUND
    assert no_dag.error == ErrorCode.NO_SUCH_DAG
    assert missing is not no_dag


# -- DAG creation ------------------------------------------------------------------------------------------------


def test_dag_creation_pins_every_function_and_answers_only_once_all_are_pinned(cluster):
    dag = make_dag("pipe", ["f", "g", "k"], [("f", "g"), ("g", "k")], batching=["g"])
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, dag))
    pins = pins_of(pushes)
    assert [pin.name for _, pin in pins] == ["f", "g", "k"]
    # Fewest pins first: three idle executors get one function each.
    assert {address for address, _ in pins} == {endpoint(e) for e in (A, B, C)}
    assert all(pin.response_address == INTERNAL for _, pin in pins)
    assert [pin.batching for _, pin in pins] == [False, True, False]
    assert len({pin.request_id for _, pin in pins}) == 3
    # The loop is not blocked while pins are out: other requests are answered at once.
    assert cluster.ask(ConnectEvent)[0] == ConnectReply("10.0.0.9")
    for _, pin in pins[:2]:
        cluster.tell(GenericResponse(success=True, response_id=pin.request_id))
    assert request_id not in cluster.replies
    assert cluster.stored(keys.dag_key("pipe")) is None
    cluster.tell(GenericResponse(success=True, response_id=pins[2][1].request_id))
    assert cluster.replies.pop(request_id) == GenericResponse(success=True)
    stored = cluster.stored(keys.dag_key("pipe"))
    assert codec.decode_dag(stored.value) == dag
    assert cluster.stored(keys.DAG_INDEX) == SetLattice(frozenset({b"pipe"}))
    assert cluster.state.dags() == {"pipe": dag}
    for address, pin in pins:
        executor = next(e for e in (A, B, C) if endpoint(e) == address)
        assert cluster.state.locations(pin.name) == (executor,)


def test_pin_replies_are_matched_by_request_id_in_any_order(cluster):
    dag = make_dag("pipe", ["f", "g"], [("f", "g")])
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, dag))
    pins = pins_of(pushes)
    # A stray reply (an old pin, a forged one) is ignored.
    cluster.tell(GenericResponse(success=True, response_id="not-a-pin"))
    for _, pin in reversed(pins):
        cluster.tell(GenericResponse(success=True, response_id=pin.request_id))
    assert cluster.replies.pop(request_id).success


def test_a_refused_pin_is_retried_on_another_executor(cluster):
    dag = make_dag("solo", ["f"])
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, dag))
    [(first_address, first)] = pins_of(pushes)
    retry = cluster.tell(GenericResponse(False, first.request_id, ErrorCode.NO_RESOURCES, "full"))
    [(second_address, second)] = pins_of(retry)
    assert second_address != first_address
    assert second.name == "f"
    assert second.request_id != first.request_id
    cluster.tell(GenericResponse(success=True, response_id=second.request_id))
    assert cluster.replies.pop(request_id).success
    assert cluster.state.story("solo")[0][0] == "creation started"


def test_a_timed_out_executor_is_not_tried_again_for_that_dag(cluster):
    dag = make_dag("pipe", ["f", "g"], [("f", "g")])
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, dag))
    pins = {pin.name: (address, pin) for address, pin in pins_of(pushes)}
    silent_address, _silent_pin = pins["f"]
    cluster.tell(GenericResponse(success=True, response_id=pins["g"][1].request_id))
    assert cluster.tick(PIN_TIMEOUT - 0.5) == []
    [(retry_address, retry)] = pins_of(cluster.tick(1.0))
    assert retry_address not in (silent_address, pins["g"][0])
    assert cluster.state.counters().pins_timed_out == 1
    [(third_address, third)] = pins_of(cluster.tell(GenericResponse(False, retry.request_id, ErrorCode.NO_RESOURCES)))
    assert third_address == pins["g"][0]
    cluster.tell(GenericResponse(False, third.request_id, ErrorCode.NO_RESOURCES, "busy"))
    # The only executor left for "f" is the one that timed out: it is not asked again, so the DAG cannot be placed.
    reply = cluster.replies.pop(request_id)
    assert reply.error == ErrorCode.NO_RESOURCES
    assert "no CPU executor can pin function 'f' of DAG 'pipe'" in reply.error_message
    assert "busy" in reply.error_message
    assert f"no answer within 10s from {loc(next(e for e in (A, B, C) if endpoint(e) == silent_address))}" in (
        reply.error_message
    )


def test_a_late_acceptance_after_a_timeout_is_undone(cluster):
    dag = make_dag("solo", ["f"])
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, dag))
    [(late_address, late)] = pins_of(pushes)
    [(_, retry)] = pins_of(cluster.tick(PIN_TIMEOUT))
    cluster.tell(GenericResponse(success=True, response_id=retry.request_id))
    assert cluster.replies.pop(request_id).success
    undo = cluster.tell(GenericResponse(success=True, response_id=late.request_id))
    assert undo == [PushInstruction(late_address, UnpinFunction("f"))]
    assert cluster.state.counters().late_pins_undone == 1


def test_running_out_of_executors_unpins_what_was_pinned_and_is_no_resources(h):
    h.register("f", "g")
    h.executor(A)
    dag = make_dag("pipe", ["f", "g"], [("f", "g")])
    request_id, pushes = h.request(lambda rid: DagCreateEvent(rid, dag))
    pins = {pin.name: pin for _, pin in pins_of(pushes)}
    h.tell(GenericResponse(success=True, response_id=pins["f"].request_id))
    assert h.state.locations("f") == (A,)
    undo = h.tell(GenericResponse(False, pins["g"].request_id, ErrorCode.NO_RESOURCES, "one function per executor"))
    reply = h.replies.pop(request_id)
    assert reply.error == ErrorCode.NO_RESOURCES
    assert reply.error_message == (
        "no CPU executor can pin function 'g' of DAG 'pipe' "
        "(last refusal: 10.0.1.1:0 refused 'g': one function per executor)"
    )
    assert undo == [PushInstruction(endpoint(A), UnpinFunction("f"))]
    assert h.state.locations("f") == ()
    assert h.state.dags() == {}
    assert h.stored(keys.dag_key("pipe")) is None


def test_no_executors_at_all_is_no_resources_at_once(h):
    h.register("f")
    reply, pushes = h.ask(lambda rid: DagCreateEvent(rid, make_dag("solo", ["f"])))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert pushes == []


def test_gpu_functions_are_pinned_only_on_gpu_executors_and_others_only_on_cpu(cluster):
    cluster.executor(G, gpu=True)
    dag = make_dag("vision", ["f", "g"], [("f", "g")], gpu=["g"])
    request_id, placements, _ = cluster.create_dag(dag)
    assert cluster.replies.pop(request_id).success
    assert placements["g"] == endpoint(G)
    assert placements["f"] != endpoint(G)


def test_gpu_functions_without_gpu_executors_are_no_resources(cluster):
    reply, _ = cluster.ask(lambda rid: DagCreateEvent(rid, make_dag("vision", ["g"], gpu=["g"])))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert "no GPU executor can pin function 'g'" in reply.error_message


def test_colocated_functions_are_pinned_on_one_node(h):
    h.register("f", "g", "k")
    for executor in [("10.0.3.1", 0), ("10.0.3.1", 1), ("10.0.3.2", 0), ("10.0.3.2", 1), ("10.0.3.3", 0)]:
        h.executor(executor)
    for seed in range(5):
        h.state.policy.rng.seed(seed)
        dag = make_dag(f"co{seed}", ["f", "g", "k"], [("f", "g"), ("g", "k")], colocated=["f", "g"])
        request_id, placements, _ = h.create_dag(dag)
        assert h.replies.pop(request_id).success
        assert placements["f"].rsplit(":", 1)[0] == placements["g"].rsplit(":", 1)[0]


def test_an_existing_dag_is_dag_already_exists(cluster):
    dag = make_dag("solo", ["f"])
    request_id, _, _ = cluster.create_dag(dag)
    assert cluster.replies.pop(request_id).success
    reply, pushes = cluster.ask(lambda rid: DagCreateEvent(rid, dag))
    assert reply.error == ErrorCode.DAG_ALREADY_EXISTS
    assert reply.error_message == "a DAG named 'solo' already exists"
    assert pushes == []


def test_a_dag_created_through_another_scheduler_is_dag_already_exists(cluster):
    other = Harness(cluster.kvs, host="10.0.0.3")
    other.executor(A)
    request_id, _, _ = other.create_dag(make_dag("solo", ["f"]))
    assert other.replies.pop(request_id).success
    reply, _ = cluster.ask(lambda rid: DagCreateEvent(rid, make_dag("solo", ["g"])))
    assert reply.error == ErrorCode.DAG_ALREADY_EXISTS
    assert "solo" in cluster.state.dags()


def test_a_dag_being_created_cannot_be_created_twice(cluster):
    dag = make_dag("solo", ["f"])
    cluster.request(lambda rid: DagCreateEvent(rid, dag))
    reply, _ = cluster.ask(lambda rid: DagCreateEvent(rid, dag))
    assert reply.error == ErrorCode.DAG_ALREADY_EXISTS
    assert "being created" in reply.error_message


def test_an_invalid_dag_is_rejected_before_any_kvs_round_trip_or_pin(cluster):
    reply, pushes = cluster.ask(lambda rid: DagCreateEvent(rid, make_dag("loop", ["f", "g"], [("f", "g"), ("g", "f")])))
    assert reply.error == ErrorCode.INVALID_DAG
    assert reply.error_message == "DAG 'loop' is invalid: it has a cycle 'f' -> 'g' -> 'f'"
    assert pushes == []
    assert cluster.kvs_reads == []


def test_a_dag_of_unregistered_functions_is_invalid_and_names_them(cluster):
    reply, pushes = cluster.ask(lambda rid: DagCreateEvent(rid, make_dag("d", ["f", "nope"], [("f", "nope")])))
    assert reply.error == ErrorCode.INVALID_DAG
    assert reply.error_message == "DAG 'd' is invalid: functions 'nope' are not registered"
    assert pushes == []


def test_a_dag_may_use_functions_registered_through_another_scheduler(cluster):
    Harness(cluster.kvs, host="10.0.0.3").register("remote")
    request_id, placements, _ = cluster.create_dag(make_dag("d", ["f", "remote"], [("f", "remote")]))
    assert cluster.replies.pop(request_id).success
    assert set(placements) == {"f", "remote"}


def test_a_kvs_failure_during_creation_is_reported_and_undoes_the_pins(cluster):
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, make_dag("solo", ["f"])))
    [(address, pin)] = pins_of(pushes)
    cluster.kvs_error = DeadlineExceeded("KVS down")
    undo = cluster.tell(GenericResponse(success=True, response_id=pin.request_id))
    reply = cluster.replies.pop(request_id)
    assert reply.error == ErrorCode.NO_RESOURCES
    assert reply.error_message == "cannot store DAG 'solo': the KVS failed: KVS down"
    assert undo == [PushInstruction(address, UnpinFunction("f"))]
    assert cluster.state.dags() == {}


def test_an_executor_leaving_while_its_pin_is_out_moves_the_pin(cluster):
    request_id, pushes = cluster.request(lambda rid: DagCreateEvent(rid, make_dag("solo", ["f"])))
    [(address, pin)] = pins_of(pushes)
    leaving = next(e for e in (A, B, C) if endpoint(e) == address)
    moved = cluster.tell(ThreadStatus(leaving[0], leaving[1], running=False, incarnation="one"))
    [(new_address, new_pin)] = pins_of(moved)
    assert new_address != address
    # Its answer, if it still comes, is too late to count.
    cluster.tell(GenericResponse(success=True, response_id=pin.request_id))
    assert request_id not in cluster.replies
    cluster.tell(GenericResponse(success=True, response_id=new_pin.request_id))
    assert cluster.replies.pop(request_id).success


def test_a_pin_dropped_by_its_executor_before_the_creation_finished_is_made_again(h):
    h.register("f", "g")
    h.executor(A)
    h.executor(B)
    request_id, pushes = h.request(lambda rid: DagCreateEvent(rid, make_dag("pipe", ["f", "g"], [("f", "g")])))
    pins = {pin.name: (address, pin) for address, pin in pins_of(pushes)}
    h.tell(GenericResponse(success=True, response_id=pins["f"][1].request_id))
    dropped_at = A if pins["f"][0] == endpoint(A) else B
    # The executor reports that it no longer hosts "f" (unpinned by someone else meanwhile).
    [(again_address, again)] = pins_of(h.executor(dropped_at, []))
    assert again.name == "f"
    assert again_address != endpoint(dropped_at)
    h.tell(GenericResponse(success=True, response_id=again.request_id))
    h.tell(GenericResponse(success=True, response_id=pins["g"][1].request_id))
    assert h.replies.pop(request_id).success
    assert h.state.locations("f") != (dropped_at,)


def test_gossip_about_one_executor_is_bounded(h, monkeypatch):
    monkeypatch.setattr(state_module, "MAX_GOSSIPED_FUNCTIONS", 2)
    h.tell(SchedulerStatus(function_locations=tuple(FunctionLocation(f, *A) for f in ("f", "g", "k"))))
    assert [f for f in ("f", "g", "k") if h.state.locations(f)] == ["f", "g"]


def test_a_function_pinned_where_it_already_was_is_not_unpinned_when_the_creation_fails(h):
    h.register("f", "g")
    h.executor(A, ["f"])
    request_id, pushes = h.request(lambda rid: DagCreateEvent(rid, make_dag("pipe", ["f", "g"], [("f", "g")])))
    pins = {pin.name: pin for _, pin in pins_of(pushes)}
    h.tell(GenericResponse(success=True, response_id=pins["f"].request_id))
    undo = h.tell(GenericResponse(False, pins["g"].request_id, ErrorCode.NO_RESOURCES, "no"))
    assert h.replies.pop(request_id).error == ErrorCode.NO_RESOURCES
    assert undo == []
    assert h.state.locations("f") == (A,)


# -- DAG calls ---------------------------------------------------------------------------------------------------


@pytest.fixture
def diamond(cluster):
    """DAG ``dia``: f -> g, f -> k, g -> k, with f, g, k pinned on distinct executors."""
    dag = make_dag("dia", ["f", "g", "k"], [("f", "g"), ("f", "k"), ("g", "k")])
    request_id, placements, _ = cluster.create_dag(dag)
    assert cluster.replies.pop(request_id).success
    return cluster, dag, placements


def test_a_dag_call_sends_one_schedule_per_function_and_the_sources_start_on_theirs(diamond):
    h, dag, placements = diamond
    arguments = {"f": (value("x"),), "k": (value("y"), value("z"))}
    call = DagCall("dia", arguments, response_address="tcp://10.0.9.9:9000", output_key="out", client_id="me")
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, call))
    assert reply == GenericResponse(success=True, response_id="out")
    schedules = [p for p in pushes if isinstance(p.message, DagSchedule)]
    assert pushes == schedules  # no separate BEGIN trigger: a source's schedule starts it
    locations = {f: address.removeprefix("tcp://").replace(":4000", ":0") for f, address in placements.items()}
    assert [(p.address, p.message.target_function) for p in schedules] == [(placements[f], f) for f in "fgk"]
    schedule_id = schedules[0].message.id
    for push in schedules:
        schedule = push.message
        assert schedule.id == schedule_id
        assert schedule.dag == dag
        assert dict(schedule.locations) == locations
        assert dict(schedule.arguments) == arguments
        assert schedule.response_address == "tcp://10.0.9.9:9000"
        assert schedule.output_key == "out"
        assert schedule.client_id == "me"
        assert schedule.start_time == h.clock.wall_ns() / 1e9
    assert [p.message.triggers for p in schedules] == [(BEGIN,), ("f",), ("f", "g")]


def test_a_dag_lease_names_per_function_the_executors_it_is_pinned_at_and_lasts_a_report_period(diamond):
    h, dag, placements = diamond
    h.executor(C, ["k"], queued=2)
    reply, pushes = h.ask(lambda rid: DagLeaseEvent(rid, "dia"))
    assert pushes == []
    assert (reply.dag, reply.ttl, reply.error) == (dag, PERIOD, ErrorCode.NO_CLOUDBURST_ERROR)
    assert [lease.function for lease in reply.functions] == ["f", "g", "k"]
    assert [lease.executors for lease in reply.functions] == [(placements[f],) for f in "fgk"]
    assert all(lease.incarnations == ("one",) for lease in reply.functions)
    assert reply.functions[2].queued == ((2,) if placements["k"] == endpoint(C) else (0,))
    assert codec.decode_dag_lease(codec.encode_dag_lease(reply)) == reply
    assert h.state.counters().dag_leases_granted == 1


def test_dag_leases_of_unknown_dags_or_unplaceable_functions_are_refused_with_the_reason(h):
    reply, _ = h.ask(lambda rid: DagLeaseEvent(rid, "nope"))
    assert (reply.error, reply.functions) == (ErrorCode.NO_SUCH_DAG, ())
    assert "no DAG named 'nope'" in reply.error_message
    assert codec.decode_dag_lease(codec.encode_dag_lease(reply)) == reply
    h.executor(A)
    h.register("f")
    request_id, _, _ = h.create_dag(make_dag("solo", ["f"]))
    assert h.replies.pop(request_id).success
    h.tell(ThreadStatus(A[0], A[1], running=False, incarnation="one"))  # its only executor leaves
    reply, _ = h.ask(lambda rid: DagLeaseEvent(rid, "solo"))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert "'f' of DAG 'solo' is not pinned at any live executor" in reply.error_message
    with pytest.raises(DecodeError, match="leases functions"):
        codec.decode_dag_lease(codec.encode_dag_lease(DagLease(make_dag("pair", ["f", "g"]), ())))


def test_requests_sent_straight_to_a_dags_executors_count_as_its_calls():
    h = managed_diamond()
    h.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))
    h.tell(ExecutorStatistics(dags=(DagStatistics("dia", direct_calls=4), DagStatistics("gone", direct_calls=9))))
    (report,) = [p for p in h.tick(PERIOD) if isinstance(p.message, ExecutorStatistics)]
    assert [(dag.name, dag.call_count) for dag in report.message.dags] == [("dia", 5)]
    assert report.message.functions == tuple(FunctionStatistics(f, 5) for f in ("f", "g", "k"))


def test_a_dag_call_without_an_output_key_answers_the_schedule_id(diamond):
    h, _, _ = diamond
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))
    assert reply.success
    assert reply.response_id == pushes[0].message.id


def test_fan_in_triggers_follow_edge_order():
    h = Harness()
    h.executor(A)
    h.register("a", "b", "c")
    dag = make_dag("fan", ["a", "b", "c"], [("b", "c"), ("a", "c")])
    request_id, _, _ = h.create_dag(dag)
    assert h.replies.pop(request_id).success
    _, pushes = h.ask(lambda rid: DagCallEvent(rid, DagCall("fan")))
    schedules = {p.message.target_function: p.message for p in pushes if isinstance(p.message, DagSchedule)}
    assert schedules["c"].triggers == ("b", "a")
    assert [f for f, schedule in schedules.items() if schedule.triggers == (BEGIN,)] == ["a", "b"]


def test_a_call_of_an_unknown_dag_is_no_such_dag_and_records_nothing(cluster):
    reply, pushes = cluster.ask(lambda rid: DagCallEvent(rid, DagCall("ghost")))
    assert reply.error == ErrorCode.NO_SUCH_DAG
    assert reply.error_message == "no DAG named 'ghost' is registered"
    assert pushes == []
    cluster.tick(PERIOD)
    cluster.tick(PERIOD)
    assert cluster.state.statistics().dags == ()


def test_a_function_without_a_live_location_is_no_resources(diamond):
    h, _, placements = diamond
    gone = next(e for e in (A, B, C) if endpoint(e) == placements["g"])
    h.tell(ThreadStatus(gone[0], gone[1], running=False))
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert reply.error_message == "function 'g' of DAG 'dia' is not pinned at any live executor"
    assert pushes == []


def test_arguments_for_functions_outside_the_dag_are_invalid(diamond):
    h, _, _ = diamond
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, DagCall("dia", {"zzz": (value("x"),)})))
    assert reply.error == ErrorCode.INVALID_REQUEST
    assert "'zzz'" in reply.error_message
    assert pushes == []


def test_colocated_dag_calls_pick_executors_on_one_node(h):
    """The original crashed on any call of a DAG with colocated functions."""
    h.register("f", "g")
    nodes = [("10.0.3.1", 0), ("10.0.3.1", 1), ("10.0.3.2", 0), ("10.0.3.2", 1)]
    for executor in nodes:
        h.executor(executor, ["f", "g"])
    h.state._dags["co"] = state_module._DagEntry(
        make_dag("co", ["f", "g"], [("f", "g")], colocated=["f", "g"]), 1, frozenset({"f", "g"}), ("f",)
    )
    for _ in range(30):
        reply, pushes = h.ask(lambda rid: DagCallEvent(rid, DagCall("co")))
        assert reply.success
        schedule = pushes[0].message
        assert schedule.locations["f"].split(":")[0] == schedule.locations["g"].split(":")[0]


def test_a_dag_created_through_another_scheduler_is_looked_up_on_the_first_call(cluster):
    other = Harness(cluster.kvs, host="10.0.0.3")
    for executor in (A, B, C):
        other.executor(executor)
    request_id, placements, _ = other.create_dag(make_dag("remote", ["f"]))
    assert other.replies.pop(request_id).success
    # Executors report to every scheduler; this one learns where "f" is pinned from the executor itself.
    pinned_at = next(e for e in (A, B, C) if endpoint(e) == placements["f"])
    cluster.executor(pinned_at, ["f"])
    reply, pushes = cluster.ask(lambda rid: DagCallEvent(rid, DagCall("remote")))
    assert reply.success
    assert pushes[0].address == placements["f"]


def test_dag_calls_are_counted_per_report_period(diamond):
    h, _, _ = diamond
    h.tick()
    for gap in (0.0, 0.5, 1.5):
        h.clock.advance(gap)
        h.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))
    h.tick(PERIOD)
    statistics = h.state.statistics()
    [dag_statistics] = statistics.dags
    assert dag_statistics.name == "dia"
    assert dag_statistics.call_count == 3
    assert dag_statistics.interarrivals == (0.5, 1.5)
    assert statistics.functions == (FunctionStatistics("f", 3), FunctionStatistics("g", 3), FunctionStatistics("k", 3))
    h.tick(PERIOD)
    assert h.state.statistics().dags == ()


# -- continuations -----------------------------------------------------------------------------------------------


@pytest.fixture
def two_dags(cluster):
    """DAG ``first`` (f) and DAG ``second`` (g -> k, plus source f feeding k)."""
    for dag in (make_dag("first", ["f"]), make_dag("second", ["g", "f", "k"], [("g", "k"), ("f", "k")])):
        request_id, _, _ = cluster.create_dag(dag)
        assert cluster.replies.pop(request_id).success
    return cluster


def test_a_call_with_a_continuation_answers_where_the_final_result_lands(two_dags):
    h = two_dags
    following = DagCall("second", {"g": (value("g-arg"),)}, output_key="final")
    call = DagCall("first", output_key="first-out", continuation=Continuation("second", call=following))
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, call))
    assert reply.response_id == "final"
    assert pushes[0].message.continuation.call.output_key == "final"


def test_a_continuation_inherits_the_first_output_key(two_dags):
    """The first caller polls its own output key, so the continued result must land there (the original
    wrote it under the request id)."""
    h = two_dags
    call = DagCall("first", output_key="out", continuation=Continuation("second", call=DagCall("second")))
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, call))
    assert reply.response_id == "out"
    assert pushes[0].message.continuation.call.output_key == "out"


def test_a_continuation_naming_an_unknown_dag_is_refused_at_call_time(two_dags):
    h = two_dags
    call = DagCall("first", continuation=Continuation("ghost", call=DagCall("ghost")))
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, call))
    assert reply.error == ErrorCode.NO_SUCH_DAG
    assert reply.error_message == "the continuation of DAG 'first' names DAG 'ghost', which is not registered"
    assert pushes == []


def test_a_continuation_runs_the_next_dag_with_the_result_appended_to_every_source(two_dags):
    h = two_dags
    result = value("result of first")
    following = DagCall("second", {"g": (value("g-arg"),)}, response_address="tcp://10.0.9.9:9000", output_key="out")
    pushes = h.tell(Continuation("second", id="req-1", result=codec.encode_encoded_value(result), call=following))
    schedules = [p.message for p in pushes if isinstance(p.message, DagSchedule)]
    assert [s.target_function for s in schedules] == ["g", "f", "k"]
    assert {s.id for s in schedules} == {"req-1"}
    assert dict(schedules[0].arguments) == {"g": (value("g-arg"), result), "f": (result,)}
    assert schedules[0].output_key == "out"
    assert schedules[0].response_address == "tcp://10.0.9.9:9000"
    assert not [p for p in pushes if isinstance(p.message, DagTrigger)]
    assert [s.target_function for s in schedules if s.triggers == (BEGIN,)] == ["g", "f"]
    assert h.state.counters().continuations_placed == 1


def test_a_continuation_of_an_unknown_dag_delivers_the_error_instead_of_crashing(two_dags):
    """The original crashed with a KeyError; the caller must learn why its result never comes."""
    h = two_dags
    result = codec.encode_encoded_value(value("r"))
    call = DagCall("ghost", delivery=ResultDelivery.NOTIFY_AND_STORE)
    pushes = h.tell(Continuation("ghost", id="req-2", result=result, call=call))
    assert pushes == []
    encoded = codec.decode_encoded_value(h.stored("req-2").value)
    assert encoded.serializer == SerializerType.ERROR
    with pytest.raises(DagNotFound, match="no DAG named 'ghost' is registered"):
        values.decode(encoded)


def test_a_continuation_error_is_pushed_to_a_notified_caller(two_dags):
    h = two_dags
    call = DagCall("second", response_address="tcp://10.0.9.9:9000", delivery=ResultDelivery.NOTIFY_ONLY)
    for executor in (A, B, C):
        h.tell(ThreadStatus(*executor, running=False))
    pushes = h.tell(Continuation("second", id="req-3", result=codec.encode_encoded_value(value("r")), call=call))
    [push] = pushes
    assert push.address == "tcp://10.0.9.9:9000"
    assert isinstance(push.message, CallResult)
    assert push.message.id == "req-3"
    with pytest.raises(NoResources, match="not pinned at any live executor"):
        values.decode(push.message.value)


def test_a_continuation_with_an_undecodable_result_is_an_error_for_its_caller(two_dags):
    h = two_dags
    call = DagCall("second", response_address="tcp://10.0.9.9:9000", delivery=ResultDelivery.NOTIFY_ONLY)
    [push] = h.tell(Continuation("second", id="req-4", result=b"\xff\xff not a value", call=call))
    assert push.message.value.serializer == SerializerType.ERROR


def test_an_original_clients_continuation_error_comes_in_the_original_form(two_dags):
    # An original client's call has the LEGACY delivery: its reader knows the pickled ('ERROR: ...', response) pair.
    h = two_dags
    call = DagCall("second", response_address="tcp://10.0.9.9:9000")
    [push] = h.tell(Continuation("second", id="req-4", result=b"\xff\xff not a value", call=call))
    assert push.message.serializer == SerializerType.DEFAULT
    text, response = pickle.loads(push.message.body)
    assert text.startswith("ERROR: cannot decode")
    assert codec.decode_generic_response(response).error == ErrorCode.INVALID_REQUEST


def test_a_continuation_without_a_call_is_dropped(two_dags):
    assert two_dags.tell(Continuation("second", id="req-5")) == []


# -- deletion ----------------------------------------------------------------------------------------------------


def test_deleting_an_unknown_dag_is_no_such_dag(cluster):
    reply, _ = cluster.ask(lambda rid: DagDeleteEvent(rid, "ghost"))
    assert reply.error == ErrorCode.NO_SUCH_DAG
    assert reply.error_message == "no DAG named 'ghost' is registered"


def test_deletion_tombstones_the_kvs_and_unpins_functions_no_other_dag_uses(diamond):
    h, _, placements = diamond
    reply, pushes = h.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    assert reply == GenericResponse(success=True)
    assert sorted((p.address, p.message.name) for p in pushes) == sorted((a, f) for f, a in placements.items())
    assert all(isinstance(p.message, UnpinFunction) for p in pushes)
    tombstone = h.stored(keys.dag_key("dia"))
    assert tombstone.value == b""
    assert h.state.dags() == {}
    assert h.state.deleted_dags() == ("dia",)
    assert h.state.locations("f") == ()
    assert h.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))[0].error == ErrorCode.NO_SUCH_DAG
    # Deleted means deleted everywhere: a fresh scheduler reading the KVS does not bring it back.
    fresh = Harness(h.kvs, host="10.0.0.3")
    fresh.feed(RecoverEvent())
    assert fresh.state.dags() == {}
    assert fresh.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))[0].error == ErrorCode.NO_SUCH_DAG


def test_deletion_unpins_only_locations_no_other_live_dag_uses(h):
    """The original unpinned every location of every function, including other DAGs' replicas."""
    h.register("f", "g", "k")
    for executor in (A, B, C):
        h.executor(executor)
    one_id, one, _ = h.create_dag(make_dag("one", ["f", "g"], [("f", "g")]))
    two_id, two, _ = h.create_dag(make_dag("two", ["f", "k"], [("f", "k")]))
    assert h.replies.pop(one_id).success
    assert h.replies.pop(two_id).success
    assert one["f"] != two["f"]
    _, pushes = h.ask(lambda rid: DagDeleteEvent(rid, "one"))
    assert sorted((p.address, p.message) for p in pushes) == sorted(
        [(one["f"], UnpinFunction("f")), (one["g"], UnpinFunction("g"))]
    )
    assert [loc(e) for e in h.state.locations("f")] == [two["f"].removeprefix("tcp://").replace(":4000", ":0")]
    assert h.ask(lambda rid: DagCallEvent(rid, DagCall("two")))[0].success


def test_deletion_keeps_a_shared_replica_of_unknown_ownership(h):
    h.register("f", "g")
    h.executor(A, ["f"])  # pinned before this scheduler knew of any DAG (e.g. before a restart)
    h.executor(B)
    h.state._dags["old"] = state_module._DagEntry(make_dag("old", ["f"]), 1, frozenset({"f"}), ("f",))
    request_id, _placements, _ = h.create_dag(make_dag("new", ["f", "g"], [("f", "g")]))
    assert h.replies.pop(request_id).success
    _, pushes = h.ask(lambda rid: DagDeleteEvent(rid, "old"))
    assert pushes == []
    assert A in h.state.locations("f")


def test_a_failed_tombstone_write_keeps_the_dag(diamond):
    h, _, _ = diamond
    h.kvs_error = DeadlineExceeded("down")
    reply, pushes = h.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert reply.error_message == "cannot delete DAG 'dia': the KVS failed: down"
    assert pushes == []
    assert "dia" in h.state.dags()


def test_a_deleted_dag_can_be_created_again(diamond):
    h, dag, _ = diamond
    h.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    request_id, _, _ = h.create_dag(dag)
    assert h.replies.pop(request_id).success
    assert codec.decode_dag(h.stored(keys.dag_key("dia")).value) == dag
    assert h.state.deleted_dags() == ()


# -- executors ---------------------------------------------------------------------------------------------------


def test_an_executor_status_sets_its_locations(h):
    h.executor(A, ["f", "g"])
    assert h.state.locations("f") == (A,)
    h.executor(A, ["g"])
    assert h.state.locations("f") == ()
    assert h.state.locations("g") == (A,)


def test_a_new_incarnation_drops_the_old_locations(h):
    h.executor(A, ["f"], incarnation="one")
    h.executor(A, [], incarnation="two")
    assert h.state.locations("f") == ()
    assert h.state.story(loc(A))[-1][0] == "restarted (two)"


def test_a_departing_executor_is_forgotten_even_if_never_seen(h):
    """The original raised ValueError removing locations it did not have."""
    h.tell(ThreadStatus(*A, running=False))
    h.executor(A, ["f"])
    h.tell(ThreadStatus(*A, running=False))
    h.tell(ThreadStatus(*A, running=False))
    assert h.state.locations("f") == ()
    assert h.state.executors() == ()


def test_a_status_without_an_ip_is_ignored(h):
    h.tell(ThreadStatus("", 0, ("f",)))
    assert h.state.executors() == ()


def test_silent_executors_expire_after_three_report_periods(h):
    h.tick()
    h.executor(A, ["f"])
    h.executor(B, ["f"])
    for _ in range(3):
        h.tick(PERIOD)
        h.executor(B, ["f"])
    assert h.state.locations("f") == (A, B)
    h.tick(PERIOD)
    assert h.state.locations("f") == (B,)
    assert [s.ip for s in h.state.executors()] == [B[0]]
    assert h.state.counters().executors_expired == 1


def test_status_query_reports_executors_dags_and_functions(diamond):
    h, _, _ = diamond
    h.executor(G, gpu=True)
    reply, _ = h.ask(StatusQueryEvent)
    assert isinstance(reply, ClusterStatus)
    assert reply.dags == ("dia",)
    assert reply.functions == ("f", "g", "k")
    assert [(s.ip, s.tid) for s in reply.executors] == [A, B, C, G]
    assert sorted(f for s in reply.executors for f in s.functions) == ["f", "g", "k"]
    assert reply.executors[-1].type == ExecutorType.GPU


def test_executor_statistics_are_kept_per_reporter(h):
    first = ExecutorStatistics((FunctionStatistics("f", 1, (0.5,)),), reporter="10.0.1.1:0")
    second = ExecutorStatistics((FunctionStatistics("f", 2, (0.25,)),), reporter="10.0.1.1:0")
    other = ExecutorStatistics(reporter="10.0.1.2:0")
    for report in (first, other, second):
        h.tell(report)
    assert h.state.executor_reports() == {"10.0.1.1:0": second, "10.0.1.2:0": other}


# -- gossip ------------------------------------------------------------------------------------------------------


def test_gossip_goes_to_every_peer_but_itself_once_a_report_period(diamond):
    h, _, placements = diamond
    h.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    request_id, placements, _ = h.create_dag(make_dag("solo", ["f"]))
    assert h.replies.pop(request_id).success
    assert h.tick() == []
    assert h.tick(PERIOD - 0.1) == []
    [push] = h.tick(0.1)
    assert push.address == f"tcp://{PEER}:5007"
    pinned_at = placements["f"].removeprefix("tcp://").split(":")[0]
    assert push.message == SchedulerStatus(
        dags=("solo",), function_locations=(FunctionLocation("f", pinned_at, 0),), deleted_dags=("dia",)
    )


def managed_diamond():
    """Three executors, the DAG ``dia`` of the ``diamond`` fixture, and a management service to report to."""
    h = Harness(management="10.0.0.8")
    for executor in (A, B, C):
        h.executor(executor)
    h.register("f", "g", "k")
    request_id, _, _ = h.create_dag(make_dag("dia", ["f", "g", "k"], [("f", "g"), ("f", "k"), ("g", "k")]))
    assert h.replies.pop(request_id).success
    h.tick()
    return h


def test_with_a_management_service_each_period_reports_call_statistics_and_asks_for_the_schedulers():
    h = managed_diamond()
    for gap in (0.0, 0.5, 1.5):
        h.clock.advance(gap)
        h.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))
    h.ask(lambda rid: FunctionCallEvent(rid, FunctionCall("f")))  # one-shot calls are not counted

    pushes = h.tick(PERIOD)

    (report,) = [p for p in pushes if isinstance(p.message, ExecutorStatistics)]
    assert report.address == "tcp://10.0.0.8:7003"
    assert report.message.reporter == f"scheduler:{HOST}"
    (dag,) = report.message.dags
    assert (dag.name, dag.call_count, dag.interarrivals) == ("dia", 3, (0.5, 1.5))
    assert report.message.functions == tuple(FunctionStatistics(f, 3) for f in ("f", "g", "k"))
    assert h.list_queries == 1
    # An idle period is reported too: the management service lists the schedulers that report.
    (idle,) = [p for p in h.tick(PERIOD) if isinstance(p.message, ExecutorStatistics)]
    assert idle.message == ExecutorStatistics(reporter=f"scheduler:{HOST}")
    assert h.list_queries == 2


def test_without_a_management_service_no_statistics_leave_and_nothing_is_asked(diamond):
    h, _, _ = diamond
    h.tick()
    assert not [p for p in h.tick(PERIOD) if isinstance(p.message, ExecutorStatistics)]
    assert h.list_queries == 0


def test_gossip_also_goes_to_the_schedulers_the_management_service_lists():
    h = Harness(management="10.0.0.8", peers=(HOST, PEER))
    h.feed(SchedulersListedEvent((HOST, "10.0.0.3", PEER)))
    assert h.state.gossip_peers() == (PEER, "10.0.0.3")
    h.tick()
    gossip = [p.address for p in h.tick(PERIOD) if isinstance(p.message, SchedulerStatus)]
    assert gossip == [f"tcp://{PEER}:5007", "tcp://10.0.0.3:5007"]
    # The next answer replaces the list; configured peers stay.
    h.feed(SchedulersListedEvent(()))
    assert h.state.gossip_peers() == (PEER,)


def test_tombstones_are_gossiped_for_a_bounded_time(diamond):
    h, _, _ = diamond
    h.tick()
    h.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    for _ in range(state_module.TOMBSTONE_PERIODS):
        h.tick(PERIOD)
        for executor in (A, B, C):
            h.executor(executor)
    assert h.state.deleted_dags() == ("dia",)
    h.tick(PERIOD)
    assert h.state.deleted_dags() == ()


def test_gossip_loads_announced_dags_from_the_kvs(cluster):
    other = Harness(cluster.kvs, host=PEER)
    other.executor(A)
    request_id, _, _ = other.create_dag(make_dag("remote", ["f"]))
    assert other.replies.pop(request_id).success
    cluster.tell(SchedulerStatus(dags=("remote",), function_locations=(FunctionLocation("f", "10.0.5.5", 1),)))
    assert cluster.state.dags() == other.state.dags()
    # Second-hand locations are used for calls until the executor reports here itself.
    assert cluster.state.locations("f") == (("10.0.5.5", 1),)
    reply, pushes = cluster.ask(lambda rid: DagCallEvent(rid, DagCall("remote")))
    assert reply.success
    assert pushes[0].address == "tcp://10.0.5.5:4001"


def test_an_announced_dag_missing_from_the_kvs_is_fetched_a_bounded_number_of_times(cluster):
    """The original crashed on a DAG the KVS did not show yet."""
    for _ in range(state_module.MAX_DAG_FETCH_ATTEMPTS + 3):
        cluster.tell(SchedulerStatus(dags=("phantom",)))
    fetches = [r for r in cluster.kvs_reads if keys.dag_key("phantom") in r]
    assert len(fetches) == state_module.MAX_DAG_FETCH_ATTEMPTS
    assert cluster.state.dags() == {}
    # After a while it is tried again.
    cluster.clock.advance(state_module.TOMBSTONE_PERIODS * PERIOD)
    cluster.tell(SchedulerStatus(dags=("phantom",)))
    assert len([r for r in cluster.kvs_reads if keys.dag_key("phantom") in r]) == len(fetches) + 1


def test_a_garbage_dag_in_the_kvs_is_ignored(cluster):
    cluster.kvs.merge_many([(keys.dag_key("junk"), LwwLattice(5, b"\xff\xfe not a dag"))])
    cluster.tell(SchedulerStatus(dags=("junk",)))
    assert cluster.state.dags() == {}
    assert cluster.ask(lambda rid: DagCallEvent(rid, DagCall("junk")))[0].error == ErrorCode.NO_SUCH_DAG


def test_a_peers_deletion_drops_the_dag_here_when_the_kvs_agrees(diamond):
    h, _, _placements = diamond
    peer = Harness(h.kvs, host=PEER)
    peer.tell(SchedulerStatus(dags=("dia",)))
    assert "dia" in peer.state.dags()
    reply, _ = peer.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    assert reply.success
    pushes = h.tell(SchedulerStatus(deleted_dags=("dia",)))
    assert pushes == []  # the deleting scheduler unpins
    assert h.state.dags() == {}
    assert h.state.deleted_dags() == ("dia",)


def test_a_stale_deletion_does_not_drop_a_re_created_dag(diamond):
    h, dag, _ = diamond
    h.ask(lambda rid: DagDeleteEvent(rid, "dia"))
    request_id, _, _ = h.create_dag(dag)
    assert h.replies.pop(request_id).success
    # A peer still gossips the old deletion; the KVS shows the DAG live again, so it stays.
    h.tell(SchedulerStatus(deleted_dags=("dia",)))
    assert "dia" in h.state.dags()


def test_a_deletion_of_a_dag_not_known_here_is_harmless(cluster):
    cluster.tell(SchedulerStatus(deleted_dags=("ghost",)))
    assert cluster.state.dags() == {}


def test_first_hand_knowledge_wins_over_gossip_and_gossip_expires(h):
    h.tick()
    h.executor(A, ["f"])
    h.tell(SchedulerStatus(function_locations=(FunctionLocation("g", *A), FunctionLocation("g", *B))))
    assert h.state.locations("g") == (B,)  # what A says about itself counts, not what a peer says about A
    for _ in range(state_module.EXPIRY_PERIODS):
        h.tick(PERIOD)
        h.executor(A, ["f"])
    assert h.state.locations("g") == (B,)
    h.tick(PERIOD)
    assert h.state.locations("g") == ()
    # An executor reporting itself replaces what peers said about it.
    h.tell(SchedulerStatus(function_locations=(FunctionLocation("k", *C),)))
    h.executor(C, ["f"])
    assert h.state.locations("k") == ()
    assert h.state.locations("f") == (A, C)


def test_only_first_hand_locations_are_gossiped(h):
    h.tick()
    h.executor(A, ["f"])
    h.tell(SchedulerStatus(function_locations=(FunctionLocation("g", *B),)))
    [push] = h.tick(PERIOD)
    assert push.message.function_locations == (FunctionLocation("f", *A),)


# -- recovery ----------------------------------------------------------------------------------------------------


def test_a_restarted_scheduler_recovers_functions_and_dags_from_the_kvs(diamond):
    h, dag, _ = diamond
    request_id, _, _ = h.create_dag(make_dag("doomed", ["f"]))
    assert h.replies.pop(request_id).success
    h.ask(lambda rid: DagDeleteEvent(rid, "doomed"))
    restarted = Harness(h.kvs)
    assert not restarted.state.recovered
    restarted.feed(RecoverEvent())
    assert restarted.state.recovered
    assert restarted.state.functions() == h.state.functions()
    assert restarted.state.dags() == {"dia": dag}
    # Locations come back from the executors' statuses.
    for executor in (A, B, C):
        restarted.executor(executor, [f for f, e in zip("fgk", (A, B, C), strict=True) if e == executor])
    assert restarted.ask(lambda rid: DagCallEvent(rid, DagCall("dia")))[0].success


def test_recovery_of_an_empty_kvs_is_immediate(h):
    h.feed(RecoverEvent())
    assert h.state.recovered
    assert h.kvs_reads == [(keys.FUNCTION_INDEX, keys.DAG_INDEX)]


def test_recovery_is_retried_a_report_period_after_a_kvs_failure(diamond):
    h, dag, _ = diamond
    restarted = Harness(h.kvs)
    restarted.kvs_error = DeadlineExceeded("not yet")
    restarted.feed(RecoverEvent())
    assert not restarted.state.recovered
    restarted.kvs_error = None
    restarted.tick(PERIOD - 1)
    assert not restarted.state.recovered
    restarted.tick(1)
    assert restarted.state.recovered
    assert restarted.state.dags() == {"dia": dag}


# -- odds and ends -----------------------------------------------------------------------------------------------


def test_kvs_outcomes_for_unknown_tokens_are_ignored(h):
    assert h.feed(KvsReadDoneEvent(999)) == []
    assert h.feed(KvsWriteDoneEvent(999)) == []


def test_a_repeated_request_id_is_ignored(cluster):
    cluster.state.handle(DagCreateEvent(77, make_dag("solo", ["f"])), 0.0, 0)
    assert cluster.state.handle(ConnectEvent(77), 0.0, 0) == []


def test_tombstones_are_bounded(h, monkeypatch):
    monkeypatch.setattr(state_module, "MAX_TOMBSTONES", 3)
    for index in range(5):
        h.state._dags[f"d{index}"] = state_module._DagEntry(make_dag(f"d{index}", ["f"]), 1, frozenset({"f"}), ("f",))
        h.ask(lambda rid, index=index: DagDeleteEvent(rid, f"d{index}"))
    assert h.state.deleted_dags() == ("d2", "d3", "d4")


# -- random event sequences keep every invariant -----------------------------------------------------------------

EXECUTORS = [A, B, C, G]
FUNCTIONS = ["f", "g", "k"]
DAGS = {
    "p": make_dag("p", ["f", "g"], [("f", "g")]),
    "q": make_dag("q", ["f", "k"], [("f", "k")], colocated=["f", "k"]),
    "r": make_dag("r", ["g"], gpu=["g"]),
}

actions = st.one_of(
    st.tuples(st.just("status"), st.sampled_from(EXECUTORS), st.lists(st.sampled_from(FUNCTIONS), unique=True)),
    st.tuples(st.just("restart"), st.sampled_from(EXECUTORS), st.just(())),
    st.tuples(st.just("leave"), st.sampled_from(EXECUTORS), st.just(())),
    st.tuples(st.just("create"), st.sampled_from(sorted(DAGS)), st.just(())),
    st.tuples(st.just("delete"), st.sampled_from(sorted(DAGS)), st.just(())),
    st.tuples(st.just("call"), st.sampled_from(sorted(DAGS)), st.just(())),
    st.tuples(st.just("answer"), st.booleans(), st.just(())),
    st.tuples(st.just("tick"), st.sampled_from([0.1, 3.0, PIN_TIMEOUT]), st.just(())),
    st.tuples(st.just("gossip"), st.sampled_from(sorted(DAGS)), st.lists(st.sampled_from(EXECUTORS), max_size=2)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, max_size=40))
def test_random_event_sequences_keep_the_invariants_and_answer_every_request(sequence):
    h = Harness()
    h.register(*FUNCTIONS)
    incarnations = dict.fromkeys(EXECUTORS, 0)
    for executor in EXECUTORS:
        h.executor(executor, gpu=executor == G, incarnation="0")
    open_pins = deque()
    requests = []
    for kind, subject, extra in sequence:
        if kind == "status":
            h.executor(subject, extra, gpu=subject == G, incarnation=str(incarnations[subject]))
        elif kind == "restart":
            incarnations[subject] += 1
            h.executor(subject, (), gpu=subject == G, incarnation=str(incarnations[subject]))
        elif kind == "leave":
            h.tell(ThreadStatus(*subject, running=False))
        elif kind in ("create", "delete", "call"):
            event = {"create": DagCreateEvent, "delete": DagDeleteEvent, "call": DagCallEvent}[kind]
            argument = {"create": DAGS[subject], "delete": subject, "call": DagCall(subject)}[kind]
            request_id, pushes = h.request(lambda rid, e=event, a=argument: e(rid, a))
            requests.append(request_id)
            open_pins.extend(pin.request_id for _, pin in pins_of(pushes))
        elif kind == "answer" and open_pins:
            pushes = h.tell(GenericResponse(success=subject, response_id=open_pins.popleft()))
            open_pins.extend(pin.request_id for _, pin in pins_of(pushes))
        elif kind == "tick":
            open_pins.extend(pin.request_id for _, pin in pins_of(h.tick(subject)))
        elif kind == "gossip":
            locations = tuple(FunctionLocation("f", *executor) for executor in extra)
            h.tell(SchedulerStatus(dags=(subject,), function_locations=locations, deleted_dags=(subject,)))
    # Every request is answered once the pins time out, whatever happened meanwhile.
    for _ in range(len(FUNCTIONS) * len(EXECUTORS) + 2):
        h.tick(PIN_TIMEOUT)
    assert set(requests) <= set(h.replies)
    assert h.state.pins_in_flight() == {}


# -- storage triggers' runs ----------------------------------------------------------------------------------------

TRIGGER_ACK = "tcp://10.0.0.9:6960"


def test_the_scheduler_places_a_run_near_a_cache_holding_the_key():
    h = Harness()
    for executor in (A, B, C):
        h.executor(executor)
    h.register("f")
    h.kvs.merge_many([(keys.cache_key_set_key(B[0]), LwwLattice(1, codec.encode_string_set(["in/1"])))])
    h.tick()
    h.tick(PERIOD)  # each period reads the caches' key sets
    assert h.state.key_locations() == {"in/1": (B[0],)}
    placed = []
    for n in range(20):  # each run ends before the next, so every executor is idle and locality decides
        firing = TriggerFiring(f"id{n}", "t", "f", "in/1", LatticeType.LWW, b"p", 1, TRIGGER_ACK)
        [push] = h.tell(firing)
        placed.append(push)
        h.executor(executor_of_address(push.address), finished=[firing.id])
    near = sum(p.address == endpoint(B) for p in placed)
    assert near >= 12  # locality, with some exploration
    call = placed[-1].message
    assert isinstance(call, FunctionCall)
    assert (call.trigger, call.references, call.delivery) == (firing, ("in/1",), ResultDelivery.NOTIFY_ONLY)


def test_a_run_the_scheduler_cannot_place_goes_back_to_the_kvs_node_as_a_failure():
    h = Harness()
    h.register("f")
    firing = TriggerFiring("id1", "t", "f", "in/1", LatticeType.LWW, b"p", 1, TRIGGER_ACK)
    (nack,) = h.tell(firing)
    assert nack.address == TRIGGER_ACK
    assert nack.message.id == "id1"
    assert "no CPU executor" in nack.message.error
    (nack,) = h.tell(TriggerFiring("id2", "t", "unknown", "in/1", LatticeType.LWW, b"p", 1, TRIGGER_ACK))
    assert "no function named 'unknown'" in nack.message.error


def test_a_client_cannot_pose_as_a_trigger():
    h = Harness()
    h.executor(A)
    h.register("f")
    posing = FunctionCall("f", trigger=TriggerFiring("x", "t", "f", "k", LatticeType.LWW, b"", 1, "tcp://1.2.3.4:1"))
    reply, pushes = h.ask(lambda rid: FunctionCallEvent(rid, posing))
    assert reply.success
    (push,) = [p for p in pushes if isinstance(p, PushInstruction)]
    assert push.message.trigger is None


# -- leases ------------------------------------------------------------------------------------------------------


def test_a_lease_names_the_executors_one_shot_calls_would_run_on_and_lasts_a_report_period(cluster):
    cluster.executor(G, ["pinned_elsewhere"], gpu=True)
    cluster.executor(A, ["g"])
    _, target = cluster.call()  # to B or C, which are unpinned
    cluster.executor(C, queued=3)
    reply, pushes = cluster.ask(lambda rid: FunctionLeaseEvent(rid, "f"))
    assert pushes == []
    assert reply.function == "f"
    assert reply.function_version == cluster.state.functions()["f"]
    assert reply.ttl == PERIOD
    # Every CPU executor, with what waits there and whether it hosts DAG functions: the client picks.
    assert reply.executors == tuple(endpoint(e) for e in (A, B, C))
    assert reply.pinned == (True, False, False)
    assert reply.queued == (0, 1 if target == B else 0, 3)


def test_a_lease_includes_busy_executors_so_calls_spread_rather_than_herd():
    h = Harness()
    h.executor(A, utilization=0.95)
    h.executor(B)
    h.register("f")
    reply, _ = h.ask(lambda rid: FunctionLeaseEvent(rid, "f"))
    assert reply.executors == (endpoint(A), endpoint(B))


def test_leases_of_unknown_functions_or_without_executors_are_refused_with_the_reason(h):
    reply, _ = h.ask(lambda rid: FunctionLeaseEvent(rid, "nope"))
    assert (reply.error, reply.executors) == (ErrorCode.FUNC_NOT_FOUND, ())
    assert "no function named 'nope'" in reply.error_message
    h.register("f")
    reply, _ = h.ask(lambda rid: FunctionLeaseEvent(rid, "f"))
    assert reply.error == ErrorCode.NO_RESOURCES
    lease = FunctionLease("f", 7, ("tcp://10.0.1.1:4000",), 5.0, queued=(2,), pinned=(True,), incarnations=("i",))
    assert codec.decode_function_lease(codec.encode_function_lease(lease)) == lease
    # From a scheduler that sends no loads: every executor idle and unpinned.
    old = codec.encode_function_lease(FunctionLease("f", 7, ("tcp://10.0.1.1:4000",), 5.0))
    assert (codec.decode_function_lease(old).queued, codec.decode_function_lease(old).incarnations) == ((0,), ("",))
    with pytest.raises(DecodeError, match="1 executors but 2 loads"):
        codec.decode_function_lease(
            codec.encode_function_lease(FunctionLease("f", 7, ("e",), 5.0, queued=(1, 2), pinned=(True,)))
        )


# -- overload ----------------------------------------------------------------------------------------------------


def test_a_call_an_overloaded_executor_could_not_take_fails_at_once_with_no_resources(cluster):
    call = FunctionCall(
        "f", response_key="k1", response_address="tcp://10.0.0.9:9000", delivery=ResultDelivery.NOTIFY_ONLY
    )
    pushes = cluster.feed(PushFailedEvent(endpoint(A), call))
    (push,) = pushes
    assert push.address == "tcp://10.0.0.9:9000"
    assert push.message.id == "k1"
    with pytest.raises(NoResources, match="overloaded"):
        values.decode(push.message.value)
    firing = TriggerFiring("id1", "t", "f", "in/1", LatticeType.LWW, b"p", 1, TRIGGER_ACK)
    (nack,) = cluster.feed(PushFailedEvent(endpoint(A), FunctionCall("f", trigger=firing)))
    assert (nack.address, nack.message.id) == (TRIGGER_ACK, "id1")
    assert "overloaded" in nack.message.error


def test_a_dag_request_an_overloaded_executor_could_not_take_fails_at_once(cluster):
    dag = make_dag("d", ["f"])
    schedule = DagSchedule(
        "req-1", dag, "f", (), {}, response_address="tcp://10.0.0.9:9000", delivery=ResultDelivery.NOTIFY_ONLY
    )
    (push,) = cluster.feed(PushFailedEvent(endpoint(A), schedule))
    assert push.message.id == "req-1"
    with pytest.raises(NoResources) as raised:
        values.decode(push.message.value)
    assert (raised.value.dag, raised.value.request_id) == ("d", "req-1")


def test_a_dag_function_that_lost_its_last_replica_is_pinned_again(cluster):
    dag = make_dag("lonely", ["f"])
    request_id, placements, _ = cluster.create_dag(dag)
    assert cluster.replies.pop(request_id).success
    (first,) = placements.values()
    executor = next(e for e in (A, B, C) if endpoint(e) == first)
    # Restarted: its pins are gone, and the replica is pinned again at once rather than at the next period.
    (repair,) = pins_of(cluster.executor(executor, [], incarnation="two"))
    reply, _ = cluster.ask(lambda rid: DagCallEvent(rid, DagCall("lonely")))
    assert reply.error == ErrorCode.NO_RESOURCES  # (a call without a deadline is not held meanwhile)
    address, pin = repair
    assert pin.name == "f"
    assert not pins_of(cluster.tick(PERIOD))  # one repair at a time
    cluster.tell(GenericResponse(success=True, response_id=pin.request_id))
    assert cluster.state.locations("f") != ()
    reply, pushes = cluster.ask(lambda rid: DagCallEvent(rid, DagCall("lonely")))
    assert reply.success
    assert {p.address for p in pushes if isinstance(p.message, DagSchedule)} == {address}


# -- re-execution and cancellation ----------------------------------------------------------------------------------


def executor_of_address(address):
    return next(e for e in (A, B, C) if endpoint(e) == address)


def test_a_dag_request_lost_with_a_stage_runs_again_under_a_new_id_with_its_result_where_the_caller_waits(diamond):
    h, _, placements = diamond
    call = DagCall("dia", response_address="tcp://10.0.9.9:9000", delivery=ResultDelivery.NOTIFY_ONLY)
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, call))
    first = next(p.message for p in pushes if isinstance(p.message, DagSchedule))
    assert first.placed_by == HOST  # its sink tells this scheduler when it is over
    lost = executor_of_address(placements["g"])
    again = [p.message for p in h.executor(lost, ["g"], incarnation="two") if isinstance(p.message, DagSchedule)]
    assert {s.target_function for s in again} == {"f", "g", "k"}
    assert {s.id for s in again} != {first.id}
    # The caller waits on the first id: the re-run's result goes there.
    assert {s.output_key for s in again} == {reply.response_id}
    # Done once reported by the sink: losing an executor then runs nothing again.
    h.executor(executor_of_address(placements["k"]), ["k"], finished=[again[0].id])
    assert [p for p in h.executor(lost, ["g"], incarnation="three") if isinstance(p.message, DagSchedule)] == []


def lost_error(pushes):
    (push,) = [p for p in pushes if isinstance(p.message, CallResult)]
    with pytest.raises(ExecutorLost) as caught:
        values.decode(push.message.value)
    return caught.value


def notified_call(name="f", **fields):
    return FunctionCall(
        name, response_key="k1", response_address="tcp://10.0.9.9:9000", delivery=ResultDelivery.NOTIFY_ONLY, **fields
    )


def test_a_call_that_may_not_run_twice_fails_with_executor_lost_naming_the_executor(cluster):
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call(max_retries=0)))
    where = executor_of_address(push.address)
    error = lost_error(cluster.executor(where, incarnation="two"))
    assert error.request_id == "k1"
    assert error.function == "f"
    assert error.losses == ((loc(where), "it restarted (its process died)"),)
    assert "at most 1 time(s)" in str(error)


def test_a_call_runs_again_until_its_retries_are_spent(cluster):
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call(max_retries=1)))
    where = executor_of_address(push.address)
    [again] = [p for p in cluster.executor(where, incarnation="two") if isinstance(p.message, FunctionCall)]
    assert again.message.attempt == 2
    second = executor_of_address(again.address)
    error = lost_error(cluster.executor(second, incarnation="three" if second == where else "two"))
    assert [where for where, _ in error.losses] == [loc(where), loc(second)]


def test_a_call_past_its_deadline_is_not_run_again(cluster):
    deadline = cluster.clock.wall_ns() / 1e9 + 1
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call(deadline=deadline)))
    cluster.clock.advance(2)
    error = lost_error(cluster.executor(executor_of_address(push.address), incarnation="two"))
    assert "deadline passed" in str(error)


def test_an_executor_that_stops_reporting_loses_its_calls_to_the_others(cluster):
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call()))
    silent = executor_of_address(push.address)
    for _ in range(4):
        for executor in {A, B, C} - {silent}:
            cluster.executor(executor)
        pushes = cluster.tick(PERIOD)
        if again := [p for p in pushes if isinstance(p.message, FunctionCall)]:
            break
    assert executor_of_address(again[0].address) != silent
    assert again[0].message.response_key == "k1"


def test_a_rerun_that_cannot_be_placed_yet_waits_and_tries_again(h):
    h.register("f")
    h.executor(A)
    h.ask(lambda rid: FunctionCallEvent(rid, notified_call()))
    for _ in range(4):  # A goes silent, with no other executor to take its call
        assert [p for p in h.tick(PERIOD) if isinstance(p.message, FunctionCall)] == []
    pushes = h.executor(B)  # one joins: the held re-run goes there at once
    assert [executor_of_address(p.address) for p in pushes if isinstance(p.message, FunctionCall)] == [B]


def test_a_crash_told_by_the_node_supervisor_runs_the_executors_calls_again_at_once(cluster):
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call()))
    dead = executor_of_address(push.address)
    pushes = cluster.tell(ThreadStatus(dead[0], dead[1], running=False, crashed=True))
    [again] = [p for p in pushes if isinstance(p.message, FunctionCall)]
    assert executor_of_address(again.address) != dead
    assert (again.message.response_key, again.message.attempt) == ("k1", 2)
    assert cluster.state.counters().requests_rerun == 1


def test_a_dag_request_an_executor_refuses_for_want_of_its_function_is_placed_again_without_using_a_retry(diamond):
    h, _, placements = diamond
    call = DagCall("dia", output_key="out", max_retries=0)
    _, pushes = h.ask(lambda rid: DagCallEvent(rid, call))
    first = next(p.message for p in pushes if isinstance(p.message, DagSchedule))
    refusing = executor_of_address(placements["g"])
    status = ThreadStatus(refusing[0], refusing[1], ("g",), incarnation="one", refused=(first.id,))
    again = [p.message for p in h.tell(status) if isinstance(p.message, DagSchedule)]
    assert {s.target_function for s in again} == {"f", "g", "k"}
    assert {s.output_key for s in again} == {"out"}
    assert again[0].id != first.id
    assert h.state.counters().requests_refused == 1
    # A refusal of an attempt already replaced changes nothing.
    assert [p for p in h.tell(status) if isinstance(p.message, DagSchedule)] == []


def test_the_scheduler_tells_which_requests_it_still_holds(cluster):
    cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call()))
    reply, _ = cluster.ask(lambda rid: InFlightQueryEvent(rid, ("k1", "never-placed")))
    assert reply == InFlightReply(("k1",))
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, replace(notified_call(), response_key="k2")))
    cluster.executor(executor_of_address(push.address), finished=["k1", "k2"])
    assert cluster.ask(lambda rid: InFlightQueryEvent(rid, ("k1", "k2")))[0] == InFlightReply(())


def test_a_departing_executor_keeps_its_calls(cluster):
    _, [push] = cluster.ask(lambda rid: FunctionCallEvent(rid, notified_call()))
    leaving = executor_of_address(push.address)
    pushes = cluster.tell(ThreadStatus(leaving[0], leaving[1], running=False))  # draining: it finishes them
    assert [p for p in pushes if isinstance(p.message, FunctionCall)] == []


def test_a_call_with_a_deadline_that_cannot_be_placed_now_is_held_until_an_executor_comes(h):
    h.register("f")
    deadline = h.clock.wall_ns() / 1e9 + 30
    reply, pushes = h.ask(lambda rid: FunctionCallEvent(rid, notified_call(deadline=deadline)))
    assert reply == GenericResponse(success=True, response_id="k1")  # accepted, not refused with NoResources
    assert pushes == []
    [push] = [p for p in h.executor(A) if isinstance(p.message, FunctionCall)]  # placed as soon as A joins
    assert executor_of_address(push.address) == A
    assert (push.message.response_key, push.message.attempt, push.message.placed_by) == ("k1", 1, HOST)
    assert h.state.counters().requests_held == 1


def test_a_held_call_fails_with_no_resources_at_its_deadline_and_one_without_a_deadline_at_once(h):
    h.register("f")
    reply, _ = h.ask(lambda rid: FunctionCallEvent(rid, notified_call()))
    assert not reply.success
    assert "no CPU executor" in reply.error_message
    deadline = h.clock.wall_ns() / 1e9 + 1
    h.ask(lambda rid: FunctionCallEvent(rid, notified_call(deadline=deadline)))
    failures = []
    for _ in range(30):
        failures += [p for p in h.tick(0.1) if isinstance(p.message, CallResult)]
    [failure] = failures
    with pytest.raises(NoResources, match="could not be placed before its deadline: no CPU executor"):
        values.decode(failure.message.value)


def test_a_dag_request_whose_function_has_no_live_replica_is_held_until_it_is_pinned_again(diamond):
    h, _, placements = diamond
    holder = executor_of_address(placements["g"])
    h.executor(holder, [], incarnation="two")  # restarted: "g" has no replica until it is pinned again
    deadline = h.clock.wall_ns() / 1e9 + 30
    reply, pushes = h.ask(lambda rid: DagCallEvent(rid, DagCall("dia", output_key="out", deadline=deadline)))
    assert reply == GenericResponse(success=True, response_id="out")
    assert not [p for p in pushes if isinstance(p.message, DagSchedule)]  # held
    h.executor(holder, ["g"], incarnation="two")  # pinned again
    for _ in range(40):
        if pushes := [p for p in h.tick(0.1) if isinstance(p.message, DagSchedule)]:
            break
    assert {p.message.target_function for p in pushes if isinstance(p.message, DagSchedule)} == {"f", "g", "k"}
    assert {p.message.output_key for p in pushes if isinstance(p.message, DagSchedule)} == {"out"}


def test_a_cancellation_reaches_the_executors_of_the_request_and_it_never_runs_again(diamond):
    h, _, placements = diamond
    h.ask(lambda rid: DagCallEvent(rid, DagCall("dia", output_key="out")))
    answer, pushes = h.ask(lambda rid: CancelEvent(rid, "out"))
    assert answer == GenericResponse(success=True, response_id="out")
    cancel_ports = {p.address for p in pushes if isinstance(p.message, CancelRequest)}
    assert cancel_ports == {address.replace(":4000", ":4500") for address in placements.values()}
    assert {p.message.request_id for p in pushes} == {"out"}
    lost = executor_of_address(placements["f"])
    assert [p for p in h.executor(lost, ["f"], incarnation="two") if isinstance(p.message, DagSchedule)] == []
    # What the scheduler does not know (a call sent straight to an executor) may run anywhere: every executor is told.
    answer, pushes = h.ask(lambda rid: CancelEvent(rid, "unknown"))
    assert answer.success
    told = {p.address for p in pushes if isinstance(p.message, CancelRequest)}
    assert told == {endpoint((s.ip, s.tid)).replace(":4000", ":4500") for s in h.state.executors()}
    assert len(told) >= len(set(placements.values()))
