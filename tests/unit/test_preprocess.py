import hashlib

import pytest

from model.ngrams import SentenceNgrams
from model.preprocess import MAX_CLEANED_CHARS, clean_text, stopwords
from pipelines.data import load_reviews

# sha256 of the cleaned packaged reviews, one per line in load_reviews() order. Cleaning is what
# every logged model learned from: change this only on purpose, with a new model to follow.
PACKAGED_CLEANED_SHA256 = "0f55f7a6de77ee56444141f9f98798798e45ccfa31dce70ee14a7ac91ec9e7aa"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GREAT Movie", "great movie"),
        ("a<br /><br />fine <b>film</b>", "a | fine film"),
        ("see https://example.com/x?y=1 and www.imdb.com now", "see and now"),
        ("mail me at someone@example.org please", "mail me at please"),
        ("10 out of 10, 2024's best!!!", "out of s best"),
        ("Wow... really?! (yes)", "wow | really | yes"),
        # Function words stay: "should have been", "so much better than" carry sentiment.
        ("the movie is on the shelf", "the movie is on the shelf"),
    ],
    ids=["lowercase", "html", "urls", "email", "numbers", "punctuation", "function-words"],
)
def test_each_cleaning_step(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not good", "not not_good"),
        ("no fun, nor wit", "no not_fun nor not_wit"),
        ("I didn't like it", "i did not not_like it"),
        ("It wasn’t funny", "it was not not_funny"),
        ("couldn't care less", "could not not_care not_less"),
        # The scope is three content words (function words pass unmarked and do not count)
        # and ends with the clause.
        ("not a good fun movie at all", "not a not_good not_fun not_movie at all"),
        ("not good, but fun", "not not_good but fun"),
    ],
)
def test_negations_survive_and_mark_their_scope(raw, expected):
    assert clean_text(raw) == expected


def test_function_word_list_is_shipped_without_negations():
    words = stopwords()
    assert {"the", "and", "is", "a"} <= words
    assert not words & {"not", "no", "nor", "don't", "isn't", "wasn't", "didn't"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Great cast. Weak plot!", "great cast | weak plot"),
        ("Great cast<br /><br />weak plot", "great cast | weak plot"),
        ("a <i>great</i> cast", "a great cast"),  # inline tags do not end a sentence
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # int() refuses more than 4,300 digits; html.unescape converts references with it.
        ("fine &#" + "1" * 4998, "fine"),
        ("&#" + "0" * 4990 + "103;ood", "good"),  # &#103; is "g"
        ("&#x" + "0" * 4990 + "67;ood", "good"),
        ("&#x" + "f" * 4990 + ";fine", "fine"),  # past U+10FFFF: U+FFFD, then the word
        ("&#99999999;fine &#0000000103;ood &#X00000000067ood", "fine good good"),
    ],
)
def test_long_numeric_character_references_decode_like_short_ones(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # An e-mail is a word with an "@" after its first character and a "." at least two
        # characters after that, not at the end of the word; the rest keeps its letters.
        ("mail xx@yy.zz, @a.bc zz@.bc b@b.c q@qq.d rr@b@c.de", "mail a | bc zz | bc"),
        (
            "<p>one<br/>two< br >three<hr class='x'>four <b>five</b> < six > <<seven> eight<",
            "one | two | three | four five eight",
        ),
        ("<<b>bold> <i>and</i> <<<", "bold and"),
        ("great<brr>film<bring>", "great film"),
    ],
    ids=["email", "break-tags", "nested-tags", "not-break-tags"],
)
def test_linear_time_patterns_match_what_the_backtracking_ones_matched(raw, expected):
    assert clean_text(raw) == expected


def test_packaged_reviews_clean_as_they_always_have():
    """Linear-time patterns and the length cap changed nothing for any real review."""
    texts = load_reviews()["text"].tolist()
    assert max(map(len, texts)) < MAX_CLEANED_CHARS
    cleaned = "\n".join(clean_text(text) for text in texts)
    assert hashlib.sha256(cleaned.encode()).hexdigest() == PACKAGED_CLEANED_SHA256


def test_text_beyond_the_cap_is_ignored_and_text_up_to_it_is_read():
    filler = "fine " * (MAX_CLEANED_CHARS // 5)
    assert len(filler) == MAX_CLEANED_CHARS
    assert clean_text(filler[:-5] + "awful").endswith("awful")
    assert "awful" not in clean_text(filler + "awful")
    assert clean_text(filler + "awful") == clean_text(filler)


@pytest.mark.parametrize(
    "raw", ["", "   \n\t", "!!! ... ???", "12345", "映画は素晴らしい", None, 3.5, ["x"]]
)
def test_degenerate_input_cleans_to_empty_without_raising(raw):
    assert clean_text(raw) == ""


def test_batch_of_reviews_is_cleaned_independently():
    reviews = ["Loved it!", "Hated it.", ""]
    assert [clean_text(r) for r in reviews] == ["loved it", "hated it", ""]
