"""Calls run where the data they reference is cached (issue 4's locality acceptance)."""

import time

import pytest

from cloudburst.cache.client import NodeCacheClient
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.shared.reference import CloudburstReference

pytestmark = pytest.mark.integration

CALLS = 150


def test_calls_run_on_the_node_caching_their_referenced_key():
    config = ClusterConfig(host=random_loopback_host(), executors=1, nodes=3, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        nodes = config.node_hosts()
        connection = cluster.connect(timeout=30)
        try:
            # Each key is cached on exactly one node (read through that node's cache) and referenced by one call,
            # so a call that lands elsewhere cannot have been helped by an earlier call's caching.
            home = {f"loc/{i}": nodes[i % 3] for i in range(CALLS)}
            for key in home:
                connection.put_object(key, b"v" * 1024)
            for node in nodes:
                with NodeCacheClient(cluster.cache_addresses[node], host=node) as cache:
                    cache.get_many([key for key, where in home.items() if where == node])
            time.sleep(4 * config.report_period)  # caches report their key sets; schedulers read them each period
            where = connection.register(lambda lib, data: lib.getid()[0], "loc_where")
            ran = {key: where(CloudburstReference(key)).result() for key in home}
        finally:
            connection.close()
    local = sum(ran[key] == home[key] for key in home)
    print(f"\n{local}/{CALLS} calls ({local / CALLS:.0%}) ran on the node caching their key (random placement: 33%)")
    # 80 % of calls follow locality and a third of the 20 % explored land home anyway: about 87 % expected.
    assert local / CALLS >= 0.75
