"""How `cloudburst trace` decides a trace is complete and renders it."""

import io

from rich.console import Console

from cloudburst.cli.trace import complete, render_trace

T0 = 1_800_000_000.0


def hop(role, function=None, start=0.0, duration_ms=1.0, ok=True, **extra):
    return {
        "role": role,
        "node": "10.0.0.5:0" if role == "executor" else "10.0.0.1",
        "function": function,
        "dag": "d",
        "start": T0 + start,
        "duration_ms": duration_ms,
        "queue_ms": 0.1 if role == "executor" else None,
        "ok": ok,
        "error": None if ok else "KvsError: gone",
        "traceback": None if ok else "Traceback (most recent call last):\n  boom",
        "detail": extra.pop("detail", ""),
        "stages": extra.pop("stages", 0),
        "reads": extra.pop("reads", []),
    }


PLACEMENT = hop("scheduler", detail="a -> 10.0.0.5:0, b -> 10.0.0.5:1, c -> 10.0.0.5:2", stages=3)


def test_a_dag_trace_is_complete_once_every_placed_stage_reported_or_one_failed():
    assert not complete({"hops": [PLACEMENT, hop("executor", "a")]})
    assert complete({"hops": [PLACEMENT, hop("executor", "a"), hop("executor", "b"), hop("executor", "c")]})
    assert complete({"hops": [PLACEMENT, hop("executor", "a", ok=False)]})
    # A direct call has no scheduler hop: its one executor hop is the whole request.
    assert complete({"hops": [hop("executor", "f")]})
    assert not complete({"hops": []})


def render(trace):
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_trace(trace))
    return console.file.getvalue()


def test_the_table_names_every_hop_its_reads_and_a_failures_traceback():
    reads = [{"key": "k", "source": "cache", "hit": True, "version": "lww x"}]
    trace = {
        "request_id": "r1",
        "name": "d",
        "ok": False,
        "duration_ms": 3.5,
        "hops": [
            PLACEMENT,
            hop("executor", "a", start=0.001, reads=reads),
            hop("executor", "b", start=0.002, ok=False),
        ],
    }
    text = render(trace)
    assert "request r1  d  failed  3.50 ms, 3 hops" in text
    assert "a -> 10.0.0.5:0" in text
    assert "k (cache hit, lww x)" in text
    assert "KvsError: gone" in text
    assert "Traceback (most recent call last):" in text
    rows = [line for line in text.splitlines() if "executor" in line]
    # The waterfall puts later hops further right.
    assert rows[0].index("█") < rows[1].index("█")
