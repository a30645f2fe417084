"""Lang et al.'s cut statistic (2022, "Co-training improves prompt-based learning for large
language models"; clinicalml/cotrain-prompting ``src/utils/cotrain_utils.py``): how much an
item's label disagrees with its neighbours' in another view's feature space, against what
the class prior would predict. Lower z is more trustworthy. It ranks candidates by where
they sit, not by how sure a (possibly badly calibrated) labeller says it is.

A pure function over a feature matrix and labels; no store or global state. ``cut_rank``
builds that matrix from a view's features.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from store.errors import ConfigError
from store.labels import ABSTAIN
from views.base import Featurizer, View


def cut_rank(frames: Callable[[], Iterable[pd.DataFrame]], views: Sequence[View], labels: np.ndarray,
             prior: np.ndarray, cut_view: str | None, n_neighbors: int) -> np.ndarray:
    """Minus the cut statistic of each pool item's combined label (higher ranks first), in
    the feature space of ``cut_view`` (default: the first view that exposes features);
    ``frames()`` yields the pool's items in order."""
    view = cut_space(views, cut_view)
    from scipy import sparse  # here, not at import: it sat on every run's start-up path (0.1 s)

    # one call over the whole pool: a graph view fits its TF-IDF or scaler over what it is given,
    # so per-batch calls put an item's row in another space in each batch (stacked TF-IDF
    # vocabularies failed, and batch_size changed which labels were picked)
    parts = list(frames())
    X = view.features(pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]) if parts else np.zeros((0, 0))
    if sparse.issparse(X):
        return -cut_statistic(X.tocsr(), labels, prior, n_neighbors)
    X = np.asarray(X)
    placed = ~np.isnan(X).any(axis=1)  # an item the view cannot see (an unreadable image): no place
    rank = np.full(len(X), -np.inf)    # in its space, so no neighbourhood vouches for it: ranked last
    rank[placed] = -cut_statistic(X[placed], np.asarray(labels)[placed], prior, n_neighbors)
    return rank


def cut_space(views: Sequence[View], cut_view: str | None) -> Featurizer:
    """The view whose features the cut statistic's graph is built in: ``cut_view``, else the
    first view that exposes features. Checked when the views are built, so a view with no
    features (an LLM view) is refused before round 0, not after its work (and its calls)."""
    able = [v for v in views if isinstance(v, Featurizer)]
    view = next((v for v in able if getattr(v, "name", None) == cut_view), None) if cut_view else \
        (able[0] if able else None)
    if view is None:
        named = cut_view or (views[0].name if views else "")
        raise ConfigError("cotrain.cut_view", f"view '{named}' exposes no features to build the cut statistic's "
                          "graph in (a sklearn, embedding, vision or graph view does)")
    return view


def cut_statistic(X: Any, labels: np.ndarray, prior: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """z per item (ABSTAIN labels get +inf).

    Graph: each item's ``n_neighbors`` nearest items by Euclidean distance, the item itself
    counted as one of them (as in the reference), weights w = 1 / (1 + d). With p the prior
    of the item's label, J = sum w [label_i != label_j] and
    z = (J - (1 - p) sum w) / sqrt(p (1 - p) sum w^2). ``X``: dense or sparse (n, d)."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    z = np.full(n, np.inf)
    if n < 2:
        return z
    k = min(n_neighbors, n)
    dist, idx = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)
    w = 1.0 / (1.0 + dist)
    differ = labels[idx] != labels[:, None]
    J = (w * differ).sum(axis=1)
    voted = labels != ABSTAIN
    p = np.where(voted, np.asarray(prior, dtype=np.float64)[np.maximum(labels, 0)], 0.5)
    p = np.clip(p, 1e-6, 1 - 1e-6)
    mean = (1 - p) * w.sum(axis=1)
    sd = np.sqrt(p * (1 - p) * (w ** 2).sum(axis=1))
    z[voted] = ((J - mean) / sd)[voted]
    return z


__all__ = ["cut_space", "cut_rank", "cut_statistic"]
