"""A CNI plugin wrapper that injects faults at ADD, for fault tests (as containerd's cni-bridge-fp).

`fault-bridge` runs the real bridge plugin, then acts on the mode file beside it:
  pass     - return the bridge's result;
  fail     - report an error after the bridge did its work (so DEL has something to undo);
  crash    - die by SIGKILL after the bridge did its work (the result is lost);
  hang     - record its pid, then sleep until killed;
  hold     - wait until a release file appears, then return the result;
  hold-del - pass ADD, but hold every DEL as `hold` does (to keep start-up recovery, which DELs
             what a crash left attached, in progress while a test calls the daemon);
  fail-del - pass ADD, but fail every DEL without doing it;
  fail-all - fail ADD as `fail` does and every DEL as `fail-del` does (a rollback that cannot
             release the network).
Every ADD is counted in adds.log. The network uses it with portmap and firewall chained.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.faultbin import kill_hung, wait_hung

WRAPPER = """#!/bin/sh
dir=$(dirname "$0")
input=$(cat)
if [ "$CNI_COMMAND" = DEL ] && [ "$(cat "$dir/mode")" = hold-del ]; then
    echo $$ > "$dir/hung.pid"; while [ ! -e "$dir/release" ]; do sleep 0.05; done
fi
if [ "$CNI_COMMAND" = DEL ] && { [ "$(cat "$dir/mode")" = fail-del ] || [ "$(cat "$dir/mode")" = fail-all ]; }; then
    printf '{"cniVersion":"1.0.0","code":999,"msg":"injected failure at DEL"}'; exit 1
fi
if [ "$CNI_COMMAND" != ADD ]; then
    printf '%s' "$input" | /usr/lib/cni/bridge
    exit $?
fi
echo "$CNI_CONTAINERID" >> "$dir/adds.log"
out=$(printf '%s' "$input" | /usr/lib/cni/bridge) || { printf '%s' "$out"; exit 1; }
case "$(cat "$dir/mode")" in
    fail|fail-all) printf '{"cniVersion":"1.0.0","code":999,"msg":"injected failure at ADD"}'; exit 1 ;;
    crash) kill -9 $$ ;;
    hang) echo $$ > "$dir/hung.pid"; while :; do sleep 1; done ;;
    hold) echo $$ > "$dir/hung.pid"; while [ ! -e "$dir/release" ]; do sleep 0.05; done ;;
esac
printf '%s' "$out"
"""


class FaultyNetwork:
    """The wrapper plugin in its own bin dir and a conflist naming it, for one test daemon."""

    def __init__(self, base: Path) -> None:
        self.bin_dir = base / "cni-bin"
        self.conf_dir = base / "net.d"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin_dir / "fault-bridge"
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        self.mode("pass")

    def write_conflist(self, ipam_dir: Path, subnet: str = "10.89.0.0/16") -> None:
        """The network, keeping its address leases in ipam_dir (under the daemon's state dir)."""
        conflist = {
            "cniVersion": "1.0.0",
            "name": "faulty",
            "plugins": [
                {
                    "type": "fault-bridge",
                    "bridge": "crishimf0",
                    "isGateway": True,
                    "ipMasq": True,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                {"type": "firewall"},
            ],
        }
        (self.conf_dir / "10-faulty.conflist").write_text(json.dumps(conflist))

    def overrides(self) -> dict[str, object]:
        """Daemon config using this network."""
        return {"network": {"conf_dir": str(self.conf_dir), "bin_dirs": [str(self.bin_dir), "/usr/lib/cni"]}}

    def mode(self, mode: str) -> None:
        (self.bin_dir / "mode").write_text(mode)

    def adds(self) -> list[str]:
        log = self.bin_dir / "adds.log"
        return log.read_text().split() if log.exists() else []

    def wait_hung(self, timeout: float = 30) -> int:
        """The pid of the plugin once it hangs or holds."""
        return wait_hung(self.bin_dir, "the CNI plugin", timeout)

    def release(self) -> None:
        (self.bin_dir / "release").touch()

    def hold(self) -> None:
        """Undoes release() and forgets the last hung pid, for the next hold."""
        (self.bin_dir / "release").unlink(missing_ok=True)
        (self.bin_dir / "hung.pid").unlink(missing_ok=True)

    def kill_hung(self) -> None:
        """Ends a hanging plugin (it belongs to the test: the daemon that ran it is gone)."""
        kill_hung(self.bin_dir)
