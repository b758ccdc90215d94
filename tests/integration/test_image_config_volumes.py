"""The image's own volumes (VOLUME in its config): directories made in the rootfs, whose host
paths verbose ContainerStatus reports, and which go with the container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.client import api
from tests.support.images import Catalog
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    FOREVER,
    Pulled,
    container_config,
    exec_sync,
    logged_pod,
    pull,
    pulled_daemon,
    pulling_from,
    remove,
    run_container,
    verbose_info,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def test_an_image_volume_directory_is_reported_with_its_host_path(pulled: Pulled, catalog: Catalog) -> None:
    cri, daemon = pulled.cri, pulled.daemon
    layered = pull(cri, catalog.ref("layered"))  # declares VOLUME /data
    pod = logged_pod(daemon, "volumes")
    sid = run_pod(cri, pod)
    before = snapshot(daemon)
    cid = run_container(cri, sid, pod, container_config("app", "sh", "-c", FOREVER, image=layered))
    answer = exec_sync(cri, cid, "sh", "-c", "echo written > /data/file")
    assert answer.exit_code == 0, answer
    [volume] = verbose_info(cri, cid)["imageVolumes"]
    rootfs = Path(daemon.config["paths"]["state_dir"]) / "rootfs" / cid / "rootfs"
    assert volume == {"containerPath": "/data", "hostPath": str(rootfs / "data")}
    assert (Path(volume["hostPath"]) / "file").read_text() == "written\n"  # the host sees what the container wrote
    remove(cri, cid)
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    remove_pod(cri, sid)


def test_a_volume_a_mount_covers_is_not_made(pulled: Pulled, catalog: Catalog, tmp_path: Path) -> None:
    cri, daemon = pulled.cri, pulled.daemon
    layered = pull(cri, catalog.ref("layered"))
    pod = logged_pod(daemon, "volumes-covered")
    sid = run_pod(cri, pod)
    config = container_config("app", "sh", "-c", FOREVER, image=layered,
                              mounts=[api.Mount(container_path="/data", host_path=str(tmp_path))])
    cid = run_container(cri, sid, pod, config)
    assert verbose_info(cri, cid)["imageVolumes"] == []
    remove_pod(cri, sid)
