"""How the views' evidence on an item becomes one posterior, chosen and weighted from gold.

A :class:`Combination` turns the label matrix's probabilities (n, V, K) into (n, K):
``single`` (one view), ``product`` (log-linear pool: the product of the views'
probabilities, each raised to its weight), ``mean`` (weighted mean), ``label_model``
(Dawid-Skene posterior from the views' votes) or ``best_view`` (the view with the best
out-of-fold accuracy alone: the floor when weak views would only blur a strong one).
Weights come from each view's temperature on its out-of-fold predictions of gold
(:func:`fitted_weights`), so a near-uniform, near-chance or overconfident view cannot drag
the result down.
:func:`fit_combination` chooses among them from gold only: ``product`` unless another is
better by a paired test over the out-of-fold gold predictions.

Pure functions and a frozen dataclass; nothing here touches a model or a store.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orchestrator.labelmodel import accuracy_weights, dawid_skene, ds_posterior, log_linear_pool, weighted_mean
from orchestrator.selection import label_matrix
from store.labels import ABSTAIN

#: What ``cotrain.combination`` may name; ``auto`` chooses among them (and ``best_view``).
COMBINATIONS = ("product", "label_model", "mean")
#: Items of the pool the label model is fitted on (its posterior then covers every item).
LABEL_MODEL_FIT_ITEMS = 20_000


@dataclass(frozen=True)
class Combination:
    """A fitted way to combine views. ``weights`` (V,); ``confusion``/``prior``: the label
    model's parameters (``label_model`` only); ``cv_accuracy`` (V,): each view's out-of-fold
    accuracy on gold (NaN when unknown); ``label_model_accuracy`` (V,) when a label model
    was fitted; ``scores``: out-of-fold accuracy of each candidate it was chosen among."""

    method: str
    weights: np.ndarray
    confusion: np.ndarray | None = None
    prior: np.ndarray | None = None
    cv_accuracy: np.ndarray | None = None
    label_model_accuracy: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def combine(self, probs: np.ndarray) -> np.ndarray:
        """(n, V, K) probabilities (NaN rows = abstain) -> (n, K); NaN rows where every view
        abstains (for the label model: where every view abstains too)."""
        probs = np.asarray(probs, dtype=np.float64)
        if self.method == "label_model":
            assert self.confusion is not None and self.prior is not None
            votes = label_matrix(probs)[0]
            out = ds_posterior(votes, self.confusion, self.prior)
            out[(votes == ABSTAIN).all(axis=1)] = np.nan
            return out
        if self.method == "mean":
            return weighted_mean(probs, self.weights)
        if self.method == "best_view":
            return probs[:, int(np.argmax(self.weights))].copy()
        if self.method == "single":  # one view: its own probabilities, exactly
            return _only_view(probs)
        return log_linear_pool(probs, self.weights)


def view_accuracy(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(V,) share of items each view labels right among those it votes on (NaN: none)."""
    votes = label_matrix(probs)[0]
    voted = votes != ABSTAIN
    right = (votes == np.asarray(y)[:, None]) & voted
    n = voted.sum(axis=0)
    return np.where(n > 0, right.sum(axis=0) / np.maximum(n, 1), np.nan)


def view_weights(cv_accuracy: np.ndarray | None, v: int, k: int) -> np.ndarray:
    """Weights in [0, 1]: log-odds of each view's out-of-fold accuracy over chance
    (``labelmodel.accuracy_weights``), scaled so the best view has 1. Views with no estimate,
    or a gold set on which every view is at chance, weigh 1."""
    if cv_accuracy is None or np.isnan(cv_accuracy).all():
        return np.ones(v)
    acc = np.where(np.isnan(cv_accuracy), np.nanmean(cv_accuracy), cv_accuracy)
    w = accuracy_weights(acc, k)
    return w / w.max() if w.max() > 0 else np.ones(v)


def view_temperatures(oof: np.ndarray, y: np.ndarray, min_votes: int = 2, eps: float = 1e-6) -> np.ndarray:
    """(V,) each view's inverse temperature on gold: the t in [0.01, 5] for which
    ``softmax(t * log p)`` has the least log loss on the out-of-fold predictions of the gold
    items it voted on; NaN for a view that voted on fewer than ``min_votes`` of them. Below
    1: the view is overconfident."""
    oof = np.asarray(oof, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    from scipy.optimize import minimize_scalar

    out = np.full(oof.shape[1], np.nan)
    for j in range(oof.shape[1]):
        voted = ~np.isnan(oof[:, j]).any(axis=1)
        if voted.sum() < max(min_votes, 1):
            continue
        logp = np.log(np.clip(oof[voted, j], eps, 1.0))
        own = logp[np.arange(int(voted.sum())), y[voted]]

        def nll(t: float) -> float:
            z = t * logp
            top = z.max(axis=1)
            return float((np.log(np.exp(z - top[:, None]).sum(axis=1)) + top - t * own).mean())

        out[j] = float(minimize_scalar(nll, bounds=(0.01, 5.0), method="bounded").x)
    return out


def fitted_weights(oof: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Weights in [0, 1] for pooling the views: each view's inverse temperature on gold
    (:func:`view_temperatures`), scaled so the largest is 1; a view at or below chance on
    gold (accuracy weight 0, :func:`view_weights`) keeps no say, unless every view is.
    Scaled, because the temperatures themselves (a product that is itself about
    calibrated) did worse over the same five seeds: Animal-MNIST 0.515, segment 1% 0.777 and
    news 5% labels 0.881 right, against 0.544, 0.784 and 0.916 scaled. The largest weight
    being 1, the most trusted view enters at its own sharpness, and p_correct, which never
    exceeds the pool's score, is never raised above what that view says.

    A product of calibrated views of independent errors needs no other weight (each view's
    calibrated probabilities already say how much it knows), and the temperature is what
    calibrates a view: one number fitted on one view's predictions, so a few gold items
    settle it. Measured at 1% gold, 5 seeds each:
    * accuracy weights cannot see that a view is overconfident: on Animal-MNIST the pixel
      view (0.31 right on test) kept 0.8 of the vision view's weight and pulled the product
      to 0.485, below the vision view alone; with temperatures 0.544;
    * weights fitted jointly to the pool's log loss silenced the weaker of two complementary
      views on image segments (0.753 against 0.782 with accuracy weights); temperatures
      0.785, and the seed whose pseudo-labels had cost 3 points now gains 3.
    A view that voted on fewer than 2K of the gold items (it abstains on the others) is not
    measured: it gets the median temperature of the views that are, not the bound of a fit
    to two lucky votes nor a neutral 1 that would outweigh every over-confident view. With
    one view, or no view measured, the accuracy weights are returned unchanged. ``mean``
    uses the same weights."""
    oof = np.asarray(oof, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    v = oof.shape[1]
    prior_w = view_weights(view_accuracy(oof, y) if len(y) else None, v, k)
    if v == 1 or not len(y):
        return prior_w
    t = view_temperatures(oof, y, min_votes=2 * k)
    if np.isnan(t).all():
        return prior_w
    t = np.where(np.isnan(t), np.nanmedian(t), t)
    w = np.where(prior_w > 0, t, 0.0) if (prior_w > 0).any() else t
    return w / w.max() if w.max() > 0 else prior_w


def best_view_weights(cv_accuracy: np.ndarray | None, v: int) -> np.ndarray:
    """``best_view``'s weights: 1 for the view with the best out-of-fold accuracy (the first
    view without an estimate), 0 for the others."""
    if cv_accuracy is None or np.isnan(cv_accuracy).all():
        return np.eye(v)[0]
    return np.eye(v)[int(np.nanargmax(np.nan_to_num(cv_accuracy, nan=-1.0)))]


def _right(post: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(m,) 1.0 where the combined label of a gold item is its gold label (0 where none)."""
    voted = ~np.isnan(post).any(axis=1)
    return ((np.nan_to_num(post, nan=-1).argmax(axis=1) == y) & voted).astype(np.float64)


def _significantly_better(right: dict[str, np.ndarray], candidates: list[str], z: float = 2.0) -> str:
    """The first candidate (the default, ``product``) unless another beats it on the same
    gold items by more than ``z`` standard errors of the paired difference; among those
    that do, the one with the best accuracy (ties: candidate order).

    Out-of-fold accuracy on a hundred gold items moves by several points between candidates
    that are equally good, so taking its argmax chose ``mean`` or ``best_view`` by chance
    and lost 1-3 points of test accuracy on segment and news (5 seeds each). A paired test
    keeps the theory-backed default unless the gold items say otherwise clearly."""
    first = candidates[0]
    best, best_gain = first, 0.0
    for name in candidates[1:]:
        d = right[name] - right[first]
        gain = float(d.mean())
        se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else np.inf
        if gain > z * se and gain > best_gain:
            best, best_gain = name, gain
    return best


def fit_combination(method: str, oof: np.ndarray, oof_y: np.ndarray, pool_votes: np.ndarray | None, k: int,
                    rng: np.random.Generator) -> Combination:
    """Fit (and, for ``auto``, choose) the combination.

    ``oof``: (m, V, K) out-of-fold probabilities of the gold items with known folds, ``oof_y``
    their labels; ``pool_votes``: (n, V) the pool's label matrix (None at a round that
    predicts no pool). One view: ``single``. ``auto`` scores ``product``, ``mean``, (three
    or more views) ``label_model`` and ``best_view`` by out-of-fold accuracy on gold and
    keeps ``product`` unless another is significantly better (:func:`_significantly_better`);
    the label model it scores is fitted on the pool's votes alone, so
    the gold it is scored on never shaped it. The label model kept is then refitted with the
    out-of-fold gold votes clamped to their labels beside the pool's votes."""
    m, v = oof.shape[0], oof.shape[1]
    cv = view_accuracy(oof, oof_y) if m else None
    w = fitted_weights(oof, oof_y, k)
    if v == 1:
        return Combination("single", w, cv_accuracy=cv)
    candidates = ["product", "mean", "label_model", "best_view"] if method == "auto" else [method]
    if method == "auto" and v < 3:
        candidates.remove("label_model")  # two sources do not identify a label model
    lm_fit = None
    votes = _fit_sample(pool_votes, rng) if pool_votes is not None else np.zeros((0, v), dtype=np.int64)
    if "label_model" in candidates and len(votes) >= 10 * k:
        lm_fit = dawid_skene(votes, k)
    elif method == "auto" and "label_model" in candidates:
        candidates.remove("label_model")  # too few pool votes to fit it on
    scores: dict[str, float] = {}
    if m and len(candidates) > 1:
        right = {}
        for name in candidates:
            lm = (lm_fit.confusion, lm_fit.prior) if name == "label_model" and lm_fit else (None, None)
            wn = best_view_weights(cv, v) if name == "best_view" else w
            right[name] = _right(Combination(name, wn, *lm).combine(oof), oof_y)
            scores[name] = float(right[name].mean())
        chosen = _significantly_better(right, candidates)
    else:
        chosen = candidates[0]
    lm_acc = lm_fit.accuracy if lm_fit is not None else None  # recorded even when not chosen
    if chosen == "best_view":  # the weights say which view: all of it, none of the others
        return Combination(chosen, best_view_weights(cv, v), cv_accuracy=cv, label_model_accuracy=lm_acc,
                           scores=scores)
    if chosen != "label_model":
        return Combination(chosen, w, cv_accuracy=cv, label_model_accuracy=lm_acc, scores=scores)
    gold_votes = label_matrix(oof)[0] if m else np.zeros((0, v), dtype=np.int64)
    fit = dawid_skene(np.concatenate([gold_votes, votes]), k,
                      np.concatenate([np.asarray(oof_y, dtype=np.int64), np.full(len(votes), ABSTAIN)]))
    return Combination("label_model", w, fit.confusion, fit.prior, cv_accuracy=cv,
                       label_model_accuracy=fit.accuracy, scores=scores)


def _fit_sample(votes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """At most ``LABEL_MODEL_FIT_ITEMS`` rows of the pool's votes (a random subset)."""
    if len(votes) <= LABEL_MODEL_FIT_ITEMS:
        return np.asarray(votes, dtype=np.int64)
    keep = np.sort(rng.choice(len(votes), LABEL_MODEL_FIT_ITEMS, replace=False))
    return np.asarray(votes[keep], dtype=np.int64)


def pool_combiners(oof: np.ndarray, oof_y: np.ndarray, v: int, k: int) -> dict[str, Any]:
    """The combinations a round computes over the pool while predicting it (product and
    mean weighted as :func:`fit_combination` weighs them, from the out-of-fold gold
    predictions ``oof`` (m, V, K) and labels ``oof_y``, and the best view), by name. Names
    that map to one function share one array (:func:`orchestrator.steps.empty_prediction`)."""
    cv_accuracy = view_accuracy(oof, oof_y) if len(oof_y) else None
    w = fitted_weights(oof, oof_y, k)
    if v == 1:  # a lone view is its own combination (``single``): one copy of its probabilities
        return {"product": _only_view, "mean": _only_view, "best_view": _only_view}
    return {"product": Combination("product", w).combine, "mean": Combination("mean", w).combine,
            "best_view": Combination("best_view", best_view_weights(cv_accuracy, v)).combine}


def _only_view(probs: np.ndarray) -> np.ndarray:
    """(n, 1, K) -> (n, K): a single view's probabilities, its NaN rows kept."""
    return np.array(probs[:, 0], dtype=np.float64)


__all__ = ["COMBINATIONS", "Combination", "best_view_weights", "fit_combination", "fitted_weights", "pool_combiners",
           "view_accuracy", "view_temperatures", "view_weights", "weighted_mean"]
