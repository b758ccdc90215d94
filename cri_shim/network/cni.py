"""Running CNI plugins as libcni does: one exec per plugin, config on stdin, CNI_* in the environment.

A network configuration list is applied plugin by plugin: ADD in order, each plugin getting
the previous one's result as prevResult; DEL in reverse order with the cached ADD result;
CHECK in order with it. A plugin is given runtimeConfig entries only for the capabilities it
declares (e.g. portMappings for portmap). Plugins run with a time limit and are killed past it.
CNI_ARGS is "K=V;K=V" with no escaping in the spec or in libcni: a key or value holding ';' or
'=' would add arguments of its own (IP=... picks the pod's address), so check_args() refuses
such a pair before ADD (sandbox validation refuses those characters in pod metadata first;
this is the last guard). DEL and CHECK run with exactly what ADD ran with, from the cache.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from cri_shim import metrics
from cri_shim.store.codec import JsonRecord

log = logging.getLogger("cri_shim.network")


class CniError(Exception):
    """A plugin failed or could not be run; the message names the plugin and the command."""


@dataclass(frozen=True)
class Attachment(JsonRecord):
    """The inputs of every CNI call for one pod's interface: they must be the same for ADD and DEL."""

    JSON_CAMEL = True

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capabilities: dict[str, Any] = field(default_factory=dict)


def check_args(args: tuple[tuple[str, str], ...]) -> None:
    """CniError when a CNI_ARGS key or value would split into more pairs than it is."""
    for key, value in args:
        if not key or any(c in key or c in value for c in ";="):
            raise CniError(f"CNI_ARGS {key[:64]!r}: keys and values must not contain ';' or '=' (value {value[:64]!r})")


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


def supports_prev_result(conflist: dict[str, Any]) -> bool:
    """DEL and CHECK carry the cached result only from spec 0.4.0 on (CHECK exists only there)."""
    return _version(str(conflist.get("cniVersion", "0.0.0"))) >= (0, 4, 0)


def plugin_config(
    conflist: dict[str, Any], plugin: dict[str, Any], att: Attachment, prev_result: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON a plugin reads on stdin: its own section plus the list's name and version."""
    conf = copy.deepcopy(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist.get("cniVersion", "0.4.0")
    if prev_result is not None:
        conf["prevResult"] = prev_result
    wanted = {cap for cap, enabled in plugin.get("capabilities", {}).items() if enabled}
    runtime = {cap: value for cap, value in att.capabilities.items() if cap in wanted}
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


class CniExec:
    """Executes the plugins of a network configuration list."""

    def __init__(self, bin_dirs: list[str], timeout: float) -> None:
        self.bin_dirs = bin_dirs
        self.timeout = timeout

    async def add(self, conflist: dict[str, Any], att: Attachment) -> dict[str, Any]:
        """Runs ADD through the chain; the result of the last plugin."""
        result: dict[str, Any] | None = None
        for plugin in conflist["plugins"]:
            result = await self._invoke("ADD", plugin_config(conflist, plugin, att, result), att)
        assert result is not None
        return result

    async def delete(self, conflist: dict[str, Any], att: Attachment, cached: dict[str, Any] | None) -> None:
        """Runs DEL through the chain in reverse; every plugin runs even if an earlier one failed."""
        prev = cached if supports_prev_result(conflist) else None
        errors = []
        for plugin in reversed(conflist["plugins"]):
            try:
                await self._invoke("DEL", plugin_config(conflist, plugin, att, prev), att)
            except CniError as exc:
                errors.append(str(exc))
        if errors:
            raise CniError("; ".join(errors))

    async def check(self, conflist: dict[str, Any], att: Attachment, cached: dict[str, Any]) -> None:
        """Runs CHECK through the chain with the cached ADD result."""
        if not supports_prev_result(conflist):
            raise CniError(f"network {conflist['name']}: CHECK needs CNI spec 0.4.0 or later")
        for plugin in conflist["plugins"]:
            await self._invoke("CHECK", plugin_config(conflist, plugin, att, cached), att)

    def _find(self, plugin_type: str) -> str:
        if "/" in plugin_type or plugin_type in ("", ".", ".."):
            raise CniError(f"invalid plugin type {plugin_type!r}")
        for d in self.bin_dirs:
            candidate = os.path.join(d, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise CniError(f"CNI plugin {plugin_type} not found in {self.bin_dirs}")

    async def _invoke(self, command: str, conf: dict[str, Any], att: Attachment) -> dict[str, Any] | None:
        plugin_type = conf["type"]
        path = self._find(plugin_type)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns,
            "CNI_IFNAME": att.ifname,
            "CNI_PATH": os.pathsep.join(self.bin_dirs),
        }
        if att.args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in att.args)
        try:
            proc = await asyncio.create_subprocess_exec(
                path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:  # E2BIG for an environment past the kernel's limit, ENOEXEC, EACCES
            raise CniError(f"CNI {command} {plugin_type}: cannot run {path}: {exc.strerror or exc}") from None
        started = time.monotonic()
        try:
            out, err = await asyncio.wait_for(proc.communicate(json.dumps(conf).encode()), self.timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            proc.kill()
            await proc.wait()
            metrics.observe_cni(command, plugin_type, "error", time.monotonic() - started)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise CniError(f"CNI {command} {plugin_type}: no answer within {self.timeout}s") from None
        result = "ok" if proc.returncode == 0 else "error"
        metrics.observe_cni(command, plugin_type, result, time.monotonic() - started)
        log.debug("cni", extra={"command": command, "plugin": plugin_type, "rc": proc.returncode, "id": att.container_id})
        if proc.returncode != 0:
            raise CniError(f"CNI {command} {plugin_type}: {_error_message(out, err, proc.returncode)}")
        if command != "ADD":
            return None
        try:
            result = json.loads(out)
        except ValueError:
            raise CniError(f"CNI ADD {plugin_type}: result is not JSON: {out[:200]!r}") from None
        if not isinstance(result, dict):
            raise CniError(f"CNI ADD {plugin_type}: result is not a JSON object")
        return result


def _error_message(out: bytes, err: bytes, rc: int | None) -> str:
    try:
        data = json.loads(out)
        text = str(data.get("msg", "")) + (f" ({data['details']})" if data.get("details") else "")
        return f"{text} [code {data.get('code')}]"
    except (ValueError, AttributeError):
        tail = (out + err).decode(errors="replace").strip()[-500:]
        return tail or f"exit status {rc}"


def result_ips(result: dict[str, Any] | None) -> list[str]:
    """The pod's IP addresses in a result (spec 0.3+ "ips", or 0.2 "ip4"/"ip6"), IPv4 first."""
    if not result:
        return []
    cidrs = [ip["address"] for ip in result.get("ips", []) if "address" in ip]
    cidrs += [result[k]["ip"] for k in ("ip4", "ip6") if isinstance(result.get(k), dict) and "ip" in result[k]]
    addresses = [c.split("/")[0] for c in cidrs]
    return sorted(dict.fromkeys(addresses), key=lambda a: ":" in a)
