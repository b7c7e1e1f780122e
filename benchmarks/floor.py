"""Bare pyzmq echo servers: the transport floor every Cloudburst round trip is measured against.

The servers do the socket work of a KVS request (receive bytes, send them back) and nothing else, so
``latency(KVS) - latency(floor)`` is what the KVS logic and its Python layers cost. Each runs in its own
process, like a real KVS node, and is started through :class:`FloorServer`::

    python -m benchmarks.floor pushpull --reply tcp://127.0.0.1:5000  # PULL -> PUSH to a fixed reply address
    python -m benchmarks.floor reqrep                                 # REP echo

A ``pushpull`` server's reply address can be another one's PULL endpoint: :class:`FloorChain` links several that
way into a multi-hop chain (client -> A -> B -> client), the transport floor of a DAG whose functions run in
different executors.

Both bind a free port on 127.0.0.1, print the bound endpoint as their first stdout line, and exit on their own
once the ``--parent`` process (default: theirs) is gone, so a killed benchmark leaves no servers behind.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
from pathlib import Path

import zmq

HOST = "127.0.0.1"
#: The directory holding the ``benchmarks`` package, so children import it from any working directory.
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: How often an idle server checks whether its parent is gone (so it never outlives the benchmark).
_ORPHAN_CHECK_MS = 500
#: How long a client waits for an echo before giving up instead of hanging the benchmark.
REPLY_TIMEOUT_MS = 5_000


# -- servers (child side) -----------------------------------------------------------------------------------------


def _serve(socket: zmq.Socket[bytes], reply: zmq.Socket[bytes], parent: int) -> None:
    """Echoes every message received on ``socket`` through ``reply`` until process ``parent`` is gone."""
    while True:
        if not socket.poll(_ORPHAN_CHECK_MS):
            if os.getppid() != parent:
                return
            continue
        reply.send(socket.recv())


def serve_pushpull(reply_address: str, parent: int) -> None:
    """PULL on a free port, PUSH each message unchanged to ``reply_address`` (the KVS socket pattern).

    ``reply_address`` is the client's PULL endpoint, or the next hop's in a :class:`FloorChain`.
    """
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    for socket in (pull, push):
        socket.setsockopt(zmq.LINGER, 0)
    push.connect(reply_address)
    port = pull.bind_to_random_port(f"tcp://{HOST}")
    print(f"tcp://{HOST}:{port}", flush=True)
    try:
        _serve(pull, push, parent)
    finally:
        context.destroy(linger=0)


def serve_reqrep(parent: int) -> None:
    """REP on a free port, answering each request with its own bytes."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rep = context.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    port = rep.bind_to_random_port(f"tcp://{HOST}")
    print(f"tcp://{HOST}:{port}", flush=True)
    try:
        _serve(rep, rep, parent)
    finally:
        context.destroy(linger=0)


# -- parent side --------------------------------------------------------------------------------------------------


class FloorServer:
    """A floor server child process; the context manager starts it and always stops it.

    Args:
        kind: ``"pushpull"`` or ``"reqrep"``.
        reply_address: Where a ``pushpull`` server pushes its echoes (the client's bound PULL endpoint).
        startup_timeout: Seconds to wait for the child to report its endpoint.
    """

    def __init__(self, kind: str, reply_address: str | None = None, *, startup_timeout: float = 15.0) -> None:
        if kind not in ("pushpull", "reqrep"):
            raise ValueError(f"unknown floor server kind {kind!r}")
        if (kind == "pushpull") != (reply_address is not None):
            raise ValueError("a pushpull server needs a reply address, a reqrep server none")
        self._args = [sys.executable, "-m", "benchmarks.floor", kind, "--parent", str(os.getpid())]
        if reply_address is not None:
            self._args += ["--reply", reply_address]
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def __enter__(self) -> FloorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None, "the floor server is not running"
        return self._process.pid

    def start(self) -> str:
        """Starts the child and returns the endpoint it bound."""
        inherited = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), inherited]))}
        self._process = subprocess.Popen(self._args, stdout=subprocess.PIPE, env=env)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], self._startup_timeout)
        line = self._process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("tcp://"):
            self.stop()
            raise RuntimeError(f"floor server {self._args[3]} did not report an endpoint (got {line!r})")
        self.endpoint = line
        return line

    def stop(self, timeout: float = 5.0) -> None:
        """Terminates the child, killing it if it does not exit in time."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


class FloorChain:
    """``hops`` ``pushpull`` servers in a row, the last one replying to ``reply_address``; started and stopped together.

    A message sent to :attr:`endpoint` crosses every server once before it reaches the client, the way a DAG's
    request crosses one executor per function.

    Args:
        reply_address: The client's bound PULL endpoint.
        hops: How many servers the chain has.
    """

    def __init__(self, reply_address: str, hops: int = 2) -> None:
        if hops < 1:
            raise ValueError(f"a chain needs at least one hop, not {hops}")
        self._reply_address = reply_address
        self._hops = hops
        self.servers: list[FloorServer] = []
        self.endpoint = ""

    def __enter__(self) -> FloorChain:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """The servers' process ids, first hop first."""
        return [server.pid for server in self.servers]

    def start(self) -> str:
        """Starts the servers from the last hop back to the first; returns the first hop's endpoint."""
        next_hop = self._reply_address
        try:
            for _ in range(self._hops):
                server = FloorServer("pushpull", next_hop)
                next_hop = server.start()
                self.servers.insert(0, server)
        except BaseException:
            self.stop()
            raise
        self.endpoint = next_hop
        return next_hop

    def stop(self) -> None:
        """Stops every server of the chain."""
        servers, self.servers = self.servers, []
        for server in servers:
            server.stop()


class PushPullClient:
    """The client half of the PUSH/PULL floor: a bound PULL for replies and a PUSH to the server.

    Args:
        high_water_mark: Queue limit of both sockets, in messages (``0``: unlimited); zmq's default when ``None``.
            Sending many messages before reading any replies needs a limit above their number, or the server,
            unable to deliver its echoes, stops reading and the client blocks for good.
    """

    def __init__(self, high_water_mark: int | None = None) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._pull = self._context.socket(zmq.PULL)
        self._push = self._context.socket(zmq.PUSH)
        for socket in (self._pull, self._push):
            socket.setsockopt(zmq.LINGER, 0)
            if high_water_mark is not None:
                socket.setsockopt(zmq.SNDHWM, high_water_mark)
                socket.setsockopt(zmq.RCVHWM, high_water_mark)
        self._pull.setsockopt(zmq.RCVTIMEO, REPLY_TIMEOUT_MS)
        self.reply_address = f"tcp://{HOST}:{self._pull.bind_to_random_port(f'tcp://{HOST}')}"

    def connect(self, endpoint: str) -> None:
        """Connects the PUSH socket to the server's PULL endpoint."""
        self._push.connect(endpoint)

    def round_trip(self, payload: bytes) -> bytes:
        """Sends ``payload`` and waits for its echo (raises ``zmq.Again`` after the reply timeout)."""
        self._push.send(payload)
        return self._pull.recv()

    def send(self, payload: bytes) -> None:
        """Sends ``payload`` without waiting for its echo."""
        self._push.send(payload)

    def receive(self) -> bytes:
        """The next echo (raises ``zmq.Again`` after the reply timeout)."""
        return self._pull.recv()

    def close(self) -> None:
        """Closes the sockets."""
        self._context.destroy(linger=0)


class ReqRepClient:
    """The client half of the REQ/REP floor."""

    def __init__(self, endpoint: str) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._req = self._context.socket(zmq.REQ)
        self._req.setsockopt(zmq.LINGER, 0)
        self._req.setsockopt(zmq.RCVTIMEO, REPLY_TIMEOUT_MS)
        self._req.connect(endpoint)

    def round_trip(self, payload: bytes) -> bytes:
        """Sends ``payload`` and waits for its echo (raises ``zmq.Again`` after the reply timeout)."""
        self._req.send(payload)
        return self._req.recv()

    def close(self) -> None:
        """Closes the socket."""
        self._context.destroy(linger=0)


def main(argv: list[str] | None = None) -> None:
    """Runs one floor server until terminated."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="kind", required=True)
    pushpull = commands.add_parser("pushpull", help="PULL -> PUSH echo to a fixed reply address")
    pushpull.add_argument("--reply", required=True, help="the client's PULL endpoint")
    reqrep = commands.add_parser("reqrep", help="REP echo")
    for command in (pushpull, reqrep):
        command.add_argument("--parent", type=int, default=os.getppid(), help="exit once this process is gone")
    args = parser.parse_args(argv)
    try:
        if args.kind == "pushpull":
            serve_pushpull(args.reply, args.parent)
        else:
            serve_reqrep(args.parent)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
