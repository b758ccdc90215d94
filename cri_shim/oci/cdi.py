"""CDI devices in the spec: the resolved containerEdits (cri_shim.cdi.registry) applied as the CDI
reference library applies them.

env replaces the container's variable of the same name or is appended (process.merge_env, in
spec.py); device nodes replace a node at the same container path, each with a cgroup rule
allowing it (permissions "" meaning rwm, "none" no rule), owned by the container's user when
the spec names no owner; mounts replace a mount at the same destination, and all mounts are
then ordered parents first; hooks are added to their hook point; additional GIDs join the
process's; intelRdt sets linux.intelRdt.
Pure functions of the spec dict: nothing on the host is touched here.
"""

from __future__ import annotations

from typing import Any

from cri_shim.cdi.edits import NO_PERMISSIONS, Edits


def additional_gids(gids: list[int], edits: Edits) -> list[int]:
    return gids + [g for g in edits.additional_gids if g not in gids]


def _depth(mount: dict[str, Any]) -> int:
    return len([p for p in mount["destination"].split("/") if p])


def apply(spec: dict[str, Any], edits: Edits) -> None:
    """Device nodes, cgroup rules, mounts, hooks and Intel RDT of the devices, into spec."""
    linux, user = spec["linux"], spec["process"]["user"]
    paths = {d.path for d in edits.device_nodes}
    linux["devices"] = [d for d in linux["devices"] if d["path"] not in paths]
    for node in edits.device_nodes:
        device: dict[str, Any] = {"path": node.path, "type": node.type, "major": node.major, "minor": node.minor}
        if node.file_mode is not None:
            device["fileMode"] = node.file_mode
        uid = node.uid if node.uid is not None else (user["uid"] or None)
        gid = node.gid if node.gid is not None else (user["gid"] or None)
        if uid is not None:
            device["uid"] = uid
        if gid is not None:
            device["gid"] = gid
        linux["devices"].append(device)
        if node.permissions != NO_PERMISSIONS:
            linux["resources"]["devices"].append({"allow": True, "type": node.type, "major": node.major,
                                                  "minor": node.minor, "access": node.permissions or "rwm"})
    if edits.mounts:
        destinations = {m.container_path for m in edits.mounts}
        mounts = [m for m in spec["mounts"] if m["destination"] not in destinations]
        for m in edits.mounts:
            options = list(m.options)
            kind = m.type or "bind"
            if kind == "bind" and not {"bind", "rbind"} & set(options):
                options.append("rbind")
            mounts.append({"destination": m.container_path, "type": kind, "source": m.host_path, "options": options})
        spec["mounts"] = sorted(mounts, key=_depth)  # stable: parents before what is mounted in them
    for hook in edits.hooks:
        entry: dict[str, Any] = {"path": hook.path}
        if hook.args:
            entry["args"] = list(hook.args)
        if hook.env:
            entry["env"] = list(hook.env)
        if hook.timeout is not None:
            entry["timeout"] = hook.timeout
        spec.setdefault("hooks", {}).setdefault(hook.hook_name, []).append(entry)
    if edits.intel_rdt is not None:
        rdt = edits.intel_rdt
        linux["intelRdt"] = {k: v for k, v in (("closID", rdt.clos_id), ("l3CacheSchema", rdt.l3_cache_schema),
                                               ("memBwSchema", rdt.mem_bw_schema), ("enableCMT", rdt.enable_cmt),
                                               ("enableMBM", rdt.enable_mbm)) if v}
