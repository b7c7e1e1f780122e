"""The runtime end to end: a real cluster (KVS, scheduler, executor processes) on a private loopback address."""

import threading
import time

import pytest

import cloudburst
from cloudburst.errors import DagNotFound, DeadlineExceeded, InvalidDag, RemoteExecutionError
from cloudburst.shared.reference import CloudburstReference

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["embedded", "redis-cluster"])
def cb(request):
    """The core runtime on one node over the embedded KVS, and on 3 nodes over a Redis Cluster."""
    if request.param == "embedded":
        with cloudburst.local(executors=3) as connection:
            yield connection
        return
    engine = request.getfixturevalue("open_redis_engine")("redis-cluster")  # flushed
    try:
        with cloudburst.local(executors=1, nodes=3, kvs=request.getfixturevalue("redis_cluster").url) as connection:
            connection.put_object("where-is-this-stored", 1)
            assert engine.get_many(["where-is-this-stored"]) != [None]  # in Redis, not in the KVS process
            yield connection
    finally:
        engine.close()


def wait_for(lib, key, seconds=10.0):
    """Polls the KVS from inside a function (functions have no other way to wait for a peer's key)."""
    give_up = time.monotonic() + seconds
    while (value := lib.get(key)) is None:
        if time.monotonic() > give_up:
            raise TimeoutError(key)
        time.sleep(0.01)
    return value


def test_one_shot_call_and_future_as_reference(cb):
    square = cb.register(lambda _, x: x * x, "rt_square")
    incr = cb.register(lambda _, x: x + 1, "rt_incr")
    assert square(3).result(timeout=30) == 9
    assert square(incr(1)).result(timeout=30) == 4
    assert "rt_square" in cb.list("rt_")


def slow_increment(_, x, seconds):
    time.sleep(seconds)
    return x + 1


def marked_square(lib, x, marker):
    lib.put(marker, x)
    return x * x


def test_futures_not_resolved_yet_hold_their_call_back_until_their_results_come(cb):
    cb.register(slow_increment, "rt_slow_incr")
    cb.register(marked_square, "rt_marked_square")
    cb.register(lambda _, a, b, c: a + b + c, "rt_sum3")
    cb.register(lambda _, x: x + 1, "rt_incr")
    upstream = cb.call("rt_slow_incr", 1, 0.3)
    chained = cb.call("rt_marked_square", upstream, "rt/marker-chained")
    assert not chained.done()
    assert chained.result(timeout=30) == 4
    # Three deep, several futures per call, one of them done already, one from another connection.
    with cloudburst.Connection(cb.scheduler, ports=cb.ports) as other:
        theirs = other.call("rt_slow_incr", 10, 0.2)
        first = cb.call("rt_incr", 1)
        first.result(timeout=30)
        deep = cb.call("rt_sum3", first, theirs, cb.call("rt_incr", cb.call("rt_slow_incr", 0, 0.1)))
        assert deep.result(timeout=30) == 2 + 11 + 2


def test_a_call_taking_a_failed_future_fails_with_its_error_and_never_runs(cb):
    cb.register(lambda _, x: 1 / x, "rt_inverse")
    cb.register(marked_square, "rt_marked_square")
    failing = cb.call("rt_inverse", 0)
    with pytest.raises(RemoteExecutionError, match="ZeroDivisionError"):
        cb.call("rt_marked_square", failing, "rt/marker-failed-upstream").result(timeout=30)
    with pytest.raises(RemoteExecutionError, match="ZeroDivisionError"):  # the future had failed already
        cb.call("rt_marked_square", failing, "rt/marker-failed-upstream").result(timeout=30)
    time.sleep(0.3)
    assert cb.get_object("rt/marker-failed-upstream") is None


def test_big_results_are_passed_on_by_reference(cb):
    cb.register(lambda _, n: b"x" * n, "rt_blob")
    cb.register(lambda _, blob: len(blob), "rt_length")
    assert cb.call("rt_length", cb.call("rt_blob", 300_000)).result(timeout=30) == 300_000
    done = cb.call("rt_blob", 200_000)
    done.result(timeout=30)
    assert cb.call("rt_length", done).result(timeout=30) == 200_000


def test_a_calls_result_is_stored_only_once_passed_on_by_reference(cb):
    cb.register(lambda _, x: x + 1, "rt_incr")
    cb.register(lambda _, n: b"x" * n, "rt_blob")
    cb.register(lambda _, blob: len(blob), "rt_length")
    cb.register_dag("rt_measure", ["rt_length"], [])
    small = cb.call("rt_incr", 1)
    assert small.result(timeout=30) == 2
    assert cb.get_object(small.obj_id) is None  # only pushed: nobody could read it by key
    big = cb.call("rt_blob", 150_000)
    assert cb.call("rt_length", big).result(timeout=30) == 150_000
    assert cb.get_object(big.obj_id) == b"x" * 150_000  # passed on by reference: stored by the client first
    pending = cb.call("rt_incr", 41)
    measured = cb.call_dag(cb.build_dag_call("rt_measure", {"rt_length": [cb.call("rt_blob", 7)]}))
    assert measured.result(timeout=30) == 7
    assert cb.call("rt_incr", pending).result(timeout=30) == 43


def test_a_call_still_waiting_for_its_arguments_at_its_deadline_fails_and_never_runs(cb):
    cb.register(slow_increment, "rt_slow_incr")
    cb.register(marked_square, "rt_marked_square")
    upstream = cb.call("rt_slow_incr", 1, 2.0)
    waiting = cb.call("rt_marked_square", upstream, "rt/marker-expired", timeout=0.5)
    with pytest.raises(DeadlineExceeded, match="still waiting"):
        waiting.result(timeout=30)
    assert upstream.result(timeout=30) == 2
    time.sleep(0.3)
    assert cb.get_object("rt/marker-expired") is None


def test_a_call_cancelled_while_it_waits_for_its_arguments_never_runs(cb):
    cb.register(slow_increment, "rt_slow_incr")
    cb.register(marked_square, "rt_marked_square")
    upstream = cb.call("rt_slow_incr", 1, 0.5)
    waiting = cb.call("rt_marked_square", upstream, "rt/marker-cancelled")
    assert waiting.cancel()
    with pytest.raises(cloudburst.Cancelled):
        waiting.result(timeout=30)
    assert upstream.result(timeout=30) == 2
    time.sleep(0.3)
    assert cb.get_object("rt/marker-cancelled") is None


def test_references_resolve_to_kvs_values(cb):
    cb.put_object("rt/ref", 21)
    double = cb.register(lambda _, x: x * 2, "rt_double")
    assert double(CloudburstReference("rt/ref")).result(timeout=30) == 42


def test_user_library_get_put_and_getid(cb):
    def use_library(lib, key):
        lib.put(key, {"n": 1})
        lib.put([key + "/a", key + "/b"], [1, 2])
        both = lib.get([key + "/a", key + "/b"])
        return lib.get(key), both, lib.getid()

    stored, both, executor_id = cb.register(use_library, "rt_library")("rt/lib").result(timeout=30)
    assert stored == {"n": 1}
    assert both == {"rt/lib/a": 1, "rt/lib/b": 2}
    assert isinstance(executor_id, tuple)
    assert len(executor_id) == 2
    assert cb.get_object("rt/lib") == {"n": 1}


def test_send_and_recv_between_functions_running_at_once(cb):
    def talker(lib, me, peer):
        lib.put(f"rt/ids/{me}", lib.getid())
        peer_id = tuple(wait_for(lib, f"rt/ids/{peer}"))
        lib.send(peer_id, f"hello from {me}".encode())
        give_up = time.monotonic() + 10
        received = []
        while not received and time.monotonic() < give_up:
            received = lib.recv()
            time.sleep(0.005)
        # A dict, not a tuple: a tuple result is spread over the downstream function's arguments.
        return {"heard": [payload.decode() for _, payload in received], "id": lib.getid()}

    cb.register(lambda lib, x, y: (x, y), "rt_pair")
    cb.register(talker, "rt_talk_a")
    cb.register(talker, "rt_talk_b")
    cb.register_dag(
        "rt_conversation", ["rt_talk_a", "rt_talk_b", "rt_pair"], [("rt_talk_a", "rt_pair"), ("rt_talk_b", "rt_pair")]
    )
    call = cb.build_dag_call("rt_conversation", {"rt_talk_a": ["a", "b"], "rt_talk_b": ["b", "a"]})
    a, b = cb.call_dag(call).result(timeout=60)
    assert a["heard"] == ["hello from b"]
    assert b["heard"] == ["hello from a"]
    assert a["id"] != b["id"]


def test_class_state_persists_across_dag_calls(cb):
    class Counter:
        def __init__(self, lib, start):
            self.count = start

        def run(self, lib, step):
            self.count += step
            return self.count

    cb.register((Counter, (100,)), "rt_counter")
    cb.register_dag("rt_counting", ["rt_counter"], [])
    results = [cb.call_dag(cb.build_dag_call("rt_counting", {"rt_counter": 1})).result(timeout=30) for _ in range(3)]
    assert results == [101, 102, 103]


def test_multiexec_first_valid_result_wins(cb):
    cb.register(lambda _: 0, "rt_zero")
    cb.register(lambda _: 5, "rt_five")
    cb.register(lambda _, x: x, "rt_pick")
    cb.register_dag(
        "rt_race", ["rt_zero", "rt_five", ("rt_pick", [0])], [("rt_zero", "rt_pick"), ("rt_five", "rt_pick")]
    )
    for _ in range(3):
        assert cb.call_dag(cb.build_dag_call("rt_race", {})).result(timeout=30) == 5


def test_batching_function_gets_lists(cb):
    cb.register(lambda _, xs: [("batch", x * 2) for x in xs], "rt_batch_double")
    cb.register_dag("rt_batched", ["rt_batch_double"], [], batching_functions=["rt_batch_double"])
    futures = [cb.call_dag(cb.build_dag_call("rt_batched", {"rt_batch_double": i})) for i in range(30)]
    assert [f.result(timeout=30) for f in futures] == [("batch", i * 2) for i in range(30)]


def test_batching_function_with_wrong_length_fails_instead_of_hanging(cb):
    cb.register(lambda _, xs: [1, 2, 3, 4, 5, 6, 7][: len(xs) + 1], "rt_batch_wrong")
    cb.register_dag("rt_batched_wrong", ["rt_batch_wrong"], [], batching_functions=["rt_batch_wrong"])
    with pytest.raises(RemoteExecutionError, match="one result per request"):
        cb.call_dag(cb.build_dag_call("rt_batched_wrong", {"rt_batch_wrong": 1})).result(timeout=30)


def test_continuation_chain_of_two_dags(cb):
    cb.register(lambda _, x: x + 1, "rt_c_incr")
    cb.register(lambda _, x: x * x, "rt_c_square")
    cb.register_dag("rt_first", ["rt_c_incr"], [])
    cb.register_dag("rt_second", ["rt_c_square"], [])
    second = cb.build_dag_call("rt_second", {})
    first = cb.build_dag_call("rt_first", {"rt_c_incr": 2}, continuation=second)
    assert cb.call_dag(first).result(timeout=30) == 9


def test_deleted_dag_cannot_be_called(cb):
    cb.register(lambda _, x: x, "rt_identity")
    cb.register_dag("rt_doomed", ["rt_identity"], [])
    assert cb.call_dag(cb.build_dag_call("rt_doomed", {"rt_identity": 1})).result(timeout=30) == 1
    cb.delete_dag("rt_doomed")
    with pytest.raises(DagNotFound, match="rt_doomed"):
        cb.call_dag(cb.build_dag_call("rt_doomed", {"rt_identity": 1}))


def test_malformed_dags_are_rejected_with_a_reason(cb):
    cb.register(lambda _, x: x, "rt_v1")
    cb.register(lambda _, x: x, "rt_v2")
    with pytest.raises(InvalidDag, match="cycle"):
        cb.register_dag("rt_cyclic", ["rt_v1", "rt_v2"], [("rt_v1", "rt_v2"), ("rt_v2", "rt_v1")])
    with pytest.raises(cloudburst.FunctionNotFound, match="rt_missing"):
        cb.register_dag("rt_unknown", ["rt_v1", "rt_missing"], [("rt_v1", "rt_missing")])


def test_raising_functions_give_typed_errors_and_executors_survive(cb):
    def explode(_, x):
        raise ValueError(f"bad input {x}")

    boom = cb.register(explode, "rt_explode")
    with pytest.raises(RemoteExecutionError) as caught:
        boom(7).result(timeout=30)
    assert caught.value.function == "rt_explode"
    assert "ValueError: bad input 7" in caught.value.remote_traceback
    assert caught.value.node
    cb.register(lambda _, x: x + 1, "rt_after")
    cb.register_dag("rt_failing", ["rt_after", "rt_explode"], [("rt_after", "rt_explode")])
    with pytest.raises(RemoteExecutionError) as in_dag:
        cb.call_dag(cb.build_dag_call("rt_failing", {"rt_after": 1})).result(timeout=30)
    assert in_dag.value.dag == "rt_failing"
    assert "bad input 2" in in_dag.value.remote_traceback
    assert cb.register(lambda _, x: -x, "rt_still_serving")(3).result(timeout=30) == -3


def test_500_concurrent_calls_from_4_threads(cb):
    square = cb.register(lambda _, x: x * x, "rt_load_square")
    results: dict[int, list[int]] = {}

    def client(index):
        futures = [square(index * 1000 + i) for i in range(125)]
        results[index] = [f.result(timeout=60) for f in futures]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: [(i * 1000 + k) ** 2 for k in range(125)] for i in range(4)}


def test_waiting_has_a_deadline(cb):
    sleepy = cb.register(lambda _: time.sleep(3), "rt_sleepy")
    with pytest.raises(DeadlineExceeded):
        sleepy().result(timeout=0.5)


def test_async_variants(cb):
    import asyncio

    cb.register(lambda _, x: x * 3, "rt_triple")
    cb.register_dag("rt_tripling", ["rt_triple"], [])

    async def main():
        one = await cb.call_async("rt_triple", 2)
        two = await cb.call_dag_async(cb.build_dag_call("rt_tripling", {"rt_triple": 3}))
        three = await cb.call("rt_triple", 4)
        return one, two, three

    assert asyncio.run(main()) == (6, 9, 12)


def test_writes_from_outside_reach_an_executor_that_read_the_key_before(cb):
    def read_until(lib, key, expected):
        give_up = time.monotonic() + 10
        while (value := lib.get(key)) != expected:
            if time.monotonic() > give_up:
                return value
            time.sleep(0.002)
        return value

    reader = cb.register(read_until, "rt_read_until")
    cb.put_object("rt/coherent", "old")
    assert reader("rt/coherent", "old").result(timeout=30) == "old"
    cb.put_object("rt/coherent", "new")  # straight to the KVS: the KVS push and the cache's invalidation carry it
    assert reader("rt/coherent", "new").result(timeout=30) == "new"
