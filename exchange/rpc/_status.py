"""The one place where exchange errors become gRPC status codes.

Messages name what was wrong (the field, the rule) and never carry content,
keys or internal state; an unexpected exception becomes INTERNAL with a bare
"internal error", and its traceback goes to the node's log only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc

from exchange.errors import (
    AuditError,
    AuthenticationError,
    ConflictError,
    ExchangeError,
    NotFoundError,
    PeerUnreachableError,
    PermissionDeniedError,
    PreconditionError,
    ResourceLimitError,
    StoreUnavailableError,
    TrustListError,
    ValidationError,
    VerificationError,
    VerificationFailure,
)

__all__ = ["guarded", "status_from_errors", "status_of"]

T = TypeVar("T")

_F = VerificationFailure
_VERIFICATION_CODES = {
    _F.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    _F.UNSUPPORTED_PROTOCOL: grpc.StatusCode.INVALID_ARGUMENT,
    _F.UNSUPPORTED_SUITE: grpc.StatusCode.INVALID_ARGUMENT,
    _F.UNKNOWN_SENDER: grpc.StatusCode.UNAUTHENTICATED,
    _F.UNKNOWN_KEY: grpc.StatusCode.UNAUTHENTICATED,
    _F.BAD_SIGNATURE: grpc.StatusCode.UNAUTHENTICATED,
    _F.PAYLOAD_DIGEST_MISMATCH: grpc.StatusCode.UNAUTHENTICATED,
    _F.SENDER_MISMATCH: grpc.StatusCode.PERMISSION_DENIED,
    _F.NOT_A_RECIPIENT: grpc.StatusCode.PERMISSION_DENIED,
    _F.CLOCK_SKEW: grpc.StatusCode.FAILED_PRECONDITION,
    _F.TOO_OLD: grpc.StatusCode.FAILED_PRECONDITION,
    _F.EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    _F.UNREADABLE_PAYLOAD: grpc.StatusCode.INVALID_ARGUMENT,
    _F.INVALID_NOTICE: grpc.StatusCode.INVALID_ARGUMENT,
    _F.RECEIPT_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
}
_CODES: list[tuple[type[ExchangeError], grpc.StatusCode]] = [
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (TrustListError, grpc.StatusCode.FAILED_PRECONDITION),
    (AuditError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConflictError, grpc.StatusCode.ALREADY_EXISTS),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (PeerUnreachableError, grpc.StatusCode.UNAVAILABLE),
]


def status_of(error: ExchangeError) -> tuple[grpc.StatusCode, str]:
    """The status code and message for `error`."""
    if isinstance(error, VerificationError):
        return _VERIFICATION_CODES[error.failure], str(error)
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, "internal error"


@contextlib.asynccontextmanager
async def status_from_errors(
    context: grpc.aio.ServicerContext[Any, Any], log: Any
) -> AsyncIterator[None]:
    """Turn exceptions raised inside the block into the call's status."""
    try:
        yield
    except grpc.aio.AbortError:
        raise  # the status is set already (a block inside this one aborted)
    except ExchangeError as exc:
        code, message = status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("rpc.internal_error", error_type=type(exc).__name__)
        await context.abort(code, message)
    except Exception:
        log.exception("rpc.internal_error")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


async def guarded(context: grpc.aio.ServicerContext[Any, Any], log: Any, call: Awaitable[T]) -> T:
    """Await `call`, turning its exceptions into the call's status."""
    async with status_from_errors(context, log):
        return await call
    raise AssertionError("unreachable: status_from_errors aborts the call")
