"""The status a remote command reports on its error stream when it ends.

v4 and v5 carry a JSON metav1.Status that client-go decodes into an exit code (CRI §3.2 item
6); v1-v3 carry nothing on success and the error text otherwise.
"""

from __future__ import annotations

import json

# Protocols whose error stream carries JSON status.
JSON_STATUS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def success() -> dict:
    return {"status": "Success"}


def exit_code(code: int, cmd: tuple[str, ...] = ()) -> dict:
    """A command that ran and exited non-zero; client-go parses the cause as 0-255, so a
    death by signal N (negative, as asyncio reports it) becomes 128+N as shells report it."""
    code = 128 - code if code < 0 else code & 0xFF
    what = f"error executing command [{' '.join(cmd)}], exit code {code}" if cmd else f"exit code {code}"
    return {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: {what}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(message: str) -> dict:
    return {"status": "Failure", "reason": "InternalError", "code": 500, "message": f"Internal error occurred: {message}"}


def for_result(code: int | None, cmd: tuple[str, ...] = ()) -> dict:
    """The status of a finished command: None means it ended without an exit code (attach)."""
    return success() if not code else exit_code(code, cmd)


def encode(status: dict, protocol: str) -> bytes:
    """The bytes written on the error stream for this protocol (possibly none)."""
    if protocol in JSON_STATUS_PROTOCOLS:
        return json.dumps(status, separators=(",", ":")).encode()
    if status["status"] == "Success":
        return b""
    return status["message"].encode()
