"""A Retwis-like social network (users, follows, posts, replies, home timelines) in MULTI causal consistency.

Every request is a two-function DAG called with ``consistency=cloudburst.MULTI``, reading and writing with
``lib.causal_get``/``lib.causal_put``:

* post: ``retwis_pick`` reads the followed users' post lists and the newest post among them (the one to reply
  to); ``retwis_publish`` writes the reply and appends it to the author's own list.
* timeline: ``retwis_home`` reads whom the user follows and their post lists; ``retwis_render`` reads the newest
  posts and, for each reply, the post it answers.

MULTI gives every request one causally consistent snapshot across its functions and nodes. A reply is written by
a request that found its parent in the parent author's post list, so the reply depends on that version of the
list: a timeline that shows the reply must show the parent too. Client threads post and read concurrently, and
the program checks every timeline: each reply's parent must be readable, and must be in its author's list as the
same request read it, whenever the reader follows that author. Under NORMAL, reads through the node caches are
not snapshots and nothing rules such a timeline out (docs/consistency.md counts how often it happens).

Concurrent posts by one user can leave sibling versions of the user's list; ``lib.causal_siblings`` returns them
all and the writer merges them (a set union), the usual way to reconcile causal data.

    python examples/retwis.py                      # a throwaway local cluster of 2 nodes
    python examples/retwis.py --scheduler HOST     # a running cluster

Exits with 1 if any timeline breaks causality.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cloudburst
from cloudburst.errors import CausalConflict

if TYPE_CHECKING:
    from cloudburst.executor.user_library import UserLibrary

POST_DAG = "example-retwis-post"
TIMELINE_DAG = "example-retwis-timeline"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
#: Posts a home timeline shows (the newest).
TIMELINE_LENGTH = 8
#: A request that keeps meeting ``CausalConflict`` (see docs/consistency.md) is tried this many times.
ATTEMPTS = 5


def merged(lib: UserLibrary, key: str) -> list[str]:
    """A list-valued causal key, with concurrent versions (siblings) reconciled by union."""
    return sorted({item for sibling in lib.causal_siblings(key) for item in sibling})


# -- functions --------------------------------------------------------------------------------------------------


def retwis_follow(lib: UserLibrary, ns: str, user: str, followees: list[str]) -> list[str]:
    """Adds followees to ``user``'s follow list."""
    following = sorted({*merged(lib, f"{ns}/follows/{user}"), *followees})
    lib.causal_put(f"{ns}/follows/{user}", following)
    return following


def retwis_pick(lib: UserLibrary, ns: str, author: str, followees: list[str]) -> dict[str, Any]:
    """Stage 1 of a post: the newest post of the users ``author`` follows, to reply to (``None``: none yet)."""
    lists = lib.causal_get([f"{ns}/posts/{user}" for user in followees])
    newest = max((post for posts in lists.values() if posts for post in posts), default=None)
    parent = lib.causal_get(f"{ns}/post/{newest}") if newest is not None else None
    return {"parent": parent}


def retwis_publish(lib: UserLibrary, ns: str, author: str, post_id: str, picked: dict[str, Any]) -> dict[str, Any]:
    """Stage 2 of a post: writes the post (a reply when stage 1 found one), then adds it to the author's list."""
    parent = picked["parent"]
    remark = ("agreed", "source?", "nice one", "how so?", "+1", "not sure")[int(post_id[1:]) % 6]
    text = f"@{parent['author']} {remark}" if parent else f"hello, {author} here"
    post = {"id": post_id, "author": author, "text": text, "reply_to": parent["id"] if parent else None}
    lib.causal_put(f"{ns}/post/{post_id}", post)
    # Read here, where it is written: this request's version of the list must include the latest of its own.
    posts = sorted({*merged(lib, f"{ns}/posts/{author}"), post_id})
    lib.causal_put(f"{ns}/posts/{author}", posts)
    return post


def retwis_home(lib: UserLibrary, ns: str, user: str) -> dict[str, Any]:
    """Stage 1 of a timeline: the post lists of ``user`` and of everyone ``user`` follows."""
    authors = [user, *(lib.causal_get(f"{ns}/follows/{user}") or [])]
    lists = lib.causal_get([f"{ns}/posts/{author}" for author in authors])  # read together: one snapshot
    return {"lists": {author: lists[f"{ns}/posts/{author}"] or [] for author in authors}}


def retwis_render(lib: UserLibrary, ns: str, user: str, home: dict[str, Any]) -> dict[str, Any]:
    """Stage 2 of a timeline: the newest posts, each reply with the post it answers."""
    newest = sorted({post for posts in home["lists"].values() for post in posts})[-TIMELINE_LENGTH:]
    found = lib.causal_get([f"{ns}/post/{post}" for post in newest]) if newest else {}
    entries = []
    for post in reversed(newest):
        entry = dict(found[f"{ns}/post/{post}"] or {"id": post, "missing": True})
        if entry.get("reply_to"):
            entry["parent"] = lib.causal_get(f"{ns}/post/{entry['reply_to']}")
        entries.append(entry)
    return {"user": user, "lists": home["lists"], "entries": entries}


# -- the program --------------------------------------------------------------------------------------------------


def check_timeline(timeline: dict[str, Any]) -> list[str]:
    """The causal anomalies in one timeline: replies without their parent (empty when there are none)."""
    problems = []
    lists: dict[str, list[str]] = timeline["lists"]
    for entry in timeline["entries"]:
        if entry.get("missing"):
            problems.append(f"{timeline['user']}: post {entry['id']} is listed but cannot be read")
        elif entry["reply_to"] is not None:
            parent = entry["parent"]
            if parent is None:
                problems.append(f"{timeline['user']}: reply {entry['id']} without its parent {entry['reply_to']}")
            elif parent["author"] in lists and parent["id"] not in lists[parent["author"]]:
                problems.append(
                    f"{timeline['user']}: reply {entry['id']} shown, its parent {parent['id']} missing from "
                    f"{parent['author']}'s posts"
                )
    return problems


class Workload:
    """Client threads posting and reading timelines; collects what the checks and the report need."""

    def __init__(self, cb: cloudburst.Connection, ns: str, follows: dict[str, list[str]], seed: int) -> None:
        self.cb, self.ns, self.follows, self.seed = cb, ns, follows, seed
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.timelines: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []
        self.latencies: dict[str, list[float]] = {POST_DAG: [], TIMELINE_DAG: []}
        self.conflicts = 0
        self.errors: list[Exception] = []

    def call(self, dag: str, arguments: dict[str, list[object]], reads: dict[str, list[str]]) -> Any:  # noqa: ANN401
        """Runs one request in MULTI, again on ``CausalConflict`` (which asks for a newer snapshot)."""
        call = self.cb.build_dag_call(dag, arguments, consistency=cloudburst.MULTI, reads=reads)
        for attempt in range(1, ATTEMPTS + 1):
            sent = time.perf_counter()
            try:
                result = self.cb.call_dag(call).result(timeout=30)
            except CausalConflict:
                if attempt == ATTEMPTS:
                    raise
                with self.lock:
                    self.conflicts += 1
                continue
            with self.lock:
                self.latencies[dag].append(time.perf_counter() - sent)
            return result
        raise AssertionError("unreachable")

    def post(self, author: str) -> None:
        with self.lock:
            post_id = f"p{next(self.ids):05d}"  # increasing: the newest post has the largest id
        followees = self.follows[author]
        arguments: dict[str, list[object]] = {
            "retwis_pick": [self.ns, author, followees],
            "retwis_publish": [self.ns, author, post_id],
        }
        # Declared reads are kept consistent from the request's first read. The author's own list is not
        # declared: it is read where it is written, so that the new version extends the newest one.
        reads = {"retwis_pick": [f"{self.ns}/posts/{user}" for user in followees]}
        post = self.call(POST_DAG, arguments, reads)
        with self.lock:
            self.posts.append(post)

    def timeline(self, user: str) -> None:
        arguments: dict[str, list[object]] = {"retwis_home": [self.ns, user], "retwis_render": [self.ns, user]}
        declared = [f"{self.ns}/follows/{user}", *(f"{self.ns}/posts/{a}" for a in [user, *self.follows[user]])]
        timeline = self.call(TIMELINE_DAG, arguments, {"retwis_home": declared})
        with self.lock:
            self.timelines.append(timeline)

    def client(self, number: int, requests: int) -> None:
        rng = random.Random(self.seed * 100 + number)
        for _ in range(requests):
            user = rng.choice(USERS)
            try:
                if rng.random() < 0.5:
                    self.post(user)
                else:
                    self.timeline(user)
            except Exception as error:  # reported with the results; the other clients go on
                with self.lock:
                    self.errors.append(error)


@contextlib.contextmanager
def open_cluster(scheduler: str | None, host: str, nodes: int) -> Iterator[cloudburst.Connection]:
    """A connection to the cluster at ``scheduler``, or to a throwaway local cluster when it is ``None``."""
    if scheduler is not None:
        with cloudburst.connect(scheduler, host=host) as connection:
            yield connection
        return
    print(f"Starting a throwaway local cluster of {nodes} nodes ...", flush=True)
    with cloudburst.local(executors=2, nodes=nodes) as connection:
        yield connection


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


def main(argv: list[str] | None = None) -> int:
    """Sets up users and follows, runs concurrent clients, checks every timeline; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", help="a running cluster's scheduler host (default: start a local cluster)")
    parser.add_argument("--host", default="127.0.0.1", help="this machine's address as executors reach it")
    parser.add_argument("--nodes", type=int, default=2, help="nodes of the local cluster (without --scheduler)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=80, help="requests per client")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    follows = {user: sorted(rng.sample([u for u in USERS if u != user], 3)) for user in USERS}
    with open_cluster(args.scheduler, args.host, args.nodes) as cb:
        ns = f"examples/retwis/{uuid.uuid4().hex[:12]}"  # a fresh network per run
        for function in (retwis_follow, retwis_pick, retwis_publish, retwis_home, retwis_render):
            cb.register(function, function.__name__)
        for dag, stages in (
            (POST_DAG, ("retwis_pick", "retwis_publish")),
            (TIMELINE_DAG, ("retwis_home", "retwis_render")),
        ):
            with contextlib.suppress(cloudburst.DagNotFound):
                cb.delete_dag(dag)  # left over by an interrupted run
            cb.register_dag(dag, list(stages), [stages])
        try:
            for user, followees in follows.items():
                cb.call("retwis_follow", ns, user, followees, consistency=cloudburst.MULTI).result(timeout=30)
            workload = Workload(cb, ns, follows, args.seed)
            for user in USERS:  # something to reply to
                workload.post(user)
            started = time.perf_counter()
            threads = [
                threading.Thread(target=workload.client, args=(number, args.requests)) for number in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            workload.timeline(USERS[0])
        finally:
            for dag in (POST_DAG, TIMELINE_DAG):
                cb.delete_dag(dag)

    problems = [problem for timeline in workload.timelines for problem in check_timeline(timeline)]
    replies = sum(post["reply_to"] is not None for post in workload.posts)
    shown = sum(entry.get("reply_to") is not None for t in workload.timelines for entry in t["entries"])
    print(f"{len(USERS)} users; {len(workload.posts)} posts ({replies} replies); {len(workload.timelines)} timelines")
    print(f"  {args.clients} clients for {elapsed:.1f} s; {workload.conflicts} requests retried after a CausalConflict")
    for dag, samples in workload.latencies.items():
        print(f"  {dag}: p50 {percentile(samples, 0.5) * 1e3:.1f} ms, p99 {percentile(samples, 0.99) * 1e3:.1f} ms")
    followed = sum(
        entry.get("parent") is not None and entry["parent"]["author"] in t["lists"]
        for t in workload.timelines
        for entry in t["entries"]
    )
    print(
        f"  replies shown in timelines: {shown} ({followed} to followed users' posts); "
        f"shown without their parent: {len(problems)}"
    )
    last = workload.timelines[-1]
    print(f"{last['user']}'s timeline (follows {', '.join(follows[last['user']])}):")
    for entry in last["entries"][:5]:
        to = f" (to {entry['parent']['author']}'s {entry['reply_to']})" if entry.get("reply_to") else ""
        print(f"  {entry['id']} {entry['author']}: {entry['text']}{to}")
    for problem in problems[:5]:
        print(f"  ANOMALY {problem}")
    for error in workload.errors[:5]:
        print(f"  ERROR {type(error).__name__}: {error}")
    if problems or workload.errors or shown == 0:
        print(f"retwis: FAILED: {len(problems)} anomalies, {len(workload.errors)} errors, {shown} replies shown")
        return 1
    print(f"retwis: OK: {len(workload.timelines)} timelines, {shown} replies shown, none without its parent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
