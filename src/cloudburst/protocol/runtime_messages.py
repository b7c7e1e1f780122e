"""Typed messages of the function runtime, mirroring ``cloudburst.proto`` and ``internal.proto``.

Schedulers, executors and clients handle these; :mod:`cloudburst.protocol.codec` converts them to and from
bytes. Enum values equal the wire values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cloudburst.lattices import VectorClock
from cloudburst.protocol.messages import ConsistencyType, SerializerType
from cloudburst.protocol.trigger_messages import TriggerFiring

#: The pseudo-source of the trigger that starts a DAG's source functions.
BEGIN = "BEGIN"
#: How many times a request may run again when it does not say (as Ray's task retries).
DEFAULT_MAX_RETRIES = 3


class ExecutionType(enum.IntEnum):
    """How a DAG function consumes its triggers."""

    REGULAR = 0
    MULTIEXEC = 1


class ErrorCode(enum.IntEnum):
    """Why a scheduler refused a request (``CloudburstError`` on the wire)."""

    NO_CLOUDBURST_ERROR = 0
    FUNC_NOT_FOUND = 1
    NOT_PINNED = 2
    EXECUTION_ERROR = 3
    NO_SUCH_DAG = 4
    NO_RESOURCES = 5
    DAG_ALREADY_EXISTS = 6
    INVALID_DAG = 7
    INVALID_REQUEST = 8


class ResultDelivery(enum.IntEnum):
    """How a result reaches its caller; see ``cloudburst.proto``."""

    LEGACY = 0
    NOTIFY_AND_STORE = 1
    NOTIFY_ONLY = 2


class ExecutorType(enum.IntEnum):
    """The kind of executor (GPU executors only take GPU functions)."""

    CPU = 0
    GPU = 1


def _frozen_map(mapping: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class EncodedValue:
    """A serialized argument or result: the ``Value`` message."""

    body: bytes
    serializer: SerializerType


Arguments = tuple[EncodedValue, ...]


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of one key."""

    key: str
    vector_clock: VectorClock


@dataclass(frozen=True, slots=True)
class Function:
    """A function registration: ``body`` is a serialized ``Value`` of the callable or ``(cls, init_args)``."""

    name: str
    body: bytes


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A one-shot call of a registered function."""

    name: str
    arguments: Arguments = ()
    request_id: int = 0
    response_key: str = ""
    consistency: ConsistencyType = ConsistencyType.NORMAL
    locations: tuple[str, ...] = ()
    response_address: str = ""
    delivery: ResultDelivery = ResultDelivery.LEGACY
    function_version: int = 0
    references: tuple[str, ...] = ()
    #: A storage trigger's run: the arguments are the firing's key and value, and the executor acknowledges the
    #: run to the KVS instead of delivering a result.
    trigger: TriggerFiring | None = None
    #: The host of the scheduler that placed the call, which the executor tells when the call is done.
    placed_by: str = ""
    #: When the caller stops waiting (wall seconds since the epoch; 0: never).
    deadline: float = 0.0
    #: How many times the call may run again if its executor is lost (``None``: the scheduler's default).
    max_retries: int | None = None
    #: Which run of the call this is, from 1.
    attempt: int = 1
    #: Exceptions that run the call again (within ``max_retries``): qualified class names, subclasses included
    #: (see :mod:`cloudburst.protocol.exception_names`).
    retry_exceptions: tuple[str, ...] = ()
    #: When the request was first placed (microseconds since the epoch; 0: not yet): every run stamps its LWW writes
    #: from it (see :class:`cloudburst.clock.RequestTimestamps`).
    stamp: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """A DAG edge: ``source``'s result flows into ``sink``."""

    source: str
    sink: str


@dataclass(frozen=True, slots=True)
class FunctionReference:
    """A function's place in a DAG."""

    name: str
    type: ExecutionType = ExecutionType.REGULAR
    invalid_results: tuple[bytes, ...] = ()
    gpu: bool = False
    batching: bool = False


@dataclass(frozen=True, slots=True)
class Dag:
    """A registered composition of functions."""

    name: str
    functions: tuple[FunctionReference, ...]
    connections: tuple[Link, ...] = ()
    colocated: tuple[str, ...] = ()

    def reference(self, function: str) -> FunctionReference | None:
        """The DAG's reference to ``function``, or ``None`` if it is not in the DAG."""
        return next((ref for ref in self.functions if ref.name == function), None)

    def upstream(self, function: str) -> tuple[str, ...]:
        """The functions feeding ``function``, in edge order (the order fan-in arguments are passed in)."""
        return tuple(link.source for link in self.connections if link.sink == function)

    def downstream(self, function: str) -> tuple[str, ...]:
        """The functions ``function`` feeds, in edge order."""
        return tuple(link.sink for link in self.connections if link.source == function)

    def descendants(self, function: str) -> tuple[str, ...]:
        """Every function downstream of ``function``, directly or not, nearest first."""
        found: dict[str, None] = {}
        frontier = list(self.downstream(function))
        while frontier:
            name = frontier.pop(0)
            if name not in found:
                found[name] = None
                frontier.extend(self.downstream(name))
        return tuple(found)

    def depth(self, function: str) -> int:
        """How many functions the longest path from a source to ``function`` passes before it (0 for a source)."""
        depths: dict[str, int] = {}

        def visit(name: str) -> int:  # memoized: a chain of diamonds would otherwise take exponential time
            if name not in depths:
                upstream = self.upstream(name)
                depths[name] = 1 + max(visit(source) for source in upstream) if upstream else 0
            return depths[name]

        return visit(function)

    def sources(self) -> tuple[str, ...]:
        """The functions with no upstream, in DAG order."""
        sinks = {link.sink for link in self.connections}
        return tuple(ref.name for ref in self.functions if ref.name not in sinks)


@dataclass(frozen=True, slots=True)
class Continuation:
    """Runs DAG ``name`` on the result of the DAG request ``id``."""

    name: str
    id: str = ""
    result: bytes = b""
    call: DagCall | None = None


@dataclass(frozen=True, slots=True)
class DagCall:
    """A request to run a registered DAG."""

    name: str
    function_args: Mapping[str, Arguments] = field(default_factory=dict)
    response_address: str = ""
    consistency: ConsistencyType = ConsistencyType.NORMAL
    output_key: str = ""
    client_id: str = ""
    continuation: Continuation | None = None
    delivery: ResultDelivery = ResultDelivery.LEGACY
    references: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: As in :class:`FunctionCall` (``retry_exceptions`` apply to every function).
    deadline: float = 0.0
    max_retries: int | None = None
    retry_exceptions: tuple[str, ...] = ()
    stamp: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "function_args", _frozen_map(self.function_args))
        object.__setattr__(self, "references", _frozen_map(self.references))


@dataclass(frozen=True, slots=True)
class GenericResponse:
    """A scheduler's answer to a client request or an executor's answer to a pin."""

    success: bool
    response_id: str = ""
    error: ErrorCode = ErrorCode.NO_CLOUDBURST_ERROR
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class FunctionLease:
    """Where one-shot calls of ``function`` may go straight to, for ``ttl`` seconds; or why none may.

    Attributes:
        executors: Control endpoints of executors that take the calls (empty on failure).
        error: Why the lease was refused (with ``error_message``); ``NO_CLOUDBURST_ERROR`` when granted.
        queued: Per executor: calls queued or running there, as the scheduler knew when it granted the lease.
        pinned: Per executor: whether it hosts DAG functions (one-shot calls go to the others first).
        incarnations: Per executor: its incarnation, which a restart changes.
    """

    function: str
    function_version: int = 0
    executors: tuple[str, ...] = ()
    ttl: float = 0.0
    error: ErrorCode = ErrorCode.NO_CLOUDBURST_ERROR
    error_message: str = ""
    queued: tuple[int, ...] = ()
    pinned: tuple[bool, ...] = ()
    incarnations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DagLease:
    """Where requests of a registered DAG may go straight to, for ``ttl`` seconds; or why none may.

    Attributes:
        dag: The DAG (its caller builds the schedules from it).
        functions: Per function, in the DAG's order, the executors it is pinned at, with their loads and
            incarnations (empty on failure).
        error: Why the lease was refused (with ``error_message``); ``NO_CLOUDBURST_ERROR`` when granted.
    """

    dag: Dag
    functions: tuple[FunctionLease, ...] = ()
    ttl: float = 0.0
    error: ErrorCode = ErrorCode.NO_CLOUDBURST_ERROR
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class DagSchedule:
    """One function's share of a DAG request: where everything runs and the fixed arguments."""

    id: str
    dag: Dag
    target_function: str
    triggers: tuple[str, ...]
    locations: Mapping[str, str]
    arguments: Mapping[str, Arguments] = field(default_factory=dict)
    consistency: ConsistencyType = ConsistencyType.NORMAL
    response_address: str = ""
    output_key: str = ""
    client_id: str = ""
    start_time: float = 0.0
    continuation: Continuation | None = None
    delivery: ResultDelivery = ResultDelivery.LEGACY
    references: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: When the caller stops waiting (wall seconds since the epoch; 0: never).
    deadline: float = 0.0
    #: The scheduler that scheduled the request, which the sink tells when it is done.
    placed_by: str = ""
    #: As in :class:`DagCall`: how often a function may run again after raising one of ``retry_exceptions``.
    max_retries: int | None = None
    retry_exceptions: tuple[str, ...] = ()
    #: As in :class:`FunctionCall`.
    stamp: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "locations", _frozen_map(self.locations))
        object.__setattr__(self, "arguments", _frozen_map(self.arguments))
        object.__setattr__(self, "references", _frozen_map(self.references))


def schedule_of_call(
    call: DagCall,
    schedule_id: str,
    dag: Dag,
    function: str,
    locations: Mapping[str, str],
    start_time: float,
    placed_by: str = "",
) -> DagSchedule:
    """``function``'s share of request ``schedule_id`` of ``call``, as whoever placed it (a scheduler, or a client
    under the DAG's lease when ``placed_by`` is empty) sends it to the function's executor."""
    return DagSchedule(
        id=schedule_id,
        dag=dag,
        target_function=function,
        triggers=dag.upstream(function) or (BEGIN,),
        locations=locations,
        arguments=call.function_args,
        consistency=call.consistency,
        response_address=call.response_address,
        output_key=call.output_key,
        client_id=call.client_id,
        start_time=start_time,
        continuation=call.continuation,
        delivery=call.delivery,
        references=call.references,
        deadline=call.deadline,
        placed_by=placed_by,
        max_retries=call.max_retries,
        retry_exceptions=call.retry_exceptions,
        stamp=call.stamp,
    )


@dataclass(frozen=True, slots=True)
class DagTrigger:
    """Tells a DAG function that one upstream function finished, with its result as arguments."""

    id: str
    target_function: str
    source: str
    arguments: Arguments = ()
    version_locations: Mapping[str, tuple[KeyVersion, ...]] = field(default_factory=dict)
    dependencies: tuple[KeyVersion, ...] = ()
    #: Keys whose version a causal request fixed by reading or writing them.
    observed: tuple[str, ...] = ()
    #: A causal request's last write of each key it wrote.
    written: tuple[KeyVersion, ...] = ()
    #: The target's schedule, for a request sent straight to its DAG's sources: no scheduler sent it one.
    schedule: DagSchedule | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "version_locations", _frozen_map(self.version_locations))


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Stop a request: a one-shot call's response key, or a DAG request's id or output key."""

    request_id: str


@dataclass(frozen=True, slots=True)
class ThreadStatus:
    """An executor's report of itself."""

    ip: str
    tid: int
    functions: tuple[str, ...] = ()
    utilization: float = 0.0
    running: bool = True
    type: ExecutorType = ExecutorType.CPU
    incarnation: str = ""
    #: The departure has drained and the executor is exiting: its last report (``running`` is False too).
    departed: bool = False
    #: One-shot calls and DAG runs queued or running.
    queued: int = 0
    #: Response keys of calls placed by the receiving scheduler that are done.
    finished: tuple[str, ...] = ()
    #: Sent by the node's supervisor: the process died (``running`` is False too), with whatever it held.
    crashed: bool = False
    #: Schedule ids of DAG requests placed by the receiving scheduler that could not run here (their function is
    #: not pinned here: the executor restarted since), for the scheduler to run again elsewhere.
    refused: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FunctionStatistics:
    """Per-function call counts and runtimes for one report period."""

    name: str
    call_count: int = 0
    runtimes: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class DagStatistics:
    """Per-DAG runtimes, inter-arrival times and call counts for one report period."""

    name: str
    runtimes: tuple[float, ...] = ()
    interarrivals: tuple[float, ...] = ()
    call_count: int = 0
    #: Requests sent straight to the reporting executor's first source of the DAG, which no scheduler counted.
    direct_calls: int = 0


@dataclass(frozen=True, slots=True)
class ExecutorStatistics:
    """Statistics for one report period, from an executor or a scheduler."""

    functions: tuple[FunctionStatistics, ...] = ()
    dags: tuple[DagStatistics, ...] = ()
    reporter: str = ""


@dataclass(frozen=True, slots=True)
class FunctionLocation:
    """Where one replica of a pinned function runs."""

    name: str
    ip: str
    tid: int


@dataclass(frozen=True, slots=True)
class SchedulerStatus:
    """Gossip between schedulers: known DAGs, deleted DAGs and function locations."""

    dags: tuple[str, ...] = ()
    function_locations: tuple[FunctionLocation, ...] = ()
    deleted_dags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PinFunction:
    """Asks an executor to load and keep a function; the reply goes to ``response_address``."""

    name: str
    response_address: str
    request_id: str
    batching: bool = False


@dataclass(frozen=True, slots=True)
class UnpinFunction:
    """Asks an executor to drop a pinned function (once no request still needs it)."""

    name: str


@dataclass(frozen=True, slots=True)
class SelfDepart:
    """Asks an executor to stop taking work, finish what it has, and exit."""


@dataclass(frozen=True, slots=True)
class CallResult:
    """A result (or an error, as serializer ``ERROR``) pushed to the caller."""

    id: str
    value: EncodedValue


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """A scheduler's view of the cluster, for ``cloudburst status``."""

    executors: tuple[ThreadStatus, ...] = ()
    dags: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()


ExecutorRequest = PinFunction | UnpinFunction | FunctionCall | DagSchedule | DagTrigger | SelfDepart
SchedulerMessage = ThreadStatus | GenericResponse | Continuation | SchedulerStatus | ExecutorStatistics | TriggerFiring
