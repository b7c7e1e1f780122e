"""Malformed input on every server socket of a whole cluster: nothing dies or hangs, bad input is counted, and
valid traffic is still served afterwards.

``CLOUDBURST_FUZZ_MESSAGES`` sets the messages per port (the default keeps the test near a minute; a full run uses
10,000 or more, which also sends oversized messages to the ports that take 256 MiB). The generator is seeded
(``CLOUDBURST_FUZZ_SEED``), so a failure is reproduced by rerunning with the same seed and count. ``pytest -s``
prints how many messages each port got and how long it took.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from cloudburst.cache.client import NodeCacheClient
from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.config import RuntimePorts
from cloudburst.errors import DecodeError
from cloudburst.executor.sentinel import MAX_CANCEL_BYTES
from cloudburst.lattices import LwwLattice, PriorityLattice, SetLattice
from cloudburst.management.client import parse_scheduler_list
from cloudburst.management.policy import ManagementPolicyConfig
from cloudburst.protocol import codec
from cloudburst.protocol.causal_messages import CausalReadRequest, SessionVersionRequest
from cloudburst.protocol.messages import (
    ConsistencyType,
    KeyAddressRequest,
    KeyRequest,
    KeyTuple,
    LatticeType,
    RequestType,
    SerializerType,
)
from cloudburst.protocol.runtime_messages import (
    CancelRequest,
    Dag,
    DagCall,
    EncodedValue,
    ExecutorStatistics,
    Function,
    FunctionCall,
    FunctionReference,
    FunctionStatistics,
    GenericResponse,
    Link,
    PinFunction,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.trigger_messages import TriggerAck
from cloudburst.protocol.versions import VersionInfo, local_version_info

pytestmark = pytest.mark.integration

MESSAGES_PER_PORT = int(os.environ.get("CLOUDBURST_FUZZ_MESSAGES", "400"))
SEED = int(os.environ.get("CLOUDBURST_FUZZ_SEED", "20261125"))
#: Oversized messages to ports taking more than this are sent only in full runs: each costs its size in memory.
CHEAP_OVERSIZE = 64 * 2**20
FULL_RUN = 10_000
PORTS = RuntimePorts()
#: The management service must not add, drain or re-replicate anything while it is fed garbage reports.
HANDS_OFF = ManagementPolicyConfig(
    report_period=0.5,
    thread_timeout=1.5,
    min_nodes=1,
    max_nodes=1,
    min_utilization=0.0,
    max_utilization=1.0,
    max_pinned_ratio=1000.0,
    hot_thread_replicas=0,
)
#: A send blocked this long means the server stopped reading: a hang, reported with the port's name.
SEND_TIMEOUT_MS = 20_000


@dataclass(frozen=True)
class Target:
    """One socket to fuzz.

    Attributes:
        name: Names the port in the table and in failures.
        endpoint: Where it listens.
        kind: ``push`` (a PULL server), ``router`` (a ROUTER server) or ``pub`` (a PUB server, fed subscriptions).
        right: Valid messages of the type the port takes; ``wrong`` holds every other type.
        max_bytes: The socket's largest accepted message, if it sets one.
        rejection: What the owning server logs when it rejects input here, if it logs.
        bounded: The port's queue is emptied only by user code (a function's ``recv``), so once it is full the
            rest is not sent: a full queue is its documented state, not a hang.
    """

    name: str
    endpoint: str
    kind: str
    right: tuple[bytes, ...]
    max_bytes: int | None = None
    rejection: str | None = None
    bounded: bool = False


def valid_messages(reply: str) -> dict[str, tuple[bytes, ...]]:
    """Well-formed messages of every type a server takes, by type; names never collide with the checks' functions
    and keys, so fuzzed variants that still decode do no harm to them."""
    lww = codec.encode_lattice(LwwLattice(timestamp=7, value=b"v"))[1]
    a_set = codec.encode_lattice(SetLattice(frozenset({b"a", b"b"})))[1]
    a_priority = codec.encode_lattice(PriorityLattice(3, b"p"))[1]
    argument = EncodedValue(b"\x80\x05K\x01.", SerializerType.DEFAULT)
    dag = Dag("fuzz-dag", (FunctionReference("fuzz-a"), FunctionReference("fuzz-b")), (Link("fuzz-a", "fuzz-b"),))
    return {
        "key": (
            codec.encode_key_request(KeyRequest(RequestType.GET, (KeyTuple("fuzz-k"),), reply, "r1")),
            codec.encode_key_request(
                KeyRequest(RequestType.PUT, (KeyTuple("fuzz-k", LatticeType.LWW, payload=lww),), reply, "r2")
            ),
            # Lattices of the wrong type for their declared one.
            codec.encode_key_request(
                KeyRequest(RequestType.PUT, (KeyTuple("fuzz-k", LatticeType.SET, payload=lww),), reply, "r3")
            ),
            codec.encode_key_request(
                KeyRequest(RequestType.PUT, (KeyTuple("fuzz-s", LatticeType.LWW, payload=a_set),), reply, "r4")
            ),
            codec.encode_key_request(
                KeyRequest(RequestType.PUT, (KeyTuple("fuzz-m", LatticeType.MULTI_CAUSAL, payload=a_priority),), reply)
            ),
            codec.encode_key_address_request(KeyAddressRequest(reply, ("fuzz-k", "fuzz-j"), "r5")),
        ),
        "function": (codec.encode_function(Function("fuzz-f", b"not a pickle")),),
        "function_call": (
            codec.encode_function_call(FunctionCall("fuzz-f", (argument,), 3, "fuzz-out", response_address=reply)),
        ),
        "dag": (codec.encode_dag(dag),),
        "dag_call": (codec.encode_dag_call(DagCall("fuzz-dag", {"fuzz-a": (argument,)}, reply)),),
        "text": (b"fuzz-f", "fuzz-\u00e9".encode()),
        "cancel": (codec.encode_cancel_request(CancelRequest("fuzz-request")),),
        "keys": (codec.encode_string_set(["fuzz-request", "fuzz-other"]),),
        "executor": (
            codec.encode_executor_request(PinFunction("fuzz-f", "tcp://127.0.0.1:9", "pin-1")),
            codec.encode_executor_request(UnpinFunction("fuzz-f")),
            codec.encode_executor_request(FunctionCall("fuzz-f", (argument,), 4, "fuzz-o", response_address=reply)),
        ),
        # Statuses of a departed executor on a documentation address: believed or not, nothing is placed there.
        "scheduler": (
            codec.encode_scheduler_message(
                ThreadStatus("192.0.2.1", 2, ("fuzz-f",), 0.5, running=False, incarnation="i", departed=True)
            ),
            codec.encode_scheduler_message(GenericResponse(False, "pin-1")),
            codec.encode_scheduler_message(
                ExecutorStatistics((FunctionStatistics("fuzz-f", 3, (0.5, 0.25)),), (), "192.0.2.1:2")
            ),
        ),
        "trigger_ack": (codec.encode_trigger_ack(TriggerAck("fuzz-trigger", "")),),
        "causal": (
            codec.encode_causal_read_request(
                CausalReadRequest("fuzz-session", ConsistencyType.MULTI, ("fuzz-k",), reply, "r6", ("fuzz-j",))
            ),
        ),
        "session": (codec.encode_session_version_request(SessionVersionRequest("fuzz-session", ("fuzz-k",), reply)),),
        "reply_address": (reply.encode(),),
    }


def _departs(message: bytes) -> bool:
    try:
        return isinstance(codec.decode_executor_request(message), SelfDepart)
    except DecodeError:
        return False


def fuzzed(rng: random.Random, target: Target, wrong: tuple[bytes, ...]) -> Iterator[list[bytes]]:
    """``MESSAGES_PER_PORT`` multi-part messages for ``target``: random bytes, truncated and byte-flipped valid
    messages of its own and of other types, empty and multi-frame messages; an oversized one last."""
    for index in range(MESSAGES_PER_PORT):
        kind = index % 8
        pool = target.right if kind % 2 == 0 and target.right else wrong
        extra: list[bytes] = []
        if kind == 0 or kind == 1:
            message = rng.choice(pool)
            payload = message[: rng.randint(0, max(0, len(message) - 1))]
        elif kind == 2 or kind == 3:
            flipped = bytearray(rng.choice(pool))
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            payload = bytes(flipped)
        elif kind == 4:
            payload = rng.randbytes(rng.randint(0, 300))
        elif kind == 5:
            payload = b""
        elif kind == 6:
            # Several frames where one is expected (a PULL socket takes each as a message of its own).
            payload = rng.choice(pool)
            extra = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 3))]
        else:
            payload = rng.choice(pool)
            payload = payload[: len(payload) // 2] + rng.randbytes(8) + payload[len(payload) // 2 :]
        frames = [payload, *extra]
        if target.name.startswith("executor control"):
            # A mutation that became a valid departure would drain the node, not test it.
            frames = [b"\x00" if _departs(frame) else frame for frame in frames]
        yield frames


def oversized(target: Target) -> bytes | None:
    """A message just above the port's limit, if it has one and this run affords it."""
    if target.max_bytes is None or (target.max_bytes > CHEAP_OVERSIZE and MESSAGES_PER_PORT < FULL_RUN):
        return None
    return b"\x0a" * (target.max_bytes + 1)


def raw_garbage(endpoint: str, rng: random.Random, connections: int) -> None:
    """Bytes that are not ZMTP at all, each burst on a fresh TCP connection, as a port scanner would send."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    for _ in range(connections):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(rng.randbytes(rng.randint(1, 600)))


def send_all(context: zmq.Context[zmq.Socket[bytes]], target: Target, messages: list[list[bytes]]) -> int:
    """Sends ``messages`` with the framing ``target`` expects and garbage framing, failing on a stuck server.

    Returns:
        How many were sent.
    """
    kind = {"push": zmq.PUSH, "router": zmq.DEALER, "pub": zmq.XSUB}[target.kind]
    sender = context.socket(kind)
    sender.setsockopt(zmq.SNDTIMEO, 2_000 if target.bounded else SEND_TIMEOUT_MS)
    sender.setsockopt(zmq.LINGER, SEND_TIMEOUT_MS)
    sender.connect(target.endpoint)
    try:
        for index, frames in enumerate(messages):
            if target.kind == "router" and index % 3 == 0:
                # What a REQ socket sends: the empty delimiter, then the request (the rest lack the delimiter).
                frames = [b"", *frames]
            try:
                sender.send_multipart(frames)
            except zmq.Again:
                if target.bounded:
                    return index
                pytest.fail(f"{target.name} stopped taking messages after {index} of them")
            if target.kind == "router":
                # Answers are not checked, only taken, so the server's sends never meet a full pipe.
                while sender.poll(0):
                    sender.recv_multipart()
        big = oversized(target)
        if big is not None:
            sender.send(big, copy=False)
        return len(messages)
    finally:
        sender.close()


def children(cluster: LocalCluster) -> list[ChildProcess]:
    """Every process of the cluster."""
    groups = list(cluster._nodes.values())
    return [
        *([cluster._kvs] if cluster._kvs else []),
        *([cluster._management] if cluster._management else []),
        *cluster._schedulers,
        *(g.cache for g in groups),
        *(e for g in groups for e in g.executors),
    ]


def targets(cluster: LocalCluster, valid: dict[str, tuple[bytes, ...]]) -> list[Target]:
    host = cluster.config.host
    kvs = valid["key"]
    sched = 256 * 2**20
    routers = {
        "connect": "text",
        "function_create": "function",
        "function_call": "function_call",
        "list": "text",
        "dag_create": "dag",
        "dag_call": "dag_call",
        "dag_delete": "text",
        "status_query": "text",
        "function_lease": "text",
        "cancel": "cancel",
        "in_flight": "keys",
        "dag_lease": "text",
    }
    found = [
        Target("kvs routing", f"tcp://{host}:6450", "push", kvs, sched, "rejected input (routing)"),
        Target("kvs storage 0", f"tcp://{host}:6200", "push", kvs, sched, "rejected input (storage thread 0)"),
        Target("kvs trigger acks", f"tcp://{host}:6960", "push", valid["trigger_ack"], sched, "(trigger port)"),
        *(
            Target(
                f"scheduler {port}",
                f"tcp://{host}:{getattr(PORTS, port)}",
                "router",
                valid[kind],
                sched,
                f"rejected input ({port} port)",
            )
            for port, kind in routers.items()
        ),
        # It answers anything with its versions, so nothing is rejected (or logged); requests over 4 KiB are refused.
        Target("scheduler info", PORTS.info_endpoint(host), "router", valid["text"], 4096),
        Target(
            "scheduler internal",
            PORTS.scheduler_internal_endpoint(host),
            "push",
            valid["scheduler"],
            sched,
            "rejected input (internal port)",
        ),
    ]
    for tid in range(cluster.config.executors):
        found += [
            Target(
                f"executor control {tid}",
                PORTS.executor_control_endpoint(host, tid),
                "push",
                valid["executor"],
                sched,
                "rejected input (a control message)",
            ),
            Target(
                f"executor inbox {tid}", PORTS.executor_inbox_endpoint(host, tid), "push", (), 64 * 2**20, bounded=True
            ),
            Target(
                f"executor cancel {tid}",
                PORTS.executor_cancel_endpoint(host, tid),
                "push",
                valid["cancel"],
                MAX_CANCEL_BYTES,
                "rejected input (cancel port)",
            ),
        ]
    cache = 64 * 2**20
    found += [
        Target("cache requests", f"tcp://{host}:7160", "push", kvs, cache, "rejected input (request port)"),
        Target("cache updates", f"tcp://{host}:7150", "push", kvs, cache, "rejected input (update port)"),
        Target("cache causal", f"tcp://{host}:7180", "push", valid["causal"], cache, "rejected input (causal port)"),
        Target("cache session", f"tcp://{host}:7250", "push", valid["session"], cache, "rejected input (session port)"),
        Target("cache invalidations", f"tcp://{host}:7170", "pub", (b"\x01fuzz-k", b"\x00fuzz-k")),
        Target("management reports", PORTS.management_endpoint(host), "push", valid["scheduler"], 4 * 2**20),
        Target(
            "management executors",
            PORTS.management_executors_endpoint(host),
            "push",
            valid["reply_address"],
            64 * 1024,
        ),
        Target("management schedulers", PORTS.management_schedulers_endpoint(host), "router", valid["text"], 64 * 1024),
        # Every request names a node; none of these is one, so each is refused (with its reason, to the sender).
        Target("management drains", PORTS.management_drains_endpoint(host), "router", valid["text"], 64 * 1024),
    ]
    return found


def management_rejections(cluster: LocalCluster) -> float:
    """The management service's count of dropped messages, from its Prometheus metrics."""
    assert cluster.dashboard_url is not None
    with urllib.request.urlopen(cluster.dashboard_url + "metrics", timeout=10) as response:
        text = response.read().decode()
    (family,) = (f for f in text_string_to_metric_families(text) if f.name == "cloudburst_management_rejected_messages")
    return family.samples[0].value


def inbox_size(lib: object) -> int:
    return len(lib.recv())  # type: ignore[attr-defined]


def ask_for_schedulers(context: zmq.Context[zmq.Socket[bytes]], host: str) -> tuple[str, ...]:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(PORTS.management_schedulers_endpoint(host))
    try:
        dealer.send_multipart([b"", b""])
        assert dealer.poll(10_000), "the management service did not answer a scheduler-list query"
        delimiter, answer = dealer.recv_multipart()
        assert delimiter == b""
        return parse_scheduler_list(answer)
    finally:
        dealer.close()


def ask_for_versions(context: zmq.Context[zmq.Socket[bytes]], host: str) -> VersionInfo:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(PORTS.info_endpoint(host))
    try:
        dealer.send_multipart([b"", b""])
        assert dealer.poll(10_000), "the scheduler did not answer an info query"
        delimiter, answer = dealer.recv_multipart()
        assert delimiter == b""
        return VersionInfo.decode(answer)
    finally:
        dealer.close()


def serves_valid_traffic(cluster: LocalCluster, context: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Registers and calls functions and a DAG, stores through functions and reads through the node cache."""
    host = cluster.config.host
    with cluster.connect() as connection:
        connection.register(lambda _, x: x + 1, "fz_add")
        connection.register(lambda _, x: x * x, "fz_square")
        # A KVS write, then a read of it, through the executor's user library.
        connection.register(lambda lib, key, value: lib.put(key, value) and lib.get(key), "fz_store")
        connection.register(inbox_size, "fz_inbox")
        assert connection.call("fz_add", 1).result(timeout=30) == 2
        connection.register_dag("fz_chain", ["fz_add", "fz_square"], [("fz_add", "fz_square")])
        assert connection.call_dag(connection.build_dag_call("fz_chain", {"fz_add": 2})).result(timeout=30) == 9
        assert connection.call("fz_store", "fz/key", 41).result(timeout=30) == 41
        connection.put_object("fz/direct", 5)
        assert connection.get_object("fz/direct") == 5
        with NodeCacheClient(cluster.cache_addresses[host], host=host, timeout=10) as cache:
            cache.put("fz/cached", LwwLattice(timestamp=1, value=b"cached"))
            assert cache.get("fz/cached") == LwwLattice(timestamp=1, value=b"cached")
        assert host in ask_for_schedulers(context, host)
        assert dataclasses.replace(ask_for_versions(context, host), incarnation="") == local_version_info()
        # Last, as it is the slowest: the inboxes took garbage only, which a function's recv drops (and logs).
        for _ in range(4):
            assert isinstance(connection.call("fz_inbox").result(timeout=30), int)


def cpu_ticks(pid: int) -> int:
    """CPU time (user + system, in clock ticks) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_until_idle(pids: list[int], timeout: float) -> float:
    """Waits until the processes have worked off their backlog (under 5 % of a CPU each over half a second), so
    that what follows measures whether they still serve, not how long their queues of garbage are.

    Returns:
        The seconds waited.
    """
    started = time.monotonic()
    threshold = 0.05 * 0.5 * os.sysconf("SC_CLK_TCK")
    before = {pid: cpu_ticks(pid) for pid in pids}
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        after = {pid: cpu_ticks(pid) for pid in pids}
        if all(after[pid] - before[pid] <= threshold for pid in pids):
            break
        before = after
    return time.monotonic() - started


def log_tails(processes: list[ChildProcess]) -> str:
    """The end of each process's log, for a failure message."""
    return "\n".join(f"--- {child.name}\n{child.log_text()[-1500:]}" for child in processes)


def run_fuzz(cluster: LocalCluster, rng: random.Random, report: Callable[[str, int, float], None]) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sink = context.socket(zmq.PULL)
    sink.setsockopt(zmq.LINGER, 0)
    reply = f"tcp://{cluster.config.host}:{sink.bind_to_random_port(f'tcp://{cluster.config.host}')}"
    valid = valid_messages(reply)
    every = tuple(message for group in valid.values() for message in group)
    try:
        for target in targets(cluster, valid):
            wrong = tuple(message for message in every if message not in target.right)
            messages = list(fuzzed(rng, target, wrong))
            started = time.perf_counter()
            sent = send_all(context, target, messages)
            raw_garbage(target.endpoint, rng, max(1, MESSAGES_PER_PORT // 200))
            report(target.name, sent, time.perf_counter() - started)
            # Replies that mutated requests still earned are taken, not checked.
            while sink.poll(0):
                sink.recv()
    finally:
        context.destroy(linger=0)


@pytest.mark.timeout(900)
def test_every_server_port_survives_fuzzing_and_still_serves():
    config = ClusterConfig(
        host=random_loopback_host(),
        executors=2,
        data_dir=None,
        report_period=0.5,
        autoscale=True,
        scaling=HANDS_OFF,
    )
    rows: list[tuple[str, int, float]] = []
    with LocalCluster(config) as cluster:
        processes = children(cluster)
        pids = {child.name: child.pid for child in processes}
        management_rejected = management_rejections(cluster)
        run_fuzz(cluster, random.Random(SEED), lambda *row: rows.append(row))
        dead = [child.name for child in processes if not child.running()]
        assert not dead, f"died under fuzzing: {dead}\n{log_tails(processes)}"
        assert {child.name: child.pid for child in processes} == pids, "a process was replaced"
        # Fake statuses that mutations left believable expire meanwhile too (a few report periods).
        settled = wait_until_idle(list(pids.values()), timeout=180)
        time.sleep(3 * config.report_period)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            serves_valid_traffic(cluster, context)
        except Exception as error:
            raise AssertionError(f"valid traffic failed after fuzzing: {error!r}\n{log_tails(processes)}") from error
        finally:
            context.destroy(linger=0)
        assert management_rejections(cluster) > management_rejected
        logs = {child.name: child.log_text() for child in processes}
        for target in targets(cluster, valid_messages("tcp://127.0.0.1:1")):
            if target.rejection is not None:
                assert any(target.rejection in text for text in logs.values()), f"{target.name}: no rejection logged"
        assert any("rejected input (inbox of" in logs[f"executor-{t}@{config.host}"] for t in range(2))
    print(f"\n{'port':<32}{'messages':>10}{'send (s)':>10}")
    for name, count, seconds in rows:
        print(f"{name:<32}{count:>10}{seconds:>10.2f}")
    print(f"backlog worked off in {settled:.1f} s")
    print(f"{'total':<32}{sum(r[1] for r in rows):>10}{sum(r[2] for r in rows):>10.2f}")
