import socket
import threading

import pytest

from cloudburst.cluster.local import random_loopback_host
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.process import KvsProcess
from cloudburst.retry import RetryPolicy

pytestmark = pytest.mark.integration


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports after it (checked, not reserved)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


@pytest.fixture
def port_block():
    """Finds blocks of consecutive free ports, for nodes that need fixed ports."""
    return free_port_block


@pytest.fixture
def kvs_node(tmp_path):
    with KvsProcess(tmp_path / "data") as node:
        yield node


@pytest.fixture
def fast_retry():
    return RetryPolicy(attempt_timeout=0.2, min_backoff=0.01, max_backoff=0.1)


@pytest.fixture
def client(kvs_node, fast_retry):
    with KvsClient(kvs_node.routing, retry=fast_retry) as client:
        yield client


@pytest.fixture
def kvs_host():
    """A private loopback address for a KVS node."""
    return random_loopback_host()


@pytest.fixture
def node(kvs_host):
    """An in-memory KVS node on its own loopback address."""
    with KvsProcess(None, host=kvs_host) as node:
        yield node


@pytest.fixture
def kvs(node, fast_retry):
    """A client of :func:`node`."""
    with KvsClient(node.routing, retry=fast_retry) as client:
        yield client


@pytest.fixture
def serve_in_thread():
    """Starts servers' loops in threads (``serve_in_thread(server)``); afterwards stops, joins and closes them."""
    started = []

    def start(server):
        thread = threading.Thread(target=server.serve_forever, name=type(server).__name__, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in reversed(started):
        server.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
        server.close()


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the dashboard's tests (see ``browser.py``), shared by a module's tests."""
    from browser import launch_chromium

    with launch_chromium() as browser:
        yield browser
