"""The model card of a small fitted model: its sections, and every figure as the run logged it."""

import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines import behaviour, model_card, slices
from pipelines.data import load_reviews
from pipelines.features import PRESETS
from pipelines.promote import Decision, record
from pipelines.training import estimate, fit
from tests.unit.test_training import prepared

NAME = "CardModel"
SECTIONS = [
    "## Intended use",
    "## Data",
    "## Preset and hyperparameters",
    "## Metrics",
    "## Examples and known failures",
    "## Reproduce",
    "## Decision",
]


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """One run on a local store: fit, estimate, log as training does, register, write the card
    before and after a recorded decision."""
    store = tmp_path_factory.mktemp("card-store")
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("cards")
    data = prepared(load_reviews(max_rows=600))
    try:
        with mlflow.start_run() as run:
            mlflow.log_params({"seed": 42, "max_rows": 600, "data_digest": "abc", "split": "s"})
            mlflow.log_params({"preset": "seed", **PRESETS["seed"]})
            mlflow.log_params({"data_path": "", "promote": "if_better"})  # as `mlflow run` does
            fitted = fit(PRESETS["seed"], data, seed=42)
            test, evidence = estimate(fitted, data)
            mlflow.log_metrics({**fitted.metrics, **test, **evidence.metrics})
            client = MlflowClient()
            client.create_registered_model(NAME)
            version = client.create_model_version(NAME, "file:///none", run.info.run_id).version
            rerun = model_card.rerun("seed", "if_better", None, data.trained_on)
            with model_card.written(NAME, version, evidence, rerun):
                pending = client.get_model_version(NAME, version).description
                record(Decision(True, "no production model yet"), None, announce=False)
            final = client.get_model_version(NAME, version)
            logged = mlflow.artifacts.load_text(model_card.artifact_uri(run.info.run_id))
            metrics = client.get_run(run.info.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(None)
    return {
        "pending": pending,
        "card": final.description,
        "version": final,
        "logged": logged,
        "metrics": metrics,
        "evidence": evidence,
        "run_id": run.info.run_id,
        "rerun": rerun,
    }


def section(card: str, title: str) -> str:
    return card.split(title, 1)[1].split("\n## ", 1)[0]


def test_the_version_description_is_the_logged_card_with_all_sections(carded):
    card = carded["card"]
    assert card == carded["logged"]
    assert [card.index(s) for s in SECTIONS] == sorted(card.index(s) for s in SECTIONS)
    assert len(card) <= model_card.MAX_CHARS
    assert carded["version"].tags[model_card.TAG] == f"runs:/{carded['run_id']}/model_card.md"


def test_the_decision_is_pending_until_made(carded):
    assert model_card.PENDING in section(carded["pending"], "## Decision")
    decision = section(carded["card"], "## Decision")
    assert "**Promoted**" in decision and "no production model yet" in decision
    assert model_card.PENDING not in decision


def test_metrics_and_confusion_matrix_are_the_logged_ones(carded):
    m, metrics = carded["metrics"], section(carded["card"], "## Metrics")
    for split, title in (("val", "validation"), ("test", "test")):
        row = next(line for line in metrics.splitlines() if line.startswith(f"| {title} |"))
        figures = [float(x) for x in row.strip("| ").split(" | ")[1:]]
        expected = [m[f"{split}_{k}"] for k in ("accuracy", "f1", "precision", "recall", "roc_auc")]
        assert figures == pytest.approx(expected, abs=5e-5)
    cells = ("true_negative", "false_positive", "false_negative", "true_positive")
    tn, fp, fn, tp = (m[f"test_{cell}"] for cell in cells)
    assert tn + fp + fn + tp == m["test_rows"] == 90
    assert (tn + tp) / m["test_rows"] == pytest.approx(m["test_accuracy"])
    assert f"| negative | {tn:.0f} | {fp:.0f} |" in metrics
    assert f"| positive | {fn:.0f} | {tp:.0f} |" in metrics


def test_slices_and_probe_sets_are_measured_and_logged(carded):
    m, use = carded["metrics"], section(carded["card"], "## Intended use")
    by_length = [slices.tokens_slice(low, high) for low, high in slices.TOKENS]
    assert sum(m[f"{s}_rows"] for s in by_length) == m["test_rows"]
    for name in [*by_length, "segments", "rt_choose", "rt_report"]:
        if m[f"{name}_rows"]:
            figures = f"| {m[f'{name}_rows']:.0f} | {100 * m[f'{name}_accuracy']:.1f}% | "
            assert figures + f"{m[f'{name}_ece']:.3f} | |" in use
    assert m["rt_choose_rows"] == m["rt_report_rows"] > 4000
    for name, title in model_card.PROBE_SETS.items():
        rows = len(model_card.load_probes()[name])
        assert m[f"probe_{name}_rows"] == rows >= 20
        row = next(line for line in use.splitlines() if line.startswith(f"| probe: {title} |"))
        accuracy = 100 * m[f"probe_{name}_accuracy"]
        unknown = 100 * m[f"probe_{name}_no_known_terms"]
        assert row == f"| probe: {title} | {rows} | {accuracy:.1f}% | | {unknown:.1f}% |"
    # Another language shares few terms with English reviews.
    assert m["probe_other_language_no_known_terms"] > m["probe_short_no_known_terms"]
    assert m["model_card_seconds"] > 0


def test_known_failures_are_misclassified_test_reviews_most_confident_first(carded):
    failures = carded["evidence"].failures
    assert len(failures) == model_card.FAILURES
    assert all(f.label != f.predicted for f in failures)
    assert [f.confidence for f in failures] == sorted(
        (f.confidence for f in failures), reverse=True
    )
    shown = section(carded["card"], "## Examples and known failures")
    for failure in failures:
        assert model_card._cell(failure.text, model_card.SHOWN_CHARS) in shown
        assert f"| {failure.label} | {failure.predicted} | {failure.confidence:.3f} |" in shown
    for example in carded["evidence"].examples:  # one answer of each probe set
        assert f"| {example.source} | {example.label} | {example.predicted} |" in shown


def test_reproduce_names_the_command_and_commit(carded):
    reproduce = section(carded["card"], "## Reproduce")
    commit = carded["rerun"].commit
    assert re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?|unknown", commit)
    assert f"Commit `{commit}`" in reproduce
    assert f"git checkout {commit.split()[0]}\n" in reproduce
    assert (
        "mlflow run . -e main --env-manager local --experiment-name cards -P preset=seed "
        "-P promote=if_better -P max_rows=0 -P seed=42"
    ) in reproduce


def test_hyperparameters_and_data_are_the_run_parameters(carded):
    hyper = section(carded["card"], "## Preset")
    assert "`seed`: C=1.0, " in hyper and " class_weight=balanced," in hyper
    assert all(f"{key}=" in hyper for key in PRESETS["seed"])
    assert "promote=" not in hyper and "data_path=" not in hyper
    data = section(carded["card"], "## Data")
    assert "420 train, 90 validation, 90 test reviews" in data and "`abc`" in data


def test_a_long_card_is_shortened_to_fit_a_version_description(carded):
    long = model_card.Example("word " * 2000, "positive", "negative", 0.99, "test split")
    facts = model_card.Facts(
        NAME, "1", "r", "e", {"preset": "p"},
        carded["metrics"], {}, "s", model_card.Rerun("main", {}, "c"),
        [long] * 60, [long] * 3,
    )  # fmt: skip
    assert len(model_card.render(facts)) > model_card.MAX_CHARS
    card = model_card.fitted(facts)
    assert len(card) <= model_card.MAX_CHARS
    assert [card.index(s) for s in SECTIONS] == sorted(card.index(s) for s in SECTIONS)


def test_the_version_page_carries_no_credentials():
    page = model_card.version_page("https://u:secret@mlflow.example/", "My Model", "3")
    assert page == "https://mlflow.example/#/models/My%20Model/versions/3"
    assert model_card.version_page("sqlite:///mlflow.db", "M", "1") is None


def test_the_gateway_links_the_version_page_without_credentials():
    from gateway.api.routes import _version_page
    from gateway.settings import Settings

    settings = Settings(MLFLOW_TRACKING_URI="http://user:secret@mlflow:5000/", model_name="My M")
    assert _version_page(settings, "7") == "http://mlflow:5000/#/models/My%20M/versions/7"
    assert _version_page(Settings(MLFLOW_TRACKING_URI="sqlite:///m.db"), "7") is None


def test_behavioural_pass_rates_are_measured_logged_and_shown(carded):
    m, use = carded["metrics"], section(carded["card"], "## Intended use")
    line = next(line for line in use.splitlines() if line.startswith("Behavioural tests"))
    for name, capability in behaviour.CAPABILITIES.items():
        cases = sum(c.capability == name for c in behaviour.suite())
        assert m[f"behaviour_{name}_cases"] == cases
        assert 0 <= m[f"behaviour_{name}"] <= 1
        rate = 100 * m[f"behaviour_{name}"]
        assert f"{name} {rate:.1f}% of {cases} (threshold {capability.threshold:.0%})" in line
