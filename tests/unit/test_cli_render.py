"""What ``cloudburst status`` and the progress of ``up`` and ``down`` look like, rendered to strings."""

import io
import json

import pytest
from rich.console import Console

from cloudburst.cli.cluster import scheduler_host
from cloudburst.cli.progress import STARTED, Steps
from cloudburst.cli.render import status_document, status_view
from cloudburst.config import RuntimePorts
from cloudburst.errors import ConfigError
from cloudburst.protocol.runtime_messages import ClusterStatus, ExecutorType, ThreadStatus

NODE = "127.31.4.15"
VIEW = ClusterStatus(
    executors=(
        ThreadStatus(NODE, 2, ("square",), 0.5),
        ThreadStatus(NODE, 0, ("incr", "f10", "f2"), 0.25),
        ThreadStatus(NODE, 1, (), 0.0, running=False),
        ThreadStatus("127.31.4.16", 3, ("render",), 0.95, type=ExecutorType.GPU),
    ),
    dags=("pipeline", "fan_in"),
    functions=("square", "incr", "f2", "f10", "render", "[bold]literal"),
)


def rendered(renderable: object, width: int = 100, terminal: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_status_shows_each_executor_with_its_state_utilization_and_pins():
    text = rendered(status_view(NODE, VIEW))
    assert text.splitlines()[0] == f"Scheduler {NODE}: 4 executors (3 running), 2 DAGs, 6 functions"
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("127.")}
    assert rows[f"{NODE}:0"][:4] == [f"{NODE}:0", "CPU", "running", "25.0%"]
    # Numbers in names sort by value.
    assert " ".join(rows[f"{NODE}:0"][4:]) == "f2, f10, incr"
    assert rows[f"{NODE}:1"][1:] == ["CPU", "departing", "0.0%", "-"]
    assert rows["127.31.4.16:3"][1:] == ["GPU", "running", "95.0%", "render"]
    # Executors come by node, then tid.
    assert list(rows) == [f"{NODE}:0", f"{NODE}:1", f"{NODE}:2", "127.31.4.16:3"]


def test_status_lists_dags_and_functions_after_the_executors():
    text = rendered(status_view(NODE, VIEW))
    assert text.index("EXECUTOR") < text.index("DAGs (2)") < text.index("Functions (6)")
    assert "fan_in, pipeline" in text


def test_names_are_shown_as_named_never_as_markup():
    assert "[bold]literal" in rendered(status_view(NODE, VIEW))


@pytest.mark.parametrize("terminal", [False, True])
def test_status_fits_an_80_column_terminal(terminal):
    many = ClusterStatus(
        executors=tuple(
            ThreadStatus(f"127.255.255.{n}", tid, tuple(f"function_{i}" for i in range(12)), 1.0)
            for n in range(100, 103)
            for tid in range(10, 13)
        ),
        functions=tuple(f"a_rather_long_function_name_{i}" for i in range(20)),
    )
    text = rendered(status_view("127.255.255.100", many), width=80, terminal=terminal)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    # The executor column never wraps, whatever the pinned functions take.
    assert text.count("127.255.255.101:11") == 1
    assert "function_11" in text


def test_a_cluster_without_executors_says_so():
    text = rendered(status_view(NODE, ClusterStatus()))
    assert "No executor has reported yet." in text
    assert "DAGs (0)" in text


def test_status_json_is_sorted_and_complete():
    document = status_document(NODE, VIEW)
    assert json.loads(json.dumps(document)) == document
    assert document["dags"] == ["fan_in", "pipeline"]
    assert document["functions"] == ["[bold]literal", "f2", "f10", "incr", "render", "square"]
    first, departing, _, gpu = document["executors"]  # type: ignore[misc]
    assert first == {
        "node": NODE,
        "tid": 0,
        "kind": "CPU",
        "state": "running",
        "utilization": 0.25,
        "pinned": ["f2", "f10", "incr"],
    }
    assert departing["state"] == "departing"
    assert gpu["kind"] == "GPU"


@pytest.mark.parametrize(
    ("given", "host"),
    [
        ("127.0.0.3", "127.0.0.3"),
        ("127.0.0.3:5000", "127.0.0.3"),
        ("tcp://127.0.0.3:5000", "127.0.0.3"),
        ("::1", "::1"),
    ],
)
def test_scheduler_addresses_accept_a_host_or_the_connect_endpoint(given, host):
    assert scheduler_host(given, RuntimePorts()) == host


def test_a_scheduler_address_with_another_port_is_refused():
    with pytest.raises(ConfigError, match="answer on port 5000"):
        scheduler_host("127.0.0.3:5012", RuntimePorts())


def test_steps_are_plain_lines_without_a_terminal():
    console = Console(file=io.StringIO(), width=60, force_terminal=False)
    with Steps(console) as steps:
        steps.report("the KVS on 127.0.0.9", False)
        steps.report("the KVS on 127.0.0.9", True)
        steps.begin("node 127.0.0.9: a cache and 3 executors")
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    # No spinner text, no escape codes, one line per finished step (none wrapped, even past the width).
    assert len(lines) == 2
    assert lines[0].startswith(f"{STARTED}the KVS on 127.0.0.9 (")
    assert lines[1].startswith(f"{STARTED}node 127.0.0.9: a cache and 3 executors (")
    assert all("\x1b" not in line for line in lines)


def start_scheduler_that_fails(steps: Steps) -> None:
    with steps:
        steps.begin("the scheduler on 127.0.0.9")
        raise RuntimeError("port busy")


def test_a_step_cut_short_by_an_error_is_not_reported_as_started():
    console = Console(file=io.StringIO(), force_terminal=False)
    with pytest.raises(RuntimeError):
        start_scheduler_that_fails(Steps(console))
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_steps_on_a_terminal_are_ticked():
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    with Steps(console) as steps:
        steps.begin("the KVS on 127.0.0.9")
    assert "✓ started the KVS on 127.0.0.9 (" in console.file.getvalue()  # type: ignore[attr-defined]
