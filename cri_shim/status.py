"""The one mapping from the runtime's errors to gRPC status codes, applied by cri_shim.server.

kubelet branches on NOT_FOUND and UNIMPLEMENTED, so those two must be exact. Messages echo what
the request named and are clipped (errors.clip) so a huge id still answers with its own code.
"""

from __future__ import annotations

import errno

import grpc

from cri_shim import errors
from cri_shim.errors import clip

CODES: dict[type[errors.CriError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def code_of(exc: errors.CriError) -> grpc.StatusCode:
    """The code of exc's kind, or of the nearest kind it derives from (UNKNOWN for the bare base)."""
    for kind in type(exc).__mro__:
        if kind in CODES:
            return CODES[kind]
    return grpc.StatusCode.UNKNOWN


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and (clipped) message a failed call answers with."""
    code, message = _status(exc)
    return code, clip(message)


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, errors.CriError):
        return code_of(exc), str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "operation timed out"
    if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
        # The runtime's own command lines are short: one too long for execve carries request fields.
        return grpc.StatusCode.INVALID_ARGUMENT, f"a command line made from the request is too long for the kernel: {exc}"
    return grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"
