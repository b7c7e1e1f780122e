"""Asking the management service: for the scheduler list from inside a server loop, without ever blocking it, and
for a node's drain, from an operator's command (:func:`request_drain`).

Schedulers and executors ask once per report period (the original's schedulers asked with a blocking REQ and a
500 ms timeout; its executors never asked). Here the question goes out on a DEALER socket that the server
polls alongside its other sockets, and the answer, whenever it comes, is handed to the server's state as an event.
A DEALER speaks to the management service's ROUTER exactly as a REQ client would (an empty delimiter frame, then
the request), so the original's REQ clients and this one are answered alike.
"""

from __future__ import annotations

import json
from typing import Any

import zmq

from cloudburst.config import RuntimePorts
from cloudburst.errors import DeadlineExceeded, DecodeError, InvalidRequest, TransportError
from cloudburst.protocol import codec
from cloudburst.transport.guard import RejectLog
from cloudburst.transport.security import SecurityConfig, curve_client
from cloudburst.transport.zmq import drain_multipart

#: Hosts taken from one answer; a longer list is cut (a real deployment has a handful of schedulers).
MAX_LISTED_SCHEDULERS = 1_024
#: Largest accepted answer.
MAX_ANSWER_BYTES = 1 << 20
#: Questions queued for a connected management service before more are dropped: one outstanding is enough.
_QUEUED_QUESTIONS = 4
_MAX_HOST_LENGTH = 255


def parse_scheduler_list(payload: bytes) -> tuple[str, ...]:
    """The scheduler hosts in a management service's answer, de-duplicated, in order.

    Raises:
        DecodeError: The answer is not a ``StringSet`` of plausible host names.
    """
    hosts = codec.decode_string_set(payload, "scheduler list")
    if len(hosts) > MAX_LISTED_SCHEDULERS:
        raise DecodeError("scheduler list", f"{len(hosts)} hosts, more than {MAX_LISTED_SCHEDULERS}")
    for host in hosts:
        if not host or len(host) > _MAX_HOST_LENGTH or any(c.isspace() or c == "/" for c in host):
            raise DecodeError("scheduler list", f"{host[:80]!r} is not a host")
    return tuple(dict.fromkeys(hosts))


class SchedulerListClient:
    """A DEALER socket connected to the management service's scheduler-list port.

    Args:
        context: The server's ZeroMQ context.
        management: The management service's host.
        ports: The deployment's port layout.
        security: CURVE keys; ``None``: plaintext.

    Raises:
        TransportError: ``management`` does not make a valid endpoint.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        management: str,
        ports: RuntimePorts,
        security: SecurityConfig | None = None,
    ) -> None:
        self.socket: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        curve_client(self.socket, security)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Questions wait only for a live connection: while the service is down they are dropped, not queued up to
        # be answered all at once when it comes back.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.SNDHWM, _QUEUED_QUESTIONS)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_ANSWER_BYTES)
        self.endpoint = ports.management_schedulers_endpoint(management)
        try:
            self.socket.connect(self.endpoint)
        except zmq.ZMQError as error:
            self.socket.close()
            raise TransportError(f"cannot connect to the management service at {self.endpoint}: {error}") from None

    def ask(self) -> bool:
        """Sends a question without blocking.

        Returns:
            False when it could not be sent now (no connection yet, or earlier questions still queued).
        """
        try:
            self.socket.send_multipart([b"", b""], zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def answers(self, rejected: RejectLog) -> list[tuple[str, ...]]:
        """The answers that arrived, oldest first, without blocking; malformed ones are counted in ``rejected``."""
        answers = []
        for frames in drain_multipart(self.socket, 16):
            try:
                # What a REQ would get: the empty delimiter, then the answer.
                if len(frames) != 2 or frames[0]:
                    raise DecodeError("scheduler list", f"expected a delimiter and one frame, got {len(frames)} frames")
                answers.append(parse_scheduler_list(frames[1]))
            except DecodeError as error:
                rejected(f"scheduler list from {self.endpoint}", str(error))
        return answers

    def close(self) -> None:
        """Closes the socket."""
        self.socket.close()


def request_drain(endpoint: str, node: str, *, timeout: float) -> dict[str, Any]:
    """Asks the management service at ``endpoint`` (its drain port) to drain ``node``; returns its answer.

    Raises:
        InvalidRequest: The service refused the drain (the message says why).
        DeadlineExceeded: No answer within ``timeout`` seconds.
    """
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(endpoint)
        socket.send(node.encode())
        if not socket.poll(int(timeout * 1000)):
            raise DeadlineExceeded(
                f"the management service at {endpoint} did not answer within {timeout:g} s; is the cluster running?"
            )
        answer: dict[str, Any] = json.loads(socket.recv())
    finally:
        socket.close()
        context.term()
    if not answer.get("ok"):
        raise InvalidRequest(str(answer.get("error", "the management service refused the drain")))
    return answer
