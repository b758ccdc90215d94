"""The runtime's error kinds and the one mapping from them to gRPC status codes.

Domain code raises these; the server's call wrapper (cri_shim.server) turns them into a gRPC
status. kubelet branches on NOT_FOUND and UNIMPLEMENTED, so those two must be exact.
"""

from __future__ import annotations

import grpc


class CriError(Exception):
    """Base of every error that carries its own gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgument(CriError):
    """The request is malformed: nothing was created."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CriError):
    """The named sandbox, container or image does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CriError):
    """A name is reserved by another object."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(CriError):
    """The caller's credentials were refused (e.g. by an image registry)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(CriError):
    """The object is in the wrong state for the call (e.g. exec in a stopped container)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(CriError):
    """A time limit the request set (ExecSync timeout, pull deadline) ran out."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(CriError):
    """The runtime cannot answer yet, e.g. while start-up recovery runs."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(CriError):
    """A limit of the runtime was reached (too many streams, output too large)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unimplemented(CriError):
    """The RPC or option is not supported; clients have fallbacks for this code."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CriError):
    """A system step failed (runc, conmon, CNI, mount): the message says which and why."""

    code = grpc.StatusCode.INTERNAL


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message a failed call answers with."""
    if isinstance(exc, CriError):
        return exc.code, str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "operation timed out"
    return grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"
