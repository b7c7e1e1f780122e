"""The client: register functions and DAGs, call them, read and write objects.

Requests to the scheduler use REQ sockets (the original wire protocol), one per thread and port so that threads
never wait on each other, each with a deadline. Results come back on one PULL socket per connection, read by a
background thread that completes the matching futures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import random
import sys
import sysconfig
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cloudpickle
import zmq

from cloudburst.client.future import Future, ResultSlot
from cloudburst.client.in_flight import RequestsInFlight, SentRequest
from cloudburst.client.leases import DagLeaseView, Lease, executor_of, location_of
from cloudburst.client.waiting import WaitingCall, WaitingCalls, inline_value
from cloudburst.clock import TimestampGenerator, writer_id_for
from cloudburst.config import RuntimePorts
from cloudburst.errors import (
    Cancelled,
    CloudburstError,
    DeadlineExceeded,
    DecodeError,
    ExecutorLost,
    FunctionNotFound,
    InvalidRequest,
    NoResources,
    NotPinned,
    TransportError,
)
from cloudburst.keys import TRIGGER_INDEX, trigger_key
from cloudburst.kvs.client import KvsClient
from cloudburst.lattices import LwwLattice, SetLattice
from cloudburst.protocol import codec
from cloudburst.protocol.errors import error_from_response
from cloudburst.protocol.exception_names import RetryExceptions, exception_names
from cloudburst.protocol.messages import ConsistencyType, SerializerType
from cloudburst.protocol.runtime_messages import (
    DEFAULT_MAX_RETRIES,
    Arguments,
    CallResult,
    CancelRequest,
    ClusterStatus,
    Continuation,
    Dag,
    DagCall,
    EncodedValue,
    ErrorCode,
    ExecutionType,
    Function,
    FunctionCall,
    FunctionReference,
    GenericResponse,
    Link,
    ResultDelivery,
)
from cloudburst.protocol.trigger_messages import DEFAULT_ACK_TIMEOUT, DEFAULT_MAX_ATTEMPTS, TriggerSpec
from cloudburst.protocol.values import decode, encode, encode_error, from_lattice, serialize, to_lattice
from cloudburst.protocol.versions import VersionInfo, check_compatible, local_version_info
from cloudburst.shared.reference import CloudburstReference
from cloudburst.transport.security import SecurityConfig, curve_client
from cloudburst.transport.zmq import reply_socket

logger = logging.getLogger(__name__)

#: Results that arrive before their future exists (the executor can be faster than the scheduler's reply).
_EARLY_RESULTS = 10_000
_KVS_DEFAULT_PORT = 6450
#: How long connecting waits for the scheduler: a running scheduler answers in microseconds, so waiting long only
#: delays telling the user that no cluster is there.
CONNECT_TIMEOUT = 5.0
#: How long connecting waits for the scheduler's versions. A scheduler that has the info port answers as fast as
#: it answered the connect request, and one without it refuses the TCP connection, which is noticed at once; this
#: only bounds the odd case of a port whose packets are dropped.
VERSION_CHECK_TIMEOUT = 1.0
#: Seconds to wait for a lease; a scheduler that does not answer in time is taken to grant none.
LEASE_TIMEOUT = 5.0
#: Functions whose leases a connection keeps at once.
_MAX_LEASES = 10_000
#: Seconds a connection whose scheduler did not answer a DAG lease request places DAG requests through it.
_NO_LEASE_BACKOFF = 30.0
#: Seconds between two checks that the processes taking this connection's requests still run.
_WATCH_EVERY = 0.25
#: A request younger than this is not checked yet (most have answered by then).
_CHECK_AFTER = 0.25
#: How long the watchdog waits for the scheduler's answers: it is down, or restarting, if it takes longer.
_WATCH_TIMEOUT = 1.0
#: A request placed through the scheduler is checked to be still held by it once this old (seconds).
_VERIFY_AFTER = 1.0
#: Requests checked at once, the oldest first.
_MAX_VERIFIED = 1000
#: How long a request the scheduler may safely receive twice waits for an answer before it is sent again: a
#: scheduler that died holding it never answers, its restarted successor answers the copy.
_RESEND_AFTER = 2.0


def _kvs_endpoint(answer: str) -> str:
    """The KVS routing endpoint from a scheduler's connect answer (a bare host means the default port)."""
    return answer if answer.startswith("tcp://") else f"tcp://{answer}:{_KVS_DEFAULT_PORT}"


def _connect(socket: zmq.Socket[bytes], endpoint: str) -> None:
    """Connects ``socket`` to ``endpoint``.

    Raises:
        TransportError: ``endpoint`` is malformed, as when a scheduler is given as a URL rather than a host.
    """
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as error:
        raise TransportError(
            f"cannot connect to {endpoint}: {error} (give the scheduler as a host, e.g. 10.0.0.2)"
        ) from None


def _ship_module_by_value(definition: object) -> None:
    """Makes cloudpickle copy the code of the user module defining ``definition`` instead of naming it.

    By default cloudpickle pickles a function or class defined in an importable module by reference, which fails
    on executors that do not have the user's project on their path. Modules that come from installed packages or
    the standard library stay by reference (executors have those); the user's own modules travel with the function.
    """
    module_name = getattr(definition, "__module__", None)
    module = sys.modules.get(module_name or "")
    path = getattr(module, "__file__", None)
    if module is None or path is None or module_name in ("__main__", None) or module_name.startswith("cloudburst."):
        return
    paths = sysconfig.get_paths()
    roots = (sys.prefix, sys.base_prefix, paths["purelib"], paths["platlib"], paths["stdlib"])
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        cloudpickle.register_pickle_by_value(module)


def _retry_names(what: str, retries: int | None, retry_exceptions: RetryExceptions) -> tuple[str, ...]:
    """Checks a retry budget and returns the names of the exceptions it covers.

    Raises:
        InvalidRequest: ``retries`` is negative, or ``retry_exceptions`` names something else than exceptions.
    """
    if retries is not None and retries < 0:
        raise InvalidRequest(f"retries of {what!r} must be 0 or more, not {retries}")
    try:
        return exception_names(retry_exceptions)
    except TypeError as error:
        raise InvalidRequest(f"{what!r}: {error}") from None


class FunctionHandle:
    """A registered function; calling it runs it once and returns a :class:`Future`.

    Args:
        name: The function's name.
        connection: The connection its calls go through.
        retries: How many times a call may run again if its executor is lost (``None``: the cluster's default, 3;
            0 for functions that must not run twice).
        retry_exceptions: Program errors that run a call again too, within ``retries``: ``True`` for any
            exception, or exception classes (subclasses included); none by default.
    """

    def __init__(
        self,
        name: str,
        connection: Connection,
        retries: int | None = None,
        retry_exceptions: RetryExceptions = None,
    ) -> None:
        self.name = name
        self.retries = retries
        self.retry_exceptions = retry_exceptions
        self._connection = connection

    def __repr__(self) -> str:
        return f"FunctionHandle({self.name!r})"

    def __call__(self, *args: object) -> Future:
        """Calls the function with ``args`` (futures become references to their results).

        Raises:
            FunctionNotFound: The function is no longer registered.
            NoResources: No executor is available.
            DeadlineExceeded: The scheduler did not answer in time.
        """
        return self._connection.call(self.name, *args, retries=self.retries, retry_exceptions=self.retry_exceptions)


class _VersionProbe:
    """The scheduler's versions, asked on its info port as soon as the probe exists and read by :meth:`answer`.

    A scheduler older than the info port (or the original system's) has nothing listening there: the refused TCP
    connection shows on a socket monitor at once, so such a cluster costs no wait either.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str, security: SecurityConfig | None) -> None:
        self._endpoint = endpoint
        self._socket = context.socket(zmq.REQ)
        self._socket.setsockopt(zmq.LINGER, 0)
        curve_client(self._socket, security)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_CONNECT_RETRIED)
        try:
            _connect(self._socket, endpoint)
        except TransportError:
            self.close()
            raise
        self._socket.send(b"")

    def answer(self, wait: float) -> VersionInfo | None:
        """The scheduler's versions, or ``None`` if it cannot tell within ``wait`` seconds (logged, not raised)."""
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(max(1, math.ceil(left * 1000))))
            if self._socket in ready:
                try:
                    return VersionInfo.decode(self._socket.recv())
                except DecodeError as error:
                    logger.warning("%s did not answer with versions (%s); not checked", self._endpoint, error)
                    return None
            if self._monitor in ready:
                logger.debug("%s refused the connection (a scheduler without the info port)", self._endpoint)
                return None
        logger.debug("%s did not answer in %g s; versions not checked", self._endpoint, wait)
        return None

    def close(self) -> None:
        """Closes the probe's sockets (before the context is terminated, which would wait for them)."""
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)


class Connection:
    """A connection to a Cloudburst deployment through one scheduler.

    Args:
        scheduler: The scheduler's host.
        host: This machine's address as executors can reach it (results are pushed here).
        ports: The deployment's port layout.
        timeout: Default deadline, in seconds, of every request and of waiting for results.
        security: CURVE keys (:meth:`SecurityConfig.for_client`) for a deployment that requires them; ``None``:
            plaintext.
        check_versions: Ask the scheduler for its versions and refuse a cluster whose Python or cloudpickle
            major.minor version differs from this process's (a scheduler too old to tell is accepted).

    Raises:
        DeadlineExceeded: The scheduler did not answer the connection request in time (with CURVE keys, also
            when the deployment refuses the key).
        VersionMismatch: ``check_versions`` and the cluster runs another Python or cloudpickle major.minor version.
        TransportError: ``host`` is not an address of this machine.
    """

    def __init__(
        self,
        scheduler: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        ports: RuntimePorts | None = None,
        timeout: float = 30.0,
        security: SecurityConfig | None = None,
        check_versions: bool = True,
    ) -> None:
        self.scheduler = scheduler
        self.security = security
        self.ports = ports or RuntimePorts()
        self.timeout = timeout
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._local = threading.local()
        self._sockets_lock = threading.Lock()
        self._all_sockets: list[zmq.Socket[bytes]] = []
        try:
            self._results, self.result_address = reply_socket(self._context, host, security)
        except TransportError:
            self._context.term()
            raise
        self._slots: dict[str, ResultSlot] = {}
        self._early: OrderedDict[str, EncodedValue] = OrderedDict()
        self._slots_lock = threading.Lock()
        self._closed = threading.Event()
        #: Direct requests an executor refused (the lease was out of date), for the replacer thread to place again
        #: through the scheduler (``None`` stops it).
        self._refused: queue.SimpleQueue[SentRequest | None] = queue.SimpleQueue()
        self._receiver = threading.Thread(target=self._receive_results, name="cloudburst-results", daemon=True)
        self._receiver.start()
        self._stamp = TimestampGenerator(writer_id_for(self.result_address))
        self._leases: dict[str, Lease] = {}
        self._dag_leases: dict[str, DagLeaseView] = {}
        self._in_flight = RequestsInFlight()
        self._waiting = WaitingCalls()
        self._retries: Counter[str] = Counter()
        #: Requests the scheduler did not hold when last asked, with no result yet (see ``_check_scheduler``).
        self._unheld: set[str] = set()
        #: The scheduler's incarnation as last seen: requests placed through an earlier one are placed again.
        self._scheduler_incarnation = ""
        self._rng = random.Random()
        self._leasing = True
        #: Until when (monotonic seconds) DAG requests go through the scheduler without asking for a lease.
        self._no_dag_leases_until = 0.0
        #: Whether the scheduler told its versions (then it grants leases, and a lease it does not grant in time
        #: is a scheduler restarting, not one without leases).
        self._scheduler_known = False
        try:
            # Asked alongside the connect request, so that the check adds no round trip of its own.
            info = self.ports.info_endpoint(scheduler)
            probe = _VersionProbe(self._context, info, security) if check_versions else None
            try:
                answer = self._connect_request(min(timeout, CONNECT_TIMEOUT))
                if probe is not None:
                    self._check_versions(probe, min(timeout, VERSION_CHECK_TIMEOUT))
            finally:
                if probe is not None:
                    probe.close()
            self.kvs_routing = _kvs_endpoint(answer.decode())
            self.kvs = KvsClient(self.kvs_routing, host=host, timeout=timeout, security=security)
        except BaseException:
            self.close()
            raise
        self._watchdog = threading.Thread(target=self._watch, name="cloudburst-watchdog", daemon=True)
        self._watchdog.start()
        self._replacer = threading.Thread(target=self._replace_refused, name="cloudburst-replacer", daemon=True)
        self._replacer.start()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; pending futures can still read stored results until their deadline."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._refused.put(None)
        self._receiver.join()
        if hasattr(self, "_watchdog"):
            self._watchdog.join()
            self._replacer.join()
        if hasattr(self, "kvs"):
            self.kvs.close()
        with self._sockets_lock:
            for socket in self._all_sockets:
                socket.close(linger=0)
        self._results.close(linger=0)
        self._context.term()

    # -- functions -----------------------------------------------------------------------------------------

    def register(
        self,
        function: Callable[..., Any] | tuple[type, Any],
        name: str,
        *,
        retries: int | None = None,
        retry_exceptions: RetryExceptions = None,
    ) -> FunctionHandle:
        """Registers a function, or a class as ``(cls, init_args)`` instantiated once per executor.

        Registering an existing name replaces it; executors pick up the new version on their next call.

        Args:
            function: The function, or ``(cls, init_args)``.
            name: The name it is called by.
            retries: How many times the returned handle's calls may run again if their executor is lost
                (``None``: 3; 0 for a function that must not run twice, whose lost calls fail with
                ``ExecutorLost``).
            retry_exceptions: Program errors that run the handle's calls again too, within ``retries``: ``True``
                for any exception, or exception classes (subclasses included). By default a program's error
                reaches its caller at once.

        Raises:
            EncodeError: The function cannot be pickled.
            InvalidRequest: The name is empty, ``retries`` is negative, or ``retry_exceptions`` names something
                other than exception classes.
        """
        _retry_names(name, retries, retry_exceptions)
        _ship_module_by_value(function[0] if isinstance(function, tuple) else function)
        body = serialize(function)
        payload = codec.encode_function(Function(name, body))
        self._generic(self.ports.function_create, payload, f"register {name!r}", resend=True)
        return FunctionHandle(name, self, retries, retry_exceptions)

    def get_function(self, name: str) -> FunctionHandle | None:
        """A handle for a registered function, or ``None`` if there is none of that name."""
        return FunctionHandle(name, self) if name in self.list(name) else None

    def list(self, prefix: str = "") -> list[str]:
        """The registered functions whose names start with ``prefix``, sorted."""
        reply = self._request(self.ports.list, prefix.encode(), "list functions", resend=True)
        return sorted(codec.decode_string_set(reply, "function list"))

    def call(
        self,
        name: str,
        *args: object,
        consistency: ConsistencyType = ConsistencyType.NORMAL,
        retries: int | None = None,
        retry_exceptions: RetryExceptions = None,
        timeout: float | None = None,
    ) -> Future:
        """Runs a registered function once (or again, elsewhere, if its executor is lost).

        Args:
            name: The function.
            args: Its arguments. A future's result is passed on: the call is sent once it is here, with it inline
                when small (up to 100 KiB), else as a reference to it; a causal call takes futures as references.
            consistency: The consistency level of the call.
            retries: How many times it may run again if its executor is lost (``None``: 3).
            retry_exceptions: Program errors that run it again too, within ``retries`` (see :meth:`register`).
            timeout: Seconds until its deadline (the connection's default when ``None``): a call not started by
                then is dropped, one still running is stopped.

        Raises:
            FunctionNotFound: No function of that name is registered.
            NoResources: No executor is available.
            DeadlineExceeded: The scheduler did not answer in time.
            InvalidRequest: ``retries`` is negative, or ``retry_exceptions`` names something else than exceptions.
                (A call held for the results it takes reports the other three through its future, as it is sent
                later, and fails with ``DeadlineExceeded`` if those results have not come by its deadline.)
        """
        names = _retry_names(name, retries, retry_exceptions)
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        response_key = str(uuid.uuid4())
        slot = self._expect(response_key)

        def send() -> None:
            self._send_call(name, args, consistency, retries, names, deadline, response_key, slot)

        # Futures not resolved yet hold the call back until their results are here (see client/waiting.py); a
        # causal call takes them as references, read in its session, at once if their results will be stored.
        pending = tuple(arg for arg in args if isinstance(arg, Future) and not arg.done())
        if pending and (consistency == ConsistencyType.NORMAL or not all(future.stored for future in pending)):
            waiting = WaitingCall(response_key, pending, time.monotonic(), deadline)
            self._waiting.wait(waiting, lambda: self._send_waiting(name, slot, send))
        else:
            try:
                send()
            except BaseException:
                self._forget(response_key)
                raise
        return self._future(response_key, slot, stored=consistency != ConsistencyType.NORMAL)

    def _send_call(
        self,
        name: str,
        args: Sequence[object],
        consistency: ConsistencyType,
        retries: int | None,
        retry_exceptions: tuple[str, ...],
        deadline: float,
        response_key: str,
        slot: ResultSlot,
    ) -> None:
        """Sends a call whose arguments are all at hand: straight to an executor when it references no key."""
        normal = consistency == ConsistencyType.NORMAL
        failed = next((arg for arg in args if isinstance(arg, Future) and arg.failed()), None) if normal else None
        if failed is not None:
            # The call could only raise its argument's error: it gets that error here, and is never sent.
            slot.fill(failed.wait_encoded(0))
            return
        arguments, references = self._arguments(args, inline=normal)
        # A call referencing keys goes through the scheduler, which places it near them; any other goes straight
        # to an executor the scheduler leased for the function, a hop and a round trip shorter.
        lease = self._lease(name) if not references and normal else None
        call = FunctionCall(
            name=name,
            arguments=arguments,
            references=references,
            response_key=response_key,
            consistency=consistency,
            response_address=self.result_address,
            # A NORMAL call's result is only pushed: it is stored if it is ever passed on by reference. A causal
            # one's is stored too (it is what a later reference in a session reads).
            delivery=ResultDelivery.NOTIFY_ONLY if normal else ResultDelivery.NOTIFY_AND_STORE,
            function_version=lease.version if lease is not None else 0,
            deadline=deadline,
            max_retries=retries,
            retry_exceptions=retry_exceptions,
            stamp=time.time_ns() // 1000,
        )
        if lease is not None:
            executor, incarnation = lease.pick(self._rng, self._in_flight.counts)
            self._push(executor, codec.encode_executor_request(call))
            self._in_flight.sent(SentRequest(response_key, call, ((executor, incarnation),), "", time.monotonic()))
        else:
            self._place(call)
            self._placed(response_key, call, slot)

    def _expire_waiting(self) -> None:
        """Fails the calls still waiting for their arguments at their deadline (they are never sent)."""
        for waiting in self._waiting.expired(time.time()):
            with self._slots_lock:
                slot = self._slots.get(waiting.key)
            if slot is not None:
                error = DeadlineExceeded(
                    f"request {waiting.key} was still waiting for the results it takes at its deadline",
                    request_id=waiting.key,
                )
                slot.fill(encode_error(error))

    def _send_waiting(self, name: str, slot: ResultSlot, send: Callable[[], None]) -> None:
        """Sends a call whose last awaited argument just arrived (in the thread that received it); what keeps it
        from being sent becomes its result."""
        if slot.filled():
            return  # cancelled meanwhile
        try:
            send()
        except CloudburstError as error:
            slot.fill(encode_error(error))
        except Exception as error:  # the receiver thread must go on
            logger.exception("a call of %r waiting for its arguments could not be sent", name)
            slot.fill(encode_error(CloudburstError(f"the call could not be sent: {error!r}", function=name)))

    def _place(self, call: FunctionCall | DagCall) -> GenericResponse:
        """Has the scheduler place a call or DAG request; sent again if the scheduler dies holding it, unless the
        request must not run twice."""
        if isinstance(call, FunctionCall):
            port, payload, what = self.ports.function_call, codec.encode_function_call(call), f"call of {call.name!r}"
        else:
            port, payload, what = self.ports.dag_call, codec.encode_dag_call(call), f"call of DAG {call.name!r}"
        return self._generic(port, payload, what, resend=call.max_retries != 0)

    def _placed(self, key: str, call: FunctionCall | DagCall, slot: ResultSlot, *, after_direct: bool = False) -> None:
        """Remembers a request the scheduler placed, to place it again should the scheduler restart before it
        ends (the new scheduler's ledger does not know it); ``after_direct``: see :class:`SentRequest`."""
        if call.max_retries == 0:
            self._in_flight.done(key)  # it must not be placed twice: not remembered (nor what stood for it)
            return
        now = time.monotonic()
        self._in_flight.sent(SentRequest(key, call, (), self._scheduler_incarnation, now, after_direct=after_direct))
        if slot.filled():  # answered before it was remembered
            self._in_flight.done(key)

    def _lease(self, name: str) -> Lease | None:
        """Where calls of ``name`` may go directly, asking the scheduler when the last answer has expired; ``None``
        when they go through the scheduler (it grants no leases, or no executor can take them now).

        Raises:
            FunctionNotFound: No function of that name is registered.
        """
        lease = self._leases.get(name)
        now = time.monotonic()
        if lease is not None and now < lease.expires:
            return lease
        if not self._leasing:
            return None
        try:
            reply = self._request(
                self.ports.function_lease, name.encode(), f"lease of {name!r}", LEASE_TIMEOUT, resend=True
            )
        except DeadlineExceeded:
            if self._scheduler_known:
                return None  # placed through the scheduler this time, which waits for it
            # A scheduler without leases (an older one) never answers: place calls through it from now on.
            logger.warning("the scheduler at %s grants no leases; calls go through it", self.scheduler)
            self._leasing = False
            return None
        granted = codec.decode_function_lease(reply)
        if granted.error == ErrorCode.NO_RESOURCES or (
            granted.error == ErrorCode.NO_CLOUDBURST_ERROR and not granted.executors
        ):
            # No executor now (a scheduler just restarted knows none until they report): the scheduler places the
            # call, holding it until one can take it (or its deadline), rather than fail it here at once.
            self._leases.pop(name, None)
            return None
        if granted.error != ErrorCode.NO_CLOUDBURST_ERROR:
            refusal = GenericResponse(False, error=granted.error, error_message=granted.error_message)
            raise error_from_response(refusal, f"call of {name!r}")
        lease = Lease.granted(granted, now)
        if len(self._leases) >= _MAX_LEASES:
            self._leases.clear()
        self._leases[name] = lease
        return lease

    def _dag_lease(self, name: str) -> DagLeaseView | None:
        """Where requests of DAG ``name`` may go directly, asking the scheduler when the last answer has expired;
        ``None`` when they go through the scheduler (it refused, or grants no DAG leases)."""
        lease = self._dag_leases.get(name)
        now = time.monotonic()
        if lease is not None and now < lease.expires:
            return lease
        if not self._leasing or now < self._no_dag_leases_until:
            return None
        try:
            reply = self._request(self.ports.dag_lease, name.encode(), f"lease of DAG {name!r}", LEASE_TIMEOUT)
        except DeadlineExceeded:
            # A scheduler restarting, or one without DAG leases: requests go through it, which waits for them.
            self._no_dag_leases_until = now + _NO_LEASE_BACKOFF
            return None
        granted = codec.decode_dag_lease(reply)
        if granted.error != ErrorCode.NO_CLOUDBURST_ERROR:
            # The scheduler places the request, and raises what keeps it from running (or holds it until it can).
            self._dag_leases.pop(name, None)
            return None
        lease = DagLeaseView(
            granted.dag, tuple(Lease.granted(function, now) for function in granted.functions), now + granted.ttl
        )
        if len(self._dag_leases) >= _MAX_LEASES:
            self._dag_leases.clear()
        self._dag_leases[name] = lease
        return lease

    def _push(self, endpoint: str, payload: bytes) -> None:
        socket = self._thread_socket(zmq.PUSH, endpoint)
        try:
            socket.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            raise NoResources(f"the executor at {endpoint} is not taking calls (its queue is full)") from None

    async def call_async(self, name: str, *args: object, timeout: float | None = None) -> Any:  # noqa: ANN401, ASYNC109
        """Runs a registered function once and awaits its result, without blocking the event loop.

        Raises:
            FunctionNotFound: No function of that name is registered.
            RemoteExecutionError: The function raised.
            DeadlineExceeded: No answer or no result in time.
        """
        future = await asyncio.to_thread(self.call, name, *args)
        return await future.result_async(timeout)

    # -- DAGs ----------------------------------------------------------------------------------------------

    def register_dag(
        self,
        name: str,
        functions: Sequence[str | tuple[str, Iterable[object]]],
        connections: Iterable[tuple[str, str]],
        gpu_functions: Iterable[str] = (),
        batching_functions: Iterable[str] = (),
        colocated: Iterable[str] = (),
    ) -> None:
        """Registers a DAG of registered functions; pins its functions on executors.

        Args:
            name: The DAG's name.
            functions: Function names; ``(name, invalid_results)`` makes a function MULTIEXEC (run on every
                trigger; the first result not among ``invalid_results`` wins).
            connections: ``(source, sink)`` pairs; a sink receives its sources' results as arguments, in the order
                the links are listed.
            gpu_functions: Functions to run on GPU executors.
            batching_functions: Functions that take lists of arguments and return one result per request.
            colocated: Functions to place on the same node.

        Raises:
            FunctionNotFound: A function is not registered.
            InvalidDag: The DAG has a cycle, several sinks, or links outside it.
            DagAlreadyExists: The name is taken.
            NoResources: The functions could not all be pinned.
        """
        gpu, batching = set(gpu_functions), set(batching_functions)
        references = []
        for entry in functions:
            if isinstance(entry, tuple):
                fname, invalid = entry
                references.append(
                    FunctionReference(
                        fname,
                        ExecutionType.MULTIEXEC,
                        tuple(serialize(v) for v in invalid),
                        fname in gpu,
                        fname in batching,
                    )
                )
            else:
                references.append(FunctionReference(entry, gpu=entry in gpu, batching=entry in batching))
        unknown = sorted({ref.name for ref in references} - set(self.list()))
        if unknown:
            raise FunctionNotFound(f"DAG {name!r} uses unregistered functions: {', '.join(unknown)}", dag=name)
        dag = Dag(name, tuple(references), tuple(Link(s, t) for s, t in connections), tuple(colocated))
        self._dag_leases.pop(name, None)
        self._generic(self.ports.dag_create, codec.encode_dag(dag), f"registration of DAG {name!r}")

    def build_dag_call(
        self,
        name: str,
        arguments: Mapping[str, object],
        *,
        direct_response: bool = False,
        consistency: ConsistencyType = ConsistencyType.NORMAL,
        output_key: str | None = None,
        client_id: str | None = None,
        continuation: DagCall | None = None,
        reads: Mapping[str, Iterable[str]] | None = None,
        retries: int | None = None,
        retry_exceptions: RetryExceptions = None,
    ) -> DagCall:
        """Builds a DAG call without sending it (for example to pass as another call's continuation).

        Args:
            name: The DAG.
            arguments: Per function, its fixed arguments (a list; a single value is wrapped). A future among them
                is passed as a reference to its result; one whose result is only pushed to this client is waited
                for (up to the connection's timeout) and stored first.
            direct_response: Deliver the result only to this client, not to the KVS.
            consistency: The consistency level of the request.
            output_key: Store the result under this key instead of the request id.
            client_id: The causal session id.
            continuation: A call built by this method to run on this DAG's result.
            reads: Per function, keys it reads besides its reference arguments. The scheduler places the function
                near them; under MULTI the request's first read keeps versions of them consistent with it, so a
                later function reading them cannot meet a ``CausalConflict``.
            retries: How many times the request may run again, from the start, if an executor running a stage is
                lost (``None``: 3; 0 when the DAG's functions must not run twice).
            retry_exceptions: Program errors that run the function raising them again, within ``retries``
                (see :meth:`register`).

        Raises:
            InvalidRequest: ``retries`` is negative, or ``retry_exceptions`` names something else than exceptions.
            DeadlineExceeded: A future among the arguments did not resolve in time.
        """
        names = _retry_names(f"DAG {name}", retries, retry_exceptions)
        function_args: dict[str, Arguments] = {}
        references: dict[str, tuple[str, ...]] = {}
        for fname, values in arguments.items():
            items = values if isinstance(values, list) else [values]
            function_args[fname], keys = self._arguments(items)
            if keys:
                references[fname] = keys
        for fname, declared in (reads or {}).items():
            references[fname] = tuple(dict.fromkeys((*references.get(fname, ()), *declared)))
        return DagCall(
            name=name,
            function_args=function_args,
            response_address=self.result_address,
            consistency=consistency,
            output_key=output_key or "",
            client_id=client_id or "",
            continuation=Continuation(continuation.name, call=continuation) if continuation is not None else None,
            delivery=ResultDelivery.NOTIFY_ONLY if direct_response else ResultDelivery.NOTIFY_AND_STORE,
            references=references,
            max_retries=retries,
            retry_exceptions=names,
        )

    def call_dag(self, call: DagCall, *, timeout: float | None = None) -> Future:
        """Sends a DAG call built by :meth:`build_dag_call`.

        Args:
            call: The call.
            timeout: Seconds until its deadline (the connection's default when ``None``, unless the call has one):
                stages not started by then are dropped, running ones stopped.

        Raises:
            DagNotFound: No DAG of that name.
            NoResources: Some function has no live executor.
            DeadlineExceeded: The scheduler did not answer in time.
        """
        final = call
        while final.continuation is not None and final.continuation.call is not None:
            final = final.continuation.call
        # The result appears under the last call's output key if it has one, else under the first call's request
        # id, which only the scheduler's reply tells (a result arriving before that is kept until asked for).
        known_id = final.output_key
        if known_id:
            self._expect(known_id)
        if timeout is not None or not call.deadline:
            call = replace(call, deadline=time.time() + (self.timeout if timeout is None else timeout))
        if not call.stamp:
            call = replace(call, stamp=time.time_ns() // 1000)
        try:
            direct = self._send_dag_directly(call)
            reply = None if direct is not None else self._place(call)
        except BaseException:
            if known_id:
                self._forget(known_id)
            raise
        if direct is not None:
            key, slot = direct
            return self._future(key, slot, stored=call.delivery != ResultDelivery.NOTIFY_ONLY)
        assert reply is not None
        result_id = known_id or reply.response_id
        slot = self._expect(result_id)
        if not known_id and call.continuation is None:
            call = replace(call, output_key=result_id)  # so that, placed again, it answers under the same key
        if known_id or call.continuation is None:
            self._placed(result_id, call, slot)
        return self._future(result_id, slot, stored=final.delivery != ResultDelivery.NOTIFY_ONLY)

    def _send_dag_directly(self, call: DagCall) -> tuple[str, ResultSlot] | None:
        """Sends a DAG request straight to its sources' executors under a lease, when it may go so: NORMAL, reading
        no keys (the scheduler places those near them), not continuing into another DAG, allowed to run again.
        Returns the key its result comes under and the slot it fills, or ``None`` when the request must go through
        the scheduler.

        Raises:
            NoResources: A source's executor is not taking requests (its queue is full), as for direct calls.
        """
        if call.consistency != ConsistencyType.NORMAL or call.references or call.continuation is not None:
            return None
        if call.max_retries == 0:
            # One that must not run twice is the scheduler's to track: its ledger hears of a lost executor from the
            # node's supervisor at once, where this client learns it a lease round trip later (when the scheduler
            # answers), and ExecutorLost should come soon after the loss.
            return None
        if call.delivery == ResultDelivery.LEGACY:
            return None
        lease = self._dag_lease(call.name)
        if lease is None:
            return None
        schedule_id = str(uuid.uuid4())
        # Its output key set, so that placed again through the scheduler it answers under the same key.
        call = replace(call, output_key=call.output_key or schedule_id)
        placement = lease.place(call, schedule_id, self._rng, self._in_flight.counts, self.ports)
        slot = self._expect(call.output_key)
        self._in_flight.sent(SentRequest(call.output_key, call, placement.executors, "", time.monotonic()))
        try:
            for endpoint, schedule in placement.schedules:
                self._push(endpoint, codec.encode_executor_request(schedule))
        except BaseException:
            self._forget(call.output_key)
            raise
        return call.output_key, slot

    async def call_dag_async(self, call: DagCall, timeout: float | None = None) -> Any:  # noqa: ANN401, ASYNC109
        """Sends a DAG call and awaits its result, without blocking the event loop.

        Raises:
            DagNotFound: No DAG of that name.
            RemoteExecutionError: A function of the DAG raised.
            DeadlineExceeded: No answer or no result in time.
        """
        future = await asyncio.to_thread(self.call_dag, call)
        return await future.result_async(timeout)

    def delete_dag(self, name: str) -> None:
        """Deletes a DAG and unpins functions no other DAG uses.

        Raises:
            DagNotFound: No DAG of that name.
        """
        self._dag_leases.pop(name, None)
        self._generic(self.ports.dag_delete, name.encode(), f"deletion of DAG {name!r}")

    # -- storage triggers ----------------------------------------------------------------------------------

    def register_trigger(
        self,
        name: str,
        function: str,
        *,
        key: str | None = None,
        prefix: str | None = None,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> TriggerSpec:
        """Runs ``function(key, value)`` after every write of ``key``, or of any key starting with ``prefix``.

        Each acknowledged write gets at least one run, on an executor near a cache holding the key when there is
        one; a run that fails or is not done within ``ack_timeout`` seconds runs again, up to ``max_attempts``
        times, so functions should tolerate running twice for one write. Registering an existing name replaces
        that trigger. Writes start firing within a moment of this returning.

        Raises:
            InvalidRequest: Not exactly one of ``key`` and ``prefix``, an empty name, or limits that are not
                positive.
            FunctionNotFound: No function named ``function`` is registered.
            DeadlineExceeded: The scheduler or the KVS did not answer in time.
        """
        if not name:
            raise InvalidRequest("a trigger needs a name")
        if (key is None) == (prefix is None) or not (key or prefix):
            raise InvalidRequest(f"trigger {name!r} needs exactly one of a non-empty key and a non-empty prefix")
        if not (math.isfinite(ack_timeout) and ack_timeout > 0) or max_attempts < 1:
            raise InvalidRequest(f"trigger {name!r} needs a positive ack_timeout and max_attempts of at least 1")
        if function not in self.list(function):
            raise FunctionNotFound(f"no function named {function!r} is registered", function=function)
        spec = TriggerSpec(
            name=name,
            function=function,
            schedulers=(self.ports.scheduler_internal_endpoint(self.scheduler),),
            key=key or "",
            prefix=prefix or "",
            ack_timeout=ack_timeout,
            max_attempts=max_attempts,
        )
        self.kvs.put(TRIGGER_INDEX, SetLattice(frozenset({name.encode()})))
        self.kvs.put(trigger_key(name), LwwLattice(self._stamp(), codec.encode_trigger_spec(spec)))
        return spec

    def delete_trigger(self, name: str) -> None:
        """Stops trigger ``name`` from firing; runs already owed still happen.

        Raises:
            InvalidRequest: No trigger of that name.
            DeadlineExceeded: The KVS did not answer in time.
        """
        if name not in {spec.name for spec in self.list_triggers()}:
            raise InvalidRequest(f"no trigger named {name!r} is registered")
        self.kvs.put(trigger_key(name), LwwLattice(self._stamp(), b""))

    def list_triggers(self) -> tuple[TriggerSpec, ...]:
        """The registered storage triggers, by name.

        Raises:
            DeadlineExceeded: The KVS did not answer in time.
        """
        index = self.kvs.get(TRIGGER_INDEX)
        if not isinstance(index, SetLattice):
            return ()
        names = sorted(item.decode() for item in index.values)
        found = self.kvs.get_many([trigger_key(name) for name in names])
        return tuple(
            codec.decode_trigger_spec(stored.value, f"trigger {name!r}")
            for name in names
            if isinstance(stored := found.get(trigger_key(name)), LwwLattice) and stored.value
        )

    # -- objects -------------------------------------------------------------------------------------------

    def get_object(self, key: str, *, timeout: float | None = None) -> Any:  # noqa: ANN401 - user data
        """The Python value stored under ``key`` (a list for sets), or ``None`` if there is none.

        Raises:
            DeadlineExceeded: The KVS did not answer in time.
        """
        lattice = self.kvs.get(key, timeout=timeout)
        return None if lattice is None else from_lattice(lattice, f"value of {key!r}")

    def put_object(self, key: str, value: object, *, timeout: float | None = None) -> None:
        """Stores ``value`` under ``key`` (sets merge by union; anything else: last writer wins).

        Raises:
            LatticeTypeMismatch: The key holds a value of the other kind (set vs. register).
            DeadlineExceeded: The KVS did not acknowledge in time.
        """
        self.kvs.put(key, to_lattice(value, self._stamp), timeout=timeout)

    def status(self) -> ClusterStatus:
        """The scheduler's view of the cluster: executors, pinned functions, DAGs.

        Raises:
            DeadlineExceeded: The scheduler did not answer in time.
        """
        return codec.decode_cluster_status(self._request(self.ports.status_query, b"", "status", resend=True))

    # -- plumbing ------------------------------------------------------------------------------------------

    def _arguments(self, args: Iterable[object], *, inline: bool = False) -> tuple[Arguments, tuple[str, ...]]:
        """Encodes arguments (futures become references, or with ``inline`` their small results as they arrived)
        and lists the keys they reference, for placement."""
        encoded: list[EncodedValue] = []
        references = []
        for arg in args:
            if isinstance(arg, Future):
                value = inline_value(arg) if inline else None
                if value is not None:
                    encoded.append(value)
                    continue
                if not arg.stored:
                    self._store_result(arg)
                arg = CloudburstReference(arg.obj_id, True)
            if isinstance(arg, CloudburstReference):
                references.append(arg.key)
            encoded.append(encode(arg))
        return tuple(encoded), tuple(references)

    def _thread_socket(self, kind: int, endpoint: str) -> zmq.Socket[bytes]:
        """This thread's socket of ``kind`` connected to ``endpoint`` (ZeroMQ sockets are not thread-safe)."""
        sockets: dict[tuple[int, str], zmq.Socket[bytes]] = self._local.__dict__.setdefault("sockets", {})
        socket = sockets.get((kind, endpoint))
        if socket is None:
            socket = self._context.socket(kind)
            socket.setsockopt(zmq.LINGER, 0)
            curve_client(socket, self.security)
            try:
                _connect(socket, endpoint)
            except TransportError:
                # Left open, the socket would keep the context (and so close()) from ever terminating.
                socket.close(linger=0)
                raise
            sockets[(kind, endpoint)] = socket
            with self._sockets_lock:
                self._all_sockets.append(socket)
        return socket

    def _connect_request(self, wait: float) -> bytes:
        """The scheduler's answer to the connect request: its KVS routing address.

        Raises:
            DeadlineExceeded: No answer within ``wait`` seconds; the message says what to check.
        """
        try:
            return self._request(self.ports.connect, b"", "connect", wait)
        except DeadlineExceeded:
            key = " and that the cluster authorized this client's CURVE key" if self.security else ""
            raise DeadlineExceeded(
                f"no scheduler answered at tcp://{self.scheduler}:{self.ports.connect} within {wait:g} s: is a "
                f"cluster running there? Start one with `cloudburst up`, or check the address{key}"
            ) from None

    def _check_versions(self, probe: _VersionProbe, wait: float) -> None:
        """Refuses a cluster whose versions cannot run this client's functions.

        Raises:
            VersionMismatch: Python or cloudpickle major.minor versions differ.
        """
        cluster = probe.answer(wait)
        if cluster is None:
            return
        self._scheduler_known = True
        self._scheduler_incarnation = cluster.incarnation
        ours = local_version_info()
        if ours != cluster:
            # Other differences (the cloudburst or protocol version) are allowed: the wire stays compatible.
            logger.debug("versions: this client %s, the cluster %s", ours, cluster)
        check_compatible(ours, cluster, self.scheduler)

    def _request(
        self, port: int, payload: bytes, what: str, timeout: float | None = None, *, resend: bool = False
    ) -> bytes:
        """The scheduler's answer on ``port``.

        A request sent while the scheduler is down waits in the socket until it is back; one the scheduler took
        and died holding is never answered, so with ``resend`` (requests it may safely receive twice) it is sent
        again every :data:`_RESEND_AFTER` seconds until ``timeout``.

        Raises:
            DeadlineExceeded: No answer in time.
        """
        if self._closed.is_set():
            raise CloudburstError(f"{what}: the connection is closed")
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        endpoint = f"tcp://{self.scheduler}:{port}"
        while True:
            socket = self._thread_socket(zmq.REQ, endpoint)
            socket.send(payload)
            left = deadline - time.monotonic()
            if socket.poll(max(0, int(1000 * (min(left, _RESEND_AFTER) if resend else left)))):
                return socket.recv()
            # A REQ socket that got no reply cannot send again: replace it (dropping the unanswered copy).
            del self._local.sockets[(zmq.REQ, endpoint)]
            socket.close(linger=0)
            if not resend or time.monotonic() >= deadline or self._closed.is_set():
                break
            self._retries["requests_resent"] += 1
            logger.info("%s: no answer from the scheduler at %s in %g s; sent again", what, endpoint, _RESEND_AFTER)
        raise DeadlineExceeded(f"{what}: the scheduler at {self.scheduler}:{port} did not answer in {wait:g} s")

    def _generic(self, port: int, payload: bytes, what: str, *, resend: bool = False) -> GenericResponse:
        reply = self._request(port, payload, what, resend=resend)
        try:
            response = codec.decode_generic_response(reply)
        except DecodeError as error:
            raise CloudburstError(f"{what}: the scheduler sent an unreadable reply ({error})") from None
        if not response.success:
            raise error_from_response(response, what)
        return response

    def _expect(self, result_id: str) -> ResultSlot:
        with self._slots_lock:
            slot = self._slots.setdefault(result_id, ResultSlot())
            early = self._early.pop(result_id, None)
        if early is not None:
            slot.fill(early)
        return slot

    def _forget(self, result_id: str) -> None:
        with self._slots_lock:
            self._slots.pop(result_id, None)
        self._in_flight.done(result_id)

    def _future(self, result_id: str, slot: ResultSlot, *, stored: bool = True) -> Future:
        return Future(
            result_id,
            slot,
            lambda: self._stored_result(result_id),
            self.timeout,
            lambda: self._forget(result_id),
            lambda: self.cancel(result_id),
            stored=stored,
        )

    def _store_result(self, future: Future) -> None:
        """Stores a result the cluster only pushed here, under its key, so that a reference to it resolves.

        Raises:
            DeadlineExceeded: The result did not come within the connection's timeout, or the KVS did not answer.
        """
        value = future.wait_encoded(self.timeout)
        self.kvs.put(future.obj_id, LwwLattice(self._stamp(), codec.encode_encoded_value(value)))
        future.stored = True

    def cancel(self, request_id: str) -> bool:
        """Stops a request (a call's or DAG request's id, as its future's ``obj_id``): work not started is dropped,
        running work is interrupted, and its future raises :class:`~cloudburst.errors.Cancelled`.

        Returns:
            Whether this connection was waiting for its result (a request of another client is cancelled too).

        Raises:
            DeadlineExceeded: The scheduler did not answer in time.
        """
        error = Cancelled(f"request {request_id} was cancelled by its caller", request_id=request_id)
        with self._slots_lock:
            slot = self._slots.get(request_id)
        waiting = slot is not None and slot.fill(encode_error(error))
        payload = codec.encode_cancel_request(CancelRequest(request_id))
        executors = self._in_flight.where(request_id)
        for executor in executors:
            # Sent straight there: the scheduler does not know of it.
            self._push(self._cancel_endpoint(executor), payload)
        if executors:
            self._in_flight.done(request_id)
        self._generic(self.ports.cancel, payload, f"cancel of {request_id!r}", resend=True)
        return waiting

    def retry_counts(self) -> dict[str, int]:
        """What this connection did about failures so far: requests it placed again because their executor or
        scheduler was lost (``placed_again_executor_lost``, ``placed_again_scheduler_restarted``) or failed with
        ``ExecutorLost`` (``failed_executor_lost``: no retry left), requests it sent again to a scheduler that did
        not answer (``requests_resent``), and results it dropped because its caller already had one
        (``duplicate_results_dropped``: a request run twice answers twice, the caller sees one), and requests
        placed again because their scheduler had heard them done while their result never came
        (``placed_again_result_lost``: it was lost with the executor that sent it).
        The scheduler's own re-runs are in its metrics (``cloudburst_scheduler_reexecution_total``)."""
        return dict(self._retries)

    def _cancel_endpoint(self, executor: str) -> str:
        """The cancel port of the executor whose control endpoint is ``executor``."""
        return self.ports.executor_cancel_endpoint(*executor_of(executor, self.ports))

    def _watch(self) -> None:
        """The watchdog thread: places again the requests whose executor or scheduler was lost."""
        while not self._closed.wait(_WATCH_EVERY):
            stale = self._in_flight.older_than(time.monotonic() - _CHECK_AFTER)
            now = time.time()
            for request in stale:
                if request.call.deadline and now >= request.call.deadline:
                    self._in_flight.done(request.key)  # its future raises DeadlineExceeded
            live = [request for request in stale if not request.call.deadline or now < request.call.deadline]
            try:
                self._check_executors([request for request in live if request.direct])
                self._check_scheduler([request for request in live if not request.direct])
                for waiting in self._waiting.due(time.monotonic()):
                    for future in waiting.late():
                        future.check_stored()
                self._expire_waiting()
            except CloudburstError as error:
                logger.info("cannot check the requests in flight now: %s", error)

    def _check_executors(self, direct: Sequence[SentRequest]) -> None:
        """Places again, through the scheduler, the direct requests an executor of which is no longer in the
        function's (or DAG's) lease under the incarnation that took them (it restarted or left)."""
        by_name: dict[tuple[bool, str], list[SentRequest]] = {}
        for request in direct:
            by_name.setdefault((isinstance(request.call, DagCall), request.call.name), []).append(request)
        for (dag, name), requests in by_name.items():
            if dag:
                reply = self._request(self.ports.dag_lease, name.encode(), f"lease of DAG {name!r}", _WATCH_TIMEOUT)
                leases = codec.decode_dag_lease(reply).functions
            else:
                reply = self._request(self.ports.function_lease, name.encode(), f"lease of {name!r}", _WATCH_TIMEOUT)
                leases = (codec.decode_function_lease(reply),)
            alive = {
                executor: incarnation
                for lease in leases
                for executor, incarnation in zip(lease.executors, lease.incarnations, strict=True)
            }
            for request in requests:
                lost = [
                    location_of(executor, self.ports)
                    for executor, incarnation in request.executors
                    if incarnation and alive.get(executor) != incarnation
                ]
                if lost:
                    self._place_again(
                        request, (lost[0], "its process is gone (it restarted or left)"), "placed_again_executor_lost"
                    )

    def _check_scheduler(self, placed: Sequence[SentRequest]) -> None:
        """Places again the requests an earlier life of the scheduler placed (its successor does not know them),
        and those the scheduler no longer holds twice running while their result has not come (it was lost with
        the executor that sent it, after the scheduler heard the request was done)."""
        if not placed:
            return
        info = VersionInfo.decode(self._request(self.ports.info, b"", "scheduler info", _WATCH_TIMEOUT))
        if not info.incarnation:
            return  # a scheduler that does not tell: nothing more to check with it
        self._scheduler_incarnation = info.incarnation
        current = []
        for request in placed:
            if request.incarnation and request.incarnation != info.incarnation:
                self._place_again(request, None, "placed_again_scheduler_restarted")
            else:
                current.append(request)
        older = sorted(current, key=lambda request: request.sent_at)[:_MAX_VERIFIED]
        older = [request for request in older if request.sent_at < time.monotonic() - _VERIFY_AFTER]
        if not older:
            return
        # A scheduler that tells its incarnation has this port too.
        keys = codec.encode_string_set([request.key for request in older])
        reply = self._request(self.ports.in_flight, keys, "requests in flight", _WATCH_TIMEOUT)
        held = set(codec.decode_string_set(reply, "requests in flight"))
        for request in older:
            if request.key in held:
                self._unheld.discard(request.key)
            elif request.key in self._unheld:
                self._unheld.discard(request.key)
                self._place_again(request, None, "placed_again_result_lost")
            else:
                self._unheld.add(request.key)  # its result may be on its way: asked again next round
        self._unheld.intersection_update(request.key for request in older)  # the others were answered

    def _place_again(self, request: SentRequest, lost: tuple[str, str] | None, why: str) -> None:
        """Places a request again (``lost``: the executor lost with it and why, if one was; ``why`` names the
        reason in :meth:`retry_counts`), or fails it with ``ExecutorLost`` when it may not run again."""
        after_direct = request.direct or request.after_direct
        placing = SentRequest(
            request.key, request.call, (), self._scheduler_incarnation, time.monotonic(), after_direct=after_direct
        )
        if not self._in_flight.swap(request, placing):
            return  # answered, or placed again, meanwhile
        with self._slots_lock:
            slot = self._slots.get(request.key)
        if slot is None:
            self._in_flight.done(request.key)
            return  # nobody waits for it any more
        call = request.call
        retries = DEFAULT_MAX_RETRIES if call.max_retries is None else call.max_retries
        # A direct DAG request has no attempt number: it goes on with one retry fewer (the scheduler's ledger counts
        # its runs from there).
        exhausted = call.attempt > retries if isinstance(call, FunctionCall) else request.direct and retries == 0
        if lost is not None and exhausted:
            self._in_flight.done(request.key)
            error = ExecutorLost(
                f"request {request.key} was lost with its executor {lost[0]} and not run again (it may run "
                f"at most {retries + 1} time(s))",
                (lost,),
                function=call.name if isinstance(call, FunctionCall) else None,
                dag=call.name if isinstance(call, DagCall) else None,
                request_id=request.key,
            )
            slot.fill(encode_error(error))
            self._retries["failed_executor_lost"] += 1
            return
        if isinstance(call, FunctionCall):
            call = replace(call, attempt=call.attempt + 1, function_version=0)
        elif request.direct and lost is not None:
            call = replace(call, max_retries=retries - 1)
        self._retries[why] += 1
        try:
            self._place(call)
        except CloudburstError as error:
            logger.warning("could not place request %s again after it was lost (tried again): %s", request.key, error)
            self._in_flight.swap(placing, request)  # as it was: the next round finds it lost again
            return
        self._placed(request.key, call, slot, after_direct=after_direct)

    def _refused_directly(self, result: CallResult) -> bool:
        """Places through the scheduler a DAG request sent directly that an executor refused because the lease was
        out of date (a function no longer pinned there), and drops such a refusal that comes after the request was
        placed again (its executor was lost); whether the result was one of those."""
        request = self._in_flight.find(result.id)
        if request is None or not isinstance(request.call, DagCall) or not (request.direct or request.after_direct):
            return False
        try:
            decode(result.value)
        except NotPinned:
            if request.direct:
                # Placed again in another thread: a scheduler round trip must not hold up the results behind it.
                self._dag_leases.pop(request.call.name, None)
                self._refused.put(request)
            else:
                self._retries["duplicate_results_dropped"] += 1
            return True
        except Exception:
            return False
        return False

    def _replace_refused(self) -> None:
        """The replacer thread: places through the scheduler the direct requests refused for an out-of-date lease
        (in a thread of its own, so that a burst of them holds up neither results nor the watchdog's checks)."""
        while (request := self._refused.get()) is not None:
            try:
                self._place_again(request, None, "placed_again_not_pinned")
            except Exception:  # the thread must go on; the watchdog still has the request
                logger.exception("could not place request %s again", request.key)

    def _stored_result(self, key: str) -> EncodedValue | None:
        lattice = self.kvs.get(key)
        if isinstance(lattice, LwwLattice) and lattice.value:
            return codec.decode_encoded_value(lattice.value, f"result {key!r}")
        if lattice is not None:  # a set result: hand back its Python value
            return encode(from_lattice(lattice, f"result {key!r}"))
        return None

    def _receive_results(self) -> None:
        while not self._closed.is_set():
            if not self._results.poll(100):
                continue
            data = self._results.recv()
            try:
                result = codec.decode_call_result(data)
            except DecodeError as error:
                logger.warning("ignored an unreadable result message: %s", error)
                continue
            if result.value.serializer == SerializerType.ERROR and self._refused_directly(result):
                continue
            self._in_flight.done(result.id)
            with self._slots_lock:
                slot = self._slots.get(result.id)
                if slot is None:
                    self._early[result.id] = result.value
                    if len(self._early) > _EARLY_RESULTS:
                        self._early.popitem(last=False)
            if slot is not None and not slot.fill(result.value):
                self._retries["duplicate_results_dropped"] += 1
