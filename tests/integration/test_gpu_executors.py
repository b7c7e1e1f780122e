"""GPU executors (the flag, on CPU machines): their own pool, taking only the functions a DAG marks as GPU."""

import pytest

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.protocol.runtime_messages import ExecutorType

pytestmark = pytest.mark.integration


def test_gpu_functions_are_pinned_only_on_gpu_executors_and_others_never_there():
    config = ClusterConfig(
        host=random_loopback_host(), executors=2, gpu_executors=1, nodes=1, data_dir=None, report_period=0.5
    )
    with LocalCluster(config) as cluster:
        connection = cluster.connect()
        try:
            connection.register(lambda lib, x: x + 1, "gpu_prepare")
            connection.register(lambda lib, x: x * 10, "gpu_infer")
            connection.register_dag(
                "gpu_pipeline",
                ["gpu_prepare", "gpu_infer"],
                [("gpu_prepare", "gpu_infer")],
                gpu_functions=["gpu_infer"],
            )
            call = connection.build_dag_call("gpu_pipeline", {"gpu_prepare": 4})
            assert connection.call_dag(call).result(timeout=30) == 50
            executors = connection.status().executors
            by_type = {
                kind: {f for e in executors if e.type == kind for f in e.functions}
                for kind in (ExecutorType.CPU, ExecutorType.GPU)
            }
            assert by_type[ExecutorType.GPU] == {"gpu_infer"}
            assert "gpu_infer" not in by_type[ExecutorType.CPU]
            assert "gpu_prepare" in by_type[ExecutorType.CPU]
            assert sum(e.type == ExecutorType.GPU for e in executors) == 1
        finally:
            connection.close()
