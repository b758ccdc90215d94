"""The CNI exec protocol, against a fake plugin that records what it was given."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cri_shim import metrics
from cri_shim.network.cni import Attachment, CniError, CniExec, plugin_config, result_ips
from tests.support.fakecni import calls, install_fake_plugins

pytestmark = pytest.mark.unit


@pytest.fixture
def plugins(tmp_path: Path) -> tuple[Path, Path]:
    return install_fake_plugins(tmp_path, ("first", "second"))


ATT = Attachment(
    container_id="sb1", netns="/run/ns/net/sb1", args=(("K8S_POD_NAME", "p"), ("IgnoreUnknown", "1")),
    capabilities={"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}], "bandwidth": {}},
)


def conflist(**second: object) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "net1",
        "plugins": [
            {"type": "first", "addr": "10.1.0.5/24"},
            {"type": "second", "addr": "fd00::5/64", "capabilities": {"portMappings": True, "bandwidth": False}, **second},
        ],
    }


def test_add_chains_results_and_passes_capabilities_only_to_capable_plugins(plugins: tuple[Path, Path]) -> None:
    bin_dir, log = plugins
    result = asyncio.run(CniExec([str(bin_dir)], 10).add(conflist(), ATT))
    assert result_ips(result) == ["10.1.0.5", "fd00::5"]
    first, second = calls(log)
    assert first["env"] == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "sb1", "CNI_NETNS": "/run/ns/net/sb1", "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir), "CNI_ARGS": "K8S_POD_NAME=p;IgnoreUnknown=1",
    }
    assert first["conf"]["name"] == "net1" and first["conf"]["cniVersion"] == "1.0.0"
    assert "prevResult" not in first["conf"] and "runtimeConfig" not in first["conf"]
    assert second["conf"]["prevResult"]["ips"] == [{"address": "10.1.0.5/24"}]
    assert second["conf"]["runtimeConfig"] == {"portMappings": ATT.capabilities["portMappings"]}


def test_del_runs_in_reverse_with_the_cached_result_and_runs_every_plugin(plugins: tuple[Path, Path]) -> None:
    bin_dir, log = plugins
    cached = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}
    with pytest.raises(CniError, match=r"CNI DEL second: no way \(fake\) \[code 7\]"):
        asyncio.run(CniExec([str(bin_dir)], 10).delete(conflist(fail="DEL"), ATT, cached))
    order = [(c["env"]["CNI_COMMAND"], c["conf"]["type"], c["conf"].get("prevResult")) for c in calls(log)]
    assert order == [("DEL", "second", cached), ("DEL", "first", cached)]


def test_old_spec_versions_get_no_prev_result_on_del_and_no_check(plugins: tuple[Path, Path]) -> None:
    bin_dir, log = plugins
    old = {**conflist(), "cniVersion": "0.3.1"}
    asyncio.run(CniExec([str(bin_dir)], 10).delete(old, ATT, {"ips": []}))
    assert all("prevResult" not in c["conf"] for c in calls(log))
    with pytest.raises(CniError, match="0.4.0"):
        asyncio.run(CniExec([str(bin_dir)], 10).check(old, ATT, {}))


def test_check_passes_the_cached_result_in_order(plugins: tuple[Path, Path]) -> None:
    bin_dir, log = plugins
    asyncio.run(CniExec([str(bin_dir)], 10).check(conflist(), ATT, {"ips": []}))
    assert [(c["env"]["CNI_COMMAND"], c["conf"]["type"]) for c in calls(log)] == [("CHECK", "first"), ("CHECK", "second")]


def test_missing_plugins_and_timeouts_fail_clearly(plugins: tuple[Path, Path]) -> None:
    bin_dir, _ = plugins
    with pytest.raises(CniError, match="not found"):
        asyncio.run(CniExec([str(bin_dir)], 10).add({"name": "n", "plugins": [{"type": "absent"}]}, ATT))
    with pytest.raises(CniError, match="invalid plugin type"):
        asyncio.run(CniExec([str(bin_dir)], 10).add({"name": "n", "plugins": [{"type": "../first"}]}, ATT))
    with pytest.raises(CniError, match="no answer within 0.5s"):
        asyncio.run(CniExec([str(bin_dir)], 0.5).add(conflist(hang=True), ATT))


def test_each_plugin_call_is_timed_by_command_plugin_and_result(plugins: tuple[Path, Path]) -> None:
    bin_dir, _ = plugins
    registry = metrics.enable()

    def count(command: str, plugin: str, result: str) -> float:
        return registry.get_sample_value(
            "cri_shim_cni_plugin_duration_seconds_count", {"command": command, "plugin": plugin, "result": result}) or 0

    before = {key: count(*key) for key in (("DEL", "first", "ok"), ("DEL", "second", "error"), ("ADD", "second", "error"))}
    with pytest.raises(CniError):
        asyncio.run(CniExec([str(bin_dir)], 10).delete(conflist(fail="DEL"), ATT, None))
    with pytest.raises(CniError, match="no answer"):
        asyncio.run(CniExec([str(bin_dir)], 0.5).add(conflist(hang=True), ATT))
    assert {key: count(*key) - n for key, n in before.items()} == {
        ("DEL", "first", "ok"): 1, ("DEL", "second", "error"): 1, ("ADD", "second", "error"): 1,
    }


def test_plugin_config_copies_and_leaves_the_list_untouched() -> None:
    net = conflist()
    conf = plugin_config(net, net["plugins"][1], ATT, {"ips": []})
    conf["capabilities"]["portMappings"] = False
    assert net["plugins"][1]["capabilities"]["portMappings"] is True and "prevResult" not in net["plugins"][1]


def test_result_ips_from_legacy_and_current_results() -> None:
    assert result_ips({"ip4": {"ip": "10.0.0.2/24"}, "ip6": {"ip": "fd00::2/64"}}) == ["10.0.0.2", "fd00::2"]
    assert result_ips({"ips": [{"address": "fd00::3/64"}, {"address": "10.0.0.3/24"}]}) == ["10.0.0.3", "fd00::3"]
    assert result_ips(None) == []
