"""What the running kernel offers: its capabilities, its modules' parameters, its loaded
AppArmor profiles. Read from /proc/sys and /sys; each answers "absent" where the file is."""

from __future__ import annotations

from pathlib import Path

CAP_LAST_CAP = Path("/proc/sys/kernel/cap_last_cap")
MODULES = Path("/sys/module")
APPARMOR_PROFILES = Path("/sys/kernel/security/apparmor/profiles")

# CAP_CHECKPOINT_RESTORE: the last capability of the kernels runc 1.1 knows.
DEFAULT_LAST_CAP = 40


def last_cap() -> int:
    """The number of the highest capability the kernel knows."""
    try:
        return int(CAP_LAST_CAP.read_text())
    except (OSError, ValueError):
        return DEFAULT_LAST_CAP


def module_parameter(module: str, name: str) -> str | None:
    """A loaded module's parameter (/sys/module/<module>/parameters/<name>), None when absent."""
    try:
        return (MODULES / module / "parameters" / name).read_text().strip()
    except OSError:
        return None


def apparmor_enabled() -> bool:
    """Whether AppArmor is on (its module says Y)."""
    return module_parameter("apparmor", "enabled") == "Y"


def apparmor_profiles() -> set[str]:
    """Names of the AppArmor profiles the kernel has loaded (none without AppArmor)."""
    try:
        text = APPARMOR_PROFILES.read_text()
    except OSError:
        return set()
    return {line.rsplit(" (", 1)[0] for line in text.splitlines() if line}
