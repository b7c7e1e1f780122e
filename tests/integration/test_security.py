"""A deployment with CURVE: only clients holding an authorized key get anything through, and what others send is
refused in the handshake, before any decoding."""

import shutil
import threading
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from cloudburst.client.connection import Connection
from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.local import random_loopback_host
from cloudburst.config import RuntimePorts, SchedulerConfig
from cloudburst.errors import DeadlineExceeded
from cloudburst.kvs.server import KvsAddresses
from cloudburst.scheduler.server import SchedulerServer
from cloudburst.testing import wait_until
from cloudburst.transport.security import SecurityConfig, generate_keys

pytestmark = pytest.mark.integration

PORTS = RuntimePorts()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The cluster keypair, client keypairs for the roles, a user and a stranger; only the first two authorized."""
    base = tmp_path_factory.mktemp("keys")
    _, cluster_secret = generate_keys(base / "cluster")
    cluster_public = base / "cluster" / "cloudburst.key"
    authorized = base / "authorized"
    authorized.mkdir()
    secrets = {}
    for name in ("roles", "user", "stranger"):
        public, secrets[name] = generate_keys(base / name, name)
        if name != "stranger":
            shutil.copy(public, authorized)
    return {
        "role": SecurityConfig.for_role(cluster_secret, secrets["roles"], authorized),
        "user": SecurityConfig.for_client(cluster_public, secrets["user"]),
        "stranger": SecurityConfig.for_client(cluster_public, secrets["stranger"]),
    }


@pytest.fixture(scope="module")
def deployment(keys, tmp_path_factory):
    """A KVS and a node (cache and one executor) in child processes, and a scheduler in a thread, all with CURVE."""
    workdir = tmp_path_factory.mktemp("secured")
    host = random_loopback_host()
    role_args = keys["role"].role_arguments()
    kvs = ChildProcess(["kvs", "--host", host, "--in-memory", *role_args], workdir, "kvs")
    routing = KvsAddresses.from_json(kvs.start()).routing
    scheduler = SchedulerServer(
        SchedulerConfig(host=host, kvs_routing=routing, report_period=0.5, security=keys["role"])
    )
    thread = threading.Thread(target=scheduler.serve_forever, name="scheduler", daemon=True)
    thread.start()
    node_args = ["node", "--host", host, "--scheduler", host, "--kvs", routing, "--executors", "1"]
    node = ChildProcess(
        [*node_args, "--report-period", "0.5", "--work-dir", str(workdir / "node"), *role_args],
        workdir,
        "node",
        startup_timeout=60,
    )
    try:
        node.start()
        yield host, scheduler
    finally:
        node.stop()
        scheduler.stop()
        thread.join(timeout=10)
        scheduler.close()
        kvs.stop()


def test_an_authorized_client_registers_and_calls(deployment, keys):
    host, _ = deployment
    with Connection(host, host=host, timeout=20, security=keys["user"]) as connection:
        square = connection.register(lambda _, x: x * x, "square")
        wait_until(lambda: connection.call("square", 7).result(timeout=10) == 49, "a call of square", timeout=30)
        assert square(9).result(timeout=10) == 81


@pytest.mark.parametrize("who", ["no key", "stranger"])
def test_a_client_without_an_authorized_key_is_refused_in_the_handshake(deployment, keys, who):
    host, scheduler = deployment
    rejected, denied = scheduler.rejected_messages, scheduler.denied_handshakes
    with pytest.raises(DeadlineExceeded):
        Connection(host, host=host, timeout=1.5, security=keys.get(who))
    # Nothing it sent reached the scheduler's decoders; a wrong key is refused by the ZAP handler.
    assert scheduler.rejected_messages == rejected
    if who == "stranger":
        assert scheduler.denied_handshakes > denied


def test_a_plaintext_pickle_to_an_executor_gets_nothing_through(deployment, keys):
    host, _ = deployment
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    monitor = push.get_monitor_socket()
    try:
        push.connect(PORTS.executor_control_endpoint(host, 0))
        push.send(b"\x80\x04\x95 a pickled payload", zmq.NOBLOCK)
        events = set()
        give_up = time.monotonic() + 2.0
        while time.monotonic() < give_up:
            if monitor.poll(100):
                events.add(recv_monitor_message(monitor)["event"])
        assert zmq.EVENT_CONNECTED in events  # the port is there...
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events  # ...but no plaintext peer completes a handshake
    finally:
        push.disable_monitor()
        monitor.close()
        push.close()
        context.term()
    # The executor is unharmed and still serves an authorized client.
    with Connection(host, host=host, timeout=20, security=keys["user"]) as connection:
        connection.register(lambda _, x: x + 1, "incr")
        wait_until(lambda: connection.call("incr", 1).result(timeout=10) == 2, "a call of incr", timeout=30)
