"""The container's argv, environment and working directory, merged as containerd merges them.

- argv: a CRI command replaces the image Entrypoint; CRI args replace the image Cmd, and the
  image Cmd is used only when the CRI gives no command either (moby's commit.go rule).
- env: a default PATH, then HOSTNAME, then the image's Env, then the CRI envs; a later
  definition of a name replaces the earlier one in place.
- cwd: the CRI working_dir, else the image WorkingDir, else "/".
"""

from __future__ import annotations

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument
from cri_shim.image.imageconfig import ImageConfig

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def args(config: api_pb2.ContainerConfig, image: ImageConfig) -> list[str]:
    """The process argv."""
    command, arguments = list(config.command), list(config.args)
    if not command:
        if not arguments:
            arguments = list(image.cmd)
        # An Entrypoint of [""] is how images clear an inherited entrypoint.
        if image.entrypoint != [""]:
            command = list(image.entrypoint)
    argv = command + arguments
    if not argv:
        raise InvalidArgument("no command specified: neither the container config nor the image has one")
    return argv


def merge_env(*layers: list[str]) -> list[str]:
    """KEY=VALUE lists merged in order; a later KEY replaces an earlier one where it stood."""
    out: list[str] = []
    index: dict[str, int] = {}
    for layer in layers:
        for entry in layer:
            key = entry.split("=", 1)[0]
            if key in index:
                out[index[key]] = entry
            else:
                index[key] = len(out)
                out.append(entry)
    return out


def env(config: api_pb2.ContainerConfig, image: ImageConfig, hostname: str) -> list[str]:
    """The process environment."""
    base = [DEFAULT_PATH]
    if hostname:
        base.append(f"HOSTNAME={hostname}")
    return merge_env(base, image.env, [f"{kv.key}={kv.value}" for kv in config.envs])


def cwd(config: api_pb2.ContainerConfig, image: ImageConfig) -> str:
    """The working directory (runc creates it when missing)."""
    path = config.working_dir or image.working_dir or "/"
    if not path.startswith("/"):
        raise InvalidArgument(f"working directory {path!r} is not absolute")
    return path
