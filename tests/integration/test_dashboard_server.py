"""The dashboard's HTTP server against a fake source: routes, errors, path safety and its lifecycle."""

import http.client
import json
import logging
import socket
import threading
from types import MappingProxyType
from urllib.parse import quote

import pytest

from cloudburst.cluster.local import random_loopback_host
from cloudburst.errors import CloudburstError, TransportError
from cloudburst.management.dashboard import METRICS_CONTENT_TYPE, DashboardServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

UNKNOWN_TRACE = "no trace of request '{}' (traces are kept for the most recent requests only)"


class FakeSource:
    """A source whose view changes with every call, and which fails on demand."""

    def __init__(self):
        self.calls = 0
        self.fail = None
        self.traces = {"req-1": {"request_id": "req-1", "name": "pipeline", "ok": True, "hops": []}}
        self.lock = threading.Lock()

    def _maybe_fail(self):
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error

    def cluster_view(self):
        with self.lock:
            self._maybe_fail()
            self.calls += 1
            return {"generated_at": 1764000000.0 + self.calls, "autoscale": False, "calls": self.calls, "nodes": []}

    def trace_view(self, request_id):
        with self.lock:
            self._maybe_fail()
            return self.traces.get(request_id)

    def metrics_text(self):
        with self.lock:
            self._maybe_fail()
            return f"# TYPE cloudburst_calls counter\ncloudburst_calls_total {self.calls}\n".encode()


def request(server, path, method="GET", headers=None):
    """Sends ``path`` as written (no normalisation), returning (status, headers, body)."""
    host, port = server.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def assert_refused(host, port):
    with socket.socket() as probe:
        probe.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            probe.connect((host, port))


def get_json(server, path):
    status, headers, body = request(server, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


@pytest.fixture
def source():
    return FakeSource()


@pytest.fixture
def server(source):
    dashboard = DashboardServer(source, random_loopback_host(), 0)
    dashboard.start()
    yield dashboard
    dashboard.close()


def test_index_is_the_page(server):
    status, headers, body = request(server, "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'src="/static/dashboard.js"' in body
    assert b'href="/static/dashboard.css"' in body
    assert headers["Cache-Control"] == "no-cache"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "content_type", "marker"),
    [
        ("dashboard.js", "text/javascript; charset=utf-8", b"/api/cluster"),
        ("dashboard.css", "text/css; charset=utf-8", b".node-card"),
        ("favicon.svg", "image/svg+xml", b"<svg"),
        ("index.html", "text/html; charset=utf-8", b"<!doctype html>"),
    ],
)
def test_static_assets(server, name, content_type, marker):
    status, headers, body = request(server, f"/static/{name}")
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert marker in body
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Cache-Control"] == "no-cache"

    # An unchanged asset is revalidated, not sent again.
    status, revalidated, body = request(server, f"/static/{name}", headers={"If-None-Match": headers["ETag"]})
    assert status == 304
    assert body == b""
    assert revalidated["ETag"] == headers["ETag"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/",
        "/static/..",
        "/static/../dashboard.py",
        "/static/%2e%2e/dashboard.py",
        "/static/..%2fdashboard.py",
        "/static/%2E%2E%2F%2E%2E%2F__init__.py",
        "/static/....//dashboard.py",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
        "/static/static/dashboard.js",
        "/static/dashboard.js/",
        "/static/dashboard.js%00.py",
        "/dashboard.py",
        "/../pyproject.toml",
    ],
)
def test_only_packaged_files_are_served(server, path):
    status, headers, body = request(server, path)
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(body)
    assert b"import" not in body
    assert b"root:" not in body


def test_cluster_view_is_fresh_json(server, source):
    status, first = get_json(server, "/api/cluster")
    assert status == 200
    status, headers, body = request(server, "/api/cluster?cache-buster=1")
    second = json.loads(body)
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert second["calls"] == first["calls"] + 1
    assert second["generated_at"] > first["generated_at"]
    assert second["nodes"] == []


def test_trace_known_and_unknown(server, source):
    status, trace = get_json(server, "/api/traces/req-1")
    assert status == 200
    assert trace == source.traces["req-1"]

    status, error = get_json(server, "/api/traces/nope")
    assert status == 404
    assert error == {"error": UNKNOWN_TRACE.format("nope")}


def test_trace_id_is_percent_decoded(server, source):
    odd = "req 2/ü?#"
    source.traces[odd] = {"request_id": odd, "name": "f", "ok": False, "hops": []}
    status, trace = get_json(server, "/api/traces/" + quote(odd, safe=""))
    assert status == 200
    assert trace["request_id"] == odd


def test_metrics_exposition(server, source):
    get_json(server, "/api/cluster")
    status, headers, body = request(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == METRICS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert body == b"# TYPE cloudburst_calls counter\ncloudburst_calls_total 1\n"


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/clusters", "/api/traces/", "/index.html", "/metrics/x"])
def test_unknown_routes_are_404(server, path):
    status, body = get_json(server, path)
    assert status == 404
    assert "no such page" in body["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
@pytest.mark.parametrize("path", ["/", "/api/cluster", "/metrics", "/nowhere"])
def test_other_methods_are_405(server, source, method, path):
    status, headers, body = request(server, path, method=method)
    assert status == 405
    assert headers["Allow"] == "GET"
    if method != "HEAD":
        assert "not allowed" in json.loads(body)["error"]
    assert source.calls == 0


@pytest.mark.parametrize("path", ["/api/cluster", "/api/traces/req-1", "/metrics"])
def test_source_failure_is_a_500_and_serving_goes_on(server, source, path, caplog):
    source.fail = ZeroDivisionError("division by zero")
    with caplog.at_level(logging.WARNING, logger="cloudburst.management.dashboard"):
        status, body = get_json(server, path)
    assert status == 500
    assert body == {"error": "ZeroDivisionError: division by zero"}
    assert any(record.exc_info for record in caplog.records)

    status, _headers, _body = request(server, path)
    assert status == 200


def test_a_view_that_is_not_json_is_a_500(server, source):
    source.cluster_view = lambda: {"generated_at": float("nan")}
    status, body = get_json(server, "/api/cluster")
    assert status == 500
    assert "not JSON-able" in body["error"]
    source.cluster_view = lambda: {"nodes": [object()]}
    status, body = get_json(server, "/api/cluster")
    assert status == 500
    assert "object is not JSON-able" in body["error"]
    assert request(server, "/")[0] == 200


def test_mappings_and_sets_are_json(server, source):
    source.cluster_view = lambda: MappingProxyType({"schedulers": frozenset(["127.0.0.1"]), "nodes": ()})
    status, body = get_json(server, "/api/cluster")
    assert status == 200
    assert body == {"schedulers": ["127.0.0.1"], "nodes": []}


def test_concurrent_pollers(server, source):
    statuses = []

    def poll():
        statuses.extend(request(server, "/api/cluster")[0] for _ in range(10))

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * 80
    assert source.calls == 80


def test_requests_are_logged_at_debug_not_on_stderr(server, capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="cloudburst.management.dashboard"):
        request(server, "/api/cluster")
        request(server, "/missing")
    assert capfd.readouterr().err == ""
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG]
    assert any("GET /api/cluster" in message and "200" in message for message in messages)
    assert any("GET /missing" in message and "404" in message for message in messages)


def test_binds_the_given_host_only(server):
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    host = server.url.removeprefix("http://").rsplit(":", 1)[0]
    assert server.url == f"http://{host}:{port}/"
    assert_refused("127.0.0.1", port)


def test_close_frees_the_port(source):
    host = random_loopback_host()
    first = DashboardServer(source, host, 0)
    first.start()
    port = int(first.url.rstrip("/").rsplit(":", 1)[1])
    assert request(first, "/")[0] == 200
    first.close()
    first.close()
    assert_refused(host, port)
    with pytest.raises(CloudburstError, match="closed"):
        first.start()

    with DashboardServer(source, host, port) as second:
        assert second.url == f"http://{host}:{port}/"
        assert request(second, "/api/cluster")[0] == 200


def test_close_without_start(source):
    server = DashboardServer(source, random_loopback_host(), 0)
    server.close()
    server.close()


def test_a_taken_port_is_a_transport_error(source):
    host = random_loopback_host()
    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TransportError, match=f"{host}:{port}"):
            DashboardServer(source, host, port)


@pytest.mark.parametrize("host", ["192.0.2.1", "not an address", "256.1.1.1"])
def test_an_address_that_cannot_be_bound_is_a_transport_error(source, host):
    with pytest.raises(TransportError, match=f"{host}:0"):
        DashboardServer(source, host, 0)
