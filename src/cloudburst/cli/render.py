"""What the ``cloudburst`` commands show, as rich renderables and JSON documents; no I/O here.

Every name that comes from the cluster (nodes, functions, DAGs) goes into a :class:`~rich.text.Text`, never into
markup, so a function called ``[bold]x`` is shown as it is named.
"""

from __future__ import annotations

import re

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cloudburst.protocol.runtime_messages import ClusterStatus, ExecutorType, ThreadStatus

_DIGITS = re.compile(r"(\d+)")
#: An executor's state as ``status`` names it.
RUNNING = "running"
DEPARTING = "departing"


def _sorted_executors(view: ClusterStatus) -> list[ThreadStatus]:
    return sorted(view.executors, key=lambda executor: (_natural(executor.ip), executor.tid))


def _natural(name: str) -> tuple[tuple[int, str], ...]:
    """A sort key that orders the numbers in names by value: ``f2`` before ``f10``, 127.0.0.9 before 127.0.0.10."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in _DIGITS.split(name) if part)


def executor_state(executor: ThreadStatus) -> str:
    """``running``, or ``departing`` for an executor that is draining before it exits."""
    return RUNNING if executor.running else DEPARTING


def executor_kind(executor: ThreadStatus) -> str:
    """``CPU`` or ``GPU``."""
    return "GPU" if executor.type is ExecutorType.GPU else "CPU"


def status_document(scheduler: str, view: ClusterStatus) -> dict[str, object]:
    """``cloudburst status --json``: the scheduler's view, executors sorted by node and tid, names sorted."""
    return {
        "scheduler": scheduler,
        "executors": [
            {
                "node": executor.ip,
                "tid": executor.tid,
                "kind": executor_kind(executor),
                "state": executor_state(executor),
                "utilization": round(executor.utilization, 4),
                "pinned": sorted(executor.functions, key=_natural),
            }
            for executor in _sorted_executors(view)
        ],
        "dags": sorted(view.dags, key=_natural),
        "functions": sorted(view.functions, key=_natural),
    }


def _names(names: tuple[str, ...] | list[str]) -> Text:
    """Names joined by commas (a dash for none), wrapping between names rather than inside one."""
    if not names:
        return Text("-", style="dim")
    return Text(", ").join(Text(name) for name in sorted(names, key=_natural))


def _utilization(value: float) -> Text:
    # The colours only flag load; the figure carries the information, so the plain output loses nothing.
    style = "red" if value >= 0.9 else "yellow" if value >= 0.7 else ""
    return Text(f"{value:.1%}", style=style)


def executors_table(view: ClusterStatus) -> Table:
    """One row per executor: ``node:tid`` (how executors are addressed), kind, state, utilization, pins.

    Fits an 80-column terminal: every column but the pinned functions is narrow and never wraps; the pinned
    functions take the rest and wrap between names.
    """
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, show_edge=False)
    table.add_column("EXECUTOR", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("UTIL", justify="right", no_wrap=True)
    table.add_column("PINNED FUNCTIONS", overflow="fold")
    for executor in _sorted_executors(view):
        state = executor_state(executor)
        table.add_row(
            Text(f"{executor.ip}:{executor.tid}"),
            Text(executor_kind(executor), style="magenta" if executor.type is ExecutorType.GPU else ""),
            Text(state, style="green" if state == RUNNING else "yellow"),
            _utilization(executor.utilization),
            _names(executor.functions),
        )
    return table


def registry_table(view: ClusterStatus) -> Table:
    """The registered DAGs and functions, each a wrapped list of names after its count."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    table.add_row(f"DAGs ({len(view.dags)})", _names(view.dags))
    table.add_row(f"Functions ({len(view.functions)})", _names(view.functions))
    return table


def status_summary(scheduler: str, view: ClusterStatus) -> Text:
    """The headline: which scheduler answered and how much it knows."""
    running = sum(1 for executor in view.executors if executor.running)
    summary = Text("Scheduler ", style="bold")
    summary.append(scheduler, style="bold cyan")
    summary.append(
        f": {len(view.executors)} executors ({running} running), {len(view.dags)} DAGs, {len(view.functions)} functions"
    )
    return summary


def status_view(scheduler: str, view: ClusterStatus) -> RenderableType:
    """``cloudburst status``: the headline, the executors (or a note that there are none), DAGs and functions."""
    executors: RenderableType = (
        executors_table(view) if view.executors else Text("No executor has reported yet.", style="yellow")
    )
    return Group(status_summary(scheduler, view), Text(), executors, Text(), registry_table(view))
