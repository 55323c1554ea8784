import pandas as pd
import pytest

from pipelines.data import fingerprint, load_reviews, split
from pipelines.errors import DataError


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
    for part, name, text in [
        ("train", "pos", "A joy."),
        ("train", "neg", "A bore."),
        ("test", "pos", "Superb."),
        ("train", "unsup", "No label here."),
    ]:
        (root / part / name).mkdir(parents=True)
        (root / part / name / "0_7.txt").write_text(text)
    frame = load_reviews(root)
    assert sorted(zip(frame["text"], frame["label"], strict=True)) == [
        ("A bore.", 0),
        ("A joy.", 1),
        ("Superb.", 1),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Data file not found"),
        ("review,stars\nfine,5\n", "needs columns 'review' and 'sentiment'"),
        ("review,sentiment\nfine,meh\nbad,negative\n", "Unknown sentiment labels"),
        ("review,sentiment\n", "has no reviews"),
        ("review,sentiment\ngood,positive\nnice,positive\n", "at least 6 positive and 6 negative"),
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


def write_reviews(path, labels: list[str]) -> None:
    pd.DataFrame(
        {"review": [f"review number {i}" for i in range(len(labels))], "sentiment": labels}
    ).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("positive", "negative"),
    [(2, 1), (20, 1), (5, 5), (6, 5)],
    ids=["three-reviews", "one-negative", "five-each", "five-negative"],
)
def test_too_few_reviews_per_class_is_a_data_error_that_says_what_is_needed(
    tmp_path, positive, negative
):
    path = tmp_path / "tiny.csv"
    write_reviews(path, ["positive"] * positive + ["negative"] * negative)
    with pytest.raises(DataError) as error:
        split(load_reviews(path))
    message = str(error.value)
    assert "at least 6 positive and 6 negative reviews" in message
    assert f"found {positive} positive and {negative} negative" in message
    assert "\n" not in message


def test_six_reviews_per_class_is_enough_for_every_split_to_hold_both(tmp_path):
    path = tmp_path / "small.csv"
    write_reviews(path, ["positive"] * 6 + ["negative"] * 40)
    for seed in range(20):
        parts = split(load_reviews(path), seed=seed)
        assert all(set(part["label"]) == {0, 1} for part in (parts.train, parts.val, parts.test))


def test_a_sample_too_small_to_split_is_a_data_error():
    with pytest.raises(DataError, match="max_rows=5 is too small"):
        load_reviews(max_rows=5)
    with pytest.raises(DataError, match="max_rows=1 is too small"):
        load_reviews(max_rows=1)


@pytest.mark.parametrize(
    ("positive", "negative"),
    [
        ("1.0", "0.0"),
        ("1", "0"),
        (" POS ", "neg"),
        ("Positive", " NEGATIVE\t"),
        ("1.00", "0.000"),
    ],
)
def test_labels_are_accepted_as_numbers_or_words_in_any_case(tmp_path, positive, negative):
    path = tmp_path / "reviews.csv"
    pd.DataFrame(
        {"text": ["a joy", "a bore", "superb"], "label": [positive, negative, positive]}
    ).to_csv(path, index=False)
    assert load_reviews(path)["label"].tolist() == [1, 0, 1]


def test_numeric_label_column_with_floats_is_accepted(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,sentiment\ngreat,1.0\nawful,0.0\nfine,1.0\n")
    assert load_reviews(path)["label"].tolist() == [1, 0, 1]


@pytest.mark.parametrize("label", ["2", "0.5", "-1", "yes", "nan"])
def test_other_labels_are_still_refused(tmp_path, label):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["a joy", "a bore"], "label": ["positive", label]}).to_csv(
        path, index=False
    )
    with pytest.raises(DataError, match="Unknown sentiment labels"):
        load_reviews(path)


def test_fingerprint_covers_every_row_and_the_order():
    frame = load_reviews(max_rows=0)
    digest = fingerprint(frame)
    assert digest == fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[len(frame) - 1, "text"] += " (edited)"
    assert fingerprint(changed) != digest  # past the first 10,000 rows MLflow's digest reads
    relabelled = frame.copy()
    relabelled.loc[len(frame) - 1, "label"] ^= 1
    assert fingerprint(relabelled) != digest
    assert fingerprint(frame.iloc[::-1].reset_index(drop=True)) != digest
