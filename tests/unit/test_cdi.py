"""CDI: device names, spec files (JSON and YAML, versions, hostile content), resolution across
directories, and the edits applied to the OCI spec."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from cri_shim.api import api_pb2 as api
from cri_shim.cdi import names, specfile
from cri_shim.cdi.edits import Edits, SpecError
from cri_shim.cdi.registry import Registry
from cri_shim.errors import InvalidArgument, NotFound
from cri_shim.oci.context import HostInfo, SandboxInfo
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.oci.spec import build_spec
from tests.support.etc import minimal_rootfs

pytestmark = pytest.mark.unit

NULL = os.stat("/dev/null")  # c 1 3 on every Linux host: a device node unit tests need not make


def spec(kind: str = "example.com/gpu", version: str = "0.6.0", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cdiVersion": version, "kind": kind,
                           "devices": [{"name": "gpu0", "containerEdits": {"env": ["GPU=0"]}}]}
    out.update(extra)
    return out


def write(directory: Path, name: str, content: dict[str, Any] | str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content))
    return path


def qn(text: str) -> names.QualifiedName:
    return names.parse(text)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["vendor.com/class=name", "nvidia.com/gpu=0", "a/b=c", "k8s.io/x.y=claim-1:gpu-0",
                                  "example.com/gpu=all"])
def test_qualified_names(text: str) -> None:
    assert str(names.parse(text)) == text


@pytest.mark.parametrize("text", ["", "gpu0", "vendor.com/class", "vendor.com=name", "/dev/null", "vendor.com/a/b=x",
                                  "-v.com/c=n", "v.com/c-=n", "v.com/c=n-", "v.com/c=-n", "v.com/c=n/x", "v.com/c=n\x00",
                                  "v.com/c=ü", "v.com/c=" + "n" * 600])
def test_malformed_names_are_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument):
        names.parse(text)


def test_requested_reads_the_field_then_annotations_each_name_once() -> None:
    config = api.ContainerConfig(CDI_devices=[api.CDIDevice(name="a.com/x=1"), api.CDIDevice(name="b.com/y=2")],
                                 annotations={"cdi.k8s.io/plugin_dev": "c.com/z=3, a.com/x=1", "other": "d.com/w=4",
                                              "cdi.k8s.io/another": "a.com/x=9"})
    assert [str(n) for n in names.requested(config)] == ["a.com/x=1", "b.com/y=2", "a.com/x=9", "c.com/z=3"]
    assert names.requested(api.ContainerConfig()) == []


def test_requested_bounds_the_count_and_checks_annotation_values() -> None:
    many = api.ContainerConfig(annotations={"cdi.k8s.io/x": ",".join(f"a.com/x={i}" for i in range(names.MAX_REQUESTED + 1))})
    with pytest.raises(InvalidArgument, match="at most"):
        names.requested(many)
    with pytest.raises(InvalidArgument):
        names.requested(api.ContainerConfig(annotations={"cdi.k8s.io/x": "a.com/x=1,"}))


# -- spec files -------------------------------------------------------------------------


def parse(content: dict[str, Any] | str, name: str = "s.yaml") -> specfile.Spec:
    data = content.encode() if isinstance(content, str) else (
        json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content)).encode()
    return specfile.parse(name, 0, data)


def test_json_and_yaml_specs_of_each_version() -> None:
    for version in ("0.3.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "v0.8.0"):
        for name in ("s.json", "s.yaml"):
            parsed = parse(spec(version=version, containerEdits={"env": ["ALL=1"]}), name)
            assert parsed.kind == "example.com/gpu" and parsed.devices["gpu0"].env == ("GPU=0",)
            assert parsed.edits.env == ("ALL=1",)


def test_a_yaml_spec_as_drivers_write_it() -> None:
    text = """
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache]
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.1
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.1
    options: [ro, nosuid, nodev, bind]
"""
    parsed = parse(text)
    assert parsed.devices["0"].device_nodes[0].host_path == "/dev/nvidia0"
    assert parsed.edits.hooks[0].args == ("nvidia-ctk", "hook", "update-ldcache")
    assert parsed.edits.mounts[0].options == ("ro", "nosuid", "nodev", "bind")


@pytest.mark.parametrize(("content", "reason"), [
    (spec(version="0.9.0"), "cdiVersion"),
    (spec(version="2.0.0"), "cdiVersion"),
    (spec(version="0.6.0", containerEdits={"additionalGids": [5]}), "uses fields of cdiVersion 0.7.0"),
    (spec(version="0.5.0", annotations={"a": "b"}), "uses fields of cdiVersion 0.6.0"),
    (spec(version="0.4.0", devices=[{"name": "0", "containerEdits": {"env": ["A=1"]}}]), "0.5.0"),
    (spec(version="0.8.0", containerEdits={"netDevices": [{"hostInterfaceName": "eth1", "name": "net1"}]}), "1.1.0"),
    (spec(kind="gpu"), "kind"),
    (spec(kind="example.com/gpu/x"), "kind"),
    (spec(devices=[]), "devices"),
    (spec(devices=[{"name": "gpu0"}]), "no containerEdits"),
    (spec(devices=[{"name": "-x", "containerEdits": {"env": ["A=1"]}}]), "device name"),
    (spec(devices=[{"name": "a", "containerEdits": {"env": ["A=1"]}}] * 2), "defined twice"),
    (spec(unknown=1), "unknown field"),
    (spec(containerEdits={"env": ["NOEQUALS"]}), "NAME=value"),
    (spec(containerEdits={"env": ["=x"]}), "NAME=value"),
    (spec(containerEdits={"deviceNodes": [{"path": "dev/x"}]}), "absolute"),
    (spec(containerEdits={"deviceNodes": [{"path": "/dev/../etc/shadow"}]}), "'..'"),
    (spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/../../etc/shadow"}]}), "'..'"),
    (spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "type": "s"}]}), "type"),
    (spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "permissions": "rwx"}]}), "permissions"),
    (spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "uid": -1}]}), "uid"),
    (spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "major": True}]}), "major"),
    (spec(containerEdits={"mounts": [{"hostPath": "lib", "containerPath": "/lib"}]}), "absolute"),
    (spec(containerEdits={"mounts": [{"hostPath": "/lib", "containerPath": "/x/../../etc"}]}), "'..'"),
    (spec(containerEdits={"hooks": [{"hookName": "prestart", "path": "bin/true"}]}), "absolute"),
    (spec(containerEdits={"hooks": [{"hookName": "onBoot", "path": "/bin/true"}]}), "hookName"),
    (spec(containerEdits={"hooks": [{"hookName": "poststop", "path": "/bin/true", "timeout": 0}]}), "timeout"),
    (spec(version="0.7.0", containerEdits={"intelRdt": {"closID": "../x"}}), "closID"),
    (spec(containerEdits={"env": ["A=\x00"]}), "NUL"),
    ("[1, 2", "does not parse"),
    ("- just\n- a list\n", "mapping"),
    ("cdiVersion: 0.6.0\nkind: a.com/b\ndevices: !!python/object/apply:os.system ['true']\n", "does not parse"),
])
def test_invalid_spec_files_are_refused_whole(content: dict[str, Any] | str, reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        parse(content)


def test_yaml_aliases_cannot_expand_past_the_budget() -> None:
    """A small file whose aliases stand for 400,000 mounts is refused, not walked."""
    mounts = ", ".join(["{hostPath: /a, containerPath: /b}"] * 2000)
    text = "\n".join(["cdiVersion: 0.6.0", "kind: a.com/b", "devices:",
                      f"  - &d {{name: x, containerEdits: {{mounts: [{mounts}]}}}}"] + ["  - *d"] * 200)
    assert len(text) < 100_000
    with pytest.raises(SpecError, match="too many values"):
        parse(text)
    bomb = {"cdiVersion": "0.6.0", "kind": "a.com/b",
            "devices": [{"name": f"d{i}", "containerEdits": {"env": [f"A{j}=1" for j in range(100)]}} for i in range(2100)]}
    with pytest.raises(SpecError, match="too many values"):
        parse(bomb, "s.json")


def test_reading_is_bounded_and_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "big.json").write_bytes(b" " * (specfile.MAX_BYTES + 1))
        with pytest.raises(SpecError, match="larger"):
            specfile.read(fd, "big.json")
        (tmp_path / "big.yaml").write_bytes(b" " * (specfile.MAX_YAML_BYTES + 1))
        with pytest.raises(SpecError, match="larger"):
            specfile.read(fd, "big.yaml")
        (tmp_path / "fits.yaml").write_bytes(b" " * specfile.MAX_YAML_BYTES)
        assert len(specfile.read(fd, "fits.yaml")) == specfile.MAX_YAML_BYTES
        os.mkfifo(tmp_path / "fifo.json")  # opened without blocking, then refused
        with pytest.raises(SpecError, match="regular"):
            specfile.read(fd, "fifo.json")
        (tmp_path / "link.json").symlink_to("/etc/passwd")
        with pytest.raises(SpecError, match="cannot open"):
            specfile.read(fd, "link.json")
    finally:
        os.close(fd)


# -- the registry -----------------------------------------------------------------------


def device(name: str, **edits: Any) -> dict[str, Any]:
    return {"name": name, "containerEdits": edits}


def test_later_directories_override_earlier_ones_and_one_directory_cannot_define_twice(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    write(etc, "a.yaml", spec(devices=[device("gpu0", env=["FROM=etc"]), device("gpu1", env=["FROM=etc"])]))
    write(run, "a.json", spec(devices=[device("gpu0", env=["FROM=run"])]))
    registry = Registry([str(etc), str(run)])
    assert registry.resolve([qn("example.com/gpu=gpu0")]).env == ("FROM=run",)
    assert registry.resolve([qn("example.com/gpu=gpu1")]).env == ("FROM=etc",)
    write(run, "b.yaml", spec(devices=[device("gpu0", env=["FROM=run-too"])]))
    with pytest.raises(InvalidArgument, match="ambiguous.*a.json.*b.yaml"):
        registry.resolve([qn("example.com/gpu=gpu0")])
    assert registry.resolve([qn("example.com/gpu=gpu1")]).env == ("FROM=etc",)


def test_unknown_devices_are_not_found_naming_them(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", spec())
    registry = Registry([str(tmp_path), str(tmp_path / "missing")])
    with pytest.raises(NotFound, match="example.com/gpu=gpu9, other.com/x=y"):
        registry.resolve([qn("example.com/gpu=gpu0"), qn("example.com/gpu=gpu9"), qn("other.com/x=y")])


def test_malformed_files_are_skipped_with_a_log_line_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "bad.yaml", "cdiVersion: [")
    write(tmp_path, "good.yaml", spec())
    write(tmp_path, "ignored.txt", "not a spec")
    registry = Registry([str(tmp_path)])
    with caplog.at_level(logging.WARNING, logger="cri_shim.cdi"):
        assert registry.resolve([qn("example.com/gpu=gpu0")]).env == ("GPU=0",)
        registry.resolve([qn("example.com/gpu=gpu0")])
    skipped = [r for r in caplog.records if r.getMessage() == "CDI spec file skipped"]
    assert len(skipped) == 1 and skipped[0].path == str(tmp_path / "bad.yaml")


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", spec())
    registry = Registry([str(tmp_path)])
    assert registry.resolve([qn("example.com/gpu=gpu0")]).env == ("GPU=0",)
    path.write_text(yaml.safe_dump(spec(devices=[device("gpu0", env=["GPU=changed"])])))
    os.utime(path, ns=(1, 1))
    assert registry.resolve([qn("example.com/gpu=gpu0")]).env == ("GPU=changed",)


def test_removed_files_leave_the_cache(tmp_path: Path) -> None:
    """DRA drivers write a spec per claim and remove it with the claim: nothing of it stays."""
    registry = Registry([str(tmp_path)])
    for i in range(3):
        write(tmp_path, f"claim-{i}.yaml", spec(kind="k8s.example.com/claim", devices=[device(f"c{i}", env=[f"C={i}"])]))
        assert registry.resolve([qn(f"k8s.example.com/claim=c{i}")]).env == (f"C={i}",)
        (tmp_path / f"claim-{i}.yaml").unlink()
    write(tmp_path, "other.yaml", spec())
    registry.resolve([qn("example.com/gpu=gpu0")])
    assert list(registry._files) == [str(tmp_path / "other.yaml")]
    with pytest.raises(NotFound):
        registry.resolve([qn("k8s.example.com/claim=c2")])


def test_all_is_every_device_of_the_kind_unless_a_spec_defines_it(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", spec(devices=[device("b", env=["B=1"]), device("a", env=["A=1"])],
                                   containerEdits={"env": ["SPEC=1"]}))
    write(tmp_path, "o.yaml", spec(kind="other.com/x", devices=[device("o", env=["O=1"])]))
    registry = Registry([str(tmp_path)])
    assert registry.resolve([qn("example.com/gpu=all")]).env == ("SPEC=1", "A=1", "B=1")
    write(tmp_path, "o.yaml", spec(kind="other.com/x", devices=[device("o", env=["O=1"]), device("all", env=["ALL=1"])]))
    assert registry.resolve([qn("other.com/x=all")]).env == ("ALL=1",)
    with pytest.raises(NotFound):
        registry.resolve([qn("none.com/x=all")])


def test_spec_edits_come_once_and_repeats_merge(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", spec(version="0.7.0", devices=[device("a", env=["A=1"], additionalGids=[10, 0]),
                                                             device("b", env=["A=1"], additionalGids=[10, 11])],
                                   containerEdits={"env": ["S=1"], "additionalGids": [12]}))
    resolved = Registry([str(tmp_path)]).resolve([qn("example.com/gpu=a"), qn("example.com/gpu=b"), qn("example.com/gpu=a")])
    assert resolved.env == ("S=1", "A=1") and resolved.additional_gids == (12, 10, 11)


@pytest.mark.parametrize(("a", "b", "what"), [
    ({"env": ["A=1"]}, {"env": ["A=2"]}, "variable"),
    ({"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/null"}]},
     {"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/zero"}]}, "device nodes"),
    ({"mounts": [{"hostPath": "/a", "containerPath": "/m"}]}, {"mounts": [{"hostPath": "/b", "containerPath": "/m"}]}, "mounts"),
    ({"intelRdt": {"closID": "a"}}, {"intelRdt": {"closID": "b"}}, "Intel RDT"),
])
def test_conflicting_edits_are_invalid_argument(tmp_path: Path, a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    write(tmp_path, "a.yaml", spec(version="0.7.0", devices=[device("a", **a), device("b", **b)]))
    with pytest.raises(InvalidArgument, match=f"conflict.*{what}"):
        Registry([str(tmp_path)]).resolve([qn("example.com/gpu=a"), qn("example.com/gpu=b")])


def test_device_nodes_are_completed_from_the_host_node(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    write(tmp_path / "cdi", "a.yaml", spec(version="0.7.0", devices=[
        device("null", deviceNodes=[{"path": "/dev/mynull", "hostPath": "/dev/null", "permissions": "rw"}]),
        device("described", deviceNodes=[{"path": "/dev/gone", "hostPath": str(tmp_path / "gone"), "type": "c",
                                          "major": 240, "minor": 7, "uid": 5, "gid": 6}]),
        device("missing", deviceNodes=[{"path": "/dev/gone", "hostPath": str(tmp_path / "gone")}]),
        device("plain", deviceNodes=[{"path": "/dev/plain", "hostPath": str(tmp_path / "plain")}]),
        device("link", deviceNodes=[{"path": "/dev/link", "hostPath": str(tmp_path / "link")}]),
        device("mistyped", deviceNodes=[{"path": "/dev/b", "hostPath": "/dev/null", "type": "b"}]),
        device("fifo", deviceNodes=[{"path": "/dev/f", "type": "p"}]),
        device("net", netDevices=[{"hostInterfaceName": "eth1", "name": "net1"}]),
    ], cdiVersion="1.1.0"))
    (tmp_path / "link").symlink_to("/dev/null")
    registry = Registry([str(tmp_path / "cdi")])
    (node,) = registry.resolve([qn("example.com/gpu=null")]).device_nodes
    assert (node.type, node.major, node.minor, node.file_mode, node.permissions) == (
        "c", os.major(NULL.st_rdev), os.minor(NULL.st_rdev), stat.S_IMODE(NULL.st_mode), "rw")
    (node,) = registry.resolve([qn("example.com/gpu=described")]).device_nodes
    assert (node.type, node.major, node.minor, node.uid, node.gid, node.file_mode) == ("c", 240, 7, 5, 6, None)
    with pytest.raises(NotFound, match="does not exist"):
        registry.resolve([qn("example.com/gpu=missing")])
    for name in ("plain", "link"):
        with pytest.raises(InvalidArgument, match="not a character or block device"):
            registry.resolve([qn(f"example.com/gpu={name}")])
    with pytest.raises(InvalidArgument, match="type b"):
        registry.resolve([qn("example.com/gpu=mistyped")])
    with pytest.raises(InvalidArgument, match="FIFO"):
        registry.resolve([qn("example.com/gpu=fifo")])
    with pytest.raises(InvalidArgument, match="netDevices"):
        registry.resolve([qn("example.com/gpu=net")])


# -- applied to the OCI spec ------------------------------------------------------------


def built(tmp_path: Path, cdi_edits: Edits, **config: Any) -> dict[str, Any]:
    rootfs = minimal_rootfs(tmp_path / "rootfs", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
                            "root:x:0:\napp:x:1000:\n")
    cfg = api.ContainerConfig(command=["/bin/true"], **config)
    cfg.mounts.append(api.Mount(container_path="/data", host_path=str(tmp_path)))
    return build_spec("c1", cfg, api.PodSandboxConfig(), SandboxInfo(id="sb"), ImageConfig(env=["A=image", "PATH=/bin"]),
                      rootfs, HostInfo(), cdi_edits=cdi_edits).spec


def resolved(tmp_path: Path, **edits: Any) -> Edits:
    write(tmp_path / "cdi", "a.yaml", spec(version="0.7.0", devices=[device("d", **edits)]))
    return Registry([str(tmp_path / "cdi")]).resolve([qn("example.com/gpu=d")])


def test_edits_land_in_the_spec(tmp_path: Path) -> None:
    edits = resolved(tmp_path, env=["A=cdi", "B=cdi"], additionalGids=[44],
                     deviceNodes=[{"path": "/dev/mynull", "hostPath": "/dev/null"},
                                  {"path": "/dev/readonly", "hostPath": "/dev/null", "permissions": "r", "uid": 7},
                                  {"path": "/dev/hidden", "hostPath": "/dev/null", "permissions": "none"}],
                     mounts=[{"hostPath": "/usr/lib", "containerPath": "/data/lib", "options": ["ro"]},
                             {"hostPath": "/opt", "containerPath": "/opt", "type": "bind", "options": ["bind", "ro"]}],
                     hooks=[{"hookName": "createContainer", "path": "/bin/hook", "args": ["hook", "x"], "timeout": 5},
                            {"hookName": "poststop", "path": "/bin/stop"}],
                     intelRdt={"closID": "gold", "l3CacheSchema": "L3:0=ff"})
    s = built(tmp_path, edits, envs=[api.KeyValue(key="B", value="config")],
              linux=api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
                  run_as_user=api.Int64Value(value=1000))))
    env = s["process"]["env"]
    assert "A=cdi" in env and "B=cdi" in env and "A=image" not in env and "B=config" not in env and "PATH=/bin" in env
    assert 44 in s["process"]["user"]["additionalGids"]
    rdev = NULL.st_rdev
    devices = {d["path"]: d for d in s["linux"]["devices"]}
    assert devices["/dev/mynull"] == {"path": "/dev/mynull", "type": "c", "major": os.major(rdev), "minor": os.minor(rdev),
                                      "fileMode": stat.S_IMODE(NULL.st_mode), "uid": 1000, "gid": 1000}
    assert devices["/dev/readonly"]["uid"] == 7
    rules = [r for r in s["linux"]["resources"]["devices"] if r.get("major") == os.major(rdev) and r.get("minor") == os.minor(rdev)]
    assert [r["access"] for r in rules] == ["rwm", "rwm", "r"]  # the default rule for /dev/null, then the CDI nodes
    destinations = [m["destination"] for m in s["mounts"]]
    assert destinations.index("/data") < destinations.index("/data/lib")
    lib = next(m for m in s["mounts"] if m["destination"] == "/data/lib")
    assert lib == {"destination": "/data/lib", "type": "bind", "source": "/usr/lib", "options": ["ro", "rbind"]}
    assert next(m for m in s["mounts"] if m["destination"] == "/opt")["options"] == ["bind", "ro"]
    assert s["hooks"] == {"createContainer": [{"path": "/bin/hook", "args": ["hook", "x"], "timeout": 5}],
                          "poststop": [{"path": "/bin/stop"}]}
    assert s["linux"]["intelRdt"] == {"closID": "gold", "l3CacheSchema": "L3:0=ff"}


def test_a_cdi_node_or_mount_replaces_the_containers_own_at_that_path(tmp_path: Path) -> None:
    edits = resolved(tmp_path, deviceNodes=[{"path": "/dev/x", "hostPath": "/dev/null"}],
                     mounts=[{"hostPath": "/usr", "containerPath": "/data"}])
    s = built(tmp_path, edits, devices=[api.Device(container_path="/dev/x", host_path="/dev/zero", permissions="rwm")])
    assert [(d["path"], d["minor"]) for d in s["linux"]["devices"]] == [("/dev/x", os.minor(NULL.st_rdev))]
    assert [m["source"] for m in s["mounts"] if m["destination"] == "/data"] == ["/usr"]


def test_without_cdi_devices_the_spec_is_unchanged(tmp_path: Path) -> None:
    assert "hooks" not in built(tmp_path, Edits())
