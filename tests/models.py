"""Log and register real model versions quickly, for tests that need a registry with models."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import joblib
import mlflow
import pandas
from mlflow import MlflowClient
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from model.names import ALIAS, MODEL_NAME
from model.preprocess import clean_text
from model.signature import INPUT_EXAMPLE, SIGNATURE
from monitoring import reference
from pipelines.data import load_reviews

ROOT = Path(__file__).resolve().parents[1]
NAME = MODEL_NAME

# A model that loads and answers in the right shape but calls every review positive:
# exactly what the gateway's smoke test must refuse to switch to.
_ALWAYS_POSITIVE = """
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class AlwaysPositive(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"sentiment": ["positive"] * len(model_input),
                             "confidence": [0.99] * len(model_input)})


set_model(AlwaysPositive())
"""


# A model whose every prediction raises, and one that answers with the wrong columns.
_RAISES = """
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class Raises(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        raise RuntimeError("this version cannot score anything")


set_model(Raises())
"""

_WRONG_COLUMNS = """
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class WrongColumns(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"label": [1] * len(model_input), "score": [0.9] * len(model_input)})


set_model(WrongColumns())
"""

BROKEN = {"always-positive": _ALWAYS_POSITIVE, "raises": _RAISES, "wrong-columns": _WRONG_COLUMNS}


# Given explicitly, so that logging does not load the model to infer them (6 s each): what
# a trained model declares, the direct pins of requirements/model.in.
REQUIREMENTS = [
    line
    for line in (ROOT / "requirements" / "model.in").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


@cache
def fitted_pipeline_path(sample: int = 0) -> Path:
    """A TF-IDF + logistic regression pipeline fitted on 2,000 packaged reviews, saved once.

    Each ``sample`` draws other reviews, so versions of different samples answer with
    different confidences: a test can tell from an answer which version produced it."""
    reviews = load_reviews(max_rows=2000, seed=42 + sample)
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
    pipeline.fit([clean_text(text) for text in reviews["text"]], reviews["label"])
    path = Path(tempfile.mkdtemp(prefix="sentiment-pipeline-")) / "pipeline.joblib"
    joblib.dump(pipeline, path)
    return path


@cache
def reference_paths(sample: int = 0) -> dict[str, str]:
    """The monitoring reference of ``fitted_pipeline_path(sample)``, as training logs it: on
    1,000 packaged reviews it was not fitted on (its stand-in for a validation split), with
    its accuracy on 1,000 others (its test split; ``held_out_reviews`` are further ones)."""
    held_out = held_out_reviews(sample).head(2000)
    val, test = held_out.iloc[:1000], held_out.iloc[1000:]
    folder = Path(tempfile.mkdtemp(prefix="sentiment-reference-"))
    pipeline = joblib.load(fitted_pipeline_path(sample))
    accuracy = float(
        (pipeline.predict([clean_text(t) for t in test["text"]]) == test["label"]).mean()
    )
    return reference.write(folder, pipeline, val["text"], val["label"], accuracy)


@cache
def held_out_reviews(sample: int = 0) -> pandas.DataFrame:
    """Packaged reviews that ``fitted_pipeline_path(sample)`` was not fitted on; the first
    2,000 make its reference (``reference_paths``), the rest are new to it."""
    trained = set(load_reviews(max_rows=2000, seed=42 + sample)["text"])
    others = load_reviews(max_rows=8000, seed=1042 + sample)
    return others[~others["text"].isin(trained)].reset_index(drop=True)


def register_version(
    tracking_uri: str,
    *,
    alias: bool = False,
    tags: dict | None = None,
    sample: int = 0,
    with_reference: bool = False,
) -> str:
    """Log the real SentimentModel (fitted on ``sample``), register it, return its version.
    ``with_reference``: with the monitoring reference inside, as training logs it."""
    _use(tracking_uri)
    artifacts = {"pipeline": str(fitted_pipeline_path(sample))}
    if with_reference:
        artifacts |= reference_paths(sample)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(ROOT / "model" / "sentiment_model.py"),
            artifacts=artifacts,
            code_paths=[str(ROOT / "model")],
            signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=REQUIREMENTS,
        )
    return _register(tracking_uri, info.model_uri, alias, tags)


def register_broken_version(
    tracking_uri: str, *, alias: bool = False, kind: str = "always-positive"
) -> str:
    """Register a version that loads and serves but must never get traffic: by default one
    that answers "positive" to everything; see BROKEN for the other kinds."""
    _use(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / f"{kind.replace('-', '_')}.py"
        code.write_text(BROKEN[kind])
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                signature=SIGNATURE,
                input_example=INPUT_EXAMPLE,
                pip_requirements=REQUIREMENTS,
            )
    return _register(tracking_uri, info.model_uri, alias, None)


def promote(tracking_uri: str, version: str) -> None:
    MlflowClient(tracking_uri).set_registered_model_alias(NAME, ALIAS, version)


def _register(tracking_uri: str, model_uri: str, alias: bool, tags: dict | None) -> str:
    version = mlflow.register_model(model_uri, NAME, tags=tags).version
    if alias:
        promote(tracking_uri, version)
    return str(version)


# Versions that answer 200 with something other than rows: a column-oriented dict, a scalar.
_DICT = """
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class Dict(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        n = len(model_input)
        return {"sentiment": ["positive"] * n, "confidence": [0.9] * n}


set_model(Dict())
"""

_SCALAR = """
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class Scalar(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return 0.5


set_model(Scalar())
"""

BROKEN.update({"dict": _DICT, "scalar": _SCALAR})


def confidences(tracking_uri: str, version: str, texts: list[str]) -> dict[str, float]:
    """What ``version`` answers for each text, loaded in this process (not through a server)."""
    _use(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    rows = model.predict(pandas.DataFrame({"text": texts}))
    return dict(zip(texts, rows["confidence"].astype(float), strict=True))


def _use(tracking_uri: str) -> None:
    """Point this process's MLflow at ``tracking_uri`` and its Default experiment: a test
    that ran before may have left another server's experiment active."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("Default")
