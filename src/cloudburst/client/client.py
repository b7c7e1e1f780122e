"""The original client API (``from cloudburst.client.client import CloudburstConnection``), unchanged for users.

A thin layer over :class:`cloudburst.client.Connection`; new code should use :func:`cloudburst.connect`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cloudburst.client.connection import Connection, FunctionHandle
from cloudburst.client.future import Future
from cloudburst.errors import ClientError, FunctionNotFound, SchedulingError
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import DagCall

#: The original names of the handle and future classes.
CloudburstFunction = FunctionHandle
CloudburstFuture = Future

NORMAL = ConsistencyType.NORMAL


class CloudburstConnection:
    """A connection to a Cloudburst deployment, with the original client's methods and return values.

    Args:
        func_addr: The scheduler's (or its load balancer's) address.
        ip: This machine's address as executors can reach it.
        tid: Kept for compatibility (the original derived its ports from it; ports are now chosen freely).
        local: Kept for compatibility.
    """

    def __init__(self, func_addr: str, ip: str | None = None, tid: int = 0, local: bool = False) -> None:
        self.connection = Connection(func_addr, host=ip or "127.0.0.1")
        self.tid = tid
        self.local = local

    def __enter__(self) -> CloudburstConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection."""
        self.connection.close()

    def register(self, function: Callable[..., Any] | tuple[type, Any], name: str) -> FunctionHandle:
        """Registers a function or ``(cls, init_args)``; returns a callable handle."""
        return self.connection.register(function, name)

    def get_function(self, name: str) -> FunctionHandle | None:
        """A handle for a registered function, or ``None``."""
        return self.connection.get_function(name)

    def list(self, prefix: str | None = None) -> list[str]:
        """Registered function names starting with ``prefix``."""
        return self.connection.list(prefix or "")

    def exec_func(self, name: str, args: Sequence[object]) -> Future:
        """Runs a registered function once with ``args``."""
        return self.connection.call(name, *args)

    def register_dag(
        self,
        name: str,
        functions: Sequence[str | tuple[str, Iterable[object]]],
        connections: Iterable[tuple[str, str]],
        gpu_functions: Iterable[str] = (),
        batching_functions: Iterable[str] = (),
        colocated: Iterable[str] = (),
    ) -> tuple[bool, object]:
        """Registers a DAG; returns ``(success, error)`` as the original did.

        Raises:
            FunctionNotFound: A function is not registered (the original raised on this too).
        """
        try:
            self.connection.register_dag(name, functions, connections, gpu_functions, batching_functions, colocated)
        except FunctionNotFound:
            raise
        except (ClientError, SchedulingError) as error:
            return False, error
        return True, None

    def call_dag(
        self,
        dname: str,
        arg_map: Mapping[str, object],
        direct_response: bool = False,
        consistency: ConsistencyType = ConsistencyType.NORMAL,
        output_key: str | None = None,
        client_id: str | None = None,
        dry_run: bool = False,
        continuation: DagCall | None = None,
    ) -> Any:  # noqa: ANN401 - a future, a result or a call, as the original
        """Calls a DAG.

        Returns:
            The built call with ``dry_run``; the result itself with ``direct_response`` (raising
            ``DeadlineExceeded`` rather than returning ``None`` when it does not come); otherwise a future.
        """
        call = self.connection.build_dag_call(
            dname,
            arg_map,
            direct_response=direct_response,
            consistency=consistency,
            output_key=output_key,
            client_id=client_id,
            continuation=continuation,
        )
        if dry_run:
            return call
        future = self.connection.call_dag(call)
        return future.result() if direct_response else future

    def delete_dag(self, dname: str) -> tuple[bool, object]:
        """Deletes a DAG; returns ``(success, error)``."""
        try:
            self.connection.delete_dag(dname)
        except ClientError as error:
            return False, error
        return True, None

    def get_object(self, key: str) -> Any:  # noqa: ANN401 - user data
        """The value stored under ``key``, or ``None``."""
        return self.connection.get_object(key)

    def put_object(self, key: str, value: object) -> bool:
        """Stores ``value`` under ``key``."""
        self.connection.put_object(key, value)
        return True
