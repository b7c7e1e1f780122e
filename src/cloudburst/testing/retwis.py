"""A Retwis-like social feed, run as two-stage DAGs in any consistency mode, recording what each request read.

Users post replies to each other's latest posts and read their own timelines:

* ``retwis-post`` = ``retwis_pick`` -> ``retwis_publish``: read another user's timeline and its latest post (the
  post replied to), then the author's own timeline; write the new post, then append it to the author's timeline.
* ``retwis-read`` = ``retwis_scan`` -> ``retwis_check``: read a timeline and its latest posts; then, possibly on
  another node, read the timeline again, the posts again and the posts they reply to.
* ``retwis-edit`` = ``retwis_edit`` -> ``retwis_confirm``: read the author's profile, write a new one, read it
  again (it must be the write), then write a status depending on it; then, possibly on another node, read the
  status and the profile (both must be the request's writes). It probes read-your-writes within a function and
  across nodes, and the read-write-reread-write cascade.

Every value names its write and that write's direct causes (what its request had read and written before), so
:class:`~cloudburst.testing.causal_checker.CausalChecker` can tell, from the records alone, whether a request saw
an effect without its cause, went backwards between stages, or read a key twice at different versions.

Keys are namespaced per run, so NORMAL (LWW) and causal runs never share keys of different lattice types.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudburst.client.connection import Connection
from cloudburst.errors import CausalConflict, CloudburstError, DagAlreadyExists
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import DagCall
from cloudburst.testing.causal_checker import ObservedRead, ObservedWrite, RequestRecord

#: Posts a timeline keeps (the newest).
TIMELINE_LENGTH = 20
#: Posts a read request looks at.
POSTS_READ = 3

#: ``(stage, key, [(write id, [(cause key, cause write id), ...]), ...], own writes of the key before the read)``
#: per read.
_Reads = list[tuple[int, str, list[tuple[str, list[tuple[str, str]]]], list[str]]]


def _siblings(lib: Any, mode: str, key: str) -> list[dict[str, Any]]:  # noqa: ANN401 - the user library
    if mode == "NORMAL":
        value = lib.get(key)
        return [] if value is None else [value]
    return list(lib.causal_siblings(key))


def _observe(
    lib: Any,  # noqa: ANN401
    mode: str,
    stage: int,
    key: str,
    reads: _Reads,
    own: list[str] | None = None,
) -> list[dict[str, Any]]:
    values = _siblings(lib, mode, key)
    causes = [(value["w"], [tuple(cause) for cause in value["deps"]]) for value in values]
    reads.append((stage, key, causes, list(own or ())))
    return values


def _write(lib: Any, mode: str, key: str, value: dict[str, Any]) -> None:  # noqa: ANN401
    if mode == "NORMAL":
        lib.put(key, value)
    else:
        lib.causal_put(key, value)


def _posts(timeline: list[dict[str, Any]]) -> list[str]:
    return sorted({post for value in timeline for post in value["posts"]})


def retwis_pick(lib: Any, mode: str, ns: str, other: str) -> tuple[str | None, _Reads]:  # noqa: ANN401
    """Stage 0 of a post: the post to reply to (the other user's latest), and what was read."""
    reads: _Reads = []
    posts = _posts(_observe(lib, mode, 0, f"{ns}:tl:{other}", reads))
    parent = posts[-1] if posts else None
    if parent is not None:
        _observe(lib, mode, 0, f"{ns}:post:{parent}", reads)
    return parent, reads


def retwis_publish(
    lib: Any,  # noqa: ANN401
    mode: str,
    ns: str,
    user: str,
    post_id: str,
    timeline_write: str,
    parent: str | None,
    reads: _Reads,
) -> dict[str, Any]:
    """Stage 1 of a post: write the reply, then append it to the author's timeline."""
    reads = list(reads)
    timeline = _observe(lib, mode, 1, f"{ns}:tl:{user}", reads)
    seen = _seen(reads)
    post_key, timeline_key = f"{ns}:post:{post_id}", f"{ns}:tl:{user}"
    _write(lib, mode, post_key, {"w": post_id, "reply_to": parent, "deps": seen})
    posts = sorted({*_posts(timeline), post_id})[-TIMELINE_LENGTH:]
    timeline_causes = [*seen, (post_key, post_id)]
    _write(lib, mode, timeline_key, {"w": timeline_write, "posts": posts, "deps": timeline_causes})
    return {"reads": reads, "writes": [(post_key, post_id, seen), (timeline_key, timeline_write, timeline_causes)]}


def _seen(reads: _Reads) -> list[tuple[str, str]]:
    """What a request observed so far, as ``(key, write id)``: the causes of what it writes next."""
    return sorted({(key, write) for _, key, writes, _ in reads for write, _ in writes})


def retwis_edit(lib: Any, mode: str, ns: str, user: str, edit_id: str) -> dict[str, Any]:  # noqa: ANN401
    """Stage 0 of an edit: read the profile, write it, read it again, write a status that depends on it."""
    reads: _Reads = []
    profile_key, status_key = f"{ns}:profile:{user}", f"{ns}:status:{user}"
    _observe(lib, mode, 0, profile_key, reads)
    profile_write = f"pr-{edit_id}"
    profile_causes = _seen(reads)
    _write(lib, mode, profile_key, {"w": profile_write, "deps": profile_causes})
    _observe(lib, mode, 0, profile_key, reads, own=[profile_write])
    status_write = f"st-{edit_id}"
    status_causes = sorted({*_seen(reads), (profile_key, profile_write)})
    _write(lib, mode, status_key, {"w": status_write, "deps": status_causes})
    return {
        "reads": reads,
        "writes": [(profile_key, profile_write, profile_causes), (status_key, status_write, status_causes)],
    }


def retwis_confirm(lib: Any, mode: str, ns: str, user: str, edit: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN401
    """Stage 1 of an edit: the status and the profile again, each of which the request wrote."""
    reads: _Reads = list(edit["reads"])
    own = {key: write for key, write, _ in edit["writes"]}
    for key in (f"{ns}:status:{user}", f"{ns}:profile:{user}"):
        _observe(lib, mode, 1, key, reads, own=[own[key]])
    return {"reads": reads, "writes": edit["writes"]}


def retwis_scan(lib: Any, mode: str, ns: str, user: str) -> tuple[list[str], _Reads]:  # noqa: ANN401
    """Stage 0 of a read: the timeline and its latest posts."""
    reads: _Reads = []
    posts = _posts(_observe(lib, mode, 0, f"{ns}:tl:{user}", reads))[-POSTS_READ:]
    for post in posts:
        _observe(lib, mode, 0, f"{ns}:post:{post}", reads)
    return posts, reads


def retwis_check(
    lib: Any,  # noqa: ANN401
    mode: str,
    ns: str,
    user: str,
    pause: float,
    posts: list[str],
    reads: _Reads,
) -> dict[str, Any]:
    """Stage 1 of a read: after ``pause`` seconds, the timeline and posts again, and the posts they reply to."""
    reads = list(reads)
    time.sleep(pause)
    _observe(lib, mode, 1, f"{ns}:tl:{user}", reads)
    for post in posts:
        for value in _observe(lib, mode, 1, f"{ns}:post:{post}", reads):
            if value["reply_to"] is not None:
                _observe(lib, mode, 1, f"{ns}:post:{value['reply_to']}", reads)
    return {"reads": reads, "writes": []}


def register(connection: Connection) -> None:
    """Registers the workload's functions and its two DAGs (once per cluster)."""
    for function in (retwis_pick, retwis_publish, retwis_scan, retwis_check, retwis_edit, retwis_confirm):
        connection.register(function, function.__name__)
    for name, stages in (
        ("retwis-post", ("retwis_pick", "retwis_publish")),
        ("retwis-read", ("retwis_scan", "retwis_check")),
        ("retwis-edit", ("retwis_edit", "retwis_confirm")),
    ):
        with contextlib.suppress(DagAlreadyExists):
            connection.register_dag(name, list(stages), [stages])


def to_record(request_id: str, result: dict[str, Any]) -> RequestRecord:
    """Turns a DAG's result into a checker record."""

    def observed(write: str, causes: list[tuple[str, str]]) -> ObservedWrite:
        return ObservedWrite(write, tuple((str(key), str(cause)) for key, cause in causes))

    reads = tuple(
        ObservedRead(stage, key, tuple(observed(write, causes) for write, causes in writes), tuple(own))
        for stage, key, writes, own in result["reads"]
    )
    writes = tuple((key, observed(write, causes)) for key, write, causes in result["writes"])
    return RequestRecord(request_id, reads, writes)


#: The workload's DAGs.
DAGS = ("retwis-post", "retwis-read", "retwis-edit")


@dataclass(slots=True)
class RetwisRun:
    """The outcome of :func:`run`: records of completed requests, failures, retries, and latencies in seconds.

    Attributes:
        conflicts: MULTI requests retried after a ``CausalConflict`` that said a retry can succeed.
    """

    records: list[RequestRecord] = field(default_factory=list)
    errors: list[CloudburstError] = field(default_factory=list)
    conflicts: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {dag: [] for dag in DAGS})


#: Attempts of one request that keeps meeting ``CausalConflict``.
MAX_ATTEMPTS = 5


def _call_retrying_conflicts(
    connection: Connection, call: DagCall, timeout: float, outcome: RetwisRun, lock: threading.Lock
) -> dict[str, Any]:
    attempts = 1
    while True:
        try:
            result: dict[str, Any] = connection.call_dag(call).result(timeout)
            return result
        except CausalConflict as conflict:
            if attempts == MAX_ATTEMPTS or not conflict.retryable:
                raise
            attempts += 1
            with lock:
                outcome.conflicts += 1


def run(
    connection: Connection,
    consistency: ConsistencyType,
    *,
    requests: int,
    clients: int = 4,
    users: int = 3,
    read_ratio: float = 0.5,
    edit_ratio: float = 0.0,
    pause: float = 0.0,
    declare_reads: bool = True,
    seed: int = 0,
    timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> RetwisRun:
    """Runs ``requests`` requests from ``clients`` threads and collects their records.

    Args:
        connection: A connection to a cluster where :func:`register` was called.
        consistency: The mode of every request.
        requests: Requests in all.
        clients: Concurrent client threads.
        users: Users (timelines); fewer users means more contention.
        read_ratio: The share of read requests.
        edit_ratio: The share of edit requests (the rest are posts).
        pause: Seconds a read request's second stage waits before reading, widening the window for concurrent
            writes between its stages.
        declare_reads: Declare the keys each DAG's first stage reads (``build_dag_call(reads=...)``); without, every
            read is undeclared, which under MULTI can meet (retryable) conflicts.
        seed: Seeds each client's choices.
        timeout: Deadline of each request.
        progress: Called with the number of completed requests.
    """
    ns = f"{consistency.name.lower()}-{uuid.uuid4().hex[:8]}"
    outcome = RetwisRun()
    lock = threading.Lock()
    counter = iter(range(requests))
    names = [f"u{index}" for index in range(users)]

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        sequence = 0
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            sequence += 1
            user = rng.choice(names)
            draw = rng.random()
            arguments: dict[str, list[object]]
            if draw < edit_ratio:
                dag = "retwis-edit"
                arguments = {
                    "retwis_edit": [consistency.name, ns, user, f"{number:02d}-{sequence:06d}"],
                    "retwis_confirm": [consistency.name, ns, user],
                }
                # The profile is read where it is written (as a post's author timeline is).
                reads: dict[str, list[str]] = {}
            elif draw < edit_ratio + read_ratio:
                dag = "retwis-read"
                arguments = {
                    "retwis_scan": [consistency.name, ns, user],
                    "retwis_check": [consistency.name, ns, user, pause],
                }
                reads = {"retwis_scan": [f"{ns}:tl:{user}"]}
            else:
                dag = "retwis-post"
                other = rng.choice([name for name in names if name != user] or names)
                post_id = f"{number:02d}-{sequence:06d}"
                arguments = {
                    "retwis_pick": [consistency.name, ns, other],
                    "retwis_publish": [consistency.name, ns, user, post_id, f"tl-{post_id}"],
                }
                # The author's timeline is read where it is written, in the last stage (not declared): read in the
                # snapshot of the first stage, it would be older than the write it is the base of.
                reads = {"retwis_pick": [f"{ns}:tl:{other}"]}
            call = connection.build_dag_call(
                dag, arguments, consistency=consistency, reads=reads if declare_reads else {}
            )
            started = time.perf_counter()
            try:
                result = _call_retrying_conflicts(connection, call, timeout, outcome, lock)
            except CloudburstError as error:
                with lock:
                    outcome.errors.append(error)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                outcome.records.append(to_record(f"{dag}:{number}:{sequence}", result))
                outcome.latencies[dag].append(elapsed)
                if progress is not None:
                    progress(len(outcome.records))

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome
