"""Docker credential helpers: `docker-credential-<name> get`, the server URL on stdin.

The protocol docker, containerd's and CRI-O's image libraries speak: the helper prints
{"ServerURL", "Username", "Secret"} as JSON (Username "<token>" means Secret is an identity
token), or exits non-zero with "credentials not found in native keychain" when it has none.
The helper is found in PATH, run without a shell with only the server URL as input, in a
session of its own; its output is bounded and it is killed after a timeout.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time

from cri_shim.errors import FailedPrecondition

MAX_OUTPUT = 64 * 1024
TIMEOUT = 10.0
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NOT_FOUND = "credentials not found"


def get(name: str, server: str, timeout: float = TIMEOUT) -> tuple[str, str] | None:
    """(username, secret) the helper holds for server, or None when it has none."""
    if not NAME.fullmatch(name):
        raise FailedPrecondition(f"credential helper name {name!r} is not a plain name")
    program = shutil.which(f"docker-credential-{name}")
    if program is None:
        raise FailedPrecondition(f"credential helper docker-credential-{name} is not in PATH")
    status, out = _run([program, "get"], server.encode(), timeout)
    text = out.decode(errors="replace").strip()
    if status != 0:
        if NOT_FOUND in text.lower():
            return None
        raise FailedPrecondition(f"credential helper docker-credential-{name} failed ({status}) for {server}: {text[:200]}")
    try:
        answer = json.loads(out)
        username, secret = answer.get("Username", ""), answer.get("Secret", "")
    except (ValueError, AttributeError):
        raise FailedPrecondition(f"credential helper docker-credential-{name}: answer for {server} is not JSON") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise FailedPrecondition(f"credential helper docker-credential-{name}: Username and Secret must be strings")
    return username, secret


def _run(argv: list[str], stdin: bytes, timeout: float) -> tuple[int, bytes]:
    """Runs the helper: (exit status, output up to MAX_OUTPUT bytes); it and what it started
    are killed past the timeout."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    deadline = time.monotonic() + timeout
    out = bytearray()
    try:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FailedPrecondition(f"credential helper {argv[0]} did not answer within {timeout:g} s")
                if not sel.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
                if len(out) > MAX_OUTPUT:
                    raise FailedPrecondition(f"credential helper {argv[0]}: more than {MAX_OUTPUT} bytes of output")
        return proc.wait(max(0.0, deadline - time.monotonic())), bytes(out)
    except subprocess.TimeoutExpired:
        raise FailedPrecondition(f"credential helper {argv[0]} did not exit within {timeout:g} s") from None
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
