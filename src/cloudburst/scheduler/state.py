"""The scheduler's decisions, free of sockets, clocks and KVS I/O: events in, instructions out.

:class:`SchedulerState` owns what the original scheduler decided inline in its event loop: the registry of
functions and DAGs, where each function is pinned, which executors are alive, where each call runs, how a DAG's
functions get pinned, and what peers are told. The server feeds it events (client requests, internal messages,
finished KVS operations, ticks) with the current monotonic and wall-clock time, and executes what it returns:
replies, pushes to executors and peers, and KVS reads and writes. A KVS operation ends with the server feeding its
outcome back as an event, so the state never blocks on I/O.

Lifecycles.

* A *DAG creation* validates the DAG, then pins every function at once, each on its own chosen executor. Pin
  replies carry the pin's request id, so they are matched exactly, whenever they arrive; the loop keeps serving
  meanwhile (the original blocked on each reply and could take a late one for the next pin's). A rejected pin is
  retried on another executor, a timed-out executor is not tried again for that DAG (the original could pick it
  again), and when no candidate is left the pins made so far are undone and the caller gets NO_RESOURCES.
  Once every function is pinned the DAG is written to the KVS and only then acknowledged.
* A *DAG deletion* writes a tombstone (an empty LWW value) to the KVS, remembers the deletion for gossip, and unpins
  only the locations no other live DAG uses (the original unpinned every location, other DAGs' too).
* *Executors* are known from their own ``ThreadStatus`` reports (first-hand) or from peers' gossip (second-hand,
  for executors that never reported here). Either kind is forgotten when not refreshed for three report periods,
  and only first-hand knowledge is gossiped on, so stale locations cannot circulate forever.
* *Locality*: once per report period the state asks the KVS (an instruction, like every other read) for each
  executor node's cache key set and rebuilds which nodes cache which keys; calls are then placed near the keys they
  declare in ``references`` (arguments are never unpickled here). Back-off and load-window entries older than the
  policy's periods are pruned at the same time.

Unknown functions and DAGs are looked up in the KVS before a request is refused, so a restarted scheduler, or one
that has not yet heard a peer's gossip, still serves everything registered anywhere.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import assert_never

from cloudburst import keys
from cloudburst.clock import TimestampGenerator, writer_id_for
from cloudburst.config import SchedulerConfig
from cloudburst.errors import (
    CloudburstError,
    DagAlreadyExists,
    DagNotFound,
    DecodeError,
    ExecutorLost,
    FunctionNotFound,
    InvalidDag,
    InvalidRequest,
    NoResources,
    TransportError,
)
from cloudburst.keys import cache_key_set_key
from cloudburst.lattices import Lattice, LwwLattice, SetLattice
from cloudburst.protocol import codec, values
from cloudburst.protocol.errors import failure_response
from cloudburst.protocol.runtime_messages import (
    DEFAULT_MAX_RETRIES,
    CallResult,
    CancelRequest,
    ClusterStatus,
    Continuation,
    Dag,
    DagCall,
    DagLease,
    DagSchedule,
    DagStatistics,
    EncodedValue,
    ExecutorRequest,
    ExecutorStatistics,
    ExecutorType,
    Function,
    FunctionCall,
    FunctionLease,
    FunctionLocation,
    FunctionStatistics,
    GenericResponse,
    PinFunction,
    ResultDelivery,
    SchedulerMessage,
    SchedulerStatus,
    ThreadStatus,
    UnpinFunction,
    schedule_of_call,
)
from cloudburst.protocol.trigger_messages import TriggerAck, TriggerFiring
from cloudburst.scheduler.ledger import LedgerEntry, RequestLedger
from cloudburst.scheduler.policy import (
    ExecutorCandidate,
    ExecutorId,
    PlacementPolicy,
    PolicyOptions,
    RandomSource,
    key_locations_from_key_sets,
    location_string,
)
from cloudburst.scheduler.validation import validate_dag
from cloudburst.transport.endpoints import parse_endpoint

logger = logging.getLogger(__name__)

#: The KVS routing port original clients assume when the scheduler answers a connect with a bare host.
DEFAULT_KVS_ROUTING_PORT = 6450
#: Report periods without a status after which an executor (or a gossiped location) is forgotten.
EXPIRY_PERIODS = 3
#: Report periods a deletion is remembered and gossiped; long enough for every peer to hear it several times.
TOMBSTONE_PERIODS = 12
#: Deleted DAG names remembered at once.
MAX_TOMBSTONES = 4096
#: Timed-out or cancelled pins remembered so that a late acceptance can be undone.
MAX_ABANDONED_PINS = 4096
#: Executors known at once (first-hand and second-hand each); statuses from more are ignored.
MAX_EXECUTORS = 65_536
#: Functions a peer may report at one second-hand executor (a real executor pins a handful).
MAX_GOSSIPED_FUNCTIONS = 4096
#: Executor statistics reports kept (the latest per reporter).
MAX_REPORTS = 4096
#: Inter-arrival samples kept per DAG in one report period (the call count stays exact).
MAX_INTERARRIVALS = 10_000
#: Continuations chained in one DAG call.
MAX_CONTINUATION_DEPTH = 32
#: KVS lookups of a DAG that peers announce but the KVS does not (yet) show, before giving up for a while.
MAX_DAG_FETCH_ATTEMPTS = 3
#: Announced-but-missing DAG names tracked at once.
MAX_UNRESOLVED = 4096
#: Entries of the debugging story log.
STORY_LENGTH = 10_000


# -- events ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoverEvent:
    """The server has started: rebuild the registry from the KVS indexes."""


@dataclass(frozen=True, slots=True)
class ConnectEvent:
    """A client asks where the KVS is. ``request_id`` names the request in the matching reply."""

    request_id: int


@dataclass(frozen=True, slots=True)
class FunctionCreateEvent:
    """A client registers (or re-registers) a function."""

    request_id: int
    function: Function


@dataclass(frozen=True, slots=True)
class FunctionListEvent:
    """A client lists registered functions whose names start with ``prefix``."""

    request_id: int
    prefix: str


@dataclass(frozen=True, slots=True)
class FunctionCallEvent:
    """A client calls a function once."""

    request_id: int
    call: FunctionCall


@dataclass(frozen=True, slots=True)
class FunctionLeaseEvent:
    """A client asks where it may send one-shot calls of ``function`` itself, for a while."""

    request_id: int
    function: str


@dataclass(frozen=True, slots=True)
class DagLeaseEvent:
    """A client asks where it may send requests of the registered DAG ``dag`` itself, for a while."""

    request_id: int
    dag: str


@dataclass(frozen=True, slots=True)
class CancelEvent:
    """A client (or an operator) cancels a request, by the key its result goes to."""

    request_id: int
    key: str


@dataclass(frozen=True, slots=True)
class InFlightQueryEvent:
    """A client asks which of the requests it waits for (by result key) this scheduler still holds."""

    request_id: int
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PushFailedEvent:
    """A :class:`PushInstruction` could not be delivered: the destination's queue is full (it is overloaded)."""

    address: str
    message: PushedMessage


@dataclass(frozen=True, slots=True)
class DagCreateEvent:
    """A client registers a DAG."""

    request_id: int
    dag: Dag


@dataclass(frozen=True, slots=True)
class DagCallEvent:
    """A client runs a DAG."""

    request_id: int
    call: DagCall


@dataclass(frozen=True, slots=True)
class DagDeleteEvent:
    """A client deletes a DAG."""

    request_id: int
    name: str


@dataclass(frozen=True, slots=True)
class StatusQueryEvent:
    """Someone asks for the scheduler's view of the cluster."""

    request_id: int


@dataclass(frozen=True, slots=True)
class InternalMessageEvent:
    """A message arrived on the internal socket (executor status, pin reply, continuation, gossip, statistics)."""

    message: SchedulerMessage


@dataclass(frozen=True, slots=True)
class KvsReadDoneEvent:
    """A :class:`KvsReadInstruction` finished: the lattice under each key (``None`` if missing), or an error."""

    token: int
    lattices: Mapping[str, Lattice | None] = field(default_factory=dict)
    error: CloudburstError | None = None


@dataclass(frozen=True, slots=True)
class KvsWriteDoneEvent:
    """A :class:`KvsWriteInstruction` finished: stored durably, or ``error``."""

    token: int
    error: CloudburstError | None = None


@dataclass(frozen=True, slots=True)
class SchedulerTickEvent:
    """Time passed: pin timeouts are checked on every tick, periodic work once per report period."""


@dataclass(frozen=True, slots=True)
class SchedulersListedEvent:
    """The management service answered a :class:`ListSchedulersInstruction`: the schedulers it knows."""

    hosts: tuple[str, ...]


SchedulerEvent = (
    RecoverEvent
    | SchedulersListedEvent
    | ConnectEvent
    | FunctionCreateEvent
    | FunctionListEvent
    | FunctionCallEvent
    | FunctionLeaseEvent
    | DagLeaseEvent
    | DagCreateEvent
    | DagCallEvent
    | DagDeleteEvent
    | StatusQueryEvent
    | CancelEvent
    | InFlightQueryEvent
    | InternalMessageEvent
    | KvsReadDoneEvent
    | KvsWriteDoneEvent
    | PushFailedEvent
    | SchedulerTickEvent
)
ClientRequestEvent = (
    ConnectEvent
    | FunctionCreateEvent
    | FunctionListEvent
    | FunctionCallEvent
    | FunctionLeaseEvent
    | DagLeaseEvent
    | DagCreateEvent
    | DagCallEvent
    | DagDeleteEvent
    | StatusQueryEvent
    | CancelEvent
    | InFlightQueryEvent
)


# -- instructions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectReply:
    """The answer to a connect: a bare host when the KVS routing port is the default (original clients append
    ``:6450`` themselves), else the full ``tcp://host:port`` endpoint."""

    kvs_address: str


@dataclass(frozen=True, slots=True)
class FunctionListReply:
    """The answer to a list request: function names without the ``funcs/`` prefix, sorted."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InFlightReply:
    """The answer to an in-flight query: the keys asked about that this scheduler still holds (placed and not
    reported done, or waiting to be placed)."""

    keys: tuple[str, ...]


#: What a client request is answered with.
Reply = GenericResponse | ConnectReply | FunctionListReply | ClusterStatus | FunctionLease | DagLease | InFlightReply
#: What the scheduler pushes: envelopes to executors and peers, errors to callers (a ``CallResult`` for clients
#: that asked to be notified, a bare ``Value`` for original clients).
PushedMessage = (
    ExecutorRequest | SchedulerStatus | CallResult | EncodedValue | TriggerAck | ExecutorStatistics | CancelRequest
)


@dataclass(frozen=True, slots=True)
class _LeaseRequest:
    request_id: int


#: Who asked for a one-shot call: a client's request (its id), a storage trigger's firing, or a client asking
#: where it may send such calls itself.
CallOrigin = int | TriggerFiring | _LeaseRequest


@dataclass(frozen=True, slots=True)
class ReplyInstruction:
    """Answer client request ``request_id`` (each request is answered exactly once)."""

    request_id: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class PushInstruction:
    """Push ``message`` to ``address`` (a ``tcp://`` endpoint)."""

    address: str
    message: PushedMessage


@dataclass(frozen=True, slots=True)
class KvsReadInstruction:
    """Read ``keys`` from the KVS; answer with a :class:`KvsReadDoneEvent` carrying ``token``."""

    token: int
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KvsWriteInstruction:
    """Merge ``items`` into the KVS; answer with a :class:`KvsWriteDoneEvent` carrying ``token``."""

    token: int
    items: Mapping[str, Lattice]


@dataclass(frozen=True, slots=True)
class ListSchedulersInstruction:
    """Ask the management service for the scheduler list, without waiting; the answer comes back as a
    :class:`SchedulersListedEvent`."""


SchedulerInstruction = (
    ReplyInstruction | PushInstruction | KvsReadInstruction | KvsWriteInstruction | ListSchedulersInstruction
)


@dataclass(frozen=True, slots=True)
class SchedulerCounters:
    """Totals since start, for logs and tests."""

    calls_placed: int = 0
    dag_calls_placed: int = 0
    continuations_placed: int = 0
    pins_sent: int = 0
    pins_rejected: int = 0
    pins_timed_out: int = 0
    late_pins_undone: int = 0
    unpins_sent: int = 0
    executors_expired: int = 0
    leases_granted: int = 0
    dag_leases_granted: int = 0
    pushes_refused: int = 0
    repair_pins_sent: int = 0
    replicas_restored: int = 0
    trigger_runs: int = 0
    #: Requests whose executor was lost, run again, failed with ``ExecutorLost``, and cancelled.
    requests_lost: int = 0
    requests_rerun: int = 0
    requests_failed_lost: int = 0
    requests_cancelled: int = 0
    #: Requests accepted while they could not be placed, placed once executors were back (or failed at deadline).
    requests_held: int = 0
    #: Requests an executor could not run (their function was not pinned there), placed again.
    requests_refused: int = 0


# -- internal records ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ExecutorRecord:
    """An executor that reported to this scheduler itself."""

    status: ThreadStatus
    heard: float
    #: Where this executor has functions pinned: its last status, plus pins it accepted since.
    functions: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _DagEntry:
    dag: Dag
    #: The LWW timestamp of the registration in the KVS; a deletion's tombstone must be newer.
    timestamp: int
    members: frozenset[str]
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _RepairPin:
    """A pin sent to bring back a registered DAG's function that lost its last replica."""

    dag: str
    function: str
    executor: ExecutorId
    deadline: float


@dataclass(slots=True)
class _PinAttempt:
    pin_id: str
    dag: str
    function: str
    executor: ExecutorId
    deadline: float


@dataclass(slots=True)
class _DagCreation:
    request_id: int
    dag: Dag
    #: A tombstone's timestamp, when the name was deleted before: the new registration must be newer.
    timestamp_floor: int
    #: Confirmed pins.
    placed: dict[str, ExecutorId] = field(default_factory=dict)
    #: Functions whose confirmed pin was new at its executor (so aborting the creation undoes it).
    fresh: set[str] = field(default_factory=set)
    #: Pins in flight, by function.
    attempts: dict[str, str] = field(default_factory=dict)
    #: Executors that refused a function.
    rejected: dict[str, set[ExecutorId]] = field(default_factory=dict)
    #: Executors that did not answer in time: not tried again for this DAG.
    timed_out: set[ExecutorId] = field(default_factory=set)
    last_refusal: str = ""
    committing: bool = False


@dataclass(slots=True)
class _DagTally:
    call_count: int = 0
    last_arrival: float | None = None
    interarrivals: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Unresolved:
    attempts: int
    first_seen: float


# What a pending KVS operation was for; the token of its instruction maps to one of these.


@dataclass(frozen=True, slots=True)
class _ListOp:
    request_id: int
    prefix: str


@dataclass(frozen=True, slots=True)
class _FunctionCreateOp:
    request_id: int
    name: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class _FunctionLookupOp:
    origin: CallOrigin
    call: FunctionCall


@dataclass(frozen=True, slots=True)
class _DagLookupOp:
    """Unknown DAG names read on a miss; ``then`` is handled again once they are loaded (or known missing)."""

    then: DagCallEvent | DagDeleteEvent | Continuation


@dataclass(frozen=True, slots=True)
class _DagCreateReadOp:
    request_id: int
    dag: Dag


@dataclass(frozen=True, slots=True)
class _DagCommitOp:
    name: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class _DagDeleteOp:
    request_id: int
    name: str


@dataclass(frozen=True, slots=True)
class _RecoveryIndexOp:
    pass


@dataclass(frozen=True, slots=True)
class _RecoveryLoadOp:
    functions: tuple[str, ...]
    dags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _GossipFetchOp:
    announced: tuple[str, ...]
    claimed_deleted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _ErrorStoreOp:
    key: str


@dataclass(frozen=True, slots=True)
class _KeySetsReadOp:
    """The periodic read of the caches' key sets, one per node ip, for locality."""

    ips: tuple[str, ...]


_KvsOp = (
    _ListOp
    | _FunctionCreateOp
    | _FunctionLookupOp
    | _DagLookupOp
    | _DagCreateReadOp
    | _DagCommitOp
    | _DagDeleteOp
    | _RecoveryIndexOp
    | _RecoveryLoadOp
    | _GossipFetchOp
    | _ErrorStoreOp
    | _KeySetsReadOp
)


class _HandedClock:
    """A :class:`~cloudburst.clock.Clock` that tells the time the state was last handed, so LWW timestamps come
    from the shared generator without the state ever reading a real clock."""

    def __init__(self) -> None:
        self.monotonic = 0.0
        self.wall = 0

    def now(self) -> float:
        return self.monotonic

    def wall_ns(self) -> int:
        return self.wall


def _live_lww(lattice: Lattice | None) -> LwwLattice | None:
    """The LWW register if it holds a live value; an empty value is a tombstone and reads as missing."""
    if isinstance(lattice, LwwLattice) and lattice.value:
        return lattice
    return None


def _kvs_failure(what: str, error: CloudburstError) -> NoResources:
    # The wire has no "unavailable" code; NO_RESOURCES is the nearest (the cluster cannot do it now), and the
    # message says exactly what failed.
    return NoResources(f"{what}: the KVS failed: {error.message}")


class SchedulerState:
    """Every decision of one scheduler; see the module docstring for the lifecycles.

    Args:
        config: Identity, peers, ports, periods and the pin timeout.
        rng: The random source of every placement decision (seed it in tests).
        new_id: Source of request, schedule and pin ids; defaults to UUIDs drawn from ``rng``. The server passes
            real ``uuid4`` so that two schedulers seeded alike never issue the same ids.
        options: The placement mode and its thresholds (the original's locality policy by default).
    """

    def __init__(
        self,
        config: SchedulerConfig,
        rng: RandomSource,
        new_id: Callable[[], str] | None = None,
        options: PolicyOptions | None = None,
    ) -> None:
        self.config = config
        self.policy = PlacementPolicy(rng, options)
        self._new_id = new_id or self.policy.new_uuid
        self._clock = _HandedClock()
        self._timestamps = TimestampGenerator(writer_id_for(f"scheduler:{config.host}"), self._clock)
        self._internal_endpoint = config.ports.scheduler_internal_endpoint(config.host)
        self._connect_answer = _connect_answer(config.kvs_routing)
        #: Registered functions and their versions (the LWW timestamp of the registration).
        self._functions: dict[str, int] = {}
        #: Live DAGs by name.
        self._dags: dict[str, _DagEntry] = {}
        #: Pins in flight that restore lost replicas, by pin id.
        self._repairs: dict[str, _RepairPin] = {}
        #: Deleted DAG names and when the deletion was learned, oldest first; gossiped until they expire.
        self._deleted: OrderedDict[str, float] = OrderedDict()
        #: Executors that report here themselves.
        self._executors: dict[ExecutorId, _ExecutorRecord] = {}
        #: Second-hand locations: executor -> function -> when a peer last mentioned it. Never holds an executor
        #: that is also in ``_executors`` (first-hand knowledge wins).
        self._gossiped: dict[ExecutorId, dict[str, float]] = {}
        #: Index: function -> executors hosting it (first- and second-hand), derived from the two maps above.
        self._locations: dict[str, set[ExecutorId]] = {}
        #: Which DAGs' pins put a function on an executor (known only for pins this scheduler made).
        self._owners: dict[tuple[str, ExecutorId], set[str]] = {}
        self._creations: dict[str, _DagCreation] = {}
        self._deleting: set[str] = set()
        #: Pins in flight by pin id.
        self._pins: dict[str, _PinAttempt] = {}
        #: Pins given up on (timed out or cancelled): pin id -> (function, executor).
        self._abandoned: OrderedDict[str, tuple[str, ExecutorId]] = OrderedDict()
        #: When this scheduler sent work to each executor within the load window (for load shedding).
        self._assignments: dict[ExecutorId, deque[float]] = {}
        #: When each executor was last backed off.
        self._backoff: dict[ExecutorId, float] = {}
        #: Requests this scheduler placed and has not heard finished: what runs where (an executor runs one call at a
        #: time, so this says which are free), what to run again when an executor is lost, where to cancel.
        self._ledger = RequestLedger()
        #: Which node caches hold which KVS keys, from the caches' key-set reports (rebuilt every report period).
        self._key_locations: dict[str, tuple[str, ...]] = {}
        self._unresolved: OrderedDict[str, _Unresolved] = OrderedDict()
        self._ops: dict[int, _KvsOp] = {}
        self._next_token = 0
        #: Client requests not yet answered.
        self._open_requests: set[int] = set()
        self._recovered = False
        self._recovering = False
        self._recovery_retry_at: float | None = None
        self._last_report: float | None = None
        #: Schedulers the management service listed last; gossiped with besides the configured peers.
        self._listed_schedulers: tuple[str, ...] = ()
        self._dag_tallies: dict[str, _DagTally] = {}
        self._function_calls: Counter[str] = Counter()
        self._statistics = ExecutorStatistics(reporter=self._reporter())
        self._reports: OrderedDict[str, ExecutorStatistics] = OrderedDict()
        self._counters: Counter[str] = Counter()
        self._story: deque[tuple[str, str, float]] = deque(maxlen=STORY_LENGTH)
        self._now = 0.0
        self._wall = 0.0

    # -- public API --------------------------------------------------------------------------------------------

    def handle(self, event: SchedulerEvent, now: float, wall_ns: int) -> list[SchedulerInstruction]:
        """Applies ``event`` and returns what the server must do, in order.

        Args:
            event: What happened.
            now: Monotonic seconds (deadlines, periods, expiry).
            wall_ns: Wall-clock nanoseconds since the epoch (LWW timestamps, schedules' start times).
        """
        self._now = now
        self._wall = wall_ns / 1e9
        self._clock.monotonic = now
        self._clock.wall = wall_ns
        out: list[SchedulerInstruction] = []
        if isinstance(event, ClientRequestEvent):
            if event.request_id in self._open_requests:
                logger.error("request id %d is already open; ignoring the repeat", event.request_id)
                return out
            self._open_requests.add(event.request_id)
        if isinstance(event, InternalMessageEvent):
            self._handle_internal(event.message, out)
        elif isinstance(event, DagCallEvent):
            self._handle_dag_call(event, out, looked_up=False)
        elif isinstance(event, FunctionCallEvent):
            # Only a KVS node's firing makes a trigger run; a client cannot pose as one.
            call = event.call if event.call.trigger is None else replace(event.call, trigger=None)
            self._handle_function_call(event.request_id, call, out)
        elif isinstance(event, PushFailedEvent):
            self._handle_push_failed(event, out)
        elif isinstance(event, KvsReadDoneEvent):
            self._handle_read_done(event, out)
        elif isinstance(event, KvsWriteDoneEvent):
            self._handle_write_done(event, out)
        elif isinstance(event, SchedulerTickEvent):
            self._handle_tick(out)
        elif isinstance(event, ConnectEvent):
            self._reply(event.request_id, ConnectReply(self._connect_answer), out)
        elif isinstance(event, FunctionCreateEvent):
            self._handle_function_create(event.request_id, event.function, out)
        elif isinstance(event, FunctionListEvent):
            self._read(_ListOp(event.request_id, event.prefix), (keys.FUNCTION_INDEX,), out)
        elif isinstance(event, DagCreateEvent):
            self._handle_dag_create(event.request_id, event.dag, out)
        elif isinstance(event, DagDeleteEvent):
            self._handle_dag_delete(event, out, looked_up=False)
        elif isinstance(event, FunctionLeaseEvent):
            self._handle_function_call(_LeaseRequest(event.request_id), FunctionCall(event.function), out)
        elif isinstance(event, DagLeaseEvent):
            self._grant_dag_lease(event.request_id, event.dag, out)
        elif isinstance(event, StatusQueryEvent):
            self._reply(event.request_id, self.cluster_status(), out)
        elif isinstance(event, CancelEvent):
            self._handle_cancel(event.request_id, event.key, out)
        elif isinstance(event, InFlightQueryEvent):
            held = tuple(key for key in event.keys if self._ledger.find(key) is not None)
            self._reply(event.request_id, InFlightReply(held), out)
        elif isinstance(event, RecoverEvent):
            self._start_recovery(out)
        elif isinstance(event, SchedulersListedEvent):
            self._listed_schedulers = event.hosts
        else:
            assert_never(event)
        return out

    @property
    def recovered(self) -> bool:
        """Whether the registry has been rebuilt from the KVS since start."""
        return self._recovered

    def functions(self) -> Mapping[str, int]:
        """Registered functions known here and their versions."""
        return dict(self._functions)

    def dags(self) -> Mapping[str, Dag]:
        """Live DAGs known here."""
        return {name: entry.dag for name, entry in self._dags.items()}

    def deleted_dags(self) -> tuple[str, ...]:
        """Recently deleted DAG names (gossiped to peers), oldest first."""
        return tuple(self._deleted)

    def locations(self, function: str) -> tuple[ExecutorId, ...]:
        """The executors hosting ``function``, sorted."""
        return tuple(sorted(self._locations.get(function, ())))

    def executors(self) -> tuple[ThreadStatus, ...]:
        """The executors that report here, with their current pinned functions, sorted by ``(ip, tid)``."""
        return tuple(
            replace(record.status, functions=tuple(sorted(record.functions)))
            for _, record in sorted(self._executors.items())
        )

    def cluster_status(self) -> ClusterStatus:
        """The answer to a status query."""
        return ClusterStatus(
            executors=self.executors(), dags=tuple(sorted(self._dags)), functions=tuple(sorted(self._functions))
        )

    def pins_in_flight(self) -> Mapping[str, tuple[str, ExecutorId]]:
        """Pins awaiting an answer: pin id -> (function, executor)."""
        return {pin_id: (a.function, a.executor) for pin_id, a in self._pins.items()}

    def unpinned_executors(self, kind: ExecutorType = ExecutorType.CPU) -> tuple[ExecutorId, ...]:
        """The executors of type ``kind`` that report here and host no function, sorted: the pool that one-shot
        calls and new pins prefer."""
        pool = [eid for eid, record in self._executors.items() if record.status.type == kind and not record.functions]
        return tuple(sorted(pool))

    def backed_off(self) -> Mapping[ExecutorId, float]:
        """Executors in back-off and when it started (entries are pruned every report period)."""
        return dict(self._backoff)

    def recent_assignments(self, executor: ExecutorId) -> int:
        """How much work this scheduler sent to ``executor`` within the policy's load window, as of the last event."""
        return self._recent_assignments(executor)

    def key_locations(self) -> Mapping[str, tuple[str, ...]]:
        """Which node ips' caches hold each KVS key, as of the last key-set read."""
        return dict(self._key_locations)

    def gossip_peers(self) -> tuple[str, ...]:
        """The schedulers gossiped with: the configured peers, then those the management service listed, not
        this one."""
        peers = dict.fromkeys((*self.config.peers, *self._listed_schedulers))
        return tuple(peer for peer in peers if peer != self.config.host)

    def statistics(self) -> ExecutorStatistics:
        """The call counts and inter-arrival times of the last complete report period."""
        return self._statistics

    def executor_reports(self) -> Mapping[str, ExecutorStatistics]:
        """The latest statistics report of each reporter (executors and peers)."""
        return dict(self._reports)

    def counters(self) -> SchedulerCounters:
        """Totals since start."""
        return SchedulerCounters(**self._counters)

    def story(self, key: str) -> list[tuple[str, float]]:
        """What happened to a DAG, function, pin or executor (``"ip:tid"``): ``(what, time)`` entries."""
        return [(what, t) for subject, what, t in self._story if subject == key]

    def validate(self) -> None:
        """Checks the invariants that tie the structures together.

        Raises:
            AssertionError: An invariant does not hold (a bug in this class).
        """

        def check(condition: bool, message: str) -> None:
            if not condition:
                raise AssertionError(message)

        derived: dict[str, set[ExecutorId]] = {}
        for eid, record in self._executors.items():
            check((record.status.ip, record.status.tid) == eid, f"executor {eid} filed under another id")
            check(record.status.running, f"executor {eid} is kept although it stopped running")
            check(eid not in self._gossiped, f"executor {eid} is known both first- and second-hand")
            for function in record.functions:
                derived.setdefault(function, set()).add(eid)
        for eid, functions in self._gossiped.items():
            check(bool(functions), f"second-hand executor {eid} has no functions")
            for function in functions:
                derived.setdefault(function, set()).add(eid)
        check(derived == self._locations, "the location index is out of date")
        check(len(self._executors) <= MAX_EXECUTORS and len(self._gossiped) <= MAX_EXECUTORS, "too many executors")
        check(all(len(f) <= MAX_GOSSIPED_FUNCTIONS for f in self._gossiped.values()), "too many gossiped functions")
        for (function, eid), owners in self._owners.items():
            host = self._executors.get(eid)
            check(host is not None and function in host.functions, f"owners of unpinned {function} at {eid}")
            check(bool(owners), f"empty owner set for {function} at {eid}")
            for owner in owners:
                check(owner in self._dags or owner in self._creations, f"{function} at {eid} owned by gone {owner}")
        for name, entry in self._dags.items():
            check(entry.dag.name == name, f"DAG {name} filed under another name")
            check(name not in self._deleted, f"DAG {name} is both live and deleted")
            check(name not in self._creations, f"DAG {name} is both live and being created")
            check(entry.members == {ref.name for ref in entry.dag.functions}, f"DAG {name}: stale members")
        for pin_id, attempt in self._pins.items():
            check(attempt.pin_id == pin_id, f"pin {pin_id} filed under another id")
            creation = self._creations.get(attempt.dag)
            check(creation is not None, f"pin {pin_id} belongs to no creation")
            assert creation is not None
            check(creation.attempts.get(attempt.function) == pin_id, f"pin {pin_id} is not its creation's attempt")
            check(attempt.executor in self._executors, f"pin {pin_id} went to an executor no longer known")
            check(pin_id not in self._abandoned, f"pin {pin_id} is both pending and abandoned")
        for name, creation in self._creations.items():
            members = {ref.name for ref in creation.dag.functions}
            check(creation.dag.name == name, f"creation {name} filed under another name")
            check(not set(creation.placed) & set(creation.attempts), f"creation {name}: placed and pinning at once")
            if creation.committing:
                check(set(creation.placed) == members and not creation.attempts, f"creation {name}: early commit")
            else:
                check(set(creation.placed) | set(creation.attempts) == members, f"creation {name}: unplanned function")
            check(creation.fresh <= set(creation.placed), f"creation {name}: fresh pins not placed")
            for function, eid in creation.placed.items():
                owned = name in self._owners.get((function, eid), set())
                check(owned or creation.committing, f"creation {name}: {function} not owned")
            for pin_id in creation.attempts.values():
                check(pin_id in self._pins, f"creation {name}: attempt {pin_id} is not pending")
        answering = _ListOp | _FunctionCreateOp | _DagCreateReadOp | _DagDeleteOp
        referenced = {op.request_id for op in self._ops.values() if isinstance(op, answering)}
        referenced |= {
            op.origin if isinstance(op.origin, int) else op.origin.request_id
            for op in self._ops.values()
            if isinstance(op, _FunctionLookupOp) and isinstance(op.origin, int | _LeaseRequest)
        }
        referenced |= {c.request_id for c in self._creations.values()}
        referenced |= {
            op.then.request_id
            for op in self._ops.values()
            if isinstance(op, _DagLookupOp) and not isinstance(op.then, Continuation)
        }
        check(self._open_requests <= referenced, f"requests {self._open_requests - referenced} will never be answered")
        check(len(self._deleted) <= MAX_TOMBSTONES, "too many tombstones")
        check(len(self._abandoned) <= MAX_ABANDONED_PINS, "too many abandoned pins")
        check(len(self._reports) <= MAX_REPORTS, "too many statistics reports")
        check(len(self._unresolved) <= MAX_UNRESOLVED, "too many unresolved DAG names")
        check(set(self._dag_tallies) <= set(self._dags), "call statistics for a DAG that is not live")
        for tally in self._dag_tallies.values():
            check(len(tally.interarrivals) <= MAX_INTERARRIVALS, "too many inter-arrival samples")
        check(self._deleting <= set(self._dags), "deleting a DAG that is not live")

    # -- client requests ---------------------------------------------------------------------------------------

    def _handle_function_create(self, request_id: int, function: Function, out: list[SchedulerInstruction]) -> None:
        if not function.name:
            self._fail(request_id, InvalidRequest("a function registration needs a name"), out)
            return
        if not function.body:
            self._fail(request_id, InvalidRequest(f"function {function.name!r} has an empty body"), out)
            return
        timestamp = self._timestamps()
        key = keys.function_key(function.name)
        items: dict[str, Lattice] = {
            key: LwwLattice(timestamp, function.body),
            keys.FUNCTION_INDEX: SetLattice(frozenset({key.encode()})),
        }
        self._write(_FunctionCreateOp(request_id, function.name, timestamp), items, out)

    def _handle_function_call(self, origin: CallOrigin, call: FunctionCall, out: list[SchedulerInstruction]) -> None:
        if not call.name:
            self._fail_call(origin, InvalidRequest("a function call needs a function name"), out)
            return
        if call.name not in self._functions:
            # Registered through another scheduler, or before a restart: the KVS knows.
            self._read(_FunctionLookupOp(origin, call), (keys.function_key(call.name),), out)
            return
        self._place_call(origin, call, out)

    def _handle_trigger_firing(self, firing: TriggerFiring, out: list[SchedulerInstruction]) -> None:
        """Places a storage trigger's run like a one-shot call, near a cache holding the written key."""
        self._counters["trigger_runs"] += 1
        call = FunctionCall(
            name=firing.function,
            response_key=firing.id,
            delivery=ResultDelivery.NOTIFY_ONLY,
            references=(firing.key,),
            trigger=firing,
        )
        self._handle_function_call(firing, call, out)

    def _fail_call(self, origin: CallOrigin, error: CloudburstError, out: list[SchedulerInstruction]) -> None:
        """Fails a one-shot call: to its caller, or, for a trigger's run, to the KVS node that will retry it."""
        if isinstance(origin, int):
            self._fail(origin, error, out)
        elif isinstance(origin, _LeaseRequest):
            refusal = failure_response(error)
            lease = FunctionLease(error.function or "", error=refusal.error, error_message=refusal.error_message)
            self._reply(origin.request_id, lease, out)
        elif origin.acknowledge_to:
            out.append(PushInstruction(origin.acknowledge_to, TriggerAck(origin.id, error=str(error))))

    def _one_shot_pool(self) -> list[ExecutorId]:
        """The executors one-shot calls may run on: every CPU executor (the policy prefers idle, unpinned ones)."""
        return sorted(eid for eid, record in self._executors.items() if record.status.type == ExecutorType.CPU)

    def _queued(self, eid: ExecutorId) -> int:
        """Calls waiting or running at ``eid``: what it last reported, or what this scheduler sent it since."""
        record = self._executors.get(eid)
        reported = record.status.queued if record is not None else 0
        return max(reported, self._ledger.queued(eid))

    def _grant_lease(self, request_id: int, function: str, out: list[SchedulerInstruction]) -> None:
        """Lets a client send calls of ``function`` straight to the executors that would run them.

        Skipping this scheduler takes a hop and its queue off every call; what is lost is per-call placement
        (locality, shedding), which is why calls that reference keys still come here. The lease lasts one report
        period, so the client follows changes in membership and load at the pace the scheduler itself learns them.
        """
        # Every eligible executor, busy ones included, with what waits there: the client sends each call where the
        # least waits (counting its own calls in flight), so calls that wait for one another each get an executor.
        pool = self._one_shot_pool()
        if not pool:
            self._fail_call(_LeaseRequest(request_id), NoResources(f"no CPU executor can run {function!r}"), out)
            return
        self._counters["leases_granted"] += 1
        pinned = tuple(bool(self._executors[eid].functions) for eid in pool)
        self._reply(request_id, self._lease_of(function, pool, pinned, self._functions[function]), out)

    def _lease_of(
        self, function: str, pool: Sequence[ExecutorId], pinned: tuple[bool, ...], version: int = 0
    ) -> FunctionLease:
        """A lease of ``function`` on ``pool``: each executor's endpoint, what waits there, and its incarnation."""
        return FunctionLease(
            function,
            function_version=version,
            executors=tuple(self._executor_endpoint(eid) for eid in pool),
            ttl=self.config.report_period,
            queued=tuple(self._queued(eid) for eid in pool),
            pinned=pinned,
            incarnations=tuple(self._incarnation(eid) for eid in pool),
        )

    def _grant_dag_lease(self, request_id: int, name: str, out: list[SchedulerInstruction]) -> None:
        """Lets a client send requests of a registered DAG straight to the executors its functions are pinned at.

        The client builds the schedules, sends the sources theirs, and each trigger carries its target's schedule
        on: the request takes the same hops as two direct calls, with no scheduler on its path. As with function
        leases, what is lost is per-request placement (locality, colocation by this scheduler, shedding) and this
        scheduler's ledger: the client runs a request again when an executor it used is lost, and requests that
        read keys or continue into another DAG still come here.
        """
        entry = self._dags.get(name)
        if entry is None or name in self._deleting:
            error: CloudburstError = DagNotFound(f"no DAG named {name!r} is registered here", dag=name)
        else:
            functions = []
            for reference in entry.dag.functions:
                pool = sorted(self._locations.get(reference.name, ()))
                if not pool:
                    reason = f"function {reference.name!r} of DAG {name!r} is not pinned at any live executor"
                    error = NoResources(reason, dag=name, function=reference.name)
                    break
                functions.append(self._lease_of(reference.name, pool, (True,) * len(pool)))
            else:
                self._counters["dag_leases_granted"] += 1
                self._reply(request_id, DagLease(entry.dag, tuple(functions), ttl=self.config.report_period), out)
                return
        refusal = failure_response(error)
        self._reply(request_id, DagLease(Dag(name, ()), error=refusal.error, error_message=refusal.error_message), out)

    def _place_call(self, origin: CallOrigin, call: FunctionCall, out: list[SchedulerInstruction]) -> None:
        if isinstance(origin, _LeaseRequest):
            self._grant_lease(origin.request_id, call.name, out)
            return
        pool = self._one_shot_pool()
        candidates = (self._candidate(eid) for eid in pool)
        target = self.policy.pick_for_call(
            candidates,
            references=call.references,
            key_locations=self._key_locations,
            rotation=call.name,
            idle_first=True,
        )
        response_key = call.response_key or self._new_id()
        placed = replace(
            call,
            response_key=response_key,
            function_version=self._functions[call.name],
            placed_by=self.config.host,
            stamp=call.stamp or (self._wall_micros() if call.trigger is None else 0),
        )
        if target is None:
            reason = f"no CPU executor is available to run {call.name!r}"
            if isinstance(origin, int) and call.deadline and call.trigger is None:
                self._wait_for_executors(origin, response_key, replace(placed, attempt=0), reason, out)
            else:
                self._fail_call(origin, NoResources(reason), out)
            return
        self._send_call(placed, target, out)
        if isinstance(origin, int):
            self._reply(origin, GenericResponse(success=True, response_id=response_key), out)

    def _send_call(self, call: FunctionCall, target: ExecutorId, out: list[SchedulerInstruction]) -> None:
        """Sends a placed call and enters it in the ledger (a trigger's run is never re-run here: the KVS node
        delivers it again if it is not acknowledged)."""
        self._assign(target)
        self._counters["calls_placed"] += 1
        if call.max_retries is not None:
            retries = call.max_retries
        else:
            retries = 0 if call.trigger is not None else DEFAULT_MAX_RETRIES
        entry = LedgerEntry(
            call.response_key,
            call,
            call.response_key,
            {target: self._incarnation(target)},
            attempt=call.attempt,
            max_retries=retries,
            deadline=call.deadline,
        )
        self._ledger.add(entry)
        out.append(PushInstruction(self._executor_endpoint(target), call))

    def _wall_micros(self) -> int:
        """Now, in microseconds since the epoch: when a request is first placed (its LWW writes' stamp)."""
        return int(self._wall * 1_000_000)

    def _incarnation(self, eid: ExecutorId) -> str:
        record = self._executors.get(eid)
        return record.status.incarnation if record is not None else ""

    def _handle_dag_create(self, request_id: int, dag: Dag, out: list[SchedulerInstruction]) -> None:
        if dag.name in self._dags:
            self._fail(request_id, DagAlreadyExists(f"a DAG named {dag.name!r} already exists", dag=dag.name), out)
            return
        if dag.name in self._creations or dag.name in self._deleting:
            reason = f"a DAG named {dag.name!r} is being created or deleted right now"
            self._fail(request_id, DagAlreadyExists(reason, dag=dag.name), out)
            return
        try:
            # Structure first, so a malformed DAG costs no KVS round trip; registration is checked after the read.
            validate_dag(dag, None)
        except InvalidDag as error:
            self._fail(request_id, error, out)
            return
        unknown = [ref.name for ref in dag.functions if ref.name not in self._functions]
        read_keys = (keys.dag_key(dag.name), *(keys.function_key(name) for name in unknown))
        self._read(_DagCreateReadOp(request_id, dag), read_keys, out)

    def _continue_dag_create(
        self, op: _DagCreateReadOp, found: Mapping[str, Lattice | None], out: list[SchedulerInstruction]
    ) -> None:
        dag = op.dag
        for ref in dag.functions:
            registration = _live_lww(found.get(keys.function_key(ref.name)))
            if registration is not None:
                self._functions.setdefault(ref.name, registration.timestamp)
        stored = found.get(keys.dag_key(dag.name))
        existing = self._loadable_dag(dag.name, stored)
        if existing is not None:
            self._register_dag(*existing)
            self._fail(op.request_id, DagAlreadyExists(f"a DAG named {dag.name!r} already exists", dag=dag.name), out)
            return
        if dag.name in self._dags or dag.name in self._creations:  # created while the read was out
            self._fail(op.request_id, DagAlreadyExists(f"a DAG named {dag.name!r} already exists", dag=dag.name), out)
            return
        try:
            validate_dag(dag, self._functions)
        except InvalidDag as error:
            self._fail(op.request_id, error, out)
            return
        floor = stored.timestamp if isinstance(stored, LwwLattice) else 0
        creation = _DagCreation(op.request_id, dag, floor)
        self._creations[dag.name] = creation
        self._remember(dag.name, "creation started")
        for ref in dag.functions:
            if not self._pin_next(creation, ref.name, out):
                self._abort_creation(creation, self._no_pin_candidate(creation, ref.name), out)
                return

    def _handle_dag_call(self, event: DagCallEvent, out: list[SchedulerInstruction], *, looked_up: bool) -> None:
        call = event.call
        chain = self._continuation_chain(call)
        if isinstance(chain, CloudburstError):
            self._fail(event.request_id, chain, out)
            return
        if self._look_up_dags(chain, event, out, looked_up=looked_up):
            return
        if call.name not in self._dags:
            self._fail(event.request_id, DagNotFound(f"no DAG named {call.name!r} is registered", dag=call.name), out)
            return
        for name in chain[1:]:
            if name not in self._dags:
                reason = f"the continuation of DAG {call.name!r} names DAG {name!r}, which is not registered"
                self._fail(event.request_id, DagNotFound(reason, dag=name), out)
                return
        call = _inherit_output_keys(call)
        outcome = self._schedule_dag(call, "", out)
        if isinstance(outcome, NoResources) and call.deadline:
            self._wait_for_executors(event.request_id, _final_key(call, self._new_id()), call, str(outcome), out)
            return
        if isinstance(outcome, CloudburstError):
            self._fail(event.request_id, outcome, out)
            return
        self._counters["dag_calls_placed"] += 1
        self._reply(event.request_id, GenericResponse(success=True, response_id=_final_key(call, outcome)), out)

    def _handle_dag_delete(self, event: DagDeleteEvent, out: list[SchedulerInstruction], *, looked_up: bool) -> None:
        name = event.name
        if not name:
            self._fail(event.request_id, InvalidRequest("a DAG deletion needs a DAG name"), out)
            return
        if name in self._creations:
            reason = f"DAG {name!r} is still being created; delete it once its creation has finished"
            self._fail(event.request_id, DagNotFound(reason, dag=name), out)
            return
        if self._look_up_dags((name,), event, out, looked_up=looked_up):
            return
        entry = self._dags.get(name)
        if entry is None or name in self._deleting:
            self._fail(event.request_id, DagNotFound(f"no DAG named {name!r} is registered", dag=name), out)
            return
        self._deleting.add(name)
        # The tombstone must win over the registration even if this scheduler's clock is behind its creator's.
        timestamp = max(self._timestamps(), entry.timestamp + 1)
        self._write(_DagDeleteOp(event.request_id, name), {keys.dag_key(name): LwwLattice(timestamp, b"")}, out)

    # -- internal messages -------------------------------------------------------------------------------------

    def _handle_internal(self, message: SchedulerMessage, out: list[SchedulerInstruction]) -> None:
        if isinstance(message, ThreadStatus):
            self._handle_status(message, out)
        elif isinstance(message, GenericResponse):
            self._handle_pin_reply(message, out)
        elif isinstance(message, Continuation):
            self._handle_continuation(message, out, looked_up=False)
        elif isinstance(message, SchedulerStatus):
            self._handle_gossip(message, out)
        elif isinstance(message, ExecutorStatistics):
            self._handle_statistics(message)
        elif isinstance(message, TriggerFiring):
            self._handle_trigger_firing(message, out)
        else:
            assert_never(message)

    def _handle_status(self, status: ThreadStatus, out: list[SchedulerInstruction]) -> None:
        if not status.ip:
            logger.warning("ignoring an executor status without an ip")
            return
        eid = (status.ip, status.tid)
        if not status.running:
            self._ledger.finish(status.finished)
            if eid in self._executors:
                self._remove_executor(eid, "its process died" if status.crashed else "it stopped running", out)
            self._forget_gossiped(eid)
            if status.crashed:
                # Told by its node's supervisor: what it held is gone. (A departing executor finishes its work.)
                self._repair_replicas(out)
                self._rerun_lost(eid, "its process died (its node's supervisor told)", out)
            return
        record = self._executors.get(eid)
        if record is None:
            if len(self._executors) >= MAX_EXECUTORS:
                logger.warning("ignoring executor %s: %d executors are known already", eid, MAX_EXECUTORS)
                return
            self._forget_gossiped(eid)
            record = _ExecutorRecord(status, self._now)
            self._executors[eid] = record
            self._remember(location_string(eid), f"joined ({status.type.name})")
        joined = record.status is status
        restarted = record.status.incarnation != status.incarnation
        if restarted:
            # A restarted process has lost every pin of the old one, whatever a stale report said.
            self._remember(location_string(eid), f"restarted ({status.incarnation})")
            self._executor_lost(eid, "it restarted", out)
            self._set_functions(eid, set())
        record.status = status
        record.heard = self._now
        self._ledger.finish(status.finished)
        self._rerun_refused(eid, status.refused, out)
        dropped = record.functions - set(status.functions)
        self._set_functions(eid, set(status.functions))
        if dropped:
            # Unpinned meanwhile (say, by another DAG's deletion): a creation counting on it must pin again.
            self._executor_lost(eid, "it no longer hosts the function", out, only=dropped)
        replicas = [len(self._locations.get(function, ())) for function in record.functions]
        if self.policy.should_back_off(status.utilization, replicas):
            self._backoff[eid] = self._now
        if restarted:
            # Last, so that the re-runs are placed knowing what the new process hosts (nothing, at first).
            self._repair_replicas(out)
            self._rerun_lost(eid, "it restarted (its process died)", out)
        elif joined:
            self._place_held(out)

    def _handle_pin_reply(self, response: GenericResponse, out: list[SchedulerInstruction]) -> None:
        repair = self._repairs.pop(response.response_id, None)
        if repair is not None:
            record = self._executors.get(repair.executor)
            if response.success and record is not None and repair.dag in self._dags:
                self._counters["replicas_restored"] += 1
                self._set_functions(repair.executor, record.functions | {repair.function})
                self._owners.setdefault((repair.function, repair.executor), set()).add(repair.dag)
                self._remember(repair.dag, f"{repair.function} pinned again at {location_string(repair.executor)}")
                self._place_held(out)  # requests waiting for that replica need not wait out their back-off
            return
        attempt = self._pins.pop(response.response_id, None)
        if attempt is None:
            self._handle_late_pin_reply(response, out)
            return
        creation = self._creations[attempt.dag]
        del creation.attempts[attempt.function]
        eid = attempt.executor
        subject = location_string(eid)
        if not response.success:
            self._counters["pins_rejected"] += 1
            reason = response.error_message or response.error.name
            creation.rejected.setdefault(attempt.function, set()).add(eid)
            creation.last_refusal = f"{subject} refused {attempt.function!r}: {reason}"
            self._remember(attempt.dag, f"pin of {attempt.function} refused by {subject}: {reason}")
            logger.info("executor %s refused to pin %r for DAG %r: %s", subject, attempt.function, attempt.dag, reason)
            if not self._pin_next(creation, attempt.function, out):
                self._abort_creation(creation, self._no_pin_candidate(creation, attempt.function), out)
            return
        record = self._executors[eid]
        if attempt.function not in record.functions:
            creation.fresh.add(attempt.function)
            self._set_functions(eid, record.functions | {attempt.function})
        self._owners.setdefault((attempt.function, eid), set()).add(attempt.dag)
        creation.placed[attempt.function] = eid
        self._remember(attempt.dag, f"{attempt.function} pinned at {subject}")
        if not creation.attempts and len(creation.placed) == len(creation.dag.functions):
            self._commit_creation(creation, out)

    def _handle_late_pin_reply(self, response: GenericResponse, out: list[SchedulerInstruction]) -> None:
        abandoned = self._abandoned.pop(response.response_id, None)
        if abandoned is None:
            logger.debug("ignoring a pin reply for unknown pin %r", response.response_id)
            return
        function, eid = abandoned
        record = self._executors.get(eid)
        # An acceptance after we gave up would leave the function pinned for nobody; undo it unless the function
        # was there already (then the pin was a no-op) or a pin of ours placed it there since.
        if response.success and record is not None and function not in record.functions:
            self._counters["late_pins_undone"] += 1
            self._remember(function, f"late pin at {location_string(eid)} undone")
            self._counters["unpins_sent"] += 1
            out.append(PushInstruction(self._executor_endpoint(eid), UnpinFunction(function)))

    def _handle_continuation(
        self, continuation: Continuation, out: list[SchedulerInstruction], *, looked_up: bool
    ) -> None:
        if continuation.call is None or not (continuation.name or continuation.call.name):
            logger.warning("dropping a continuation of request %r that names no DAG to run", continuation.id)
            return
        name = continuation.name or continuation.call.name
        call = replace(continuation.call, name=name)
        request_id = continuation.id or self._new_id()
        if self._look_up_dags((name,), continuation, out, looked_up=looked_up):
            return
        entry = self._dags.get(name)
        if entry is None:
            logger.error("continuation of request %r names DAG %r, which is not registered", request_id, name)
            self._deliver_error(call, request_id, DagNotFound(f"no DAG named {name!r} is registered", dag=name), out)
            return
        chain = self._continuation_chain(call)
        if isinstance(chain, CloudburstError):
            self._deliver_error(call, request_id, chain, out)
            return
        try:
            result = codec.decode_encoded_value(continuation.result, "Continuation.result")
        except DecodeError as error:
            logger.error("continuation of request %r carries an undecodable result: %s", request_id, error)
            self._deliver_error(call, request_id, InvalidRequest(error.message, dag=name), out)
            return
        arguments = dict(call.function_args)
        for source in entry.sources:
            arguments[source] = (*arguments.get(source, ()), result)
        call = _inherit_output_keys(replace(call, function_args=arguments))
        outcome = self._schedule_dag(call, request_id, out)
        if isinstance(outcome, CloudburstError):
            logger.warning("could not run the continuation of request %r: %s", request_id, outcome)
            self._deliver_error(call, request_id, outcome, out)
            return
        self._counters["continuations_placed"] += 1

    def _handle_gossip(self, status: SchedulerStatus, out: list[SchedulerInstruction]) -> None:
        announced = [
            name
            for name in dict.fromkeys(status.dags)
            if name and name not in self._dags and name not in self._creations and self._may_fetch(name)
        ]
        # A peer's deletion may be older than a re-creation we know of; the KVS (LWW) decides.
        claimed = [name for name in dict.fromkeys(status.deleted_dags) if name in self._dags]
        if announced or claimed:
            read_keys = tuple(keys.dag_key(name) for name in (*announced, *claimed))
            self._read(_GossipFetchOp(tuple(announced), tuple(claimed)), read_keys, out)
        for location in status.function_locations:
            eid = (location.ip, location.tid)
            if not location.name or not location.ip or eid in self._executors:
                continue
            functions = self._gossiped.get(eid)
            if functions is None:
                if len(self._gossiped) >= MAX_EXECUTORS:
                    continue
                functions = self._gossiped[eid] = {}
            if location.name not in functions and len(functions) >= MAX_GOSSIPED_FUNCTIONS:
                continue
            functions[location.name] = self._now
            self._locations.setdefault(location.name, set()).add(eid)

    def _handle_statistics(self, statistics: ExecutorStatistics) -> None:
        for dag in statistics.dags:
            entry = self._dags.get(dag.name)
            if entry is not None and dag.direct_calls > 0:
                # Requests sent straight to the DAG's executors (under a lease) count as calls here, as placed ones.
                tally = self._dag_tallies.setdefault(dag.name, _DagTally())
                tally.call_count += dag.direct_calls
                for member in entry.members:
                    self._function_calls[member] += dag.direct_calls
        reporter = statistics.reporter or "unnamed"
        self._reports.pop(reporter, None)
        self._reports[reporter] = statistics
        while len(self._reports) > MAX_REPORTS:
            self._reports.popitem(last=False)

    # -- KVS outcomes ------------------------------------------------------------------------------------------

    def _handle_read_done(self, event: KvsReadDoneEvent, out: list[SchedulerInstruction]) -> None:
        op = self._ops.pop(event.token, None)
        if op is None:
            logger.warning("ignoring the outcome of unknown KVS read %d", event.token)
            return
        error, found = event.error, event.lattices
        if isinstance(op, _ListOp):
            self._finish_list(op, found, error, out)
        elif isinstance(op, _FunctionLookupOp):
            if error is not None:
                self._fail_call(op.origin, _kvs_failure(f"cannot look up function {op.call.name!r}", error), out)
                return
            registration = _live_lww(found.get(keys.function_key(op.call.name)))
            if registration is None:
                reason = f"no function named {op.call.name!r} is registered"
                self._fail_call(op.origin, FunctionNotFound(reason, function=op.call.name), out)
                return
            self._functions.setdefault(op.call.name, registration.timestamp)
            self._place_call(op.origin, op.call, out)
        elif isinstance(op, _DagLookupOp):
            if error is not None:
                logger.warning("cannot look up DAGs in the KVS: %s", error)
            else:
                for key, lattice in found.items():
                    name = key.removeprefix(keys.DAG_PREFIX)
                    loaded = self._loadable_dag(name, lattice)
                    if loaded is not None and name not in self._dags and name not in self._creations:
                        self._register_dag(*loaded)
            if isinstance(op.then, DagCallEvent):
                self._handle_dag_call(op.then, out, looked_up=True)
            elif isinstance(op.then, DagDeleteEvent):
                self._handle_dag_delete(op.then, out, looked_up=True)
            else:
                self._handle_continuation(op.then, out, looked_up=True)
        elif isinstance(op, _DagCreateReadOp):
            if error is not None:
                self._fail(op.request_id, _kvs_failure(f"cannot create DAG {op.dag.name!r}", error), out)
                return
            self._continue_dag_create(op, found, out)
        elif isinstance(op, _RecoveryIndexOp):
            self._continue_recovery(found, error, out)
        elif isinstance(op, _RecoveryLoadOp):
            self._finish_recovery(op, found, error)
        elif isinstance(op, _GossipFetchOp):
            self._finish_gossip_fetch(op, found, error, out)
        elif isinstance(op, _KeySetsReadOp):
            self._finish_key_sets(op, found, error)
        else:
            logger.error("a KVS read finished for a write operation %s", op)

    def _handle_write_done(self, event: KvsWriteDoneEvent, out: list[SchedulerInstruction]) -> None:
        op = self._ops.pop(event.token, None)
        if op is None:
            logger.warning("ignoring the outcome of unknown KVS write %d", event.token)
            return
        error = event.error
        if isinstance(op, _FunctionCreateOp):
            if error is not None:
                self._fail(op.request_id, _kvs_failure(f"cannot register function {op.name!r}", error), out)
                return
            self._functions[op.name] = max(op.timestamp, self._functions.get(op.name, 0))
            self._remember(op.name, "registered")
            self._reply(op.request_id, GenericResponse(success=True), out)
        elif isinstance(op, _DagCommitOp):
            creation = self._creations[op.name]
            if error is not None:
                self._abort_creation(creation, _kvs_failure(f"cannot store DAG {op.name!r}", error), out)
                return
            del self._creations[op.name]
            self._register_dag(creation.dag, op.timestamp)
            self._remember(op.name, "created")
            self._reply(creation.request_id, GenericResponse(success=True), out)
        elif isinstance(op, _DagDeleteOp):
            self._deleting.discard(op.name)
            if error is not None:
                self._fail(op.request_id, _kvs_failure(f"cannot delete DAG {op.name!r}", error), out)
                return
            self._delete_dag(op.name, out, unpin=True)
            self._remember(op.name, "deleted")
            self._reply(op.request_id, GenericResponse(success=True), out)
        elif isinstance(op, _ErrorStoreOp):
            if error is not None:
                logger.error("could not store an error result under %r: %s", op.key, error)
        else:
            logger.error("a KVS write finished for a read operation %s", op)

    def _finish_list(
        self,
        op: _ListOp,
        found: Mapping[str, Lattice | None],
        error: CloudburstError | None,
        out: list[SchedulerInstruction],
    ) -> None:
        index = found.get(keys.FUNCTION_INDEX)
        if error is not None or (index is not None and not isinstance(index, SetLattice)):
            # A list answer has no error field; the functions this scheduler knows are the best answer left.
            logger.warning("cannot read the function index (%s); listing known functions", error or "not a set")
            names = set(self._functions)
        else:
            names = set(_function_names(index))
        listed = sorted(name for name in names if name.startswith(op.prefix))
        self._reply(op.request_id, FunctionListReply(tuple(listed)), out)

    def _finish_key_sets(
        self, op: _KeySetsReadOp, found: Mapping[str, Lattice | None], error: CloudburstError | None
    ) -> None:
        """Rebuilds the key locations from the caches' key sets; a node without a readable set has no keys."""
        if error is not None:
            # Locality is only a hint: keep the last known locations rather than fall back to none.
            logger.warning("cannot read the caches' key sets (keeping the last ones): %s", error)
            return
        key_sets: dict[str, tuple[str, ...]] = {}
        for ip in op.ips:
            # Missing for a node still joining (or a local deployment without caches).
            stored = _live_lww(found.get(cache_key_set_key(ip)))
            if stored is None:
                continue
            try:
                key_sets[ip] = codec.decode_string_set(stored.value, f"the key set of the cache at {ip}")
            except DecodeError as error:
                logger.warning("ignoring the key set of the cache at %s: %s", ip, error)
        self._key_locations = key_locations_from_key_sets(key_sets)

    # -- recovery and gossip -----------------------------------------------------------------------------------

    def _start_recovery(self, out: list[SchedulerInstruction]) -> None:
        if self._recovering or self._recovered:
            return
        self._recovering = True
        self._recovery_retry_at = None
        self._read(_RecoveryIndexOp(), (keys.FUNCTION_INDEX, keys.DAG_INDEX), out)

    def _continue_recovery(
        self, found: Mapping[str, Lattice | None], error: CloudburstError | None, out: list[SchedulerInstruction]
    ) -> None:
        if error is not None:
            self._recovery_failed(error)
            return
        function_index, dag_index = found.get(keys.FUNCTION_INDEX), found.get(keys.DAG_INDEX)
        functions = tuple(sorted(_function_names(function_index if isinstance(function_index, SetLattice) else None)))
        dags = tuple(sorted(_utf8_members(dag_index if isinstance(dag_index, SetLattice) else None)))
        if not functions and not dags:
            self._recovering = False
            self._recovered = True
            return
        read_keys = (*(keys.function_key(name) for name in functions), *(keys.dag_key(name) for name in dags))
        self._read(_RecoveryLoadOp(functions, dags), read_keys, out)

    def _finish_recovery(
        self, op: _RecoveryLoadOp, found: Mapping[str, Lattice | None], error: CloudburstError | None
    ) -> None:
        if error is not None:
            self._recovery_failed(error)
            return
        for name in op.functions:
            registration = _live_lww(found.get(keys.function_key(name)))
            if registration is not None:
                self._functions[name] = max(registration.timestamp, self._functions.get(name, 0))
        restored = 0
        for name in op.dags:
            loaded = self._loadable_dag(name, found.get(keys.dag_key(name)))
            # Deleted DAGs read as missing (a tombstone) and stay deleted.
            if loaded is not None and name not in self._dags and name not in self._creations:
                self._register_dag(*loaded)
                restored += 1
        self._recovering = False
        self._recovered = True
        logger.info("recovered %d functions and %d DAGs from the KVS", len(op.functions), restored)

    def _recovery_failed(self, error: CloudburstError) -> None:
        self._recovering = False
        self._recovery_retry_at = self._now + self.config.report_period
        logger.warning("cannot recover the registry from the KVS (retrying in a report period): %s", error)

    def _may_fetch(self, name: str) -> bool:
        """Whether a DAG a peer announced may be looked up now (bounded retries; the original crashed on a miss)."""
        entry = self._unresolved.get(name)
        give_up_for = TOMBSTONE_PERIODS * self.config.report_period
        if entry is not None and self._now - entry.first_seen >= give_up_for:
            del self._unresolved[name]
            entry = None
        if entry is None:
            entry = self._unresolved[name] = _Unresolved(0, self._now)
            while len(self._unresolved) > MAX_UNRESOLVED:
                self._unresolved.popitem(last=False)
        if entry.attempts >= MAX_DAG_FETCH_ATTEMPTS:
            return False
        entry.attempts += 1
        return True

    def _finish_gossip_fetch(
        self,
        op: _GossipFetchOp,
        found: Mapping[str, Lattice | None],
        error: CloudburstError | None,
        out: list[SchedulerInstruction],
    ) -> None:
        if error is not None:
            logger.warning("cannot fetch DAGs announced by a peer: %s", error)
            return
        for name in op.announced:
            loaded = self._loadable_dag(name, found.get(keys.dag_key(name)))
            if loaded is None:
                logger.info("a peer announced DAG %r, which the KVS does not show (yet)", name)
            elif name not in self._dags and name not in self._creations:
                self._register_dag(*loaded)
                self._remember(name, "learned from a peer")
        for name in op.claimed_deleted:
            entry = self._dags.get(name)
            stored = found.get(keys.dag_key(name))
            live = _live_lww(stored)
            if entry is None or name in self._deleting:
                continue
            if live is None:
                # A tombstone reads as missing. The peer that deleted it unpins; here it only stops being served.
                self._delete_dag(name, out, unpin=False)
                self._remember(name, "deleted by a peer")
            elif live is not None and live.timestamp > entry.timestamp:
                loaded = self._loadable_dag(name, live)
                if loaded is not None:
                    self._register_dag(*loaded)

    # -- ticks -------------------------------------------------------------------------------------------------

    def _handle_tick(self, out: list[SchedulerInstruction]) -> None:
        now = self._now
        for attempt in [a for a in self._pins.values() if a.deadline <= now]:
            if attempt.pin_id in self._pins:  # an earlier timeout may have aborted its creation
                self._pin_timed_out(attempt, out)
        if not self._recovered and self._recovery_retry_at is not None and now >= self._recovery_retry_at:
            self._start_recovery(out)
        for entry in self._ledger.due(now):
            self._rerun(entry, out)
        if self._last_report is None:
            self._last_report = now
        elif now - self._last_report >= self.config.report_period:
            self._last_report = now
            self._periodic(out)

    def _periodic(self, out: list[SchedulerInstruction]) -> None:
        now, period = self._now, self.config.report_period
        horizon = now - EXPIRY_PERIODS * period
        for eid in [eid for eid, record in self._executors.items() if record.heard < horizon]:
            self._counters["executors_expired"] += 1
            reason = f"it has not reported for {EXPIRY_PERIODS} report periods"
            self._remove_executor(eid, reason, out)
            self._rerun_lost(eid, reason, out)
        for eid, functions in list(self._gossiped.items()):
            for function in [f for f, heard in functions.items() if heard < horizon]:
                del functions[function]
                self._unindex(function, eid)
            if not functions:
                del self._gossiped[eid]
        while self._deleted and next(iter(self._deleted.values())) < now - TOMBSTONE_PERIODS * period:
            self._deleted.popitem(last=False)
        options = self.policy.options
        self._backoff = {eid: t for eid, t in self._backoff.items() if now - t < options.backoff_period}
        for eid in list(self._assignments):
            if not self._recent_assignments(eid):
                del self._assignments[eid]
        self._read_key_sets(out)
        self._repair_replicas(out)
        self._roll_statistics()
        gossip = SchedulerStatus(
            dags=tuple(sorted(self._dags)),
            function_locations=tuple(
                FunctionLocation(function, eid[0], eid[1])
                for eid, record in sorted(self._executors.items())
                for function in sorted(record.functions)
            ),
            deleted_dags=tuple(self._deleted),
        )
        ports = self.config.ports
        out.extend(PushInstruction(ports.scheduler_internal_endpoint(peer), gossip) for peer in self.gossip_peers())
        if self.config.management:
            # Sent even when empty: the management service lists the schedulers that report.
            out.append(PushInstruction(ports.management_endpoint(self.config.management), self._statistics))
            out.append(ListSchedulersInstruction())

    def _repair_replicas(self, out: list[SchedulerInstruction]) -> None:
        """Pins again every function of a registered DAG whose last replica is gone (its executor died or left).

        Until then calls of the DAG fail at once with ``NoResources``; after, they run again without anyone having
        to re-register the DAG. One pin per function at a time; one that is refused or unanswered is retried the
        next period.
        """
        now = self._now
        self._repairs = {pin: r for pin, r in self._repairs.items() if r.deadline > now}
        repairing = {(r.dag, r.function) for r in self._repairs.values()}
        for name, entry in self._dags.items():
            if name in self._deleting:
                continue
            for reference in entry.dag.functions:
                function = reference.name
                if self._locations.get(function) or (name, function) in repairing:
                    continue
                wanted = ExecutorType.GPU if reference.gpu else ExecutorType.CPU
                candidates = [
                    ExecutorCandidate(eid, pinned=len(record.functions))
                    for eid, record in self._executors.items()
                    if record.status.type == wanted and record.status.running
                ]
                target = self.policy.pick_for_pin(candidates, set())
                if target is None:
                    continue
                pin_id = self._new_id()
                self._repairs[pin_id] = _RepairPin(name, function, target, now + self.config.pin_timeout)
                repairing.add((name, function))
                self._counters["repair_pins_sent"] += 1
                pin = PinFunction(function, self._internal_endpoint, pin_id, reference.batching)
                out.append(PushInstruction(self._executor_endpoint(target), pin))

    def _read_key_sets(self, out: list[SchedulerInstruction]) -> None:
        """Asks the KVS for every executor node's cache key set, so locality follows what the caches hold now.

        Nodes known second-hand count too: DAG calls are placed on them as well.
        """
        ips = tuple(sorted({eid[0] for eid in self._executors} | {eid[0] for eid in self._gossiped}))
        if not ips:
            self._key_locations = {}
            return
        self._read(_KeySetsReadOp(ips), tuple(cache_key_set_key(ip) for ip in ips), out)

    def _roll_statistics(self) -> None:
        self._statistics = ExecutorStatistics(
            functions=tuple(FunctionStatistics(name, count) for name, count in sorted(self._function_calls.items())),
            dags=tuple(
                DagStatistics(name, interarrivals=tuple(tally.interarrivals), call_count=tally.call_count)
                for name, tally in sorted(self._dag_tallies.items())
                if tally.call_count
            ),
            reporter=self._reporter(),
        )
        self._function_calls.clear()
        for tally in self._dag_tallies.values():
            # The last arrival carries over, so the first inter-arrival of the next period is measured too.
            tally.call_count = 0
            tally.interarrivals = []

    # -- DAG creation ------------------------------------------------------------------------------------------

    def _pin_next(self, creation: _DagCreation, function: str, out: list[SchedulerInstruction]) -> bool:
        """Sends a pin of ``function`` to the best untried executor; False when none is left."""
        reference = creation.dag.reference(function)
        assert reference is not None
        wanted = ExecutorType.GPU if reference.gpu else ExecutorType.CPU
        refused = creation.rejected.get(function, set())
        in_flight = Counter(attempt.executor for attempt in self._pins.values())
        candidates = [
            ExecutorCandidate(eid, pinned=len(record.functions) + in_flight[eid])
            for eid, record in self._executors.items()
            if record.status.type == wanted and eid not in refused and eid not in creation.timed_out
        ]
        preferred: set[str] = set()
        if function in creation.dag.colocated and not reference.gpu:
            # As the original: GPU functions ignore colocation (they go wherever a GPU executor is).
            for partner in creation.dag.colocated:
                if partner in creation.placed:
                    preferred.add(creation.placed[partner][0])
                elif partner in creation.attempts:
                    preferred.add(self._pins[creation.attempts[partner]].executor[0])
            if not preferred:
                # The first of a colocated group goes to an empty node if there is one, so the rest can follow.
                preferred = self._empty_nodes(wanted, in_flight)
        target = self.policy.pick_for_pin(candidates, preferred)
        if target is None:
            return False
        pin_id = self._new_id()
        deadline = self._now + self.config.pin_timeout
        self._pins[pin_id] = _PinAttempt(pin_id, creation.dag.name, function, target, deadline)
        creation.attempts[function] = pin_id
        self._counters["pins_sent"] += 1
        self._remember(creation.dag.name, f"pin of {function} sent to {location_string(target)}")
        pin = PinFunction(function, self._internal_endpoint, pin_id, reference.batching)
        out.append(PushInstruction(self._executor_endpoint(target), pin))
        return True

    def _empty_nodes(self, kind: ExecutorType, in_flight: Counter[ExecutorId]) -> set[str]:
        """Node ips whose executors of type ``kind`` host nothing and have no pin on the way."""
        busy = {eid[0] for eid, record in self._executors.items() if record.functions or in_flight[eid]}
        return {eid[0] for eid, record in self._executors.items() if record.status.type == kind} - busy

    def _no_pin_candidate(self, creation: _DagCreation, function: str) -> NoResources:
        reference = creation.dag.reference(function)
        kind = "GPU" if reference is not None and reference.gpu else "CPU"
        reason = f"no {kind} executor can pin function {function!r} of DAG {creation.dag.name!r}"
        details = []
        if creation.last_refusal:
            details.append(f"last refusal: {creation.last_refusal}")
        if creation.timed_out:
            silent = ", ".join(location_string(eid) for eid in sorted(creation.timed_out))
            details.append(f"no answer within {self.config.pin_timeout:g}s from {silent}")
        return NoResources(f"{reason} ({'; '.join(details)})" if details else reason, dag=creation.dag.name)

    def _pin_timed_out(self, attempt: _PinAttempt, out: list[SchedulerInstruction]) -> None:
        self._counters["pins_timed_out"] += 1
        creation = self._creations[attempt.dag]
        self._abandon(attempt)
        del creation.attempts[attempt.function]
        creation.timed_out.add(attempt.executor)
        subject = location_string(attempt.executor)
        self._remember(attempt.dag, f"pin of {attempt.function} at {subject} timed out")
        logger.warning("executor %s did not answer the pin of %r in time", subject, attempt.function)
        if not self._pin_next(creation, attempt.function, out):
            self._abort_creation(creation, self._no_pin_candidate(creation, attempt.function), out)

    def _abandon(self, attempt: _PinAttempt) -> None:
        self._pins.pop(attempt.pin_id, None)
        self._abandoned[attempt.pin_id] = (attempt.function, attempt.executor)
        while len(self._abandoned) > MAX_ABANDONED_PINS:
            self._abandoned.popitem(last=False)

    def _commit_creation(self, creation: _DagCreation, out: list[SchedulerInstruction]) -> None:
        creation.committing = True
        dag = creation.dag
        timestamp = max(self._timestamps(), creation.timestamp_floor + 1)
        items: dict[str, Lattice] = {
            keys.dag_key(dag.name): LwwLattice(timestamp, codec.encode_dag(dag)),
            keys.DAG_INDEX: SetLattice(frozenset({dag.name.encode()})),
        }
        self._write(_DagCommitOp(dag.name, timestamp), items, out)

    def _abort_creation(self, creation: _DagCreation, error: CloudburstError, out: list[SchedulerInstruction]) -> None:
        name = creation.dag.name
        for pin_id in creation.attempts.values():
            self._abandon(self._pins[pin_id])
        creation.attempts.clear()
        for function, eid in creation.placed.items():
            owners = self._owners.get((function, eid), set())
            owners.discard(name)
            if not owners:
                self._owners.pop((function, eid), None)
                if function in creation.fresh and not self._used_elsewhere(function, name):
                    self._unpin(function, eid, out)
        del self._creations[name]
        self._remember(name, f"creation failed: {error.message}")
        self._fail(creation.request_id, error, out)

    def _used_elsewhere(self, function: str, dag: str) -> bool:
        """Whether a live DAG or another creation than ``dag`` contains ``function``."""
        return any(function in e.members for n, e in self._dags.items() if n != dag) or any(
            c.dag.reference(function) is not None for n, c in self._creations.items() if n != dag
        )

    # -- DAG calls ---------------------------------------------------------------------------------------------

    def _continuation_chain(self, call: DagCall) -> tuple[str, ...] | CloudburstError:
        """The DAG names a call runs, its own first, or the error that makes the chain unusable."""
        names = [call.name]
        continuation = call.continuation
        while continuation is not None:
            if continuation.call is None or not (continuation.name or continuation.call.name):
                return InvalidRequest(f"a continuation in the call of DAG {call.name!r} names no DAG or has no call")
            if len(names) > MAX_CONTINUATION_DEPTH:
                return InvalidRequest(f"the call of DAG {call.name!r} chains more than {MAX_CONTINUATION_DEPTH} DAGs")
            names.append(continuation.name or continuation.call.name)
            continuation = continuation.call.continuation
        if not names[0]:
            return InvalidRequest("a DAG call needs a DAG name")
        return tuple(names)

    def _look_up_dags(
        self,
        names: Iterable[str],
        then: DagCallEvent | DagDeleteEvent | Continuation,
        out: list[SchedulerInstruction],
        *,
        looked_up: bool,
    ) -> bool:
        """Reads unknown DAGs from the KVS first (a peer may have created them); True if a read was issued."""
        if looked_up:
            return False
        unknown = [n for n in dict.fromkeys(names) if n not in self._dags and n not in self._deleted]
        if not unknown:
            return False
        self._read(_DagLookupOp(then), tuple(keys.dag_key(name) for name in unknown), out)
        return True

    def _schedule_dag(
        self, call: DagCall, schedule_id: str, out: list[SchedulerInstruction], attempt: int = 1
    ) -> str | CloudburstError:
        """Places every function of a DAG call, sends the schedules (a source's starts it), enters the request in the
        ledger (``attempt``: which run of it this is).

        Returns:
            The schedule id, or the error that prevented the call (nothing has been sent then).
        """
        entry = self._dags[call.name]
        dag = entry.dag
        if not call.stamp:
            call = replace(call, stamp=self._wall_micros())
        strangers = sorted(set(call.function_args) - entry.members)
        if strangers:
            listed = ", ".join(repr(name) for name in strangers)
            return InvalidRequest(f"the call of DAG {dag.name!r} passes arguments to {listed}, not in the DAG")
        chosen: dict[str, ExecutorId] = {}
        for reference in dag.functions:
            function = reference.name
            preferred: set[str] = set()
            if function in dag.colocated and not reference.gpu:
                # GPU functions live on GPU executors, wherever those are; colocation cannot apply to them.
                preferred = {chosen[p][0] for p in dag.colocated if p in chosen}
            candidates = (self._candidate(eid) for eid in self._locations.get(function, ()))
            target = self.policy.pick_for_call(
                candidates,
                preferred,
                references=call.references.get(function, ()),
                key_locations=self._key_locations,
                rotation=function,
            )
            if target is None:
                reason = f"function {function!r} of DAG {dag.name!r} is not pinned at any live executor"
                return NoResources(reason, dag=dag.name, function=function)
            chosen[function] = target
        schedule_id = schedule_id or self._new_id()
        locations = {function: location_string(eid) for function, eid in chosen.items()}
        self._record_arrival(entry)
        for function, eid in chosen.items():
            self._assign(eid)
            schedule = schedule_of_call(call, schedule_id, dag, function, locations, self._wall, self.config.host)
            # A source's schedule starts it: executors need no separate BEGIN trigger.
            out.append(PushInstruction(self._executor_endpoint(eid), schedule))
        retries = DEFAULT_MAX_RETRIES if call.max_retries is None else call.max_retries
        executors = {eid: self._incarnation(eid) for eid in chosen.values()}
        key = _final_key(call, schedule_id)
        self._ledger.add(LedgerEntry(key, call, schedule_id, executors, attempt, retries, call.deadline))
        return schedule_id

    # -- re-execution --------------------------------------------------------------------------------------------

    def _rerun_lost(self, eid: ExecutorId, reason: str, out: list[SchedulerInstruction]) -> None:
        """Runs again, elsewhere, every request whose current attempt used ``eid``, or fails it."""
        for entry in self._ledger.lose(eid, reason):
            self._counters["requests_lost"] += 1
            self._remember(entry.key, f"attempt {entry.attempt} lost with {location_string(eid)}: {reason}")
            self._rerun(entry, out)

    def _rerun_refused(self, eid: ExecutorId, refused: tuple[str, ...], out: list[SchedulerInstruction]) -> None:
        """Places again the requests an executor could not run, their function not being pinned there (it restarted
        after they were placed). The refused attempt never ran, so it does not count against the retries."""
        for entry in self._ledger.finish(refused):
            self._counters["requests_refused"] += 1
            self._remember(entry.key, f"attempt {entry.attempt} refused by {location_string(eid)}: not pinned there")
            entry.attempt -= 1
            self._rerun(entry, out)

    def _rerun(self, entry: LedgerEntry, out: list[SchedulerInstruction]) -> None:
        """Places the next attempt of a lost request, holds it for a while if it cannot be placed now (its
        functions being pinned again), or fails it when no attempt is left or its caller stopped waiting."""
        if entry.cancelled:
            return
        if not entry.may_retry(self._wall):
            self._fail_lost(entry, out)
            return
        attempt = entry.attempt + 1
        call = entry.call
        if isinstance(call, FunctionCall):
            pool = self._one_shot_pool() if call.name in self._functions else []
            candidates = (self._candidate(eid) for eid in pool)
            target = self.policy.pick_for_call(
                candidates, references=call.references, key_locations=self._key_locations, idle_first=True
            )
            if target is None:
                entry.unplaced = f"no CPU executor is available to run {call.name!r}"
                self._ledger.wait(entry, self._now)
                return
            self._counters["requests_rerun"] += 1
            self._send_call(replace(call, attempt=attempt), target, out)
            self._carry_losses(entry)
            return
        if call.name not in self._dags:
            self._fail_lost(entry, out)
            return
        # A new schedule id, so executors that finished a stage of the lost attempt do not drop this one's as a
        # repeat; the result still goes where the caller waits.
        call = _inherit_output_keys(replace(call, output_key=call.output_key or entry.key))
        outcome = self._schedule_dag(call, "", out, attempt)
        if isinstance(outcome, CloudburstError):
            entry.unplaced = str(outcome)
            self._ledger.wait(entry, self._now)  # a lost replica is pinned again within a report period
            return
        self._counters["requests_rerun"] += 1
        self._carry_losses(entry)

    def _place_held(self, out: list[SchedulerInstruction]) -> None:
        """Tries at once the requests held because they could not be placed: what they waited for may be there."""
        for entry in self._ledger.due(float("inf")):
            self._rerun(entry, out)

    def _wait_for_executors(
        self, request_id: int, key: str, call: FunctionCall | DagCall, reason: str, out: list[SchedulerInstruction]
    ) -> None:
        """Accepts a request that cannot be placed now (its executors are restarting, say, or a lost replica is
        being pinned again) and places it, with back-off, once it can, or fails it at its deadline: a caller who
        gave a deadline waits for capacity rather than get ``NoResources`` while the cluster heals."""
        retries = DEFAULT_MAX_RETRIES if call.max_retries is None else call.max_retries
        entry = LedgerEntry(key, call, key, {}, attempt=0, max_retries=retries, deadline=call.deadline)
        entry.unplaced = reason
        self._ledger.wait(entry, self._now)
        self._counters["requests_held"] += 1
        self._remember(key, f"held until it can be placed: {reason}")
        self._reply(request_id, GenericResponse(success=True, response_id=key), out)

    def _carry_losses(self, previous: LedgerEntry) -> None:
        """The new attempt's entry keeps the earlier attempts' losses and the caller's cancellation."""
        current = self._ledger.find(previous.key)
        if current is not None and current is not previous:
            current.losses = previous.losses
            current.cancelled = previous.cancelled

    def _fail_lost(self, entry: LedgerEntry, out: list[SchedulerInstruction]) -> None:
        """Tells a lost request's caller why it is over: which executor each attempt was lost with (or, for one
        never placed, why it could not be)."""
        call = entry.call
        function = call.name if isinstance(call, FunctionCall) else None
        dag = call.name if isinstance(call, DagCall) else None
        error: CloudburstError
        if not entry.losses:
            reason = f"request {entry.key} could not be placed before its deadline: {entry.unplaced}"
            error = NoResources(reason, function=function, dag=dag, request_id=entry.key)
        else:
            lost = "; ".join(f"attempt {n} on {where}: {why}" for n, (where, why) in enumerate(entry.losses, 1))
            if entry.deadline and self._wall >= entry.deadline:
                why_over = "its deadline passed"
            else:
                why_over = f"it may run at most {entry.max_retries + 1} time(s)"
            error = ExecutorLost(
                f"request {entry.key} was lost with its executors and not run again ({why_over}): {lost}",
                tuple(entry.losses),
                function=function,
                dag=dag,
                request_id=entry.key,
            )
            self._counters["requests_failed_lost"] += 1
        if isinstance(call, FunctionCall) and call.trigger is not None:
            self._fail_call(call.trigger, error, out)
        else:
            self._deliver_error_to(entry.key, call.response_address, call.delivery, error, out)

    def _handle_cancel(self, request_id: int, key: str, out: list[SchedulerInstruction]) -> None:
        """Stops a request: never run again, and every executor it runs on told (their sentinels stop the running
        invocation and drop its queued work). A request this scheduler did not place (a client sent it straight to
        an executor, or another scheduler placed it) may run on any executor it knows: each is told."""
        entry = self._ledger.find(key)
        targets: Iterable[ExecutorId] = self._executors
        if entry is not None:
            entry.cancelled = True
            self._counters["requests_cancelled"] += 1
            self._remember(key, "cancelled")
            targets = entry.executors
        for eid in targets:
            endpoint = self.config.ports.executor_cancel_endpoint(eid[0], eid[1])
            out.append(PushInstruction(endpoint, CancelRequest(key)))
        self._reply(request_id, GenericResponse(success=True, response_id=key), out)

    def _record_arrival(self, entry: _DagEntry) -> None:
        # Only for DAGs that exist (in the original, unknown names leaked a list each).
        tally = self._dag_tallies.setdefault(entry.dag.name, _DagTally())
        if tally.last_arrival is not None and len(tally.interarrivals) < MAX_INTERARRIVALS:
            tally.interarrivals.append(self._now - tally.last_arrival)
        tally.last_arrival = self._now
        tally.call_count += 1
        self._function_calls.update(entry.members)

    def _handle_push_failed(self, event: PushFailedEvent, out: list[SchedulerInstruction]) -> None:
        """Fails at once what an overloaded executor could not take, rather than leave its caller to time out."""
        message = event.message
        self._counters["pushes_refused"] += 1
        if isinstance(message, FunctionCall | DagSchedule):
            self._ledger.finish([message.response_key if isinstance(message, FunctionCall) else message.id])
        error = NoResources(f"the executor at {event.address} is overloaded (its queue is full)")
        if isinstance(message, FunctionCall):
            if message.trigger is not None:
                self._fail_call(message.trigger, error, out)
            else:
                self._deliver_error_to(message.response_key, message.response_address, message.delivery, error, out)
        elif isinstance(message, DagSchedule):
            error.dag, error.request_id = message.dag.name, message.id
            key = message.output_key or message.id
            self._deliver_error_to(key, message.response_address, message.delivery, error, out)

    def _deliver_error(
        self, call: DagCall, request_id: str, error: CloudburstError, out: list[SchedulerInstruction]
    ) -> None:
        """Sends a continuation's error where its result would have gone, as the executor delivers results."""
        self._deliver_error_to(call.output_key or request_id, call.response_address, call.delivery, error, out)

    def _deliver_error_to(
        self,
        key: str,
        address: str,
        delivery: ResultDelivery,
        error: CloudburstError,
        out: list[SchedulerInstruction],
    ) -> None:
        """Sends an error where a request's result would have gone, as the executor delivers results."""
        legacy = delivery == ResultDelivery.LEGACY
        value = values.legacy_error(error) if legacy else values.encode_error(error)
        push = store = False
        if legacy:
            if address:
                out.append(PushInstruction(address, value))
            else:
                store = True
        elif delivery == ResultDelivery.NOTIFY_AND_STORE:
            push = store = True
        else:
            push = True
            store = not address
        if push and address:
            out.append(PushInstruction(address, CallResult(key, value)))
        if store and key:
            stored = LwwLattice(self._timestamps(), codec.encode_encoded_value(value))
            self._write(_ErrorStoreOp(key), {key: stored}, out)

    # -- registry and locations --------------------------------------------------------------------------------

    def _loadable_dag(self, name: str, lattice: Lattice | None) -> tuple[Dag, int] | None:
        """The DAG stored under ``name`` if it is live and well-formed (garbage in the KVS must not crash us)."""
        live = _live_lww(lattice)
        if live is None:
            return None
        try:
            dag = codec.decode_dag(live.value)
            if dag.name != name:
                raise InvalidDag(f"the KVS entry of DAG {name!r} holds DAG {dag.name!r}")
            validate_dag(dag, None)
        except (DecodeError, InvalidDag) as error:
            logger.error("ignoring the stored DAG %r: %s", name, error)
            return None
        return dag, live.timestamp

    def _register_dag(self, dag: Dag, timestamp: int) -> None:
        self._dags[dag.name] = _DagEntry(dag, timestamp, frozenset(ref.name for ref in dag.functions), dag.sources())
        self._deleted.pop(dag.name, None)
        self._unresolved.pop(dag.name, None)

    def _drop_dag(self, name: str) -> None:
        self._dags.pop(name, None)
        self._dag_tallies.pop(name, None)
        self._deleted.pop(name, None)
        self._deleted[name] = self._now
        while len(self._deleted) > MAX_TOMBSTONES:
            self._deleted.popitem(last=False)
        for owned in [k for k, owners in self._owners.items() if name in owners]:
            self._owners[owned].discard(name)
            if not self._owners[owned]:
                del self._owners[owned]

    def _delete_dag(self, name: str, out: list[SchedulerInstruction], *, unpin: bool) -> None:
        """Forgets a live DAG, remembers the deletion for gossip, and unpins what only it used (if ``unpin``)."""
        entry = self._dags.get(name)
        if entry is None:
            return
        doomed = self._unpin_plan(entry.dag) if unpin else []
        self._drop_dag(name)
        for function, eid in doomed:
            self._unpin(function, eid, out)

    def _unpin_plan(self, dag: Dag) -> list[tuple[str, ExecutorId]]:
        """The replicas a deleted DAG's functions lose: those no other live DAG relies on (the original unpinned all).

        A function no other DAG contains is unpinned everywhere. A shared function loses only the replicas this
        scheduler pinned for the deleted DAG alone, and only while the other DAGs keep a replica. Ownership of
        replicas pinned elsewhere (by peers, or before a restart) is unknown, so those are kept for the other DAGs.
        """
        doomed: list[tuple[str, ExecutorId]] = []
        for reference in dag.functions:
            function = reference.name
            located = sorted(self._locations.get(function, ()))
            if not self._used_elsewhere(function, dag.name):
                doomed += [(function, eid) for eid in located]
                continue
            exclusive = [eid for eid in located if self._owners.get((function, eid)) == {dag.name}]
            if len(exclusive) < len(located):
                doomed += [(function, eid) for eid in exclusive]
        return doomed

    def _unpin(self, function: str, eid: ExecutorId, out: list[SchedulerInstruction]) -> None:
        self._counters["unpins_sent"] += 1
        self._remember(function, f"unpinned at {location_string(eid)}")
        out.append(PushInstruction(self._executor_endpoint(eid), UnpinFunction(function)))
        record = self._executors.get(eid)
        if record is not None:
            # Stop routing calls there now; the executor keeps it loaded while queued requests still need it.
            self._set_functions(eid, record.functions - {function})
        gossiped = self._gossiped.get(eid)
        if gossiped is not None and gossiped.pop(function, None) is not None:
            self._unindex(function, eid)
            if not gossiped:
                del self._gossiped[eid]

    def _set_functions(self, eid: ExecutorId, functions: set[str]) -> None:
        record = self._executors[eid]
        old = record.functions
        record.functions = functions
        for function in old - functions:
            self._unindex(function, eid)
            self._owners.pop((function, eid), None)
        for function in functions - old:
            self._locations.setdefault(function, set()).add(eid)

    def _unindex(self, function: str, eid: ExecutorId) -> None:
        located = self._locations.get(function)
        if located is not None:
            located.discard(eid)
            if not located:
                del self._locations[function]

    def _forget_gossiped(self, eid: ExecutorId) -> None:
        for function in self._gossiped.pop(eid, {}):
            self._unindex(function, eid)

    def _remove_executor(self, eid: ExecutorId, reason: str, out: list[SchedulerInstruction]) -> None:
        self._remember(location_string(eid), f"removed: {reason}")
        logger.info("forgetting executor %s: %s", location_string(eid), reason)
        self._set_functions(eid, set())
        del self._executors[eid]
        self._assignments.pop(eid, None)
        self._backoff.pop(eid, None)
        self._executor_lost(eid, reason, out)

    def _executor_lost(
        self, eid: ExecutorId, reason: str, out: list[SchedulerInstruction], only: set[str] | None = None
    ) -> None:
        """Moves creations' pins at ``eid`` to other executors: all of them (in flight or confirmed), or only the
        confirmed pins of the functions in ``only``."""
        subject = location_string(eid)
        for creation in list(self._creations.values()):
            if creation.committing:
                # Every pin is confirmed and the DAG is being stored; a lost replica shows up as NO_RESOURCES on
                # calls until the function is pinned again, exactly as for a DAG that already exists.
                continue
            lost = (
                [] if only is not None else [f for f, p in creation.attempts.items() if self._pins[p].executor == eid]
            )
            lost += [f for f, placed in creation.placed.items() if placed == eid and (only is None or f in only)]
            for function in lost:
                pin_id = creation.attempts.pop(function, None)
                if pin_id is not None:
                    self._abandon(self._pins[pin_id])
                if creation.placed.get(function) == eid:
                    del creation.placed[function]
                    creation.fresh.discard(function)
                    owners = self._owners.get((function, eid))
                    if owners is not None:
                        owners.discard(creation.dag.name)
                        if not owners:
                            del self._owners[(function, eid)]
                creation.rejected.setdefault(function, set()).add(eid)
                creation.last_refusal = f"{subject} was lost: {reason}"
            for function in lost:
                if creation.dag.name not in self._creations:
                    break  # aborted while moving an earlier function
                if not self._pin_next(creation, function, out):
                    self._abort_creation(creation, self._no_pin_candidate(creation, function), out)

    def _candidate(self, eid: ExecutorId) -> ExecutorCandidate:
        record = self._executors.get(eid)
        backed_off = eid in self._backoff and self._now - self._backoff[eid] < self.policy.options.backoff_period
        return ExecutorCandidate(
            eid,
            pinned=len(record.functions) if record is not None else 0,
            recent_assignments=self._recent_assignments(eid),
            backed_off=backed_off,
            queued=self._queued(eid),
        )

    def _recent_assignments(self, eid: ExecutorId) -> int:
        window = self._assignments.get(eid)
        if window is None:
            return 0
        while window and window[0] <= self._now - self.policy.options.load_window:
            window.popleft()
        return len(window)

    def _assign(self, eid: ExecutorId) -> None:
        window = self._assignments.get(eid)
        if window is None:
            # One more than the shedding limit is all the policy needs to see that an executor is overloaded.
            window = self._assignments[eid] = deque(maxlen=self.policy.options.shed_limit + 1)
        window.append(self._now)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _executor_endpoint(self, eid: ExecutorId) -> str:
        return self.config.ports.executor_control_endpoint(eid[0], eid[1])

    def _reply(self, request_id: int, reply: Reply, out: list[SchedulerInstruction]) -> None:
        self._open_requests.discard(request_id)
        out.append(ReplyInstruction(request_id, reply))

    def _fail(self, request_id: int, error: CloudburstError, out: list[SchedulerInstruction]) -> None:
        # A fresh response per error (the original mutated one shared object).
        self._reply(request_id, failure_response(error), out)

    def _read(self, op: _KvsOp, read_keys: tuple[str, ...], out: list[SchedulerInstruction]) -> None:
        token = self._token(op)
        out.append(KvsReadInstruction(token, read_keys))

    def _write(self, op: _KvsOp, items: Mapping[str, Lattice], out: list[SchedulerInstruction]) -> None:
        token = self._token(op)
        out.append(KvsWriteInstruction(token, items))

    def _token(self, op: _KvsOp) -> int:
        self._next_token += 1
        self._ops[self._next_token] = op
        return self._next_token

    def _remember(self, subject: str, what: str) -> None:
        self._story.append((subject, what, self._now))

    def _reporter(self) -> str:
        return f"scheduler:{self.config.host}"


def _connect_answer(kvs_routing: str) -> str:
    try:
        endpoint = parse_endpoint(kvs_routing)
    except TransportError:
        return kvs_routing
    return endpoint.host if endpoint.port == DEFAULT_KVS_ROUTING_PORT else str(endpoint)


def _utf8_members(index: SetLattice | None) -> list[str]:
    names = []
    for member in index.values if index is not None else ():
        try:
            names.append(member.decode())
        except UnicodeDecodeError:
            logger.warning("ignoring a non-UTF-8 entry in a KVS index")
    return names


def _function_names(index: SetLattice | None) -> list[str]:
    """Function names (without the ``funcs/`` prefix) listed in the function index."""
    return [
        key.removeprefix(keys.FUNCTION_PREFIX)
        for key in _utf8_members(index)
        if key.startswith(keys.FUNCTION_PREFIX) and key != keys.FUNCTION_INDEX
    ]


def _inherit_output_keys(call: DagCall) -> DagCall:
    """Gives each continuation without an ``output_key`` its caller's, so the result lands where the first caller
    was told to look (the original wrote it under the request id while the client polled its output key)."""
    continuation = call.continuation
    if continuation is None or continuation.call is None:
        return call
    following = continuation.call
    if not following.output_key and call.output_key:
        following = replace(following, output_key=call.output_key)
    return replace(call, continuation=replace(continuation, call=_inherit_output_keys(following)))


def _final_key(call: DagCall, schedule_id: str) -> str:
    """Where the final result of a (possibly chained) call lands: the last call's output key, else the id."""
    last = call
    while last.continuation is not None and last.continuation.call is not None:
        last = last.continuation.call
    return last.output_key or schedule_id
