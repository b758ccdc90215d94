"""Whether the embedded network needs its firewall plugin: read from the host's FORWARD chain."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cri_shim.config import NetworkConfig
from cri_shim.network import forward
from cri_shim.network.conf import default_network

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("rules, needed", [
    ("-P FORWARD ACCEPT\n", False),
    ('-P FORWARD ACCEPT\n-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD\n', False),
    ("-P FORWARD DROP\n", True),
    ("-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n", True),
    ("-P FORWARD ACCEPT\n-A FORWARD -o br0 -j REJECT\n", True),
])
def test_the_plugin_is_needed_where_forward_may_drop(rules: str, needed: bool) -> None:
    assert bool(forward._chain_needs_it("iptables", rules)) is needed


def _tool(tmp_path: Path, name: str, script: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_decide_reads_each_tool_and_keeps_the_plugin_when_a_chain_cannot_be_read(tmp_path: Path) -> None:
    accept = _tool(tmp_path, "v4", "echo '-P FORWARD ACCEPT'\n")
    drop = _tool(tmp_path, "v6", "echo '-P FORWARD DROP'\n")
    broken = _tool(tmp_path, "bad", "echo 'no permission' >&2; exit 4\n")
    assert forward.decide((accept,)) == forward.FirewallDecision(False, "FORWARD accepts all forwarded traffic")
    decision = forward.decide((accept, drop))
    assert decision.needed and "DROP" in decision.reason and os.path.basename(drop) in decision.reason
    decision = forward.decide((broken,))
    assert decision.needed and "no permission" in decision.reason


def test_the_embedded_chain_without_the_plugin_keeps_the_rest(tmp_path: Path) -> None:
    cfg = NetworkConfig(default_bridge="br9", default_subnet="10.9.0.0/16")
    full = default_network(cfg, tmp_path).conflist
    lean = default_network(cfg, tmp_path, firewall=False).conflist
    assert [p["type"] for p in full["plugins"]] == ["bridge", "portmap", "firewall"]
    assert lean["plugins"] == full["plugins"][:2]
