"""The durable record of a container: the ContainerConfig it was made from, and what happened since.

The whole config is kept (serialised as the sandbox record keeps its PodSandboxConfig,
cri_shim.store.codec), so ContainerStatus echoes a field of it without the record copying the
field by hand. Records written before the config was kept whole held a dozen of its fields
instead; they are read into a config of those fields and written back in the current form.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from cri_shim.api import api_pb2 as api
from cri_shim.errors import FailedPrecondition
from cri_shim.store.codec import JsonRecord, encode

# Container states, numbered as the CRI ContainerState enum (runtime.v1).
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN = 0, 1, 2, 3

# The config fields a record of the earlier form held on their own.
_EARLIER_FIELDS = ("metadata_name", "attempt", "labels", "annotations", "mounts", "resources", "stdin", "stdin_once",
                   "tty")


@dataclasses.dataclass
class ContainerRecord(JsonRecord):
    """One container: what CreateContainer asked for and what has happened to it since.

    The state is derived from the timestamps, as containerd does (finished_at set: EXITED;
    started_at set: RUNNING; created_at set: CREATED); a record persisted before `runc
    create` finished has created_at 0 and reads UNKNOWN, which recovery cleans up. Times are
    nanoseconds since the epoch. config is the request's, with image volumes' mounts given
    the host path they were given and the resources as last updated; image is the image as
    ContainerStatus names it, log_path the log's full path (the config's joined to the pod's
    log directory); user is the resolved uid, gid and groups; image_volumes maps the image's
    VOLUME paths to their directories on the host; idmapped maps the destinations cri-shim
    idmapped (a pod with a user namespace) to the sources it idmapped. pid is the container's
    first process and pid_start_time its start time (clock ticks since boot, 0 in records made
    before it was kept), which tells that process from one that reused its pid.
    """

    id: str
    name: str
    sandbox_id: str
    config: api.ContainerConfig
    image: str
    image_ref: str
    image_id: str
    runtime_handler: str
    bundle: str
    log_path: str = ""
    user: dict[str, Any] = dataclasses.field(default_factory=dict)
    stop_signal: int = 15
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    pid_start_time: int = 0
    monitor_pid: int = 0
    monitor_start_time: int = 0
    cgroups_path: str = ""
    image_volumes: dict[str, str] = dataclasses.field(default_factory=dict)
    idmapped: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> int:
        if self.finished_at:
            return CONTAINER_EXITED
        if self.started_at:
            return CONTAINER_RUNNING
        if self.created_at:
            return CONTAINER_CREATED
        return CONTAINER_UNKNOWN

    def running(self) -> ContainerRecord:
        """Itself when the container runs, for calls that need its processes; else FailedPrecondition."""
        if self.state != CONTAINER_RUNNING:
            raise FailedPrecondition(f"container {self.id} is not running")
        return self

    @classmethod
    def outdated(cls, data: dict[str, Any]) -> bool:
        """Whether data is of the earlier form, without the whole config."""
        return "config" not in data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerRecord:
        if cls.outdated(data):
            data = _upgraded(data)
        return super().from_dict(data)


def _upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """A record of the earlier form as one of the current: its config fields gathered into a
    config (the config's own log_path, kept only joined to the log directory, stays empty)."""
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name=data.get("metadata_name", ""), attempt=data.get("attempt", 0)),
        image=api.ImageSpec(image=data.get("image", "")),
        labels=data.get("labels", {}), annotations=data.get("annotations", {}),
        stdin=data.get("stdin", False), stdin_once=data.get("stdin_once", False), tty=data.get("tty", False),
    )
    for mount in data.get("mounts", []):
        json_format.ParseDict(mount, config.mounts.add())
    json_format.ParseDict(data.get("resources", {}), config.linux.resources)
    rest = {k: v for k, v in data.items() if k not in _EARLIER_FIELDS}
    return {**rest, "config": encode(config)}
