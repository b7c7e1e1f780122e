"""The Redis engine's connection: URL parsing, one pipeline per node, and retries until a deadline.

Every command addresses one key, so a batch is split by the node owning each key's slot (one node for a single
server) and sent as one pipeline per node: one round trip per node, whatever the batch size. redis-py's own
cluster pipeline is not used because it asks the server for the keys of every ``EVALSHA``, a round trip per
command.

What a retry covers: connection errors and timeouts, a server still loading its data, and the transient states of
a cluster (``MOVED``/``ASK`` after a slot moved, ``TRYAGAIN``, ``CLUSTERDOWN``, ``READONLY`` after a failover).
Retrying is safe because every command the engine sends is idempotent: merges are, and so are deletes and reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl, unquote

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from cloudburst.errors import ConfigError, KvsError, StorageUnavailable
from cloudburst.kvs.redis_lua import SCRIPTS, Script
from cloudburst.retry import RetryPolicy

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The URL schemes :meth:`RedisSettings.from_url` accepts.
SINGLE_SCHEME = "redis"
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_PORT = 6379

#: Failures that say nothing about the command itself: the server or the cluster was not ready for it.
_TRANSIENT: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    AskError,  # includes MOVED
    TryAgainError,
    ClusterDownError,  # includes MASTERDOWN
    ReadOnlyError,
    RedisClusterException,
)
#: Everything redis-py raises; :func:`_is_transient` tells which ones are worth a retry.
_REDIS_ERRORS = (RedisError, RedisClusterException)
_BACKOFF = RetryPolicy(min_backoff=0.01, max_backoff=0.5)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where the Redis engine stores data, and how long it keeps trying.

    Attributes:
        nodes: ``(host, port)`` of the server, or of the cluster nodes to discover the cluster from.
        cluster: Whether ``nodes`` belong to a Redis Cluster.
        db: The database number (single server only; a cluster has only database 0).
        username: The ACL user, if any.
        password: The password, if any.
        prefix: Prepended to every key, so several deployments (or other data) can share one Redis.
        deadline: Seconds one engine call keeps retrying an unavailable Redis before it fails.
        timeout: Seconds to wait for one connection or one reply.
    """

    nodes: tuple[tuple[str, int], ...]
    cluster: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = None
    prefix: str = "cb:"
    deadline: float = 15.0
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("a Redis URL needs at least one host")
        if self.cluster and self.db != 0:
            raise ConfigError("a Redis Cluster has only database 0")
        if self.deadline <= 0 or self.timeout <= 0:
            raise ConfigError("the Redis deadline and timeout must be positive")

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parses an engine URL.

        ``redis://[[user]:password@]host[:port][/db][?options]`` names one server;
        ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][?options]`` names a Redis Cluster by one or
        more of its nodes. Options: ``prefix`` (default ``cb:``), ``deadline`` and ``timeout`` (seconds).

        Raises:
            ConfigError: The URL is not of that form.
        """
        scheme, separator, rest = url.partition("://")
        if not separator or scheme not in (SINGLE_SCHEME, CLUSTER_SCHEME):
            raise ConfigError(f"a Redis engine URL starts with redis:// or redis+cluster://, not {url!r}")
        rest, _, query = rest.partition("?")
        authority, _, path = rest.partition("/")
        userinfo, at, hosts = authority.rpartition("@")
        username, _, password = userinfo.partition(":")
        options: dict[str, object] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            options[name] = _option(name, value)
        try:
            return cls(
                nodes=tuple(_host_port(item) for item in hosts.split(",") if item),
                cluster=scheme == CLUSTER_SCHEME,
                db=_number(int, "database", path) if path else 0,
                username=unquote(username) if at and username else None,
                password=unquote(password) if at and password else None,
                **options,  # type: ignore[arg-type]
            )
        except TypeError as error:
            raise ConfigError(f"invalid Redis URL {url!r}: {error}") from None

    def describe(self) -> str:
        """The URL without credentials, for messages and logs."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.cluster:
            return f"{CLUSTER_SCHEME}://{hosts}"
        return f"{SINGLE_SCHEME}://{hosts}/{self.db}"


def _option(name: str, value: str) -> object:
    if name == "prefix":
        return value
    if name in ("deadline", "timeout"):
        return _number(float, name, value)
    raise ConfigError(f"unknown Redis URL option {name!r} (known: prefix, deadline, timeout)")


def _number(kind: Callable[[str], _T], name: str, text: str) -> _T:
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"the Redis {name} must be a number, not {text!r}") from None


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"a Redis host is missing in {item!r}")
    return host, _number(int, "port", port) if port else DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class KeyCommand:
    """One command on one key.

    Attributes:
        key: The Redis key, which picks the node.
        args: The whole command, e.g. ``("DEL", key)``.
        script: The script an ``EVALSHA`` runs, loaded into a node that lacks it.
    """

    key: bytes
    args: tuple[bytes | str | int, ...]
    script: Script | None = None

    @classmethod
    def run(cls, script: Script, key: bytes, *argv: bytes) -> KeyCommand:
        """Runs ``script`` on ``key`` (``KEYS[1]``) with ``argv`` (``ARGV``)."""
        return cls(key, ("EVALSHA", script.sha, 1, key, *argv), script)


class RedisConnection:
    """Pipelined commands against one Redis server or every master of a Redis Cluster.

    Args:
        settings: Where Redis is, and the deadline.

    Raises:
        StorageUnavailable: Redis could not be reached before the deadline.
        KvsError: Redis refused the scripts (for example, scripting is disabled).
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._single: redis.Redis | None = None
        self._cluster: RedisCluster | None = None
        self._last_error: object = "no answer"
        self._retrying(self._connect, "connecting")

    def _connect(self) -> None:
        common = {
            "username": self.settings.username,
            "password": self.settings.password,
            "socket_timeout": self.settings.timeout,
            "socket_connect_timeout": self.settings.timeout,
        }
        if self.settings.cluster:
            if self._cluster is None:
                self._cluster = RedisCluster(
                    startup_nodes=[ClusterNode(host, port) for host, port in self.settings.nodes],  # type: ignore[no-untyped-call]
                    # The engine's own loop retries, against a deadline; the client must fail fast.
                    retry=Retry(NoBackoff(), 0),
                    **common,  # type: ignore[arg-type]
                )
        elif self._single is None:
            host, port = self.settings.nodes[0]
            self._single = redis.Redis(
                host=host,
                port=port,
                db=self.settings.db,
                retry=Retry(NoBackoff(), 0),
                **common,  # type: ignore[arg-type]
            )
        for client in self._primaries():
            pipeline = client.pipeline(transaction=False)
            for script in SCRIPTS:
                pipeline.script_load(script.source)
            pipeline.execute()

    def execute(self, commands: Sequence[KeyCommand], what: str) -> list[object]:
        """Runs ``commands``, one pipeline per node, and returns their replies in order.

        At most one command per key should be in one call: a command that is retried runs after the others.

        Args:
            commands: The commands.
            what: Names the request in errors.

        Raises:
            StorageUnavailable: Some command was not acknowledged before the deadline.
            KvsError: Redis refused a command (a script error, or out of memory).
        """
        replies: list[object] = [None] * len(commands)
        pending = list(range(len(commands)))
        give_up = time.monotonic() + self.settings.deadline
        tries = 0
        while pending:
            pending = self._attempt(commands, pending, replies, what)
            if pending:
                tries += 1
                self._pause(tries, give_up, what)
        return replies

    def _attempt(
        self, commands: Sequence[KeyCommand], pending: list[int], replies: list[object], what: str
    ) -> list[int]:
        """Sends the ``pending`` commands once; stores their replies and returns the indexes to try again."""
        try:
            groups = self._by_node(commands, pending)
        except _REDIS_ERRORS as error:  # the cluster's slot map could not be read
            self._transient(error, what)
            return pending
        failed: list[int] = []
        for client, indexes in groups:
            try:
                failed += self._send(client, commands, indexes, replies, what)
            except _REDIS_ERRORS as error:
                self._transient(error, what)
                failed += indexes
        return sorted(failed)

    def _send(
        self, client: redis.Redis, commands: Sequence[KeyCommand], indexes: list[int], replies: list[object], what: str
    ) -> list[int]:
        """One node's pipeline; stores the replies and returns the indexes to try again."""
        pipeline = client.pipeline(transaction=False)
        for index in indexes:
            pipeline.execute_command(*commands[index].args)  # type: ignore[no-untyped-call]
        failed: list[int] = []
        missing: dict[str, Script] = {}
        for index, reply in zip(indexes, pipeline.execute(raise_on_error=False), strict=True):
            script = commands[index].script
            if isinstance(reply, NoScriptError) and script is not None:
                missing[script.sha] = script  # the node restarted, or its script cache was flushed
                failed.append(index)
            elif isinstance(reply, Exception):
                self._transient(reply, f"{what} of key {commands[index].key!r}")
                failed.append(index)
            else:
                replies[index] = reply
        for script in missing.values():
            client.script_load(script.source)
        return failed

    def scan(self, pattern: bytes) -> set[bytes]:
        """Every key matching the glob ``pattern``, on every master.

        Raises:
            StorageUnavailable: Some master could not be scanned before the deadline.
        """

        def scan_all() -> set[bytes]:
            found: set[bytes] = set()
            for client in self._primaries():
                found.update(client.scan_iter(match=pattern, count=1000))
            return found

        return self._retrying(scan_all, "SCAN")

    def flush(self) -> None:
        """Deletes every key of the engine's database on every master (for tests).

        Raises:
            StorageUnavailable: Some master could not be flushed before the deadline.
        """

        def flush_all() -> None:
            for client in self._primaries():
                client.flushdb()

        self._retrying(flush_all, "FLUSHDB")

    def close(self) -> None:
        """Closes every connection."""
        if self._cluster is not None:
            self._cluster.close()
        if self._single is not None:
            self._single.close()

    def _retrying(self, operation: Callable[[], _T], what: str) -> _T:
        """Runs ``operation`` until it succeeds, retrying transient failures with backoff until the deadline."""
        give_up = time.monotonic() + self.settings.deadline
        tries = 0
        while True:
            try:
                return operation()
            except _REDIS_ERRORS as error:
                self._transient(error, what)
            tries += 1
            self._pause(tries, give_up, what)

    def _pause(self, tries: int, give_up: float, what: str) -> None:
        """Sleeps before try ``tries + 1``; the last try is made at the deadline itself.

        Raises:
            StorageUnavailable: The deadline has passed.
        """
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            raise StorageUnavailable(
                f"{what}: Redis at {self.settings.describe()} did not acknowledge within {self.settings.deadline} s"
                f" ({self._last_error})"
            )
        time.sleep(min(_BACKOFF.backoff(tries), remaining))
        if self._cluster is not None:
            try:
                self._cluster.nodes_manager.initialize()
            except _REDIS_ERRORS as error:
                self._transient(error, what)

    def _transient(self, error: Exception, what: str) -> None:
        """Records a failure that a retry may cure.

        Raises:
            KvsError: ``error`` is one that retrying cannot cure: Redis refused the command.
        """
        if not _is_transient(error):
            raise KvsError(f"{what}: Redis at {self.settings.describe()} refused: {error}") from error
        self._last_error = error
        logger.debug("Redis at %s: %s; retrying", self.settings.describe(), error)

    def _primaries(self) -> list[redis.Redis]:
        if self._cluster is None:
            assert self._single is not None
            return [self._single]
        return [self._cluster.get_redis_connection(node) for node in self._cluster.get_primaries()]  # type: ignore[no-untyped-call]

    def _by_node(self, commands: Sequence[KeyCommand], indexes: Iterable[int]) -> list[tuple[redis.Redis, list[int]]]:
        if self._cluster is None:
            assert self._single is not None
            return [(self._single, list(indexes))]
        groups: dict[str, tuple[redis.Redis, list[int]]] = {}
        for index in indexes:
            node = self._cluster.get_node_from_key(commands[index].key)  # type: ignore[no-untyped-call]
            if node.name not in groups:
                groups[node.name] = (self._cluster.get_redis_connection(node), [])
            groups[node.name][1].append(index)
        return list(groups.values())


def _is_transient(error: Exception) -> bool:
    if isinstance(error, AuthenticationError | AuthorizationError):
        return False  # connection errors to redis-py, but no retry will fix a wrong password
    if isinstance(error, _TRANSIENT):
        return True
    # A script that outlived lua-time-limit: the server answers BUSY until it finishes.
    return isinstance(error, ResponseError) and str(error).startswith("BUSY")
