"""Executors over real sockets: a KVS child process, executor servers in threads, and the test as the scheduler.

Each test binds its executors and its scheduler socket to fresh random loopback addresses (127.x.y.z), because an
executor's ports are fixed by its tid; distinct addresses keep tests (and leftovers of a failed one) apart.
"""

import contextlib
import itertools
import pickle
import random
import threading
import time

import numpy as np
import pytest
import zmq

from cloudburst.clock import TimestampGenerator
from cloudburst.config import ExecutorConfig
from cloudburst.errors import CausalModeUnavailable, DeadlineExceeded, FunctionNotFound, RemoteExecutionError
from cloudburst.executor.local_tier import LocalReadTier
from cloudburst.executor.runtime import FunctionRuntime
from cloudburst.executor.server import ExecutorServer
from cloudburst.executor.state import DagRunItem, OutputForm, RunDagInstruction, RunFailed, RunSucceeded
from cloudburst.executor.user_library import UserLibrary
from cloudburst.keys import function_key
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.lattices import LwwLattice
from cloudburst.protocol import codec, values
from cloudburst.protocol.runtime_messages import (
    BEGIN,
    CallResult,
    Dag,
    DagSchedule,
    ErrorCode,
    FunctionCall,
    FunctionReference,
    GenericResponse,
    Link,
    PinFunction,
    ResultDelivery,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.retry import RetryPolicy
from cloudburst.shared.reference import CloudburstReference
from cloudburst.transport.zmq import PushSocketCache

pytestmark = pytest.mark.integration

WAIT = 10.0


def random_loopback():
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def wait_until(condition, what, timeout=WAIT):
    give_up = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


@pytest.fixture(scope="module")
def kvs():
    with KvsProcess(None) as node:
        yield node


class Deployment:
    """Executors in threads, plus the sockets the test uses to play scheduler and client."""

    def __init__(self, kvs_routing):
        self.kvs_routing = kvs_routing
        self.host = random_loopback()
        self.scheduler_host = random_loopback()
        self.context = zmq.Context()
        self.scheduler = self._pull(f"tcp://{self.scheduler_host}:5007")
        #: Scheduler messages received while waiting for another kind.
        self.backlog = []
        self.results = self.context.socket(zmq.PULL)
        self.results.setsockopt(zmq.LINGER, 0)
        self.result_address = f"tcp://127.0.0.1:{self.results.bind_to_random_port('tcp://127.0.0.1')}"
        self.push = PushSocketCache(self.context, linger_ms=0)
        self.kvs = KvsClient(kvs_routing, retry=RetryPolicy(attempt_timeout=0.5, min_backoff=0.01, max_backoff=0.1))
        self.stamp = TimestampGenerator(7)
        self.servers = []
        self.threads = []
        self.exit_codes = {}

    def _pull(self, endpoint):
        socket = self.context.socket(zmq.PULL)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(endpoint)
        return socket

    def start_executor(self, tid=0, **overrides):
        settings = {
            "host": self.host,
            "tid": tid,
            "schedulers": (self.scheduler_host,),
            "kvs_routing": self.kvs_routing,
            "report_period": 60.0,
            "kvs_timeout": 5.0,
        }
        settings.update(overrides)
        server = ExecutorServer(ExecutorConfig(**settings))

        def serve():
            self.exit_codes[tid] = server.serve_forever()

        thread = threading.Thread(target=serve, name=f"executor-{tid}")
        thread.start()
        self.servers.append(server)
        self.threads.append(thread)
        self.scheduler_message(ThreadStatus, lambda s: s.tid == tid and s.ip == self.host)
        return server

    def close(self):
        for server in self.servers:
            server.stop()
        for thread in self.threads:
            thread.join(WAIT)
        alive = [thread.name for thread in self.threads if thread.is_alive()]
        for server in self.servers:
            server.state.validate()
            server.close()
        self.kvs.close()
        self.push.close()
        self.scheduler.close()
        self.results.close()
        self.context.term()
        assert alive == []

    def register(self, name, function):
        self.kvs.put(function_key(name), LwwLattice(self.stamp(), values.serialize(function)))

    def send(self, server, request):
        self.push.send(server.control_endpoint, codec.encode_executor_request(request))

    def scheduler_message(self, kind, predicate=lambda m: True, timeout=WAIT):
        """The first message of ``kind`` matching ``predicate``; others are kept for later calls, in order."""

        def matches(message):
            return isinstance(message, kind) and predicate(message)

        for index, message in enumerate(self.backlog):
            if matches(message):
                return self.backlog.pop(index)
        give_up = time.monotonic() + timeout
        while (remaining := give_up - time.monotonic()) > 0:
            if self.scheduler.poll(int(remaining * 1000)):
                message = codec.decode_scheduler_message(self.scheduler.recv())
                if matches(message):
                    return message
                self.backlog.append(message)
        raise AssertionError(f"no {kind.__name__} reached the scheduler")

    def result(self, timeout=WAIT):
        if not self.results.poll(int(timeout * 1000)):
            raise AssertionError("no result was pushed")
        return self.results.recv()

    def call(self, server, name, *arguments, key=None, delivery=ResultDelivery.NOTIFY_ONLY, **fields):
        key = key or f"call-{random.getrandbits(48):x}"
        encoded = tuple(values.encode(a) for a in arguments)
        call = FunctionCall(
            name, encoded, response_key=key, response_address=self.result_address, delivery=delivery, **fields
        )
        self.send(server, call)
        return key

    def call_result(self, server, name, *arguments, **fields):
        key = self.call(server, name, *arguments, **fields)
        result = codec.decode_call_result(self.result())
        assert result.id == key
        return values.decode(result.value)

    def pin(self, server, name, request_id="pin-1", batching=False):
        reply_to = f"tcp://{self.scheduler_host}:5007"
        self.send(server, PinFunction(name, reply_to, request_id, batching))
        return self.scheduler_message(GenericResponse, lambda r: r.response_id == request_id)

    def run_dag(self, dag, placement, request_id, arguments=None, delivery=ResultDelivery.NOTIFY_ONLY):
        """Plays the scheduler's part of a DAG call: every schedule, then BEGIN triggers to the sources."""
        by_function = {f: self.servers[tid] for f, tid in placement.items()}
        locations = {f: f"{server.config.host}:{server.config.tid}" for f, server in by_function.items()}
        argument_map = {f: tuple(values.encode(a) for a in args) for f, args in (arguments or {}).items()}
        for function, server in by_function.items():
            schedule = DagSchedule(
                id=request_id,
                dag=dag,
                target_function=function,
                triggers=dag.upstream(function) or (BEGIN,),
                locations=locations,
                arguments=argument_map,
                response_address=self.result_address,
                delivery=delivery,
            )
            self.send(server, schedule)  # a source's schedule starts it


@pytest.fixture
def deployment(kvs):
    deployment = Deployment(kvs.routing)
    yield deployment
    deployment.close()


def chain(name, *functions, batching=()):
    references = tuple(FunctionReference(f, batching=f in batching) for f in functions)
    return Dag(name, references, tuple(Link(a, b) for a, b in itertools.pairwise(functions)))


# -- user functions (module level, so they pickle by reference within this process) ----------------------------


def square(_, x):
    return x * x


def split(_, x):
    return x, x + 1


def multiply(_, a, b):
    return a * b


def divide(_, a, b):
    return a / b


def never_called(_, *args):
    raise AssertionError("a stage after a failure ran")


class Counter:
    def __init__(self, library, start):
        self.count = start
        self.library = library

    def run(self, _, step):
        self.count += step
        return self.count


def receive_and_answer(lib, rendezvous):
    lib.put(rendezvous, lib.getid())
    give_up = time.monotonic() + WAIT
    while time.monotonic() < give_up:
        for sender, payload in lib.recv():
            lib.send(sender, payload.upper())
            return payload.decode()
        time.sleep(0.01)
    raise TimeoutError("nothing arrived")


def send_and_wait(lib, rendezvous):
    peer = wait_until(lambda: lib.get(rendezvous), "the peer's id")
    lib.send(tuple(peer), b"ping")
    give_up = time.monotonic() + WAIT
    while time.monotonic() < give_up:
        messages = lib.recv()
        if messages:
            return messages
        time.sleep(0.01)
    raise TimeoutError("no answer")


def read_inbox(lib):
    give_up = time.monotonic() + WAIT
    while time.monotonic() < give_up:
        messages = lib.recv()
        if messages:
            return messages
        time.sleep(0.01)
    return []


def identity(_, *args):
    return args


def batch_sum(_, xs, ys):
    return [x + y for x, y in zip(xs, ys, strict=True)]


def batch_short(_, xs):
    return xs[:1]


# -- tests -----------------------------------------------------------------------------------------------------


def test_an_executor_announces_itself_and_reports_pins_with_their_request_id(deployment):
    server = deployment.start_executor(tid=0)
    deployment.register("square", square)
    reply = deployment.pin(server, "square", request_id="pin-42")
    assert (reply.success, reply.response_id) == (True, "pin-42")
    status = deployment.scheduler_message(ThreadStatus, lambda s: s.functions == ("square",))
    assert (status.ip, status.tid, status.running) == (deployment.host, 0, True)
    refused = deployment.pin(server, "unregistered", request_id="pin-43")
    assert (refused.success, refused.error) == (False, ErrorCode.FUNC_NOT_FOUND)


def test_a_one_shot_call_notifies_the_caller_and_stores_the_result(deployment):
    server = deployment.start_executor()
    deployment.register("square", square)
    key = deployment.call(server, "square", 12, delivery=ResultDelivery.NOTIFY_AND_STORE)
    result = codec.decode_call_result(deployment.result())
    assert result == CallResult(key, values.encode(144))
    stored = wait_until(lambda: deployment.kvs.get(key), "the stored result")
    assert values.from_lattice(stored) == 144


def test_a_two_stage_dag_across_two_executors_delivers_the_sink_result(deployment):
    first, second = deployment.start_executor(tid=0), deployment.start_executor(tid=1)
    deployment.register("split", split)
    deployment.register("multiply", multiply)
    assert deployment.pin(first, "split", "p1").success
    assert deployment.pin(second, "multiply", "p2").success
    dag = chain("pipeline", "split", "multiply")
    deployment.run_dag(dag, {"split": 0, "multiply": 1}, "req-1", arguments={"split": [6]})
    result = codec.decode_call_result(deployment.result())
    # split's tuple result reaches multiply as two arguments.
    assert (result.id, values.decode(result.value)) == ("req-1", 42)


def test_a_legacy_dag_call_pushes_the_bare_value_original_clients_read(deployment):
    server = deployment.start_executor()
    deployment.register("square", square)
    assert deployment.pin(server, "square").success
    dag = chain("legacy", "square")
    deployment.run_dag(dag, {"square": 0}, "req-legacy", arguments={"square": [9]}, delivery=ResultDelivery.LEGACY)
    assert values.deserialize(deployment.result()) == 81


def test_user_exceptions_are_delivered_with_their_traceback_and_the_executor_keeps_serving(deployment):
    server = deployment.start_executor()
    deployment.register("divide", divide)
    deployment.register("never_called", never_called)
    key = deployment.call(server, "divide", 1, 0)
    result = codec.decode_call_result(deployment.result())
    with pytest.raises(RemoteExecutionError) as caught:
        values.decode(result.value)
    error = caught.value
    assert result.id == key
    assert (error.function, error.request_id, error.node) == ("divide", key, f"{deployment.host}:0")
    assert error.exception_type == "builtins.ZeroDivisionError"
    assert "ZeroDivisionError" in error.remote_traceback
    assert "in divide" in error.remote_traceback

    assert deployment.pin(server, "divide", "p1").success
    assert deployment.pin(server, "never_called", "p2").success
    dag = chain("failing", "divide", "never_called")
    deployment.run_dag(dag, {"divide": 0, "never_called": 0}, "req-fail", arguments={"divide": [1, 0]})
    result = codec.decode_call_result(deployment.result())
    with pytest.raises(RemoteExecutionError) as caught:
        values.decode(result.value)
    assert (caught.value.dag, caught.value.request_id, result.id) == ("failing", "req-fail", "req-fail")

    assert deployment.call_result(server, "divide", 9, 3) == 3.0


def test_functions_running_on_two_executors_exchange_messages(deployment):
    first, second = deployment.start_executor(tid=0), deployment.start_executor(tid=1)
    deployment.register("receive_and_answer", receive_and_answer)
    deployment.register("send_and_wait", send_and_wait)
    rendezvous = f"rendezvous-{random.getrandbits(32)}"
    receiver_key = deployment.call(second, "receive_and_answer", rendezvous)
    sender_key = deployment.call(first, "send_and_wait", rendezvous)
    results = {}
    for _ in range(2):
        result = codec.decode_call_result(deployment.result())
        results[result.id] = values.decode(result.value)
    assert results[receiver_key] == "ping"
    assert results[sender_key] == [((deployment.host, 1), b"PING")]


def test_a_message_that_arrives_between_invocations_waits_for_the_next_recv(deployment):
    server = deployment.start_executor(tid=0)
    deployment.register("read_inbox", read_inbox)
    deployment.register("square", square)
    inbox = f"tcp://{deployment.host}:{server.config.ports.executor_inbox}"
    deployment.push.send(inbox, pickle.dumps((("127.0.0.1", 9), b"early")))
    deployment.push.send(inbox, b"not a pickle")
    assert deployment.call_result(server, "square", 2) == 4
    assert deployment.call_result(server, "read_inbox") == [(("127.0.0.1", 9), b"early")]


def take_inbox(lib):
    return lib.recv()


def receive_and_leave_one(lib):
    """Takes what waits, then leaves one message of its own unread (a peer's late message, say)."""
    taken = lib.recv()
    lib.send(lib.getid(), b"late")
    time.sleep(0.2)  # lets the message reach the inbox before the invocation ends
    return taken


def test_what_an_invocation_that_received_leaves_unread_ends_with_it(deployment):
    # As in the original: an exchange's leftovers must not reach the next program run on the executor.
    server = deployment.start_executor(tid=0)
    deployment.register("receive_and_leave_one", receive_and_leave_one)
    deployment.register("take_inbox", take_inbox)
    assert deployment.call_result(server, "receive_and_leave_one") == []
    assert deployment.call_result(server, "take_inbox") == []


def test_a_registered_class_keeps_its_state_across_dag_calls(deployment):
    server = deployment.start_executor()
    deployment.register("counter", (Counter, 100))  # a bare init argument, not a tuple
    assert deployment.pin(server, "counter").success
    dag = chain("counting", "counter")
    seen = []
    for i, step in enumerate((1, 10)):
        deployment.run_dag(dag, {"counter": 0}, f"count-{i}", arguments={"counter": [step]})
        seen.append(values.decode(codec.decode_call_result(deployment.result()).value))
    assert seen == [101, 111]


def test_references_are_resolved_before_the_call_and_missing_ones_fail_naming_the_key(deployment):
    server = deployment.start_executor(kvs_timeout=0.5)
    deployment.register("identity", identity)
    deployment.kvs.put("ref/present", values.to_lattice({"a": 1}, deployment.stamp))
    present = deployment.call_result(
        server, "identity", CloudburstReference("ref/present"), CloudburstReference("ref/present", False), 3
    )
    assert present[0] == {"a": 1}
    assert values.deserialize(present[1]) == {"a": 1}
    assert present[2] == 3
    started = time.monotonic()
    key = deployment.call(server, "identity", CloudburstReference("ref/never-written"))
    result = codec.decode_call_result(deployment.result())
    assert result.id == key
    with pytest.raises(DeadlineExceeded, match="ref/never-written"):
        values.decode(result.value)
    assert time.monotonic() - started >= 0.4


def test_a_reference_to_a_result_still_being_produced_is_waited_for(deployment):
    server = deployment.start_executor(kvs_timeout=5.0)
    deployment.register("identity", identity)
    key = deployment.call(server, "identity", CloudburstReference("ref/later"))
    deployment.kvs.put("ref/later", values.to_lattice("arrived", deployment.stamp))
    result = codec.decode_call_result(deployment.result())
    assert result.id == key
    assert values.decode(result.value) == ("arrived",)


def test_unpin_drops_the_function_and_the_executor_keeps_running(deployment):
    server = deployment.start_executor()
    deployment.register("square", square)
    assert deployment.pin(server, "square").success
    deployment.send(server, UnpinFunction("square"))
    status = deployment.scheduler_message(ThreadStatus, lambda s: s.functions == ())
    assert status.running
    wait_until(lambda: server.runtime.pinned() == (), "the unload")
    assert deployment.call_result(server, "square", 5) == 25


def test_garbage_on_the_control_socket_is_rejected_and_serving_continues(deployment):
    server = deployment.start_executor()
    deployment.register("square", square)
    for garbage in (b"\xff\xfe garbage", b"", bytes(range(256))):
        deployment.push.send(server.control_endpoint, garbage)
    assert deployment.call_result(server, "square", 3) == 9
    assert server.rejected_messages >= 2


def test_self_depart_reports_not_running_and_stops_once_drained(deployment):
    server = deployment.start_executor()
    deployment.register("square", square)
    deployment.send(server, SelfDepart())
    status = deployment.scheduler_message(ThreadStatus, lambda s: not s.running)
    assert status.functions == ()
    assert deployment.call_result(server, "square", 4) == 16
    wait_until(lambda: 0 in deployment.exit_codes, "the executor to exit")
    assert deployment.exit_codes[0] == 0


# -- the runtime on its own, against the real KVS ----------------------------------------------------------------


@pytest.fixture
def runtime(kvs):
    host = random_loopback()
    config = ExecutorConfig(host=host, tid=0, kvs_routing=kvs.routing, kvs_timeout=2.0)
    context = zmq.Context()
    push = PushSocketCache(context, linger_ms=0)
    client = KvsClient(kvs.routing, host=host)
    library = UserLibrary(config, client, context, push)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(context.term)
        cleanup.callback(client.close)
        cleanup.callback(push.close)
        cleanup.callback(library.close)
        yield FunctionRuntime(config, client, library), client, library


def test_a_value_nobody_can_change_is_decoded_once_while_the_read_tier_keeps_it(kvs):
    host = random_loopback()
    config = ExecutorConfig(host=host, tid=0, kvs_routing=kvs.routing, kvs_timeout=2.0)
    with contextlib.ExitStack() as cleanup:
        context = zmq.Context()
        cleanup.callback(context.term)
        publisher = context.socket(zmq.PUB)
        cleanup.callback(publisher.close)
        publisher.bind("inproc://invalidations")
        client = KvsClient(kvs.routing, host=host)
        cleanup.callback(client.close)
        tier = LocalReadTier(client, "inproc://invalidations", context)
        cleanup.callback(tier.close)
        push = PushSocketCache(context, linger_ms=0)
        cleanup.callback(push.close)
        library = UserLibrary(config, tier, context, push)
        cleanup.callback(library.close)
        time.sleep(0.05)  # the subscription joins asynchronously
        publisher.send_multipart([(1).to_bytes(8, "big")])  # the stream is heard: the tier keeps copies from now on
        time.sleep(0.01)
        library.put(["scalar", "array", "list"], [b"x" * 100, np.arange(4), [1, 2]])
        scalar = library.get("scalar")
        assert library.get("scalar") is scalar  # the same bytes from the tier: not unpickled again
        array = library.get("array")
        assert library.get("array") is array
        assert not array.flags.writeable  # a view of the received bytes: nobody can change it
        listed = library.get("list")
        listed.append(3)
        assert library.get("list") == [1, 2]  # a list may be changed by its reader: each read decodes afresh
        library.put("scalar", b"y")
        assert library.get("scalar") == b"y"  # a new value is new bytes: decoded again


def register(client, name, function, stamp):
    timestamp = stamp()
    client.put(function_key(name), LwwLattice(timestamp, values.serialize(function)))
    return timestamp


def dag_item(request_id, *arguments, output=OutputForm.RESULT):
    return DagRunItem(request_id, "d", tuple(values.encode(a) for a in arguments), output)


def test_a_batch_gets_lists_and_each_request_gets_its_result(runtime):
    functions, client, _ = runtime
    register(client, "batch_sum", batch_sum, TimestampGenerator(1))
    functions.load_pinned("batch_sum")
    items = tuple(dag_item(f"r{i}", i, 10 * i) for i in range(3))
    outcomes = functions.run_dag(RunDagInstruction(1, "batch_sum", items, batching=True))
    assert [values.decode(o.result.value) for o in outcomes] == [0, 11, 22]


def test_a_batch_with_the_wrong_number_of_results_fails_every_request(runtime):
    functions, client, _ = runtime
    register(client, "batch_short", batch_short, TimestampGenerator(1))
    functions.load_pinned("batch_short")
    items = (dag_item("r0", 1), dag_item("r1", 2))
    outcomes = functions.run_dag(RunDagInstruction(1, "batch_short", items, batching=True))
    assert all(isinstance(o, RunFailed) for o in outcomes)
    assert [o.error.request_id for o in outcomes] == ["r0", "r1"]
    assert "returned 1 results for a batch of 2" in str(outcomes[0].error)


def test_tuple_results_become_one_downstream_argument_per_element_and_invalid_results_are_flagged(runtime):
    functions, client, _ = runtime
    register(client, "split", split, TimestampGenerator(1))
    functions.load_pinned("split")
    (outcome,) = functions.run_dag(
        RunDagInstruction(1, "split", (dag_item("r", 4, output=OutputForm.TRIGGER_ARGUMENTS),), batching=False)
    )
    assert isinstance(outcome, RunSucceeded)
    assert [values.decode(a) for a in outcome.arguments] == [4, 5]
    invalid = DagRunItem("r", "d", (values.encode(4),), OutputForm.RESULT, (values.serialize((4, 5)),))
    (outcome,) = functions.run_dag(RunDagInstruction(2, "split", (invalid,), batching=False))
    assert outcome == RunSucceeded(valid=False)


def test_one_shot_functions_reload_when_a_new_version_is_asked_for(runtime):
    functions, client, _ = runtime
    stamp = TimestampGenerator(1)
    register(client, "versioned", square, stamp)
    call = FunctionCall("versioned", (values.encode(3),), response_key="k")
    assert values.decode(functions.run_one_shot(call).result.value) == 9
    version = register(client, "versioned", split, stamp)
    assert values.decode(functions.run_one_shot(call).result.value) == 9  # version 0: any cached one will do
    reloaded = FunctionCall("versioned", (values.encode(3),), response_key="k", function_version=version)
    assert values.decode(functions.run_one_shot(reloaded).result.value) == (3, 4)


def test_a_missing_one_shot_function_is_a_function_not_found_error(runtime):
    functions, _, _ = runtime
    outcome = functions.run_one_shot(FunctionCall("nothing-here", response_key="k"))
    assert isinstance(outcome, RunFailed)
    assert isinstance(outcome.error, FunctionNotFound)
    assert outcome.error.request_id == "k"


# -- the user library on its own ---------------------------------------------------------------------------------


def test_the_user_library_reads_and_writes_single_keys_and_lists(runtime):
    _, _, library = runtime
    prefix = f"lib-{random.getrandbits(32):x}"
    assert library.put(f"{prefix}/one", {"n": 1}) is True
    assert library.put([f"{prefix}/a", f"{prefix}/b"], [1, "two"]) == {f"{prefix}/a": True, f"{prefix}/b": True}
    assert library.get(f"{prefix}/one") == {"n": 1}
    assert library.get(f"{prefix}/missing") is None
    assert library.get([f"{prefix}/a", f"{prefix}/b", f"{prefix}/missing"]) == {
        f"{prefix}/a": 1,
        f"{prefix}/b": "two",
        f"{prefix}/missing": None,
    }
    assert values.deserialize(library.get(f"{prefix}/one", deserialize=False)) == {"n": 1}
    with pytest.raises(ValueError, match="needs a list of 2 values"):
        library.put([f"{prefix}/a", f"{prefix}/b"], [1])


def test_sets_written_through_the_user_library_union(runtime):
    _, _, library = runtime
    key = f"lib-set-{random.getrandbits(32):x}"
    library.put(key, {"a", "b"})
    library.put(key, {"c"})
    assert sorted(library.get(key)) == ["a", "b", "c"]


def test_the_user_library_checks_message_destinations_and_refuses_causal_calls_outside_causal_requests(runtime):
    _, _, library = runtime
    assert library.getid() == (library.getid()[0], 0)
    with pytest.raises(TypeError, match="getid"):
        library.send("127.0.0.1", b"x")
    with pytest.raises(TypeError, match="bytes"):
        library.send(library.getid(), "text")
    with pytest.raises(CausalModeUnavailable, match="causal_get"):
        library.causal_get("k")
    with pytest.raises(CausalModeUnavailable):
        library.causal_put("k", 1)


def test_a_message_sent_to_oneself_is_received_once(runtime):
    _, _, library = runtime
    library.send(library.getid(), b"note to self")
    assert wait_until(library.recv, "the message") == [(library.getid(), b"note to self")]
    assert library.recv() == []


def test_the_user_library_tracks_writes_only_within_a_normal_request(runtime):
    _, _, library = runtime
    key = f"tracked-{random.getrandbits(32):x}"
    library.put(key, 1)  # a one-shot call's write: nothing is kept for it
    library.begin_request(["upstream"])
    assert library.end_request() == ("upstream",)
    library.begin_request([])
    library.put(key, 2)
    library.put([f"{key}-a", f"{key}-b"], [3, 4])
    assert library.end_request() == (key, f"{key}-a", f"{key}-b")
