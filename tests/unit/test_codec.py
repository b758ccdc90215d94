"""The JSON form of stored records: derived from the dataclasses, and the same as it always was on disk.

The literal dicts below are the form earlier versions wrote: a record or cache entry on a node
must still load after an upgrade, and a new write must be readable by the version before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.image.layers import Layer, LayerStore
from cri_shim.image.records import ImageRecord
from cri_shim.network.cache import CacheEntry
from cri_shim.network.cni import Attachment
from cri_shim.sandbox.record import Infra, Sandbox
from cri_shim.store.codec import JsonRecord
from cri_shim.runtime.record import ContainerRecord

pytestmark = pytest.mark.unit

CONFIG = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="p", uid="u", namespace="n"), hostname="h")
# base64 of CONFIG's deterministic serialization.
CONFIG_B64 = "CgkKAXASAXUaAW4SAWg="

SANDBOX = Sandbox(id="s1", name="p/n/u/0", config=CONFIG, runtime_handler="runc", created_at=5, files_dir="/f",
                  cgroup_driver="cgroupfs", cgroup_parent="/x", phase="ready", pins={"net": "/run/ns/net/s1"},
                  shm="/shm", infra_cgroup="/x/i", cgroup_dirs=["/a"], infra=Infra(10, 20), ips=["10.0.0.2"])
SANDBOX_ON_DISK = {
    "id": "s1", "name": "p/n/u/0", "config": CONFIG_B64, "runtimeHandler": "runc", "createdAt": 5, "filesDir": "/f",
    "cgroupDriver": "cgroupfs", "cgroupParent": "/x", "phase": "ready", "pins": {"net": "/run/ns/net/s1"},
    "shm": "/shm", "infraCgroup": "/x/i", "cgroupDirs": ["/a"], "infra": {"pid": 10, "startTime": 20},
    "ips": ["10.0.0.2"],
}

ENTRY = CacheEntry(conflist={"name": "n", "plugins": []}, source="/etc/cni",
                   attachment=Attachment("s1", "/ns", "eth0", (("K8S_POD_NAME", "p"),), {"portMappings": []}),
                   result={"ips": []})
ENTRY_ON_DISK = {
    "kind": "cri-shim-cni-cache-v1", "network": {"name": "n", "plugins": []}, "source": "/etc/cni",
    "attachment": {"containerId": "s1", "netns": "/ns", "ifname": "eth0", "args": [["K8S_POD_NAME", "p"]],
                   "capabilities": {"portMappings": []}},
    "result": {"ips": []},
}

LAYER = Layer(chain_id="sha256:" + "a" * 64, diff_id="sha256:" + "b" * 64, parent="sha256:" + "c" * 64, bytes=1234, inodes=56)
LAYER_ON_DISK = {"chain_id": "sha256:" + "a" * 64, "diff_id": "sha256:" + "b" * 64, "parent": "sha256:" + "c" * 64,
                 "bytes": 1234, "inodes": 56}


@pytest.mark.parametrize(("record", "on_disk"), [(SANDBOX, SANDBOX_ON_DISK), (ENTRY, ENTRY_ON_DISK), (LAYER, LAYER_ON_DISK)])
def test_the_on_disk_form_is_kept(record: JsonRecord, on_disk: dict) -> None:
    assert record.to_dict() == on_disk
    # Through JSON, as the store writes it: tuples come back as lists and are read as tuples.
    assert type(record).from_dict(json.loads(json.dumps(on_disk))) == record


def test_a_sandbox_without_infra_or_addresses() -> None:
    bare = Sandbox(id="s2", name="q", config=CONFIG, runtime_handler="", created_at=1, files_dir="/g",
                   cgroup_driver="systemd", cgroup_parent="a.slice")
    data = bare.to_dict()
    assert data["infra"] is None and data["shm"] is None and data["pins"] == {} and data["phase"] == "creating"
    assert Sandbox.from_dict(data) == bare


def test_snake_case_records_round_trip_and_ignore_unknown_keys() -> None:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="m", attempt=1), labels={"a": "b"})
    record = ContainerRecord(id="c1", name="c", sandbox_id="s1", config=config, image="i",
                             image_ref="r", image_id="d", runtime_handler="runc", bundle="/b")
    data = record.to_dict()
    assert data["sandbox_id"] == "s1" and data["monitor_start_time"] == 0
    assert ContainerRecord.from_dict({**data, "written_by_a_newer_version": 1}) == record
    image = ImageRecord(id="ab" * 32, repo_tags=["x:1"], size=3)
    assert ImageRecord.from_dict(json.loads(json.dumps(image.to_dict()))) == image


def test_missing_required_field_is_unreadable_and_missing_defaulted_field_takes_its_default() -> None:
    data = SANDBOX.to_dict()
    del data["ips"]
    assert Sandbox.from_dict(data).ips == []
    del data["filesDir"]
    with pytest.raises(TypeError):
        Sandbox.from_dict(data)


@dataclass
class _Nested(JsonRecord):
    pairs: tuple[tuple[str, int], ...] = ()
    fixed: tuple[str, int] = ("a", 1)
    by_name: dict[str, Infra] = field(default_factory=dict)
    maybe: list[Infra] | None = None
    renamed: int = field(default=0, metadata={"json": "other"})


def test_containers_of_records() -> None:
    value = _Nested(pairs=(("x", 1), ("y", 2)), fixed=("b", 2), by_name={"k": Infra(1, 2)}, maybe=[Infra(3, 4)], renamed=7)
    data = json.loads(json.dumps(value.to_dict()))
    assert data["other"] == 7 and data["by_name"] == {"k": {"pid": 1, "startTime": 2}}
    assert _Nested.from_dict(data) == value


def test_a_layer_record_on_disk_loads(tmp_path: Path) -> None:
    (tmp_path / ("a" * 64) / "diff").mkdir(parents=True)
    (tmp_path / ("a" * 64) / "layer.json").write_text(json.dumps(LAYER_ON_DISK, sort_keys=True, separators=(",", ":")))
    store = LayerStore(tmp_path)
    assert store.reload() == []
    assert store.layers == {LAYER.chain_id: LAYER}
