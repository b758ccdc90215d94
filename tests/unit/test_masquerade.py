"""The embedded network's node masquerade chain, pod subnets, and which chains DEL without the netns."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import pytest

from cri_shim.config import Config, ConfigError, NetworkConfig, load
from cri_shim.errors import InvalidArgument, Unavailable
from cri_shim.network import masquerade, subnets
from cri_shim.network.conf import EMBEDDED_SOURCE, NetworkConfError, default_network, embedded_subnets, uses_node_masquerade
from cri_shim.network.cni import CniError
from cri_shim.network.pod import PodNetwork, PodRef, releases_without_netns
from tests.support.fakecni import calls, install_fake_plugins

pytestmark = pytest.mark.unit

V4, V6 = ipaddress.ip_network("10.88.0.0/16"), ipaddress.ip_network("fd00:88::/64")


@pytest.mark.parametrize("text, expected", [
    ("10.88.0.0/16", ["10.88.0.0/16"]),
    ("10.1.0.0/24,fd00:1::/64", ["10.1.0.0/24", "fd00:1::/64"]),
    (" fd00:1::/64 , 10.1.0.0/24", ["fd00:1::/64", "10.1.0.0/24"]),
])
def test_pod_subnets_one_or_one_of_each_family(text: str, expected: list[str]) -> None:
    assert [str(s) for s in subnets.parse(text)] == expected


@pytest.mark.parametrize("text, why", [
    ("", "not a CIDR"),
    ("10.1.0.5/24", "host bits"),
    ("10.0.0.0/31", "at least a gateway"),
    ("0.0.0.0/0", "not be everything"),
    ("::/0", "not be everything"),
    ("224.0.0.0/4", "unicast"),
    ("127.0.0.0/8", "unicast"),
    ("169.254.0.0/16", "unicast"),
    ("10.0.0.0/8,10.1.0.0/16", "one IPv4 and one IPv6"),
    ("10.0.0.0/8,fd00::/64,10.2.0.0/16", "one CIDR, or two"),
    ("10.0.0.0/8 -j ACCEPT", "not a CIDR"),
    ("10.0.0.0/8\n-A POSTROUTING -j ACCEPT", "not a CIDR"),
    ("1" * 300, "longer than"),
])
def test_bad_pod_subnets_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        subnets.parse(text)


def test_a_bad_default_subnet_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[network]\ndefault_subnet = "10.88.0.1/16"\n')
    with pytest.raises(ConfigError, match="network.default_subnet.*host bits"):
        load(path)


def test_rule_text_per_family_from_the_subnets_alone() -> None:
    chain = masquerade.chain_name("crishim0")
    assert chain.startswith("CRI-SHIM-MASQ-") and len(chain) <= 28
    assert chain == masquerade.chain_name("crishim0") != masquerade.chain_name("crishim1")
    assert masquerade.restore_text(chain, [V6, V4], 4) == (
        f"*nat\n:{chain} - [0:0]\n"
        f"-A {chain} -s 10.88.0.0/16 -d 10.88.0.0/16 -j RETURN\n"
        f"-A {chain} -s 10.88.0.0/16 -d 224.0.0.0/4 -j RETURN\n"
        f"-A {chain} -s 10.88.0.0/16 -j MASQUERADE\n"
        "COMMIT\n"
    )
    assert masquerade.restore_text(chain, [V6, V4], 6).splitlines()[2:5] == [
        f"-A {chain} -s fd00:88::/64 -d fd00:88::/64 -j RETURN",
        f"-A {chain} -s fd00:88::/64 -d ff00::/8 -j RETURN",
        f"-A {chain} -s fd00:88::/64 -j MASQUERADE",
    ]
    # No subnet: the chain is declared (so flushed) and left empty.
    assert masquerade.restore_text(chain, [], 4) == f"*nat\n:{chain} - [0:0]\nCOMMIT\n"


def _tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check_rc: int = 1, restore_rc: int = 0) -> Path:
    """Fake iptables tools on PATH that log their argv and stdin; -C answers check_rc."""
    log = tmp_path / "tools.log"
    for name in ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore"):
        rc = restore_rc if name.endswith("restore") else f'$( [ "$4" = "-C" ] && echo {check_rc} || echo 0 )'
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho "{name} $* <<$(tr "\\n" "|")>>" >> {log}\n'
                          f'[ {rc} = 0 ] || {{ echo "{name}: refused" >&2; exit {rc}; }}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # the fakes first; no iptables in these
    return log


def test_start_writes_both_families_and_adds_the_jump_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _tools(tmp_path, monkeypatch)
    node = masquerade.NodeMasquerade("crishim0")
    asyncio.run(node.start([V4]))
    state = node.state()
    assert state.node and state.subnets == ("10.88.0.0/16",) and state.chain == node.chain
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["iptables-restore", "iptables", "iptables", "ip6tables-restore",
                                                   "ip6tables", "ip6tables"]
    assert "-w --noflush" in lines[0] and "-s 10.88.0.0/16 -j MASQUERADE" in lines[0]
    assert "MASQUERADE" not in lines[3]  # the IPv6 chain is emptied: no IPv6 subnet
    assert f"-t nat -A POSTROUTING -m comment --comment cri-shim-pod-egress -j {node.chain}" in lines[2]


def test_a_jump_already_there_is_not_added_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _tools(tmp_path, monkeypatch, check_rc=0)
    asyncio.run(masquerade.NodeMasquerade("crishim0").start([V4]))
    assert not [line for line in log.read_text().splitlines() if " -A POSTROUTING" in line]


def test_ensure_adds_missing_subnets_keeping_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _tools(tmp_path, monkeypatch)
    node = masquerade.NodeMasquerade("crishim0")
    asyncio.run(node.start([V4]))
    log.write_text("")
    asyncio.run(node.ensure([V4]))
    assert log.read_text() == ""  # nothing new: no iptables call at all
    other = ipaddress.ip_network("10.209.0.0/24")
    asyncio.run(node.ensure([other, V6]))
    restores = [line for line in log.read_text().splitlines() if "restore" in line.split()[0]]
    assert len(restores) == 2 and "10.88.0.0/16 -j MASQUERADE" in restores[0] and "10.209.0.0/24 -j MASQUERADE" in restores[0]
    assert "fd00:88::/64 -j MASQUERADE" in restores[1]
    assert node.state().subnets == ("10.209.0.0/24", "10.88.0.0/16", "fd00:88::/64")


def test_where_rules_cannot_be_installed_pods_masquerade_themselves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tools(tmp_path, monkeypatch, restore_rc=2)
    node = masquerade.NodeMasquerade("crishim0")
    asyncio.run(node.start([V4]))
    state = node.state()
    assert not state.node and "iptables-restore: refused" in state.reason and state.subnets == ()
    asyncio.run(node.ensure([V6]))  # inactive: nothing to add
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    missing = masquerade.NodeMasquerade("crishim0")
    asyncio.run(missing.start([V4]))
    assert not missing.active and "not found" in missing.reason


def test_an_ipv6_failure_counts_only_when_an_ipv6_subnet_needs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tools(tmp_path, monkeypatch)
    (tmp_path / "ip6tables-restore").write_text("#!/bin/sh\necho no ip6 nat >&2\nexit 1\n")
    v4only = masquerade.NodeMasquerade("crishim0")
    asyncio.run(v4only.start([V4]))
    assert v4only.active
    dual = masquerade.NodeMasquerade("crishim0")
    asyncio.run(dual.start([V4, V6]))
    assert not dual.active and "no ip6 nat" in dual.reason


def test_the_embedded_network_dual_stack_and_masqueraded_by_the_node(tmp_path: Path) -> None:
    cfg = NetworkConfig(default_bridge="br9", default_subnet="10.9.0.0/16")
    own = default_network(cfg, tmp_path).conflist["plugins"][0]
    assert own["ipMasq"] is True and own["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    conf = default_network(cfg, tmp_path, "10.1.0.0/24,fd00:1::/64", node_masquerade=True)
    bridge = conf.conflist["plugins"][0]
    assert bridge["ipMasq"] is False and conf.source == EMBEDDED_SOURCE
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert [str(s) for s in embedded_subnets(conf.conflist)] == ["10.1.0.0/24", "fd00:1::/64"]
    assert uses_node_masquerade(conf.conflist, conf.source, "br9")
    assert not uses_node_masquerade(conf.conflist, conf.source, "br8")
    assert not uses_node_masquerade(conf.conflist, "/etc/cni/net.d/10-x.conflist", "br9")
    assert not uses_node_masquerade(default_network(cfg, tmp_path).conflist, EMBEDDED_SOURCE, "br9")
    with pytest.raises(NetworkConfError, match="host bits"):
        default_network(NetworkConfig(default_subnet="10.9.0.1/16"), tmp_path)


def test_cached_subnets_that_do_not_parse_are_skipped() -> None:
    conflist = {"plugins": [{"ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "bogus"}], "x", [{}]]}}]}
    assert [str(s) for s in embedded_subnets(conflist)] == ["10.1.0.0/24"]
    assert embedded_subnets({"plugins": [{}]}) == [] and embedded_subnets({}) == []


def _bridge(**extra: object) -> dict[str, object]:
    return {"type": "bridge", "ipMasq": False, "ipam": {"type": "host-local"}, **extra}


@pytest.mark.parametrize("plugins, free", [
    ([_bridge(), {"type": "portmap"}], True),
    ([_bridge(), {"type": "portmap"}, {"type": "firewall"}], True),
    ([{k: v for k, v in _bridge().items() if k != "ipMasq"}], True),
    ([_bridge(ipMasq=True), {"type": "portmap"}], False),
    ([_bridge(ipMasq="false")], False),
    ([_bridge(macspoofchk=True)], False),
    ([_bridge(ipam={"type": "dhcp"})], False),
    ([_bridge(), {"type": "tuning"}], False),
    ([{"type": "calico"}], False),
    ([], False),
    (["bridge"], False),
])
def test_which_chains_release_without_the_netns(plugins: list[object], free: bool) -> None:
    assert releases_without_netns({"plugins": plugins}) is free


def _network(tmp_path: Path, bridge: dict[str, object]) -> tuple[PodNetwork, Path]:
    (tmp_path / "bin").mkdir()
    bin_dir, log = install_fake_plugins(tmp_path / "bin", ("bridge", "portmap"))
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    conflist = {"cniVersion": "1.0.0", "name": "n", "plugins": [{**bridge, "addr": "10.1.0.5/24"}, {"type": "portmap"}]}
    (conf_dir / "10-n.conflist").write_text(json.dumps(conflist))
    cfg = Config()
    cfg.paths.state_dir = str(tmp_path / "state")
    cfg.network.conf_dir = str(conf_dir)
    cfg.network.bin_dirs = [str(bin_dir)]
    return PodNetwork(cfg), log


@pytest.mark.parametrize("bridge, first", [(_bridge(), True), (_bridge(ipMasq=True), False)])
def test_detach_drops_the_netns_first_only_where_the_cached_chain_allows(tmp_path: Path, bridge: dict[str, object],
                                                                        first: bool) -> None:
    net, log = _network(tmp_path, bridge)
    asyncio.run(net.attach("sb", "/ns/sb", PodRef("p", "ns", "u"), []))
    dropped: list[int] = []

    async def drop() -> None:
        dropped.append(len(calls(log)))

    asyncio.run(net.detach("sb", drop))
    dels = [c["env"]["CNI_NETNS"] for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"]
    if first:
        assert dropped == [2] and dels == ["", ""]  # after the two ADDs, before any DEL
    else:
        assert dropped == [] and dels == ["/ns/sb", "/ns/sb"]
    assert net.cache.ids() == []


def test_an_attachment_whose_add_result_was_never_cached_keeps_the_netns(tmp_path: Path) -> None:
    net, log = _network(tmp_path, _bridge())
    asyncio.run(net.attach("sb", "/ns/sb", PodRef("p", "ns", "u"), []))
    entry = net.cache.load("sb")
    assert entry is not None
    entry.result = None  # as a crash between ADD and its result's save leaves it
    asyncio.run(net.cache.save("sb", entry))
    dropped: list[bool] = []

    async def drop() -> None:
        dropped.append(True)

    asyncio.run(net.detach("sb", drop))
    assert not dropped
    assert {c["env"]["CNI_NETNS"] for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"} == {"/ns/sb"}


@pytest.mark.parametrize("cidr", ["10.5.0.1/24", "nonsense", "0.0.0.0/0", "10.5.0.0/24,10.6.0.0/24", "x" * 1000])
def test_a_bad_pod_cidr_is_invalid_argument_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                cidr: str) -> None:
    log = _tools(tmp_path, monkeypatch)
    cfg = Config()
    cfg.paths.state_dir = str(tmp_path / "state")
    cfg.network.conf_dir = str(tmp_path / "none")
    net = PodNetwork(cfg)
    asyncio.run(net.masquerade.start([V4]))
    log.write_text("")
    before = net.current().conflist
    with pytest.raises(InvalidArgument, match="pod_cidr"):
        asyncio.run(net.set_pod_cidr(cidr))
    assert log.read_text() == "" and net.current().conflist == before


def test_a_pod_cidr_the_node_chain_cannot_take_is_unavailable_and_not_taken(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _tools(tmp_path, monkeypatch)
    cfg = Config()
    cfg.paths.state_dir = str(tmp_path / "state")
    cfg.network.conf_dir = str(tmp_path / "none")
    net = PodNetwork(cfg)
    asyncio.run(net.masquerade.start([V4]))
    (tmp_path / "iptables-restore").write_text("#!/bin/sh\necho locked >&2\nexit 4\n")
    with pytest.raises(Unavailable, match="locked"):
        asyncio.run(net.set_pod_cidr("10.7.0.0/24"))
    assert embedded_subnets(net.current().conflist) == [V4]
    (tmp_path / "iptables-restore").write_text("#!/bin/sh\ncat >/dev/null\n")
    asyncio.run(net.set_pod_cidr("10.7.0.0/24"))
    assert [str(s) for s in embedded_subnets(net.current().conflist)] == ["10.7.0.0/24"]
    assert net.masquerade.state().subnets == ("10.7.0.0/24", "10.88.0.0/16")


def test_a_failed_del_without_the_netns_is_retried_the_same_way(tmp_path: Path) -> None:
    net, log = _network(tmp_path, _bridge(fail="DEL"))
    asyncio.run(net.attach("sb", "/ns/sb", PodRef("p", "ns", "u"), []))
    dropped: list[bool] = []

    async def drop() -> None:
        dropped.append(True)  # the namespace is gone after the first: dropping it again must be harmless

    for _ in range(2):
        with pytest.raises(CniError, match="no way"):
            asyncio.run(net.detach("sb", drop))
        assert net.cache.ids() == ["sb"]  # kept for the next try
    assert dropped == [True, True]
    assert {c["env"]["CNI_NETNS"] for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"} == {""}
    asyncio.run(net.sweep(set()))  # start-up's sweep of an attachment no record owns: the same DEL
    assert {c["env"]["CNI_NETNS"] for c in calls(log) if c["env"]["CNI_COMMAND"] == "DEL"} == {""}
