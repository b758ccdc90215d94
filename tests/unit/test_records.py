"""RecordStore: persisted before memory changes, prefix lookup, name reservation, torn files."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from cri_shim.errors import AlreadyExists, InvalidArgument, NotFound
from cri_shim.store.records import RecordStore

pytestmark = pytest.mark.unit


@dataclass
class Thing:
    id: str
    name: str
    value: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Thing":
        return cls(**data)

    @classmethod
    def outdated(cls, data: dict[str, Any]) -> bool:
        return False


def test_saved_records_survive_a_reload(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)
    store.save(Thing("abc123", "one", 1))
    store.save(Thing("abd456", "two", 2))
    again = RecordStore("thing", tmp_path, Thing)
    assert again.load() == []
    assert again.resolve("abc").value == 1 and again.by_name("two").id == "abd456"


def test_prefixes_resolve_uniquely_or_fail_clearly(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)
    store.save(Thing("abc123", "one"))
    store.save(Thing("abd456", "two"))
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.resolve("ab")
    with pytest.raises(NotFound):
        store.resolve("zz")
    with pytest.raises(InvalidArgument, match="empty"):
        store.resolve("")
    assert store.find("ab") is None and store.find("abd").name == "two"


def test_a_name_is_reserved_by_one_id(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)
    store.save(Thing("a1", "same"))
    with pytest.raises(AlreadyExists, match="reserved by a1"):
        store.save(Thing("b2", "same"))
    store.delete("a1")
    store.save(Thing("b2", "same"))
    assert store.by_name("same").id == "b2"


def test_torn_and_foreign_files_are_reported_not_loaded(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)
    store.save(Thing("good", "g"))
    (tmp_path / "torn.json").write_text('{"schema": 1, "rec')
    (tmp_path / "old.json").write_text('{"schema": 0, "record": {}}')
    again = RecordStore("thing", tmp_path, Thing)
    bad = sorted(p.name for p, _ in again.load())
    assert bad == ["old.json", "torn.json"] and [t.id for t in again] == ["good"]


def test_delete_of_an_absent_record_is_fine(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)
    store.delete("nothing")
    assert len(store) == 0


def test_load_sweeps_writes_a_crash_cut_short_unless_told_not_to(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)
    store.load()
    store.save(Thing("a1", "one"))
    unfinished = [tmp_path / ".a1.json.tmp", tmp_path / ".b2.json.tmp"]  # a newer a1, a first b2
    for path in unfinished:
        path.write_text('{"schema": 1, "rec')
    shared = RecordStore("thing", tmp_path, Thing)
    assert shared.load(sweep=False) == [] and all(p.exists() for p in unfinished)
    again = RecordStore("thing", tmp_path, Thing)
    assert again.load() == []
    assert not any(p.exists() for p in unfinished)
    assert [t.id for t in again] == ["a1"]


def test_write_and_erase_persist_before_memory_changes(tmp_path: Path) -> None:
    """write() and erase(), the disk work on a worker thread, keep save()'s and delete()'s rules:
    the file first, then memory; a name another id holds is refused and nothing is written."""
    store = RecordStore("thing", tmp_path, Thing)

    async def scenario() -> None:
        thing = Thing("abc123", "one", 1)
        writing = asyncio.ensure_future(store.write(thing))
        await asyncio.sleep(0)
        assert store.get("abc123") is None  # in memory only once on disk
        await writing
        assert store.get("abc123") is thing and store.by_name("one") is thing
        thing.value = 2
        await store.write(thing)
        with pytest.raises(AlreadyExists):
            await store.write(Thing("zzz999", "one"))
        assert not (tmp_path / "zzz999.json").exists()
        await store.erase("abc123")
        assert store.get("abc123") is None and store.by_name("one") is None

    asyncio.run(scenario())
    again = RecordStore("thing", tmp_path, Thing)
    assert again.load() == [] and len(again) == 0


def test_writes_of_distinct_records_at_once_all_persist(tmp_path: Path) -> None:
    store = RecordStore("thing", tmp_path, Thing)

    async def scenario() -> None:
        await asyncio.gather(*(store.write(Thing(f"id{i:03}", f"name{i}", i)) for i in range(50)))

    asyncio.run(scenario())
    again = RecordStore("thing", tmp_path, Thing)
    assert again.load() == []
    assert sorted(t.value for t in again) == list(range(50))
    assert list(tmp_path.glob(".*.tmp")) == []
