"""The user library: the first argument of every user function, its handle on the KVS and on other executors.

The method names and return shapes are the original ``CloudburstUserLibrary``'s, so existing functions run
unchanged. What differs: KVS calls have deadlines and raise typed errors instead of returning ``False``/``None``
on failure; ``put`` takes several keys properly; and an invocation that never calls ``recv`` leaves the inbox
alone. The original drained and discarded the inbox after every invocation, so a message sent to a function queued
behind another call was lost with that call's end. What an invocation that did ``recv`` leaves unread is still
discarded when it ends, as the original did: programs like the original's summa and dist_avg tag their messages
with no run id, so a peer's late message must not reach the next program run on the executor.
"""

from __future__ import annotations

import io
import itertools
import logging
import pickle
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

import zmq

from cloudburst.clock import RequestTimestamps, TimestampGenerator, writer_id_for
from cloudburst.config import ExecutorConfig
from cloudburst.errors import CausalModeUnavailable, LatticeTypeMismatch, TransportError
from cloudburst.executor.causal import CausalSession, latest_value
from cloudburst.executor.causal_io import CausalDataClient
from cloudburst.executor.local_tier import LocalReadTier
from cloudburst.kvs.client import DataClient
from cloudburst.lattices import Lattice, LwwLattice, MultiKeyCausalLattice
from cloudburst.protocol import values
from cloudburst.protocol.codec import StorableLattice
from cloudburst.protocol.telemetry_messages import ReadRecord, describe_version
from cloudburst.transport.guard import RejectLog
from cloudburst.transport.security import curve_server
from cloudburst.transport.zmq import PushSocketCache, bind

logger = logging.getLogger(__name__)

#: Messages the inbox holds for this executor before senders' messages are dropped (ZeroMQ's receive high-water
#: mark), so a chatty peer cannot exhaust the executor's memory.
INBOX_CAPACITY = 10_000
#: Reads one request's trace records; a function reading more keys shows only its first ones.
MAX_LOGGED_READS = 64
#: Largest accepted inbox message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Keys whose last decoded value an executor keeps for repeated reads, and the bytes those values may pin (the
#: read tier may have dropped them meanwhile); past either it starts afresh.
MAX_DECODED_VALUES = 4096
MAX_DECODED_BYTES = 256 * 1024 * 1024
#: Values every reader may be handed as the same object: nobody can change them.
_IMMUTABLE_TYPES = frozenset({bytes, str, int, float, bool, complex, type(None)})

ExecutorId = tuple[str, int]


class UserLibrary:
    """What a user function gets as its first argument: KVS access and messaging between running functions.

    One instance serves every invocation on its executor; it is not meant to be shared between threads.

    Args:
        config: The executor's configuration (identity, ports, KVS deadline).
        kvs: The executor's KVS client.
        context: The ZeroMQ context to create the inbox socket in.
        push: Outgoing PUSH sockets, shared with the executor.
        timestamps: Stamps LWW writes; defaults to one keyed by this executor's ``ip:tid``.
        causal: Reads and writes of causal sessions; ``None`` on an executor without a node cache.
        store: The KVS itself, where keys written earlier in the running request are read (``kvs`` by default).

    Raises:
        TransportError: The inbox port cannot be bound.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        kvs: DataClient,
        context: zmq.Context[zmq.Socket[bytes]],
        push: PushSocketCache,
        timestamps: TimestampGenerator | None = None,
        causal: CausalDataClient | None = None,
        store: DataClient | None = None,
    ) -> None:
        self._config = config
        self._kvs = kvs
        self._store = store or kvs
        self._causal = causal
        #: Keys functions upstream in the running NORMAL request wrote, and keys the running function wrote; the
        #: latter only while such a request runs (``None`` otherwise), so one-shot calls accumulate nothing.
        self._upstream_writes: frozenset[str] = frozenset()
        self._writes: set[str] | None = None
        #: The causal session of the request running now (set by the runtime), ``None`` for NORMAL requests.
        self.session: CausalSession | None = None
        #: The request running now comes from an original client: ``put`` stores values in the forms its serializer
        #: reads (set by the runtime).
        self.legacy_forms = False
        #: Reads of the running request, for its trace (taken by the server after each run).
        self._reads: list[ReadRecord] = []
        #: Per key, the ``Value`` bytes last decoded and the value they gave, when nobody can change that value: a
        #: read of a key unchanged since (the read tier hands back the same bytes object) skips the unpickling.
        self._decoded: dict[str, tuple[bytes, object]] = {}
        self._decoded_bytes = 0
        #: The running invocation called ``recv``: it was a party to an exchange, whose leftovers end with it.
        self._received = False
        self._push = push
        self._id: ExecutorId = (config.host, config.tid)
        self._timestamps = timestamps or TimestampGenerator(writer_id_for(f"{config.host}:{config.tid}"))
        #: Stamps the running run's LWW writes from its request, so a retry repeats them (set by the runtime per
        #: run; ``None``: this executor's clock stamps them, as for a batch serving several requests).
        self.request_timestamps: RequestTimestamps | None = None
        self._inbox = context.socket(zmq.PULL)
        #: Anyone who reaches the inbox port can fill it with garbage: each kind is logged at most once a minute.
        self._rejected = RejectLog()
        self._inbox.setsockopt(zmq.LINGER, 0)
        self._inbox.setsockopt(zmq.RCVHWM, INBOX_CAPACITY)
        self._inbox.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        curve_server(self._inbox, config.security)
        try:
            bind(self._inbox, config.host, config.ports.executor_inbox + config.tid)
        except TransportError:
            self._inbox.close()
            raise

    def close(self) -> None:
        """Closes the inbox. Only the executor calls this, when it shuts down."""
        self._inbox.close()

    def end_invocation(self) -> int:
        """Called by the runtime after each invocation: discards what an invocation that used ``recv`` left unread.

        Returns:
            How many messages were discarded.
        """
        if not self._received:
            return 0
        self._received = False
        left = self.recv()
        self._received = False
        if left:
            logger.debug("discarded %d unread messages after an invocation that received", len(left))
        return len(left)

    # -- KVS ---------------------------------------------------------------------------------------------------

    @overload
    def get(self, key: str, deserialize: bool = True) -> Any: ...  # noqa: ANN401 - user data

    @overload
    def get(self, key: list[str] | tuple[str, ...], deserialize: bool = True) -> dict[str, Any]: ...

    def get(self, key: str | Sequence[str], deserialize: bool = True) -> Any:
        """Reads one key or several, in one round trip.

        Args:
            key: A key, or a list of keys.
            deserialize: Return Python values; with False, the stored lattice's raw content (for an LWW value the
                serialized ``Value`` bytes, for a set a set of them).

        Returns:
            For one key its value, or ``None`` if it does not exist; for a list, a dict from each key to that.

        Raises:
            DeadlineExceeded: The KVS did not answer within the executor's KVS timeout.
            KvsError: The KVS refused the read.
            DecodeError: A stored value cannot be loaded.
        """
        if isinstance(key, str):  # the common case, kept short: a cached read is a few microseconds
            lattice = self.get_lattices((key,), timeout=self._config.kvs_timeout)[key]
            if lattice is None:
                return None
            return self.value_of(key, lattice) if deserialize else lattice.reveal()
        lattices = self.get_lattices(list(key), timeout=self._config.kvs_timeout)
        found: dict[str, Any] = {}
        for name, lattice in lattices.items():
            if lattice is None:
                found[name] = None
            elif deserialize:
                found[name] = self.value_of(name, lattice)
            else:
                found[name] = lattice.reveal()
        return found

    def value_of(self, key: str, lattice: StorableLattice, what: str = "") -> Any:  # noqa: ANN401 - user data
        """The Python value of ``key``'s ``lattice``, as :func:`~cloudburst.protocol.values.from_lattice` gives it.

        A register's value that nobody can change (an immutable scalar, or an array loaded as a read-only view of
        the received bytes, as Ray hands out objects from its store) is kept with the bytes it came from, and
        handed back while the read tier answers with those same bytes: a repeated read of a value costs a lookup,
        not an unpickling (a cached 8 MB array no longer costs a copy per read). Anything else is decoded afresh,
        since its reader may change it.

        Args:
            key: The key read.
            lattice: What was read.
            what: How errors name the value (``value of <key>`` when empty).

        Raises:
            DecodeError: The lattice holds bytes that are not a ``Value``.
        """
        if not isinstance(lattice, LwwLattice):
            return values.from_lattice(lattice, what or f"value of {key!r}")
        data = lattice.value
        kept = self._decoded.get(key)
        if kept is not None and kept[0] is data:
            return kept[1]
        value = values.deserialize(data, what or f"value of {key!r}")
        if _unchangeable(value) and len(data) <= MAX_DECODED_BYTES:
            if len(self._decoded) >= MAX_DECODED_VALUES or self._decoded_bytes + len(data) > MAX_DECODED_BYTES:
                self._decoded.clear()
                self._decoded_bytes = 0
            previous = self._decoded.get(key)
            self._decoded_bytes += len(data) - (len(previous[0]) if previous is not None else 0)
            self._decoded[key] = (data, value)
        return value

    @overload
    def put(self, key: str, value: object) -> bool: ...

    @overload
    def put(self, key: list[str] | tuple[str, ...], value: Sequence[object]) -> dict[str, bool]: ...

    def put(self, key: str | Sequence[str], value: object) -> bool | dict[str, bool]:
        """Writes one key, or several keys with one value each (``put([k1, k2], [v1, v2])``).

        A Python ``set`` is stored as a SET lattice, so concurrent writers' sets union; anything else is a
        last-writer-wins value.

        Returns:
            True for one key, a dict of True per key for several (the original's shapes). Failures raise.

        Raises:
            ValueError: Several keys with a value that is not a list of the same length.
            EncodeError: A value cannot be serialized.
            LatticeTypeMismatch: A key holds a set and the value is not one, or the other way round.
            DeadlineExceeded: The KVS did not acknowledge within the executor's KVS timeout.
        """
        if isinstance(key, str):
            lattice = values.to_lattice(value, self.request_timestamps or self._timestamps, legacy=self.legacy_forms)
            self._kvs.put(key, lattice, timeout=self._config.kvs_timeout)
            if self._writes is not None:
                self._writes.add(key)
            return True
        keys = list(key)
        if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != len(keys):
            raise ValueError(f"put of {len(keys)} keys needs a list of {len(keys)} values")
        items: Mapping[str, Lattice] = {
            name: values.to_lattice(item, self.request_timestamps or self._timestamps, legacy=self.legacy_forms)
            for name, item in zip(keys, value, strict=True)
        }
        self._kvs.put_many(items, timeout=self._config.kvs_timeout)
        if self._writes is not None:
            self._writes.update(keys)
        return dict.fromkeys(keys, True)

    # -- the running request -----------------------------------------------------------------------------------

    def begin_request(self, upstream_writes: Iterable[str]) -> None:
        """Starts a NORMAL request's run: ``upstream_writes`` are the keys its upstream functions wrote."""
        self._upstream_writes = frozenset(upstream_writes)
        self._writes = set()

    def end_request(self) -> tuple[str, ...]:
        """Ends the run; returns every key the request has written so far, for the functions downstream."""
        written = tuple(sorted(self._upstream_writes | (self._writes or set())))
        self._upstream_writes = frozenset()
        self._writes = None
        return written

    def get_lattices(self, keys: Sequence[str], *, timeout: float) -> dict[str, StorableLattice | None]:
        """Reads lattices: through the node cache, except keys written upstream in the running request.

        Those are read from the KVS itself: the node cache here may not have received the write yet, and a request
        must read its own writes wherever its functions run.
        """
        own = [key for key in keys if key in self._upstream_writes]
        if not own:
            found = self._kvs.get_many(keys, timeout=timeout)
            self._log_reads(found, ())
            return found
        found = self._store.get_many(own, timeout=timeout)
        others = [key for key in keys if key not in found]
        if others:
            found.update(self._kvs.get_many(others, timeout=timeout))
        self._log_reads(found, own)
        return found

    def take_reads(self) -> tuple[ReadRecord, ...]:
        """The reads logged since the last call (at most :data:`MAX_LOGGED_READS`), for the request's trace."""
        reads, self._reads = tuple(self._reads), []
        return reads

    def _log_reads(self, found: Mapping[str, StorableLattice | None], direct: Sequence[str]) -> None:
        room = MAX_LOGGED_READS - len(self._reads)
        if room <= 0:
            return
        data = self._kvs
        local = data.last_hits if isinstance(data, LocalReadTier) else frozenset()
        cached = data.last_cached
        through = "cache" if data is not self._store else "kvs"
        for key, lattice in itertools.islice(found.items(), room):
            if key in direct:
                source, hit = "kvs", False
            elif key in local:
                source, hit = "executor", True
            else:
                source, hit = through, key in cached
            self._reads.append(ReadRecord(key, source, hit, describe_version(lattice)))

    @overload
    def causal_get(self, key: str, deserialize: bool = True) -> Any: ...  # noqa: ANN401 - user data

    @overload
    def causal_get(self, key: list[str] | tuple[str, ...], deserialize: bool = True) -> dict[str, Any]: ...

    def causal_get(self, key: str | Sequence[str], deserialize: bool = True) -> Any:
        """Reads keys holding causal values, in the consistency of the running request (SINGLE or MULTI).

        Under SINGLE, each key's reads never go back in time. Under MULTI, every read of the request (across its
        DAG's functions and nodes) comes from one causally consistent snapshot, and a key read twice gives the same
        version. When concurrent writes left several siblings, one is returned, chosen the same way everywhere;
        :meth:`causal_siblings` returns them all.

        Args:
            key: A key, or a list of keys (read together, consistently, in one round trip).
            deserialize: Return Python values; with False, the sibling's serialized ``Value`` bytes.

        Returns:
            For one key its value, or ``None`` if it does not exist; for a list, a dict from each key to that.

        Raises:
            CausalModeUnavailable: The request is NORMAL, or this executor has no node cache.
            LatticeTypeMismatch: A key holds a non-causal value.
            CausalConflict: (MULTI) no version of a key consistent with the request's earlier reads is left.
            DeadlineExceeded: The cache did not answer in time.
        """
        keys = [key] if isinstance(key, str) else list(key)
        found = self._causal_read(keys)
        result: dict[str, Any] = {}
        for name in keys:
            value = found[name]
            if value is None:
                result[name] = None
            else:
                data = latest_value(value, self.session.own_write(name) if self.session is not None else None)
                result[name] = values.deserialize(data, f"value of {name!r}") if deserialize else data
        return result[key] if isinstance(key, str) else result

    def causal_siblings(self, key: str) -> list[Any]:
        """Every concurrent value of ``key`` (empty if it does not exist), in a fixed order, for reconciling.

        Raises:
            The errors of :meth:`causal_get`.
        """
        value = self._causal_read([key])[key]
        if value is None:
            return []
        return [values.deserialize(data, f"value of {key!r}") for data in sorted(value.values)]

    def causal_put(self, key: str, value: object) -> bool:
        """Writes ``value`` as a new version of ``key``, after everything this request has read or written.

        Under MULTI the version records the versions the request depends on, so no reader anywhere sees it
        without them.

        Returns:
            True (failures raise).

        Raises:
            CausalModeUnavailable: The request is NORMAL, or this executor has no node cache.
            EncodeError: The value cannot be serialized.
            LatticeTypeMismatch: The key holds a non-causal value.
            DeadlineExceeded: The write was not acknowledged in time.
        """
        session, causal = self._session("causal_put")
        causal.write(session, key, value)
        return True

    def _causal_read(self, keys: list[str]) -> dict[str, MultiKeyCausalLattice | None]:
        session, causal = self._session("causal_get")
        found, not_causal = causal.read(session, keys)
        self._log_reads({key: found.get(key) for key in keys if key not in not_causal}, ())
        if not_causal:
            raise LatticeTypeMismatch(not_causal[0], "non-causal", "MULTI_CAUSAL")
        return found

    def _session(self, what: str) -> tuple[CausalSession, CausalDataClient]:
        if self._causal is None:
            raise CausalModeUnavailable(f"{what}: this executor has no node cache, which causal modes need")
        if self.session is None:
            raise CausalModeUnavailable(f"{what} needs a call made with consistency SINGLE or MULTI")
        return self.session, self._causal

    # -- messaging ---------------------------------------------------------------------------------------------

    def getid(self) -> ExecutorId:
        """This executor's id, ``(ip, tid)``: what other functions pass to :meth:`send` to reach this one."""
        return self._id

    def send(self, dest: ExecutorId, payload: bytes) -> None:
        """Sends ``payload`` to the function running on executor ``dest``, fire-and-forget.

        The message waits in the destination's inbox until a function there calls :meth:`recv`.

        Raises:
            TypeError: ``dest`` is not an ``(ip, tid)`` pair or ``payload`` is not bytes.
            TransportError: ``dest`` names no valid endpoint.
        """
        if not (isinstance(dest, tuple | list) and len(dest) == 2 and isinstance(dest[1], int)):
            raise TypeError(f"send needs an (ip, tid) pair from getid(), not {dest!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"send takes bytes, not {type(payload).__name__}")
        # The original's wire format (a pickled pair), so original executors and ours can talk.
        message = pickle.dumps((self._id, bytes(payload)))
        self._push.send(self._config.ports.executor_inbox_endpoint(str(dest[0]), dest[1]), message)

    def recv(self) -> list[tuple[ExecutorId, bytes]]:
        """Takes every message waiting in this executor's inbox, without blocking.

        Returns:
            ``(sender id, payload)`` pairs in arrival order; empty when nothing waits.
        """
        self._received = True
        received: list[tuple[ExecutorId, bytes]] = []
        while True:
            try:
                data = self._inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return received
            message = _load_message(data)
            if message is None:
                self._rejected(f"inbox of {self._id[0]}:{self._id[1]}", "not a (sender, payload) message")
            else:
                received.append(message)


class _PlainUnpickler(pickle.Unpickler):
    """Loads only plain data: a message is ``((str, int), bytes)``, whose pickle names no class or function.

    Anyone who can reach the inbox port can send to it; refusing globals keeps a crafted message from running code.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: ANN401 - the pickle API
        raise pickle.UnpicklingError(f"inbox messages may not reference {module}.{name}")


def _load_message(data: bytes) -> tuple[ExecutorId, bytes] | None:
    try:
        sender, payload = _PlainUnpickler(io.BytesIO(data)).load()
        ip, tid = sender
    except Exception:  # a peer's garbage must not fail the function reading its inbox
        return None
    if not isinstance(ip, str) or not isinstance(tid, int) or not isinstance(payload, bytes):
        return None
    return (ip, tid), payload


def _unchangeable(value: object) -> bool:
    """Whether every reader may be handed ``value`` itself: an immutable scalar, or a read-only numpy array (one
    loaded as a view of received bytes, whose flag cannot be turned back on)."""
    kind = type(value)
    if kind in _IMMUTABLE_TYPES:
        return True
    flags = getattr(value, "flags", None)
    return kind.__module__ == "numpy" and flags is not None and not getattr(flags, "writeable", True)
