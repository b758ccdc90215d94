"""The server itself: socket, limits, status codes, start-up gating and clean shutdown."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon

pytestmark = pytest.mark.integration


def test_version_is_what_kubelet_requires(cri: Cri) -> None:
    v = cri.runtime.Version(api.VersionRequest(version="v1"))
    assert (v.version, v.runtime_name, v.runtime_api_version) == ("0.1.0", "cri-shim", "v1")
    assert v.runtime_version


def test_status_reports_both_conditions_and_default_handler(cri: Cri) -> None:
    status = cri.runtime.Status(api.StatusRequest(verbose=True))
    conditions = {c.type: c.status for c in status.status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    assert "" in [h.name for h in status.runtime_handlers]
    assert '"stateDir"' in status.info["config"]


def test_the_embedded_network_leaves_out_the_firewall_where_forward_accepts_everything(cri: Cri, daemon: Daemon) -> None:
    """The test namespace's FORWARD chain has no rules and an ACCEPT policy."""
    status = cri.runtime.Status(api.StatusRequest(verbose=True))
    decision = json.loads(status.info["network"])["embeddedFirewall"]
    assert decision == {"needed": False, "reason": "FORWARD accepts all forwarded traffic"}
    sid = cri.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="nofw", namespace="ns", uid="nofw")))).pod_sandbox_id
    cached = json.loads((Path(daemon.config["paths"]["state_dir"]) / "cni" / "cache" / f"{sid}.json").read_text())
    assert [p["type"] for p in cached["network"]["plugins"]] == ["bridge", "portmap"]
    cri.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid))
    cri.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid))


def test_runtime_config_reports_cgroupfs(cri: Cri) -> None:
    answer = cri.runtime.RuntimeConfig(api.RuntimeConfigRequest())
    assert answer.linux.cgroup_driver == api.CGROUPFS


def test_network_not_ready_when_plugins_are_missing() -> None:
    d = Daemon({"network": {"bin_dirs": ["/nonexistent"]}})
    d.start()
    try:
        client = Cri(d.endpoint)
        status = client.runtime.Status(api.StatusRequest())
        network = next(c for c in status.status.conditions if c.type == "NetworkReady")
        assert not network.status and network.reason == "NetworkPluginNotReady"
        assert "bridge" in network.message
        client.close()
    finally:
        d.stop()


def test_socket_mode_is_0660(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660


def test_messages_over_16_mib_are_refused_by_the_server(daemon: Daemon) -> None:
    huge = api.VersionRequest(version="x" * (17 * 1024 * 1024))
    # A client that would send it, so the refusal is the server's.
    with grpc.insecure_channel(daemon.endpoint, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary("/runtime.v1.RuntimeService/Version", request_serializer=api.VersionRequest.SerializeToString)
        with pytest.raises(grpc.RpcError) as err:
            call(huge, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sigterm_stops_cleanly_and_removes_the_socket(daemon: Daemon) -> None:
    assert daemon.stop() == 0
    assert not daemon.socket.exists()


def test_second_daemon_on_the_same_state_is_refused(daemon: Daemon) -> None:
    twin = Daemon()
    twin.config_path.write_text(daemon.config_path.read_text().replace(str(daemon.socket), str(twin.socket)))
    twin.start(wait=False)
    assert twin.proc is not None and twin.proc.wait(timeout=20) == 1
    assert "another cri-shim" in twin.log_path.read_text()
