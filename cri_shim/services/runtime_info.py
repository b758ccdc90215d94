"""Version, Status, RuntimeConfig and UpdateRuntimeConfig: what the runtime is and whether it is ready."""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import TYPE_CHECKING, Any

from cri_shim import __version__
from cri_shim.api import api_pb2 as api
from cri_shim.network.conf import NetworkConfError, missing_plugins
from cri_shim.runtime.features import HandlerFeatures

if TYPE_CHECKING:
    from cri_shim.daemon import Daemon

RUNTIME_NAME = "cri-shim"
# The CRI wire version kubelet insists on, and the API version this runtime speaks.
KUBELET_API_VERSION = "0.1.0"
RUNTIME_API_VERSION = "v1"


class RuntimeInfoService:
    """Answers the calls kubelet makes on connect and every few seconds after."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def Version(self, request: api.VersionRequest, context: Any) -> api.VersionResponse:
        return api.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: api.StatusRequest, context: Any) -> api.StatusResponse:
        cfg = self.daemon.cfg
        conditions = [self._runtime_condition(), self._network_condition()]
        names = {"": cfg.runtime.default_handler, **{name: name for name in cfg.runtime.handlers}}
        handlers = [api.RuntimeHandler(name=name, features=_handler_features(self.daemon.containers.features(handler)))
                    for name, handler in names.items()]
        response = api.StatusResponse(
            status=api.RuntimeStatus(conditions=conditions),
            runtime_handlers=handlers,
            # Supplemental groups are resolved from the image's /etc/group by the runtime itself (Strict: none).
            features=api.RuntimeFeatures(supplemental_groups_policy=True, user_namespaces_host_network=False),
        )
        if request.verbose:
            response.info["config"] = json.dumps(
                {"stateDir": cfg.paths.state_dir, "runDir": cfg.paths.run_dir, **dataclasses.asdict(cfg)}
            )
            # Whether the embedded network carries its firewall plugin and whether the node's chain
            # masquerades its pods, as decided at start-up.
            network = self.daemon.network
            response.info["network"] = json.dumps({"embeddedFirewall": dataclasses.asdict(network.firewall),
                                                   "embeddedMasquerade": dataclasses.asdict(network.masquerade.state())})
            # Which handler pods naming none get, and what each handler's start-up self-check found.
            response.info["runtimeHandlers"] = json.dumps({
                "default": cfg.runtime.default_handler,
                "checks": {name: dataclasses.asdict(check) for name, check in self.daemon.handler_checks.items()},
            })
            # Whether pods may have user namespaces here, and why not (the start-up probe's answer).
            response.info["userNamespaces"] = json.dumps(dataclasses.asdict(self.daemon.containers.userns))
        return response

    async def RuntimeConfig(self, request: api.RuntimeConfigRequest, context: Any) -> api.RuntimeConfigResponse:
        driver = api.SYSTEMD if self.daemon.cfg.runtime.cgroup_driver == "systemd" else api.CGROUPFS
        return api.RuntimeConfigResponse(linux=api.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(
        self, request: api.UpdateRuntimeConfigRequest, context: Any
    ) -> api.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            await self.daemon.network.set_pod_cidr(cidr)
        return api.UpdateRuntimeConfigResponse()

    def _runtime_condition(self) -> api.RuntimeCondition:
        cfg = self.daemon.cfg
        # Only the default handler must be there: the shipped crun is optional.
        needed = (cfg.runtime.handlers[cfg.runtime.default_handler].path, cfg.runtime.conmon)
        missing = [b for b in needed if shutil.which(b) is None]
        if missing:
            return api.RuntimeCondition(
                type="RuntimeReady", status=False, reason="BinariesMissing", message=f"not found: {', '.join(missing)}"
            )
        return api.RuntimeCondition(type="RuntimeReady", status=True)

    def _network_condition(self) -> api.RuntimeCondition:
        cfg = self.daemon.cfg.network
        try:
            conf = self.daemon.network.current()
        except NetworkConfError as exc:
            return api.RuntimeCondition(type="NetworkReady", status=False, reason="NetworkPluginNotReady", message=str(exc))
        missing = missing_plugins(cfg, conf)
        if missing:
            message = f"network {conf.name}: CNI plugins not found in {cfg.bin_dirs}: {', '.join(missing)}"
            return api.RuntimeCondition(type="NetworkReady", status=False, reason="NetworkPluginNotReady", message=message)
        return api.RuntimeCondition(type="NetworkReady", status=True)


def _handler_features(offered: HandlerFeatures) -> api.RuntimeHandlerFeatures:
    return api.RuntimeHandlerFeatures(recursive_read_only_mounts=offered.recursive_read_only_mounts,
                                      user_namespaces=offered.user_namespaces)
