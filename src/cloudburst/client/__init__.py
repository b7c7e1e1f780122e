"""The client side: connections, function handles and futures."""

from cloudburst.client.connection import Connection, FunctionHandle
from cloudburst.client.future import Future

__all__ = ["Connection", "FunctionHandle", "Future"]
