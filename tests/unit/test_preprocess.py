import pytest

from model.ngrams import SentenceNgrams
from model.preprocess import clean_text, stopwords


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GREAT Movie", "great movie"),
        ("a<br /><br />fine <b>film</b>", "fine film"),
        ("see https://example.com/x?y=1 and www.imdb.com now", "see"),
        ("mail me at someone@example.org please", "mail please"),
        ("10 out of 10, 2024's best!!!", "best"),
        ("Wow... really?! (yes)", "wow | really | yes"),
        ("the movie is on the shelf", "movie shelf"),
    ],
    ids=["lowercase", "html", "urls", "email", "numbers", "punctuation", "stopwords"],
)
def test_each_cleaning_step(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not good", "not not_good"),
        ("no fun, nor wit", "no not_fun nor not_wit"),
        ("I didn't like it", "not not_like"),
        ("It wasn’t funny", "not not_funny"),
        ("couldn't care less", "could not not_care not_less"),
        # The scope is three words (stopwords do not count) and ends with the clause.
        ("not a good fun movie at all", "not not_good not_fun not_movie all"),
        ("not good, but fun", "not not_good but fun"),
    ],
)
def test_negations_survive_and_mark_their_scope(raw, expected):
    assert clean_text(raw) == expected


def test_stopword_list_is_shipped_without_negations():
    words = stopwords()
    assert {"the", "and", "is", "a"} <= words
    assert not words & {"not", "no", "nor", "don't", "isn't", "wasn't", "didn't"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Great cast. Weak plot!", "great cast | weak plot"),
        ("Great cast<br /><br />weak plot", "great cast | weak plot"),
        ("a <i>great</i> cast", "great cast"),  # inline tags do not end a sentence
        ("...Great. . .", "great"),  # no empty sentences, no break at either end
    ],
)
def test_sentences_are_separated_so_ngrams_stay_inside_them(raw, expected):
    assert clean_text(raw) == expected


def test_sentence_ngrams_never_cross_a_break():
    grams = SentenceNgrams((1, 2))(clean_text("Great cast. Weak plot!"))
    assert grams == ["great", "cast", "great cast", "weak", "plot", "weak plot"]


def test_html_entities_are_decoded_before_cleaning():
    assert clean_text("fun &amp; games &lt;3") == "fun games"


@pytest.mark.parametrize("raw", ["", "   \n\t", "!!! ... ???", "12345", "映画は素晴らしい", None, 3.5, ["x"]])
def test_degenerate_input_cleans_to_empty_without_raising(raw):
    assert clean_text(raw) == ""


def test_batch_of_reviews_is_cleaned_independently():
    reviews = ["Loved it!", "Hated it.", ""]
    assert [clean_text(r) for r in reviews] == ["loved", "hated", ""]
