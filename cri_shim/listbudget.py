"""Keeping every List response under the gRPC message limit, by budgeting what is listed.

A pod or container may carry 256 KiB of labels and 256 KiB of annotations (cri_shim.metadata),
and ListPodSandbox, ListContainers, ListContainerStats and ListPodSandboxStats echo them all:
32 objects at the caps fill kubelet's 16 MiB, and a response past the limit fails with
RESOURCE_EXHAUSTED for every caller, kubelet included, until objects are removed. CRI has no
paging and containerd has no answer. Here the listed size is budgeted when an object is made:
the list entries of all pods together, and of all containers together, may each take at most
SHARE of server.max_message_bytes (an entry counted as its labels and annotations with their
framing, plus ENTRY_ALLOWANCE for the other, bounded fields: ids, metadata, image names,
stats). A RunPodSandbox or CreateContainer that would pass its budget is refused with
RESOURCE_EXHAUSTED before anything is made: only the newcomer fails, what exists keeps
listing. With both shares at 3/8, a ListPodSandboxStats (a pod's metadata and its containers')
stays within 3/4 of the limit. At 16 MiB a budget holds 3,000 objects of no labels, or 11 at
the caps; kubelet's pods carry a few KiB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

from cri_shim.errors import ResourceExhausted

SHARE = 3 / 8
ENTRY_ALLOWANCE = 2048
# A map entry's framing on the wire, at most: the entry's tag and length, the key's, the value's
# (tags of one byte, lengths of up to three for strings under 2 MiB).
PAIR_FRAMING = 12


def entry_bytes(labels: Mapping[str, str], annotations: Mapping[str, str]) -> int:
    """What one pod or container adds to a List response, at most."""
    pairs = [*labels.items(), *annotations.items()]
    return ENTRY_ALLOWANCE + sum(len(k.encode()) + len(v.encode()) + PAIR_FRAMING for k, v in pairs)


class ListBudget:
    """The listed size of one kind of object (pods, containers): stored ones plus those being made."""

    def __init__(self, kind: str, max_message_bytes: int, stored: Callable[[], Iterable[int]]) -> None:
        self.kind = kind
        self.limit = int(max_message_bytes * SHARE)
        self._stored = stored
        self._pending: dict[str, int] = {}

    def used(self) -> int:
        """Bytes the stored objects and the creations in flight list."""
        return sum(self._stored()) + sum(self._pending.values())

    @contextlib.contextmanager
    def held(self, key: str, size: int) -> Iterator[None]:
        """Counts size for key while a creation runs (its record, once saved, counts as well);
        ResourceExhausted when the budget has no room for it."""
        used = self.used()
        if used + size > self.limit:
            raise ResourceExhausted(
                f"the {self.kind} listed take {used} bytes: one more of {size} bytes (labels and annotations) would pass "
                f"the {self.limit}-byte budget that keeps List responses under the gRPC message limit"
            )
        self._pending[key] = size
        try:
            yield
        finally:
            del self._pending[key]
