"""Registered DAGs called straight through their executors (DAG leases): no scheduler on a request's path, results
pushed or stored as asked, and a lease gone out of date falls back to the scheduler instead of failing."""

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.config import RuntimePorts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(ClusterConfig(host=random_loopback_host(), executors=3, data_dir=None)) as cluster:
        yield cluster


def scheduler_requests(cluster, kind):
    """How many requests of ``kind`` (a port name) the scheduler took, from its metrics."""
    url = f"http://{cluster.config.host}:{RuntimePorts().metrics_scheduler}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cloudburst_scheduler_requests_total" and sample.labels.get("kind") == kind
    )


def test_dag_requests_go_straight_to_the_executors_and_answer_as_asked(cluster):
    with cluster.connect(timeout=30) as cb:
        cb.register(lambda _, x: x + 1, "dl_incr")
        cb.register(lambda _, x: x * x, "dl_square")
        cb.register(lambda _, x, y: x - y, "dl_minus")
        cb.register_dag(
            "dl_chain", ["dl_incr", "dl_square", "dl_minus"], [("dl_incr", "dl_square"), ("dl_square", "dl_minus")]
        )
        placed_before = scheduler_requests(cluster, "dag_call")
        futures = [
            cb.call_dag(cb.build_dag_call("dl_chain", {"dl_incr": i, "dl_minus": 1}, direct_response=True))
            for i in range(30)
        ]
        # Fixed arguments come first: dl_minus(1, square).
        assert [future.result(timeout=30) for future in futures] == [1 - (i + 1) ** 2 for i in range(30)]
        stored = cb.call_dag(cb.build_dag_call("dl_chain", {"dl_incr": 2, "dl_minus": 0}))
        assert stored.result(timeout=30) == -9
        assert cb.get_object(stored.obj_id) == -9  # delivered and stored, as a DAG request without direct_response
        named = cb.call_dag(cb.build_dag_call("dl_chain", {"dl_incr": 3, "dl_minus": 0}, output_key="dl-out"))
        assert (named.obj_id, named.result(timeout=30), cb.get_object("dl-out")) == ("dl-out", -16, -16)
        assert scheduler_requests(cluster, "dag_call") == placed_before  # not one went through the scheduler
        assert 1 <= scheduler_requests(cluster, "dag_lease") <= 3  # one lease per report period
        assert cb.retry_counts() == {}


def test_a_request_under_a_lease_gone_out_of_date_is_placed_through_the_scheduler(cluster):
    with cluster.connect(timeout=30) as first, cluster.connect(timeout=30) as second:
        first.register(lambda _, x: ("old", x), "dl_old")
        first.register(lambda _, x: ("new", x), "dl_new")
        first.register_dag("dl_swapped", ["dl_old"], [])
        assert first.call_dag(first.build_dag_call("dl_swapped", {"dl_old": 1})).result(timeout=30) == ("old", 1)
        # Another client replaces the DAG while the first still holds its lease (it lasts a report period).
        second.delete_dag("dl_swapped")
        second.register_dag("dl_swapped", ["dl_new"], [])
        give_up = time.monotonic() + 10
        while any("dl_old" in executor.functions for executor in second.status().executors):
            assert time.monotonic() < give_up, "dl_old was never unpinned"
            time.sleep(0.05)
        result = first.call_dag(first.build_dag_call("dl_swapped", {"dl_new": 2})).result(timeout=30)
        assert result == ("new", 2)
        assert first.retry_counts() == {"placed_again_not_pinned": 1}
        # The refused lease was dropped: the next request goes straight to the new DAG's executor.
        assert first.call_dag(first.build_dag_call("dl_swapped", {"dl_new": 3})).result(timeout=30) == ("new", 3)
        assert first.retry_counts() == {"placed_again_not_pinned": 1}
