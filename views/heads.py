"""Small trainable heads over frozen features, shared by the ``embedding`` and ``vision`` views:
scikit-learn's logistic regression or a one-hidden-layer torch MLP."""
from __future__ import annotations

from typing import Any

import numpy as np

HEADS = ("logistic_regression", "mlp")


class MLPHead:
    """A one-hidden-layer torch MLP with weighted cross-entropy, seeded by its own generator."""

    def __init__(self, hidden: int = 128, epochs: int = 100, lr: float = 1e-2,
                 weight_decay: float = 1e-4, dropout: float = 0.1, seed: int = 0) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.seed = seed
        self.net_: Any = None
        self.classes_: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MLPHead:
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        self.classes_ = np.unique(y)
        index = {c: i for i, c in enumerate(self.classes_)}
        yt = torch.tensor([index[c] for c in y], dtype=torch.long)
        Xt = torch.tensor(X, dtype=torch.float32)
        w = torch.tensor(sample_weight if sample_weight is not None else np.ones(len(y)), dtype=torch.float32)
        d = X.shape[1]
        lin1 = torch.nn.Linear(d, self.hidden)
        lin2 = torch.nn.Linear(self.hidden, len(self.classes_))
        with torch.no_grad():
            for lin in (lin1, lin2):
                bound = 1.0 / np.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        params = [*lin1.parameters(), *lin2.parameters()]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        keep = 1.0 - self.dropout
        for _ in range(self.epochs):  # full batch: heads are small
            opt.zero_grad()
            h = torch.relu(lin1(Xt))
            if self.dropout > 0:  # dropout from our own generator, not torch's global RNG
                h = h * (torch.rand(h.shape, generator=gen) < keep) / keep
            loss = (torch.nn.functional.cross_entropy(lin2(h), yt, reduction="none") * w).sum() / w.sum()
            loss.backward()
            opt.step()
        self.net_ = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2).eval()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.softmax(self.net_(torch.tensor(X, dtype=torch.float32)), dim=1).numpy()


def make_head(kind: str, params: dict[str, Any], seed: int) -> Any:
    """A fresh, unfitted head of ``kind`` with the user's ``params``, seeded by ``seed``."""
    if kind == "mlp":
        return MLPHead(seed=seed, **params)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**{"max_iter": 1000, "C": 1.0, **params})
