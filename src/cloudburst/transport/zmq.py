"""ZeroMQ helpers shared by every server and client."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import zmq

from cloudburst.errors import TransportError
from cloudburst.transport.security import SecurityConfig, curve_client, curve_server

logger = logging.getLogger(__name__)

#: Outgoing messages a PUSH socket may queue for a slow or absent peer before sends are dropped.
SEND_HIGH_WATER_MARK = 10_000
#: How long closing a socket may wait to flush queued messages.
LINGER_MS = 1_000


def bind(socket: zmq.Socket[bytes], host: str, port: int, what: str = "") -> int:
    """Binds ``socket`` to ``tcp://host:port``; port 0 picks a free port.

    Args:
        socket: The socket to bind.
        host: The address to bind.
        port: The port, or 0 for a free one.
        what: Names the port in the error (e.g. "the scheduler's connect port").

    Returns:
        The bound port.

    Raises:
        TransportError: The address is in use or cannot be bound; the message names it (and ``what``), and why.
    """
    try:
        if port == 0:
            return socket.bind_to_random_port(f"tcp://{host}")
        socket.bind(f"tcp://{host}:{port}")
    except zmq.ZMQError as error:
        named = f" ({what})" if what else ""
        if error.errno == zmq.EADDRINUSE:
            reason = "the address is already in use (another cluster or another program listens there)"
        elif error.errno == zmq.EADDRNOTAVAIL:
            reason = "no network interface of this machine has that address"
        else:
            reason = str(error)
        raise TransportError(f"cannot bind tcp://{host}:{port or '*'}{named}: {reason}") from None
    return port


def pull_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    max_message_bytes: int,
    security: SecurityConfig | None = None,
    *,
    pushed_by_address: bool = False,
) -> zmq.Socket[bytes]:
    """A PULL socket for a server's input: oversized messages are refused by the transport, and closing it never
    waits (a server's inbound queue holds nothing worth flushing).

    With ``security`` it is a CURVE server, or, when servers push to it at an address they were told (as to a reply
    address, ``pushed_by_address``), a CURVE client of theirs.
    """
    socket = context.socket(zmq.PULL)
    (curve_client if pushed_by_address else curve_server)(socket, security)
    socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    socket.setsockopt(zmq.LINGER, 0)
    return socket


def reply_socket(
    context: zmq.Context[zmq.Socket[bytes]], host: str, security: SecurityConfig | None = None
) -> tuple[zmq.Socket[bytes], str]:
    """A client's PULL socket on a random port of ``host``, where servers push replies, and its address; closing it
    never waits. With ``security`` it is a CURVE client: only a holder of the cluster key can push to it.

    Raises:
        TransportError: ``host`` cannot be bound (not an address of this machine).
    """
    socket = context.socket(zmq.PULL)
    curve_client(socket, security)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        return socket, f"tcp://{host}:{bind(socket, host, 0, 'the reply address')}"
    except TransportError:
        socket.close(linger=0)
        raise


def drain(socket: zmq.Socket[bytes], limit: int) -> list[bytes]:
    """Takes up to ``limit`` waiting messages without blocking.

    Servers drain in turns: enough per turn to batch bursts, a bound so that one busy socket cannot starve the
    others on the same loop.
    """
    messages = []
    for _ in range(limit):
        try:
            messages.append(socket.recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return messages


def drain_multipart(socket: zmq.Socket[bytes], limit: int) -> list[list[bytes]]:
    """Like :func:`drain`, for sockets whose messages have several frames (ROUTER envelopes)."""
    messages = []
    for _ in range(limit):
        try:
            messages.append(socket.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    return messages


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Splits a ROUTER message into its routing envelope (identities and the empty delimiter) and its body.

    A REQ peer sends ``[identity, b"", payload]``; a DEALER may omit the delimiter, in which case the first frame
    alone is the envelope, so that even a malformed message can be answered.
    """
    try:
        delimiter = frames.index(b"", 1)
    except ValueError:
        return frames[:1], frames[1:]
    return frames[: delimiter + 1], frames[delimiter + 1 :]


class PushSocketCache:
    """Connected PUSH sockets by destination, least recently used evicted past ``capacity``.

    Bounded so that a server answering many short-lived clients does not accumulate sockets forever.

    Args:
        context: The ZeroMQ context to create sockets in.
        capacity: The most sockets kept open.
        linger_ms: How long closing may wait to flush queued messages: a server flushes its replies, a client
            that closes abandons its requests.
        security: CURVE keys: pushes to a server's port are CURVE clients, pushes to a reply address CURVE servers.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        capacity: int = 1024,
        linger_ms: int = LINGER_MS,
        security: SecurityConfig | None = None,
    ) -> None:
        self._context = context
        self._capacity = capacity
        self._linger_ms = linger_ms
        self._security = security
        self._sockets: OrderedDict[tuple[str, bool], zmq.Socket[bytes]] = OrderedDict()

    def send(self, address: str, payload: bytes, *, reply: bool = False) -> bool:
        """Pushes ``payload`` to ``address`` without blocking.

        Args:
            address: The destination endpoint.
            payload: The message.
            reply: ``address`` came from a request (a reply address, or a cache's update address), so it is bound
                by a CURVE client and this end must be the CURVE server.

        Returns:
            False when the destination's queue is full and the message was dropped.

        Raises:
            TransportError: ``address`` is not a valid endpoint.
        """
        return self.send_multipart(address, (payload,), reply=reply)

    def send_multipart(self, address: str, frames: Sequence[bytes], *, reply: bool = False) -> bool:
        """Pushes a message of several ``frames`` to ``address`` without blocking; see :meth:`send`.

        Raises:
            TransportError: ``address`` is not a valid endpoint.
        """
        key = (address, reply)
        socket = self._sockets.get(key)
        if socket is None:
            socket = self._context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, self._linger_ms)
            socket.setsockopt(zmq.SNDHWM, SEND_HIGH_WATER_MARK)
            (curve_server if reply else curve_client)(socket, self._security)
            try:
                socket.connect(address)
            except zmq.ZMQError as error:
                socket.close(linger=0)
                raise TransportError(f"cannot connect to {address!r}: {error}") from None
            self._sockets[key] = socket
            if len(self._sockets) > self._capacity:
                _, evicted = self._sockets.popitem(last=False)
                evicted.close()
        else:
            self._sockets.move_to_end(key)
        try:
            # Without copying: libzmq sends from the bytes objects themselves (pyzmq still copies small frames,
            # where that is cheaper), so a big value is not copied once more on its way out.
            if len(frames) == 1:
                socket.send(frames[0], zmq.NOBLOCK, copy=False)
            else:
                socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            logger.warning("dropped a message to %s: its queue is full", address)
            return False
        return True

    def close(self) -> None:
        """Closes every cached socket."""
        for socket in self._sockets.values():
            socket.close()
        self._sockets.clear()
