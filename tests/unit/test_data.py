import pandas as pd
import pytest

from pipelines.data import DataError, load_reviews, split


def test_packaged_data_is_the_deduplicated_imdb_reviews():
    frame = load_reviews()
    assert 24_000 < len(frame) <= 25_000
    assert frame["text"].is_unique
    assert set(frame["label"]) == {0, 1}
    assert abs(frame["label"].mean() - 0.5) < 0.01
    assert frame["text"].dtype == object


def test_max_rows_takes_a_stratified_sample():
    frame = load_reviews(max_rows=400)
    assert len(frame) == 400
    assert frame["label"].sum() == 200


def test_kaggle_csv(tmp_path):
    path = tmp_path / "IMDB Dataset.csv"
    pd.DataFrame(
        {
            "review": ["Great film!", "Awful, just awful.", "Great film!", "Loved it"],
            "sentiment": ["positive", "negative", "positive", "Positive "],
        }
    ).to_csv(path, index=False)
    frame = load_reviews(path)
    assert frame.to_dict("list") == {
        "text": ["Great film!", "Awful, just awful.", "Loved it"],
        "label": [1, 0, 1],
    }


def test_acl_imdb_folder(tmp_path):
    root = tmp_path / "aclImdb"
    for part, name, label, text in [
        ("train", "pos", 1, "A joy."),
        ("train", "neg", 0, "A bore."),
        ("test", "pos", 1, "Superb."),
        ("train", "unsup", None, "No label here."),
    ]:
        (root / part / name).mkdir(parents=True)
        (root / part / name / "0_7.txt").write_text(text)
    frame = load_reviews(root)
    assert sorted(zip(frame["text"], frame["label"])) == [("A bore.", 0), ("A joy.", 1), ("Superb.", 1)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Data file not found"),
        ("review,stars\nfine,5\n", "needs columns 'review' and 'sentiment'"),
        ("review,sentiment\nfine,meh\nbad,negative\n", "Unknown sentiment labels"),
        ("review,sentiment\n", "has no reviews"),
        ("review,sentiment\ngood,positive\nnice,positive\n", "both positive and negative"),
        ("", "not a readable CSV"),
    ],
    ids=["missing-file", "missing-columns", "unknown-labels", "empty", "one-class", "empty-file"],
)
def test_bad_data_stops_with_one_clear_sentence(tmp_path, content, message):
    path = tmp_path / "reviews.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_reviews(path)
    assert "\n" not in str(error.value)


def test_empty_acl_imdb_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="aclImdb layout"):
        load_reviews(tmp_path)


def test_split_is_70_15_15_stratified_and_reproducible():
    frame = load_reviews(max_rows=2000)
    parts = split(frame, seed=7)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (1400, 300, 300)
    for part in (parts.train, parts.val, parts.test):
        assert abs(part["label"].mean() - frame["label"].mean()) < 0.01
    again = split(frame, seed=7)
    assert again.test["text"].tolist() == parts.test["text"].tolist()
    assert not set(parts.train["text"]) & set(parts.test["text"])
