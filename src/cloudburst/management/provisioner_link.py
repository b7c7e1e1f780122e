"""A provisioner in another process: the management service asks, the process that owns the nodes answers.

A local cluster's supervisor (:class:`~cloudburst.cluster.local.LocalCluster`, which ``cloudburst up`` and
``cloudburst.local()`` run) starts and stops node processes itself, while the management service runs as a process
of its own like every other role. :class:`ProvisionerLinkServer` serves the supervisor's provisioner on a loopback
REP socket; :class:`RemoteProvisioner` is the management service's end. Requests and answers are small JSON
documents: ``{"call": "add_nodes", "count": n}`` -> ``{"nodes": [...]}``, ``{"call": "drain" | "release", "node":
...}`` -> ``{}``, and ``{"error": "..."}`` for a call that failed.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import zmq

from cloudburst.errors import CloudburstError, ProvisioningError
from cloudburst.transport.zmq import bind

if TYPE_CHECKING:
    from cloudburst.management.server import Provisioner

logger = logging.getLogger(__name__)

#: Seconds a call may take: starting nodes launches processes and waits for them to listen.
CALL_TIMEOUT = 300.0
_POLL_MS = 100


class ProvisionerLinkServer:
    """Serves ``provisioner`` to a management service in another process, from a daemon thread.

    Args:
        provisioner: What the calls run on.
        host: The address to bind (a free port is picked); :attr:`endpoint` says where.

    Raises:
        TransportError: The address cannot be bound.
    """

    def __init__(self, provisioner: Provisioner, host: str) -> None:
        self._provisioner = provisioner
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket = self._context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self.endpoint = f"tcp://{host}:{bind(self._socket, host, 0)}"
        except CloudburstError:
            self._socket.close()
            self._context.term()
            raise
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="provisioner link", daemon=True)

    def start(self) -> None:
        """Starts answering."""
        self._thread.start()

    def close(self) -> None:
        """Stops answering and frees the port; idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if not self._socket.closed:
            self._socket.close()
            self._context.term()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            if not self._socket.poll(_POLL_MS):
                continue
            try:
                request = json.loads(self._socket.recv())
                answer = self._answer(request)
            except (ValueError, TypeError, KeyError) as error:
                answer = {"error": f"malformed provisioner request: {error}"}
            except CloudburstError as error:
                answer = {"error": str(error)}
            self._socket.send(json.dumps(answer).encode())

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        call = request["call"]
        if call == "add_nodes":
            return {"nodes": self._provisioner.add_nodes(int(request["count"]))}
        if call == "drain":
            self._provisioner.drain(str(request["node"]))
            return {}
        if call == "release":
            self._provisioner.release(str(request["node"]))
            return {}
        raise ValueError(f"unknown call {call!r}")


class RemoteProvisioner:
    """The management service's end of a :class:`ProvisionerLinkServer`.

    Args:
        endpoint: The link server's endpoint.
        timeout: Seconds a call may take.
    """

    def __init__(self, endpoint: str, timeout: float = CALL_TIMEOUT) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._lock = threading.Lock()

    def add_nodes(self, count: int) -> list[str]:
        """Asks for ``count`` nodes; returns those that are up.

        Raises:
            ProvisioningError: The call failed or went unanswered.
        """
        return [str(node) for node in self._call({"call": "add_nodes", "count": count}).get("nodes", [])]

    def drain(self, node: str) -> None:
        """Tells the owner that ``node`` is being drained.

        Raises:
            ProvisioningError: The call failed or went unanswered; the node then stays active.
        """
        self._call({"call": "drain", "node": node})

    def release(self, node: str) -> None:
        """Tells the owner that ``node`` has drained and can go.

        Raises:
            ProvisioningError: The call failed or went unanswered.
        """
        self._call({"call": "release", "node": node})

    def close(self) -> None:
        """Frees the sockets."""
        self._context.destroy(linger=0)

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        what = f"{request['call']} through {self.endpoint}"
        # One socket per call: a REQ socket whose answer never came cannot be used again.
        with self._lock, self._context.socket(zmq.REQ) as socket:
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(self.endpoint)
            socket.send(json.dumps(request).encode())
            if not socket.poll(int(self._timeout * 1000)):
                raise ProvisioningError(what, f"no answer within {self._timeout:g} s")
            try:
                answer: dict[str, Any] = json.loads(socket.recv())
            except ValueError as error:
                raise ProvisioningError(what, f"a malformed answer ({error})") from None
        if "error" in answer:
            raise ProvisioningError(what, str(answer["error"]))
        return answer
