"""Fixtures for every test tier: a private Redis server and Redis Cluster, each started once per session.

Each is started on first use only, so runs that need no Redis start none. Tests get a fresh view by flushing
(:func:`open_redis_engine` does), not by restarting.
"""

import pytest

from cloudburst.kvs.redis_engine import RedisEngine
from cloudburst.testing.redis import LocalRedis, LocalRedisCluster


@pytest.fixture(scope="session")
def redis_server():
    """A private ``redis-server`` (AOF on, ``appendfsync always``) for the whole session."""
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster():
    """A private three-master Redis Cluster for the whole session."""
    with LocalRedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def open_redis_engine(request):
    """``open_redis_engine("redis" | "redis-cluster")``: a flushed engine on the session's server or cluster.

    The caller closes it.
    """

    def open_engine(kind: str) -> RedisEngine:
        server = request.getfixturevalue({"redis": "redis_server", "redis-cluster": "redis_cluster"}[kind])
        engine = RedisEngine(server.url)
        engine.flush()
        return engine

    return open_engine
