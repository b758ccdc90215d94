"""A pod whose CNI DEL keeps failing can still be stopped and removed (and a failed RunPodSandbox
rolled back): the runtime releases what it owns and keeps only the CNI cache entry, which DEL
retries at start-up until it succeeds.

The network here has the bridge's masquerading off: the bridge plugin finds the addresses whose
masquerade rules it drops through the pod's network namespace, which is released with the pod,
so a DEL retried after removal cannot drop them (portmap and firewall use the cached result).
"""

from __future__ import annotations

import json
import re

import grpc
import pytest

from tests.fault.test_sandbox_faults import faulty_daemon
from tests.support.client import Cri, api
from tests.support.faultcni import FaultyNetwork
from tests.support.pods import changes, pod_config, remove_pod, run_pod, snapshot, status, stop_pod, warm_up

pytestmark = [pytest.mark.fault, pytest.mark.restart]

LEASE = re.compile(r"cni/ipam-faulty/faulty/10\.89\.\d+\.\d+")


def without_masquerade(net: FaultyNetwork) -> None:
    path = net.conf_dir / "10-faulty.conflist"
    conf = json.loads(path.read_text())
    conf["plugins"][0]["ipMasq"] = False
    path.write_text(json.dumps(conf))


def pods(cri: Cri) -> list[str]:
    return [p.id for p in cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items]


def test_a_pod_whose_del_always_fails_is_stopped_and_removed_and_del_is_retried_at_start_up() -> None:
    with faulty_daemon() as (d, net):
        without_masquerade(net)
        cri = Cri(d.endpoint)
        warm_up(cri)
        before = snapshot(d)
        net.mode("fail-del")
        sid = run_pod(cri, pod_config("sticky", port_mappings=[api.PortMapping(container_port=80, host_port=18078)]))
        ip = status(cri, sid)[0].network.ip
        stop_pod(cri, sid)
        st, info = status(cri, sid)
        assert st.state == api.SANDBOX_NOTREADY and info["pid"] == 0
        assert st.network.ip == ip  # still leased: no other pod can be given it
        stop_pod(cri, sid)  # DEL tried again, failing again: still stopped
        remove_pod(cri, sid)
        assert pods(cri) == []
        kept = {"state files": {"added": sorted([f"cni/cache/{sid}.json", f"cni/ipam-faulty/faulty/{ip}"]), "gone": []}}
        assert changes(before, snapshot(d)) == kept, d.log_tail()
        assert "pod network not released, CNI DEL will be retried" in d.log_tail(200)
        cri.close()

        d.restart()  # start-up recovery tries DEL again, which fails again: nothing comes back
        cri = Cri(d.endpoint)
        assert pods(cri) == []
        assert changes(before, snapshot(d)) == kept, d.log_tail()
        remove_pod(cri, sid)  # an id already removed
        cri.close()

        net.mode("pass")
        d.restart()  # now DEL succeeds: the lease and the cache entry go
        assert changes(before, snapshot(d)) == {}, d.log_tail()


def test_a_rollback_whose_del_fails_leaves_only_the_cni_cache_entry() -> None:
    """The unremovable sandbox of the issue: ADD failed and so did the rollback's DEL, which kept
    the pod NOTREADY with its pins, /dev/shm, cgroups and record, and failed Stop and Remove."""
    with faulty_daemon() as (d, net):
        without_masquerade(net)
        cri = Cri(d.endpoint)
        warm_up(cri)
        before = snapshot(d)
        net.mode("fail-all")
        config = pod_config("doomed", port_mappings=[api.PortMapping(container_port=80, host_port=18077)])
        with pytest.raises(grpc.RpcError) as err:
            run_pod(cri, config)
        assert err.value.code() == grpc.StatusCode.INTERNAL and "injected failure at ADD" in err.value.details()
        assert pods(cri) == []
        left = changes(before, snapshot(d))
        assert list(left) == ["state files"] and left["state files"]["gone"] == [], left
        cache, lease = left["state files"]["added"]
        assert re.fullmatch(r"cni/cache/[0-9a-f]{64}\.json", cache) and LEASE.fullmatch(lease), left
        net.mode("pass")
        remove_pod(cri, run_pod(cri, config))  # the failed attempt released its name
        cri.close()
        d.restart()
        assert changes(before, snapshot(d)) == {}, d.log_tail()
