"""Checking a CreateContainer request before anything is made, and deriving what to make.

The sandbox side's counterpart is cri_shim.sandbox.validate. Everything decidable from the
request and stored state is decided here, before a rootfs, a mount, a host directory or a
process exists, so a refused request leaves nothing behind:
- a sandbox id and a config; the config's metadata, labels, annotations and image (cri_shim.metadata
  bounds), annotation keys the OCI runtime acts on (cri_shim.oci.spec), NUL in any of its strings
  and uids and gids out of range (cri_shim.oci.values), namespace modes proto3 passed through
  unknown, a TARGET PID namespace without its target: INVALID_ARGUMENT;
- the log path, joined to the pod's log directory and looked at without following a symlink
  (cri_shim.runtime.logfile): INVALID_ARGUMENT;
- the sandbox must exist (NOT_FOUND) and be ready (FAILED_PRECONDITION), and be read from its
  stored record, never from the sandbox_config the request carries (the caller's word);
- the pod's runtime handler must be configured: FAILED_PRECONDITION, as the sandbox is
  stored but the daemon's configuration no longer offers its handler (containerd answers
  "no runtime for ... is configured", a plain error); recursive read-only mounts need a handler
  that offers them;
- a TARGET PID namespace is that of a running container of the same pod;
- the image, image volumes and CDI devices must resolve (cri_shim.image, cri_shim.cdi).
What needs the image's files (its users, command, working directory) is checked by the spec
builder (cri_shim.oci.spec), once the rootfs exists; a failure there rolls the rootfs back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cri_shim import metadata
from cri_shim.api import api_pb2 as api
from cri_shim.cdi import names as cdi_names
from cri_shim.cdi.edits import Edits
from cri_shim.cdi.registry import Registry
from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.image.imagevolumes import ImageVolumes
from cri_shim.image.records import ImageRecord
from cri_shim.image.store import ImageStore
from cri_shim.oci import namespaces, spec, values
from cri_shim.runtime import logfile
from cri_shim.runtime.features import HandlerFeatures
from cri_shim.runtime.record import ContainerRecord
from cri_shim.sandbox import Sandbox


@dataclass(frozen=True)
class ContainerPlan:
    """What a valid CreateContainer asks the runtime to make.

    name is the reservation (one container per name and attempt in a pod); log_path the
    verified log file ("" for none); volume_images the images of image-volume mounts, by mount
    index; target_pid_ns the PID namespace of a TARGET container's target."""

    name: str
    sandbox: Sandbox
    config: api.ContainerConfig
    handler: str
    log_path: str
    image: ImageRecord
    image_config: ImageConfig
    volume_images: dict[int, ImageRecord]
    cdi_edits: Edits
    target_pid_ns: str | None


def container_name(config: api.ContainerConfig, sandbox: Sandbox) -> str:
    """The name a container reserves: one container per name and attempt in a pod, as kubelet names them."""
    meta, pod = config.metadata, sandbox.metadata
    return f"{meta.name}_{pod.name}_{pod.namespace}_{pod.uid}_{meta.attempt}"


def check_request(sandbox_id: str, config: api.ContainerConfig | None) -> api.ContainerConfig:
    """The request's own checks: a sandbox named, and a config (None when the request has none)
    that check_config() passes; the config."""
    if not sandbox_id:
        raise InvalidArgument("pod_sandbox_id must not be empty")
    if config is None:
        raise InvalidArgument("container config must be set")
    check_config(config)
    return config


def check_config(config: api.ContainerConfig) -> None:
    """The checks of the config alone (InvalidArgument naming the field)."""
    if not config.HasField("metadata") or not config.metadata.name:
        raise InvalidArgument("container config must have metadata with a name")
    metadata.check_name("container name", config.metadata.name, metadata.MAX_CONTAINER_NAME_BYTES)
    metadata.check_labels_and_annotations("container", config.labels, config.annotations)
    spec.check_annotations(config.annotations)
    if not config.image.image:
        raise InvalidArgument("container config must name an image")
    values.check_config(config)
    namespaces.check_modes(config.linux.security_context.namespace_options)


def log_file(config: api.ContainerConfig, log_directory: str) -> str:
    """The container's verified log file, from the pod's stored log directory ("" for none)."""
    return logfile.verify(log_directory, config.log_path)


async def plan(config: api.ContainerConfig, sandbox: Sandbox, *, handlers: Collection[str], handler: str,
               handler_features: HandlerFeatures, images: ImageStore, image_volumes: ImageVolumes, cdi: Registry,
               target: Callable[[str], ContainerRecord]) -> ContainerPlan:
    """The ContainerPlan of a request whose config check_config() passed, for a ready sandbox;
    target(id or prefix) is the record of a running container (NotFound, FailedPrecondition)."""
    log_path = log_file(config, sandbox.config.log_directory)
    if handler not in handlers:
        raise FailedPrecondition(f"runtime handler {handler!r} of sandbox {sandbox.id} is not configured")
    if any(m.recursive_read_only for m in config.mounts) and not handler_features.recursive_read_only_mounts:
        raise InvalidArgument(f"runtime handler {handler!r} does not support recursive read-only mounts")
    image = images.resolve(config.image.image)
    image_config = images.config(image)
    volume_images = image_volumes.check(list(config.mounts))
    requested = cdi_names.requested(config)
    cdi_edits = await asyncio.to_thread(cdi.resolve, requested) if requested else Edits()
    ns = config.linux.security_context.namespace_options
    target_pid_ns = None
    if ns.pid == api.TARGET:
        # As in containerd, the target must run and belong to the sandbox the container is made in;
        # a container of another pod is refused, whatever its id or prefix.
        found = target(ns.target_id)
        if found.sandbox_id != sandbox.id:
            raise InvalidArgument(f"target container {found.id} does not belong to sandbox {sandbox.id}")
        target_pid_ns = pid_namespace(found)
    return ContainerPlan(name=container_name(config, sandbox), sandbox=sandbox, config=config, handler=handler,
                         log_path=log_path, image=image, image_config=image_config, volume_images=volume_images,
                         cdi_edits=cdi_edits, target_pid_ns=target_pid_ns)


def pid_namespace(record: ContainerRecord) -> str:
    """The PID namespace of a running container, for another container's TARGET mode."""
    return f"/proc/{record.pid}/ns/pid"
