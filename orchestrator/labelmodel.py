"""Combining views' votes into one posterior per item: pure functions over the label matrix.

* :func:`dawid_skene`: per-view, per-class confusion matrices estimated by EM from the label
  matrix (items x views, ABSTAIN = -1), with the gold labels clamped (Dawid & Skene 1979;
  Snorkel's ``LabelModel`` is the reference for the interface). It gives each item a
  posterior over the classes and each view an estimated accuracy, so a near-uniform or
  systematically wrong view counts for little.
* :func:`log_linear_pool`: the product of views' calibrated probabilities (weighted), the
  combination to use with two views, where a label model has too little to go on.

Nothing here touches a model, a store or global state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store.labels import ABSTAIN


@dataclass(frozen=True)
class LabelModelFit:
    """What :func:`dawid_skene` estimated.

    ``posterior``: (n, K) class probabilities per item (gold items one-hot); ``confusion``:
    (V, K, K), row k = the distribution of view v's vote when the truth is k; ``prior``: (K,);
    ``accuracy``: (V,) each view's estimated accuracy on the items it votes on;
    ``n_iter``: EM iterations run; ``converged``: whether the change fell below ``tol``."""

    posterior: np.ndarray
    confusion: np.ndarray
    prior: np.ndarray
    accuracy: np.ndarray
    n_iter: int
    converged: bool


def _onehot_counts(weights: np.ndarray, votes: np.ndarray, k: int) -> np.ndarray:
    """(K, K) matrix: sum over items of weights[i, a] for items voting b, at [a, b]."""
    out = np.zeros((k, k))
    voted = votes != ABSTAIN
    if voted.any():
        onehot = np.zeros((int(voted.sum()), k))
        onehot[np.arange(onehot.shape[0]), votes[voted]] = 1.0
        out = weights[voted].T @ onehot
    return out


def dawid_skene(labels: np.ndarray, k: int, gold: np.ndarray | None = None, *, max_iter: int = 300,
                tol: float = 1e-4, smoothing: float = 0.1, diagonal_prior: float = 1.0,
                prior_smoothing: float = 1.0) -> LabelModelFit:
    """Fit a Dawid-Skene label model by EM.

    ``labels``: (n, V) class indices, ABSTAIN where a view gives none. ``gold``: (n,) known
    labels (ABSTAIN where unknown); they are clamped in the posterior and so anchor every
    view's confusion matrix. ``smoothing``: Dirichlet pseudo-count added to every confusion
    cell, plus ``diagonal_prior`` more on the diagonal (a view is assumed better than chance
    until the data say otherwise, which also fixes the label-switching symmetry of EM)."""
    labels = np.asarray(labels, dtype=np.int64)
    n, v = labels.shape
    gold = np.full(n, ABSTAIN, dtype=np.int64) if gold is None else np.asarray(gold, dtype=np.int64)
    known = gold != ABSTAIN
    # start from the vote shares (gold clamped), as Dawid-Skene do
    post = np.full((n, k), 1e-3)
    for j in range(v):
        voted = labels[:, j] != ABSTAIN
        post[np.flatnonzero(voted), labels[voted, j]] += 1.0
    post /= post.sum(axis=1, keepdims=True)
    post[known] = np.eye(k)[gold[known]]
    eye = np.eye(k) * diagonal_prior
    conf = np.zeros((v, k, k))
    prior = np.full(k, 1.0 / k)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        # M-step: prior and confusion matrices from the current posterior
        prior = post.sum(axis=0) + prior_smoothing
        prior /= prior.sum()
        before = conf.copy()
        for j in range(v):
            c = _onehot_counts(post, labels[:, j], k) + smoothing + eye
            conf[j] = c / c.sum(axis=1, keepdims=True)
        if it > 1 and float(np.abs(conf - before).max()) < tol:  # the parameters have settled
            converged = True
        # E-step: posterior from the prior and every non-abstaining vote
        new = ds_posterior(labels, conf, prior)
        new[known] = np.eye(k)[gold[known]]
        post = new
        if converged or n == 0:
            converged = True
            break
    accuracy = np.array([float((prior * np.diag(conf[j])).sum() / prior.sum()) for j in range(v)])
    return LabelModelFit(post, conf, prior, accuracy, it, converged)


def ds_posterior(labels: np.ndarray, confusion: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Posterior over the classes of items with votes ``labels`` (n, V) under a fitted
    Dawid-Skene model (``confusion`` (V, K, K), ``prior`` (K,)): the E-step alone, for items
    the model was not fitted on (held-out, or a pool too large to fit on whole). An item on
    which every view abstains gets the prior."""
    labels = np.asarray(labels, dtype=np.int64)
    n, v = labels.shape
    logp = np.tile(np.log(prior), (n, 1))
    logc = np.log(confusion)
    for j in range(v):
        voted = labels[:, j] != ABSTAIN
        logp[voted] += logc[j][:, labels[voted, j]].T
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def weighted_mean(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the non-abstaining views' probabilities; NaN where all abstain (equal
    weights: the plain ensemble mean, ``selection.ensemble_proba``)."""
    probs = np.asarray(probs, dtype=np.float64)
    present = ~np.isnan(probs).any(axis=-1)
    w = present * np.asarray(weights, dtype=np.float64)[None, :]
    total = np.einsum("nvk,nv->nk", np.nan_to_num(probs, nan=0.0), w)
    norm = w.sum(axis=1)
    out = total / np.where(norm > 0, norm, 1.0)[:, None]
    out[norm <= 0] = np.nan
    return out


def log_linear_pool(probs: np.ndarray, weights: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """Weighted product of the views' probabilities, renormalised: (n, V, K) -> (n, K).

    A view that abstains on an item (a NaN row) is left out of that item's product; an item
    on which every view abstains gets a NaN row. ``weights`` (V,) scale each view's
    log-probabilities (1 = as it is, 0 = ignored)."""
    probs = np.asarray(probs, dtype=np.float64)
    n, v, k = probs.shape
    w = np.ones(v) if weights is None else np.asarray(weights, dtype=np.float64)
    present = ~np.isnan(probs).any(axis=-1)
    logp = np.log(np.clip(np.nan_to_num(probs, nan=1.0), eps, 1.0))
    total = np.einsum("nvk,nv->nk", logp, present * w[None, :])
    total -= total.max(axis=1, keepdims=True)
    out = np.exp(total)
    out /= out.sum(axis=1, keepdims=True)
    out[~present.any(axis=1)] = np.nan
    return out


def accuracy_weights(accuracy: np.ndarray, k: int) -> np.ndarray:
    """Log-odds weights from estimated accuracies, floored at 0: a view at or below chance
    (1/K) gets no say, a strong view a large one (the weighted-majority rule)."""
    acc = np.clip(np.asarray(accuracy, dtype=np.float64), 1e-3, 1 - 1e-3)
    chance = 1.0 / k
    return np.maximum(np.log(acc * (k - 1) / (1 - acc)) - np.log(chance * (k - 1) / (1 - chance)), 0.0)


__all__ = ["LabelModelFit", "accuracy_weights", "dawid_skene", "ds_posterior", "log_linear_pool", "weighted_mean"]
