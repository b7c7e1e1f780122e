"""The bare pyzmq floors of :mod:`benchmarks.runtime_latency`, plus a 1 MB echo: what the sockets alone cost."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from benchmarks.contenders import CHAIN, DAG, LARGE, LARGE_ARGUMENT, NULL, THROUGHPUT, Contender, Op
from benchmarks.floor import FloorChain, FloorServer, PushPullClient, ReqRepClient
from benchmarks.runtime_latency import FLOOR_PAYLOAD, echo_burst, echo_op

NAME = "floor"


@contextlib.contextmanager
def started() -> Iterator[Contender]:
    """Starts a REQ/REP echo server, a two-hop PUSH chain and a PUSH/PULL echo server, each in its own process."""
    with contextlib.ExitStack() as stack:
        reqrep = ReqRepClient(stack.enter_context(FloorServer("reqrep")).endpoint)
        stack.callback(reqrep.close)
        chain_client = PushPullClient()
        stack.callback(chain_client.close)
        chain_client.connect(stack.enter_context(FloorChain(chain_client.reply_address, hops=2)).endpoint)
        # Unlimited queues: the whole burst is sent before any echo is read.
        burst_client = PushPullClient(high_water_mark=0)
        stack.callback(burst_client.close)
        burst_client.connect(stack.enter_context(FloorServer("pushpull", burst_client.reply_address)).endpoint)
        if reqrep.round_trip(LARGE_ARGUMENT) != LARGE_ARGUMENT:
            raise RuntimeError("the REQ/REP floor did not echo the 1 MB payload")
        payload = f"{len(FLOOR_PAYLOAD)}-byte"
        yield Contender(
            NAME,
            "bare pyzmq servers, one process each",
            {
                NULL: Op(echo_op(reqrep, "the REQ/REP floor"), f"{payload} REQ/REP echo"),
                CHAIN: Op(
                    echo_op(chain_client, "the 2-hop floor chain"),
                    f"{payload} message PUSHed through two forwarding processes back to the client",
                ),
                DAG: Op(
                    echo_op(chain_client, "the 2-hop floor chain"),
                    f"{payload} message PUSHed through two forwarding processes back to the client",
                ),
                LARGE: Op(lambda _index: reqrep.round_trip(LARGE_ARGUMENT), "1 MB REQ/REP echo"),
                THROUGHPUT: Op(echo_burst(burst_client), f"n {payload} PUSHes to an echo server, then n PULLs"),
            },
        )
