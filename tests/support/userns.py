"""User namespace options of a pod (hostUsers: false) as kubelet sends them (the bench uses them too)."""

from __future__ import annotations

from tests.support.client import api

# kubelet's range per pod.
RANGE = 65536


def mapping(host_id: int, length: int = RANGE, container_id: int = 0) -> api.IDMapping:
    return api.IDMapping(container_id=container_id, host_id=host_id, length=length)


def userns(host_id: int) -> api.NamespaceOption:
    """Namespace options of a pod (and its containers) whose user namespace maps 0.. to host_id.."""
    ids = [mapping(host_id)]
    return api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD, uids=ids, gids=ids))
