"""SIGHUP on a real daemon: each live key seen taking effect in the calls that follow (log lines,
pulls from the test registry, ListImages' pinned flag, Status' network readiness), a key that
needs a restart logged and left as it was, a broken file ignored, and the daemon still serving.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon, merge, toml
from tests.support.images import Catalog, Pusher, build_image, busybox_layers
from tests.support.registry import Registry
from tests.support.workloads import pull, until

pytestmark = pytest.mark.integration


def log_lines(d: Daemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in d.log_path.read_text().splitlines() if line.startswith("{")]


def reloads(d: Daemon) -> int:
    return sum(line["msg"] in ("config reloaded", "config not reloaded, the running configuration is kept")
               for line in log_lines(d))


def reload(d: Daemon, changes: dict[str, Any] | None = None, text: str | None = None) -> None:
    """Rewrites the daemon's file (changes merged in, or text as it is), sends SIGHUP, waits for the reload's log line."""
    if changes is not None:
        d.config = merge(d.config, changes)
        text = toml(d.config)
    assert text is not None and d.proc is not None
    d.config_path.write_text(text)
    seen = reloads(d)
    d.proc.send_signal(signal.SIGHUP)
    until(lambda: reloads(d) > seen, "the reload's log line")
    assert d.proc.poll() is None


def pull_error(cri: Cri, image: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        pull(cri, image)
    return err.value


def network_ready(cri: Cri) -> api.RuntimeCondition:
    conditions = cri.runtime.Status(api.StatusRequest()).status.conditions
    return next(c for c in conditions if c.type == "NetworkReady")


@pytest.fixture
def daemon_overrides() -> dict[str, Any]:
    return {"server": {"log_level": "info"}}


def test_log_level(daemon: Daemon, cri: Cri) -> None:
    cri.runtime.Version(api.VersionRequest())
    assert not [line for line in log_lines(daemon) if line["level"] == "debug"]
    reload(daemon, {"server": {"log_level": "debug"}})
    cri.runtime.Version(api.VersionRequest())
    assert [line for line in log_lines(daemon) if line["msg"] == "rpc" and line.get("rpc") == "Version"]


def test_insecure_registries(daemon: Daemon, cri: Cri, catalog: Catalog, registry: Registry) -> None:
    pull_error(cri, catalog.ref("busybox"))  # https to a plain-http registry
    reload(daemon, {"images": {"insecure_registries": [registry.host]}})
    assert pull(cri, catalog.ref("busybox")) == catalog.busybox.id


def test_mirrors(daemon: Daemon, cri: Cri, catalog: Catalog, registry: Registry) -> None:
    pull_error(cri, "mirrored.invalid/busybox:latest")  # no such registry
    reload(daemon, {"images": {"mirrors": {"mirrored.invalid": [registry.url]}}})
    assert pull(cri, "mirrored.invalid/busybox:latest") == catalog.busybox.id
    reload(daemon, {"images": {"mirrors": {"mirrored.invalid": []}}})
    cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=catalog.busybox.id)))
    pull_error(cri, "mirrored.invalid/busybox:latest")


@pytest.fixture(scope="module")
def private_registry() -> Iterator[tuple[Registry, str]]:
    """A registry that wants a password, holding one busybox image; (registry, image id)."""
    work = Path(tempfile.mkdtemp(prefix="images-"))
    with Registry(users={"operator": "s3cret"}) as reg:
        image = build_image(busybox_layers(work, 1), {"Cmd": ["sh"]})
        Pusher(reg.url, "operator", "s3cret").push(image, "private", "latest")
        yield reg, image.id
    shutil.rmtree(work, ignore_errors=True)


def test_auth_file(daemon: Daemon, cri: Cri, private_registry: tuple[Registry, str]) -> None:
    reg, image_id = private_registry
    auth = daemon.dir / "auth.json"
    auth.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"operator:s3cret").decode()}}}))
    reload(daemon, {"images": {"insecure_registries": [reg.host]}})
    assert pull_error(cri, f"{reg.host}/private:latest").code() == grpc.StatusCode.PERMISSION_DENIED
    reload(daemon, {"images": {"auth_file": str(auth)}})
    assert pull(cri, f"{reg.host}/private:latest") == image_id


def test_pinned_images(daemon: Daemon, cri: Cri, catalog: Catalog, registry: Registry) -> None:
    reload(daemon, {"images": {"insecure_registries": [registry.host]}})
    pull(cri, catalog.ref("busybox"))
    pull(cri, catalog.ref("layered"))

    def pinned() -> dict[str, bool]:
        return {i.id: i.pinned for i in cri.image.ListImages(api.ListImagesRequest()).images}

    assert pinned() == {catalog.busybox.id: False, catalog.layered.id: False}
    reload(daemon, {"images": {"pinned_images": [catalog.ref("busybox")]}})
    assert pinned() == {catalog.busybox.id: True, catalog.layered.id: False}
    status = cri.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=catalog.busybox.id)))
    assert status.image.pinned


def test_cni_conf_dir_rescan(daemon: Daemon, cri: Cri) -> None:
    assert network_ready(cri).status  # the embedded network, conf_dir being empty
    other = daemon.dir / "other.d"
    other.mkdir()
    (other / "10-missing.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "missing", "plugins": [{"type": "no-such-plugin"}]}))
    reload(daemon, {"network": {"conf_dir": str(other)}})
    condition = network_ready(cri)
    assert not condition.status and "no-such-plugin" in condition.message
    # Rescanned at each look: the file removed, the embedded network is back without a reload.
    (other / "10-missing.conflist").unlink()
    assert network_ready(cri).status


def test_keys_that_need_a_restart_are_logged_and_not_applied(daemon: Daemon, cri: Cri) -> None:
    reload(daemon, {"runtime": {"default_pids_limit": 100}, "streaming": {"max_tokens": 5}, "server": {"log_level": "debug"}})
    (refused,) = [line for line in log_lines(daemon) if line["msg"] == "config changes that need a restart were not applied"]
    assert refused["keys"] == ["runtime.default_pids_limit", "streaming.max_tokens"]
    running = json.loads(cri.runtime.Status(api.StatusRequest(verbose=True)).info["config"])
    assert running["runtime"]["default_pids_limit"] == -1 and running["streaming"]["max_tokens"] == 1000
    assert running["server"]["log_level"] == "debug"  # the live key of the same file is applied


def test_a_broken_file_keeps_the_running_config(daemon: Daemon, cri: Cri, tmp_path: Path) -> None:
    reload(daemon, {"server": {"log_level": "debug"}})
    for text in ("[server\n", "[server]\nlog_level = \"loud\"\n", "[images]\nunknown_key = 1\n"):
        reload(daemon, text=text)
        errors = [line for line in log_lines(daemon) if line["msg"] == "config not reloaded, the running configuration is kept"]
        assert errors and errors[-1]["level"] == "error"
    running = json.loads(cri.runtime.Status(api.StatusRequest(verbose=True)).info["config"])
    assert running["server"]["log_level"] == "debug"
    cri.runtime.Version(api.VersionRequest())
    assert log_lines(daemon)[-1]["msg"] == "rpc"  # still at debug, still serving
