"""scripts/bench's tables: every ratio against containerd above 1 where cri-shim did better."""

from __future__ import annotations

import pytest

from tests.bench.tables import HIGHER, LOWER, Row, comparison, cycles, p50, p99, paired, ratio, starts

pytestmark = pytest.mark.unit


def test_a_ratio_above_one_means_cri_shim_did_better_in_either_direction() -> None:
    assert ratio(50.0, 100.0, LOWER) == 2.0  # half containerd's latency
    assert ratio(200.0, 100.0, LOWER) == 0.5
    assert ratio(2.4, 1.0, HIGHER) == 2.4  # 2.4 times containerd's pods per second
    assert ratio(1.0, 4.0, HIGHER) == 0.25


def test_a_zero_gives_no_ratio_and_an_unknown_direction_is_refused() -> None:
    assert ratio(0.0, 100.0, LOWER) is None
    assert ratio(3.0, 0.0, HIGHER) is None
    with pytest.raises(ValueError, match="better"):
        ratio(1.0, 1.0, "faster")


def test_the_comparison_table_prints_ratios_in_the_same_direction_for_every_row() -> None:
    rows = [Row("pod start, p50 ms", [50.0, 80.0], 100.0, LOWER),
            Row("pods per second", [12.0, 6.0], 5.0, HIGHER),
            Row("cold pull, p50 ms", [0.0, 10.0], 10.0, LOWER)]
    head, start, rate, pull = comparison(["cri-shim/crun", "cri-shim/runc"], "containerd", rows)
    assert head.split() == ["cri-shim/crun", "cri-shim/runc", "containerd", "ratio", "crun", "ratio", "runc"]
    assert start.endswith("50.0             80.0            100.0         2.00         1.25  (lower is better)")
    assert rate.endswith("12.0              6.0              5.0         2.40         1.20  (higher is better)")
    assert pull.endswith("-         1.00  (lower is better)")
    # The columns line up: every figure ends where its heading does.
    assert len({len(line.split("  (")[0]) for line in (start, rate, pull)}) == 1
    assert len(head) == len(start.split("  (")[0])


def test_percentiles_and_pod_figures() -> None:
    pods = [{"RunPodSandbox": 10.0, "CreateContainer": 5.0, "StartContainer": 1.0, "StopContainer": 4.0},
            {"RunPodSandbox": 20.0, "CreateContainer": 6.0, "StartContainer": 2.0, "StopContainer": 2.0}]
    assert starts(pods) == [16.0, 28.0]
    assert cycles(pods) == [20.0, 30.0]
    assert p50([3.0, 1.0, 2.0]) == 2.0
    assert p99([float(x) for x in range(1, 11)]) == 10.0  # fewer than 100: the slowest
    assert p99([float(x) for x in range(1, 201)]) == 198.0


def test_the_paired_table_gives_the_first_kind_over_the_second() -> None:
    infra = [{"RunPodSandbox": 30.0, "StopPodSandbox": 20.0}] * 3
    plain = [{"RunPodSandbox": 20.0, "StopPodSandbox": 10.0}] * 3
    head, start, start99, cycle, run, stop = paired("cri-shim/crun (n=3 each)", ("pid=POD", "pid=CONTAINER"),
                                                    infra, plain, ["RunPodSandbox", "StopPodSandbox"])
    assert head.split()[-3:] == ["pid=POD", "pid=CONTAINER", "pid=POD/pid=CONTAINER"]
    assert start.split()[-3:] == ["30.0", "20.0", "1.50"]
    assert cycle.split()[-3:] == ["50.0", "30.0", "1.67"]
    assert stop.split()[-3:] == ["20.0", "10.0", "2.00"]
