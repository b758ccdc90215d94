"""The runtime's default AppArmor profile, cri-shim-default: what containers run under on a host
with AppArmor when they name no profile or ask for RuntimeDefault, as containerd and CRI-O
apply theirs.

Its rules are the ones the container runtimes' default profiles share: everything a container
normally does is allowed (files, network, capabilities its bounding set keeps), while mounts,
writes to the kernel's knobs in /proc and /sys (except the namespaced /proc/sys/kernel/shm*,
/proc/<pid> and the cgroup filesystem), reading the kernel's memory and the security filesystem
are denied; signals and ptrace only between processes under this profile, and signals from
unconfined host processes and from runc and crun (the runtime's stop and kill: Debian 13 and
Ubuntu run them under profiles of those names). The profile is generated here and loaded with
apparmor_parser the first time a container needs it (again when it was unloaded since).
"""

from __future__ import annotations

import shutil
import subprocess
import threading

from cri_shim.errors import Internal
from cri_shim.linux import kernel

DEFAULT_PROFILE = "cri-shim-default"
PARSER_TIMEOUT = 120.0

_load_lock = threading.Lock()


def profile_text(name: str = DEFAULT_PROFILE) -> str:
    """The default profile's source, for apparmor_parser."""
    return f"""#include <tunables/global>

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,

  signal (receive) peer=unconfined,
  signal (receive) peer=runc,
  signal (receive) peer=crun,
  signal (send,receive) peer={name},
  ptrace (trace,read,tracedby,readby) peer={name},

  deny mount,

  deny @{{PROC}}/* w,
  deny @{{PROC}}/{{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}}/** w,
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"""


def ensure_default_loaded(parser: str = "apparmor_parser") -> None:
    """Loads cri-shim-default unless the kernel has it; Internal with the parser's words when it
    cannot be loaded (no parser, a kernel refusing it)."""
    with _load_lock:
        if DEFAULT_PROFILE in kernel.apparmor_profiles():
            return
        binary = shutil.which(parser)
        if binary is None:
            raise Internal(f"AppArmor is enabled but {parser} is not installed: the default profile cannot be loaded")
        # -K: no cache file written; -r: replace a profile of that name, -q: errors only.
        done = subprocess.run([binary, "-Kqr"], input=profile_text().encode(), capture_output=True, timeout=PARSER_TIMEOUT)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()[-400:]
            raise Internal(f"loading the AppArmor profile {DEFAULT_PROFILE} failed: {message}")
