"""A plug-in view kind used by the tests through its dotted path: nearest centroid over columns."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from views.base import ViewContext


class CentroidView:
    """Softmax over negative distances to per-class centroids of the named columns."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), temperature: float = 1.0):
        self.name = name
        self.context = context
        self.columns = list(columns)
        self.temperature = temperature
        self.centroids_: np.ndarray | None = None

    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        return self.columns

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        X = items[self.columns].to_numpy(float)
        k = len(self.context.labels)
        self.centroids_ = np.stack([
            np.average(X[y == c], axis=0, weights=sample_weight[y == c]) if (y == c).any() else np.full(X.shape[1], np.inf)
            for c in range(k)])

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        X = items[self.columns].to_numpy(float)
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        z = -d / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)
