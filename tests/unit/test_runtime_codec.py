import pytest

from cloudburst.errors import DagNotFound, DecodeError, InvalidDag
from cloudburst.lattices import VectorClock
from cloudburst.protocol import codec
from cloudburst.protocol.errors import error_from_response, failure_response
from cloudburst.protocol.messages import ConsistencyType, SerializerType
from cloudburst.protocol.runtime_messages import (
    CallResult,
    ClusterStatus,
    Continuation,
    Dag,
    DagCall,
    DagSchedule,
    DagStatistics,
    DagTrigger,
    EncodedValue,
    ErrorCode,
    ExecutionType,
    ExecutorStatistics,
    ExecutorType,
    Function,
    FunctionCall,
    FunctionLocation,
    FunctionReference,
    FunctionStatistics,
    GenericResponse,
    KeyVersion,
    Link,
    PinFunction,
    ResultDelivery,
    SchedulerStatus,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.wire import cloudburst_pb2

ARG = EncodedValue(b"\x80\x05K\x01.", SerializerType.DEFAULT)
DAG = Dag(
    "pipeline",
    (FunctionReference("a"), FunctionReference("b", ExecutionType.MULTIEXEC, (b"bad",), gpu=True, batching=True)),
    (Link("a", "b"),),
    ("a", "b"),
)
CALL = DagCall(
    "next",
    {"a": (ARG,)},
    "tcp://127.0.0.1:9",
    ConsistencyType.MULTI,
    "out",
    "client",
    Continuation("after", "id0", b"r", None),
    ResultDelivery.NOTIFY_ONLY,
    {"a": ("ref/1", "ref/2")},
)
SCHEDULE = DagSchedule(
    id="id1",
    dag=DAG,
    target_function="b",
    triggers=("a",),
    locations={"a": "127.0.0.1:0", "b": "127.0.0.1:1"},
    arguments={"a": (ARG, ARG)},
    consistency=ConsistencyType.SINGLE,
    response_address="tcp://127.0.0.1:9",
    output_key="k",
    client_id="c",
    start_time=12.5,
    continuation=Continuation("next", "id1", b"", CALL),
    delivery=ResultDelivery.NOTIFY_AND_STORE,
)
TRIGGER = DagTrigger(
    "id1",
    "b",
    "a",
    (ARG,),
    {"10.0.0.1": (KeyVersion("k", VectorClock.of({"c": 2})),)},
    (KeyVersion("j", VectorClock.of({"c": 1})),),
)


@pytest.mark.parametrize(
    "message",
    [
        PinFunction("f", "tcp://127.0.0.1:5007", "pin-1", batching=True),
        UnpinFunction("f"),
        FunctionCall(
            "f", (ARG,), 3, "key", ConsistencyType.NORMAL, ("n1",), "tcp://127.0.0.1:9", ResultDelivery.NOTIFY_ONLY
        ),
        FunctionCall("f", response_key="key", placed_by="127.0.0.2"),
        SCHEDULE,
        TRIGGER,
        SelfDepart(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_executor_envelope_round_trip(message):
    assert codec.decode_executor_request(codec.encode_executor_request(message)) == message


@pytest.mark.parametrize(
    "message",
    [
        ThreadStatus("127.0.0.1", 2, ("f", "g"), 0.5, False, ExecutorType.GPU, "inc"),
        ThreadStatus("127.0.0.1", 3, running=False, incarnation="inc", departed=True),
        ThreadStatus("127.0.0.1", 4, queued=3, finished=("k1", "k2")),
        GenericResponse(False, "pin-1", ErrorCode.NO_RESOURCES, "busy"),
        Continuation("next", "id1", b"r", CALL),
        SchedulerStatus(("d",), (FunctionLocation("f", "127.0.0.1", 1),), ("gone",)),
        ExecutorStatistics(
            (FunctionStatistics("f", 3, (0.5, 0.25)),), (DagStatistics("d", (1.0,), (0.5,), 2),), "ip:1"
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_scheduler_envelope_round_trip(message):
    assert codec.decode_scheduler_message(codec.encode_scheduler_message(message)) == message


def test_client_messages_round_trip():
    assert codec.decode_dag(codec.encode_dag(DAG)) == DAG
    assert codec.decode_dag_call(codec.encode_dag_call(CALL)) == CALL
    assert codec.decode_function(codec.encode_function(Function("f", b"body"))) == Function("f", b"body")
    call = FunctionCall("f", (ARG,))
    assert codec.decode_function_call(codec.encode_function_call(call)) == call
    response = GenericResponse(True, "rid")
    assert codec.decode_generic_response(codec.encode_generic_response(response)) == response
    result = CallResult("rid", ARG)
    assert codec.decode_call_result(codec.encode_call_result(result)) == result
    status = ClusterStatus((ThreadStatus("127.0.0.1", 0),), ("d",), ("f",))
    assert codec.decode_cluster_status(codec.encode_cluster_status(status)) == status


def test_original_client_bytes_decode():
    # What the original client sends for `call_dag('test_dag', {'incr': 1})`, built with the original field numbers.
    pb = cloudburst_pb2.DagCall(name="test_dag")
    pb.function_args["incr"].values.add(body=b"\x80\x05K\x01.", type=cloudburst_pb2.DEFAULT)
    call = codec.decode_dag_call(pb.SerializeToString())
    assert call == DagCall("test_dag", {"incr": (ARG,)})


def test_empty_envelopes_are_decode_errors():
    with pytest.raises(DecodeError, match="no message"):
        codec.decode_executor_request(b"")
    with pytest.raises(DecodeError, match="no message"):
        codec.decode_scheduler_message(b"")


def test_dag_helpers_follow_edge_order():
    dag = Dag("d", tuple(FunctionReference(n) for n in "abcd"), (Link("b", "d"), Link("a", "d"), Link("c", "b")))
    assert dag.upstream("d") == ("b", "a")
    assert dag.downstream("c") == ("b",)
    assert dag.sources() == ("a", "c")
    assert dag.reference("zz") is None


def test_error_codes_map_to_error_classes():
    error = error_from_response(GenericResponse(False, "", ErrorCode.NO_SUCH_DAG, "no DAG 'x'"), "call of DAG 'x'")
    assert isinstance(error, DagNotFound)
    assert "no DAG 'x'" in str(error)
    response = failure_response(InvalidDag("cycle a -> b -> a"), "r")
    assert (response.error, response.error_message) == (ErrorCode.INVALID_DAG, "cycle a -> b -> a")
