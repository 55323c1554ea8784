"""The serving benchmark's guard: what is flagged, given the committed runs and the new ones."""

from __future__ import annotations

import itertools
import json

import pytest

from benchmarks import serving_guard
from benchmarks.serving_guard import HOP, committed, compare, figures, targets, verdict


def _part(field_runs: dict[str, list[float]]) -> dict:
    """A pooled result whose pooled figures are the mean of its rounds (near enough here)."""
    rounds = [
        dict(zip(field_runs, values, strict=True))
        for values in zip(*field_runs.values(), strict=True)
    ]
    return {k: sum(v) / len(v) for k, v in field_runs.items()} | {"rounds": rounds}


def _report(gateway_c1: list[float], direct_c1: list[float] | None = None) -> dict:
    direct_c1 = direct_c1 or [4.0, 4.1, 3.9]
    hop_c1 = [d + 1.0 for d in direct_c1]
    c32 = lambda rps, p99: _part({"rps": rps, "p99_ms": p99, "p50_ms": p99})  # noqa: E731
    single = {
        "direct": {
            "c1": _part({"p50_ms": direct_c1}),
            "c32": c32([160.0, 150.0, 170.0], [300.0, 290.0, 310.0]),
        },
        HOP: {"c1": _part({"p50_ms": hop_c1}), "c32": c32([150.0] * 3, [290.0] * 3)},
        "gateway": {
            "c1": _part({"p50_ms": gateway_c1}),
            "c32": c32([1300.0, 1200.0, 1400.0], [40.0, 38.0, 42.0]),
        },
    }
    batch = {
        "direct": _part({"rps": [6.0, 5.5, 6.0]}),
        "gateway": _part({"rps": [9.0, 8.8, 9.3]}),
    }
    return {"meta": {"measured_at": "2026-12-07T03:40:12+00:00"}, "single": single, "batch": batch}


def _verdicts(before: dict, now: dict) -> dict[str, str]:
    return {row["figure"]: row["verdict"] for row in compare(before, now)}


@pytest.mark.parametrize(
    ("before", "now", "better", "expected"),
    [
        ([1.0, 1.2, 1.1], [1.3, 1.5, 1.4], "lower", "REGRESSED"),
        ([1.0, 1.2, 1.1], [0.7, 0.9, 0.8], "lower", "better"),
        ([1.0, 1.2, 1.1], [1.15, 1.5, 1.4], "lower", "ok"),  # the bands overlap
        ([1.0, 1.2, 1.1], [1.2, 1.5, 1.4], "lower", "ok"),  # touching is overlapping
        ([8.0, 8.5, 8.2], [7.0, 7.5, 7.9], "higher", "REGRESSED"),
        ([8.0, 8.5, 8.2], [8.6, 9.0, 8.7], "higher", "better"),
        ([1.0], [5.0, 6.0], "lower", "no baseline"),  # one run is a point, not a band
        ([], [5.0, 6.0], "lower", "no baseline"),
        ([1.0, 1.2], [5.0], "lower", "too few runs"),
    ],
)
def test_a_figure_is_flagged_only_when_the_bands_of_its_runs_are_apart(
    before, now, better, expected
):
    assert verdict(before, now, better) == expected


def test_one_stray_run_at_each_end_is_left_out_of_a_band_of_six_or_more():
    quiet = [1.0, 1.1, 1.2, 1.0, 1.1, 1.2, 1.0, 1.1]
    burst = [1.0, 1.1, 1.2, 1.0, 1.1, 1.2, 1.0, 9.0]  # one round hit another job's burst
    assert serving_guard.band(burst) == (1.0, 1.2)
    assert serving_guard.band([1.0, 1.1, 9.0]) == (1.0, 9.0)  # too few runs to leave any out
    slowed = [3.0, 3.1, 3.2, 3.0, 3.1, 0.9, 3.2, 3.0]
    assert verdict(burst, slowed, "lower") == "REGRESSED"
    assert verdict(quiet, slowed, "lower") == "REGRESSED"
    # Two stray runs on the same side are not left out: the bands overlap.
    assert verdict(quiet, [3.0, 3.1, 3.2, 3.0, 3.1, 0.9, 1.0, 3.0], "lower") == "ok"


def test_unchanged_figures_are_flagged_about_once_in_200_runs():
    """Every way of splitting 16 distinct runs into a committed 8 and a new 8, alike."""
    values = [float(v) for v in range(16)]
    flagged = total = 0
    for new in itertools.combinations(values, 8):
        old = [v for v in values if v not in new]
        total += 1
        flagged += verdict(old, list(new), "lower") == "REGRESSED"
    assert total == 12870
    assert flagged == 65  # 1 in 198


def test_figures_of_two_targets_are_taken_round_by_round():
    report = _report(gateway_c1=[5.5, 5.2, 5.3], direct_c1=[4.0, 4.1, 3.9])
    got = figures(report["single"], report["batch"])
    # Own share: gateway minus the hop (direct + 1.0) of the same round.
    assert got["gateway_own_c1_p50_ms"]["runs"] == [0.5, 0.1, 0.4]
    assert got["gateway_own_c1_p50_ms"]["value"] == pytest.approx(0.333, abs=1e-3)
    assert got["gateway_minus_direct_c1_p50_ms"]["runs"] == [1.5, 1.1, 1.4]
    assert got["gateway_over_direct_c32_rps"]["runs"] == [8.125, 8.0, 8.235]
    assert got["gateway_c32_p99_ms"]["runs"] == [40.0, 38.0, 42.0]
    assert got["gateway_over_direct_batch"]["runs"] == [1.5, 1.6, 1.55]
    assert got["gateway_own_c1_p50_ms"]["better"] == "lower"
    assert got["gateway_over_direct_c32_rps"]["better"] == "higher"


def test_a_slowed_gateway_is_flagged_and_the_scoring_server_is_not():
    before = _report(gateway_c1=[5.5, 5.2, 5.3])
    slowed = _report(gateway_c1=[7.5, 7.2, 7.4])  # +2 ms in every round
    verdicts = _verdicts(
        figures(before["single"], before["batch"]), figures(slowed["single"], slowed["batch"])
    )
    assert verdicts["gateway_own_c1_p50_ms"] == "REGRESSED"
    assert verdicts["gateway_minus_direct_c1_p50_ms"] == "REGRESSED"
    assert verdicts["direct_c1_p50_ms"] == "ok"
    assert verdicts["gateway_c32_p99_ms"] == "ok"


def test_a_faster_machine_shows_in_directs_figures_and_not_in_the_gateways_share():
    before = _report(gateway_c1=[5.5, 5.2, 5.3], direct_c1=[4.0, 4.1, 3.9])
    faster = _report(gateway_c1=[4.5, 4.2, 4.3], direct_c1=[3.0, 3.1, 2.9])
    verdicts = _verdicts(
        figures(before["single"], before["batch"]), figures(faster["single"], faster["batch"])
    )
    assert verdicts["direct_c1_p50_ms"] == "better"
    assert verdicts["gateway_own_c1_p50_ms"] == "ok"


def test_results_without_rounds_are_no_baseline_and_no_crash():
    old = _report(gateway_c1=[5.5, 5.2, 5.3])
    for part in (*old["single"].values(), *old["batch"].values()):
        for row in (part, *(v for v in part.values() if isinstance(v, dict))):
            row.pop("rounds", None)
    before = figures(old["single"], old["batch"])
    assert before["gateway_own_c1_p50_ms"]["runs"] == []
    now = _report(gateway_c1=[9.5, 9.2, 9.3])
    rows = compare(before, figures(now["single"], now["batch"]))
    assert {row["verdict"] for row in rows} == {"no baseline"}
    # A figure the committed results do not have at all: no baseline either.
    assert _verdicts({}, figures(now["single"], now["batch"]))["gateway_c32_rps"] == "no baseline"


def test_without_the_hop_there_is_no_own_share():
    report = _report(gateway_c1=[5.5, 5.2, 5.3])
    del report["single"][HOP]
    got = figures(report["single"], report["batch"])
    assert "gateway_own_c1_p50_ms" not in got
    assert "gateway_minus_direct_c1_p50_ms" in got


def test_rounds_that_do_not_pair_give_no_runs():
    report = _report(gateway_c1=[5.5, 5.2, 5.3])
    report["single"][HOP]["c1"]["rounds"].pop()
    assert figures(report["single"], report["batch"])["gateway_own_c1_p50_ms"]["runs"] == []


def test_the_committed_file_is_read_with_its_figures_or_derived_from_its_rounds(tmp_path):
    old = _report(gateway_c1=[5.5, 5.2, 5.3])
    path = tmp_path / "serving.json"
    path.write_text(json.dumps(old))
    derived, meta = committed(path)
    assert meta["measured_at"] == "2026-12-07T03:40:12+00:00"
    assert derived["gateway_own_c1_p50_ms"]["runs"] == [0.5, 0.1, 0.4]

    stored = {"gateway_c32_p99_ms": {"value": 30.0, "runs": [29.0, 31.0], "label": "p99"}}
    path.write_text(json.dumps(old | {"figures": stored}))
    assert committed(path)[0] == stored

    assert committed(tmp_path / "missing.json") == ({}, {})
    path.write_text("{not json")
    assert committed(path) == ({}, {})


def test_targets_are_met_at_their_bounds_and_missed_past_them():
    def figure(key: str, value: float) -> dict:
        label, unit, better = serving_guard.WATCHED[key]
        return {"label": label, "unit": unit, "better": better, "value": value, "runs": []}

    met = {
        row["figure"]: row["met"]
        for row in targets(
            {
                "gateway_own_c1_p50_ms": figure("gateway_own_c1_p50_ms", 0.5),
                "gateway_over_direct_c32_rps": figure("gateway_over_direct_c32_rps", 10.0),
                "gateway_c32_p99_ms": figure("gateway_c32_p99_ms", 25.0),
            }
        )
    }
    assert met == {
        "gateway_own_c1_p50_ms": True,
        "gateway_over_direct_c32_rps": True,
        "gateway_c32_p99_ms": False,  # under 25 ms: 25.0 is not
    }
    missed = targets({"gateway_own_c1_p50_ms": figure("gateway_own_c1_p50_ms", 0.51)})
    assert [row["met"] for row in missed] == [False]


def test_the_table_shows_the_committed_band_the_new_runs_the_change_and_the_verdict():
    before = _report(gateway_c1=[5.5, 5.2, 5.3])
    slowed = _report(gateway_c1=[7.5, 7.2, 7.4])
    rows = compare(
        figures(before["single"], before["batch"]), figures(slowed["single"], slowed["batch"])
    )
    baseline = {
        "file": "benchmarks/results/serving.json",
        "measured_at": "2026-12-07T03:40",
        "machine": "2 cores, load average at start 0.5",
    }
    lines = serving_guard.guard_table(rows, baseline)
    assert lines[0].startswith(
        "Compared with benchmarks/results/serving.json of 2026-12-07T03:40 "
        "(2 cores, load average at start 0.5)."
    )
    assert (
        "| gateway's own share at c=1 (p50 over the bare hop) | 0.33 ms (0.10 to 0.50) "
        "| 2.37 ms (2.50, 2.10, 2.50) | +2.03 ms | **REGRESSED** |"
    ) in lines
    assert any(line.startswith("| gateway c=32 req/s | 1300 req/s") for line in lines)
    assert "| +0% | ok |" in lines[-1]
