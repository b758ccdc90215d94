"""The pod networks scripts/bench puts both runtimes on: the same chain for both, on their own bridges."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri_shim.config import NetworkConfig
from cri_shim.network.conf import default_network
from tests.support.benchnet import bench_conflist

pytestmark = pytest.mark.unit


def test_embedded_is_the_shipped_chain_on_the_given_bridge(tmp_path: Path) -> None:
    conflist = bench_conflist("embedded", "br9", "10.9.0.0/16", tmp_path, "bench")
    shipped = default_network(NetworkConfig(default_bridge="br9", default_subnet="10.9.0.0/16"), tmp_path).conflist
    assert conflist == {**shipped, "name": "bench"}
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "firewall"]
    assert conflist["plugins"][0]["ipMasq"] is True


def test_bridge_is_the_bridge_plugin_alone_without_masquerading(tmp_path: Path) -> None:
    conflist = bench_conflist("bridge", "br9", "10.9.0.0/16", tmp_path, "bench")
    (bridge,) = conflist["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "br9"
    assert bridge["ipMasq"] is False and bridge["isGateway"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.9.0.0/16"}]]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_an_unknown_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark network"):
        bench_conflist("calico", "br9", "10.9.0.0/16", tmp_path, "bench")
