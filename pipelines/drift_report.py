"""Evidently's data drift report of a monitoring period against a model's reference rows:
an HTML page for people and its figures as MLflow metrics."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd
import pandas.core.dtypes.common as pandas_dtypes

from monitoring.drift import THRESHOLD

NUMERIC = ("text_length", "known_term_ratio", "confidence")
CATEGORICAL = ("sentiment",)


def _evidently():
    """Evidently 0.7.23 (the newest) imports ``infer_dtype_from_object``, a pandas 2 helper
    that pandas 3 removed, in a legacy test module this report never runs: a stand-in that
    refuses to work lets the package import. Evidently's usage statistics are switched off."""
    if not hasattr(pandas_dtypes, "infer_dtype_from_object"):

        def infer_dtype_from_object(dtype):
            raise NotImplementedError("not available with pandas 3")

        pandas_dtypes.infer_dtype_from_object = infer_dtype_from_object
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import evidently
    from evidently.presets import DataDriftPreset

    return evidently, DataDriftPreset


def write(reference: pd.DataFrame, current: pd.DataFrame, path: Path) -> dict[str, float]:
    """Write the report to ``path``; returns its metrics, named ``evidently_<what>``.

    Drift per column by PSI at the threshold the gateway uses; columns the period does not
    have (a version that reports no known_term_ratio, texts of unknown length) are left out.
    """
    evidently, preset = _evidently()
    numeric = [c for c in NUMERIC if c in current and current[c].notna().any()]
    categorical = [c for c in CATEGORICAL if c in current and current[c].notna().any()]
    columns = numeric + categorical
    definition = evidently.DataDefinition(
        numerical_columns=numeric, categorical_columns=categorical
    )
    snapshot = evidently.Report([preset(method="psi", threshold=THRESHOLD)]).run(
        evidently.Dataset.from_pandas(current[columns].copy(), data_definition=definition),
        evidently.Dataset.from_pandas(reference[columns].copy(), data_definition=definition),
    )
    snapshot.save_html(str(path))
    metrics = {}
    for metric in snapshot.dict()["metrics"]:
        name, value = metric["metric_name"], metric["value"]
        column = re.search(r"column=(\w+)", name)
        if name.startswith("ValueDrift") and column:
            metrics[f"evidently_psi_{column.group(1)}"] = float(value)
        elif name.startswith("DriftedColumnsCount") and isinstance(value, dict):
            metrics["evidently_drifted_columns"] = float(value["count"])
            metrics["evidently_drifted_share"] = float(value["share"])
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
