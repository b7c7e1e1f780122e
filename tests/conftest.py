"""Fixtures for every test tier: a private Redis server and Redis Cluster, each started once per session.

Each is started on first use only, so runs that need no Redis start none. Tests get a fresh view by flushing
(:func:`open_redis_engine` does), not by restarting.

Tests marked ``original_clients`` need the original-clients extra (pyarrow 11, numpy 1), which cannot live beside
numpy 2: ``make test`` runs them in their own venv with ``CLOUDBURST_ORIGINAL_CLIENTS=1``, where a missing extra is
an error; elsewhere they are skipped with that hint.
"""

import importlib.util
import os

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


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("original_clients")]
    if not marked or _original_forms_available():
        return
    if os.environ.get("CLOUDBURST_ORIGINAL_CLIENTS"):
        raise pytest.UsageError("CLOUDBURST_ORIGINAL_CLIENTS is set but pyarrow (before 12) does not import here")
    skip = pytest.mark.skip(reason="needs the original-clients extra: `make test-original-clients` runs it")
    for item in marked:
        item.add_marker(skip)


def _original_forms_available() -> bool:
    if importlib.util.find_spec("pyarrow") is None:
        return False
    try:
        import pyarrow
    except ImportError:
        return False
    return hasattr(pyarrow, "serialize")
