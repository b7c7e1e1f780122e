"""Typed configuration for every role, built once at the command-line edge and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudburst.errors import ConfigError
from cloudburst.kvs.sqlite import Durability

#: Where state lives unless ``--data-dir`` says otherwise, so what was stored survives restarts.
DEFAULT_DATA_DIR = Path.home() / ".cloudburst"


@dataclass(frozen=True, slots=True)
class KvsConfig:
    """Configuration of a KVS node.

    Attributes:
        host: The address to bind; ``127.0.0.1`` keeps the node private to this machine.
        advertise_host: The address clients are told to reach storage threads at; defaults to ``host``.
        routing_port: The address-lookup port (Anna's 6450); 0 picks a free port.
        storage_port: Thread ``tid`` listens on ``storage_port + tid`` (Anna's 6200); 0 picks free ports.
        threads: Storage threads; keys are spread over them by consistent hashing.
        data_dir: Where the embedded engine keeps its database; ``None`` keeps data in memory only.
        durability: ``NORMAL`` survives a killed process, ``FULL`` also power loss (slower).
        max_message_bytes: Larger incoming messages are refused by the transport.
    """

    host: str = "127.0.0.1"
    advertise_host: str | None = None
    routing_port: int = 6450
    storage_port: int = 6200
    threads: int = 1
    data_dir: Path | None = DEFAULT_DATA_DIR / "kvs"
    durability: Durability = "NORMAL"
    max_message_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads must be at least 1, not {self.threads}")
        if self.advertise_host is None and self.host in ("0.0.0.0", "*", "::"):
            raise ConfigError(f"binding {self.host} needs an advertise_host that clients can reach")
