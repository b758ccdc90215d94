"""Pod and container cgroups: naming for the cgroupfs and systemd drivers, and the cgroup filesystem."""

from cri_shim.cgroups.paths import CgroupPathError, container_cgroups_path, normalize_parent, relative_path

__all__ = ["CgroupPathError", "container_cgroups_path", "normalize_parent", "relative_path"]
