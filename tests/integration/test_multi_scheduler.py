"""Two schedulers behind one cluster: registrations and deletions on one are honoured by the other."""

import time

import pytest

from cloudburst.client.connection import Connection
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.errors import DagNotFound, NoResources, NotPinned

pytestmark = pytest.mark.integration

REPORT_PERIOD = 0.5


def test_register_on_one_scheduler_call_on_the_other_and_deletions_reach_both():
    config = ClusterConfig(
        host=random_loopback_host(), executors=2, nodes=1, schedulers=2, data_dir=None, report_period=REPORT_PERIOD
    )
    first_host, second_host = config.scheduler_hosts()
    with (
        LocalCluster(config),
        Connection(first_host, host=config.host, timeout=30) as first,
        Connection(second_host, host=config.host, timeout=30) as second,
    ):
        first.register(lambda lib, x: x + 1, "ms_incr")
        first.register(lambda lib, x: x * x, "ms_square")
        first.register_dag("ms_dag", ["ms_incr", "ms_square"], [("ms_incr", "ms_square")])
        assert second.call("ms_square", 3).result(timeout=30) == 9
        assert second.call_dag(second.build_dag_call("ms_dag", {"ms_incr": 2})).result(timeout=30) == 9

        first.delete_dag("ms_dag")
        deleted = time.monotonic()
        while True:
            try:
                second.call_dag(second.build_dag_call("ms_dag", {"ms_incr": 2})).result(timeout=30)
            except DagNotFound:
                break
            except (NotPinned, NoResources):
                pass  # the deletion unpinned the functions before this scheduler heard of it: refused, typed
            assert time.monotonic() - deleted < 2 * REPORT_PERIOD + 1.0, "the other scheduler still runs the DAG"
            time.sleep(0.05)
        print(f"\nthe second scheduler refused the deleted DAG {time.monotonic() - deleted:.2f} s after the deletion")
