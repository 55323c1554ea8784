"""The serving benchmark's wrk command line, checked without running wrk."""

import subprocess

from benchmarks import serving


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
