"""The summary table shows each benchmark's headline figure from its results file."""

from __future__ import annotations

import json

from benchmarks import summary

MODEL = {
    "meta": {"measured_at": "2026-11-27T21:39:00+00:00"},
    "cost": {"model_us": 263.0, "plain_us": 306.0, "ratio": 0.86},
    "load": {"model_load_s": 0.191, "before_s": 0.653},
    "cold_start": {"seconds": 8.6, "note": "before 10.3 s"},
}
TRAINING = {
    "measured_at": "2026-11-27T22:00:00+00:00",
    "rows": [
        {
            "preset": "best",
            "test_accuracy": 0.91523,
            "training_seconds": 41.2,
            "model_size_mb": 4.7,
            "behaviour_negation": 0.715,
            "behaviour_negation_cases": 200.0,
        }
    ],
}


def test_figures_come_from_the_results_files(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "RESULTS", tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(MODEL))
    (tmp_path / "training.json").write_text(json.dumps(TRAINING))
    table = summary.markdown()
    assert "| 263 µs | plain scikit-learn (1,3) TF-IDF + LR 306 µs: 0.86× |" in table
    assert "| 191 ms |" in table and "| 8.6 s |" in table
    assert "| preset `best`: test accuracy | 0.9152 |" in table
    assert "behaviour: negation 71.5%" in table and "cases" not in table
    # No serving or batch results yet: those rows are left out, not invented.
    assert "gateway" not in table and "Spark" not in table
