"""The CPU-rate samples StatsService keeps: one a live container, dropped once it is removed.

In process, over a real cgroup the test makes in the host's cpuacct and memory hierarchies; the
two managers are small stand-ins holding records, since what is tested is the service's table.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import stats
from cri_shim.services.stats import CpuRates, StatsService
from cri_shim.runtime.record import ContainerRecord

pytestmark = pytest.mark.integration


class _Containers:
    """Holds records as the container manager does; every one is running in the test's cgroup."""

    def __init__(self, tmp: Path) -> None:
        self.records: dict[str, ContainerRecord] = {}
        self.tmp = tmp

    def list(self) -> list[ContainerRecord]:
        return list(self.records.values())

    def select(self, id_prefix: str, sandbox_prefix: str, labels: dict[str, str], state: int | None) -> list[ContainerRecord]:
        return [r for r in self.records.values() if r.id.startswith(id_prefix)]

    def measurable(self, container_id: str) -> ContainerRecord:
        return self.records[container_id]

    async def writable_usage(self, record: ContainerRecord) -> tuple[Path, int, int]:
        return self.tmp / record.id, 0, 0


class _Sandboxes:
    def list(self) -> list[object]:
        return []


@pytest.fixture
def cgroup() -> Iterator[str]:
    """A cgroup of the test's own, in every v1 hierarchy stats reads (or the unified one)."""
    name = f"/cri-shim-stats-samples-{os.getpid()}"
    dirs = [stats.cgroup_dir(name, c) for c in (("",) if stats.is_v2() else ("memory", "cpuacct"))]
    for d in dirs:
        d.mkdir()
    try:
        yield name
    finally:
        for d in dirs:
            d.rmdir()


def _record(cid: str, cgroup: str) -> ContainerRecord:
    return ContainerRecord(id=cid, name=cid, sandbox_id="pod", config=api.ContainerConfig(metadata=api.ContainerMetadata(name=cid)),
                           image="i", image_ref="i",
                           image_id="i", runtime_handler="runc", bundle="/nonexistent", created_at=1, started_at=2,
                           cgroups_path=cgroup)


def test_samples_of_removed_containers_are_dropped(tmp_path: Path, cgroup: str) -> None:
    containers = _Containers(tmp_path)
    service = StatsService(containers, _Sandboxes())  # type: ignore[arg-type]
    for cid in ("a", "b", "c"):
        containers.records[cid] = _record(cid, cgroup)

    async def sample() -> None:
        listed = await service.ListContainerStats(api.ListContainerStatsRequest(), None)
        assert sorted(s.attributes.id for s in listed.stats) == sorted(containers.records)
        for cid in containers.records:
            one = await service.ContainerStats(api.ContainerStatsRequest(container_id=cid), None)
            assert one.stats.cpu.timestamp > 0

    asyncio.run(sample())
    assert len(service._cpu) == 3
    del containers.records["a"], containers.records["b"]
    asyncio.run(sample())
    assert len(service._cpu) == 1


def test_rate_between_samples() -> None:
    rates = CpuRates()
    assert rates.rate("x", 1_000_000_000, 0) == 0
    assert rates.rate("x", 2_000_000_000, 500_000_000) == 500_000_000
    assert rates.rate("x", 2_000_000_000, 900_000_000) == 0  # no time passed: no rate
    rates.rate("y", 1, 1)
    rates.retain({"y"})
    assert len(rates) == 1
