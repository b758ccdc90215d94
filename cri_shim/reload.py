"""SIGHUP: the configuration file read again, and what can change while serving applied, as CRI-O does.

Live keys take effect for the calls that follow: the log level, registry mirrors, insecure
registries, the auth file (each pull reads it), pinned images (ListImages and ImageStatus
report them), the CNI configuration directory (each pod and Status looks for its network
there). A change to any other key is logged and not applied: it needs a restart, because
sockets, directories, handlers and running monitors were set up from it. A file that does not
load (bad TOML, an unknown key, an invalid value) changes nothing and is logged; the daemon
keeps serving on what it had.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path

from cri_shim import config
from cri_shim.config import LIVE_KEYS, Config
from cri_shim.image.store import ImageStore

log = logging.getLogger("cri_shim.reload")

def differences(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ (a table of handlers counts as one key)."""
    changed = []
    for section in dataclasses.fields(old):
        before, after = getattr(old, section.name), getattr(new, section.name)
        for key in dataclasses.fields(before):
            if getattr(before, key.name) != getattr(after, key.name):
                changed.append(f"{section.name}.{key.name}")
    return changed


class Reloader:
    """Applies a re-read configuration file to the running daemon's configuration and parts.

    The daemon's parts hold the one Config object (the puller its images table, the pod network
    its network table), so a live key is applied by assigning it there."""

    def __init__(self, cfg: Config, path: str | Path | None, images: ImageStore) -> None:
        self.cfg = cfg
        self.path = path
        self.images = images
        # The file as read at start, with every live change applied since: what a new read is
        # compared with. The running configuration differs from it where start-up settled what the
        # file left open (an empty runtime.default_handler becomes the handler chosen).
        self._read = config.load(path) if path is not None else None

    def reload(self) -> list[str]:
        """Reads the file and applies its live changes; the keys applied."""
        if self.path is None:
            log.warning("config not reloaded: the daemon runs on the embedded defaults, there is no file to read")
            return []
        try:
            new = config.load(self.path)
        except config.ConfigError as exc:
            log.error("config not reloaded, the running configuration is kept", extra={"error": str(exc)})
            return []
        assert self._read is not None
        changed = differences(self._read, new)
        refused = [key for key in changed if key not in LIVE_KEYS]
        if refused:
            log.warning("config changes that need a restart were not applied", extra={"keys": refused})
        applied = [key for key in changed if key in LIVE_KEYS]
        for key in applied:
            self._apply(key, new)
        log.info("config reloaded", extra={"path": str(self.path), "applied": applied})
        return applied

    def _apply(self, key: str, new: Config) -> None:
        section, name = key.split(".")
        value: typing.Any = getattr(getattr(new, section), name)
        setattr(getattr(self.cfg, section), name, value)
        assert self._read is not None
        setattr(getattr(self._read, section), name, value)
        if key == "server.log_level":
            logging.getLogger().setLevel(value.upper())
        elif key == "images.pinned_images":
            self.images.set_pinned(value)
