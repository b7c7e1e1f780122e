"""Loading registered functions and running user code, with every outcome turned into a value, never a crash.

A registration is an LWW register under ``funcs/<name>`` holding a serialized ``Value`` of either a callable or a
``(class, init_args)`` pair. A class is instantiated as ``cls(user_library, *init_args)`` and its bound ``run`` is
the function, so the instance keeps state between calls.

* Pinned functions are loaded once per pin and kept until unpinned, so a pinned class has one instance.
* One-shot functions are cached separately (pins and one-shot calls never interfere; the original kept both in one
  cache), keyed by name with the registration's LWW timestamp as version; a call naming another version reloads it,
  so re-registering takes effect (the original kept running the first version it loaded). The cache is a small LRU.

Arguments are decoded, tuples are spliced into the positional list (the original's ``_exec_func_normal``: an
upstream tuple result reaches the next function as several arguments), and references are replaced by the KVS values
they name, waiting with back-off for keys that do not exist yet, up to the KVS deadline (the original retried at
once, without end).
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloudburst.clock import Clock, RequestTimestamps, SystemClock
from cloudburst.config import ExecutorConfig
from cloudburst.errors import (
    Cancelled,
    CausalModeUnavailable,
    CloudburstError,
    DeadlineExceeded,
    DecodeError,
    FunctionNotFound,
    InvalidRequest,
    KvsError,
    NotPinned,
    RemoteExecutionError,
)
from cloudburst.executor.causal import CausalContext, CausalSession, SessionMetadata, latest_value
from cloudburst.executor.causal_io import CausalDataClient
from cloudburst.executor.interrupts import Interrupter
from cloudburst.executor.state import (
    DagRunItem,
    EncodedResult,
    OutputForm,
    RunDagInstruction,
    RunFailed,
    RunOutcome,
    RunSucceeded,
)
from cloudburst.executor.user_library import UserLibrary
from cloudburst.keys import function_key
from cloudburst.kvs.client import KvsClient
from cloudburst.lattices import LwwLattice, MultiKeyCausalLattice, VectorClock
from cloudburst.protocol import values
from cloudburst.protocol.codec import StorableLattice, decode_lattice
from cloudburst.protocol.exception_names import matches
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import (
    DEFAULT_MAX_RETRIES,
    Arguments,
    FunctionCall,
    KeyVersion,
    ResultDelivery,
)
from cloudburst.protocol.trigger_messages import TriggerFiring
from cloudburst.retry import RetryPolicy
from cloudburst.shared.reference import CloudburstReference

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Serving:
    """What an invocation serves.

    Attributes:
        requests: The ids a cancellation may name its requests by.
        deadline: When their callers stop waiting (wall seconds; 0: never).
        retry_exceptions: Exceptions that run it again (qualified class names).
        retries: How many times at most.
        stamp: When its request was first placed (microseconds; 0: its writes are stamped by this executor).
        depth: Its function's depth in the request's DAG.
        request: Its request's key.
    """

    requests: tuple[str, ...]
    deadline: float
    retry_exceptions: tuple[str, ...] = ()
    retries: int = 0
    stamp: int = 0
    depth: int = 0
    request: str = ""

    def timestamps(self) -> RequestTimestamps | None:
        """Fresh timestamps for one run's LWW writes: each run of the request repeats the same ones."""
        return RequestTimestamps(self.stamp, self.depth, self.request) if self.stamp else None


_IDLE = _Serving((), 0.0)

#: One-shot functions kept loaded (least recently used evicted).
ONE_SHOT_CACHE_SIZE = 64

UserFunction = Callable[..., Any]


# -- pure helpers ----------------------------------------------------------------------------------------------


def flatten_arguments(arguments: Iterable[object]) -> list[object]:
    """Splices tuple arguments into the positional list, as the original runtime does.

    An upstream function's tuple result (or a continuation's) arrives as one argument and must reach the function
    as several. Only exact tuples are spliced; named tuples and other sequences pass through.
    """
    flat: list[object] = []
    for argument in arguments:
        if type(argument) is tuple:
            flat.extend(argument)
        else:
            flat.append(argument)
    return flat


def collect_references(arguments: Sequence[object]) -> list[CloudburstReference]:
    """The references to resolve: top-level ones, or those inside the lists when every argument is a list.

    The second case is how batched calls carry references (argument ``i`` is the list of every request's ``i``-th
    argument); the original applies it to any call whose arguments are all lists, and so do we.
    """
    if arguments and all(type(argument) is list for argument in arguments):
        return [item for argument in arguments for item in argument if isinstance(item, CloudburstReference)]  # type: ignore[attr-defined]
    return [argument for argument in arguments if isinstance(argument, CloudburstReference)]


def substitute_references(arguments: Sequence[object], resolved: Mapping[tuple[str, bool], object]) -> list[object]:
    """Replaces each reference found by :func:`collect_references` by its value in ``resolved``.

    Args:
        arguments: The positional arguments.
        resolved: Values by ``(key, deserialize)``.
    """

    def value(item: object) -> object:
        if isinstance(item, CloudburstReference):
            return resolved[(item.key, item.deserialize)]
        return item

    if arguments and all(type(argument) is list for argument in arguments):
        return [[value(item) for item in argument] for argument in arguments]  # type: ignore[attr-defined]
    return [value(argument) for argument in arguments]


def transpose_batch(rows: Sequence[Sequence[object]]) -> list[list[object]]:
    """Turns one argument list per request into one list per argument position, for a batched call.

    Raises:
        ValueError: The requests have different numbers of arguments.
    """
    counts = {len(row) for row in rows}
    if len(counts) > 1:
        raise ValueError(f"the batched requests have different argument counts {sorted(counts)}")
    width = counts.pop() if counts else 0
    return [[row[position] for row in rows] for position in range(width)]


def batch_result_problem(result: object, count: int) -> str | None:
    """Why a batching function's return value cannot be split into ``count`` results, or ``None`` if it can."""
    rule = "it must return a list with one result per request"
    if type(result) is not list:
        return f"returned a {type(result).__name__!r}; {rule}"
    if len(result) != count:
        return f"returned {len(result)} results for a batch of {count} requests; {rule}"
    return None


# -- the runtime -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoadedFunction:
    call: UserFunction
    version: int


#: Pauses between reads of a referenced key that does not exist yet. A reference usually names the result of a
#: call a moment from finishing (the future of the call before), so the first re-reads come soon.
REFERENCE_WAIT = RetryPolicy(min_backoff=0.0003, max_backoff=0.05)


class FunctionRuntime:
    """Loads functions from the KVS and runs them; every failure becomes a :class:`RunFailed` with full context.

    Args:
        config: The executor's configuration (identity for error context, KVS deadline).
        kvs: The executor's KVS client.
        library: Passed as the first argument of every function.
        clock: Time source for reference deadlines.
        retry: Back-off between reads of referenced keys that do not exist yet.
        causal: Reads and writes of SINGLE and MULTI requests; without it such requests fail with
            :class:`CausalModeUnavailable`.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        kvs: KvsClient,
        library: UserLibrary,
        *,
        causal: CausalDataClient | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        interrupter: Interrupter | None = None,
    ) -> None:
        self._config = config
        self._interrupter = interrupter
        #: What the running invocation serves: for cancellations, deadlines and retries of program errors.
        self._serving = _IDLE
        self._kvs = kvs
        self._causal = causal
        self._library = library
        self._clock = clock or SystemClock()
        self._retry = retry or RetryPolicy()
        #: Runs of a function again after it raised an exception its caller asked to retry.
        self.exception_retries = 0
        self._node = f"{config.host}:{config.tid}"
        self._pinned: dict[str, UserFunction] = {}
        self._one_shot: OrderedDict[str, _LoadedFunction] = OrderedDict()

    # -- loading -----------------------------------------------------------------------------------------------

    def load_pinned(self, name: str) -> None:
        """Loads function ``name`` for DAG requests, instantiating a registered class once.

        Raises:
            FunctionNotFound: Nothing is registered under ``name``.
            RemoteExecutionError: The class's constructor raised.
            CloudburstError: The registration cannot be read or is not a function (subclasses say which).
        """
        body, _ = self._fetch(name)
        self._pinned[name] = self._instantiate(name, body)

    def unload_pinned(self, name: str) -> None:
        """Forgets a pinned function (and its instance)."""
        self._pinned.pop(name, None)

    def pinned(self) -> tuple[str, ...]:
        """The pinned functions currently loaded."""
        return tuple(self._pinned)

    def _fetch(self, name: str) -> tuple[object, int]:
        key = function_key(name)
        lattice = self._kvs.get(key, timeout=self._config.kvs_timeout)
        if lattice is None:
            raise FunctionNotFound(f"no function is registered as {name!r}", function=name, node=self._node)
        if not isinstance(lattice, LwwLattice):
            raise DecodeError(f"registration of {name!r}", f"{key!r} holds a {type(lattice).__name__}, not LWW")
        return values.from_lattice(lattice, f"registration of {name!r}"), lattice.timestamp

    def _instantiate(self, name: str, body: object) -> UserFunction:
        if type(body) is tuple and len(body) == 2 and isinstance(body[0], type):
            cls, init_args = body
            # A single init argument may be registered bare; the original crashed on it.
            arguments = init_args if type(init_args) is tuple else (init_args,)
            try:
                instance = cls(self._library, *arguments)
            except (Exception, SystemExit) as error:
                raise self._user_error(error, traceback.format_exc(), name, None, None) from None
            run = getattr(instance, "run", None)
            if not callable(run):
                raise InvalidRequest(
                    f"class {cls.__qualname__} registered as {name!r} has no run method", function=name
                )
            return run  # type: ignore[no-any-return]
        if callable(body):
            return body
        raise InvalidRequest(
            f"{name!r} is registered as a {type(body).__name__}, not a function or a (class, init_args) pair",
            function=name,
        )

    def _one_shot_function(self, name: str, version: int) -> UserFunction:
        cached = self._one_shot.get(name)
        # The version is a minimum: a scheduler that has not yet heard of a newer registration must not make
        # executors that already loaded it reload the old one on every call.
        if cached is not None and cached.version >= version:
            self._one_shot.move_to_end(name)
            return cached.call
        body, stamp = self._fetch(name)
        if version and stamp != version:
            logger.info("call of %r asked for version %d; the KVS has %d", name, version, stamp)
        loaded = _LoadedFunction(self._instantiate(name, body), stamp)
        self._one_shot[name] = loaded
        self._one_shot.move_to_end(name)
        while len(self._one_shot) > ONE_SHOT_CACHE_SIZE:
            self._one_shot.popitem(last=False)
        return loaded.call

    # -- running -----------------------------------------------------------------------------------------------

    def run_one_shot(self, call: FunctionCall) -> RunOutcome:
        """Runs a one-shot call to completion; the outcome's result is what the caller gets.

        A call cancelled or past its deadline before it starts fails at once; one cancelled or past its deadline
        while it runs is stopped (see :mod:`cloudburst.executor.interrupts`).
        """
        refusal = self._refusal((call.response_key,), call.deadline)
        if refusal is not None:
            return RunFailed(self._with_context(refusal, call.name, None, call.response_key or None))
        self._library.legacy_forms = call.delivery == ResultDelivery.LEGACY and call.trigger is None
        retries = DEFAULT_MAX_RETRIES if call.max_retries is None else call.max_retries
        self._serving = _Serving(
            (call.response_key,),
            call.deadline,
            call.retry_exceptions,
            retries - call.attempt + 1,
            call.stamp if call.trigger is None else 0,
            request=call.response_key,
        )
        try:
            return self._run_one_shot(call)
        finally:
            self._library.legacy_forms = False
            self._serving = _IDLE
            self._library.request_timestamps = None
            self._library.end_invocation()

    def _run_one_shot(self, call: FunctionCall) -> RunOutcome:
        request_id = call.response_key or None
        context = None
        if call.consistency != ConsistencyType.NORMAL:
            context = CausalContext(call.consistency, call.response_key or f"one-shot:{uuid.uuid4().hex}")
        arguments = call.arguments
        try:
            function = self._one_shot_function(call.name, call.function_version)
            if call.trigger is not None:
                arguments = _trigger_arguments(call.trigger)
        except CloudburstError as error:
            return RunFailed(self._with_context(error, call.name, None, request_id))
        return self._run(function, call.name, None, request_id, arguments, context, OutputForm.RESULT, ())

    def run_dag(self, run: RunDagInstruction) -> tuple[RunOutcome, ...]:
        """Runs a pinned function for the run's items: once per item, or once for all when batching.

        Returns:
            One outcome per item, in item order.
        """
        requests = tuple(request for item in run.items for request in item.names)
        deadlines = [item.deadline for item in run.items if item.deadline]
        deadline = min(deadlines) if deadlines else 0.0
        refusal = self._refusal(requests, deadline)
        if refusal is not None:
            # Cancelled or expired before it started: none of its items runs, and nothing downstream either.
            return tuple(
                RunFailed(self._with_context(refusal, run.function, item.dag, item.request_id)) for item in run.items
            )
        # Our readers load the original forms too, so one original client's request in a batch decides.
        self._library.legacy_forms = any(item.legacy for item in run.items)
        # A batch retries program errors only as all its items ask.
        policies = {(item.retry_exceptions, item.retries) for item in run.items}
        names, retries = policies.pop() if len(policies) == 1 else ((), 0)
        # A batch's writes serve several requests: this executor's clock stamps them.
        (first, *others) = run.items
        stamp = first.stamp if not others else 0
        self._serving = _Serving(requests, deadline, names, retries, stamp, first.depth, first.result_key)
        try:
            return self._run_dag(run)
        finally:
            self._library.legacy_forms = False
            self._serving = _IDLE
            self._library.request_timestamps = None
            self._library.end_invocation()

    def _run_dag(self, run: RunDagInstruction) -> tuple[RunOutcome, ...]:
        function = self._pinned.get(run.function)
        if function is None:
            return tuple(
                RunFailed(
                    NotPinned(
                        f"function {run.function!r} is not loaded at this executor",
                        function=run.function,
                        dag=item.dag,
                        node=self._node,
                        request_id=item.request_id,
                    )
                )
                for item in run.items
            )
        outcomes: dict[int, RunOutcome] = {}
        normal: list[tuple[int, DagRunItem]] = []
        for index, item in enumerate(run.items):
            if item.causal is None:
                normal.append((index, item))
                continue
            outcomes[index] = self._run(
                function,
                run.function,
                item.dag,
                item.request_id,
                item.arguments,
                item.causal,
                item.output,
                item.invalid_results,
            )
        # A batch runs as one call, so its items share what they know of upstream writes.
        groups = [normal] if run.batching else [[entry] for entry in normal]
        for group in groups:
            outcomes.update(self._with_writes(group, function, run))
        return tuple(outcomes[index] for index in range(len(run.items)))

    def _run_normal(
        self, function: UserFunction, run: RunDagInstruction, entries: list[tuple[int, DagRunItem]]
    ) -> dict[int, RunOutcome]:
        outcomes: dict[int, RunOutcome] = {}
        prepared: list[tuple[int, list[object]]] = []
        for index, item in entries:
            try:
                prepared.append((index, self._prepare(item.arguments)))
            except CloudburstError as error:
                outcomes[index] = RunFailed(self._with_context(error, run.function, item.dag, item.request_id))
        if run.batching:
            outcomes.update(self._run_batch(function, run, prepared))
        else:
            for index, arguments in prepared:
                outcomes[index] = self._run_item(function, run.function, run.items[index], arguments)
        return outcomes

    def _with_writes(
        self, entries: list[tuple[int, DagRunItem]], function: UserFunction, run: RunDagInstruction
    ) -> dict[int, RunOutcome]:
        """Runs NORMAL items knowing the keys written upstream, and hands on every key written so far."""
        self._library.begin_request(key for _, item in entries for key in item.upstream_writes)
        try:
            outcomes = self._run_normal(function, run, entries)
        finally:
            written = self._library.end_request()
        if not written:
            return outcomes
        session = SessionMetadata({}, tuple(KeyVersion(key, VectorClock()) for key in written))
        return {
            index: replace(outcome, session=session) if isinstance(outcome, RunSucceeded) else outcome
            for index, outcome in outcomes.items()
        }

    def _run(
        self,
        function: UserFunction,
        name: str,
        dag: str | None,
        request_id: str | None,
        arguments: Arguments,
        context: CausalContext | None,
        output: OutputForm,
        invalid_results: tuple[bytes, ...],
    ) -> RunOutcome:
        """Runs one request, in its causal session when it has one (which a sink or one-shot call then ends)."""
        session = None
        try:
            if context is not None:
                if self._causal is None:
                    raise CausalModeUnavailable(
                        f"{context.consistency.name} consistency needs a node cache, and this executor has none"
                    )
                session = CausalSession(context.session_id, context.consistency, context.metadata)
            prepared = self._prepare(arguments, session, self._future_read_set(context))
        except CloudburstError as error:
            self._end_session(session, context)
            return RunFailed(self._with_context(error, name, dag, request_id))
        self._library.session = session
        try:
            result = self._invoke(function, prepared)
        except (Exception, SystemExit) as error:
            self._end_session(session, context)
            return RunFailed(self._user_error(error, traceback.format_exc(), name, dag, request_id))
        finally:
            self._library.session = None
        outcome = self._encode(result, output, invalid_results, name, dag, request_id)
        if session is None or context is None or not isinstance(outcome, RunSucceeded):
            self._end_session(session, context)
            return outcome
        if not context.sink:
            return replace(outcome, session=session.metadata())
        stored = False
        if context.output_key and outcome.valid:
            assert self._causal is not None
            try:
                self._causal.write(session, context.output_key, result)
            except CloudburstError as error:
                self._end_session(session, context)
                return RunFailed(self._with_context(error, name, dag, request_id))
            stored = True
        self._end_session(session, context)
        return replace(outcome, stored=stored)

    def _end_session(self, session: CausalSession | None, context: CausalContext | None) -> None:
        # Only the sink ends a DAG's session; a failed upstream function leaves it to expire at the caches.
        if session is not None and context is not None and context.sink and self._causal is not None:
            self._causal.end(session)

    def _future_read_set(self, context: CausalContext | None) -> tuple[str, ...]:
        """The keys declared read here or downstream, and those referenced in downstream functions' arguments (MULTI
        keeps versions of them, consistent with this function's reads)."""
        if context is None or context.consistency != ConsistencyType.MULTI:
            return ()
        keys: dict[str, None] = dict.fromkeys(context.declared_reads)
        for arguments in context.future_arguments:
            try:
                decoded = [values.decode(value, "downstream argument") for value in arguments]
            except CloudburstError:
                continue  # the downstream function reports its own bad argument
            for reference in collect_references(flatten_arguments(decoded)):
                keys[reference.key] = None
        return tuple(keys)

    def _run_item(self, function: UserFunction, name: str, item: DagRunItem, arguments: list[object]) -> RunOutcome:
        try:
            result = self._invoke(function, arguments)
        except (Exception, SystemExit) as error:
            return RunFailed(self._user_error(error, traceback.format_exc(), name, item.dag, item.request_id))
        return self._encode(result, item.output, item.invalid_results, name, item.dag, item.request_id)

    def _run_batch(
        self, function: UserFunction, run: RunDagInstruction, prepared: list[tuple[int, list[object]]]
    ) -> dict[int, RunOutcome]:
        if not prepared:
            return {}
        items = [(index, run.items[index]) for index, _ in prepared]

        def fail_all(message: str) -> dict[int, RunOutcome]:
            return {
                index: RunFailed(
                    RemoteExecutionError(
                        message, function=run.function, dag=item.dag, node=self._node, request_id=item.request_id
                    )
                )
                for index, item in items
            }

        try:
            columns = transpose_batch([arguments for _, arguments in prepared])
        except ValueError as error:
            return fail_all(f"cannot batch {run.function!r}: {error}")
        try:
            result = self._invoke(function, columns)
        except (Exception, SystemExit) as error:
            trace = traceback.format_exc()
            return {
                index: RunFailed(self._user_error(error, trace, run.function, item.dag, item.request_id))
                for index, item in items
            }
        problem = batch_result_problem(result, len(items))
        if problem is not None:
            return fail_all(f"batching function {run.function!r} {problem}")
        return {
            index: self._encode(value, item.output, item.invalid_results, run.function, item.dag, item.request_id)
            for (index, item), value in zip(items, result, strict=True)
        }

    def _invoke(self, function: UserFunction, arguments: Sequence[object]) -> Any:  # noqa: ANN401 - user data
        """Calls user code, stoppable by a cancellation of a request it serves or by its deadline, and again (after
        a back-off) when it raises an exception its caller asked to retry.

        Raises:
            Cancelled: A request it serves was cancelled while it ran.
            DeadlineExceeded: It ran past its deadline.
            BaseException: Whatever the user code raised, once no retry is left.
        """
        serving = self._serving
        attempt = 1
        while True:
            self._library.request_timestamps = serving.timestamps()
            try:
                if self._interrupter is None:
                    return function(self._library, *arguments)
                return self._interrupter.call(serving.requests, serving.deadline, function, self._library, *arguments)
            except (Cancelled, DeadlineExceeded):
                raise
            except Exception as error:
                pause = self._retry.backoff(attempt)
                now = self._clock.wall_ns() / 1e9
                in_time = not serving.deadline or now + pause < serving.deadline
                if attempt > serving.retries or not in_time or not matches(error, serving.retry_exceptions):
                    raise
                requests, retries = ", ".join(serving.requests), serving.retries
                logger.info("request %s raised %r; run again (retry %d of %d)", requests, error, attempt, retries)
                self.exception_retries += 1
                time.sleep(pause)
                attempt += 1

    def _refusal(self, requests: Sequence[str], deadline: float) -> CloudburstError | None:
        if self._interrupter is None:
            return None
        return self._interrupter.refusal(requests, deadline, self._clock.wall_ns() / 1e9)

    # -- arguments and results ---------------------------------------------------------------------------------

    def _prepare(
        self, arguments: Arguments, session: CausalSession | None = None, future_read_set: tuple[str, ...] = ()
    ) -> list[object]:
        decoded = [values.decode(value, f"argument {position}") for position, value in enumerate(arguments)]
        flat = flatten_arguments(decoded)
        references = collect_references(flat)
        if session is not None and (references or future_read_set):
            return substitute_references(flat, self._resolve_causally(references, session, future_read_set))
        if not references:
            return flat
        return substitute_references(flat, self._resolve(references))

    def _resolve_causally(
        self, references: list[CloudburstReference], session: CausalSession, future_read_set: tuple[str, ...]
    ) -> dict[tuple[str, bool], object]:
        """Resolves references in the session; a key holding a plain value (a call's result, say) is read plainly."""
        assert self._causal is not None
        keys = list(dict.fromkeys(reference.key for reference in references))
        found, not_causal = self._causal.read(session, keys, future_read_set)
        lattices: dict[str, StorableLattice] = self._wait_for_keys(list(not_causal)) if not_causal else {}
        missing = [key for key in keys if key not in lattices and found.get(key) is None]
        if missing:
            # Waiting for them to appear, as a NORMAL call does, would read outside the request's snapshot.
            raise KvsError(
                f"referenced key(s) {missing} do not exist in the request's causal snapshot", node=self._node
            )
        for key in keys:
            value = found.get(key)
            if value is not None:
                lattices[key] = value
        return self._unwrap(references, lattices, session)

    def _resolve(self, references: list[CloudburstReference]) -> dict[tuple[str, bool], object]:
        lattices = self._wait_for_keys(list(dict.fromkeys(reference.key for reference in references)))
        return self._unwrap(references, lattices)

    def _unwrap(
        self,
        references: list[CloudburstReference],
        lattices: Mapping[str, StorableLattice],
        session: CausalSession | None = None,
    ) -> dict[tuple[str, bool], object]:
        resolved: dict[tuple[str, bool], object] = {}
        for reference in references:
            lattice = lattices[reference.key]
            what = f"referenced key {reference.key!r}"
            if reference.deserialize and isinstance(lattice, MultiKeyCausalLattice):
                # The value causal_get returns, so a reference and a read of the same key agree.
                own = session.own_write(reference.key) if session is not None else None
                resolved[(reference.key, True)] = values.deserialize(latest_value(lattice, own), what)
            elif reference.deserialize:
                resolved[(reference.key, True)] = self._library.value_of(reference.key, lattice, what)
            else:
                resolved[(reference.key, False)] = lattice.reveal()
        return resolved

    def _wait_for_keys(self, keys: list[str]) -> dict[str, StorableLattice]:
        """Reads ``keys``, re-reading the missing ones with back-off until they exist or the deadline passes.

        A reference usually names the result of a call still running elsewhere, so "missing" means "not yet".

        Raises:
            DeadlineExceeded: Some key still does not exist at the deadline (the message names them).
        """
        timeout = self._config.kvs_timeout
        deadline = self._clock.now() + timeout
        found: dict[str, StorableLattice] = {}
        missing = keys
        attempt = 0
        while True:
            # A read near the deadline still gets a full attempt: a slow KVS is not a missing key.
            read_timeout = max(deadline - self._clock.now(), self._retry.attempt_timeout)
            answers = self._library.get_lattices(missing, timeout=read_timeout)
            found.update({key: lattice for key, lattice in answers.items() if lattice is not None})
            missing = [key for key in missing if key not in found]
            if not missing:
                return found
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"referenced key(s) {missing} did not appear in the KVS within {timeout:g} s", node=self._node
                )
            attempt += 1
            # The last pause ends at the deadline, so the last read happens then rather than a back-off earlier.
            time.sleep(min(REFERENCE_WAIT.backoff(attempt), remaining))

    def _encode(
        self,
        result: object,
        output: OutputForm,
        invalid_results: tuple[bytes, ...],
        function: str,
        dag: str | None,
        request_id: str | None,
    ) -> RunOutcome:
        try:
            if invalid_results and values.serialize(result) in invalid_results:
                return RunSucceeded(valid=False)
            if output is OutputForm.TRIGGER_ARGUMENTS:
                parts = result if type(result) is tuple else (result,)
                return RunSucceeded(arguments=tuple(values.encode(part) for part in parts))
            members = None
            if type(result) in (set, frozenset):
                members = tuple(sorted(values.serialize(member) for member in result))  # type: ignore[attr-defined]
            return RunSucceeded(result=EncodedResult(values.encode(result), members))
        except CloudburstError as error:
            return RunFailed(self._with_context(error, function, dag, request_id))

    def _with_context(
        self, error: CloudburstError, function: str, dag: str | None, request_id: str | None
    ) -> CloudburstError:
        error.function = error.function or function
        error.dag = error.dag or dag
        error.request_id = error.request_id or request_id
        error.node = error.node or self._node
        return error

    def _user_error(
        self, error: BaseException, trace: str, function: str, dag: str | None, request_id: str | None
    ) -> CloudburstError:
        """What the caller gets for an exception in user code: our own typed errors (a ``CausalConflict`` from
        ``causal_get``, a ``DeadlineExceeded`` from ``get``) as themselves, anything else wrapped."""
        if isinstance(error, CloudburstError):
            error.remote_traceback = error.remote_traceback or trace
            return self._with_context(error, function, dag, request_id)
        kind = type(error)
        return RemoteExecutionError(
            f"{kind.__name__}: {error}",
            f"{kind.__module__}.{kind.__qualname__}",
            function=function,
            dag=dag,
            node=self._node,
            request_id=request_id,
            remote_traceback=trace,
        )


def _trigger_arguments(firing: TriggerFiring) -> Arguments:
    """A trigger's run is called with the written key and the value as written."""
    what = f"value written to {firing.key!r}"
    lattice = decode_lattice(firing.lattice_type, firing.payload, what)
    return (values.encode(firing.key), values.lattice_argument(lattice, what))
