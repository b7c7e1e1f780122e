"""An executor node's pure parts: its configuration, and when a node whose executors exited is over."""

import pytest

from cloudburst.cluster.local import ClusterConfig
from cloudburst.cluster.node import node_outcome
from cloudburst.config import MAX_EXECUTORS_PER_NODE, NodeConfig
from cloudburst.errors import ConfigError


def test_a_node_runs_while_an_executor_runs_or_will_be_restarted():
    assert node_outcome([None, 0], set()) is None
    assert node_outcome([0, 1], set()) is None, "a crashed executor within its budget comes back"


def test_a_node_whose_executors_all_departed_exits_with_0():
    assert node_outcome([0, 0, 0], set()) == 0


def test_a_node_whose_executors_are_all_down_after_crash_loops_exits_with_1():
    assert node_outcome([0, -9], {1}) == 1
    assert node_outcome([1, 1], {0, 1}) == 1


def test_executor_tids_put_gpu_executors_after_the_cpu_ones():
    config = NodeConfig(executors=2, gpu_executors=1)
    assert list(config.tids) == [0, 1, 2]
    assert [config.is_gpu(tid) for tid in config.tids] == [False, False, True]


@pytest.mark.parametrize(("executors", "gpu"), [(0, 0), (MAX_EXECUTORS_PER_NODE, 1), (2, -1)])
def test_executor_counts_outside_the_port_layout_are_refused_by_nodes_and_clusters(executors, gpu):
    with pytest.raises(ConfigError, match="executors"):
        NodeConfig(executors=executors, gpu_executors=gpu)
    with pytest.raises(ConfigError, match="executors"):
        ClusterConfig(executors=executors, gpu_executors=gpu)


def test_a_node_needs_a_scheduler_or_a_management_service():
    with pytest.raises(ConfigError, match="at least one scheduler"):
        NodeConfig(schedulers=())
    assert NodeConfig(schedulers=(), management="10.0.0.5").management == "10.0.0.5"
