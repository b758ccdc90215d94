"""Bounds on client metadata (names, uids, labels, annotations), CNI_ARGS injection, the List budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cri_shim import metadata
from cri_shim.api import api_pb2 as api
from cri_shim.config import Config
from cri_shim.errors import InvalidArgument, ResourceExhausted
from cri_shim.listbudget import ENTRY_ALLOWANCE, ListBudget, entry_bytes
from cri_shim.network.cni import CniError, check_args
from cri_shim.network.pod import PodRef
from cri_shim.sandbox.validate import plan
from tests.unit.test_pod_network import network

pytestmark = pytest.mark.unit

BIG = 128 * 1024


def pod(name: str = "p", namespace: str = "n", uid: str = "u", **fields: object) -> api.PodSandboxConfig:
    return api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid=uid), **fields)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (pod(name="n" * BIG), "sandbox metadata name is 131072 bytes, over the 253-byte limit"),
        (pod(name="n" * 254), "name is 254 bytes"),
        (pod(namespace="s" * 64), "namespace is 64 bytes, over the 63-byte limit"),
        (pod(uid="u" * BIG), "uid is 131072 bytes, over the 128-byte limit"),
        (pod(name="inj;IP=10.99.77.77"), r"name 'inj;IP=10.99.77.77' must not contain ';' '='"),
        (pod(namespace="a=b"), "must not contain '='"),
        (pod(uid="u;1"), "must not contain ';'"),
        (pod(name="a/b"), "must not contain '/'"),
        (pod(uid="u\x00"), "must not contain NUL"),
        (pod(labels={"k" * 318: "v"}), "labels: key"),
        (pod(labels={"": "v"}), "labels: key"),
        (pod(labels={"k": "v" * 254}), "value of 254 bytes, over the 253-byte limit"),
        (pod(labels={f"k{i}": "v" * 253 for i in range(1100)}), "labels total"),
        (pod(annotations={"a": "b" * 262144}), "annotations total 262145 bytes, over the 262144-byte limit"),
    ],
)
def test_pod_metadata_out_of_bounds_is_refused_without_echoing_it(config: api.PodSandboxConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as err:
        plan(config, "", Config(), "h")
    assert len(str(err.value)) < 300


def test_pod_metadata_at_the_bounds_passes() -> None:
    config = pod(
        name="n" * 253, namespace="s" * 63, uid="u" * 128,
        labels={"io.kubernetes.pod.name": "n" * 253, "p" * 253 + "/" + "k" * 63: ""},
        annotations={"a": "b" * (262144 - 1)},
    )
    assert plan(config, "", Config(), "h").hostname == "h"
    # The label and annotation totals are separate, as in Kubernetes (its annotation limit only).
    plan(pod(labels={f"k{i:04}": "v" * 248 for i in range(1000)}, annotations={"a": "b" * 262143}), "", Config(), "h")


def test_clip_keeps_short_values_and_cuts_long_ones() -> None:
    assert metadata.clip("abc") == "'abc'"
    cut = metadata.clip("é" * 1000)
    assert cut.startswith("'" + "é" * 64 + "'") and cut.endswith("(2000 bytes)")


@pytest.mark.parametrize("pair", [("K8S_POD_NAME", "inj;IP=10.99.77.77"), ("K8S_POD_UID", "a=b"), ("A;B", "1"), ("", "x")])
def test_cni_args_that_would_split_are_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(CniError, match="must not contain"):
        check_args((("IgnoreUnknown", "1"), pair))
    check_args((("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web-0")))


def test_attach_refuses_an_injecting_pod_before_any_plugin_runs(tmp_path: Path) -> None:
    net, _, log = network(tmp_path)
    with pytest.raises(CniError, match="must not contain"):
        asyncio.run(net.attach("sb1", "/ns/sb1", PodRef(name="inj;IP=10.99.77.77", namespace="ns", uid="u"), []))
    assert not log.exists() and net.cache.ids() == []  # no plugin ran


def test_a_plugin_that_cannot_be_run_is_a_cni_error(tmp_path: Path) -> None:
    """E2BIG (an environment past the kernel's limit) was an OSError that escaped every CniError
    handler, and so failed rollback, Stop and Remove with UNKNOWN."""
    net, _, log = network(tmp_path)
    huge = PodRef(name="n" * (256 * 1024), namespace="ns", uid="u")  # one argument past MAX_ARG_STRLEN
    with pytest.raises(CniError, match="Argument list too long"):
        asyncio.run(net.attach("sb1", "/ns/sb1", huge, []))
    assert not log.exists()  # no plugin ran


def test_entry_bytes_bound_the_wire_size_of_a_list_entry() -> None:
    labels = {f"k{i}": "v" * i for i in range(300)}
    annotations = {"a": "b" * 200000, "c": ""}
    item = api.Container(id="c" * 64, pod_sandbox_id="s" * 64, metadata=api.ContainerMetadata(name="n" * 253, attempt=2**32 - 1),
                         image=api.ImageSpec(image="r" * 600), image_ref="sha256:" + "f" * 64, image_id="sha256:" + "f" * 64,
                         state=api.CONTAINER_EXITED, created_at=2**62, labels=labels, annotations=annotations)
    assert item.ByteSize() <= entry_bytes(labels, annotations)
    many = {f"{i:06}": "" for i in range(20000)}  # tiny pairs: the framing outweighs the text
    assert api.Container(labels=many).ByteSize() <= entry_bytes(many, {}) - ENTRY_ALLOWANCE
    assert entry_bytes({}, {}) == ENTRY_ALLOWANCE


def test_the_budget_counts_stored_and_pending_objects_and_refuses_the_one_past_it() -> None:
    stored = [5_000_000]
    budget = ListBudget("containers", 16 * 1024 * 1024, lambda: stored)
    assert budget.limit == 6 * 1024 * 1024
    with budget.held("a", 1_000_000):
        assert budget.used() == 6_000_000
        with pytest.raises(ResourceExhausted, match="containers listed take 6000000 bytes"):
            with budget.held("b", 300_000):
                pass
        with budget.held("c", 200_000):
            assert budget.used() == 6_200_000
    assert budget.used() == 5_000_000  # released, also when the creation failed
    with pytest.raises(RuntimeError):
        with budget.held("d", 1):
            raise RuntimeError("creation failed")
    assert budget.used() == 5_000_000
