"""The committed stubs are what scripts/gen-proto makes from proto/, and the proto is wire-compatible
with an independent CRI client (the PyPI package container-runtime-interface-api)."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit

# Dumps every message, enum and RPC of a generated module; run in a subprocess per module, since
# both register the protobuf package runtime.v1 and one process can hold only one of them.
DUMP = r"""
import importlib, json, sys
from google.protobuf.descriptor import FieldDescriptor
mod = importlib.import_module(sys.argv[1])
fd = mod.DESCRIPTOR
out = {"messages": {}, "enums": {}, "services": {}}
def walk(m):
    out["messages"][m.full_name] = {
        f.name: [f.number, f.type, f.is_repeated if hasattr(f, "is_repeated") else f.label == 3,
                 f.message_type.full_name if f.message_type else (f.enum_type.full_name if f.enum_type else "")]
        for f in m.fields}
    for n in m.nested_types: walk(n)
    for e in m.enum_types: out["enums"][e.full_name] = {v.name: v.number for v in e.values}
for m in fd.message_types_by_name.values(): walk(m)
for e in fd.enum_types_by_name.values(): out["enums"][e.full_name] = {v.name: v.number for v in e.values}
for s in fd.services_by_name.values():
    out["services"][s.full_name] = {m.name: [m.input_type.full_name, m.output_type.full_name, m.server_streaming] for m in s.methods}
print(json.dumps(out))
"""


def _dump(module: str) -> dict:
    out = subprocess.run([sys.executable, "-c", DUMP, module], check=True, capture_output=True, text=True, cwd=TOP)
    return json.loads(out.stdout)


def test_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([str(TOP / "scripts/gen-proto"), str(tmp_path)], check=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    names = ["api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path, TOP / "cri_shim/api", names, shallow=False)
    assert not mismatch and not errors, f"stale stubs, run scripts/gen-proto: {mismatch + errors}"


def test_api_has_every_rpc_of_cri_v1() -> None:
    ours = _dump("cri_shim.api.api_pb2")
    assert len(ours["services"]["runtime.v1.RuntimeService"]) == 35
    assert len(ours["services"]["runtime.v1.ImageService"]) == 6


def test_wire_compatible_with_independent_client() -> None:
    ours = _dump("cri_shim.api.api_pb2")
    theirs = _dump("cri_api.v1.api_pb2")
    common = set(ours["messages"]) & set(theirs["messages"])
    # The independent client predates cri-api v0.36 by a few releases; nearly all of it is shared.
    assert len(common) >= 150 and set(theirs["messages"]) <= set(ours["messages"])
    for name in sorted(common):
        for field, spec in theirs["messages"][name].items():
            assert ours["messages"][name].get(field) == spec, f"{name}.{field}: ours {ours['messages'][name].get(field)} theirs {spec}"
    for name, values in theirs["enums"].items():
        for value, number in values.items():
            assert ours["enums"][name].get(value) == number, f"{name}.{value}"
    for service, methods in theirs["services"].items():
        for method, spec in methods.items():
            assert ours["services"][service][method] == spec, f"{service}/{method}"
