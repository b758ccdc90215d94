"""The runtime's error kinds and the one mapping from them to gRPC status codes.

Domain code raises these; the server's call wrapper (cri_shim.server) turns them into a gRPC
status. kubelet branches on NOT_FOUND and UNIMPLEMENTED, so those two must be exact.

Messages echo what the request named (ids, paths, names), and a request may name 16 MiB of it:
every message and every logged field is clipped here (clip), so a 100 KB id answers NOT_FOUND
instead of overflowing the client's metadata limit (RESOURCE_EXHAUSTED), and a log line stays
a line.
"""

from __future__ import annotations

import errno

import grpc

# How much of a status message or log field is kept: enough for an id, a path and a reason.
ECHO_LIMIT = 512


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


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """text cut to about limit characters from its middle, saying how much was left out: the
    head says what failed, the tail usually why (echoed input sits in between)."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[:limit - tail]}...({len(text) - limit} characters left out)...{text[-tail:]}"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and (clipped) message a failed call answers with."""
    code, message = _status(exc)
    return code, clip(message)


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, CriError):
        return exc.code, str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "operation timed out"
    if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
        # The runtime's own command lines are short: one too long for execve carries request fields.
        return grpc.StatusCode.INVALID_ARGUMENT, f"a command line made from the request is too long for the kernel: {exc}"
    return grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"
