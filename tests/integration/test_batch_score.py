"""Batch scoring on a real local Spark session against a real tracking server.

One Spark session for the module (its Python workers are fresh processes that cannot import
this repository), the session's tracking server and production version, and one run of
`mlflow run . -e batch_score` exactly as a user types it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from model.names import MODEL_NAME
from pipelines import batch_score
from pipelines.batch_score import EMPTY, LINEAGE_FILE, NULL, Job
from pipelines.data import load_reviews
from pipelines.errors import BatchError
from tests.models import register_broken_version
from tests.servers import ROOT, run_training

LONG = "A wonderful, moving film with a superb cast. " * 150  # 6,750 characters: scored
# Whitespace as Python's str.strip() sees it, Java's \s does not (\x1c, U+3000, U+2007).
BAD = {
    "null": (None, NULL),
    "empty": ("", EMPTY),
    "spaces": ("   ", EMPTY),
    "unicode spaces": ("\u3000\n\t\x1c\u2007", EMPTY),
}
ODD = ['Quotes "inside", commas, and\na line break: great film', "电影", LONG, "  ok  "]


@pytest.fixture(scope="module")
def registry(served, tracking_uri):
    """The session's tracking server and its production version (which the shared gateway
    serves). The jobs here register versions, but never move an alias."""
    mlflow.set_tracking_uri(tracking_uri)
    return tracking_uri, served.v1


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """Started from a folder outside the repository, with no PYTHONPATH: the workers can only
    import the model's code through the `code_paths` MLflow ships with it."""
    away = tmp_path_factory.mktemp("spark-cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(away)
        patch.delenv("PYTHONPATH", raising=False)
        session = batch_score.session("local[2]", **{"spark.ui.enabled": "false"})
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    reviews = load_reviews(max_rows=2000, seed=7)["text"].tolist()
    texts = [text for text, _ in BAD.values()] + ODD + reviews
    return pd.DataFrame({"id": range(len(texts)), "text": texts, "stars": range(len(texts))})


@pytest.fixture(scope="module")
def expected(registry, corpus) -> pd.DataFrame:
    """What the registered version answers through `pyfunc.predict`, for the scorable texts."""
    uri, version = registry
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    scorable = corpus[[isinstance(t, str) and t.strip() != "" for t in corpus["text"]]]
    answers = model.predict(scorable[["text"]].reset_index(drop=True))
    answers.index = scorable["id"].to_numpy()
    return answers


def write_input(corpus: pd.DataFrame, fmt: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path = folder / "reviews.csv"
        corpus.to_csv(path, index=False)
    elif fmt == "parquet":
        path = folder / "reviews"  # a folder of two Parquet files
        path.mkdir()
        half = len(corpus) // 2
        corpus.iloc[:half].to_parquet(path / "a.parquet")
        corpus.iloc[half:].to_parquet(path / "b.parquet")
    else:
        path = folder / "reviews.jsonl"
        corpus.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def check_output(output: Path, corpus, expected, version: str, fmt: str = "parquet") -> None:
    """Row by row: exact labels and known terms, confidences within 1e-9, skip reasons."""
    out = pd.read_parquet(output).astype({"id": "int64"}).set_index("id").sort_index()
    assert len(out) == len(corpus)
    # The input's columns first (Spark's JSON reader orders them by name), then the answer.
    assert set(out.columns[:2]) == {"text", "stars"}
    assert list(out.columns[2:]) == [
        "sentiment", "confidence", "known_terms", "model_version", "skip_reason"
    ]  # fmt: skip
    reasons = dict(BAD.values())
    if fmt == "csv":
        reasons[""] = NULL  # CSV has no empty string: an empty field is read as null
    for row in corpus.itertuples():
        got = out.loc[row.id]
        if row.id in expected.index:
            want = expected.loc[row.id]
            assert got["text"] == row.text
            assert got["sentiment"] == want["sentiment"], row.id
            assert abs(got["confidence"] - want["confidence"]) <= 1e-9, row.id
            assert got["known_terms"] == want["known_terms"], row.id
            assert got["model_version"] == f"v{version}"
            assert got["skip_reason"] is None or pd.isna(got["skip_reason"])
        else:
            assert pd.isna(got["sentiment"]) and pd.isna(got["confidence"])
            assert pd.isna(got["model_version"])
            text = row.text if isinstance(row.text, str) else None  # pandas reads None as NaN
            assert got["skip_reason"] == reasons[text], row.id


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if "incomplete" in p.name or "replaced" in p.name
    )


SCORED = "text string, sentiment string, skip_reason string"  # a scored frame's least columns


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_each_format_scores_as_pyfunc_predict_does(
    spark, registry, corpus, expected, fmt, tmp_path
):
    uri, version = registry
    source = write_input(corpus, fmt, tmp_path / "in")
    output = tmp_path / "scored"
    result = batch_score.score(spark, Job(str(source), str(output)))

    check_output(output, corpus, expected, version, fmt)
    skipped = len(BAD)
    assert (result.rows_read, result.rows_skipped) == (len(corpus), skipped)
    assert result.rows_scored == len(expected)
    assert result.model_version == f"v{version}"
    assert not leftovers(tmp_path)

    lineage = json.loads((output / LINEAGE_FILE).read_text())
    assert lineage["run_id"] == result.run_id
    assert lineage["model_version"] == f"v{version}"
    assert lineage["model_uri"] == f"models:/{MODEL_NAME}/{version}", "pinned to one version"
    assert lineage["tracking_uri"] == uri
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model_version"] == version
    assert run.data.params["input"] == str(source)
    assert run.data.tags["input_digest"] == lineage["input_digest"]
    metrics = run.data.metrics
    assert metrics["rows_read"] == len(corpus)
    assert metrics["rows_skipped"] == skipped
    assert metrics["rows_per_second"] > 0
    counts = expected["sentiment"].value_counts()
    assert metrics["label_positive"] == counts["positive"]
    assert metrics["label_negative"] == counts["negative"]


def test_the_workers_cannot_import_the_repository_yet_score(spark, registry, tmp_path):
    """If the model's `code_paths` were not shipped, these workers could not load it."""

    def probe(texts):  # nested: pickled by value, needs nothing from this repository
        import importlib.util
        import os
        import sys

        spec = importlib.util.find_spec("model")
        origin = spec.origin if spec and spec.origin else ""
        facts = json.dumps([os.getpid(), os.getcwd(), sys.path, origin])
        return texts.map(lambda _: facts)

    from pyspark.sql.functions import col, pandas_udf

    seen = spark.createDataFrame([("x",)], ["text"]).select(
        pandas_udf(probe, "string")(col("text"))
    )
    pid, cwd, path, origin = json.loads(seen.first()[0])
    assert pid != os.getpid(), "the probe ran in a Python worker, not in the driver"
    assert str(ROOT) not in path and cwd != str(ROOT)
    assert not origin.startswith(str(ROOT))

    source = tmp_path / "few.jsonl"
    source.write_text('{"text": "A superb, moving film."}\n{"text": "Dull and far too long."}\n')
    result = batch_score.score(spark, Job(str(source), str(tmp_path / "out")))
    assert result.rows_scored == 2


def test_a_column_that_is_not_text_is_skipped_row_by_row(spark, registry, tmp_path):
    source = tmp_path / "numbers.parquet"
    pd.DataFrame({"text": [1, None, 3]}, dtype="Int64").to_parquet(source)
    result = batch_score.score(spark, Job(str(source), str(tmp_path / "out")))
    out = pd.read_parquet(tmp_path / "out")
    assert sorted(out["skip_reason"]) == [NULL, *["Input text must be a string, not bigint."] * 2]
    assert out["sentiment"].isna().all()
    assert (result.rows_scored, result.rows_skipped) == (0, 3)


def test_columns_named_like_the_answer_keep_their_values_under_a_prefix(spark, registry, tmp_path):
    source = tmp_path / "kaggle.csv"
    pd.DataFrame(
        {"review": ["Loved it, a masterpiece.", "Awful."], "sentiment": ["positive", "negative"]}
    ).to_csv(source, index=False)
    batch_score.score(spark, Job(str(source), str(tmp_path / "out"), text_column="review"))
    out = pd.read_parquet(tmp_path / "out")
    assert list(out["input_sentiment"]) == ["positive", "negative"]
    assert set(out["sentiment"]) <= {"positive", "negative"} and out["sentiment"].notna().all()


def _corrupt_parquet(folder: Path) -> Path:
    path = folder / "broken.parquet"
    path.write_bytes(b"this is not parquet" * 10)
    return path


def _reviews_csv(folder: Path) -> Path:
    path = folder / "reviews.csv"
    pd.DataFrame({"review": ["Fine."]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("make_input", "model_uri", "sentence"),
    [
        (lambda d: d / "missing.csv", None, "Input not found: "),
        (_reviews_csv, None, "Column 'text' is not in "),
        (_corrupt_parquet, None, "Cannot read "),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", None, "Cannot tell"),
        (_reviews_csv, f"models:/{MODEL_NAME}@nowhere", "does not resolve"),
        (_reviews_csv, f"models:/{MODEL_NAME}/99", "does not resolve"),
        (_reviews_csv, "models:/NoSuchModel@production", "does not resolve"),
    ],
    ids=["missing", "no-column", "unreadable", "unknown-format", "alias", "version", "name"],
)
def test_bad_inputs_stop_with_one_sentence_and_write_nothing(
    spark, registry, tmp_path, make_input, model_uri, sentence
):
    source = make_input(tmp_path)
    text_column = "review" if "does not resolve" in sentence else "text"
    job = Job(str(source), str(tmp_path / "out"), text_column=text_column)
    if model_uri:
        job = Job(job.input, job.output, text_column, model_uri)
    with pytest.raises(BatchError) as raised:
        batch_score.score(spark, job)
    message = str(raised.value)
    assert sentence in message
    assert "\n" not in message and message.endswith(".")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_an_existing_output_is_refused_unless_overwrite(spark, registry, tmp_path):
    source = tmp_path / "few.jsonl"
    source.write_text('{"text": "A superb film."}\n')
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("someone's data")
    with pytest.raises(BatchError, match="already exists: pass overwrite=true"):
        batch_score.score(spark, Job(str(source), str(output)))
    assert (output / "keep.txt").read_text() == "someone's data"

    batch_score.score(spark, Job(str(source), str(output), overwrite=True))
    assert not (output / "keep.txt").exists()
    assert len(pd.read_parquet(output)) == 1 and not leftovers(tmp_path)


def test_a_job_that_fails_while_scoring_leaves_no_output(spark, registry, tmp_path):
    uri, _ = registry
    broken = register_broken_version(uri, kind="raises")
    source = tmp_path / "few.jsonl"
    source.write_text('{"text": "A superb film."}\n{"text": "Dreadful."}\n')
    job = Job(str(source), str(tmp_path / "out"), model_uri=f"models:/{MODEL_NAME}/{broken}")
    with pytest.raises(BatchError, match="failed while scoring"):
        batch_score.score(spark, job)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_mlflow_run_batch_score_as_a_user_types_it(registry, corpus, expected, tmp_path):
    uri, version = registry
    source = write_input(corpus, "jsonl", tmp_path / "in")
    output = tmp_path / "scored"
    done = run_training(
        uri, f"input={source}", f"output={output}", "master=local[2]", entry="batch_score"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows/s" in done.stdout
    check_output(output, corpus, expected, version)
    run_id = json.loads((output / LINEAGE_FILE).read_text())["run_id"]
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params["model_version"] == version
    assert run.data.params["model_uri"] == f"models:/{MODEL_NAME}@production"
    assert run.data.metrics["rows_scored"] == len(expected)
    assert math.isclose(
        run.data.metrics["label_positive"] / len(expected),
        (expected["sentiment"] == "positive").mean(),
    )

    again = run_training(uri, f"input={source}", f"output={output}", entry="batch_score")
    assert again.returncode != 0  # `mlflow run` reports the entry point's exit status 2 as 1
    assert "already exists: pass overwrite=true" in again.stderr


def scored_and_an_output(spark, tmp_path: Path, kept: str):
    """A scored frame's least columns, the file system, and an output folder holding ``kept``."""
    frame = spark.createDataFrame([("x", "positive", "")], SCORED)
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text(kept)
    return frame, batch_score._Files(spark), output


def test_an_output_that_appears_during_the_job_is_not_written_into(spark, registry, tmp_path):
    """score() checked before the job; the move checks again: a move onto a folder that
    exists now would put the result inside it."""
    frame, fs, output = scored_and_an_output(spark, tmp_path, "someone's data")
    with pytest.raises(BatchError, match="already exists"):
        batch_score.write(spark, fs, frame, str(output), False, {})
    assert [p.name for p in output.iterdir()] == ["keep.txt"] and not leftovers(tmp_path)


def test_an_overwrite_whose_move_fails_keeps_the_previous_output(
    spark, registry, tmp_path, monkeypatch
):
    frame, fs, output = scored_and_an_output(spark, tmp_path, "the previous output")
    rename = fs.rename

    def refused(source, target):  # the store refuses to move the new output into place
        return False if ".incomplete-" in source else rename(source, target)

    monkeypatch.setattr(fs, "rename", refused)
    with pytest.raises(BatchError, match="Could not move the finished output"):
        batch_score.write(spark, fs, frame, str(output), True, {})
    assert (output / "keep.txt").read_text() == "the previous output"
    assert not leftovers(tmp_path)
