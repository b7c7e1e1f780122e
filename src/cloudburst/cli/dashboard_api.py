"""Where the CLI finds the management service, and how it reads the dashboard's JSON API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cloudburst.config import RuntimePorts
from cloudburst.errors import CloudburstError


def management_host(management: str | None, data_dir: Path) -> str:
    """The management service's host: ``management``, or the local cluster's (recorded by ``cloudburst up``).

    Raises:
        CloudburstError: Neither is there.
    """
    if management:
        return management
    from cloudburst.cli.cluster import running_cluster

    state = running_cluster(data_dir)
    if state is None:
        raise CloudburstError("no cluster is running here; start one with `cloudburst up`, or pass --management HOST")
    return str(state["host"])


def dashboard_address(dashboard: str | None, management: str | None, data_dir: Path) -> str:
    """The dashboard's base URL (ending in ``/``): ``dashboard``, or that of the management service's host.

    Raises:
        CloudburstError: No address was given and no local cluster is running.
    """
    if dashboard:
        return dashboard if dashboard.endswith("/") else dashboard + "/"
    return f"http://{management_host(management, data_dir)}:{RuntimePorts().dashboard}/"


def get_json(url: str, *, timeout: float = 10.0, missing_ok: bool = False) -> Any:  # noqa: ANN401 - JSON
    """The JSON document at ``url``; ``None`` for a 404 when ``missing_ok``.

    Raises:
        CloudburstError: The dashboard cannot be reached or answered something else.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if missing_ok and error.code == 404:
            return None
        raise CloudburstError(f"the dashboard answered {error.code} for {url}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CloudburstError(f"cannot read {url} ({error}); is the cluster's management service running?") from None
