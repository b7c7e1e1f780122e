"""A scheduler over real sockets: a KVS child process, the scheduler server in a thread, and the test playing both
an original-protocol client (plain REQ sockets) and an executor (a PULL socket on an executor control port).

Each test binds its scheduler and fake executor to a fresh random loopback address (127.x.y.z), because the
scheduler's and executors' ports are fixed; distinct addresses keep tests (and leftovers of a failed one) apart.
"""

import contextlib
import random
import threading
import time
import uuid

import pytest
import zmq

from cloudburst.config import RuntimePorts, SchedulerConfig
from cloudburst.kvs.process import KvsProcess
from cloudburst.protocol import codec
from cloudburst.protocol.messages import SerializerType
from cloudburst.protocol.runtime_messages import (
    BEGIN,
    Dag,
    DagCall,
    DagSchedule,
    EncodedValue,
    ErrorCode,
    Function,
    FunctionCall,
    FunctionReference,
    GenericResponse,
    Link,
    PinFunction,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.scheduler.server import SchedulerServer

pytestmark = pytest.mark.integration

WAIT = 10.0
PORTS = RuntimePorts()
TID = 3


def random_loopback():
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture(scope="module")
def kvs():
    with KvsProcess(None) as node:
        yield node


class Deployment:
    """A scheduler server in a thread, with the sockets the test uses as client and as executor."""

    def __init__(self, kvs_routing, **overrides):
        self.host = random_loopback()
        settings = {"host": self.host, "kvs_routing": kvs_routing, "report_period": 5.0, "pin_timeout": 5.0}
        settings.update(overrides)
        self.config = SchedulerConfig(**settings)
        self.context = zmq.Context()
        self.sockets = []
        self.servers = []
        self.threads = []
        self.executor = self._socket(zmq.PULL)
        self.executor.bind(PORTS.executor_control_endpoint(self.host, TID))
        self.to_scheduler = self._socket(zmq.PUSH)
        self.to_scheduler.connect(PORTS.scheduler_internal_endpoint(self.host))
        self.start_scheduler()

    def _socket(self, kind):
        socket = self.context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        self.sockets.append(socket)
        return socket

    def start_scheduler(self):
        server = SchedulerServer(self.config)
        thread = threading.Thread(target=server.serve_forever, name=f"scheduler-{len(self.servers)}")
        thread.start()
        self.servers.append(server)
        self.threads.append(thread)
        return server

    def stop_scheduler(self):
        server, thread = self.servers.pop(), self.threads.pop()
        server.stop()
        thread.join(WAIT)
        assert not thread.is_alive()
        server.state.validate()
        server.close()

    def close(self):
        while self.servers:
            self.stop_scheduler()
        for socket in self.sockets:
            socket.close()
        self.context.term()

    # -- the client side --------------------------------------------------------------------------------------------

    def client(self, port, kind=zmq.REQ):
        socket = self._socket(kind)
        socket.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
        socket.connect(f"tcp://{self.host}:{port}")
        return socket

    def request(self, port, payload):
        """One request on a fresh REQ socket, exactly as an original client sends it; returns the reply bytes."""
        socket = self.context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
        socket.connect(f"tcp://{self.host}:{port}")
        try:
            socket.send(payload)
            return socket.recv()
        finally:
            # A context holds at most 1,023 sockets: polling loops must not keep one per request.
            socket.close()

    def generic(self, port, payload):
        return codec.decode_generic_response(self.request(port, payload))

    def register(self, name):
        reply = self.generic(PORTS.function_create, codec.encode_function(Function(name, b"a pickled function")))
        assert reply.success, reply

    def status(self):
        return codec.decode_cluster_status(self.request(PORTS.status_query, b""))

    # -- the executor side ------------------------------------------------------------------------------------------

    def announce(self, functions=(), incarnation="one"):
        """Reports the fake executor and waits until the scheduler knows it (so the next request can use it)."""
        status = ThreadStatus(self.host, TID, tuple(functions), incarnation=incarnation)
        self.to_scheduler.send(codec.encode_scheduler_message(status))
        give_up = time.monotonic() + WAIT
        while not any(e.tid == TID and set(e.functions) == set(functions) for e in self.status().executors):
            assert time.monotonic() < give_up, "the scheduler did not learn of the executor"
            time.sleep(0.005)

    def receive(self, count):
        """The next ``count`` messages on the executor's control socket."""
        messages = []
        for _ in range(count):
            assert self.executor.poll(int(WAIT * 1000)), f"the executor got {len(messages)} of {count} messages"
            messages.append(codec.decode_executor_request(self.executor.recv()))
        return messages

    def nothing_received(self, seconds=0.3):
        return not self.executor.poll(int(seconds * 1000))

    def answer_pin(self, pin, success=True):
        replies = self.context.socket(zmq.PUSH)
        replies.setsockopt(zmq.LINGER, 1000)
        with contextlib.closing(replies):
            replies.connect(pin.response_address)
            replies.send(codec.encode_scheduler_message(GenericResponse(success, pin.request_id)))


@pytest.fixture
def deployment(kvs):
    deployment = Deployment(kvs.routing)
    yield deployment
    deployment.close()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_dag(deployment, dag):
    """Sends a DAG creation, accepts every pin as the executor, and returns the reply and the pins."""
    client = deployment.client(PORTS.dag_create)
    client.send(codec.encode_dag(dag))
    pins = deployment.receive(len(dag.functions))
    for pin in pins:
        assert isinstance(pin, PinFunction)
        deployment.answer_pin(pin)
    return codec.decode_generic_response(client.recv()), pins


def test_connect_answers_the_kvs_routing_endpoint(deployment, kvs):
    assert deployment.request(PORTS.connect, b"").decode() == kvs.routing


def test_register_list_and_call_a_function(deployment):
    name = unique("square")
    deployment.register(name)
    listed = codec.decode_string_set(deployment.request(PORTS.list, name[:8].encode()))
    assert name in listed
    assert codec.decode_string_set(deployment.request(PORTS.list, b"no-such-prefix")) == ()
    deployment.announce()
    argument = EncodedValue(b"opaque bytes the scheduler must not unpickle", SerializerType.DEFAULT)
    reply = deployment.generic(PORTS.function_call, codec.encode_function_call(FunctionCall(name, (argument,))))
    assert reply.success
    [call] = deployment.receive(1)
    assert isinstance(call, FunctionCall)
    assert call.name == name
    assert call.arguments == (argument,)
    assert call.response_key == reply.response_id
    assert call.function_version > 0


def test_call_of_an_unknown_function_is_refused_with_a_message(deployment):
    reply = deployment.generic(PORTS.function_call, codec.encode_function_call(FunctionCall("no-such-function")))
    assert reply.error == ErrorCode.FUNC_NOT_FOUND
    assert reply.error_message == "no function named 'no-such-function' is registered"


def test_create_call_and_delete_a_dag(deployment):
    first, second = unique("f"), unique("g")
    for name in (first, second):
        deployment.register(name)
    deployment.announce()
    dag = Dag(unique("pipe"), (FunctionReference(first), FunctionReference(second)), (Link(first, second),))
    reply, pins = create_dag(deployment, dag)
    assert reply == GenericResponse(success=True)
    assert [pin.name for pin in pins] == [first, second]
    assert all(pin.response_address == PORTS.scheduler_internal_endpoint(deployment.host) for pin in pins)
    assert dag.name in deployment.status().dags

    call = DagCall(dag.name, {first: (EncodedValue(b"1", SerializerType.STRING),)}, output_key="result-key")
    reply = deployment.generic(PORTS.dag_call, codec.encode_dag_call(call))
    assert reply == GenericResponse(success=True, response_id="result-key")
    schedules = deployment.receive(2)  # the source's schedule starts it: no separate BEGIN trigger
    assert all(isinstance(m, DagSchedule) for m in schedules)
    assert sorted(s.target_function for s in schedules) == sorted([first, second])
    location = f"{deployment.host}:{TID}"
    assert all(dict(s.locations) == {first: location, second: location} for s in schedules)
    assert {s.target_function: s.triggers for s in schedules} == {first: (BEGIN,), second: (first,)}

    reply = deployment.generic(PORTS.dag_delete, dag.name.encode())
    assert reply == GenericResponse(success=True)
    unpins = deployment.receive(2)
    assert sorted(u.name for u in unpins if isinstance(u, UnpinFunction)) == sorted([first, second])
    reply = deployment.generic(PORTS.dag_call, codec.encode_dag_call(DagCall(dag.name)))
    assert reply.error == ErrorCode.NO_SUCH_DAG
    assert deployment.generic(PORTS.dag_delete, dag.name.encode()).error == ErrorCode.NO_SUCH_DAG


def test_an_invalid_dag_is_refused_with_a_message(deployment):
    name = unique("f")
    deployment.register(name)
    dag = Dag(unique("loop"), (FunctionReference(name),), (Link(name, name),))
    reply = deployment.generic(PORTS.dag_create, codec.encode_dag(dag))
    assert reply.error == ErrorCode.INVALID_DAG
    assert f"link {name!r} -> {name!r} is a self-loop" in reply.error_message


def test_a_dag_creation_waiting_for_pins_does_not_block_other_requests(kvs):
    deployment = Deployment(kvs.routing, pin_timeout=2.0)
    try:
        name = unique("f")
        deployment.register(name)
        deployment.announce()
        creator = deployment.client(PORTS.dag_create)
        creator.send(codec.encode_dag(Dag(unique("slow"), (FunctionReference(name),))))
        [pin] = deployment.receive(1)
        assert isinstance(pin, PinFunction)
        # The executor never answers; meanwhile the scheduler keeps serving, answering out of order.
        assert deployment.request(PORTS.connect, b"")
        assert deployment.status().executors
        assert not creator.poll(0), "the creation was answered before the pin could time out"
        reply = codec.decode_generic_response(creator.recv())
        assert reply.error == ErrorCode.NO_RESOURCES
        assert f"no answer within 2s from {deployment.host}:{TID}" in reply.error_message
        # A late acceptance is undone.
        deployment.answer_pin(pin)
        [unpin] = deployment.receive(1)
        assert unpin == UnpinFunction(name)
    finally:
        deployment.close()


def test_a_restarted_scheduler_recovers_its_dags_from_the_kvs(deployment):
    name = unique("f")
    deployment.register(name)
    deployment.announce()
    dag = Dag(unique("kept"), (FunctionReference(name),))
    reply, _ = create_dag(deployment, dag)
    assert reply.success
    deployment.stop_scheduler()
    deployment.start_scheduler()
    status = deployment.status()
    assert dag.name in status.dags
    assert name in status.functions
    deployment.announce([name], incarnation="one")
    reply = deployment.generic(PORTS.dag_call, codec.encode_dag_call(DagCall(dag.name)))
    assert reply.success
    (schedule,) = deployment.receive(1)  # its schedule, which starts it
    assert isinstance(schedule, DagSchedule)
    assert schedule.target_function == name


def test_garbage_on_every_port_is_answered_and_the_scheduler_keeps_serving(deployment):
    garbage = b"\xff\x00 this is not a protobuf \xfe"
    for port in (PORTS.function_create, PORTS.function_call, PORTS.dag_create, PORTS.dag_call):
        reply = deployment.generic(port, garbage)
        assert reply.error == ErrorCode.INVALID_REQUEST
        assert reply.error_message.startswith("cannot decode")
    for port in (PORTS.list, PORTS.dag_delete):
        reply = deployment.generic(port, b"\xff\xfe")
        assert reply.error == ErrorCode.INVALID_REQUEST
        assert "not UTF-8" in reply.error_message
    # Connect and status take any content.
    assert deployment.request(PORTS.connect, garbage)
    assert deployment.request(PORTS.status_query, garbage)
    # A request without the REQ delimiter, and one with two payload frames, are answered too.
    dealer = deployment.client(PORTS.dag_call, zmq.DEALER)
    dealer.send(garbage)
    assert codec.decode_generic_response(dealer.recv()).error == ErrorCode.INVALID_REQUEST
    dealer.send_multipart([b"", b"one", b"two"])
    frames = dealer.recv_multipart()
    assert frames[0] == b""
    assert "expected one payload frame, got 2" in codec.decode_generic_response(frames[1]).error_message
    assert deployment.servers[0].rejected_messages == 8
    # Garbage on the internal port is dropped; the status sent after it on the same socket is still taken.
    deployment.to_scheduler.send(garbage)
    deployment.to_scheduler.send(b"")
    deployment.announce()
    assert deployment.servers[0].rejected_messages == 10
    # Still serving everyone.
    name = unique("after")
    deployment.register(name)
    assert name in codec.decode_string_set(deployment.request(PORTS.list, b""))


def test_an_executor_that_stops_running_gets_no_more_work(deployment):
    name = unique("f")
    deployment.register(name)
    deployment.announce()
    departing = ThreadStatus(deployment.host, TID, running=False, incarnation="one")
    deployment.to_scheduler.send(codec.encode_scheduler_message(departing))
    give_up = time.monotonic() + WAIT
    while deployment.status().executors:
        assert time.monotonic() < give_up
    reply = deployment.generic(PORTS.function_call, codec.encode_function_call(FunctionCall(name)))
    assert reply.error == ErrorCode.NO_RESOURCES
    assert deployment.nothing_received()
