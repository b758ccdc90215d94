"""CreateContainer validation and planning (cri_shim.runtime.plan): what is refused, and that a
refusal comes before anything is looked up or made."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.runtime import plan
from cri_shim.runtime.features import HandlerFeatures
from cri_shim.sandbox.record import READY, Sandbox

pytestmark = pytest.mark.unit


def config(**fields: Any) -> api.ContainerConfig:
    fields.setdefault("metadata", api.ContainerMetadata(name="c", attempt=1))
    fields.setdefault("image", api.ImageSpec(image="busybox"))
    return api.ContainerConfig(**fields)


def sandbox(log_directory: str) -> Sandbox:
    pod = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="p", namespace="n", uid="u"), log_directory=log_directory)
    return Sandbox(id="s" * 64, name="p/n/u/0", config=pod, runtime_handler="gone", created_at=1, files_dir="/nonexistent",
                   cgroup_driver="cgroupfs", cgroup_parent="/cri-shim", phase=READY)


class Untouchable:
    """Stands for the image store, image volumes, CDI registry and container lookup: a plan
    refused on the request alone must not reach any of them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the plan reached {name} before refusing")

    def __call__(self, *args: Any) -> Any:
        raise AssertionError("the plan looked up a container before refusing")


def make(c: api.ContainerConfig, sb: Sandbox, handlers: tuple[str, ...] = ("runc",), handler: str = "runc",
         features: HandlerFeatures = HandlerFeatures()) -> plan.ContainerPlan:
    nothing: Any = Untouchable()
    return asyncio.run(plan.plan(c, sb, handlers=handlers, handler=handler, handler_features=features, images=nothing,
                                 image_volumes=nothing, cdi=nothing, target=nothing))


@pytest.mark.parametrize("fields,message", [
    ({"metadata": None}, "metadata"),
    ({"metadata": api.ContainerMetadata(name="")}, "name"),
    ({"metadata": api.ContainerMetadata(name="a/b")}, "'/'"),
    ({"image": None}, "image"),
    ({"labels": {"a": "b\x00"}}, "NUL"),
    ({"annotations": {"run.oci.seccomp_bpf_data": "AA=="}}, "run.oci.seccomp_bpf_data"),
    ({"annotations": {"org.systemd.property.DeviceAllow": "'/dev/sda rwm'"}}, "org.systemd.property"),
    ({"annotations": {"RUN.OCI.hooks.stdout": "/etc/shadow"}}, "RUN.OCI"),
    ({"annotations": {"org.criu.config": "/x"}}, "org.criu.config"),
    ({"annotations": {"module.wasm.image/variant": "compat"}}, "module.wasm.image"),
    ({"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        run_as_user=api.Int64Value(value=-1)))}, "run_as_user"),
    ({"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        namespace_options=api.NamespaceOption(ipc=7)))}, "namespace mode"),
    ({"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        namespace_options=api.NamespaceOption(pid=api.TARGET)))}, "target_id"),
])
def test_config_refusals_name_the_field(fields: dict[str, Any], message: str) -> None:
    c = config(**{k: v for k, v in fields.items() if v is not None})
    for key in [k for k, v in fields.items() if v is None]:
        c.ClearField(key)
    with pytest.raises(InvalidArgument, match=message):
        plan.check_config(c)


def test_annotations_merely_mentioning_a_runtime_prefix_are_carried() -> None:
    plan.check_config(config(annotations={"example.com/run.oci.note": "x", "note": "run.oci.seccomp_bpf_data",
                                          "org.systemd.propertyless": "y"}))


def test_a_log_path_out_of_the_log_directory_is_refused_before_anything_else(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="escapes"):
        make(config(log_path="../../etc/evil.log"), sandbox(str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_log_directory_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "pod").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidArgument):
        make(config(log_path="pod/c/0.log"), sandbox(str(tmp_path)))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_sandbox_whose_handler_is_no_longer_configured_is_a_failed_precondition(tmp_path: Path) -> None:
    # The same answer the runc/conmon layer gives a stored container of such a handler.
    with pytest.raises(FailedPrecondition, match="'gone' of sandbox s+ is not configured"):
        make(config(log_path="c/0.log"), sandbox(str(tmp_path)), handler="gone")
    assert list(tmp_path.iterdir()) == []


def test_recursive_read_only_mounts_need_a_handler_offering_them(tmp_path: Path) -> None:
    rro = api.Mount(container_path="/d", host_path=str(tmp_path / "d"), readonly=True, recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="recursive read-only"):
        make(config(mounts=[rro]), sandbox(str(tmp_path)), features=HandlerFeatures(recursive_read_only_mounts=False))
    assert list(tmp_path.iterdir()) == []


def test_the_reserved_name_is_the_containers_and_the_pods() -> None:
    assert plan.container_name(config(), sandbox("")) == "c_p_n_u_1"


def test_a_request_names_its_sandbox_and_carries_a_config() -> None:
    with pytest.raises(InvalidArgument, match="pod_sandbox_id"):
        plan.check_request("", config())
    with pytest.raises(InvalidArgument, match="config must be set"):
        plan.check_request("s", None)
    assert plan.check_request("s", config()) == config()
