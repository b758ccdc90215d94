"""The guest tier runs only on the Debian 13 node scripts/guest boots (systemd as PID 1, cgroup
v2, AppArmor), where tests/guest/run-in-guest sets CRI_SHIM_GUEST=1; elsewhere it is skipped."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CRI_SHIM_GUEST") == "1":
        return
    skip = pytest.mark.skip(reason="the guest tier runs on the node scripts/guest boots")
    for item in items:
        if item.get_closest_marker("guest"):
            item.add_marker(skip)
