"""``graph`` view kind: label spreading over a k-nearest-neighbour graph of the items' features.

The view is transductive. ``fit`` only remembers the labelled items' features and labels;
``predict_proba`` builds a kNN graph over the labelled items and the batch it is asked about,
spreads the labels over it (Zhou et al. 2004: ``F <- alpha S F + (1 - alpha) Y``, with ``S``
the symmetrically normalised adjacency) and returns the batch's rows. The orchestrator asks
for the unlabelled pool in batches (``cotrain.batch_size``, 50,000 by default), so within a
batch this is label spreading over the pool: the unlabelled items' own cluster structure
carries the few labels, which no inductive model on the same features can use.

Two paths, chosen by the graph's size: up to ``small_max_items`` items, scikit-learn's
``LabelSpreading(kernel="knn")``; above it, a sparse symmetric kNN graph (``knn_indices``:
a ball tree, or faiss's exact search for embeddings when faiss is installed) and the same
iterations with ``scipy.sparse``, in memory linear in the batch. Both run exactly
``max_iter`` iterations (no early stop). They agree on well-separated data (moons: 99.9% of
argmaxes) but not item for item on harder data (digits, 2 labels a class: 86-94%, with the same
accuracy): scikit-learn's kNN graph is directed (an item hears only from its own k nearest,
itself counted among them), the sparse one symmetric. A directed graph can also leave items
unreached at a small ``n_neighbors`` (moons, k=5: 114 of 392) where the symmetric one reaches all.

The test set is predicted as one batch too, so a graph view's test score comes from spreading
over [labelled ∪ test]: without the pool, it is lower than its pool labels' quality in early
rounds (moons, 10 labels: 0.85 on test in round 0, while it labels the pool well enough that
the next round's test score is 0.95).

An image field is embedded by the image encoder a ``vision`` view uses (MobileNetV2 by
default), through such a view's own code and cache, so a graph beside a vision view on the
same images encodes nothing twice; an item whose image cannot be read has no place in the
graph and abstains.

An item that no labelled item reaches within ``max_iter`` hops (a cluster of the batch that
holds no labelled item, so another component of the graph) gets a zero row from the
propagation: the view *abstains* on it (a NaN row) rather than voting uniform, since it has
no evidence and a uniform vote would only dilute the ensemble's.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import sparse

from store.errors import ViewError
from views.base import ParamsView, ViewContext, abstain, expand_proba, item_ids, select_fields, unit_rows
from views.params import EmbeddingParams, GraphParams, VisionParams

FeatureMatrix = np.ndarray | sparse.csr_matrix


#: Up to this many feature columns, a ball tree finds neighbours far faster than a brute-force
#: scan (50,000 items in 2-D: 3 s against faiss's 37 s); above it trees degrade (5,000 items in
#: 384-D: 30 s) and an exact scan wins (20,000 in 384-D: faiss 13 s, scikit-learn 20 s).
TREE_MAX_DIMS = 16


def knn_indices(X: FeatureMatrix, k: int) -> np.ndarray:
    """(n, k) indices of each row's k nearest other rows (Euclidean, exact).

    Low-dimensional dense features use scikit-learn's ball tree; higher-dimensional ones
    (embeddings) faiss's exact ``IndexFlatL2`` when faiss is installed, else scikit-learn's
    brute force; sparse ones (TF-IDF, unit rows) scikit-learn's brute force. Every one works
    in chunks (memory linear in n) and is deterministic: an approximate index (HNSW) would
    make labels depend on thread timing. ``k`` must be below the number of rows."""
    from sklearn.neighbors import NearestNeighbors

    n = X.shape[0]
    if sparse.issparse(X) or X.shape[1] > TREE_MAX_DIMS:
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None and not sparse.issparse(X):
            Xf = np.ascontiguousarray(X, dtype=np.float32)
            index = faiss.IndexFlatL2(Xf.shape[1])
            index.add(Xf)
            _, idx = index.search(Xf, k + 1)
        else:
            idx = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(X).kneighbors(X, return_distance=False)
    else:
        idx = NearestNeighbors(n_neighbors=k + 1, algorithm="ball_tree").fit(X).kneighbors(X, return_distance=False)
    idx = np.asarray(idx, dtype=np.int64)
    # drop each row itself (not always first: duplicates tie at distance 0), else its last hit
    is_self = idx == np.arange(n)[:, None]
    keep = ~is_self
    keep[~is_self.any(axis=1), -1] = False
    return idx[keep].reshape(n, k)


def knn_graph(X: FeatureMatrix, k: int) -> sparse.csr_matrix:
    """The symmetric normalised adjacency ``D^-1/2 W D^-1/2`` of the kNN graph: ``W[i, j] = 1``
    when j is among i's k nearest or i among j's, no self-loops. ``n * k`` to ``2 * n * k``
    entries: memory linear in the number of items."""
    n = X.shape[0]
    idx = knn_indices(X, k)
    rows = np.repeat(np.arange(n), k)
    A = sparse.csr_matrix((np.ones(n * k), (rows, idx.ravel())), shape=(n, n))
    W = A.maximum(A.T).tocsr()
    d = 1.0 / np.sqrt(np.asarray(W.sum(axis=1)).ravel())  # every degree >= k >= 1
    D = sparse.diags(d)
    return (D @ W @ D).tocsr()


def spread_sparse(X: FeatureMatrix, y: np.ndarray, n_classes: int, k: int, alpha: float,
                  max_iter: int) -> np.ndarray:
    """Label spreading on the sparse symmetric kNN graph: ``F <- alpha S F + (1 - alpha) Y``
    for ``max_iter`` steps from ``F = Y``. ``y`` holds a class index per row, -1 when
    unlabelled. Returns the unnormalised (n, n_classes) scores; a zero row is unreached."""
    S = knn_graph(X, k)
    Y = np.zeros((X.shape[0], n_classes))
    lab = np.flatnonzero(y >= 0)
    Y[lab, y[lab]] = 1.0
    static = (1.0 - alpha) * Y
    F = Y.copy()
    for _ in range(max_iter):
        F = alpha * (S @ F) + static
    return F


def spread_small(X: FeatureMatrix, y: np.ndarray, n_classes: int, k: int, alpha: float,
                 max_iter: int) -> np.ndarray:
    """Label spreading with scikit-learn's ``LabelSpreading(kernel="knn")``, run for exactly
    ``max_iter`` steps (``tol=0``: its default tolerance stops once the total change is small,
    which leaves items a few hops further away unreached). Same contract as ``spread_sparse``;
    a NaN row (older scikit-learn divides by a zero row sum) becomes a zero row."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading

    model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=alpha, max_iter=max_iter, tol=0.0)
    with warnings.catch_warnings():  # tol=0 always "reaches max_iter without convergence"
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 on unreached rows (older versions)
        model.fit(X, y)
    out = np.zeros((X.shape[0], n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = np.nan_to_num(model.label_distributions_, nan=0.0)
    return out


class GraphView(ParamsView):
    """Label spreading over a kNN graph of columns, a text field's embeddings / TF-IDF or an
    image field's encoder vectors; parameters: :class:`GraphParams`.

    ``sample_weight`` is used only to drop items weighted 0: label spreading clamps every
    labelled item with the same strength ``1 - alpha`` and has no per-item weight, and
    peers' pseudo-labels (which the orchestrator may weight by confidence) spread like gold
    ones. ``seed`` is not needed: every step is deterministic (exact neighbour search)."""

    Params = GraphParams
    #: An item's probabilities depend on the batch it is predicted with (the orchestrator
    #: predicts held-out gold with the pool, so their scores come from the pool's regime).
    transductive: ClassVar[bool] = True
    #: Parameters held under another attribute name: ``features`` is the Featurizer method
    #: (the cut statistic's space), so the option lives in ``feature_kind``.
    param_attrs: ClassVar[dict[str, str]] = {"features": "feature_kind"}

    def __init__(self, name: str, context: ViewContext, params: GraphParams) -> None:
        self.name = name
        self.context = context
        self.columns = list(params.columns) if params.columns else None
        self.column_prefix = params.column_prefix
        self.text = params.text
        self.image = params.image
        self.feature_kind = params.features
        self.encoder = params.encoder
        self._encoder_name = params.encoder_name  # the text or image default when none is given
        self.image_size = params.image_size
        self.image_root = params.image_root
        self.n_neighbors = params.n_neighbors
        self.alpha = params.alpha
        self.max_iter = params.max_iter
        self.scale = params.scale
        self.small_max_items = params.small_max_items
        self.fields_: list[str] = []
        self._embedder: Any = None
        self._imager: Any = None
        self.labelled_: Any = None          # the labelled items' features (or texts, for TF-IDF)
        self.y_: np.ndarray | None = None   # their label indices
        self.classes_: np.ndarray | None = None
        self.last_path_: str | None = None  # "small" or "sparse": the path the last batch took

    # ---------------------------------------------------------------- fields
    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        # exactly one of text / image / column_prefix / columns is set (GraphParams)
        if self.image:  # checks the field, imports and loads the encoder: a bad one fails before any run
            self.fields_ = self._vision_view().resolve_fields(list(columns))
            return self.fields_
        self.fields_ = select_fields(self.name, columns, text=self.text, column_prefix=self.column_prefix,
                                     names=self.columns)
        if self.text and self.feature_kind == "embedding":
            self._embedding_view().resolve_fields(list(columns))  # fails early if the encoder is absent
        return self.fields_

    # ---------------------------------------------------------------- features
    def _embedding_view(self) -> Any:
        """An ``EmbeddingView`` on the same text and encoder, used for its ``embed()``: the
        same vectors, cached in the same store namespace, as an ``embedding`` view's."""
        if self._embedder is None:
            from views.embedding import EmbeddingView

            self._embedder = EmbeddingView(self.name, self.context,  # its warnings and errors name this view
                                           EmbeddingParams(text=self.text or "", encoder=self._encoder_name))
        return self._embedder

    def _vision_view(self) -> Any:
        """A ``VisionView`` on the same image field and encoder, used for its ``encode()``:
        the same vectors, cached in the same namespace, as a ``vision`` view's."""
        if self._imager is None:
            from views.vision.view import VisionView

            self._imager = VisionView(self.name, self.context,  # its warnings and problems name this view
                                      VisionParams(image=self.image or "", encoder=self._encoder_name,
                                                   image_size=self.image_size, image_root=self.image_root))
        return self._imager

    def _texts(self, items: pd.DataFrame) -> list[str]:
        return items[self.text].fillna("").astype(str).tolist()

    def _numeric(self, items: pd.DataFrame) -> np.ndarray:
        """The columns as a float matrix; a value that is not a finite number is one error
        naming its column and item (a distance needs every coordinate)."""
        fields = self.fields_ or list(self.columns or [])
        X = np.empty((len(items), len(fields)))
        for j, c in enumerate(fields):
            col = pd.to_numeric(items[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(~np.isfinite(col))
            if bad.size:
                i = int(bad[0])
                ids = item_ids(items)
                raise ViewError(self.name, f"column '{c}' holds {str(items[c].iloc[i])[:40]!r} at item "
                                f"{ids[i] if ids else f'row {i + 1}'!r}: a graph view needs a finite "
                                "number in every column (fill it)")
            X[:, j] = col
        return X

    def _readable(self, items: pd.DataFrame) -> tuple[Any, np.ndarray]:
        """(what is kept for each item the view can place, boolean mask of those items over
        ``items``): every item, except for an image field, whose unreadable images have no place."""
        if self.image:
            X = self.features(items)
            mask = ~np.isnan(X).any(axis=1)
            return X[mask], mask
        return self._raw(items), np.ones(len(items), dtype=bool)

    def _raw(self, items: pd.DataFrame) -> Any:
        """What is kept per item: embeddings, texts (TF-IDF is fitted per graph) or columns."""
        if self.text and self.feature_kind == "embedding":
            texts = self._texts(items)
            return self._embedding_view().embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        if self.text:
            return self._texts(items)
        return self._numeric(items)

    def _graph_features(self, labelled: Any, batch: Any) -> FeatureMatrix:
        """Features of [labelled ∪ batch]. TF-IDF is fitted and columns are standardised over
        these items: that uses no label, and a handful of labelled items is too few to
        estimate a vocabulary or a scale from."""
        if self.text and self.feature_kind == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            try:
                return TfidfVectorizer(sublinear_tf=True).fit_transform(list(labelled) + list(batch)).tocsr()
            except ValueError as exc:  # "empty vocabulary": no text holds a word of 2+ characters
                raise ViewError(self.name, f"TF-IDF over field '{self.text}' failed: {exc}") from None
        X = np.vstack([labelled, batch]).astype(np.float64)
        if self.scale and not (self.text or self.image):
            from sklearn.preprocessing import StandardScaler

            X = StandardScaler().fit_transform(X)
        return X

    def features(self, items: pd.DataFrame) -> FeatureMatrix:
        """The space the graph is built in, over ``items`` alone (embeddings, unit image
        vectors with a NaN row where an image cannot be read; TF-IDF or standardised columns
        fitted over them)."""
        if self.image:  # the encoder's width even when no item of ``items`` is readable
            X = self._vision_view().features(items).astype(np.float64)
            ok = ~np.isnan(X).any(axis=1)
            X[ok] = unit_rows(X[ok])
            return X
        raw = self._raw(items)
        empty = [] if self.text and self.feature_kind == "tfidf" else np.zeros((0,) + np.shape(raw)[1:])
        return self._graph_features(empty, raw)

    # ---------------------------------------------------------------- fit / predict
    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        """Remember the labelled items (weight > 0, and an image that can be read) and their
        labels; abstain while they hold fewer than 2 classes (spreading one class would label
        everything it reaches)."""
        y = np.asarray(y, dtype=int)
        keep = np.asarray(sample_weight, dtype=np.float64) > 0
        items, y = items[keep].reset_index(drop=True), y[keep]
        raw, mask = self._readable(items)
        y = y[mask]
        if len(np.unique(y)) < 2:
            warnings.warn(f"view '{self.name}': training labels hold fewer than 2 classes; "
                          "the view abstains this round", stacklevel=2)
            self.labelled_, self.y_, self.classes_ = None, None, None
            return
        self.labelled_ = raw
        self.y_ = y
        self.classes_ = np.unique(y)

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        """Spread the labels over [labelled ∪ items]; the items' rows, normalised, in the
        task's label order. Unreached items, and items the view cannot place, abstain (NaN row)."""
        k_labels = len(self.context.labels)
        if self.labelled_ is None or self.y_ is None or len(items) == 0:
            return abstain(len(items), k_labels)
        raw, mask = self._readable(items)
        if not mask.all():
            out = abstain(len(items), k_labels)
            if mask.any():
                out[mask] = self._spread(raw, k_labels)
            return out
        return self._spread(raw, k_labels)

    def _spread(self, raw: Any, k_labels: int) -> np.ndarray:
        """Label spreading over [labelled ∪ the batch's ``raw``]: the batch's rows."""
        assert self.y_ is not None
        X = self._graph_features(self.labelled_, raw)
        n_lab = len(self.y_)
        n = X.shape[0]
        classes = np.asarray(self.classes_, dtype=int)
        y_local = np.concatenate([np.searchsorted(classes, self.y_), np.full(n - n_lab, -1)])
        k = min(self.n_neighbors, n - 1)
        small = n <= self.small_max_items
        self.last_path_ = "small" if small else "sparse"
        spread = spread_small if small else spread_sparse
        F = spread(X, y_local, len(classes), k, self.alpha, self.max_iter)[n_lab:]
        total = F.sum(axis=1)
        reached = np.isfinite(total) & (total > 0)
        proba = np.zeros_like(F)
        proba[reached] = F[reached] / total[reached, None]
        out = expand_proba(proba, classes, k_labels)
        out[~reached] = np.nan
        return out


__all__ = ["GraphView", "knn_graph", "knn_indices", "spread_small", "spread_sparse"]
