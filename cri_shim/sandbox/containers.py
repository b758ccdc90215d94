"""What the sandbox manager needs from the container manager: stopping and removing a pod's containers.

The container manager registers an object with these methods through
SandboxManager.register_containers(); StopPodSandbox calls stop_sandbox_containers before it
kills the infra process, with CNI DEL of the pod's network running beside both;
RemovePodSandbox does all that, then calls remove_sandbox_containers before it releases the
rest (namespace pins, /dev/shm, cgroups, files). Both must be idempotent and must succeed for
a sandbox that has no containers. RunPodSandbox asks userns_refusal() before it makes a
pod with a user namespace: the container side knows what each handler offers, and why not.
"""

from __future__ import annotations

from typing import Protocol


class SandboxContainers(Protocol):
    """The container side of a sandbox's stop and removal."""

    async def stop_sandbox_containers(self, sandbox_id: str) -> None:
        """Kills every container of the sandbox at once (no grace period) and waits until they exited.

        They stay listable as EXITED afterwards, as StopPodSandbox requires.
        """

    async def remove_sandbox_containers(self, sandbox_id: str) -> None:
        """Removes every container of the sandbox, stopping any that still runs."""

    def userns_refusal(self, handler: str) -> str:
        """Why the handler's pods may not have user namespaces ("" when they may); RunPodSandbox
        refuses them with it."""
