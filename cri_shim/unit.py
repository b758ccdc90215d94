"""`cri-shim install-unit`: the shipped systemd unit (cri_shim/data/cri-shim.service) made concrete.

The unit runs this very Python with `-m cri_shim`, so it works for a virtualenv as for a system
install, on a configuration file that is written with the documented defaults when there is
none yet (serve refuses a file it cannot read). systemd is not driven from here: the command
prints the systemctl calls that enable the service.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

from cri_shim import config
from cri_shim.store.atomic import write_bytes

UNIT_NAME = "cri-shim.service"
UNIT_DIR = "/etc/systemd/system"
CONFIG_PATH = "/etc/cri-shim/cri-shim.toml"
# What an ExecStart= word may hold without systemd quoting or specifier expansion (%, $, quotes, spaces).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._+/@:=,-]*")


class UnitError(ValueError):
    """A path the unit cannot name as it is."""


def render(python: str, config_path: str) -> str:
    """The unit text for this interpreter and configuration file."""
    for what, path in (("python", python), ("config", config_path)):
        if not _PLAIN_PATH.fullmatch(path):
            raise UnitError(f"{what} path {path!r} must be absolute, without spaces, quotes, '%' or '$'")
    template = resources.files("cri_shim").joinpath("data", UNIT_NAME).read_text()
    return template.replace("@PYTHON@", python).replace("@CONFIG@", config_path)


def install(unit_dir: Path, config_path: Path, python: str | None = None) -> list[Path]:
    """Writes the unit and, when absent, the default configuration; the files written."""
    # The interpreter as started (a virtualenv's bin/python), not the binary it links to.
    text = render(python or sys.executable, str(config_path))
    written = []
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_bytes(config_path, config.render_defaults().encode(), mode=0o644)
        written.append(config_path)
    unit_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(unit_dir / UNIT_NAME, text.encode(), mode=0o644)
    written.append(unit_dir / UNIT_NAME)
    return written
