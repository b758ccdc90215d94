"""systemd's readiness protocol (sd_notify) without libsystemd: one datagram to $NOTIFY_SOCKET.

Under `Type=notify` systemd waits for READY=1 before it calls the unit started (and before
units ordered after it, kubelet, start), so the daemon sends it only once start-up recovery
is done and calls are answered. STOPPING=1 says a stop has begun; RELOADING=1 (with
MONOTONIC_USEC, as `Type=notify-reload` wants) then READY=1 frame a SIGHUP reload. A name
starting with '@' is an abstract-namespace socket. Without $NOTIFY_SOCKET (not run by
systemd) every call does nothing; a send that fails is logged and otherwise ignored, because
a readiness message must never stop the runtime.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("cri_shim.sdnotify")


def _address(name: str) -> str | bytes | None:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None  # vsock: and other forms systemd may pass are not used for a local service


class Notifier:
    """The socket systemd gave this process, taken out of the environment at start so that no child
    inherits it: runc would otherwise set up systemd's notify socket for the containers it runs
    (and fails to, for the pod's infra container), as sd_notify's unset_environment avoids."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.pop("NOTIFY_SOCKET", ""))

    def notify(self, *fields: str) -> bool:
        """Sends the fields (e.g. "READY=1") as one message; True if one was sent."""
        if not self.name:
            return False
        address = _address(self.name)
        if address is None:
            log.warning("NOTIFY_SOCKET not understood, systemd not notified", extra={"notify_socket": self.name})
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), address)
        except OSError as exc:
            log.warning("systemd not notified", extra={"notify_socket": self.name, "error": str(exc)})
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1", f"MAINPID={os.getpid()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
