import asyncio
import threading

import pytest

from cloudburst.client.connection import _kvs_endpoint
from cloudburst.client.future import Future, ResultSlot
from cloudburst.cluster.local import ClusterConfig
from cloudburst.cluster.node import RestartBudget
from cloudburst.errors import ConfigError, DeadlineExceeded, RemoteExecutionError
from cloudburst.protocol.values import encode, encode_error


def make_future(slot, fetch=lambda: None, timeout=5.0):
    released = []
    return Future("req-1", slot, fetch, timeout, lambda: released.append(True)), released


def test_result_arrives_by_notification():
    slot = ResultSlot()
    future, released = make_future(slot)
    threading.Timer(0.05, slot.fill, args=(encode({"answer": 42}),)).start()
    assert future.result(timeout=5) == {"answer": 42}
    assert future.done()
    assert released == [True]


def test_lost_notification_falls_back_to_the_stored_result():
    future, _ = make_future(ResultSlot(), fetch=lambda: encode("from the kvs"))
    assert future.result(timeout=5) == "from the kvs"


def test_remote_errors_are_raised():
    slot = ResultSlot()
    slot.fill(encode_error(RemoteExecutionError("ValueError: no", function="f", request_id="req-1")))
    future, _ = make_future(slot)
    with pytest.raises(RemoteExecutionError, match="ValueError: no") as caught:
        future.get()
    assert caught.value.function == "f"


def test_no_result_means_deadline_exceeded():
    future, released = make_future(ResultSlot())
    with pytest.raises(DeadlineExceeded, match="req-1"):
        future.result(timeout=0.05)
    assert released == []


def test_futures_can_be_awaited():
    slot = ResultSlot()
    slot.fill(encode(7))
    future, _ = make_future(slot)

    async def wait():
        return await future

    assert asyncio.run(wait()) == 7


def test_connect_answer_is_a_host_or_an_endpoint():
    assert _kvs_endpoint("10.0.0.5") == "tcp://10.0.0.5:6450"
    assert _kvs_endpoint("tcp://10.0.0.5:7000") == "tcp://10.0.0.5:7000"


def test_restart_budget_stops_crash_loops():
    budget = RestartBudget(limit=2, window=60)
    assert budget.allow(0)
    assert budget.allow(1)
    assert not budget.allow(2)
    assert budget.allow(61.5)


def test_cluster_needs_executors():
    with pytest.raises(ConfigError, match="executors"):
        ClusterConfig(executors=0)
