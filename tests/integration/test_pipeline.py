"""`mlflow run .` end to end against a real tracking server, then a fresh-process load."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from model.names import ALIAS, MODEL_NAME
from pipelines import promotion_lock
from pipelines.features import PRESETS
from tests.servers import BIN, ROOT, env, run_training, tracking_server

NAME = MODEL_NAME
WAITING = "waiting for another promotion"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with tracking_server(tmp_path_factory.mktemp("pipeline-store")) as uri:
        yield uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def production(client):
    return client.get_model_version_by_alias(NAME, ALIAS).version


@pytest.fixture(scope="module")
def first_run(registry):
    uri, _ = registry
    result = run_training(uri, "max_rows=1500")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_run_registers_and_promotes_the_first_version(registry, first_run):
    _, client = registry
    out = first_run.stdout
    for phase in ("load", "clean", "fit", "refit", "evaluate", "log", "register", "promote"):
        assert f"[{phase}] done in" in out
    assert "This is the best model! Promoting to production..." in out
    assert production(client) == "1"
    version = client.get_model_version(NAME, "1")
    assert version.tags["preset"] == "best"
    assert {"test_accuracy", "test_f1", "val_f1", "data_digest", "git_commit"} <= set(version.tags)
    assert version.tags["split_seed"] == "42" and version.tags["max_rows"] == "1500"
    assert version.tags["split"] == "stratified 70/15/15"
    # Chosen and scored on validation, then the recipe fitted again on train+val. The sample
    # of 1,500 holds one pair of reviews that clean alike, kept once: 1,049 + 225 of 1,499.
    assert version.tags["fit_on"] == "train+val"
    assert "fitting the same recipe on train+val (1274 reviews)" in out
    run = client.get_run(version.run_id)
    assert run.data.params["fit_on"] == "train+val" and run.data.metrics["refit_seconds"] > 0
    assert run.data.tags["promotion.decision"] == "promoted"
    assert run.data.tags["promotion.reason"] == "no production model yet"
    assert run.data.params["data_digest"] == version.tags["data_digest"]
    assert "test accuracy" in version.description
    assert version.source.startswith("models:/m-")


def test_the_version_description_is_its_model_card_with_the_decision(registry, first_run, tmp_path):
    uri, client = registry
    version = client.get_model_version(NAME, "1")
    assert version.tags["model_card"] == f"runs:/{version.run_id}/model_card.md"
    logged = client.download_artifacts(version.run_id, "model_card.md", str(tmp_path))
    card = Path(logged).read_text()
    assert version.description == card
    assert len(card) <= 5000  # a version description longer than this is refused on PostgreSQL
    decision = card.split("## Decision", 1)[1]
    assert "**Promoted** to `production`" in decision and "no production model yet" in decision
    assert "Fitted on train+val: the recipe was fitted on train and scored on validation" in card
    assert "-e main --env-manager local --experiment-name Sentiment-Analysis" in card
    assert "-P preset=best -P promote=if_better -P max_rows=1500 -P seed=42" in card
    run = client.get_run(version.run_id)
    assert f"{run.data.metrics['test_accuracy']:.4f}" in card
    page = f"{uri}/#/models/{NAME}/versions/1"
    assert f"model card: {page} (artifact runs:/{version.run_id}/model_card.md)" in first_run.stdout


def test_run_logs_metrics_figures_and_dataset(registry, first_run):
    _, client = registry
    run = client.get_run(client.get_model_version(NAME, "1").run_id)
    for split in ("val", "test"):
        for metric in ("accuracy", "f1", "precision", "recall", "roc_auc"):
            assert 0.5 < run.data.metrics[f"{split}_{metric}"] <= 1.0
    assert run.data.metrics["training_seconds"] > 0
    assert 0 < run.data.metrics["model_size_mb"] < 25
    assert run.data.params["preset"] == "best"
    assert run.data.params["C"] == str(PRESETS["best"]["C"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/test_confusion_matrix.png",
        "evaluation/test_roc_curve.png",
        "evaluation/test_precision_recall_curve.png",
        "evaluation/test_misclassified.json",
    } <= artifacts
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == client.get_model_version(NAME, "1").tags["data_digest"]


def test_production_model_loads_in_a_fresh_process_without_the_repo(registry, first_run, tmp_path):
    uri, _ = registry
    script = (
        "import json, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/SentimentClassifier@production')\n"
        "texts = ['This movie was absolutely amazing!', "
        "'Terrible movie. Waste of time. Disappointing and boring.', '', '映画']\n"
        "out = m.predict(pd.DataFrame({'text': texts}), params={'explain': True})\n"
        "print(json.dumps(out.to_dict('records')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=tmp_path,
        env=env(MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["sentiment"] for r in rows[:2]] == ["positive", "negative"]
    assert all(0.5 <= r["confidence"] <= 1 for r in rows)
    assert rows[0]["explanation"] and rows[2]["explanation"] == []


def test_bad_data_fails_clearly_and_touches_nothing(registry, first_run, tmp_path):
    uri, client = registry
    before = {v.version for v in client.search_model_versions(f"name='{NAME}'")}
    bad = tmp_path / "reviews.csv"
    bad.write_text("review,stars\ngreat,5\n")
    for path in (tmp_path / "missing.csv", bad):
        result = run_training(uri, f"data_path={path}")
        assert result.returncode != 0
        (line,) = [s for s in result.stderr.splitlines() if s.startswith("Data error:")]
        assert str(path) in line and "Nothing was registered." in line
    assert {v.version for v in client.search_model_versions(f"name='{NAME}'")} == before
    assert production(client) == "1"


def test_promote_never_registers_without_moving_the_alias(registry, first_run):
    uri, client = registry
    result = run_training(uri, "max_rows=1500", "promote=never", "preset=seed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Not promoted: promotion disabled" in result.stdout
    assert production(client) == "1"
    (latest,) = client.search_model_versions(f"name='{NAME}' and tag.preset='seed'")
    assert latest.tags["fit_on"] == "train"  # the seed preset is not refitted
    run = client.get_run(latest.run_id)
    assert run.data.tags["promotion.decision"] == "kept"
    decision = latest.description.split("## Decision", 1)[1]
    assert "**Not promoted**" in decision and "promotion disabled (promote=never)" in decision


def test_promote_entry_point_checks_then_moves_the_alias(registry, first_run):
    uri, client = registry
    seed_version = client.search_model_versions(f"name='{NAME}' and tag.preset='seed'")[0].version
    missing = run_training(uri, "version=999", entry="promote")
    assert missing.returncode != 0
    assert "has no version 999" in missing.stderr
    assert production(client) == "1"
    moved = run_training(uri, f"version={seed_version}", entry="promote")
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert production(client) == seed_version
    page = f"{uri}/#/models/{NAME}/versions/{seed_version}"
    assert f"Model card: {page} (artifact runs:/" in moved.stdout
    back = run_training(uri, "version=1", entry="promote")
    assert back.returncode == 0 and production(client) == "1"


def test_concurrent_promotions_take_turns_under_the_lock(registry, first_run, tmp_path):
    """Two `mlflow run . -e promote` at once, while a third promotion holds the lock: both
    wait, neither moves the alias meanwhile, then each moves it in turn."""
    uri, client = registry
    seed_version = client.search_model_versions(f"name='{NAME}' and tag.preset='seed'")[0].version
    before = production(client)
    args = [str(BIN / "mlflow"), "run", ".", "-e", "promote", "--env-manager", "local"]
    outputs = [tmp_path / f"promote-{version}.log" for version in (seed_version, "1")]
    with promotion_lock.held(NAME, client):
        runs = []
        for version, output in zip((seed_version, "1"), outputs, strict=True):
            with output.open("w") as log:  # the child keeps its own copy
                runs.append(
                    subprocess.Popen(
                        [*args, "-P", f"version={version}"],
                        cwd=ROOT,
                        env=env(MLFLOW_TRACKING_URI=uri, PYTHONUNBUFFERED="1"),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        # Each loads and checks its version, then says it waits: until both do, and for as
        # long as the lock is held, neither may end or move the alias.
        deadline = time.monotonic() + 120
        while not all(WAITING in output.read_text() for output in outputs):
            assert time.monotonic() < deadline, "a promotion did not reach the lock"
            assert all(run.poll() is None for run in runs), "a promotion ignored the lock"
            assert production(client) == before
            time.sleep(0.2)
        assert all(run.poll() is None for run in runs), "a promotion ignored the lock"
        assert production(client) == before
    for run, output in zip(runs, outputs, strict=True):
        assert run.wait(timeout=120) == 0, output.read_text()[-3000:]
    assert production(client) in (seed_version, "1")
    assert not client.search_registered_models(f"name='{promotion_lock.lock_name(NAME)}'")
    client.set_registered_model_alias(NAME, ALIAS, before)


def test_tune_runs_nested_candidates_and_registers_the_best(registry, first_run):
    uri, client = registry
    result = run_training(uri, "max_rows=1000", "promote=never", entry="tune")
    assert result.returncode == 0, result.stderr[-3000:]
    (tuned,) = client.search_model_versions(f"name='{NAME}' and tag.preset='tuned'")
    parent = client.get_run(tuned.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 12
    # Candidates are chosen on validation; the test split is scored once, for the chosen one.
    for child in children:
        assert not [m for m in child.data.metrics if m.startswith("test_")], child.data.metrics
    assert 0.5 < parent.data.metrics["test_f1"] <= 1.0
    assert tuned.tags["fit_on"] == "train+val"  # the chosen candidate's recipe, refitted
    assert "[refit] done in" in result.stdout
    # The registered candidate has the best validation F1 (on 150 reviews, several may tie).
    grid = ("C", "ngram_range", "nb_alpha")
    (chosen,) = [
        c for c in children if all(c.data.params[p] == parent.data.params[p] for p in grid)
    ]
    assert chosen.data.metrics["val_f1"] == max(c.data.metrics["val_f1"] for c in children)


def latest_version(client):
    return max(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))


def test_a_champion_trained_on_other_data_is_not_compared_or_replaced(registry, first_run):
    uri, client = registry
    before = production(client)
    assert client.get_model_version(NAME, before).tags["split_seed"] == "42"
    result = run_training(uri, "max_rows=1500", "seed=7")  # promote=if_better, the default
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert production(client) == before
    new = latest_version(client)
    assert new.tags["split_seed"] == "7"
    run = client.get_run(new.run_id)
    reason = run.data.tags["promotion.reason"]
    assert run.data.tags["promotion.decision"] == "kept"
    assert reason.startswith(f"production v{before} was trained on other data (")
    assert "seed 42, this run 7" in reason
    assert reason.endswith("not comparable; use promote=always or the promote entry point")
    assert "champion_val_f1" not in run.data.metrics
    assert f"Not promoted: {reason}." in result.stdout


def test_same_data_seed_and_sample_are_compared_on_validation(registry, first_run):
    uri, client = registry
    before = production(client)
    champion = client.get_model_version(NAME, before)
    assert (champion.tags["split_seed"], champion.tags["max_rows"]) == ("42", "1500")
    result = run_training(uri, "max_rows=1500")  # the champion's data, seed and sample
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    new = latest_version(client)
    assert new.tags["data_digest"] == champion.tags["data_digest"]
    run = client.get_run(new.run_id)
    metrics, reason = run.data.metrics, run.data.tags["promotion.reason"]
    assert "validation F1" in reason and "test" not in reason
    # The champion was refitted on train+val, so it trained on these validation rows: it is
    # compared by the validation F1 its run recorded (its recipe fitted on train, scored on
    # these rows), not re-scored on rows it has seen.
    assert champion.tags["fit_on"] == "train+val"
    assert "(its recorded validation F1: it was refitted on train+val)" in reason
    champion_run = client.get_run(champion.run_id)
    # Both were scored on the same short texts, each by its published model.
    short, champion_short = metrics["rt_choose_accuracy"], metrics["champion_short_accuracy"]
    assert champion_short == pytest.approx(champion_run.data.metrics["rt_choose_accuracy"])
    if metrics["val_f1"] >= metrics["champion_val_f1"]:  # the short-text rule is then read
        assert f"short-text accuracy {short:.4f}" in reason and f"{champion_short:.4f}" in reason
    assert metrics["champion_val_f1"] == pytest.approx(
        champion_run.data.metrics["val_f1"], abs=1e-9
    )
    promoted = metrics["val_f1"] >= metrics["champion_val_f1"] and short >= champion_short - 0.01
    assert run.data.tags["promotion.decision"] == ("promoted" if promoted else "kept")
    assert production(client) == (new.version if promoted else before)


def test_a_challenger_that_loses_on_short_texts_is_refused(registry, first_run):
    """The same recipe on the same rows is as good on validation and on short texts; a margin
    below zero (`-P short_margin=-0.01`) asks it to be a point better there, so it is refused,
    with the rule's sentence, and the alias stays."""
    uri, client = registry
    before = production(client)
    result = run_training(uri, "max_rows=1500", "short_margin=-0.01")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    new = latest_version(client)
    run = client.get_run(new.run_id)
    reason = run.data.tags["promotion.reason"]
    assert run.data.tags["promotion.decision"] == "kept", reason
    assert "more than the -1 allowed (short_margin)" in reason
    assert f"Not promoted: {reason}." in result.stdout
    assert new.tags["promotion.decision"] == "kept" and new.tags["promotion.reason"] == reason
    assert production(client) == before
