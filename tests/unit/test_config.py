"""The configuration file: defaults, documentation, and refusal of unknown keys and wrong types."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from cri_shim import config

pytestmark = pytest.mark.unit


def test_rendered_defaults_load_back_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config.render_defaults())
    assert config.load(path) == config.load(None)


def test_every_key_is_documented() -> None:
    text = config.render_defaults()
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            before = text.splitlines()[text.splitlines().index(line) - 1]
            assert before.startswith("# "), f"{line} has no doc line"


def test_handler_root_defaults_under_run_dir(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[paths]\nrun_dir = "/x/run"\n[runtime.handlers.crun]\npath = "crun"\n')
    cfg = config.load(path)
    assert cfg.runtime.handlers["crun"].root == "/x/run/crun"
    assert cfg.runtime.handlers["runc"].root == "/x/run/runc"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[server]\nsockett = "/x"\n', "unknown key(s) in [server]: sockett"),
        ('[bogus]\nx = 1\n', "unknown key(s) in []: bogus"),
        ('[server]\nsocket_mode = "660"\n', "server.socket_mode must be of type int"),
        ('[network]\nbin_dirs = "/usr/lib/cni"\n', "network.bin_dirs must be a list of str"),
        ('[runtime]\ncgroup_driver = "cgroupv3"\n', "cgroup_driver must be cgroupfs or systemd"),
        ('[runtime]\ndefault_handler = "kata"\n', "default_handler 'kata' is not in runtime.handlers"),
        ("[server\n", "cannot read config"),
    ],
)
def test_bad_files_are_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(path)


def test_octal_socket_mode_round_trips() -> None:
    assert tomllib.loads(config.render_defaults())["server"]["socket_mode"] == 0o660


def test_crun_and_runc_are_shipped_and_the_default_is_left_to_the_self_check(tmp_path: Path) -> None:
    cfg = config.load(None)
    assert {name: h.path for name, h in cfg.runtime.handlers.items()} == {"runc": "runc", "crun": "crun"}
    assert cfg.runtime.default_handler == ""
    path = tmp_path / "c.toml"
    path.write_text('[runtime]\ndefault_handler = "runc"\n')
    assert config.load(path).runtime.default_handler == "runc"
