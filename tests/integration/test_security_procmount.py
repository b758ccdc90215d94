"""procMount as kubelet sends it: its default masked and read-only paths for Default, empty lists for
Unmasked, and the container sees exactly those, as under containerd."""

from __future__ import annotations

import pytest

from tests.support.containers import Harness, module_harness, output

pytestmark = pytest.mark.integration
_ = module_harness  # the module-wide `h` fixture

# kubelet's lists for procMount Default (k8s.io/kubernetes/pkg/securitycontext), written out here so
# that the test does not read the runtime's own constants.
KUBELET_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                  "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]
KUBELET_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# What the container sees: /proc/timer_list's size, whether /proc/sys takes a write (of the value it
# holds, so that nothing changes whichever IPC namespace it is), and the mount
# points over /proc's entries (a masked file is /dev/null bound over it, a read-only path its own bind).
PROBE = ("wc -c < /proc/timer_list; "
         "v=$(cat /proc/sys/kernel/shm_rmid_forced); "
         "if echo $v > /proc/sys/kernel/shm_rmid_forced; then echo rw; else echo ro; fi; "
         "awk '$5 ~ \"^/proc/.\" {print $5}' /proc/self/mountinfo | sort | tr '\\n' ' '")


def probe(h: Harness, masked: list[str], readonly: list[str]) -> list[str]:
    cfg = h.config("sh", "-c", PROBE)
    cfg.linux.security_context.masked_paths.extend(masked)
    cfg.linux.security_context.readonly_paths.extend(readonly)
    out, err, code = output(h, cfg)
    assert code == 0, err
    return out.splitlines()


def test_proc_mount_default_masks_and_protects_what_kubelet_lists(h: Harness) -> None:
    size, write, mounts = probe(h, KUBELET_MASKED, KUBELET_READONLY)
    assert (size, write) == ("0", "ro")
    assert {"/proc/keys", "/proc/timer_list", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"} <= set(mounts.split())


def test_proc_mount_unmasked_empty_lists_mean_nothing_masked(h: Harness) -> None:
    size, write, *mounts = probe(h, [], [])
    assert int(size) > 0 and write == "rw"
    assert mounts == [], mounts  # /proc alone, nothing bound over its entries


def test_lists_sent_are_used_as_sent(h: Harness) -> None:
    size, write, mounts = probe(h, ["/proc/timer_list"], [])
    assert (size, write, mounts.split()) == ("0", "rw", ["/proc/timer_list"])
