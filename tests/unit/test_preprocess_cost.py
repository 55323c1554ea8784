"""Cleaning costs about the same for any text as for a real review of the same length.

Times are CPU times of this thread (other processes on the machine do not count; the process
clock turns coarse while the alarm below is armed), each the best of a few runs, compared with
a real review cleaned in the same example: the bound is a ratio, not a number of milliseconds.
A runaway pattern is stopped by a CPU-time alarm, so a regression fails in about a second
instead of running for minutes.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from model.preprocess import MAX_CLEANED_CHARS, clean_text
from pipelines.data import load_reviews

# The longest text the gateway accepts.
LENGTH = 5_000
# Adversarial text may cost this many times a real review of its length, plus SLACK seconds.
# Measured over thousands of examples: at most about 7 times (html.unescape's call per "&",
# "&:" * 2500), while the old patterns took 50 times ("<" * 5000) and 100,000 times or more
# ("a@" * 2500, "@" * 5000).
RATIO = 15
SLACK = 0.002
# Beyond this much CPU a single cleaning is stopped: far above any bound below.
ALARM = 1.0
# Characters the cleaning patterns give a meaning to, a few letters and whitespace.
ALPHABET = "@.<>/:'!&#;" + "abhnprtwx" + " \n"


class CleaningTooSlow(AssertionError):
    pass


@contextmanager
def cpu_alarm(seconds: float):
    """Raise CleaningTooSlow once this process has used ``seconds`` of CPU (regexes included)."""

    def stop(signum, frame):
        raise CleaningTooSlow(f"cleaning used more than {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def cpu_seconds(text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        with cpu_alarm(ALARM):
            start = time.thread_time()
            clean_text(text)
            best = min(best, time.thread_time() - start)
    return best


@pytest.fixture(scope="module")
def plain_text() -> str:
    """Real reviews run together, longer than the cap."""
    text = "\n".join(load_reviews(max_rows=200)["text"])
    assert len(text) > MAX_CLEANED_CHARS
    return text


def assert_costs_like_a_review(text: str, plain_text: str) -> None:
    clean_text(plain_text[:100])  # stopwords loaded, patterns compiled
    length = min(len(text), MAX_CLEANED_CHARS)
    plain = cpu_seconds(plain_text[:length])
    adversarial = cpu_seconds(text)
    assert adversarial <= RATIO * plain + SLACK, (
        f"{len(text)} adversarial characters took {adversarial * 1e3:.2f} ms of CPU, "
        f"a real review of {length} characters {plain * 1e3:.2f} ms"
    )


def repeated(parts: list[tuple[str, int]]) -> str:
    """Each fragment repeated, all of it repeated again up to exactly LENGTH characters."""
    text = "".join(fragment * count for fragment, count in parts)
    return (text * (LENGTH // len(text) + 1))[:LENGTH]


fragments = st.lists(
    st.tuples(st.text(ALPHABET, min_size=1, max_size=6), st.integers(1, LENGTH)),
    min_size=1,
    max_size=5,
).map(repeated)


@settings(
    deadline=None,
    max_examples=100,
    # A timing failure does not shrink meaningfully, and each slow example would run again.
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.one_of(fragments, st.text(ALPHABET, min_size=LENGTH, max_size=LENGTH)))
@example(text="<" * LENGTH)
@example(text="<a" * (LENGTH // 2))
@example(text="<" * (LENGTH - 4) + "<br>")
@example(text="a@" * (LENGTH // 2))
@example(text="@" * LENGTH)
@example(text="http://" * (LENGTH // 7))
@example(text="a." * (LENGTH // 2))
@example(text="'" * LENGTH)
@example(text="n't " * (LENGTH // 4))
@example(text="<@.:/'!" * (LENGTH // 7))
def test_adversarial_text_cleans_in_linear_time(text, plain_text):
    assert_costs_like_a_review(text, plain_text)


def test_a_megabyte_text_cleans_like_its_first_characters(plain_text):
    text = "a@" * 500_000
    assert len(text) == 1_000_000
    assert_costs_like_a_review(text, plain_text)
    assert clean_text(text) == clean_text(text[:MAX_CLEANED_CHARS])
