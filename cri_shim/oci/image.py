"""The parts of an OCI image configuration a container's spec is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageConfig:
    """The "config" object of an OCI image configuration (application/vnd.oci.image.config)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)

    @classmethod
    def from_oci(cls, config: dict[str, Any] | None) -> ImageConfig:
        """From the image config's "config" object (keys as the image spec spells them)."""
        config = config or {}
        return cls(
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            env=list(config.get("Env") or []),
            working_dir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
            stop_signal=config.get("StopSignal") or "",
            volumes=sorted((config.get("Volumes") or {}).keys()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "Entrypoint": self.entrypoint,
            "Cmd": self.cmd,
            "Env": self.env,
            "WorkingDir": self.working_dir,
            "User": self.user,
            "StopSignal": self.stop_signal,
            "Volumes": {v: {} for v in self.volumes},
        }
