"""The one exception hierarchy of Cloudburst.

Every error raised by the package derives from :class:`CloudburstError`. Errors carry optional context (the
function, DAG, node and request involved, and a remote traceback) so that an error raised on a server can be
shipped to the caller and re-raised there with the same class and the same context.
"""

from __future__ import annotations

from typing import Any


class CloudburstError(Exception):
    """Root of every error Cloudburst raises.

    Args:
        message: What went wrong, naming the offending key, field, function or address.
        function: The function involved, if any.
        dag: The DAG involved, if any.
        node: The node (address) where the error happened, if remote.
        request_id: The request the error belongs to, if any.
        remote_traceback: The formatted traceback from the remote process, if the error crossed the wire.
    """

    def __init__(
        self,
        message: str,
        *,
        function: str | None = None,
        dag: str | None = None,
        node: str | None = None,
        request_id: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.function = function
        self.dag = dag
        self.node = node
        self.request_id = request_id
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("function", self.function),
                ("dag", self.dag),
                ("node", self.node),
                ("request", self.request_id),
            )
            if value
        ]
        text = f"{self.message} ({', '.join(context)})" if context else self.message
        if self.remote_traceback:
            text = f"{text}\n\nRemote traceback:\n{self.remote_traceback}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses add their own constructor arguments; rebuilding from the instance dict keeps pickling
        # (used when errors cross process boundaries) independent of every constructor signature.
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(cls: type[CloudburstError], args: tuple[Any, ...], state: dict[str, Any]) -> CloudburstError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class DecodeError(CloudburstError):
    """Bytes could not be decoded: a malformed message, a corrupt lattice payload or an unloadable value.

    Args:
        what: The message type, field or key that failed to decode.
        reason: Why it failed.
    """

    def __init__(self, what: str, reason: str, **context: str | None) -> None:
        super().__init__(f"cannot decode {what}: {reason}", **context)
        self.what = what
        self.reason = reason


class EncodeError(CloudburstError):
    """A value or message could not be encoded (for example an unpicklable object or an out-of-range field)."""


class ConfigError(CloudburstError, ValueError):
    """A configuration value is invalid; the message names the setting."""


class DeadlineExceeded(CloudburstError):
    """An operation did not complete before its deadline."""


class Cancelled(CloudburstError):
    """The request was cancelled (``Future.cancel()``, ``cloudburst cancel``) before it finished."""


class ExecutorLost(CloudburstError):
    """The executors that ran the request's attempts were lost (killed, crashed, or unreachable), and it was not
    run again (no retries left, or the function may not be retried); the message names each attempt's executor and
    why it was lost.

    Args:
        message: What was lost.
        losses: Per attempt, the executor (``ip:tid``) and why it was lost.
    """

    def __init__(self, message: str, losses: tuple[tuple[str, str], ...] = (), **context: str | None) -> None:
        super().__init__(message, **context)
        self.losses = losses


class TransportError(CloudburstError):
    """A message could not be sent or received (bad address, refused peer)."""


class VersionMismatch(CloudburstError):
    """The client and the cluster run Python or cloudpickle versions that cannot exchange functions.

    Functions are shipped as cloudpickle bytecode, which loads only under the Python major.minor version that
    produced it, and a cloudpickle of another major.minor version may not read it. The client raises it when it
    connects, before anything is registered; it never crosses the wire, so it has no wire error code.

    Args:
        scheduler: The scheduler that answered for the cluster.
        differences: Each component that differs, as (name, this client's version, the cluster's version).
    """

    def __init__(self, scheduler: str, differences: tuple[tuple[str, str, str], ...], **context: str | None) -> None:
        sides = "; ".join(f"{name} {ours} here, {theirs} there" for name, ours, theirs in differences)
        super().__init__(
            f"this client and the cluster at {scheduler} differ: {sides}. Functions are shipped as cloudpickle "
            "bytecode, which executors load only under the same Python and cloudpickle major.minor versions: "
            "install matching versions, or connect with check_versions=False at your own risk",
            **context,
        )
        self.scheduler = scheduler
        self.differences = differences


class KvsError(CloudburstError):
    """The key-value store refused or failed a request."""


class LatticeTypeMismatch(KvsError):
    """A PUT's lattice type differs from the type already stored under the key.

    Args:
        key: The key written.
        stored: The stored lattice type's name.
        given: The lattice type's name the writer sent.
    """

    def __init__(self, key: str, stored: str, given: str, **context: str | None) -> None:
        super().__init__(f"key {key!r} holds a {stored} lattice; cannot merge a {given} lattice into it", **context)
        self.key = key
        self.stored = stored
        self.given = given


class NoServers(KvsError):
    """The KVS routing tier knows no storage server for a key."""


class StorageUnavailable(KvsError):
    """A storage engine's backing store did not acknowledge a request before the engine's deadline.

    The store was unreachable, timed out, was failing over, or (for writes merged by compare-and-set) kept
    conflicting with concurrent writers. A write that raised it was not acknowledged: it may or may not have been
    applied, and retrying it is safe because merges are idempotent. It stays in the KVS node, which leaves the batch
    unanswered so that clients retry, so it has no wire error code.
    """


class CausalError(CloudburstError):
    """A read or write in a causal consistency mode (SINGLE or MULTI) cannot be served as that mode promises."""


class CausalModeUnavailable(CausalError):
    """A causal read or write outside a causal call, or on an executor without a node cache."""


class CausalConflict(CausalError):
    """Under MULTI, every available version of a key depends on a newer version of a key the request already read.

    Returning it would show the request an effect without its cause. Reads known in advance (references in the
    DAG's arguments) are kept consistent from the request's first read, so this arises only for keys a function
    reads that the DAG did not declare. When another request wrote the newer versions, retrying reads a newer
    snapshot (``retryable``); when this request wrote them itself, in a branch of its DAG that ran concurrently with
    the reading one, every retry races the same way, and the message says how to order the functions instead.

    Args:
        message: What conflicted, and what to do.
        retryable: Whether a retry of the request can succeed.
    """

    def __init__(self, message: str, retryable: bool = True, **context: str | None) -> None:
        super().__init__(message, **context)
        self.retryable = retryable


class SessionExpired(CausalError):
    """A version kept for the request is gone (its cache restarted or the session outlived its time to live)."""


class RemoteExecutionError(CloudburstError):
    """A user function raised; carries where it ran and the remote traceback.

    Args:
        message: The remote exception's type and message.
        exception_type: The qualified name of the remote exception's class.
    """

    def __init__(self, message: str, exception_type: str = "", **context: str | None) -> None:
        super().__init__(message, **context)
        self.exception_type = exception_type


class ClientError(CloudburstError):
    """A request named something that does not exist or cannot be created as asked."""


class FunctionNotFound(ClientError):
    """No function is registered under the name."""


class DagNotFound(ClientError):
    """No DAG is registered under the name."""


class DagAlreadyExists(ClientError):
    """A DAG with the name is already registered."""


class InvalidDag(ClientError):
    """A DAG is malformed: a cycle, several sinks, links outside the DAG, or unknown functions."""


class InvalidRequest(ClientError):
    """A request is malformed."""


class SchedulingError(CloudburstError):
    """The cluster could not place the work."""


class NoResources(SchedulingError):
    """No executor can take the work now."""


class NotPinned(SchedulingError):
    """The function is not pinned at the executor the request reached."""


class ProvisioningError(CloudburstError):
    """The machines behind the cluster's nodes could not be started, found or released.

    Raised by the management service's provisioners; it stays in the management service (the policy sees the
    outcome in later reports), so it has no wire error code.

    Args:
        operation: What was asked, naming the resources involved (for example the Deployment and its namespace).
        reason: Why it failed, as the infrastructure put it.
    """

    def __init__(self, operation: str, reason: str, **context: str | None) -> None:
        super().__init__(f"{operation} failed: {reason}", **context)
        self.operation = operation
        self.reason = reason
