"""Metrics and the evaluation pictures a reviewer looks for in the MLflow UI."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from model.names import LABELS


def score(y_true, p_positive, y_pred=None) -> dict[str, float]:
    """Accuracy, F1, precision and recall of the positive class, and ROC AUC.

    ``y_pred`` defaults to ``p_positive >= 0.5``; give it when the labels come from elsewhere.
    """
    y_true = np.asarray(y_true)
    y_pred = (np.asarray(p_positive) >= 0.5).astype(int) if y_pred is None else np.asarray(y_pred)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "f1": f1_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred),
        "roc_auc": roc_auc_score(y_true, p_positive),
    }


def ece(y_true, p_positive, bins: int = 10) -> float:
    """Expected calibration error of ``confidence`` (the answered label's probability): over
    ``bins`` equal-width bins of confidence, the row-weighted gap between the mean confidence
    and the accuracy. 0.02 means that, on average, a stated 90 % is right 88-92 % of the time."""
    y_true, p_positive = np.asarray(y_true), np.asarray(p_positive, dtype=float)
    if not len(y_true):
        return float("nan")
    confidence = np.maximum(p_positive, 1.0 - p_positive)
    right = (p_positive >= 0.5) == y_true
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = np.bincount(which, minlength=bins)
    gap = np.bincount(which, right - confidence, minlength=bins)
    return float(np.abs(gap).sum() / rows.sum())


def log_reliability(slices: dict[str, tuple], bins: int = 10) -> None:
    """One reliability diagram (accuracy against stated confidence) with a line per slice."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0.5, 1], [0.5, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for title, (y_true, p_positive) in slices.items():
        y_true, p_positive = np.asarray(y_true), np.asarray(p_positive, dtype=float)
        if not len(y_true):
            continue
        confidence = np.maximum(p_positive, 1.0 - p_positive)
        right = ((p_positive >= 0.5) == y_true).astype(int)
        accuracy, stated = calibration_curve(right, confidence, n_bins=bins, pos_label=1)
        label = f"{title} (ECE {ece(y_true, p_positive):.3f})"
        ax.plot(stated, accuracy, marker="o", label=label)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability")
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "evaluation/reliability.png")
    plt.close(fig)


def score_answers(y_true, predictions: pd.DataFrame) -> dict[str, float]:
    """``score`` of a served model's answers (``sentiment``, ``confidence``).

    The labels are the answered ones: a text without a known term is answered with the
    intercept's label at confidence 0.5, which a threshold on P(positive) would misread.
    """
    y_pred = (predictions["sentiment"].to_numpy() == LABELS[1]).astype(int)
    return score(y_true, answered_positive(predictions), y_pred)


def answered_positive(predictions: pd.DataFrame) -> np.ndarray:
    """P(positive) as a served model's answers state it (``sentiment``, ``confidence``)."""
    positive = predictions["sentiment"].to_numpy() == LABELS[1]
    confidence = predictions["confidence"].to_numpy(dtype=float)
    return np.where(positive, confidence, 1 - confidence)


def log_report(split: str, texts: list[str], y_true, p_positive, sample: int = 50) -> None:
    """Confusion matrix, ROC and precision-recall curves, and misclassified reviews.

    Drawn with scikit-learn: MLflow's evaluator draws curves only for models it can
    unwrap to a scikit-learn flavor, and ours is a pyfunc bundling its own cleaning.
    """
    y_true = np.asarray(y_true)
    y_pred = (np.asarray(p_positive) >= 0.5).astype(int)
    figures = {
        "confusion_matrix": lambda ax: ConfusionMatrixDisplay.from_predictions(
            y_true, y_pred, display_labels=LABELS, ax=ax, colorbar=False
        ),
        "roc_curve": lambda ax: RocCurveDisplay.from_predictions(y_true, p_positive, ax=ax),
        "precision_recall_curve": lambda ax: PrecisionRecallDisplay.from_predictions(
            y_true, p_positive, ax=ax
        ),
    }
    for name, draw in figures.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        ax.set_title(f"{name.replace('_', ' ')} ({split})")
        fig.tight_layout()
        mlflow.log_figure(fig, f"evaluation/{split}_{name}.png")
        plt.close(fig)
    wrong = np.flatnonzero(y_true != y_pred)
    worst = wrong[np.argsort(-np.abs(np.asarray(p_positive)[wrong] - 0.5))][:sample]
    mlflow.log_table(
        pd.DataFrame(
            {
                "review": [texts[i][:1000] for i in worst],
                "label": [LABELS[y_true[i]] for i in worst],
                "predicted": [LABELS[y_pred[i]] for i in worst],
                "p_positive": np.round(np.asarray(p_positive)[worst], 4),
            }
        ),
        f"evaluation/{split}_misclassified.json",
    )
