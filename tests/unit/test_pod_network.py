"""PodNetwork: the attachment cache makes DEL exact and idempotent, across restarts and config changes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cri_shim.config import Config
from cri_shim.network.cni import CniError
from cri_shim.network.conf import default_network
from cri_shim.network.pod import PodNetwork, PodRef, PortMapping
from tests.support.fakecni import calls, install_fake_plugins

pytestmark = pytest.mark.unit

POD = PodRef(name="web", namespace="ns", uid="u1")


def network(tmp_path: Path, **first: object) -> tuple[PodNetwork, Path, Path]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    bin_dir, log = install_fake_plugins(tmp_path / "bin", ("first", "second"))
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir(exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "net1",
        "plugins": [{"type": "first", "addr": "10.1.0.5/24", **first}, {"type": "second", "capabilities": {"portMappings": True}}],
    }
    (conf_dir / "10-net1.conflist").write_text(json.dumps(conflist))
    cfg = Config()
    cfg.paths.state_dir = str(tmp_path / "state")
    cfg.network.conf_dir = str(conf_dir)
    cfg.network.bin_dirs = [str(bin_dir)]
    cfg.network.plugin_timeout_seconds = 10
    return PodNetwork(cfg), conf_dir, log


def test_attach_caches_and_detach_uses_the_cache_after_the_config_is_gone(tmp_path: Path) -> None:
    net, conf_dir, log = network(tmp_path)
    ips = asyncio.run(net.attach("sb1", "/ns/sb1", POD, [PortMapping(80, 8080)]))
    assert ips == ["10.1.0.5"] and net.cached_result("sb1")["ips"] == [{"address": "10.1.0.5/24"}]
    add_args = calls(log)[0]["env"]["CNI_ARGS"]
    assert add_args == "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u1"
    for f in conf_dir.iterdir():
        f.unlink()  # the operator removed the network; DEL must still run with what ADD used
    again = PodNetwork(net.cfg)  # as after a restart
    asyncio.run(again.detach("sb1"))
    dels = [c for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"]
    assert [c["conf"]["type"] for c in dels] == ["second", "first"]
    assert dels[0]["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}
    assert dels[0]["env"]["CNI_ARGS"] == add_args and dels[0]["conf"]["prevResult"]["ips"]
    assert again.cache.ids() == []
    asyncio.run(again.detach("sb1"))  # nothing cached: nothing to do, no error
    assert len(calls(log)) == 4


def test_failed_add_runs_del_and_forgets_the_attachment(tmp_path: Path) -> None:
    net, _, log = network(tmp_path, fail="ADD")
    with pytest.raises(CniError, match="no way"):
        asyncio.run(net.attach("sb2", "/ns/sb2", POD, []))
    assert [(c["env"]["CNI_COMMAND"], c["conf"]["type"]) for c in calls(log)] == [("ADD", "first"), ("DEL", "second"), ("DEL", "first")]
    assert net.cache.ids() == []


def test_sweep_releases_attachments_no_sandbox_owns(tmp_path: Path) -> None:
    net, _, log = network(tmp_path)
    for sid in ("keep", "orphan"):
        asyncio.run(net.attach(sid, f"/ns/{sid}", POD, []))
    asyncio.run(net.sweep({"keep"}))
    assert net.cache.ids() == ["keep"]
    assert {c["env"]["CNI_CONTAINERID"] for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"} == {"orphan"}


def test_the_embedded_network_keeps_ipam_state_under_the_state_dir(tmp_path: Path) -> None:
    cfg = Config()
    conf = default_network(cfg.network, tmp_path, "10.99.0.0/16")
    ipam = conf.conflist["plugins"][0]["ipam"]
    assert ipam["dataDir"] == str(tmp_path / "cni" / "ipam") and ipam["ranges"] == [[{"subnet": "10.99.0.0/16"}]]
    assert conf.conflist["plugins"][0]["bridge"] == cfg.network.default_bridge
    assert conf.plugin_types == ["bridge", "portmap", "firewall"]
