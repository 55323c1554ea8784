import pytest

from model.preprocess import clean_text, stopwords


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GREAT Movie", "great movie"),
        ("a<br /><br />fine <b>film</b>", "fine film"),
        ("see https://example.com/x?y=1 and www.imdb.com now", "see"),
        ("mail me at someone@example.org please", "mail please"),
        ("10 out of 10, 2024's best!!!", "best"),
        ("Wow... really?! (yes)", "wow really yes"),
        ("the movie is on the shelf", "movie shelf"),
    ],
    ids=["lowercase", "html", "urls", "email", "numbers", "punctuation", "stopwords"],
)
def test_each_cleaning_step(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not good", "not good"),
        ("no fun, nor wit", "no fun nor wit"),
        ("I didn't like it", "not like"),
        ("It wasn’t funny", "not funny"),
        ("couldn't care less", "could not care less"),
    ],
)
def test_negations_survive(raw, expected):
    assert clean_text(raw) == expected


def test_stopword_list_is_shipped_without_negations():
    words = stopwords()
    assert {"the", "and", "is", "a"} <= words
    assert not words & {"not", "no", "nor", "don't", "isn't", "wasn't", "didn't"}


def test_html_entities_are_decoded_before_cleaning():
    assert clean_text("fun &amp; games &lt;3") == "fun games"


@pytest.mark.parametrize("raw", ["", "   \n\t", "!!! ... ???", "12345", "映画は素晴らしい", None, 3.5, ["x"]])
def test_degenerate_input_cleans_to_empty_without_raising(raw):
    assert clean_text(raw) == ""


def test_batch_of_reviews_is_cleaned_independently():
    reviews = ["Loved it!", "Hated it.", ""]
    assert [clean_text(r) for r in reviews] == ["loved", "hated", ""]
