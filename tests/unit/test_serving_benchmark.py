"""The serving benchmark's wrk command line, checked without running wrk."""

import subprocess

from benchmarks import serving, serving_guard


def test_wrk_is_asked_for_latency_and_a_30s_timeout(monkeypatch, tmp_path):
    calls = []

    def run(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout='WRK_JSON {"requests": 1}\n', stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    bodies = tmp_path / "bodies.jsonl"
    result = serving.wrk("http://127.0.0.1:9/predict", bodies, connections=32, seconds=2.4)

    (args,) = calls
    assert result["requests"] == 1
    assert args[:4] == ["wrk", "-t1", "-c32", "-d2s"]
    assert "--latency" in args
    assert args[args.index("--timeout") + 1] == "30s", "wrk's default of 2 s would count timeouts"
    assert args[args.index("-s") + 1] == str(serving.SCRIPT)
    assert args[-3:] == ["http://127.0.0.1:9/predict", "--", str(bodies)]


def _row(p50: float, rps: float, **cpu: float) -> dict:
    c = {"p50_ms": p50, "p99_ms": 2 * p50, "rps": rps, "errors": 0}
    return {
        "c1": c | {"server_cpu_ms_per_request": cpu},
        "c32": c | {"p50_ms": 20.0, "p99_ms": 40.0, "server_cpu_ms_per_request": cpu},
    }


def _report() -> dict:
    single = {
        "direct": {"endpoint": "POST /invocations"} | _row(6.0, 170, scoring=6.0),
        serving.HOP: {"endpoint": "POST /invocations via a bare proxy"}
        | _row(7.75, 165, hop=0.9, scoring=6.0),
        "gateway": {"endpoint": "POST /predict"} | _row(8.5, 1400, gateway=1.8, scoring=6.2),
        "in-process": {"endpoint": "POST /predict"} | _row(4.0, 190, server=4.2),
    }
    batch = {
        "direct": {"endpoint": "POST /invocations", "reviews_per_s": 5000, "p50_ms": 190},
        "gateway": {"endpoint": "POST /predict/batch", "reviews_per_s": 8000, "p50_ms": 120},
    }
    for row in batch.values():
        row["errors"] = 0
    meta = {
        "measured_at": "2026-11-28T01:00:00+00:00",
        "command": "make bench-serving",
        "machine": "x86_64, 2 cores",
        "model_version": "1",
        "preset": "best",
        "training_rows": 0,
        "reviews": {"count": 200, "min_chars": 235, "median_chars": 847, "max_chars": 1973},
        "c1_seconds": 10,
        "c32_seconds": 15,
        "batch_seconds": 18,
        "warmup_seconds": 2,
        "rounds": 3,
        "gateway_defaults": "batching=True",
        "batch_size": 1000,
    }
    report = {"meta": meta, "single": single, "batch": batch}
    return report | serving.summarise(single, batch, args=None)


def test_the_hop_splits_the_gateways_c1_overhead_into_the_hop_and_its_own_work():
    report = _report()
    ratios = report["ratios"]
    assert ratios["hop_minus_direct_c1_p50_ms"] == 1.75
    assert ratios["gateway_minus_hop_c1_p50_ms"] == 0.75
    assert ratios["gateway_over_hop_c1_cpu"] == 2.0
    # The c=1 bar applied to the floor: the hop alone misses it here.
    (floor,) = [b for b in report["bars"] if b["target"] == serving.HOP]
    assert floor == {
        "target": serving.HOP,
        "bar": "c=1 p50 within 1.5 ms of direct",
        "measured": "+1.75 ms",
        "met": False,
    }

    table = serving.markdown(report)
    assert "| pass-through hop | 7.75 | +1.75 ms | – | 0.90 |" in table
    assert "| gateway | 8.50 | +2.50 ms | +0.75 ms | 1.80 |" in table
    assert "| pass-through hop (POST /invocations via a bare proxy) | 7.75 |" in table
    assert "hop 0.90, scoring 6.00" in table


def test_a_report_without_the_hop_has_no_hop_rows():
    report = _report()
    del report["single"][serving.HOP]
    report |= serving.summarise(report["single"], report["batch"], args=None)
    assert "hop_minus_direct_c1_p50_ms" not in report["ratios"]
    assert "pass-through" not in serving.markdown(report)


def test_the_markdown_carries_the_targets_and_the_comparison_when_the_report_has_them():
    report = _report()
    assert "Compared with" not in serving.markdown(report)  # a report of before the guard
    now = serving_guard.figures(report["single"], report["batch"])
    report |= {
        "targets": serving_guard.targets(now),
        "guard": {
            "baseline": {"file": "x.json", "measured_at": None},
            "rows": serving_guard.compare({}, now),
        },
    }
    table = serving.markdown(report)
    assert "| gateway's own share at c=1 (p50 over the bare hop) | ≤ 0.5 ms | 0.75 ms " in table
    assert "| gateway c=32 p99 | < 25 ms | 40.00 ms | **not met** |" in table
    assert "Compared with no earlier results" in table
    assert "| no baseline |" in table
