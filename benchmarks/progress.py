"""A benchmark run's progress on stderr: what is being started or measured now, and how far the run is.

On a terminal: a spinner, a bar and the workload and system under measurement. Anywhere else (a CI log): the
plain lines the benchmarks have always printed, one per phase and round, nothing animated. stdout is left to the
results.

The bar is redrawn only when the run moves on, between measurements, never from a thread of its own: a refresh
thread would take the GIL from the very calls being timed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class RunProgress:
    """Shows one benchmark run's phases, one at a time.

    Args:
        console: Where to show it; stderr by default. Whether it is a terminal decides between bar and lines.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._phase = ""

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def animated(self) -> bool:
        """Whether the progress is drawn (a terminal) rather than written as lines."""
        return self.console.is_terminal

    def note(self, text: str) -> None:
        """A line that stays, on a terminal above the bar."""
        self.console.print(Text(text), soft_wrap=True)

    def plain(self, text: str) -> None:
        """A line only where nothing is drawn: there it stands for what the bar shows."""
        if not self.animated:
            self.note(text)

    def phase(self, text: str, total: int | None = None) -> None:
        """Starts a phase (``starting ray``, ``measuring``) of ``total`` steps, or of unknown length."""
        self._phase = text
        if not self.animated:
            self.note(text)
            return
        if self._bar is None:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                auto_refresh=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(text, total=total)
        else:
            assert self._task is not None
            self._bar.reset(self._task, total=total, description=text)
        self._bar.refresh()

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """One step of the phase: ``what`` is shown while it runs, and the bar advances when it is done."""
        if self._bar is None or self._task is None:
            yield
            return
        self._bar.update(self._task, description=f"{self._phase}: {what}", refresh=True)
        yield
        self._bar.advance(self._task)

    def close(self) -> None:
        """Removes the bar (the lines noted stay)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None
