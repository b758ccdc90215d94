"""The pod networks scripts/bench puts the runtimes on: each on its own bridge, and what it ran described."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.benchnet import CONF_FILE, bench_conflist, describe, install, installed

pytestmark = pytest.mark.unit


def test_embedded_is_the_standard_chain_with_masquerading_and_the_firewall_when_needed(tmp_path: Path) -> None:
    conflist = bench_conflist("embedded", "br9", "10.9.0.0/16", tmp_path / "ipam", "bench", firewall=True)
    assert conflist["name"] == "bench"
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "firewall"]
    bridge, portmap, _ = conflist["plugins"]
    assert bridge["bridge"] == "br9" and bridge["ipMasq"] is True and bridge["isGateway"] is True
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/16"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "ipam")}
    assert portmap["capabilities"] == {"portMappings": True}
    unneeded = bench_conflist("embedded", "br9", "10.9.0.0/16", tmp_path / "ipam", "bench", firewall=False)
    assert [p["type"] for p in unneeded["plugins"]] == ["bridge", "portmap"]


@pytest.mark.parametrize("firewall", [True, False])
def test_bridge_is_bridge_without_masquerading_and_portmap_whatever_the_firewall_decision(tmp_path: Path, firewall: bool) -> None:
    conflist = bench_conflist("bridge", "br9", "10.9.0.0/16", tmp_path, "bench", firewall=firewall)
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap"]
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == "br9" and bridge["ipMasq"] is False and bridge["isGateway"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.9.0.0/16"}]]


def test_an_unknown_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark network"):
        bench_conflist("calico", "br9", "10.9.0.0/16", tmp_path, "bench")


def test_install_writes_the_only_file_and_installed_reads_it_back(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    install(conf_dir, "bridge", "br9", "10.9.0.0/16", tmp_path / "ipam", "bench")
    assert [p.name for p in conf_dir.iterdir()] == [CONF_FILE]
    assert installed(conf_dir) == json.loads((conf_dir / CONF_FILE).read_text())
    assert installed(conf_dir) == bench_conflist("bridge", "br9", "10.9.0.0/16", tmp_path / "ipam", "bench")


def test_describe_names_every_plugin_and_the_bridge_masquerading(tmp_path: Path) -> None:
    embedded = bench_conflist("embedded", "br9", "10.9.0.0/16", tmp_path, "bench", firewall=True)
    assert describe(embedded) == "bridge (ipMasq, host-local) + portmap + firewall"
    assert describe(bench_conflist("bridge", "br9", "10.9.0.0/16", tmp_path, "bench")) == \
        "bridge (no ipMasq, host-local) + portmap"
    # cri-shim's embedded chain is described from what it ran, whatever it holds.
    assert describe({"plugins": [{"type": "bridge"}, {"type": "tuning"}]}) == "bridge (no ipMasq, no ipam) + tuning"
