"""Sends trace hops and cache figures to the management service, in batches, never blocking the sender's loop."""

from __future__ import annotations

from collections.abc import Sequence

from cloudburst.errors import CloudburstError
from cloudburst.protocol import codec
from cloudburst.protocol.telemetry_messages import CacheReport, TelemetryReport, TraceHop
from cloudburst.transport.zmq import PushSocketCache

#: Hops per report message, so one message stays well under the report port's size limit.
MAX_HOPS_PER_REPORT = 256


class TelemetryReporter:
    """A role's telemetry sender.

    Reports are pushed without waiting: when the management service is slow or gone its queue fills and the
    reports are dropped (and counted), which costs visibility, never a request.

    Args:
        push: The role's push sockets.
        endpoint: The management service's report endpoint.
        reporter: Who reports (``ip:tid``, ``scheduler:host``, ``cache:host``).
    """

    def __init__(self, push: PushSocketCache, endpoint: str, reporter: str) -> None:
        self._push = push
        self.endpoint = endpoint
        self.reporter = reporter
        #: Reports dropped because the management service's queue was full or its address unusable.
        self.dropped = 0

    def send(self, hops: Sequence[TraceHop], cache: CacheReport | None = None) -> None:
        """Sends ``hops`` (in as many reports as needed) and ``cache``; does nothing when there is neither."""
        for first in range(0, len(hops), MAX_HOPS_PER_REPORT):
            last = cache if first + MAX_HOPS_PER_REPORT >= len(hops) else None
            self._send(TelemetryReport(self.reporter, tuple(hops[first : first + MAX_HOPS_PER_REPORT]), last))
        if not hops and cache is not None:
            self._send(TelemetryReport(self.reporter, (), cache))

    def _send(self, report: TelemetryReport) -> None:
        try:
            if not self._push.send(self.endpoint, codec.encode_telemetry_report(report)):
                self.dropped += 1
        except CloudburstError:
            self.dropped += 1
