"""The runtime's error kinds, free of any transport.

Domain code raises these; cri_shim.status holds the one table from them to gRPC status codes,
which the server's call wrapper (cri_shim.server) applies. Keeping grpc out of this module keeps
it out of every domain module that raises.

Messages echo what the request named (ids, paths, names), and a request may name 16 MiB of it:
every message and every logged field is clipped here (clip), so a 100 KB id answers NOT_FOUND
instead of overflowing the client's metadata limit (RESOURCE_EXHAUSTED), and a log line stays
a line.
"""

from __future__ import annotations

# How much of a status message or log field is kept: enough for an id, a path and a reason.
ECHO_LIMIT = 512


class CriError(Exception):
    """Base of the runtime's error kinds; each subclass stands for one status a client can branch on."""


class InvalidArgument(CriError):
    """The request is malformed: nothing was created."""


class NotFound(CriError):
    """The named sandbox, container or image does not exist."""


class AlreadyExists(CriError):
    """A name is reserved by another object."""


class PermissionDenied(CriError):
    """The caller's credentials were refused (e.g. by an image registry)."""


class FailedPrecondition(CriError):
    """The object is in the wrong state for the call (e.g. exec in a stopped container)."""


class DeadlineExceeded(CriError):
    """A time limit the request set (ExecSync timeout, pull deadline) ran out."""


class Unavailable(CriError):
    """The runtime cannot answer yet, e.g. while start-up recovery runs."""


class ResourceExhausted(CriError):
    """A limit of the runtime was reached (too many streams, output too large)."""


class Unimplemented(CriError):
    """The RPC or option is not supported; clients have fallbacks for this code."""


class Internal(CriError):
    """A system step failed (runc, conmon, CNI, mount): the message says which and why."""


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """text cut to about limit characters from its middle, saying how much was left out: the
    head says what failed, the tail usually why (echoed input sits in between)."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[:limit - tail]}...({len(text) - limit} characters left out)...{text[-tail:]}"
