"""The management service's web dashboard: a small HTTP server over a live view of the cluster.

The server knows nothing about how the view is built: a :class:`DashboardSource` supplies the cluster view, the
traces of recent requests and the Prometheus metrics, and the server only routes, encodes and serves the static
page that polls them. It runs on the standard library's threading HTTP server, in a daemon thread of the
management process.

Routes (GET only; any other method is answered 405):

* ``/``: the page; ``/static/<file>``: its packaged scripts, styles and icons.
* ``/api/cluster``: the cluster view as JSON (see :meth:`DashboardSource.cluster_view`).
* ``/api/traces/<request_id>``: one request's trace as JSON, or 404 when it is no longer (or never was) kept.
* ``/metrics``: the Prometheus text exposition.

The server binds the given host only; it has no authentication, so it belongs on a private address.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Protocol, cast
from urllib.parse import unquote, urlsplit

from cloudburst.errors import CloudburstError, TransportError

logger = logging.getLogger(__name__)

#: Content type of the Prometheus text exposition format.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATIC_PACKAGE = "cloudburst.management"
_STATIC_FOLDER = "static"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The page loads nothing from elsewhere and runs no inline script or style, so the policy can be this strict;
# it also keeps any text from the cluster that slipped past the page's escaping from running as script.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TRACE_PREFIX = "/api/traces/"
# How often the serving loop checks for shutdown, in seconds: the most close() waits.
_POLL_INTERVAL = 0.05
_STATIC_PREFIX = "/static/"


class DashboardSource(Protocol):
    """Where the dashboard's data comes from; called from the server's request threads, so it must be thread-safe."""

    def cluster_view(self) -> Mapping[str, object]:
        """The cluster as the page shows it: a JSON-able mapping.

        Keys: ``generated_at`` (epoch seconds), ``autoscale``, ``schedulers``, ``nodes`` (each with ``address``,
        ``state``, ``cache`` and ``executors``), ``functions``, ``dags`` (each with a ``series`` of points),
        ``errors``, ``decisions`` and ``traces`` (recent requests). Times are wall-clock seconds since the epoch;
        the page shows any missing or unexpected field as ``-``.
        """
        ...

    def trace_view(self, request_id: str) -> Mapping[str, object] | None:
        """One request's trace (``request_id``, ``name``, ``ok`` and its ``hops``), or ``None`` if it is not kept."""
        ...

    def metrics_text(self) -> bytes:
        """The metrics in the Prometheus text exposition format."""
        ...


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    """The packaged static files by name, read once: the only names ``/static/`` will ever answer."""
    assets: dict[str, _Asset] = {}
    folder = resources.files(_STATIC_PACKAGE).joinpath(_STATIC_FOLDER)
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        assets[entry.name] = _Asset(body, _CONTENT_TYPES[suffix], etag)
    return assets


def _plain(value: object) -> object:
    """The JSON encoder's fallback: the contract promises mappings, not dicts, and sets are natural for names."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections (for a second: a SYN retransmit) when a few browser
    # tabs and a Prometheus scrape arrive together.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], source: DashboardSource, assets: dict[str, _Asset]) -> None:
        self.source = source
        self.assets = assets
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a reverse lookup that can stall for seconds on a host
        # without DNS; the name is only used in CGI variables, so the address stands in for it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "cloudburst-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        server = cast(_Server, self.server)
        try:
            if path == "/":
                self._send_asset(server.assets.get("index.html"))
            elif path.startswith(_STATIC_PREFIX):
                self._send_asset(server.assets.get(unquote(path[len(_STATIC_PREFIX) :])))
            elif path == "/api/cluster":
                self._send_json(HTTPStatus.OK, server.source.cluster_view())
            elif path.startswith(_TRACE_PREFIX) and len(path) > len(_TRACE_PREFIX):
                self._send_trace(server.source, unquote(path[len(_TRACE_PREFIX) :]))
            elif path == "/metrics":
                self._send(HTTPStatus.OK, server.source.metrics_text(), METRICS_CONTENT_TYPE, "no-store")
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})
        except (ConnectionError, TimeoutError):
            # The browser went away mid-answer (a reload, a closed tab): nothing to answer to.
            logger.debug("dashboard client %s disconnected during %s", self.client_address[0], path)
        except Exception as exc:
            # A failing source must cost one answer, not the dashboard: the next poll may well succeed.
            logger.warning("dashboard request %s failed", path, exc_info=True)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def _send_trace(self, source: DashboardSource, request_id: str) -> None:
        trace = source.trace_view(request_id)
        if trace is None:
            message = f"no trace of request {request_id!r} (traces are kept for the most recent requests only)"
            self._send_json(HTTPStatus.NOT_FOUND, {"error": message})
        else:
            self._send_json(HTTPStatus.OK, trace)

    def _send_asset(self, asset: _Asset | None) -> None:
        if asset is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {urlsplit(self.path).path}"})
        elif self.headers.get("If-None-Match") == asset.etag:
            self._send(HTTPStatus.NOT_MODIFIED, b"", None, "no-cache", etag=asset.etag)
        else:
            # no-cache with an ETag: the browser revalidates on every load, so an upgraded page is never stale,
            # while an unchanged one costs a 304.
            self._send(HTTPStatus.OK, asset.body, asset.content_type, "no-cache", etag=asset.etag)

    def _send_json(self, status: HTTPStatus, value: object) -> None:
        try:
            # NaN and infinities are not JSON; the page's parser would reject the whole view for one of them.
            body = json.dumps(value, allow_nan=False, separators=(",", ":"), default=_plain).encode()
        except (TypeError, ValueError) as exc:
            logger.warning("dashboard answer to %s is not JSON-able", self.path, exc_info=True)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body = json.dumps({"error": f"the view is not JSON-able: {exc}"}).encode()
        self._send(status, body, "application/json", "no-store")

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str | None, cache: str, *, etag: str | None = None
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        if etag is not None:
            self.send_header("ETag", etag)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CONTENT_SECURITY_POLICY)
        self.end_headers()
        if status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)

    def _method_not_allowed(self) -> None:
        body = json.dumps({"error": f"method {self.command} not allowed; the dashboard is read-only"}).encode()
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A HEAD answer carries no body, whatever its status.
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = _method_not_allowed
    do_POST = _method_not_allowed
    do_PUT = _method_not_allowed
    do_DELETE = _method_not_allowed
    do_PATCH = _method_not_allowed
    do_OPTIONS = _method_not_allowed
    do_TRACE = _method_not_allowed
    do_CONNECT = _method_not_allowed

    def log_message(self, format: str, *args: object) -> None:
        # The base class writes every request to stderr; polling once a second would drown the process's log.
        logger.debug("dashboard %s: " + format, self.client_address[0], *args)


class DashboardServer:
    """The dashboard's HTTP server, bound on construction and serving from :meth:`start` until :meth:`close`.

    Args:
        source: Where the cluster view, traces and metrics come from.
        host: The address to bind (and only that one).
        port: The port to bind; 0 picks any free port (read it back from :attr:`url`).

    Attributes:
        url: The page's address, e.g. ``http://127.0.0.1:7080/``.

    Raises:
        TransportError: The address cannot be bound (in use, not local, not an address).
        CloudburstError: The page is missing from the installed package.
    """

    def __init__(self, source: DashboardSource, host: str, port: int) -> None:
        assets = _load_assets()
        if "index.html" not in assets:
            raise CloudburstError(f"the dashboard page is missing from the package ({_STATIC_PACKAGE}/static)")
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), source, assets)
        except (OSError, OverflowError, UnicodeError) as exc:
            raise TransportError(f"cannot serve the dashboard on {host}:{port}: {exc}") from exc
        bound_port = self._server.server_address[1]
        self.url = f"http://[{host}]:{bound_port}/" if ":" in host else f"http://{host}:{bound_port}/"
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Serve requests in a daemon thread; a second call does nothing.

        Raises:
            CloudburstError: The server was closed.
        """
        with self._lock:
            if self._closed:
                raise CloudburstError(f"the dashboard at {self.url} is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name="dashboard",
                daemon=True,
            )
            self._thread.start()
        logger.info("dashboard serving at %s", self.url)

    def close(self) -> None:
        """Stop serving and free the port; waits for the serving thread, and may be called more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            # shutdown() waits for serve_forever to notice, so it is only safe once that loop has been started.
            self._server.shutdown()
            thread.join()
        self._server.server_close()

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
