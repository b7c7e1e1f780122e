"""Cloudburst: low-latency, stateful functions-as-a-service on a lattice key-value store."""

from cloudburst.errors import (
    CloudburstError,
    ConfigError,
    DeadlineExceeded,
    DecodeError,
    EncodeError,
    KvsError,
    LatticeTypeMismatch,
    NoServers,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "CloudburstError",
    "ConfigError",
    "DeadlineExceeded",
    "DecodeError",
    "EncodeError",
    "KvsError",
    "LatticeTypeMismatch",
    "NoServers",
    "TransportError",
    "__version__",
]
