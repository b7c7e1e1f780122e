"""The executor's decisions, free of sockets, clocks, the KVS and user code: events in, instructions out.

:class:`ExecutorState` owns everything the original executor decided inline in its event loop: which functions
are pinned, which DAG requests are waiting for what, when a request is ready, which ready requests form a batch,
where a result or an error goes, what to report, and when a departing executor may exit. The server feeds it
events (messages received, functions loaded, runs finished, ticks) with the current monotonic time, and executes
the instructions it returns (send, store, load, run, exit). Work that takes time (loading a function, running user
code) ends with the server feeding the outcome back as the next event.

Request lifecycle. A DAG request is one function's share of one DAG call, keyed ``(schedule id, function)``. Its
schedule (from the scheduler; a source's schedule is its ``BEGIN`` trigger too) and its triggers (from upstream
executors) arrive on the same socket but from different senders, so in any order. The request is *pending* from the
first of them until it finishes (its result or error has been sent on), then *finished*: remembered for
``dedup_ttl`` so that late or repeated triggers are dropped. A pending request whose schedule or triggers never
complete is an *orphan* and is dropped after ``request_ttl``. While its function runs, a request is *running* and
cannot expire.

This module fixes the original's bookkeeping: it de-duplicates by request and function, for a while only; keeps
each request's state apart instead of reading leftovers of the loop; orders fan-in arguments by the DAG's links
rather than by arrival; delivers every error instead of crashing; unpins without exiting; runs one-shot calls
whatever is pinned; batches per function and checks the batch's results; and tells the caller when its function is
not pinned here.
"""

from __future__ import annotations

import enum
import functools
import itertools
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import assert_never

from cloudburst.config import ExecutorConfig
from cloudburst.errors import CloudburstError, FunctionNotFound, InvalidRequest, NoResources, NotPinned, TransportError
from cloudburst.executor.causal import CausalContext, SessionMetadata, join_metadata
from cloudburst.protocol import codec, values
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import (
    BEGIN,
    DEFAULT_MAX_RETRIES,
    Arguments,
    CallResult,
    Continuation,
    DagSchedule,
    DagStatistics,
    DagTrigger,
    EncodedValue,
    ErrorCode,
    ExecutionType,
    ExecutorRequest,
    ExecutorStatistics,
    ExecutorType,
    FunctionCall,
    FunctionReference,
    FunctionStatistics,
    GenericResponse,
    PinFunction,
    ResultDelivery,
    SchedulerMessage,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.telemetry_messages import ReadRecord, TraceHop
from cloudburst.protocol.trigger_messages import TriggerAck, TriggerFiring
from cloudburst.transport.endpoints import parse_endpoint

logger = logging.getLogger(__name__)

#: Requests of one batching function run together at most this many at a time (the original's BATCH_SIZE_MAX).
MAX_BATCH = 20
#: Pending DAG requests kept at once; past it the oldest non-running one is dropped (a flood must not exhaust memory).
MAX_PENDING_REQUESTS = 65_536
#: Finished requests remembered for de-duplication at once, on top of the ``dedup_ttl`` expiry.
MAX_FINISHED_REQUESTS = 65_536
#: Distinct trigger sources kept for a request whose schedule has not arrived (a DAG has far fewer upstreams).
MAX_TRIGGER_SOURCES = 256
#: Pins for the same function waiting for one load.
MAX_WAITING_PINS = 64
#: Runtime samples kept per function and per DAG in one report period (the count stays exact).
MAX_RUNTIME_SAMPLES = 10_000
#: Distinct function and DAG names tallied in one report period (one-shot names are unbounded in principle).
MAX_TALLIED_NAMES = 1_024
#: Entries of the debugging story log.
STORY_LENGTH = 10_000
#: Trace hops kept for the server to take; a server without a management service to send them to never takes them.
MAX_PENDING_HOPS = 4096
#: Seconds a departing executor stays up after its drain completes. Schedulers that picked it just before they saw
#: its ``running=False`` status may still have a request on the wire; exiting at once would lose it.
DEPART_GRACE = 1.0

RequestKey = tuple[str, str]


# -- events ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartEvent:
    """The server has bound its sockets: announce the executor to the schedulers."""


@dataclass(frozen=True, slots=True)
class RequestsReceivedEvent:
    """The control messages drained in one turn, in arrival order.

    Requests of a batching function that become ready within one such event run as one batch.
    """

    requests: tuple[ExecutorRequest, ...]


@dataclass(frozen=True, slots=True)
class FunctionLoadedEvent:
    """A :class:`LoadFunctionInstruction` succeeded; ``duration`` is the time it took (counted as busy time)."""

    name: str
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class FunctionLoadFailedEvent:
    """A :class:`LoadFunctionInstruction` failed (``FunctionNotFound`` when nothing is registered)."""

    name: str
    error: CloudburstError
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class EncodedResult:
    """A user result as the server serialized it, ready to push or store without touching Python objects again.

    Attributes:
        value: The ``Value`` of the whole result (serializer ``ERROR`` for an error).
        set_members: The serialized members when the result is a Python set, which is stored as a SET lattice so
            that repeated writes under one key union (the original's ``dump_lattice``); ``None`` stores LWW.
    """

    value: EncodedValue
    set_members: tuple[bytes, ...] | None = None


class OutputForm(enum.Enum):
    """What the server must make of a DAG function's result."""

    #: A sink's result, delivered to the caller: one :class:`EncodedResult`.
    RESULT = "result"
    #: A non-sink's result, sent downstream: one argument per element of a tuple result, else one argument.
    TRIGGER_ARGUMENTS = "trigger arguments"


@dataclass(frozen=True, slots=True)
class RunSucceeded:
    """User code returned.

    Attributes:
        result: The encoded result, for :attr:`OutputForm.RESULT` and one-shot calls.
        arguments: The downstream arguments, for :attr:`OutputForm.TRIGGER_ARGUMENTS`.
        valid: False when a MULTIEXEC result serialized to one of the DAG's ``invalid_results``.
        session: A causal request's session metadata, for the downstream triggers.
        stored: The runtime already wrote the result where the caller reads it (a causal sink's ``output_key``).
    """

    result: EncodedResult | None = None
    arguments: Arguments = ()
    valid: bool = True
    session: SessionMetadata | None = None
    stored: bool = False


@dataclass(frozen=True, slots=True)
class RunFailed:
    """User code raised, or its arguments or result could not be handled; ``error`` carries the context."""

    error: CloudburstError


RunOutcome = RunSucceeded | RunFailed


@dataclass(frozen=True, slots=True)
class OneShotDoneEvent:
    """A :class:`RunOneShotInstruction` finished after ``duration`` seconds, at wall-clock ``wall_time``, having
    read ``reads``."""

    run_id: int
    outcome: RunOutcome
    duration: float = 0.0
    wall_time: float = 0.0
    reads: tuple[ReadRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class DagRunDoneEvent:
    """A :class:`RunDagInstruction` finished: one outcome per item, in item order.

    Attributes:
        wall_time: Wall-clock seconds since the epoch at completion; a sink's end-to-end latency is measured
            against the schedule's ``start_time``, which is the scheduler's wall clock.
    """

    run_id: int
    outcomes: tuple[RunOutcome, ...]
    duration: float = 0.0
    wall_time: float = 0.0
    #: The keys the run read (a batch's reads are every item's).
    reads: tuple[ReadRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class TickEvent:
    """Time passed; reports, orphan expiry and the departure grace are decided from ``now``."""


@dataclass(frozen=True, slots=True)
class SchedulersListedEvent:
    """The management service answered a :class:`ListSchedulersInstruction`: the schedulers it knows."""

    hosts: tuple[str, ...]


ExecutorEvent = (
    StartEvent
    | SchedulersListedEvent
    | RequestsReceivedEvent
    | FunctionLoadedEvent
    | FunctionLoadFailedEvent
    | OneShotDoneEvent
    | DagRunDoneEvent
    | TickEvent
)


# -- instructions ----------------------------------------------------------------------------------------------

#: What :class:`SendInstruction` carries; the server picks the encoding by type (a ``DagTrigger`` goes in an
#: executor envelope, an ``EncodedValue`` is pushed bare for original clients).
OutgoingMessage = SchedulerMessage | DagTrigger | CallResult | EncodedValue | TriggerAck


@dataclass(frozen=True, slots=True)
class SendInstruction:
    """Push ``message`` to ``address`` (a ``tcp://`` endpoint)."""

    address: str
    message: OutgoingMessage


@dataclass(frozen=True, slots=True)
class StoreResultInstruction:
    """Merge ``result`` into the KVS under ``key``: LWW of the ``Value``, or a SET lattice of ``set_members``."""

    key: str
    result: EncodedResult


@dataclass(frozen=True, slots=True)
class LoadFunctionInstruction:
    """Load and keep function ``name``; answer with :class:`FunctionLoadedEvent` or :class:`FunctionLoadFailedEvent`."""

    name: str


@dataclass(frozen=True, slots=True)
class UnloadFunctionInstruction:
    """Drop the loaded function ``name`` (its class instance, if any, with it)."""

    name: str


@dataclass(frozen=True, slots=True)
class RunOneShotInstruction:
    """Run a one-shot call; answer with :class:`OneShotDoneEvent`."""

    run_id: int
    call: FunctionCall


@dataclass(frozen=True, slots=True)
class DagRunItem:
    """One request's share of a :class:`RunDagInstruction`.

    Attributes:
        request_id: The DAG request (schedule) id.
        dag: The DAG's name.
        arguments: The schedule's fixed arguments, then each trigger's arguments in edge order.
        output: What to make of the result.
        invalid_results: For MULTIEXEC: serialized ``Value`` bytes that make a result invalid.
        causal: For SINGLE and MULTI requests: the session the function reads and writes in.
        upstream_writes: For NORMAL requests: keys functions upstream wrote, which the function reads from the KVS
            itself so that a request reads its own writes on any node.
        legacy: The request comes from an original client, so values the function stores are in the forms that
            client's serializer reads.
        deadline: When its caller stops waiting (wall seconds; 0: never).
        result_key: Where its result goes (the output key, else the request id), the id callers cancel it by.
        retry_exceptions: Exceptions that run the function again (qualified class names), ``retries`` times at most.
        retries: See ``retry_exceptions``.
        stamp: When the request was first placed (microseconds), which its LWW writes are stamped from.
        depth: The function's depth in the DAG (see :class:`cloudburst.clock.RequestTimestamps`).
    """

    request_id: str
    dag: str
    arguments: Arguments
    output: OutputForm
    invalid_results: tuple[bytes, ...] = ()
    causal: CausalContext | None = None
    upstream_writes: tuple[str, ...] = ()
    legacy: bool = False
    deadline: float = 0.0
    result_key: str = ""
    retry_exceptions: tuple[str, ...] = ()
    retries: int = 0
    stamp: int = 0
    depth: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        """The ids a cancellation may name the request by."""
        return (self.request_id, self.result_key) if self.result_key else (self.request_id,)


@dataclass(frozen=True, slots=True)
class RunDagInstruction:
    """Run a pinned function for one request, or for several as one batched call; answer with :class:`DagRunDoneEvent`.

    Attributes:
        batching: Call once with argument ``i`` being the list of every item's ``i``-th argument; the function must
            return a list with one result per item.
    """

    run_id: int
    function: str
    items: tuple[DagRunItem, ...]
    batching: bool


@dataclass(frozen=True, slots=True)
class ExitInstruction:
    """The departure has drained: stop serving and exit with ``code``."""

    code: int = 0


@dataclass(frozen=True, slots=True)
class ListSchedulersInstruction:
    """Ask the management service for the scheduler list, without waiting; the answer comes back as a
    :class:`SchedulersListedEvent`."""


ExecutorInstruction = (
    SendInstruction
    | ListSchedulersInstruction
    | StoreResultInstruction
    | LoadFunctionInstruction
    | UnloadFunctionInstruction
    | RunOneShotInstruction
    | RunDagInstruction
    | ExitInstruction
)


@dataclass(frozen=True, slots=True)
class ExecutorCounters:
    """Totals since start, for logs and tests (the per-period figures go to the schedulers)."""

    duplicates_dropped: int = 0
    unexpected_triggers_dropped: int = 0
    orphans_dropped: int = 0
    requests_evicted: int = 0
    not_pinned_errors: int = 0
    requests_finished: int = 0
    one_shot_calls: int = 0


# -- internal records ------------------------------------------------------------------------------------------


class _PinPhase(enum.Enum):
    LOADING = "loading"
    PINNED = "pinned"
    #: Unpinned but still loaded, because a pending request needs it.
    UNPINNING = "unpinning"


@dataclass(slots=True)
class _PinnedFunction:
    name: str
    batching: bool
    phase: _PinPhase
    #: Pins answered once the load completes (LOADING only).
    waiting_pins: list[PinFunction] = field(default_factory=list)
    #: An unpin arrived while loading: unpin once loaded.
    unpin_after_load: bool = False


@dataclass(slots=True)
class _DagRequest:
    key: RequestKey
    created: float
    schedule: DagSchedule | None = None
    #: Received triggers by source, in arrival order.
    triggers: dict[str, DagTrigger] = field(default_factory=dict)
    #: MULTIEXEC: sources whose trigger has not been run yet, oldest first.
    unconsumed: deque[str] = field(default_factory=deque)
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class _DagRun:
    function: str
    keys: tuple[RequestKey, ...]


@dataclass(slots=True)
class _Tally:
    call_count: int = 0
    runtimes: list[float] = field(default_factory=list)

    def add(self, runtime: float) -> None:
        self.call_count += 1
        if len(self.runtimes) < MAX_RUNTIME_SAMPLES:
            self.runtimes.append(runtime)


@dataclass(frozen=True, slots=True)
class _Destination:
    """Where a result (or error) goes: the pushed id, the push address, the delivery mode, the KVS key; and the
    scheduler that placed the request, told when it is over (``attempt_id``: the call's key or schedule's id)."""

    result_id: str
    response_address: str
    delivery: ResultDelivery
    one_shot: bool = False
    placed_by: str = ""
    attempt_id: str = ""


class ExecutorState:
    """Every decision of one executor; see the module docstring for the request lifecycle.

    Args:
        config: The executor's configuration (identity, schedulers, ports, limits and TTLs).
        incarnation: Distinguishes this process start from earlier ones in status reports.
    """

    def __init__(self, config: ExecutorConfig, incarnation: str) -> None:
        self.config = config
        self.incarnation = incarnation
        #: ``"ip:tid"``, the node named in errors and statistics.
        self.node = f"{config.host}:{config.tid}"
        #: Functions pinned (or being loaded or unpinned) here; one-shot functions are not tracked here at all.
        self._functions: dict[str, _PinnedFunction] = {}
        #: Pending DAG requests in creation order (so eviction takes the oldest).
        self._requests: OrderedDict[RequestKey, _DagRequest] = OrderedDict()
        #: Pending requests per function name; an unpinning function is unloaded when its count reaches zero.
        self._requests_by_function: Counter[str] = Counter()
        #: Finished requests and when they finished, oldest first, for de-duplication.
        self._finished: OrderedDict[RequestKey, float] = OrderedDict()
        #: Runs handed to the server and not yet reported done.
        self._dag_runs: dict[int, _DagRun] = {}
        self._one_shot_runs: dict[int, FunctionCall] = {}
        self._run_ids: Iterator[int] = itertools.count(1)
        self._scheduler_turn = 0
        #: Schedulers the management service listed last, besides the configured ones (the original's executors
        #: had a list fixed at start).
        self._listed_schedulers: tuple[str, ...] = ()
        self._departing = False
        self._departed_at = 0.0
        self._exited = False
        self._started = False
        # Report period accounting.
        self._period_start: float | None = None
        self._busy = 0.0
        self._utilization = 0.0
        self._function_tallies: dict[str, _Tally] = {}
        self._dag_tallies: dict[str, _Tally] = {}
        #: Requests per DAG sent straight here to its first source this period (no scheduler counted them).
        self._direct_calls: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        #: Trace hops not yet taken by the server (the oldest are dropped when nobody takes them).
        self._hops: deque[TraceHop] = deque(maxlen=MAX_PENDING_HOPS)
        #: Bounded ``(request id, function, what, time)`` log for :meth:`story`.
        self._story: deque[tuple[str, str, str, float]] = deque(maxlen=STORY_LENGTH)
        self._now = 0.0

    # -- public API --------------------------------------------------------------------------------------------

    def handle(self, event: ExecutorEvent, now: float) -> list[ExecutorInstruction]:
        """Applies ``event`` at monotonic time ``now`` and returns what the server must do, in order."""
        out: list[ExecutorInstruction] = []
        if self._exited:
            logger.debug("ignoring %s after exit", type(event).__name__)
            return out
        self._now = now
        if self._period_start is None:
            self._period_start = now
        self._expire_finished(now)
        if isinstance(event, RequestsReceivedEvent):
            self._handle_requests(event.requests, now, out)
        elif isinstance(event, DagRunDoneEvent):
            self._handle_dag_run_done(event, now, out)
        elif isinstance(event, OneShotDoneEvent):
            self._handle_one_shot_done(event, out)
        elif isinstance(event, TickEvent):
            self._handle_tick(now, out)
        elif isinstance(event, FunctionLoadedEvent):
            self._handle_function_loaded(event, now, out)
        elif isinstance(event, FunctionLoadFailedEvent):
            self._handle_function_load_failed(event, now, out)
        elif isinstance(event, StartEvent):
            self._handle_start(out)
        elif isinstance(event, SchedulersListedEvent):
            self._handle_schedulers_listed(event.hosts, out)
        else:
            assert_never(event)
        self._check_departure(now, out)
        return out

    @property
    def departing(self) -> bool:
        """Whether a self-depart was received."""
        return self._departing

    @property
    def exited(self) -> bool:
        """Whether the :class:`ExitInstruction` has been issued."""
        return self._exited

    def pinned_functions(self) -> tuple[str, ...]:
        """The functions reported as pinned (loaded and not being unpinned), in pin order."""
        return tuple(name for name, fn in self._functions.items() if fn.phase is _PinPhase.PINNED)

    def loaded_functions(self) -> tuple[str, ...]:
        """The functions the server must keep loaded (pinned, or unpinned but still needed)."""
        return tuple(name for name, fn in self._functions.items() if fn.phase is not _PinPhase.LOADING)

    def pending_requests(self) -> tuple[RequestKey, ...]:
        """The pending DAG requests, oldest first."""
        return tuple(self._requests)

    def counters(self) -> ExecutorCounters:
        """Totals since start."""
        return ExecutorCounters(**self._counters)

    def schedulers(self) -> tuple[str, ...]:
        """The schedulers reports go to: the configured ones, then those the management service listed."""
        return tuple(dict.fromkeys((*self.config.schedulers, *self._listed_schedulers)))

    def status(self) -> ThreadStatus:
        """The status this executor reports now."""
        return ThreadStatus(
            ip=self.config.host,
            tid=self.config.tid,
            functions=() if self._departing else self.pinned_functions(),
            utilization=self._utilization,
            running=not self._departing,
            type=ExecutorType.GPU if self.config.gpu else ExecutorType.CPU,
            incarnation=self.incarnation,
            queued=len(self._one_shot_runs) + len(self._dag_runs),
        )

    def story(self, request_id: str) -> list[tuple[str, str, float]]:
        """What happened to DAG request (or one-shot response key) ``request_id``: ``(function, what, time)``."""
        return [(function, what, t) for rid, function, what, t in self._story if rid == request_id]

    def validate(self) -> None:
        """Checks the invariants that tie the structures together.

        Raises:
            AssertionError: An invariant does not hold (a bug in this class).
        """

        def check(condition: bool, message: str) -> None:
            if not condition:
                raise AssertionError(message)

        check(len(self._requests) <= MAX_PENDING_REQUESTS, "too many pending requests")
        check(len(self._finished) <= MAX_FINISHED_REQUESTS, "too many finished requests")
        counts: Counter[str] = Counter()
        for key, request in self._requests.items():
            counts[key[1]] += 1
            check(request.key == key, f"request {key} is filed under another key")
            check(key not in self._finished, f"request {key} is both pending and finished")
            if request.schedule is not None:
                check((request.schedule.id, request.schedule.target_function) == key, f"{key}: foreign schedule")
                unexpected = set(request.triggers) - set(request.schedule.triggers)
                check(not unexpected, f"{key}: triggers from {unexpected} are not in the schedule")
            else:
                check(request.run_id is None, f"{key} runs without a schedule")
                check(len(request.triggers) <= MAX_TRIGGER_SOURCES, f"{key}: too many trigger sources")
            for source, trigger in request.triggers.items():
                check((trigger.id, trigger.target_function, trigger.source) == (*key, source), f"{key}: bad trigger")
            check(set(request.unconsumed) <= set(request.triggers), f"{key}: unconsumed trigger was never received")
            check(len(set(request.unconsumed)) == len(request.unconsumed), f"{key}: a trigger is queued twice")
            if request.run_id is not None:
                owner = self._dag_runs.get(request.run_id)
                check(owner is not None and key in owner.keys, f"{key} marked running in an unknown run")
        check(counts == +self._requests_by_function, "per-function request counts are out of date")
        for run_id, run in self._dag_runs.items():
            for key in run.keys:
                item = self._requests.get(key)
                check(item is not None and item.run_id == run_id, f"run {run_id} item {key} is not running")
                check(key[1] == run.function, f"run {run_id} mixes functions")
        check(not set(self._dag_runs) & set(self._one_shot_runs), "a run id is used twice")
        times = list(self._finished.values())
        check(times == sorted(times), "finished requests are out of order")
        active = 0
        for name, fn in self._functions.items():
            check(fn.name == name, f"function {name} is filed under another name")
            check(not fn.waiting_pins or fn.phase is _PinPhase.LOADING, f"{name}: pins wait without a load")
            check(not fn.unpin_after_load or fn.phase is _PinPhase.LOADING, f"{name}: stale unpin-after-load")
            if fn.phase is _PinPhase.UNPINNING:
                check(self._requests_by_function[name] > 0, f"{name} is unpinning but nothing needs it")
            else:
                active += 1
        limit = self.config.max_pinned_functions
        check(limit is None or active <= limit, "more functions pinned than allowed")
        if self._exited:
            check(not self._requests and not self._dag_runs and not self._one_shot_runs, "exited with work pending")

    # -- events ------------------------------------------------------------------------------------------------

    def _handle_start(self, out: list[ExecutorInstruction]) -> None:
        if self._started:
            return
        self._started = True
        self._send_status(out)
        if self.config.management:
            out.append(ListSchedulersInstruction())

    def _handle_schedulers_listed(self, hosts: tuple[str, ...], out: list[ExecutorInstruction]) -> None:
        known = set(self.schedulers())
        self._listed_schedulers = hosts
        if self._started:
            # A scheduler that started after us learns of us now rather than a report period later.
            status = self.status()
            ports = self.config.ports
            out.extend(
                SendInstruction(ports.scheduler_internal_endpoint(host), status) for host in hosts if host not in known
            )

    def _handle_requests(self, requests: Iterable[ExecutorRequest], now: float, out: list[ExecutorInstruction]) -> None:
        touched: dict[RequestKey, None] = {}
        for request in requests:
            if isinstance(request, DagTrigger):
                self._receive_trigger(request, now, touched, out)
            elif isinstance(request, DagSchedule):
                self._receive_schedule(request, now, touched, out)
            elif isinstance(request, FunctionCall):
                self._receive_call(request, out)
            elif isinstance(request, PinFunction):
                self._receive_pin(request, out)
            elif isinstance(request, UnpinFunction):
                self._receive_unpin(request, out)
            elif isinstance(request, SelfDepart):
                self._receive_depart(now, out)
            else:
                assert_never(request)
        self._dispatch(touched, out)

    def _handle_function_loaded(self, event: FunctionLoadedEvent, now: float, out: list[ExecutorInstruction]) -> None:
        self._busy += event.duration
        fn = self._functions.get(event.name)
        if fn is None or fn.phase is not _PinPhase.LOADING:
            logger.warning("function %r was loaded but no pin is waiting for it", event.name)
            return
        if self._departing:
            # Pinning now would advertise a function on an executor that is about to exit.
            out.append(UnloadFunctionInstruction(event.name))
            self._abandon_function(fn, NoResources("the executor is departing", function=event.name), now, out)
            return
        pins, fn.waiting_pins = fn.waiting_pins, []
        fn.phase = _PinPhase.PINNED
        if fn.unpin_after_load:
            fn.unpin_after_load = False
            self._unpin(fn, out)
        # Status first: every scheduler should know the new location before the pinning one commits the DAG and
        # its client calls another scheduler.
        self._send_status(out)
        for pin in pins:
            self._reply_pin(pin, True, out)
        self._dispatch(dict.fromkeys(key for key in self._requests if key[1] == event.name), out)

    def _handle_function_load_failed(
        self, event: FunctionLoadFailedEvent, now: float, out: list[ExecutorInstruction]
    ) -> None:
        self._busy += event.duration
        fn = self._functions.get(event.name)
        if fn is None or fn.phase is not _PinPhase.LOADING:
            logger.warning("function %r failed to load but no pin is waiting for it: %s", event.name, event.error)
            return
        logger.warning("cannot pin function %r: %s", event.name, event.error)
        self._abandon_function(fn, event.error, now, out)

    def _handle_one_shot_done(self, event: OneShotDoneEvent, out: list[ExecutorInstruction]) -> None:
        call = self._one_shot_runs.pop(event.run_id, None)
        if call is None:
            logger.warning("ignoring the outcome of unknown one-shot run %d", event.run_id)
            return
        self._busy += event.duration
        self._tally_function(call.name, event.duration)
        outcome = event.outcome
        request_id = call.trigger.id if call.trigger is not None else call.response_key
        self._record_hop(request_id, call.name, "", event.outcome, event.duration, event.wall_time, event.reads)
        if call.trigger is not None:
            self._notify_done(call.placed_by, call.response_key, out)
            self._acknowledge_trigger(call.trigger, outcome, out)
            return
        destination = _Destination(
            call.response_key,
            call.response_address,
            call.delivery,
            one_shot=True,
            placed_by=call.placed_by,
            attempt_id=call.response_key,
        )
        if isinstance(outcome, RunFailed):
            self._remember(call.response_key, call.name, "failed")
            self._deliver(destination, self._error_result(outcome.error), out)
        elif outcome.result is None:
            error = CloudburstError("the runtime produced no result", function=call.name, node=self.node)
            self._deliver(destination, self._error_result(error), out)
        else:
            self._remember(call.response_key, call.name, "done")
            self._deliver(destination, outcome.result, out)

    def _acknowledge_trigger(self, firing: TriggerFiring, outcome: RunOutcome, out: list[ExecutorInstruction]) -> None:
        """Tells the KVS node a trigger's run is done, or why it failed (the node then runs it again)."""
        if isinstance(outcome, RunFailed):
            self._counters["trigger_runs_failed"] += 1
            logger.warning("run %s of trigger %r failed: %s", firing.id, firing.trigger, outcome.error)
            ack = TriggerAck(firing.id, error=f"{type(outcome.error).__name__}: {outcome.error}")
        else:
            self._counters["trigger_runs"] += 1
            ack = TriggerAck(firing.id)
        if firing.acknowledge_to:
            out.append(SendInstruction(firing.acknowledge_to, ack))

    def _handle_dag_run_done(self, event: DagRunDoneEvent, now: float, out: list[ExecutorInstruction]) -> None:
        run = self._dag_runs.pop(event.run_id, None)
        if run is None:
            logger.warning("ignoring the outcome of unknown DAG run %d", event.run_id)
            return
        self._busy += event.duration
        outcomes: tuple[RunOutcome, ...] = event.outcomes
        if len(outcomes) != len(run.keys):
            error = CloudburstError(
                f"the runtime returned {len(outcomes)} outcomes for {len(run.keys)} requests",
                function=run.function,
                node=self.node,
            )
            outcomes = (RunFailed(error),) * len(run.keys)
        share = event.duration / len(run.keys)
        touched: dict[RequestKey, None] = {}
        for key, outcome in zip(run.keys, outcomes, strict=True):
            request = self._requests.get(key)
            if request is None or request.schedule is None:  # cannot happen: running requests are never dropped
                logger.error("DAG run %d finished request %s, which is no longer pending", event.run_id, key)
                continue
            schedule = request.schedule
            request.run_id = None
            self._tally_function(run.function, share)
            sink = isinstance(outcome, RunSucceeded) and outcome.valid and not schedule.dag.downstream(run.function)
            self._record_hop(
                schedule.id,
                run.function,
                schedule.dag.name,
                outcome,
                share,
                event.wall_time,
                event.reads,
                queue=max(0.0, now - event.duration - request.created),
                end_to_end=max(0.0, event.wall_time - schedule.start_time) if sink and schedule.start_time > 0 else 0.0,
            )
            if isinstance(outcome, RunFailed):
                self._remember(key[0], key[1], "failed")
                self._deliver(self._final_destination(schedule), self._error_result(outcome.error), out)
                self._finish(request, now, out)
            elif not outcome.valid:
                # MULTIEXEC: an invalid result is not an answer; the next trigger gets its turn.
                self._remember(key[0], key[1], "invalid result")
                touched[key] = None
            else:
                self._complete(request, schedule, outcome, event.wall_time, now, out)
        self._dispatch(touched, out)

    def _handle_tick(self, now: float, out: list[ExecutorInstruction]) -> None:
        assert self._period_start is not None
        elapsed = now - self._period_start
        if elapsed < self.config.report_period:
            return
        self._utilization = min(1.0, self._busy / elapsed) if elapsed > 0 else 0.0
        self._busy = 0.0
        self._period_start = now
        self._send_status(out)
        statistics = self._take_statistics()
        if statistics.functions or statistics.dags:
            out.extend(self._to_schedulers(statistics))
        if self.config.management:
            out.append(ListSchedulersInstruction())
        self._expire_orphans(now, out)

    # -- requests ----------------------------------------------------------------------------------------------

    def _receive_pin(self, pin: PinFunction, out: list[ExecutorInstruction]) -> None:
        fn = self._functions.get(pin.name)
        if not pin.name:
            self._reply_pin(pin, False, out, ErrorCode.INVALID_REQUEST, "the pin names no function")
        elif self._departing:
            self._reply_pin(pin, False, out, ErrorCode.NO_RESOURCES, "the executor is departing")
        elif fn is not None and fn.phase is _PinPhase.PINNED:
            self._reply_pin(pin, True, out)
            self._send_status(out)
        elif fn is not None and fn.phase is _PinPhase.LOADING:
            if len(fn.waiting_pins) >= MAX_WAITING_PINS:
                self._reply_pin(pin, False, out, ErrorCode.NO_RESOURCES, "too many pins wait for this load")
            else:
                fn.waiting_pins.append(pin)
                fn.unpin_after_load = False
        elif self._at_pin_limit():
            limit = self.config.max_pinned_functions
            self._reply_pin(pin, False, out, ErrorCode.NO_RESOURCES, f"{limit} functions are pinned already")
        elif fn is not None:  # unpinning, still loaded: take it back
            fn.phase = _PinPhase.PINNED
            self._reply_pin(pin, True, out)
            self._send_status(out)
        else:
            self._functions[pin.name] = _PinnedFunction(pin.name, pin.batching, _PinPhase.LOADING, [pin])
            out.append(LoadFunctionInstruction(pin.name))

    def _receive_unpin(self, unpin: UnpinFunction, out: list[ExecutorInstruction]) -> None:
        fn = self._functions.get(unpin.name)
        if fn is None:
            logger.info("ignoring an unpin of %r, which is not pinned here", unpin.name)
        elif fn.phase is _PinPhase.LOADING:
            fn.unpin_after_load = True
        elif fn.phase is _PinPhase.PINNED:
            self._unpin(fn, out)
            self._send_status(out)

    def _receive_call(self, call: FunctionCall, out: list[ExecutorInstruction]) -> None:
        run_id = next(self._run_ids)
        self._one_shot_runs[run_id] = call
        self._counters["one_shot_calls"] += 1
        self._remember(call.response_key, call.name, "run one-shot")
        out.append(RunOneShotInstruction(run_id, call))

    def _receive_depart(self, now: float, out: list[ExecutorInstruction]) -> None:
        if self._departing:
            return
        self._departing = True
        self._departed_at = now
        logger.info("departing: no new pins; draining %d pending requests", len(self._requests))
        self._send_status(out)

    def _receive_schedule(
        self, schedule: DagSchedule, now: float, touched: dict[RequestKey, None], out: list[ExecutorInstruction]
    ) -> None:
        key = (schedule.id, schedule.target_function)
        if not all(key):
            logger.warning("dropping a schedule without an id or target function")
            return
        if self._is_finished(key, now):
            self._drop_duplicate(key, "schedule of a finished request")
            return
        if schedule.target_function not in self._functions:
            reason = f"function {schedule.target_function!r} is not pinned at this executor"
            self._fail_not_pinned(schedule, reason, now, out)
            return
        request = self._requests.get(key) or self._new_request(key, now)
        if request.schedule is not None:
            self._drop_duplicate(key, "repeated schedule")
            return
        request.schedule = schedule
        self._remember(key[0], key[1], "schedule")
        first_source = schedule.dag.sources()[:1] == (schedule.target_function,)
        tallied = schedule.dag.name in self._direct_calls or len(self._direct_calls) < MAX_TALLIED_NAMES
        if not schedule.placed_by and first_source:
            # Its client placed it under a lease: no scheduler counts it or tells its trace where it went.
            if tallied:
                self._direct_calls[schedule.dag.name] += 1
            self._record_placement(schedule)
        for source in [s for s in request.triggers if s not in schedule.triggers]:
            self._drop_unexpected(request, source)
        touched[key] = None
        if schedule.triggers == (BEGIN,) and BEGIN not in request.triggers:
            # A source function: its schedule is its start. (The original scheduler sent a BEGIN trigger after each
            # source's schedule, a message more per request for both ends; one still sent is dropped as a repeat.)
            start = DagTrigger(id=schedule.id, target_function=schedule.target_function, source=BEGIN)
            self._receive_trigger(start, now, touched, out)

    def _receive_trigger(
        self, trigger: DagTrigger, now: float, touched: dict[RequestKey, None], out: list[ExecutorInstruction]
    ) -> None:
        key = (trigger.id, trigger.target_function)
        if not all(key):
            logger.warning("dropping a trigger without an id or target function")
            return
        carried = trigger.schedule
        if carried is not None and (carried.id, carried.target_function) != key:
            self._counters["unexpected_triggers_dropped"] += 1
            logger.warning("dropping a trigger of %s carrying the schedule of another request", key)
            return
        request = self._requests.get(key)
        if carried is not None and (request is None or request.schedule is None) and not self._is_finished(key, now):
            # A request sent straight to its DAG's sources: the first trigger brings the schedule.
            self._receive_schedule(carried, now, touched, out)
            if self._is_finished(key, now):
                return  # refused: the function is not pinned here
        if self._is_finished(key, now):
            self._drop_duplicate(key, f"trigger from {trigger.source!r} for a finished request")
            return
        request = self._requests.get(key)
        if request is not None and trigger.source in request.triggers:
            self._drop_duplicate(key, f"repeated trigger from {trigger.source!r}")
            return
        if request is not None and request.schedule is not None and trigger.source not in request.schedule.triggers:
            self._counters["unexpected_triggers_dropped"] += 1
            logger.warning("dropping a trigger of %s from %r, which is not upstream", key, trigger.source)
            return
        if request is not None and len(request.triggers) >= MAX_TRIGGER_SOURCES:
            self._counters["unexpected_triggers_dropped"] += 1
            logger.warning("dropping a trigger of %s: %d sources already wait", key, MAX_TRIGGER_SOURCES)
            return
        if request is None:
            request = self._new_request(key, now)
        request.triggers[trigger.source] = trigger
        request.unconsumed.append(trigger.source)
        self._remember(key[0], key[1], f"trigger from {trigger.source}")
        touched[key] = None

    # -- running -----------------------------------------------------------------------------------------------

    def _dispatch(self, keys: Iterable[RequestKey], out: list[ExecutorInstruction]) -> None:
        """Starts every runnable request among ``keys``: batching functions' requests together, others alone."""
        batches: dict[str, list[tuple[RequestKey, DagRunItem]]] = {}
        for key in keys:
            request = self._requests.get(key)
            if request is None:
                continue
            taken = self._take_runnable(request)
            if taken is None:
                continue
            item, batching = taken
            if batching:
                batches.setdefault(key[1], []).append((key, item))
            else:
                self._start_run(key[1], [(key, item)], False, out)
        for function, entries in batches.items():
            for start in range(0, len(entries), MAX_BATCH):
                self._start_run(function, entries[start : start + MAX_BATCH], True, out)

    def _take_runnable(self, request: _DagRequest) -> tuple[DagRunItem, bool] | None:
        """The run item for ``request`` and whether it batches, if it can run now (consuming a MULTIEXEC trigger)."""
        schedule = request.schedule
        function = request.key[1]
        fn = self._functions.get(function)
        if schedule is None or request.run_id is not None or fn is None or fn.phase is _PinPhase.LOADING:
            return None
        reference = schedule.dag.reference(function) or FunctionReference(function)
        fixed = schedule.arguments.get(function, ())
        invalid_results: tuple[bytes, ...] = ()
        if reference.type == ExecutionType.MULTIEXEC:
            if not request.unconsumed:
                return None
            source = request.unconsumed.popleft()
            consumed: tuple[str, ...] = (source,)
            arguments = fixed + request.triggers[source].arguments
            invalid_results = reference.invalid_results
        else:
            if any(source not in request.triggers for source in schedule.triggers):
                return None
            consumed = schedule.triggers
            # Edge order, not arrival order, so fan-in arguments are deterministic.
            arguments = fixed + tuple(
                itertools.chain.from_iterable(request.triggers[source].arguments for source in schedule.triggers)
            )
        sink = not schedule.dag.downstream(function)
        output = OutputForm.RESULT if sink else OutputForm.TRIGGER_ARGUMENTS
        causal = None
        triggers = [request.triggers[source] for source in consumed if source in request.triggers]
        upstream_writes: tuple[str, ...] = ()
        if schedule.consistency != ConsistencyType.NORMAL:
            descendants = schedule.dag.descendants(function)
            causal = CausalContext(
                consistency=schedule.consistency,
                session_id=schedule.id,
                metadata=join_metadata(
                    SessionMetadata(t.version_locations, t.dependencies, t.observed, t.written) for t in triggers
                ),
                future_arguments=tuple(schedule.arguments.get(name, ()) for name in descendants),
                declared_reads=tuple(
                    dict.fromkeys(key for name in (function, *descendants) for key in schedule.references.get(name, ()))
                ),
                output_key=schedule.output_key,
                sink=sink,
            )
        else:
            # NORMAL triggers name, as dependencies, the keys written upstream.
            upstream_writes = tuple(sorted({version.key for trigger in triggers for version in trigger.dependencies}))
        legacy = schedule.delivery == ResultDelivery.LEGACY
        item = DagRunItem(
            schedule.id,
            schedule.dag.name,
            arguments,
            output,
            invalid_results,
            causal,
            upstream_writes,
            legacy,
            schedule.deadline,
            schedule.output_key or schedule.id,
            schedule.retry_exceptions,
            DEFAULT_MAX_RETRIES if schedule.max_retries is None else schedule.max_retries,
            schedule.stamp,
            schedule.dag.depth(schedule.target_function),
        )
        # A causal function reads and writes in its own request's session, so it never batches.
        return item, causal is None and (fn.batching or reference.batching)

    def _start_run(
        self,
        function: str,
        entries: list[tuple[RequestKey, DagRunItem]],
        batching: bool,
        out: list[ExecutorInstruction],
    ) -> None:
        run_id = next(self._run_ids)
        keys = tuple(key for key, _ in entries)
        self._dag_runs[run_id] = _DagRun(function, keys)
        for key in keys:
            self._requests[key].run_id = run_id
            self._remember(key[0], key[1], f"run {run_id}")
        out.append(RunDagInstruction(run_id, function, tuple(item for _, item in entries), batching))

    def _complete(
        self,
        request: _DagRequest,
        schedule: DagSchedule,
        outcome: RunSucceeded,
        wall_time: float,
        now: float,
        out: list[ExecutorInstruction],
    ) -> None:
        """Sends a successful result on: downstream as triggers, or to the caller from a sink."""
        function = request.key[1]
        downstream = schedule.dag.downstream(function)
        if downstream:
            endpoints = [self._executor_endpoint(schedule.locations.get(sink, "")) for sink in downstream]
            missing = [sink for sink, endpoint in zip(downstream, endpoints, strict=True) if endpoint is None]
            if missing:
                invalid = InvalidRequest(
                    f"the schedule gives no valid location for downstream function(s) {missing}",
                    function=function,
                    dag=schedule.dag.name,
                    node=self.node,
                    request_id=schedule.id,
                )
                self._deliver(self._final_destination(schedule), self._error_result(invalid), out)
            else:
                session = outcome.session or SessionMetadata()
                for sink, endpoint in zip(downstream, endpoints, strict=True):
                    assert endpoint is not None
                    trigger = DagTrigger(
                        schedule.id,
                        sink,
                        function,
                        outcome.arguments,
                        session.version_locations,
                        session.dependencies,
                        session.observed,
                        session.written,
                        # No scheduler sent the sink its schedule: the trigger carries it.
                        None if schedule.placed_by else _schedule_of(schedule, sink),
                    )
                    out.append(SendInstruction(endpoint, trigger))
            self._remember(schedule.id, function, "done")
        else:
            result = outcome.result
            if result is None:
                error = CloudburstError("the runtime produced no result", function=function, node=self.node)
                result = self._error_result(error)
            self._deliver_sink_result(schedule, result, out, stored=outcome.stored)
            if schedule.start_time > 0 and wall_time > 0:
                self._tally_dag(schedule.dag.name, max(0.0, wall_time - schedule.start_time))
            self._remember(schedule.id, function, "delivered")
        self._finish(request, now, out)

    # -- delivery ----------------------------------------------------------------------------------------------

    def _deliver_sink_result(
        self, schedule: DagSchedule, result: EncodedResult, out: list[ExecutorInstruction], *, stored: bool = False
    ) -> None:
        continuation = schedule.continuation
        if continuation is not None and continuation.name:
            message = Continuation(
                name=continuation.name,
                id=schedule.id,
                result=codec.encode_encoded_value(result.value),
                call=continuation.call,
            )
            scheduler = self._next_scheduler()
            if scheduler is None:
                error = NoResources(f"no scheduler is known to run continuation {continuation.name!r}")
                self._deliver(self._final_destination(schedule), self._error_result(error), out)
            else:
                # This DAG is done; the scheduler taking the continuation enters the next one.
                self._notify_done(schedule.placed_by, schedule.id, out)
                out.append(SendInstruction(scheduler, message))
            return
        destination = _Destination(
            schedule.output_key or schedule.id,
            schedule.response_address,
            schedule.delivery,
            placed_by=schedule.placed_by,
            attempt_id=schedule.id,
        )
        self._deliver(destination, result, out, stored=stored)

    def _notify_done(self, placed_by: str, attempt_id: str, out: list[ExecutorInstruction]) -> None:
        """Tells the scheduler that placed a request that it is over here: it runs nothing again for it, and counts
        this executor free."""
        if placed_by:
            done = replace(self.status(), finished=(attempt_id,))
            out.append(SendInstruction(self.config.ports.scheduler_internal_endpoint(placed_by), done))

    def _deliver(
        self, destination: _Destination, result: EncodedResult, out: list[ExecutorInstruction], *, stored: bool = False
    ) -> None:
        """Pushes and/or stores a result (or error) as the caller's delivery mode asks."""
        self._notify_done(destination.placed_by, destination.attempt_id, out)
        address = destination.response_address
        push = store = False
        if destination.delivery == ResultDelivery.LEGACY:
            result = _legacy_result(result)
            if destination.one_shot or not address:
                store = True
            else:
                # Original clients read a bare Value on their direct-response socket.
                out.append(SendInstruction(address, result.value))
        elif destination.delivery == ResultDelivery.NOTIFY_AND_STORE:
            push = store = True
        else:
            push = True
            if not address:
                logger.warning("result %r asks for notification but gives no address; storing it", destination)
                store = True
        if push and address:
            out.append(SendInstruction(address, CallResult(destination.result_id, result.value)))
        if store and not stored:
            if destination.result_id:
                out.append(StoreResultInstruction(destination.result_id, result))
            else:
                logger.warning("dropping a result that has neither a key nor a response address")

    def _final_destination(self, schedule: DagSchedule) -> _Destination:
        """Where an error for ``schedule``'s request goes: the caller of the last DAG in the continuation chain."""
        last = None
        continuation = schedule.continuation
        while continuation is not None and continuation.name and continuation.call is not None:
            last = continuation.call
            continuation = last.continuation
        key, address, delivery = schedule.output_key or schedule.id, schedule.response_address, schedule.delivery
        if last is not None:
            key, address, delivery = last.output_key or schedule.id, last.response_address, last.delivery
        return _Destination(key, address, delivery, placed_by=schedule.placed_by, attempt_id=schedule.id)

    def take_hops(self) -> list[TraceHop]:
        """The trace hops recorded since the last call, oldest first."""
        hops = list(self._hops)
        self._hops.clear()
        return hops

    def _record_hop(
        self,
        request_id: str,
        function: str,
        dag: str,
        outcome: RunOutcome,
        duration: float,
        wall_time: float,
        reads: tuple[ReadRecord, ...],
        *,
        queue: float = 0.0,
        end_to_end: float = 0.0,
    ) -> None:
        error = outcome.error if isinstance(outcome, RunFailed) else None
        self._hops.append(
            TraceHop(
                request_id=request_id,
                role="executor",
                node=self.node,
                start=wall_time - duration,
                duration=duration,
                function=function,
                dag=dag,
                queue=queue,
                end_to_end=end_to_end if dag else duration,
                error=type(error).__name__ if error is not None else "",
                message=error.message if error is not None else "",
                traceback=(error.remote_traceback or "") if error is not None else "",
                reads=reads,
            )
        )

    def _record_placement(self, schedule: DagSchedule) -> None:
        """The trace hop of a client's placement of ``schedule``'s request, as a scheduler records its own."""
        where = [
            f"{ref.name} -> {schedule.locations[ref.name]}"
            for ref in schedule.dag.functions
            if ref.name in schedule.locations
        ]
        self._hops.append(
            TraceHop(
                request_id=schedule.id,
                role="client",
                node=_host_of(schedule.response_address),
                start=schedule.start_time,
                duration=0.0,
                dag=schedule.dag.name,
                detail=", ".join(where),
                stages=len(where),
            )
        )

    def _error_result(self, error: CloudburstError) -> EncodedResult:
        if error.node is None:
            error.node = self.node
        return EncodedResult(values.encode_error(error))

    def _reply_pin(
        self,
        pin: PinFunction,
        success: bool,
        out: list[ExecutorInstruction],
        error: ErrorCode = ErrorCode.NO_CLOUDBURST_ERROR,
        message: str = "",
    ) -> None:
        if not pin.response_address:
            return
        response = GenericResponse(success, pin.request_id, error, message)
        out.append(SendInstruction(pin.response_address, response))

    def _send_status(self, out: list[ExecutorInstruction]) -> None:
        out.extend(self._to_schedulers(self.status()))

    def _to_schedulers(self, message: SchedulerMessage) -> list[ExecutorInstruction]:
        """``message`` for every scheduler, and for the management service when there is one."""
        ports = self.config.ports
        out: list[ExecutorInstruction] = [
            SendInstruction(ports.scheduler_internal_endpoint(host), message) for host in self.schedulers()
        ]
        if self.config.management and isinstance(message, ThreadStatus | ExecutorStatistics):
            out.append(SendInstruction(ports.management_endpoint(self.config.management), message))
        return out

    def _next_scheduler(self) -> str | None:
        """The scheduler that gets the next continuation: rotated, so no single scheduler takes them all. ``None``
        while none is known (no scheduler configured, and the management service has not listed one yet)."""
        schedulers = self.schedulers()
        if not schedulers:
            return None
        host = schedulers[self._scheduler_turn % len(schedulers)]
        self._scheduler_turn = (self._scheduler_turn + 1) % len(schedulers)
        return self.config.ports.scheduler_internal_endpoint(host)

    def _executor_endpoint(self, location: str) -> str | None:
        """The control endpoint of an ``"ip:tid"`` location, or ``None`` if it is malformed."""
        host, _, tid = location.rpartition(":")
        if not host or not tid.isdigit():
            return None
        return self.config.ports.executor_control_endpoint(host, int(tid))

    # -- pins --------------------------------------------------------------------------------------------------

    def _at_pin_limit(self) -> bool:
        limit = self.config.max_pinned_functions
        active = sum(1 for fn in self._functions.values() if fn.phase is not _PinPhase.UNPINNING)
        return limit is not None and active >= limit

    def _unpin(self, fn: _PinnedFunction, out: list[ExecutorInstruction]) -> None:
        fn.phase = _PinPhase.UNPINNING
        self._release_if_unneeded(fn.name, out)

    def _release_if_unneeded(self, name: str, out: list[ExecutorInstruction]) -> None:
        fn = self._functions.get(name)
        if fn is not None and fn.phase is _PinPhase.UNPINNING and not self._requests_by_function[name]:
            del self._functions[name]
            out.append(UnloadFunctionInstruction(name))

    def _abandon_function(
        self, fn: _PinnedFunction, error: CloudburstError, now: float, out: list[ExecutorInstruction]
    ) -> None:
        """A load failed (or finished too late): refuse its pins and fail the requests that waited for it."""
        del self._functions[fn.name]
        code = ErrorCode.FUNC_NOT_FOUND if isinstance(error, FunctionNotFound) else ErrorCode.EXECUTION_ERROR
        if isinstance(error, NoResources):
            code = ErrorCode.NO_RESOURCES
        for pin in fn.waiting_pins:
            self._reply_pin(pin, False, out, code, error.message)
        fn.waiting_pins = []
        for request in [r for r in self._requests.values() if r.key[1] == fn.name]:
            # A request still without its schedule is answered when the schedule finds the function missing.
            if request.schedule is not None:
                reason = f"function {fn.name!r} could not be pinned here: {error.message}"
                self._fail_not_pinned(request.schedule, reason, now, out)

    def _fail_not_pinned(self, schedule: DagSchedule, reason: str, now: float, out: list[ExecutorInstruction]) -> None:
        """Answers a request whose function is not here with NotPinned and finishes it (the original left it queued)."""
        key = (schedule.id, schedule.target_function)
        self._counters["not_pinned_errors"] += 1
        self._remember(key[0], key[1], "not pinned")
        if schedule.placed_by:
            # Its scheduler places it again (this executor restarted since it was placed): not the caller's error.
            refusal = replace(self.status(), refused=(schedule.id,))
            out.append(SendInstruction(self.config.ports.scheduler_internal_endpoint(schedule.placed_by), refusal))
        else:
            error = NotPinned(reason, function=key[1], dag=schedule.dag.name, node=self.node, request_id=schedule.id)
            self._deliver(self._final_destination(schedule), self._error_result(error), out)
        request = self._requests.get(key)  # absent unless triggers came first
        if request is None:
            self._mark_finished(key, now)
        else:
            self._finish(request, now, out)

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def _new_request(self, key: RequestKey, now: float) -> _DagRequest:
        if len(self._requests) >= MAX_PENDING_REQUESTS:
            victim = next((r for r in self._requests.values() if r.run_id is None), None)
            if victim is not None:
                self._counters["requests_evicted"] += 1
                logger.warning("too many pending requests: dropping the oldest, %s", victim.key)
                self._discard(victim)
        request = _DagRequest(key, now)
        self._requests[key] = request
        self._requests_by_function[key[1]] += 1
        return request

    def _discard(self, request: _DagRequest) -> None:
        """Forgets a pending request without answering it (eviction, orphan expiry)."""
        del self._requests[request.key]
        self._requests_by_function[request.key[1]] -= 1
        if not self._requests_by_function[request.key[1]]:
            del self._requests_by_function[request.key[1]]

    def _finish(self, request: _DagRequest, now: float, out: list[ExecutorInstruction]) -> None:
        self._discard(request)
        self._mark_finished(request.key, now)
        self._counters["requests_finished"] += 1
        self._release_if_unneeded(request.key[1], out)

    def _mark_finished(self, key: RequestKey, now: float) -> None:
        self._finished[key] = now
        self._finished.move_to_end(key)
        while len(self._finished) > MAX_FINISHED_REQUESTS:
            self._finished.popitem(last=False)

    def _is_finished(self, key: RequestKey, now: float) -> bool:
        finished_at = self._finished.get(key)
        return finished_at is not None and now - finished_at < self.config.dedup_ttl

    def _expire_finished(self, now: float) -> None:
        while self._finished:
            key, finished_at = next(iter(self._finished.items()))
            if now - finished_at < self.config.dedup_ttl:
                break
            del self._finished[key]

    def _expire_orphans(self, now: float, out: list[ExecutorInstruction]) -> None:
        expired = [
            r for r in self._requests.values() if r.run_id is None and now - r.created >= self.config.request_ttl
        ]
        for request in expired:
            self._discard(request)
            self._release_if_unneeded(request.key[1], out)
            self._remember(request.key[0], request.key[1], "expired")
        if expired:
            self._counters["orphans_dropped"] += len(expired)
            logger.warning(
                "dropped %d DAG requests whose schedule or triggers did not arrive within %g s, e.g. %s",
                len(expired),
                self.config.request_ttl,
                expired[0].key,
            )

    def _drop_duplicate(self, key: RequestKey, what: str) -> None:
        self._counters["duplicates_dropped"] += 1
        logger.debug("dropping a %s: %s", what, key)

    def _drop_unexpected(self, request: _DagRequest, source: str) -> None:
        del request.triggers[source]
        if source in request.unconsumed:
            request.unconsumed.remove(source)
        self._counters["unexpected_triggers_dropped"] += 1
        logger.warning("dropping a trigger of %s from %r, which is not upstream", request.key, source)

    def _check_departure(self, now: float, out: list[ExecutorInstruction]) -> None:
        if not self._departing or self._exited:
            return
        loading = any(fn.phase is _PinPhase.LOADING for fn in self._functions.values())
        if self._requests or self._dag_runs or self._one_shot_runs or loading:
            return
        if now - self._departed_at < DEPART_GRACE:
            return
        logger.info("departure drained; exiting")
        # The last report: whoever drains the node learns here that this executor is gone, not from its silence.
        out.extend(self._to_schedulers(replace(self.status(), departed=True)))
        self._exited = True
        out.append(ExitInstruction(0))

    def _remember(self, request_id: str, function: str, what: str) -> None:
        self._story.append((request_id, function, what, self._now))

    def _tally_function(self, name: str, runtime: float) -> None:
        tally = self._function_tallies.get(name)
        if tally is None:
            if len(self._function_tallies) >= MAX_TALLIED_NAMES:
                return
            tally = self._function_tallies[name] = _Tally()
        tally.add(runtime)

    def _tally_dag(self, name: str, runtime: float) -> None:
        tally = self._dag_tallies.get(name)
        if tally is None:
            if len(self._dag_tallies) >= MAX_TALLIED_NAMES:
                return
            tally = self._dag_tallies[name] = _Tally()
        tally.add(runtime)

    def _take_statistics(self) -> ExecutorStatistics:
        statistics = ExecutorStatistics(
            functions=tuple(
                FunctionStatistics(name, tally.call_count, tuple(tally.runtimes))
                for name, tally in self._function_tallies.items()
            ),
            dags=tuple(
                DagStatistics(
                    name,
                    runtimes=tuple(tally.runtimes) if tally is not None else (),
                    call_count=tally.call_count if tally is not None else 0,
                    direct_calls=self._direct_calls[name],
                )
                for name in dict.fromkeys((*self._dag_tallies, *self._direct_calls))
                for tally in (self._dag_tallies.get(name),)
            ),
            reporter=self.node,
        )
        self._function_tallies = {}
        self._dag_tallies = {}
        self._direct_calls = Counter()
        return statistics


@functools.lru_cache(maxsize=256)
def _host_of(address: str) -> str:
    """The host of a client's reply address (few clients, many requests: parsed once each); empty when it has none
    (its results are only stored) or an unusual one."""
    try:
        return parse_endpoint(address).host
    except TransportError:
        return ""


def _schedule_of(schedule: DagSchedule, function: str) -> DagSchedule:
    """``function``'s schedule in the request ``schedule`` belongs to, with only the fixed arguments of it and of
    the functions after it (those before it have run)."""
    wanted = (function, *schedule.dag.descendants(function))
    arguments = {name: schedule.arguments[name] for name in wanted if name in schedule.arguments}
    triggers = schedule.dag.upstream(function) or (BEGIN,)
    return replace(schedule, target_function=function, triggers=triggers, arguments=arguments)


def _legacy_result(result: EncodedResult) -> EncodedResult:
    """``result`` as the original client's serializer reads it; an error when it cannot be put that way."""
    try:
        members = result.set_members
        if members is not None:
            members = tuple(values.legacy_serialized(member) for member in members)
        return EncodedResult(values.legacy_form(result.value), members)
    except CloudburstError as error:
        return EncodedResult(values.legacy_error(error))
