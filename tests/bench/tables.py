"""The figures scripts/bench prints: percentiles of samples, and tables of them with ratios.

Every ratio against containerd reads the same way, whatever the row: above 1, cri-shim did
better (took less time or memory, or did more pods per second); the pairs of cri-shim's own
pods (with and without a user namespace, with and without an infra process) are a cost ratio
instead: the first column over the second, above 1 the first cost more.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

START_RPCS = ("RunPodSandbox", "CreateContainer", "StartContainer")
LOWER, HIGHER = "lower", "higher"  # which way a row is better
RATIO_NOTE = "ratio: containerd's figure against cri-shim's, above 1 means cri-shim is better on every row"


def p50(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p99(xs: Sequence[float]) -> float:
    """Nearest rank: with fewer than 100 samples, the slowest one."""
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def starts(pods: Sequence[dict[str, float]]) -> list[float]:
    """Pod start of each pod, ms: its RunPodSandbox, CreateContainer and StartContainer."""
    return [sum(ms for rpc, ms in laps.items() if rpc in START_RPCS) for laps in pods]


def cycles(pods: Sequence[dict[str, float]]) -> list[float]:
    """The full cycle of each pod, ms: every call it took."""
    return [sum(laps.values()) for laps in pods]


def ratio(mine: float, theirs: float, better: str) -> float | None:
    """How many times better cri-shim's figure is than containerd's: theirs over mine where lower
    is better, mine over theirs where higher is; None where a zero makes it meaningless."""
    if better not in (LOWER, HIGHER):
        raise ValueError(f"better must be {LOWER!r} or {HIGHER!r}, not {better!r}")
    num, den = (theirs, mine) if better == LOWER else (mine, theirs)
    return num / den if num and den else None


@dataclass
class Row:
    label: str
    mine: list[float]  # one figure for each cri-shim handler
    theirs: float  # containerd's
    better: str  # LOWER or HIGHER


def comparison(handlers: Sequence[str], other: str, rows: Sequence[Row]) -> list[str]:
    """The lines of a table: one column per cri-shim handler, containerd's, then one ratio per
    handler (RATIO_NOTE), and which way the row is better."""
    width = max(len(r.label) for r in rows)
    head = "".join(f"  {name:>15}" for name in [*handlers, other])
    lines = [f"{'':{width}}{head}" + "".join(f"  {'ratio ' + name.split('/')[-1]:>11}" for name in handlers)]
    for row in rows:
        ratios = [ratio(a, row.theirs, row.better) for a in row.mine]
        lines.append(f"{row.label:{width}}" + "".join(f"  {v:15.1f}" for v in [*row.mine, row.theirs])
                     + "".join(f"  {'-' if q is None else f'{q:.2f}':>11}" for q in ratios) + f"  ({row.better} is better)")
    return lines


def paired(title: str, heads: tuple[str, str], a: Sequence[dict[str, float]], b: Sequence[dict[str, float]],
           rpcs: Sequence[str]) -> list[str]:
    """Two kinds of one runtime's pods side by side: pod start p50/p99 and cycle p50, each of rpcs
    at p50, and a over b (a cost ratio: above 1, a cost more)."""
    ratio_head = f"{heads[0]}/{heads[1]}"
    lines = [f"{title:46}  {heads[0]:>12}  {heads[1]:>12}  {ratio_head:>14}"]
    figures = [("pod start, p50 ms", p50(starts(a)), p50(starts(b))),
               ("pod start, p99 ms", p99(starts(a)), p99(starts(b))),
               ("full pod cycle, p50 ms", p50(cycles(a)), p50(cycles(b)))]
    figures += [(f"  {rpc}, p50 ms", p50([laps[rpc] for laps in a]), p50([laps[rpc] for laps in b])) for rpc in rpcs]
    for label, x, y in figures:
        lines.append(f"{label:46}  {x:12.1f}  {y:12.1f}  {(f'{x / y:.2f}' if y else '-'):>14}")
    return lines
