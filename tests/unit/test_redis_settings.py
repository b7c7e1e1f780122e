"""Parsing of Redis engine URLs."""

import pytest

from cloudburst.errors import ConfigError
from cloudburst.kvs.redis_connection import RedisSettings


def test_single_server_url_with_defaults():
    settings = RedisSettings.from_url("redis://10.0.0.5")
    assert settings == RedisSettings(nodes=(("10.0.0.5", 6379),))
    assert (settings.cluster, settings.db, settings.prefix) == (False, 0, "cb:")


def test_single_server_url_with_everything():
    settings = RedisSettings.from_url("redis://me:p%40ss@localhost:7000/3?prefix=prod%3A&deadline=2.5&timeout=1")
    assert settings.nodes == (("localhost", 7000),)
    assert (settings.username, settings.password, settings.db) == ("me", "p@ss", 3)
    assert (settings.prefix, settings.deadline, settings.timeout) == ("prod:", 2.5, 1.0)
    assert settings.describe() == "redis://localhost:7000/3"


def test_cluster_url_lists_seed_nodes_and_password_only_auth():
    settings = RedisSettings.from_url("redis+cluster://:secret@a:7000,b,[::1]:7002?prefix=")
    assert settings.cluster
    assert settings.nodes == (("a", 7000), ("b", 6379), ("::1", 7002))
    assert (settings.username, settings.password, settings.prefix) == (None, "secret", "")
    assert "secret" not in settings.describe()


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost",
        "localhost:6379",
        "redis://",
        "redis://host:port",
        "redis://host/zero",
        "redis+cluster://a:1,b:2/1",
        "redis://host?colour=blue",
        "redis://host?deadline=soon",
        "redis://host?deadline=0",
    ],
)
def test_invalid_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        RedisSettings.from_url(url)
