"""The model card of a registered version: what it is for, what it learnt from, how good it is
and where it fails, in Markdown.

Training writes it as the version's description (the version's page in the MLflow UI shows
it) and logs the same text as the run's artifact ``model_card.md``; the version's tag
``model_card`` names that artifact. It is written at registration, with the decision pending,
and again once the champion/challenger decision is made.

Every figure in the card is a metric of the run: the slices and probe sets are measured here
(``measure``), logged, and the card is rendered from what the run holds, so the two cannot
disagree.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from model.names import LABELS
from model.sentiment_model import SentimentModel
from pipelines import behaviour, slices
from pipelines.data import PACKAGED
from pipelines.errors import PromotionError
from pipelines.features import PRESETS

ARTIFACT = "model_card.md"
TAG = "model_card"
# A model version's description is a varchar(5000) column: PostgreSQL refuses a longer one
# (SQLite stores anything). The card is kept under it.
MAX_CHARS = 5000
ROOT = Path(__file__).resolve().parents[1]
PROBES = Path(__file__).with_name("probes")
# Probe sets written for the weak spots of a bag-of-n-grams model trained on long reviews.
PROBE_SETS = {
    "short": "short one-liners",
    "negation": "negations",
    "sarcasm": "sarcasm",
    "other_language": "French, Spanish and German reviews",
}
FAILURES = 3  # misclassified test reviews shown, the most confident first
SHOWN_CHARS = 160
# The hyperparameters among the run's parameters (every preset has the same keys).
HYPERPARAMETERS = set(PRESETS["best"])
PENDING = "Pending: written once the champion/challenger decision is made."


@dataclass
class Example:
    text: str
    label: str
    predicted: str
    confidence: float
    source: str


@dataclass
class Evidence:
    """What the card shows beyond the run's metrics: examples, and the data's shape."""

    metrics: dict[str, float]  # to log: slices, probes, confusion matrix, cost
    examples: list[Example] = field(default_factory=list)
    failures: list[Example] = field(default_factory=list)


def load_probes() -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(PROBES / f"{name}.csv") for name in PROBE_SETS}


def measure(
    model: SentimentModel, texts: list[str], labels, p_positive, split_rows: dict[str, int]
) -> Evidence:
    """Score the probe sets and the behavioural suite with the served ``model``, count the
    confusion matrix and pick the examples; ``p_positive`` is the test split's, already
    computed."""
    started = time.perf_counter()
    y_true = np.asarray(labels)
    p_positive = np.asarray(p_positive)
    y_pred = (p_positive >= 0.5).astype(int)
    right = y_true == y_pred
    metrics: dict[str, float] = {
        **{f"{name}_rows": rows for name, rows in split_rows.items()},
        "test_true_negative": int(np.sum((y_true == 0) & right)),
        "test_false_positive": int(np.sum((y_true == 0) & ~right)),
        "test_false_negative": int(np.sum((y_true == 1) & ~right)),
        "test_true_positive": int(np.sum((y_true == 1) & right)),
    }
    examples = []
    for name, probe in load_probes().items():
        answers = model.predict(None, probe[["text"]])
        correct = answers["sentiment"].to_numpy() == probe["label"].to_numpy()
        metrics[f"probe_{name}_rows"] = len(probe)
        metrics[f"probe_{name}_accuracy"] = float(correct.mean())
        metrics[f"probe_{name}_no_known_terms"] = float((answers["known_terms"] == 0).mean())
        # One answer per set: the first it gets wrong, else the first it gets right.
        pick = int(np.flatnonzero(~correct)[0]) if (~correct).any() else 0
        examples.append(
            Example(
                probe["text"][pick],
                probe["label"][pick],
                answers["sentiment"][pick],
                float(answers["confidence"][pick]),
                PROBE_SETS[name],
            )
        )
    # The behavioural suite, on the answers the scoring server will give (about 0.05 s).
    served = behaviour.answers_scorer(lambda frame: model.predict(None, frame))
    metrics |= behaviour.metrics(behaviour.run(served))
    wrong = np.flatnonzero(~right)
    worst = wrong[np.argsort(-np.abs(p_positive[wrong] - 0.5), kind="stable")][:FAILURES]
    failures = [
        Example(
            texts[i],
            LABELS[y_true[i]],
            LABELS[y_pred[i]],
            float(max(p_positive[i], 1 - p_positive[i])),
            "test split",
        )
        for i in worst
    ]
    metrics["model_card_seconds"] = time.perf_counter() - started
    return Evidence(metrics, examples, failures)


@dataclass
class Facts:
    """Everything the card says, as the run recorded it."""

    model_name: str
    version: str
    run_id: str
    experiment: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    source: str
    rerun: Rerun
    examples: list[Example]
    failures: list[Example]


def facts(run: Run, model_name: str, version: str, evidence: Evidence, rerun: Rerun) -> Facts:
    experiment = MlflowClient().get_experiment(run.info.experiment_id).name
    source = str(rerun.parameters.get("data_path") or PACKAGED)
    return Facts(
        model_name,
        version,
        run.info.run_id,
        experiment,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
        source,
        rerun,
        evidence.examples,
        evidence.failures,
    )


@dataclass(frozen=True)
class Rerun:
    """What `mlflow run` was given: enough to train this version again."""

    entry: str
    parameters: dict[str, object]
    commit: str

    def command(self, experiment: str) -> str:
        args = ["mlflow", "run", ".", "-e", self.entry, "--env-manager", "local"]
        args += ["--experiment-name", experiment]
        for key, value in self.parameters.items():
            if value not in (None, ""):
                args += ["-P", f"{key}={value}"]
        return f"git checkout {self.commit.split()[0]}\n{shlex.join(args)}"


def rerun(preset: str, promote_mode: str, data_path: str | None, trained_on) -> Rerun:
    """The entry point and parameters of this run (``tuned`` comes from the `tune` entry)."""
    parameters: dict[str, object] = {"data_path": data_path}
    if preset != "tuned":
        parameters["preset"] = preset
    parameters |= {
        "promote": promote_mode,
        "max_rows": trained_on.max_rows,
        "seed": trained_on.split_seed,
    }
    return Rerun("tune" if preset == "tuned" else "main", parameters, git_state(ROOT))


def git_state(root: Path) -> str:
    """The commit, marked when the working tree had uncommitted changes to tracked files."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=False
            )
        except OSError:
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        return f"{commit} (with uncommitted changes)"
    return commit


def _cell(text: str, limit: int) -> str:
    """One line of a Markdown table cell: no tags, no pipes, at most ``limit`` characters."""
    text = re.sub(r"<[^>]{0,40}>", " ", text)
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _decision(tags: dict[str, str]) -> str:
    decision = tags.get("promotion.decision")
    if decision is None:
        return PENDING
    champion = tags.get("promotion.champion", "none")
    faced = "no production version" if champion == "none" else f"production version {champion}"
    verdict = "**Promoted** to `production`" if decision == "promoted" else "**Not promoted**"
    return f"{verdict} (faced {faced}): {tags.get('promotion.reason', '')}."


def _slice_row(m: dict[str, float], name: str, title: str) -> str:
    ece = m.get(f"{name}_ece")
    return (
        f"| {title} | {int(m.get(f'{name}_rows', 0))} | {_pct(m.get(f'{name}_accuracy'))} | "
        f"{'n/a' if ece is None else f'{ece:.3f}'} | |"
    )


def _behaviour(m: dict[str, float]) -> str:
    """One line: each capability's pass rate, its number of cases and its threshold."""
    figures = [
        f"{name} {_pct(m.get(f'behaviour_{name}'))} of {int(m.get(f'behaviour_{name}_cases', 0))} "
        f"(threshold {capability.threshold:.0%})"
        for name, capability in behaviour.CAPABILITIES.items()
    ]
    return "Behavioural tests (`pipelines/behaviour.py`), pass rates: " + "; ".join(figures) + "."


def _fit_on(fit_on: str | None) -> str:
    if fit_on == "train+val":
        return (
            " Fitted on train+val: the recipe was fitted on train and scored on validation "
            "(the validation metrics below), then fitted again on both."
        )
    return " Fitted on train." if fit_on else ""


def render(f: Facts, shown_chars: int = SHOWN_CHARS, failures: int = FAILURES) -> str:
    m, p = f.metrics, f.params
    hyper = {k: v for k, v in sorted(p.items()) if k in HYPERPARAMETERS}
    max_rows = p.get("max_rows", "0")
    sample = "all rows" if max_rows == "0" else f"a stratified sample of {max_rows}"
    lines = [
        f"# {f.model_name} version {f.version}",
        "",
        f"Sentiment (positive/negative) of English movie reviews: preset `{p.get('preset')}`, "
        f"test accuracy {m['test_accuracy']:.4f}, F1 {m['test_f1']:.4f}. "
        f"Run `{f.run_id}`.",
        "",
        "## Intended use",
        "For English opinions of films, from a sentence to a long review: trained on IMDB "
        "reviews, with a sentence head and a calibration by length for short texts. Other "
        "domains and languages, and decisions about people, are outside it. Weak spots, "
        "measured on this version below: sarcasm, other languages, other domains. A text with "
        "no known term is answered with confidence 0.5. `confidence` is calibrated: ECE "
        "(10 bins) per slice below.",
        "",
        "| Where | Texts | Accuracy | ECE | No known term |",
        "|---|---:|---:|---:|---:|",
    ]
    for low, high in slices.TOKENS:
        name = slices.tokens_slice(low, high)
        span = f"{low}–{high} tokens" if high is not None else f"over {low - 1} tokens"
        lines.append(_slice_row(m, name, f"test reviews, {span}"))
    for name in ("segments", "rt_choose", "rt_report"):
        lines.append(_slice_row(m, name, slices.TITLES[name]))
    for name, title in PROBE_SETS.items():
        lines.append(
            f"| probe: {title} | {int(m.get(f'probe_{name}_rows', 0))} | "
            f"{_pct(m.get(f'probe_{name}_accuracy'))} | | "
            f"{_pct(m.get(f'probe_{name}_no_known_terms'))} |"
        )
    lines += ["", _behaviour(m)]
    train = int(m.get("train_rows", 0))
    lines += [
        "",
        "## Data",
        f"Source: {f.source}; {sample}, split {p.get('split')} (seed {p.get('seed')}): "
        f"{train} train, {int(m.get('val_rows', 0))} validation, {int(m.get('test_rows', 0))} "
        f"test reviews. Digest `{p.get('data_digest')}`.{_fit_on(p.get('fit_on'))}",
        "",
        "## Preset and hyperparameters",
        f"`{p.get('preset')}`: " + ", ".join(f"{k}={v}" for k, v in hyper.items()) + ".",
        "",
        "## Metrics",
        "| Split | Accuracy | F1 | Precision | Recall | ROC AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split, title in (("val", "validation"), ("test", "test")):
        cells = " | ".join(
            f"{m[f'{split}_{k}']:.4f}" for k in ("accuracy", "f1", "precision", "recall", "roc_auc")
        )
        lines.append(f"| {title} | {cells} |")
    neg, pos = LABELS
    lines += [
        "",
        "Confusion matrix (test):",
        "",
        f"| true \\ predicted | {neg} | {pos} |",
        "|---|---:|---:|",
        f"| {neg} | {int(m['test_true_negative'])} | {int(m['test_false_positive'])} |",
        f"| {pos} | {int(m['test_false_negative'])} | {int(m['test_true_positive'])} |",
        "",
        "## Examples and known failures",
        "| Text | From | Label | Predicted | Confidence |",
        "|---|---|---|---|---:|",
    ]
    for e in [*f.examples, *f.failures[:failures]]:
        lines.append(
            f"| {_cell(e.text, shown_chars)} | {e.source} | {e.label} | {e.predicted} | "
            f"{e.confidence:.3f} |"
        )
    lines += [
        "",
        "## Reproduce",
        f"Commit `{f.rerun.commit}`:",
        "",
        "```",
        f.rerun.command(f.experiment),
        "```",
        "",
        "## Decision",
        _decision(f.tags),
        "",
    ]
    return "\n".join(lines)


def fitted(f: Facts) -> str:
    """The card, shortened until it fits a version description: shorter texts, then fewer
    examples; the sections themselves stay."""
    for shown, failures in ((SHOWN_CHARS, FAILURES), (100, FAILURES), (80, 1), (60, 0)):
        card = render(f, shown, failures)
        if len(card) <= MAX_CHARS:
            return card
    card = render(replace(f, examples=[], failures=[]))
    return card if len(card) <= MAX_CHARS else card[: MAX_CHARS - 2] + "…\n"


def artifact_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{ARTIFACT}"


def write(model_name: str, version: str, evidence: Evidence, rerun: Rerun) -> str:
    """Render the card from the active run and write it to the version and the run."""
    client = MlflowClient()
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("the model card is written inside the training run")
    run = client.get_run(active.info.run_id)
    card = fitted(facts(run, model_name, version, evidence, rerun))
    client.update_model_version(model_name, version, description=card)
    client.set_model_version_tag(model_name, version, TAG, artifact_uri(run.info.run_id))
    mlflow.log_text(card, ARTIFACT)
    return card


def version_page(tracking_uri: str, model_name: str, version: str) -> str | None:
    """The version's page in the MLflow UI, without credentials; None for a local store."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    base = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/")
    return f"{base}/#/models/{quote(model_name, safe='')}/versions/{version}"


@contextmanager
def written(model_name: str, version: str, evidence: Evidence, rerun: Rerun):
    """Write the card with the decision pending, and again once the block has decided (also
    when it found that the version cannot serve). The block may have moved the alias: from
    then on the card is information, and failing to write it cannot fail the run."""
    write(model_name, version, evidence, rerun)
    try:
        yield
    except PromotionError:
        write(model_name, version, evidence, rerun)
        raise
    try:
        write(model_name, version, evidence, rerun)
        print(f"  model card: {location(model_name, version)}")
    except Exception as error:  # noqa: BLE001 - anything the registry or the store raises
        print(f"  model card not updated with the decision: {error}", file=sys.stderr)


def location(name: str, version: str) -> str:
    """Where a version's card is: its page in the MLflow UI and the artifact, as one line."""
    found = MlflowClient().get_model_version(name, version)
    artifact = (found.tags or {}).get(TAG)
    if artifact is None:
        return f"version {version} has no model card (registered before cards were written)"
    page = version_page(mlflow.get_tracking_uri(), name, version) or "its description"
    return f"{page} (artifact {artifact})"
