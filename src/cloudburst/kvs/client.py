"""A KVS client speaking Anna's protocol, with deadlines, retries and an address cache.

Compared with the original Python client it adds what that one lacked: every call has a deadline, keys answered
``WRONG_THREAD`` or not answered in time are looked up again and retried (safe, since every write is a lattice
merge and merges are idempotent), responses are matched by request id, and reads and writes of a key go to the
same (primary) replica so a client reads its own writes.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

import zmq

from cloudburst.clock import Clock, SystemClock
from cloudburst.errors import DeadlineExceeded, DecodeError, KvsError, LatticeTypeMismatch, NoServers
from cloudburst.kvs.engine import StoredValue
from cloudburst.lattices import Lattice, MultiKeyCausalLattice, SingleKeyCausalLattice
from cloudburst.protocol import codec
from cloudburst.protocol.codec import StorableLattice
from cloudburst.protocol.messages import (
    AnnaError,
    KeyAddressRequest,
    KeyRequest,
    KeyResponse,
    KeyTuple,
    RequestType,
)
from cloudburst.retry import RetryPolicy
from cloudburst.transport.security import SecurityConfig
from cloudburst.transport.zmq import PushSocketCache, reply_socket

CausalLattice = SingleKeyCausalLattice | MultiKeyCausalLattice
#: Keys whose storage addresses a client remembers; the oldest quarter is forgotten when it is full.
ADDRESS_CACHE_SIZE = 100_000


class _Response(Protocol):
    @property
    def response_id(self) -> str: ...


_R = TypeVar("_R", bound=_Response)


class DataClient(Protocol):
    """What code reading and writing user data needs: the KVS itself, or a node cache in front of it."""

    @property
    def last_cached(self) -> frozenset[str]:
        """The keys of the last :meth:`get_many` that a node cache answered from its memory."""
        ...

    def get(self, key: str, *, timeout: float | None = None) -> StorableLattice | None:
        """The lattice under ``key``, or ``None``."""
        ...

    def get_many(self, keys: Iterable[str], *, timeout: float | None = None) -> dict[str, StorableLattice | None]:
        """The lattices under ``keys`` (``None`` for missing ones)."""
        ...

    def put(self, key: str, lattice: Lattice, *, timeout: float | None = None) -> None:
        """Merges ``lattice`` into ``key``."""
        ...

    def put_many(self, items: Mapping[str, Lattice], *, timeout: float | None = None) -> None:
        """Merges several keys."""
        ...


class KvsClient:
    """A blocking client of one KVS deployment. Safe to share between threads (calls are serialized).

    Args:
        routing: The routing endpoint, e.g. ``tcp://127.0.0.1:6450``.
        host: The local address the KVS can push responses to.
        timeout: Default deadline of each call, in seconds.
        retry: Attempt timeout and back-off between attempts.
        clock: Time source for deadlines.
        fixed_endpoint: ``routing`` is not a routing tier but one endpoint answering for every key in the storage
            protocol (a node cache): every request goes there and no address is ever looked up.
        security: CURVE keys; ``None``: plaintext.
    """

    def __init__(
        self,
        routing: str,
        *,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        fixed_endpoint: bool = False,
        security: SecurityConfig | None = None,
    ) -> None:
        self._routing = routing
        self._fixed_endpoint = fixed_endpoint
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._clock = clock or SystemClock()
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._push = PushSocketCache(self._context, linger_ms=0, security=security)
        self._responses, self.response_address = reply_socket(self._context, host, security)
        self._addresses_in, self._address_reply = reply_socket(self._context, host, security)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._next_id = 0
        self._address_cache: dict[str, tuple[str, ...]] = {}
        #: Every storage endpoint the routing tier has named.
        self._endpoints: set[str] = set()
        self._lock = threading.Lock()
        #: Merges sent by :meth:`put_nowait` and not yet answered: request id -> keys.
        self._unsettled: dict[str, tuple[str, ...]] = {}
        #: Their answers, until :meth:`settle` takes them: request id -> keys not stored.
        self._settled: dict[str, tuple[str, ...]] = {}
        #: The keys of the last :meth:`get_many` a node cache answered from memory (request traces show them).
        self.last_cached: frozenset[str] = frozenset()

    def __enter__(self) -> KvsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's sockets."""
        with self._lock:
            self._push.close()
            self._responses.close()
            self._addresses_in.close()
            self._context.term()

    # -- public API ---------------------------------------------------------------------------------------------

    def get(self, key: str, *, timeout: float | None = None) -> StorableLattice | None:
        """The lattice stored under ``key``, or ``None`` if there is none.

        Raises:
            DeadlineExceeded: No answer before the deadline.
            NoServers: The KVS has no storage server for the key.
            DecodeError: The stored payload is corrupt.
        """
        return self.get_many([key], timeout=timeout)[key]

    def get_many(self, keys: Iterable[str], *, timeout: float | None = None) -> dict[str, StorableLattice | None]:
        """The lattices stored under ``keys`` (``None`` for missing ones), in one round trip per storage thread.

        Raises:
            DeadlineExceeded: No answer for some key before the deadline.
            NoServers: The KVS has no storage server for some key.
            DecodeError: A stored payload is corrupt.
        """
        stored = self.get_many_stored(keys, timeout=timeout)
        return {
            key: None if value is None else codec.decode_lattice(value.lattice_type, value.payload, f"value of {key!r}")
            for key, value in stored.items()
        }

    def get_many_stored(self, keys: Iterable[str], *, timeout: float | None = None) -> dict[str, StoredValue | None]:
        """Like :meth:`get_many`, the payloads left serialized: a node cache keeps and forwards them as they came
        (decoding an 8 MB value only to encode it again copied it twice more).

        Raises:
            DeadlineExceeded: No answer for some key before the deadline.
            NoServers: The KVS has no storage server for some key.
            KvsError: The KVS failed the read of some key.
        """
        wanted = list(dict.fromkeys(keys))
        answers = self._exchange(RequestType.GET, {key: KeyTuple(key) for key in wanted}, timeout)
        self.last_cached = frozenset(key for key, answer in answers.items() if answer.cached)
        result: dict[str, StoredValue | None] = {}
        for key in wanted:
            answer = answers[key]
            if answer.error == AnnaError.KEY_DNE:
                result[key] = None
            elif answer.error != AnnaError.NO_ERROR:
                raise KvsError(f"GET of {key!r} failed with {answer.error.name}")
            else:
                result[key] = StoredValue(answer.lattice_type, answer.payload)
        return result

    def put(self, key: str, lattice: Lattice, *, timeout: float | None = None) -> None:
        """Merges ``lattice`` into ``key``; returns once the KVS has durably stored the merge.

        Raises:
            LatticeTypeMismatch: The key holds a lattice of another type.
            DeadlineExceeded: No acknowledgement before the deadline.
            NoServers: The KVS has no storage server for the key.
            EncodeError: The lattice has no wire form.
        """
        self.put_many({key: lattice}, timeout=timeout)

    def put_many(self, items: Mapping[str, Lattice], *, timeout: float | None = None) -> None:
        """Merges several keys; returns once all are durably stored.

        Raises:
            LatticeTypeMismatch: A key holds a lattice of another type (the other keys are still written).
            DeadlineExceeded: Some key was not acknowledged before the deadline.
            NoServers: The KVS has no storage server for some key.
            EncodeError: A lattice has no wire form.
        """
        tuples = {}
        for key, lattice in items.items():
            lattice_type, payload = codec.encode_lattice(lattice)
            tuples[key] = KeyTuple(key, lattice_type, payload=payload)
        answers = self._exchange(RequestType.PUT, tuples, timeout)
        for key, answer in answers.items():
            if answer.error == AnnaError.LATTICE:
                given = tuples[key].lattice_type
                stored = self._stored_type(key)
                raise LatticeTypeMismatch(key, stored, given.name)
            if answer.error != AnnaError.NO_ERROR:
                raise KvsError(f"PUT of {key!r} failed with {answer.error.name}")

    def put_nowait(self, items: Mapping[str, Lattice]) -> str | None:
        """Sends the merge of ``items`` without waiting for the KVS; :meth:`settle` later reports the outcome.

        Only for keys whose owner is known (or, on a single-endpoint node, guessed) to be one endpoint; otherwise
        nothing is sent and ``None`` returned, and the caller writes with :meth:`put_many`. Nothing is retried
        here: the caller re-sends what :meth:`settle` reports as not stored, or what stays unanswered.

        Returns:
            The request id :meth:`settle` reports on, or ``None`` when nothing was sent.

        Raises:
            EncodeError: A lattice has no wire form.
        """
        with self._lock:
            owners = {self._owner_guess(key) for key in items}
            if len(owners) != 1 or None in owners:
                return None
            (endpoint,) = owners
            assert endpoint is not None
            tuples = []
            for key, lattice in items.items():
                lattice_type, payload = codec.encode_lattice(lattice)
                size = len(self._address_cache.get(key, (endpoint,)))
                tuples.append(KeyTuple(key, lattice_type, payload=payload, address_cache_size=size))
            request_id = self._new_id()
            request = KeyRequest(RequestType.PUT, tuple(tuples), self.response_address, request_id)
            self._push.send(endpoint, codec.encode_key_request(request))
            self._unsettled[request_id] = tuple(items)
            return request_id

    def settle(self) -> dict[str, tuple[str, ...]]:
        """The :meth:`put_nowait` merges answered since the last call, without blocking.

        Returns:
            Request id -> the keys it did not store (empty: all stored). A key refused because its owner moved
            has its address forgotten, so a retry with :meth:`put_many` looks it up again.
        """
        with self._lock:
            while self._responses.poll(0):
                try:
                    self._stash(codec.decode_key_response(self._responses.recv_multipart(zmq.NOBLOCK)))
                except DecodeError:
                    continue
            settled, self._settled = self._settled, {}
            return settled

    @property
    def unsettled(self) -> int:
        """How many :meth:`put_nowait` merges are still unanswered."""
        return len(self._unsettled)

    def causal_get(self, keys: Iterable[str], *, timeout: float | None = None) -> dict[str, CausalLattice | None]:
        """Like :meth:`get_many`, for keys holding causal lattices (vector clock, dependencies, siblings).

        Raises:
            KvsError: A key holds a non-causal lattice.
            DeadlineExceeded: No answer before the deadline.
        """
        result: dict[str, CausalLattice | None] = {}
        for key, lattice in self.get_many(keys, timeout=timeout).items():
            if lattice is not None and not isinstance(lattice, CausalLattice):
                raise KvsError(f"key {key!r} holds a {type(lattice).__name__}, not a causal lattice")
            result[key] = lattice
        return result

    def causal_put(self, key: str, lattice: CausalLattice, *, timeout: float | None = None) -> None:
        """Merges a causal version into ``key``.

        Raises:
            LatticeTypeMismatch: The key holds a lattice of another type.
            DeadlineExceeded: No acknowledgement before the deadline.
        """
        self.put_many({key: lattice}, timeout=timeout)

    # -- protocol ----------------------------------------------------------------------------------------------

    def _stored_type(self, key: str) -> str:
        try:
            answer = self._exchange(RequestType.GET, {key: KeyTuple(key)}, None)[key]
        except KvsError:
            return "different"
        return answer.lattice_type.name if answer.error == AnnaError.NO_ERROR else "different"

    def _owner_guess(self, key: str) -> str | None:
        addresses = self._address_cache.get(key)
        if addresses is not None:
            return addresses[0]
        if self._fixed_endpoint:
            return self._routing
        if len(self._endpoints) == 1:
            (only,) = self._endpoints
            return only
        return None

    def _stash(self, response: _Response) -> None:
        """Keeps the answer to a :meth:`put_nowait` merge that arrived while waiting for something else."""
        keys = self._unsettled.pop(response.response_id, None)
        if keys is None or not isinstance(response, KeyResponse):
            return
        failed = []
        for answer in response.tuples:
            if answer.invalidate or answer.error == AnnaError.WRONG_THREAD:
                self._address_cache.pop(answer.key, None)
            if answer.error != AnnaError.NO_ERROR:
                failed.append(answer.key)
        answered = {answer.key for answer in response.tuples}
        self._settled[response.response_id] = (*failed, *(key for key in keys if key not in answered))

    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self._id_prefix}:{self._next_id}"

    def _exchange(
        self, request_type: RequestType, tuples: Mapping[str, KeyTuple], timeout: float | None
    ) -> dict[str, KeyTuple]:
        """Sends ``tuples`` to their owners and retries until every key has a final answer or time runs out."""
        deadline = self._clock.now() + (self._timeout if timeout is None else timeout)
        with self._lock:
            answers: dict[str, KeyTuple] = {}
            attempt = 0
            while len(answers) < len(tuples):
                attempt += 1
                pending = [key for key in tuples if key not in answers]
                self._resolve(pending, deadline, guess=attempt == 1)
                redirected = False
                for answer in self._send_round(request_type, [tuples[k] for k in pending], deadline):
                    if answer.invalidate:
                        self._address_cache.pop(answer.key, None)
                    if answer.error == AnnaError.WRONG_THREAD:
                        redirected = True
                    elif answer.error != AnnaError.TIMEOUT:
                        answers[answer.key] = answer
                unanswered = [key for key in pending if key not in answers]
                # Wrong or silent owners: the membership may have changed, so ask the routing tier again.
                for key in unanswered:
                    self._address_cache.pop(key, None)
                if unanswered and not redirected:
                    # Silence (not a redirect) may be overload: back off before trying again.
                    self._pause(self._retry.backoff(attempt), deadline, f"{request_type.name} of {unanswered!r}")
                elif unanswered and self._clock.now() >= deadline:
                    raise DeadlineExceeded(f"{request_type.name} of {unanswered!r}: no owner answered in time")
            return answers

    def _pause(self, seconds: float, deadline: float, what: str) -> None:
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            raise DeadlineExceeded(f"{what}: the KVS did not answer before the deadline")
        time.sleep(min(seconds, remaining))

    def _send_round(self, request_type: RequestType, tuples: list[KeyTuple], deadline: float) -> list[KeyTuple]:
        by_endpoint: dict[str, list[KeyTuple]] = {}
        for item in tuples:
            addresses = self._address_cache.get(item.key)
            if addresses is None:  # forgotten already (a batch larger than the address cache): next attempt
                continue
            sized = KeyTuple(item.key, item.lattice_type, payload=item.payload, address_cache_size=len(addresses))
            by_endpoint.setdefault(addresses[0], []).append(sized)
        waiting: dict[str, int] = {}
        for endpoint, items in by_endpoint.items():
            request_id = self._new_id()
            # Big payloads come back as frames of their own: no protobuf copies of them at either end.
            request = KeyRequest(request_type, tuple(items), self.response_address, request_id, payload_frames=True)
            self._push.send(endpoint, codec.encode_key_request(request))
            waiting[request_id] = len(items)
        answers: list[KeyTuple] = []
        for response in self._collect(self._responses, waiting, deadline, codec.decode_key_response):
            answers.extend(response.tuples)
        return answers

    def _resolve(self, keys: list[str], deadline: float, guess: bool = False) -> None:
        """Fills the address cache for ``keys`` from the routing tier.

        Args:
            keys: The keys about to be sent.
            deadline: When to give up.
            guess: When every key seen so far lives on one storage endpoint (a single-threaded node, the common
                case), send unknown keys there without asking the routing tier first. A wrong guess costs one
                ``WRONG_THREAD`` answer, after which the key is looked up properly; a right one saves a round trip
                for every fresh key (every call result is one).
        """
        if self._fixed_endpoint:
            for key in keys:
                if key not in self._address_cache:
                    self._remember(key, (self._routing,))
            return
        if guess and len(self._endpoints) == 1:
            (only,) = self._endpoints
            for key in keys:
                if key not in self._address_cache:
                    self._remember(key, (only,))
            return
        attempt = 0
        while missing := [key for key in keys if key not in self._address_cache]:
            attempt += 1
            request_id = self._new_id()
            request = KeyAddressRequest(self._address_reply, tuple(missing), request_id)
            self._push.send(self._routing, codec.encode_key_address_request(request))
            for response in self._collect(
                self._addresses_in,
                {request_id: 1},
                deadline,
                lambda frames: codec.decode_key_address_response(frames[0]),
            ):
                if response.error == AnnaError.NO_SERVERS:
                    raise NoServers(f"the KVS at {self._routing} has no storage servers")
                for address in response.addresses:
                    if address.ips:
                        self._remember(address.key, address.ips)
                        self._endpoints.update(address.ips)
                unroutable = [a.key for a in response.addresses if not a.ips]
                if unroutable:
                    raise NoServers(f"the KVS at {self._routing} has no storage server for {unroutable!r}")
            if [key for key in keys if key not in self._address_cache]:
                self._pause(self._retry.backoff(attempt), deadline, f"address lookup of {missing!r}")

    def _remember(self, key: str, addresses: tuple[str, ...]) -> None:
        # Bounded: a long-lived client touches endless fresh keys (every call result is one).
        if len(self._address_cache) >= ADDRESS_CACHE_SIZE:
            for stale in list(itertools.islice(self._address_cache, ADDRESS_CACHE_SIZE // 4)):
                del self._address_cache[stale]
        self._address_cache[key] = addresses

    def _collect(
        self,
        socket: zmq.Socket[bytes],
        waiting: dict[str, int],
        deadline: float,
        decode: Callable[[list[bytes]], _R],
    ) -> list[_R]:
        """Receives the responses to ``waiting`` until all arrive, the attempt times out, or the deadline passes."""
        received: list[_R] = []
        until = min(deadline, self._clock.now() + self._retry.attempt_timeout)
        while waiting:
            remaining = until - self._clock.now()
            if remaining <= 0 or not socket.poll(max(1, int(remaining * 1000))):
                break
            try:
                response = decode(socket.recv_multipart(zmq.NOBLOCK))
            except DecodeError:
                continue
            if response.response_id in waiting:
                del waiting[response.response_id]
                received.append(response)
            elif self._unsettled:
                self._stash(response)
        return received
