"""The pyfunc's predict, on a small model fitted here with the default preset."""

import json
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc import scoring_server
from scipy import sparse
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from model.names import LABELS
from model.ngrams import SentenceNgrams
from model.preprocess import clean_text
from model.sentiment_model import SentimentModel, positive_probability
from model.signature import INPUT_EXAMPLE, SIGNATURE
from pipelines.data import load_reviews
from pipelines.features import PRESETS, fit_pipeline, slim
from tests.fitted import fitted


@pytest.fixture(scope="module")
def model(pytestconfig):
    frame = load_reviews(max_rows=3000)
    texts, labels = [clean_text(t) for t in frame["text"]], frame["label"].to_numpy()
    pipeline = fitted(
        pytestconfig, "model-3000", lambda t, y: fit_pipeline(PRESETS["best"], t, y), texts, labels
    )
    return SentimentModel(slim(pipeline))


@pytest.fixture(scope="module")
def served(model, tmp_path_factory):
    """The same pipeline saved and loaded as MLflow serves it (model code, signature)."""
    tmp = tmp_path_factory.mktemp("pyfunc")
    joblib.dump(model.pipeline, tmp / "pipeline.joblib")
    root = Path(__file__).resolve().parents[2]
    mlflow.pyfunc.save_model(
        tmp / "model",
        python_model=str(root / "model" / "sentiment_model.py"),
        artifacts={"pipeline": str(tmp / "pipeline.joblib")},
        code_paths=[str(root / "model")],
        signature=SIGNATURE,
        input_example=INPUT_EXAMPLE,
        pip_requirements=[],
    )
    return mlflow.pyfunc.load_model(str(tmp / "model"))


def invoke(served, body: dict):
    """What the scoring server's /invocations answers, without its HTTP layer."""
    schema = served.metadata.get_input_schema()
    return scoring_server.invocations(json.dumps(body), "application/json", served, schema)


def test_predicts_the_input_example(model):
    out = model.predict(None, INPUT_EXAMPLE)
    assert list(out.columns) == ["sentiment", "confidence", "known_terms", "known_term_ratio"]
    assert out["sentiment"].tolist() == ["positive", "negative"]
    assert (out["confidence"] > 0.9).all() and (out["confidence"] <= 1.0).all()
    assert (out["known_terms"] > 0).all()


def prior(model) -> str:
    """The label the classifier favours when it reads nothing: its answer to a row of no terms."""
    nothing = sparse.csr_matrix((1, len(model.pipeline[0].vocabulary_)))
    return LABELS[int(positive_probability(model.pipeline[-1], nothing)[0] >= 0.5)]


@pytest.mark.parametrize(
    "text",
    ["", "   ", "!!!", "12 34", "这部电影很好", "映画は素晴らしい", "😀🎬👍", "qwzx vbnmk plkjh"],
)
def test_text_with_no_known_terms_is_answered_with_the_prior_at_confidence_one_half(model, text):
    out = model.predict(None, pd.DataFrame({"text": [text, "A wonderful, moving film."]}))
    assert out["known_terms"].tolist()[0] == 0
    assert out["known_term_ratio"].tolist()[0] == 0.0
    assert out["sentiment"].iloc[0] == prior(model)
    assert out["confidence"].iloc[0] == 0.5
    # The row next to it is read as usual.
    assert out["known_terms"].iloc[1] > 0
    # Calibrated: four words earn less than a review would, still clearly more than a guess.
    assert out["sentiment"].iloc[1] == "positive" and out["confidence"].iloc[1] > 0.75


def test_known_terms_counts_the_vocabulary_features_of_the_text(model):
    texts = ["Ce film est magnifique", "A wonderful, moving film.", "Dull and boring, a waste."]
    out = model.predict(None, pd.DataFrame({"text": texts}))
    vectorizer = model.pipeline.named_steps["tfidf"]
    expected = [
        len(set(vectorizer.build_analyzer()(clean_text(text))) & vectorizer.vocabulary_.keys())
        for text in texts
    ]
    assert out["known_terms"].tolist() == expected
    assert out["known_terms"].dtype == np.int64
    assert min(expected) > 0


RATIO_TEXTS = [
    "A wonderful, moving film.",
    "Ce film est magnifique, vraiment un chef-d'oeuvre",
    "Dull and boring. A waste of a good cast! <br /><br />Flibbertigibbet zyzzyva.",
    "这部电影很好 great",
    "",
    "!!! 12 34",
]


def expected_ratio(vectorizer, cleaned: str) -> float:
    """The definition: distinct single words (as the vectorizer tokenizes them) that its
    vocabulary holds, over all distinct single words; 0 without words."""
    single = clone(vectorizer).set_params(ngram_range=(1, 1))
    if isinstance(vectorizer.analyzer, SentenceNgrams):
        single.set_params(analyzer=SentenceNgrams((1, 1)))
    words = set(single.build_analyzer()(cleaned))
    return len(words & vectorizer.vocabulary_.keys()) / len(words) if words else 0.0


def test_known_term_ratio_is_the_share_of_distinct_words_in_the_vocabulary(model):
    out = model.predict(None, pd.DataFrame({"text": RATIO_TEXTS}))
    vectorizer = model.pipeline.named_steps["tfidf"]
    expected = [expected_ratio(vectorizer, clean_text(text)) for text in RATIO_TEXTS]
    assert out["known_term_ratio"].tolist() == expected
    assert expected[0] == 1.0 and 0 < expected[1] < 0.5 and 0 < expected[2] < 1
    assert expected[4:] == [0.0, 0.0]


def test_known_term_ratio_with_the_default_word_analyzer():
    # The test models' pipeline: scikit-learn's own tokenizer, unigrams only.
    frame = load_reviews(max_rows=300)
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
    pipeline.fit([clean_text(t) for t in frame["text"]], frame["label"])
    out = SentimentModel(pipeline).predict(None, pd.DataFrame({"text": RATIO_TEXTS}))
    expected = [expected_ratio(pipeline[0], clean_text(text)) for text in RATIO_TEXTS]
    assert out["known_term_ratio"].tolist() == expected and 0 < expected[2] < 1


@pytest.mark.parametrize("explain", [False, True])
def test_an_empty_frame_gets_an_empty_answer(model, explain):
    out = model.predict(
        None, pd.DataFrame({"text": pd.Series([], dtype=object)}), {"explain": explain}
    )
    expected = ["sentiment", "confidence", "known_terms", "known_term_ratio"]
    assert out.empty and list(out.columns) == expected + (["explanation"] if explain else [])
    assert out["confidence"].dtype == float and out["known_terms"].dtype == np.int64
    assert out["known_term_ratio"].dtype == float


@pytest.mark.parametrize(
    "body", [{"inputs": []}, {"dataframe_split": {"columns": ["text"], "data": []}}]
)
def test_the_scoring_server_answers_an_empty_request_with_no_predictions(served, body):
    response = invoke(served, body)
    assert (response.status, json.loads(response.response)) == (200, {"predictions": []})


def test_the_scoring_server_answers_known_terms_with_each_prediction(served, model):
    response = invoke(served, {"inputs": ["A wonderful, moving film.", "这部电影很好"]})
    assert response.status == 200
    read, unread = json.loads(response.response)["predictions"]
    assert read["sentiment"] == "positive" and read["confidence"] > 0.75
    assert isinstance(read["known_terms"], int) and read["known_terms"] > 0
    assert 0 < read["known_term_ratio"] <= 1
    assert unread == {
        "sentiment": prior(model),
        "confidence": 0.5,
        "known_terms": 0,
        "known_term_ratio": 0.0,
    }


def test_explain_names_the_terms_that_pushed_the_decision(model):
    out = model.predict(None, INPUT_EXAMPLE, params={"explain": True, "top_terms": 3})
    positive, negative = out["explanation"]
    assert 0 < len(positive) <= 3 and 0 < len(negative) <= 3
    assert positive[0]["weight"] > 0 and negative[0]["weight"] < 0
    assert all(set(item) == {"term", "weight"} for item in positive + negative)
    weights = [abs(item["weight"]) for item in positive]
    assert weights == sorted(weights, reverse=True)


def test_explain_on_text_with_no_known_terms_is_empty(model):
    out = model.predict(None, pd.DataFrame({"text": ["", "great"]}), params={"explain": True})
    assert out["explanation"].tolist()[0] == [] and out["known_terms"].tolist()[0] == 0
    assert out["explanation"].iloc[1][0]["term"] == "great"
    assert out["confidence"].iloc[0] == 0.5


def test_slim_drops_the_pruned_terms(model):
    assert not hasattr(model.pipeline.named_steps["tfidf"], "stop_words_")
