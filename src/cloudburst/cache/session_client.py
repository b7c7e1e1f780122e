"""A blocking client of the node caches' causal ports: causal reads, kept-version reads and session release.

Executors read causally through their own node's cache, and read versions kept for their request from whichever
cache kept them, possibly on another node. Every call has a deadline; a request is resent when an attempt times
out, which is harmless: reads are idempotent and a cache keeps only the first version of a key per session.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import zmq

from cloudburst.clock import Clock, SystemClock
from cloudburst.errors import DeadlineExceeded, DecodeError
from cloudburst.protocol import codec
from cloudburst.protocol.causal_messages import (
    CausalKeyResult,
    CausalReadRequest,
    CausalReadResponse,
    SessionVersionRequest,
    SessionVersionResponse,
)
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import KeyVersion
from cloudburst.retry import RetryPolicy
from cloudburst.transport.security import SecurityConfig
from cloudburst.transport.zmq import PushSocketCache, reply_socket


class _Answer(Protocol):
    @property
    def request_id(self) -> str: ...


_A = TypeVar("_A", bound=_Answer)


class CausalCacheClient:
    """Talks to node caches' causal and session ports. Safe to share between threads (calls are serialized).

    Args:
        host: The local address caches can push responses to.
        timeout: Default deadline of each call, in seconds.
        retry: Attempt timeout and back-off.
        clock: Time source for deadlines.
        security: CURVE keys; ``None``: plaintext.
    """

    def __init__(
        self,
        *,
        host: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._clock = clock or SystemClock()
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._push = PushSocketCache(self._context, linger_ms=0, security=security)
        self._responses, self.response_address = reply_socket(self._context, host, security)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._next_id = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the client's sockets."""
        with self._lock:
            self._push.close()
            self._responses.close()
            self._context.term()

    def read(
        self,
        endpoint: str,
        session_id: str,
        consistency: ConsistencyType,
        keys: Iterable[str],
        *,
        future_read_set: Iterable[str] = (),
        lower_bounds: Iterable[KeyVersion] = (),
        keep: Iterable[CausalKeyResult] = (),
        timeout: float | None = None,
    ) -> CausalReadResponse:
        """Reads ``keys`` causally through the cache at ``endpoint`` (its causal port); ``keep`` are versions the
        session just wrote, which the cache keeps for it.

        Raises:
            DeadlineExceeded: No answer before the deadline.
        """
        keys, future, bounds, kept = tuple(keys), tuple(future_read_set), tuple(lower_bounds), tuple(keep)

        def build(request_id: str) -> bytes:
            request = CausalReadRequest(
                session_id, consistency, keys, self.response_address, request_id, future, bounds, kept
            )
            return codec.encode_causal_read_request(request)

        return self._exchange(endpoint, build, codec.decode_causal_read_response, timeout, f"causal read of {keys}")

    def kept(
        self, address: str, session_id: str, keys: Iterable[str], *, timeout: float | None = None
    ) -> SessionVersionResponse:
        """Reads the versions the cache at ``address`` (its session port) keeps for the session.

        Raises:
            DeadlineExceeded: No answer before the deadline.
        """
        keys = tuple(keys)

        def build(request_id: str) -> bytes:
            request = SessionVersionRequest(session_id, keys, self.response_address, request_id)
            return codec.encode_session_version_request(request)

        what = f"read of kept versions of {keys} at {address}"
        return self._exchange(address, build, codec.decode_session_version_response, timeout, what)

    def release(self, address: str, session_id: str) -> None:
        """Tells the cache at ``address`` (its session port) that the session ended; fire-and-forget."""
        with self._lock:
            self._push.send(address, codec.encode_session_version_request(SessionVersionRequest(session_id)))

    def _exchange(
        self,
        endpoint: str,
        build: Callable[[str], bytes],
        decode: Callable[[bytes], _A],
        timeout: float | None,
        what: str,
    ) -> _A:
        deadline = self._clock.now() + (self._timeout if timeout is None else timeout)
        with self._lock:
            self._next_id += 1
            request_id = f"{self._id_prefix}:{self._next_id}"
            data = build(request_id)
            while True:
                self._push.send(endpoint, data)
                until = min(deadline, self._clock.now() + self._retry.attempt_timeout)
                while (remaining := until - self._clock.now()) > 0:
                    if not self._responses.poll(max(1, int(remaining * 1000))):
                        break
                    try:
                        answer = decode(self._responses.recv(zmq.NOBLOCK))
                    except DecodeError:
                        continue
                    if answer.request_id == request_id:
                        return answer
                if self._clock.now() >= deadline:
                    raise DeadlineExceeded(f"{what}: the cache did not answer in time")
