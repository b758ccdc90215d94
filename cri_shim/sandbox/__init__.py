"""Pod sandboxes: pinned namespaces, an infra process for a pod PID namespace, pod files, cgroups, CNI.

Other parts use SandboxManager (get, register_containers) and the Sandbox record
(cgroups_path, namespace_path, pid_namespace_path, files_dir, shm, config).
"""

from cri_shim.sandbox.containers import SandboxContainers
from cri_shim.sandbox.manager import SandboxManager
from cri_shim.sandbox.record import Sandbox

__all__ = ["Sandbox", "SandboxContainers", "SandboxManager"]
