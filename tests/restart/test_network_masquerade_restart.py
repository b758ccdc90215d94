"""Pods attached before the node masquerade chain (the bridge plugin's own ipMasq, as an upgrade or
a start without usable iptables caches them) are released fully by a daemon that has the chain."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import bridge_ports, changes, pod_config, remove_pod, run_pod, snapshot, status, stop_pod, warm_up

pytestmark = pytest.mark.restart


def nat() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout


def masquerade_info(cri: Cri) -> dict[str, object]:
    info = cri.runtime.Status(api.StatusRequest(verbose=True)).info
    return dict(json.loads(info["network"])["embeddedMasquerade"])


def test_a_pod_cached_with_per_pod_masquerade_is_released_fully_after_a_restart(own_daemons: list[Daemon]) -> None:
    d = Daemon()
    own_daemons.append(d)
    broken = d.dir / "broken-bin"
    broken.mkdir()
    (broken / "iptables-restore").write_text("#!/bin/sh\necho 'iptables-restore: locked by the test' >&2\nexit 4\n")
    (broken / "iptables-restore").chmod(0o755)
    d.env = {"PATH": f"{broken}:{os.environ['PATH']}"}
    d.start()
    cri = Cri(d.endpoint)
    masq = masquerade_info(cri)
    assert masq["node"] is False and "locked by the test" in str(masq["reason"])
    warm_up(cri)
    before = snapshot(d)
    sid = run_pod(cri, pod_config("old-chain", port_mappings=[api.PortMapping(container_port=80, host_port=18710)]))
    ip = status(cri, sid)[0].network.ip
    cache = json.loads((Path(d.config["paths"]["state_dir"]) / "cni" / "cache" / f"{sid}.json").read_text())
    assert cache["network"]["plugins"][0]["ipMasq"] is True
    per_pod = re.findall(rf"-A POSTROUTING -s {re.escape(ip)}/32 .*-j (CNI-[0-9a-f]+)", nat())
    assert len(per_pod) == 1, nat()
    cri.close()

    d.stop()
    d.env = {}
    d.start()
    cri = Cri(d.endpoint)
    masq = masquerade_info(cri)
    assert masq["node"] is True and masq["subnets"] == ["10.88.0.0/16"]
    assert status(cri, sid)[0].state == api.SANDBOX_READY
    stop_pod(cri, sid)
    rules = nat()
    assert per_pod[0] not in rules and ip not in rules and "18710" not in rules
    lease = Path(d.config["paths"]["state_dir"]) / "cni" / "ipam" / "cri-shim" / ip
    assert not lease.exists()
    remove_pod(cri, sid)
    assert bridge_ports("crishim0") == []  # DEL ran in the namespace: the veth went with it
    chain = str(masq["chain"])
    added = changes(before, snapshot(d))
    # What the second start added is the node chain (and its jump); nothing of the pod is left.
    assert set(added) <= {"iptables"} and not added.get("iptables", {}).get("gone"), added
    assert all(chain in line for line in added.get("iptables", {}).get("added", [])), added
    cri.close()
