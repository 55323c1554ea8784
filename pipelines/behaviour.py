"""Behavioural tests of a sentiment model, in the style of CheckList (Ribeiro et al., 2020).

Accuracy on held-out reviews hides what a bag-of-n-grams model cannot do: these cases are
written from templates and small lexicons, each with the behaviour it expects, and grouped by
capability. Three kinds of test:

- MFT (minimum functionality): the text has a clear label;
- DIR (directional expectation): a change must not move P(positive) the wrong way by more
  than ``DIR_TOLERANCE``;
- INV (invariance): a change that does not alter the meaning keeps the label and moves
  P(positive) by at most ``INV_TOLERANCE``.

Every case is generated deterministically (products of lexicons, no sampling). The suite
scores any callable ``texts -> P(positive)``: a fitted pipeline over ``clean_text``
(``pipeline_scorer``) or a model's answers (``answers_scorer``). Training logs the pass rates as the
metrics ``behaviour_<capability>``.
"""

from __future__ import annotations

import argparse
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from model.names import LABELS
from model.preprocess import clean_text

Scorer = Callable[[list[str]], np.ndarray]
PROBES = Path(__file__).with_name("probes")
NEGATIVE, POSITIVE = 0, 1
# "Does not move P(positive) the wrong way" and "does not move it", up to this much: 0.05 is
# half CheckList's usual 0.1. At 0.0 the `best` model passes 35% of the intensifier cases.
DIR_TOLERANCE = 0.05
INV_TOLERANCE = 0.05


@dataclass(frozen=True)
class Capability:
    title: str
    test: str  # MFT, DIR or INV
    # The least pass rate the current `best` model must reach (tests/unit/test_behaviour.py):
    # a few points under what it measures, given next to each figure.
    threshold: float


# Thresholds: a few points under the pass rates of `best` fitted on the packaged training
# split and calibrated on validation (seed 42), given in each comment as best / seed. Since the
# sentence head and the kept function words (2026-12-07), short texts and other domains gained
# and negation and invariance lost: see docs/training.md, "Short texts and other domains".
CAPABILITIES = {
    # 62.5% / 64.5% (73.0% before); unigrams without negation scope: 33%. "It isn't a great
    # movie." reads as mixed praise, as it often is in a review.
    "negation": Capability("“not good” is negative, “not bad at all” positive", "MFT", 0.58),
    # 51.1% / 52.7%: chance. Every pair of clauses comes in both orders, so a model that
    # does not read order scores 50%; the threshold only catches a model that reads the
    # first clause.
    "contrast": Capability("the clause after “but” decides", "MFT", 0.45),
    # 66.1% / 54.2%: "extremely good" often scores lower than "good".
    "intensifiers": Capability("“very good” is no less positive than “good”", "DIR", 0.61),
    # 85.9% / 79.5% (96.8% before): a name moves a short text more, now that short texts are
    # read by the sentence head ("… with John Miller in it." 0.72, "… Mary Johnson …" 0.89).
    "invariance": Capability("names, numbers, punctuation, neutral words", "INV", 0.82),
    # 100% / 100%
    "short": Capability("one-sentence reviews, tweets, critics' one-liners", "MFT", 0.94),
    # 78.4% / 67.3% (66.3% before): a floor, not the measure, since the cases are
    # self-written. Most failures are complaints in no film critic's words ("The vacuum
    # cleaner came damaged."): P ≈ 0.55.
    "domains": Capability(
        "products, restaurants and services: one-liners outside films", "MFT", 0.74
    ),
}


@dataclass(frozen=True)
class Case:
    capability: str
    text: str
    # MFT: the expected label. DIR: the direction ``changed`` may not go against (POSITIVE:
    # P(positive) must not fall). INV: unused.
    expected: int | None = None
    changed: str | None = None  # DIR and INV: the text after the change


# Lexicons. Words chosen for a clear polarity in movie reviews.
THING = ["movie", "film", "acting", "story", "plot", "script"]
MOVIE = ["movie", "film", "show"]
GOOD = ["good", "great", "funny", "enjoyable", "interesting", "memorable", "impressive", "fun"]
# Negative words whose negation reads as praise ("not boring at all").
MILD_BAD = ["bad", "boring", "dull", "disappointing", "predictable", "slow", "forgettable"]
LIKE = ["enjoy", "like", "love", "recommend", "care for"]
POSITIVE_PARTS = [
    "a great cast",
    "beautiful photography",
    "a wonderful score",
    "some brilliant acting",
    "a clever premise",
]
NEGATIVE_PARTS = [
    "a boring plot",
    "a terrible script",
    "an awful ending",
    "some dreadful dialogue",
    "a dull story",
]
ASPECTS = [("acting", "story"), ("cast", "plot"), ("music", "script"), ("start", "ending")]
PRAISE = ["wonderful", "excellent", "superb", "great"]
BLAME = ["terrible", "boring", "awful", "weak"]
INTENSIFIER = ["very", "really", "extremely", "incredibly"]
MILD_GOOD = ["good", "funny", "enjoyable", "beautiful", "moving", "clever"]
MILD_NEGATIVE = ["bad", "boring", "dull", "silly", "slow", "predictable"]
STRONG_GOOD = ["brilliant", "wonderful", "superb", "delightful", "excellent", "gripping"]
STRONG_BAD = ["awful", "terrible", "boring", "dreadful", "pointless", "tedious"]
# The first name is the reference; every other one replaces it.
NAMES = [
    "John Miller",
    "Mary Johnson",
    "David Lee",
    "Sarah Brown",
    "Michael Davis",
    "Emma Wilson",
    "Ahmed Khan",
    "Maria Garcia",
]
NUMBERS = {"year": ["1994", "2003", "2011", "2019"], "minutes": ["90", "105", "120", "150"]}
NAMED = [
    ("{name} gives a wonderful performance in this {movie}.", POSITIVE),
    ("{name} is brilliant as the lead.", POSITIVE),
    ("I loved every scene with {name} in it.", POSITIVE),
    ("{name} makes this {movie} a joy to watch.", POSITIVE),
    ("{name} gives a terrible performance in this {movie}.", NEGATIVE),
    ("{name} is awful as the lead.", NEGATIVE),
    ("I hated every scene with {name} in it.", NEGATIVE),
    ("{name} makes this {movie} a chore to watch.", NEGATIVE),
]
NUMBERED = [
    "I saw it in {year} and loved every minute.",
    "Released in {year}, it is still a wonderful {movie}.",
    "I saw it in {year} and it was a waste of time.",
    "Released in {year}, it is still a dreadful {movie}.",
    "At {minutes} minutes it flies by, a delight.",
    "At {minutes} minutes it is a tedious slog.",
]
TWEETS = [
    ("Loved it!!! Go see it.", POSITIVE),
    ("Best night at the movies in ages.", POSITIVE),
    ("Two thumbs up.", POSITIVE),
    ("Instant classic.", POSITIVE),
    ("Pure joy, start to finish.", POSITIVE),
    ("A triumph.", POSITIVE),
    ("Total waste of time.", NEGATIVE),
    ("Walked out after an hour.", NEGATIVE),
    ("Save your money.", NEGATIVE),
    ("Avoid at all costs.", NEGATIVE),
    ("A complete mess.", NEGATIVE),
    ("Worst film of the year.", NEGATIVE),
]

# Outside films: products, restaurants and services, in words rare in movie reviews (stale,
# refund, leaking, spotless) and with no film vocabulary. Each noun takes every good and every
# bad phrase of its kind, so that only the phrase decides.
PRODUCTS = ["phone", "laptop", "charger", "headset", "kettle", "vacuum cleaner"]
WORKS = ["works perfectly", "is sturdy and well made", "was worth every penny", "does the job"]
FAILS = ["broke after a week", "stopped working after two days", "feels flimsy", "came damaged"]
DISHES = ["food", "pizza", "coffee", "soup", "pasta", "bread"]
TASTY = ["delicious", "fresh", "excellent"]
NASTY = ["cold", "stale", "bland"]
STAFF = ["waiter", "receptionist", "driver", "plumber"]
KIND = ["friendly", "helpful", "polite"]
UNKIND = ["rude", "unhelpful", "careless"]
SERVICES = ["delivery", "check-in", "customer support", "service"]
FAST = ["fast", "prompt", "excellent"]
SLOW = ["slow", "terrible", "disorganised"]
PLACES = [
    "hotel",
    "restaurant",
    "café",
    "airline",
    "delivery service",
    "repair shop",
    "dentist",
    "phone shop",
]
REVIEWS = [
    ("Fast delivery and the charger works perfectly.", POSITIVE),
    ("The hotel room was spotless and the staff were friendly.", POSITIVE),
    ("Great service, we will definitely come back.", POSITIVE),
    ("Best pizza in town, and the staff are lovely.", POSITIVE),
    ("The plumber was prompt, tidy and fairly priced.", POSITIVE),
    ("Support fixed my problem in five minutes.", POSITIVE),
    ("These headphones sound amazing for the price.", POSITIVE),
    ("Comfortable shoes, I wear them every day.", POSITIVE),
    ("The flight was on time and the crew were very kind.", POSITIVE),
    ("Lovely little café with excellent coffee.", POSITIVE),
    ("Battery lasts all day, very happy with this phone.", POSITIVE),
    ("Arrived a day early and well packed.", POSITIVE),
    ("The refund came through quickly, no questions asked.", POSITIVE),
    ("Friendly driver and a clean car.", POSITIVE),
    ("Delicious food at a fair price.", POSITIVE),
    ("Five stars, would buy again.", POSITIVE),
    ("The laptop is fast, light and quiet.", POSITIVE),
    ("Our waiter was attentive and the dessert was superb.", POSITIVE),
    ("The food was cold and the waiter was rude.", NEGATIVE),
    ("Not worth the money.", NEGATIVE),
    ("The battery died after two days.", NEGATIVE),
    ("The parcel arrived late and the box was crushed.", NEGATIVE),
    ("Overpriced, and the portions were tiny.", NEGATIVE),
    ("The bread was stale and the coffee tasted burnt.", NEGATIVE),
    ("The tap was still leaking after the plumber left.", NEGATIVE),
    ("Still waiting for my refund after a month.", NEGATIVE),
    ("The screen cracked the first time I dropped it.", NEGATIVE),
    ("Would not recommend this hotel to anyone.", NEGATIVE),
    ("The room was dirty and smelled of smoke.", NEGATIVE),
    ("Support kept me on hold for an hour.", NEGATIVE),
    ("Our flight was cancelled and nobody helped us.", NEGATIVE),
    ("The shoes fell apart after a month.", NEGATIVE),
    ("The headphones stopped charging within a week.", NEGATIVE),
    ("Never ordering from them again.", NEGATIVE),
    ("The laptop overheats and the fan is loud.", NEGATIVE),
    ("The charger broke on the second day.", NEGATIVE),
]


_A_VOWEL = re.compile(r"\b([Aa]) ([aeiou])")


def fill(template: str, **lexicons: Sequence) -> Iterator[str]:
    """Every text the template makes from the lexicons it names, first letter capitalised;
    a lexicon of tuples is read as ``{slot[0]}``, ``{slot[1]}``."""
    names = sorted(
        {f.split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    )
    for values in product(*(lexicons[name] for name in names)):
        text = _A_VOWEL.sub(r"\1n \2", template.format(**dict(zip(names, values, strict=True))))
        yield text[0].upper() + text[1:]


def _mft(capability: str, label: int, templates: Sequence[str], **lexicons) -> list[Case]:
    return [Case(capability, t, label) for tpl in templates for t in fill(tpl, **lexicons)]


def _probe(name: str, capability: str) -> list[Case]:
    """The model card's probe set of that name, as MFT cases (one set of texts, not two)."""
    probe = pd.read_csv(PROBES / f"{name}.csv")
    return [
        Case(capability, text, LABELS.index(label))
        for text, label in zip(probe["text"].tolist(), probe["label"].tolist(), strict=True)
    ]


def negation() -> list[Case]:
    name = "negation"
    return [
        *_mft(name, NEGATIVE, ["The {thing} was not {good}."], thing=THING, good=GOOD),
        *_mft(name, NEGATIVE, ["This {movie} is not {good} at all."], movie=MOVIE, good=GOOD),
        *_mft(name, NEGATIVE, ["It isn't a {good} {movie}."], movie=MOVIE[:2], good=GOOD),
        *_mft(name, NEGATIVE, ["I didn't {like} it.", "I did not {like} this film."], like=LIKE),
        *_mft(name, POSITIVE, ["Not {bad} at all."], bad=MILD_BAD),
        *_mft(name, POSITIVE, ["The {thing} was never {bad}."], thing=THING, bad=MILD_BAD),
        *_mft(
            name, POSITIVE, ["This {movie} is not {bad} in the least."], movie=MOVIE, bad=MILD_BAD
        ),
        *_mft(
            name,
            POSITIVE,
            [
                "I did not regret watching it.",
                "I was not disappointed.",
                "I wasn't bored for a minute.",
                "I don't regret a minute of it.",
            ],
        ),
        *_probe("negation", name),
    ]


def contrast() -> list[Case]:
    name = "contrast"
    parts = {"good": POSITIVE_PARTS, "bad": NEGATIVE_PARTS}
    clauses = {"pair": ASPECTS, "good": PRAISE, "bad": BLAME}
    return [
        *_mft(name, NEGATIVE, ["It has {good} but {bad}."], **parts),
        *_mft(name, POSITIVE, ["It has {bad} but {good}."], **parts),
        *_mft(name, NEGATIVE, ["The {pair[0]} is {good}, but the {pair[1]} is {bad}."], **clauses),
        *_mft(name, POSITIVE, ["The {pair[0]} is {bad}, but the {pair[1]} is {good}."], **clauses),
        *_mft(
            name,
            NEGATIVE,
            [
                "Great cast but a boring plot.",
                "I wanted to like it, but it was a mess.",
                "Nice to look at, but a chore to sit through.",
                "It starts well but falls apart.",
            ],
        ),
        *_mft(
            name,
            POSITIVE,
            [
                "Slow start but a wonderful ending.",
                "I expected to hate it, but I loved it.",
                "It looks cheap, but the story is moving.",
                "Bad reviews, but I had a great time.",
            ],
        ),
    ]


def intensifiers() -> list[Case]:
    cases = []
    for label, adjectives in ((POSITIVE, MILD_GOOD), (NEGATIVE, MILD_NEGATIVE)):
        for thing, adjective, very in product(THING[:4], adjectives, INTENSIFIER):
            base = f"The {thing} was {adjective}."
            cases.append(Case("intensifiers", base, label, f"The {thing} was {very} {adjective}."))
    return cases


def invariance() -> list[Case]:
    name = "invariance"
    cases = []
    bases = []
    for template, _ in NAMED:
        reference = next(fill(template, name=NAMES[:1], movie=MOVIE[1:2]))
        bases.append(reference)
        for other in fill(template, name=NAMES[1:], movie=MOVIE[1:2]):
            cases.append(Case(name, reference, changed=other))
    for template in NUMBERED:
        slot = "year" if "{year}" in template else "minutes"
        values = NUMBERS[slot]
        reference = next(fill(template, **{slot: values[:1]}, movie=MOVIE[1:2]))
        bases.append(reference)
        for other in fill(template, **{slot: values[1:]}, movie=MOVIE[1:2]):
            cases.append(Case(name, reference, changed=other))
    for base in bases:
        stem = base.rstrip(".")
        for variant in (stem, stem + "!", stem + "...", stem + "!!", f"“{stem}.”"):
            cases.append(Case(name, base, changed=variant))
        if " film" in base:
            for word in ("movie", "picture"):
                cases.append(Case(name, base, changed=base.replace(" film", f" {word}")))
    return cases


def short() -> list[Case]:
    name = "short"
    templates = [
        "{adj} from start to finish.",
        "What a {adj} {movie}!",
        "Just {adj}.",
        "A {adj} {movie}.",
    ]
    return [
        *_mft(name, POSITIVE, templates, adj=STRONG_GOOD, movie=MOVIE[:2]),
        *_mft(name, NEGATIVE, templates, adj=STRONG_BAD, movie=MOVIE[:2]),
        *(Case(name, text, label) for text, label in TWEETS),
        *_probe("short", name),
    ]


def domains() -> list[Case]:
    """Sentiment words outside films: the model learnt from movie reviews only, and is served
    whatever text it is sent."""
    name = "domains"
    return [
        *_mft(name, POSITIVE, ["The {product} {works}."], product=PRODUCTS, works=WORKS),
        *_mft(name, NEGATIVE, ["The {product} {fails}."], product=PRODUCTS, fails=FAILS),
        *_mft(name, POSITIVE, ["The {dish} was {adj}."], dish=DISHES, adj=TASTY),
        *_mft(name, NEGATIVE, ["The {dish} was {adj}."], dish=DISHES, adj=NASTY),
        *_mft(name, POSITIVE, ["The {person} was {adj}."], person=STAFF, adj=KIND),
        *_mft(name, NEGATIVE, ["The {person} was {adj}."], person=STAFF, adj=UNKIND),
        *_mft(name, POSITIVE, ["The {service} was {adj}."], service=SERVICES, adj=FAST),
        *_mft(name, NEGATIVE, ["The {service} was {adj}."], service=SERVICES, adj=SLOW),
        *_mft(name, POSITIVE, ["I would recommend this {place}."], place=PLACES),
        *_mft(name, NEGATIVE, ["I would not recommend this {place}."], place=PLACES),
        *_mft(
            name,
            POSITIVE,
            ["Never had a problem with this {product}.", "No complaints about the {product}."],
            product=PRODUCTS,
        ),
        *_mft(
            name,
            NEGATIVE,
            ["The {product} is not worth the money.", "The {product} is overpriced."],
            product=PRODUCTS,
        ),
        *(Case(name, text, label) for text, label in REVIEWS),
    ]


@cache
def suite() -> tuple[Case, ...]:
    """Every case once, in a fixed order (a probe set may hold a text a template also makes)."""
    cases = (*negation(), *contrast(), *intensifiers(), *invariance(), *short(), *domains())
    return tuple(dict.fromkeys(cases))


@dataclass
class Outcome:
    capability: str
    cases: int = 0
    passed: int = 0
    # (case, P(positive) of its text, of its changed text or None), failing cases in order
    failures: list[tuple[Case, float, float | None]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0

    @property
    def threshold(self) -> float:
        return CAPABILITIES[self.capability].threshold


def passes(case: Case, p: float, p_changed: float | None) -> bool:
    test = CAPABILITIES[case.capability].test
    if test == "MFT":
        return (p >= 0.5) == (case.expected == POSITIVE)
    if p_changed is None:
        raise ValueError(f"a {test} case needs its changed text: {case}")
    if test == "DIR":
        moved = p_changed - p
        return moved >= -DIR_TOLERANCE if case.expected == POSITIVE else moved <= DIR_TOLERANCE
    return (p >= 0.5) == (p_changed >= 0.5) and abs(p_changed - p) <= INV_TOLERANCE


def run(score: Scorer, cases: Sequence[Case] | None = None) -> dict[str, Outcome]:
    """Score every distinct text once, and count the passes per capability."""
    cases = suite() if cases is None else cases
    texts = list(dict.fromkeys(t for c in cases for t in (c.text, c.changed) if t is not None))
    p = dict(zip(texts, np.asarray(score(texts), dtype=float).tolist(), strict=True))
    outcomes = {name: Outcome(name) for name in CAPABILITIES}
    for case in cases:
        outcome = outcomes[case.capability]
        p_changed = None if case.changed is None else p[case.changed]
        outcome.cases += 1
        if passes(case, p[case.text], p_changed):
            outcome.passed += 1
        else:
            outcome.failures.append((case, p[case.text], p_changed))
    return outcomes


def metrics(outcomes: dict[str, Outcome]) -> dict[str, float]:
    """``behaviour_<capability>`` (the pass rate) and ``behaviour_<capability>_cases``."""
    figures = {}
    for name, outcome in outcomes.items():
        figures[f"behaviour_{name}"] = outcome.rate
        figures[f"behaviour_{name}_cases"] = outcome.cases
    return figures


def pipeline_scorer(pipeline) -> Scorer:
    """A fitted scikit-learn pipeline over cleaned text, as training holds it."""
    return lambda texts: pipeline.predict_proba([clean_text(t) for t in texts])[:, 1]


def answers_scorer(predict: Callable[[pd.DataFrame], pd.DataFrame]) -> Scorer:
    """A model that answers ``sentiment`` and ``confidence`` per text of a ``text`` column:
    a loaded pyfunc's ``predict``, or ``SentimentModel.predict`` (what the server answers)."""

    def score(texts: list[str]) -> np.ndarray:
        answers = predict(pd.DataFrame({"text": texts}))
        confidence = answers["confidence"].to_numpy(dtype=float)
        positive = answers["sentiment"].to_numpy() == LABELS[POSITIVE]
        return np.where(positive, confidence, 1 - confidence)

    return score


def report(outcomes: dict[str, Outcome], failures: int = 3) -> str:
    lines = [
        "| capability | what it checks | test | cases | pass rate | threshold |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, o in outcomes.items():
        c = CAPABILITIES[name]
        cells = f"{c.title} | {c.test} | {o.cases} | {o.rate:.1%} | {c.threshold:.0%}"
        lines.append(f"| {name} | {cells} |")
    for name, o in outcomes.items():
        for case, p, p_changed in o.failures[:failures]:
            after = "" if p_changed is None else f" -> {case.changed!r} {p_changed:.3f}"
            lines.append(f"  {name} fails: {case.text!r} {p:.3f}{after}")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """Pass rates per preset (rows holding ``preset`` and the ``behaviour_*`` metrics), with
    each capability's number of cases and threshold in its heading."""
    counts = Counter(c.capability for c in suite())
    heads = [
        f"{n} ({CAPABILITIES[n].test}, {counts[n]}, ≥{CAPABILITIES[n].threshold:.0%})"
        for n in CAPABILITIES
    ]
    lines = ["| preset | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for row in rows:
        rates = [f"{row[f'behaviour_{n}']:.1%}" for n in CAPABILITIES]
        lines.append(f"| {row['preset']} | " + " | ".join(rates) + " |")
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description="Run the behavioural suite against a model.")
    cli.add_argument("model_uri", help="e.g. models:/SentimentClassifier@production")
    cli.add_argument("--failures", type=int, default=3, help="failing cases shown per capability")
    args = cli.parse_args()
    import mlflow  # only here: the suite itself needs no MLflow

    outcomes = run(answers_scorer(mlflow.pyfunc.load_model(args.model_uri).predict))
    print(report(outcomes, args.failures))


if __name__ == "__main__":
    main()
