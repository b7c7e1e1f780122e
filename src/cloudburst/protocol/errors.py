"""The mapping between wire error codes and the error classes users catch."""

from __future__ import annotations

from cloudburst.errors import (
    CloudburstError,
    DagAlreadyExists,
    DagNotFound,
    FunctionNotFound,
    InvalidDag,
    InvalidRequest,
    NoResources,
    NotPinned,
    RemoteExecutionError,
)
from cloudburst.protocol.runtime_messages import ErrorCode, GenericResponse

# Errors raised on one side only have no code: VersionMismatch (the client's check when it connects),
# StorageUnavailable (kept inside the KVS), ProvisioningError (kept inside the management service).
_CLASSES: dict[ErrorCode, type[CloudburstError]] = {
    ErrorCode.FUNC_NOT_FOUND: FunctionNotFound,
    ErrorCode.NOT_PINNED: NotPinned,
    ErrorCode.EXECUTION_ERROR: RemoteExecutionError,
    ErrorCode.NO_SUCH_DAG: DagNotFound,
    ErrorCode.NO_RESOURCES: NoResources,
    ErrorCode.DAG_ALREADY_EXISTS: DagAlreadyExists,
    ErrorCode.INVALID_DAG: InvalidDag,
    ErrorCode.INVALID_REQUEST: InvalidRequest,
}
_CODES = {cls: code for code, cls in _CLASSES.items()}


def error_from_response(response: GenericResponse, request: str) -> CloudburstError:
    """The error a failed scheduler response stands for.

    Args:
        response: The failed response.
        request: What was asked, for the message (e.g. ``"call of DAG 'pipeline'"``).
    """
    cls = _CLASSES.get(response.error, CloudburstError)
    detail = response.error_message or response.error.name
    return cls(f"{request} failed: {detail}", request_id=response.response_id or None)


def failure_response(
    error: CloudburstError, response_id: str = "", unlisted: ErrorCode = ErrorCode.INVALID_REQUEST
) -> GenericResponse:
    """The response a scheduler sends for ``error``; ``unlisted`` is the code of errors without one of their own."""
    code = next((c for cls, c in _CODES.items() if isinstance(error, cls)), unlisted)
    return GenericResponse(success=False, response_id=response_id, error=code, error_message=error.message)
