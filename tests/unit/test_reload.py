"""SIGHUP's reload, on a real image store and config files: live keys applied, others refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim import config
from cri_shim.image.store import ImageStore
from cri_shim.config import LIVE_KEYS
from cri_shim.reload import Reloader, differences

pytestmark = pytest.mark.unit


@pytest.fixture
def root_level() -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    yield
    root.setLevel(before)


def setup(tmp_path: Path, text: str) -> tuple[Reloader, config.Config, Path]:
    path = tmp_path / "cri-shim.toml"
    path.write_text(text)
    cfg = config.load(path)
    return Reloader(cfg, path, ImageStore(tmp_path / "images", cfg.images.pinned_images)), cfg, path


def test_every_live_key_is_applied_in_place(tmp_path: Path, root_level: None) -> None:
    reloader, cfg, path = setup(tmp_path, "")
    images, network = cfg.images, cfg.network  # the objects the puller and the pod network hold
    path.write_text(
        '[server]\nlog_level = "debug"\n'
        '[images]\nmirrors = { "registry.k8s.io" = ["http://127.0.0.1:5000"] }\ninsecure_registries = ["127.0.0.1:5000"]\n'
        'auth_file = "/etc/cri-shim/auth.json"\npinned_images = ["registry.k8s.io/pause:3.10"]\n'
        '[network]\nconf_dir = "/etc/cni/other.d"\n'
    )
    assert sorted(reloader.reload()) == sorted(LIVE_KEYS)
    assert cfg.images is images and cfg.network is network
    assert images.mirrors == {"registry.k8s.io": ["http://127.0.0.1:5000"]} and images.insecure_registries == ["127.0.0.1:5000"]
    assert images.auth_file == "/etc/cri-shim/auth.json" and network.conf_dir == "/etc/cni/other.d"
    assert logging.getLogger().level == logging.DEBUG
    assert reloader.images._pinned == {"registry.k8s.io/pause:3.10"}
    assert reloader.reload() == []  # nothing changed since


def test_restart_keys_are_refused_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture, root_level: None) -> None:
    reloader, cfg, path = setup(tmp_path, "[runtime]\ndefault_pids_limit = 10\n")
    path.write_text('[runtime]\ndefault_pids_limit = 20\n[streaming]\nmax_tokens = 5\n[server]\nlog_level = "error"\n')
    with caplog.at_level(logging.INFO, logger="cri_shim.reload"):
        assert reloader.reload() == ["server.log_level"]
    assert cfg.runtime.default_pids_limit == 10 and cfg.streaming.max_tokens == 1000
    (refused,) = [r for r in caplog.records if r.getMessage() == "config changes that need a restart were not applied"]
    assert refused.keys == ["runtime.default_pids_limit", "streaming.max_tokens"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["[server\n", "[server]\nlog_levle = \"debug\"\n", "[server]\nlog_level = \"loud\"\n",
                                  "[images]\npinned_images = \"not-a-list\"\n"])
def test_a_file_that_does_not_load_changes_nothing(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    reloader, cfg, path = setup(tmp_path, '[images]\nmirrors = { "a.example" = ["http://127.0.0.1:1"] }\n')
    before = config.load(path)
    path.write_text(text)
    with caplog.at_level(logging.INFO, logger="cri_shim.reload"):
        assert reloader.reload() == []
    assert cfg == before
    assert any(r.getMessage() == "config not reloaded, the running configuration is kept" for r in caplog.records)


def test_a_missing_file_changes_nothing(tmp_path: Path) -> None:
    reloader, cfg, path = setup(tmp_path, "")
    path.unlink()
    assert reloader.reload() == [] and cfg == config.load(None)


def test_without_a_file_there_is_nothing_to_reload(tmp_path: Path) -> None:
    cfg = config.load(None)
    assert Reloader(cfg, None, ImageStore(tmp_path)).reload() == []


def test_differences_name_dotted_keys() -> None:
    old, new = config.load(None), config.load(None)
    new.runtime.handlers["crun"] = config.HandlerConfig(path="crun", root="/run/crun")
    new.metrics.address = "127.0.0.1:9090"
    assert differences(old, new) == ["runtime.handlers", "metrics.address"]


def test_cri_shim_config_marks_the_live_keys() -> None:
    marked = [line for line in config.render_defaults().splitlines() if line.endswith("(live: applied on SIGHUP)")]
    assert len(marked) == len(LIVE_KEYS)
