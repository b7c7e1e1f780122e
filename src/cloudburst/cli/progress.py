"""Progress of the long CLI operations: a spinner on a terminal, plain lines anywhere else.

On a terminal the step under way has a spinner and each finished step leaves a line with a tick. Anywhere else (a
pipe, a CI log, the detached supervisor's log file) nothing animates: each finished step is one plain line, so
logs stay readable and output stays parseable.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.status import Status
from rich.text import Text

#: How a finished step's plain line starts; ``up --detach`` finds its supervisor's steps in its log by it.
STARTED = "started "


class Steps:
    """Shows the steps of one long operation, one at a time.

    Args:
        console: Where to show them; whether it is a terminal decides between spinner and plain lines.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._step: str | None = None
        self._began = 0.0

    def __enter__(self) -> Steps:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # A step under way when an error escapes did not finish: it gets no line, the error speaks for it.
        if kind is None:
            self.finish()
        self._step = None
        self.close()

    def begin(self, step: str) -> None:
        """Marks ``step`` as under way (finishing the previous step, if any)."""
        self.finish()
        self._step, self._began = step, time.monotonic()
        self.spin(f"starting {step} ...")

    def finish(self) -> None:
        """Marks the step under way as done: a line saying so, with how long it took."""
        if self._step is None:
            return
        step, self._step = self._step, None
        self.done(f"{STARTED}{step}", time.monotonic() - self._began)

    def report(self, step: str, done: bool) -> None:
        """A :data:`cloudburst.cluster.local.StartProgress`: :meth:`begin`, or :meth:`finish` once ``done``."""
        if done:
            self.finish()
        else:
            self.begin(step)

    def spin(self, text: str) -> None:
        """Shows ``text`` beside the spinner (only on a terminal; elsewhere the finished steps' lines suffice)."""
        if not self.console.is_terminal:
            return
        if self._status is None:
            self._status = self.console.status(Text(text))
            self._status.start()
        else:
            self._status.update(Text(text))

    def done(self, text: str, seconds: float | None = None) -> None:
        """Prints a finished step's line: ticked on a terminal (above the spinner), plain elsewhere."""
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        if self.console.is_terminal:
            self.console.print(Text.assemble(("✓ ", "green"), text, (took, "dim")))
        else:
            self.console.print(Text(text + took), soft_wrap=True)

    def close(self) -> None:
        """Stops the spinner (leaving the finished steps' lines)."""
        if self._status is not None:
            self._status.stop()
            self._status = None
