"""The steps of a round that touch models: fit every view, evaluate on held-out items, and
predict the pool in batches into the label matrix. Plain functions over views and frames;
the orchestrator's ``RoundRunner`` sequences them and the store's writers file their output.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.selection import ABSTAIN, ensemble_proba, label_matrix, pairwise_agreement
from views.base import RoundAware, View
from views.proba import checked_proba

log = logging.getLogger("cotrain")

#: ``advance(view, phase, n_done, total)``: progress callback (the run's reporter).
Advance = Callable[[str, str, int, int], None]


@dataclass
class FitResult:
    seconds: dict[str, float] = field(default_factory=dict)
    n_train: dict[str, int] = field(default_factory=dict)


def fit_views(views: Sequence[View], train: pd.DataFrame, y: np.ndarray, w: np.ndarray,
              masks: Sequence[np.ndarray], advance: Advance) -> FitResult:
    """Fit view j on the training rows ``masks[j]`` selects; a view's UserWarnings are logged."""
    out = FitResult()
    for j, view in enumerate(views):
        m = masks[j]
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if m.all():  # every row (round 0's gold, `shared` feeding, one view): no copy (at 3M, 140 MB)
                view.fit(train, y, w)
            else:
                view.fit(train[m].reset_index(drop=True), y[m], w[m])
        for wn in caught:
            if issubclass(wn.category, UserWarning):
                log.warning("%s", wn.message)
        out.seconds[view.name] = time.perf_counter() - t
        out.n_train[view.name] = int(m.sum())
        advance(view.name, "fit", 1, 1)
    return out


def set_round(views: Sequence[View], r: int) -> None:
    """Tell each view that keeps per-round state (``views.base.RoundAware``) that round r begins."""
    for v in views:
        if isinstance(v, RoundAware):
            v.set_round(r)


def metrics(y_true: np.ndarray, proba: np.ndarray) -> tuple[float | None, float | None]:
    """(accuracy, macro-F1) of probabilities against labels; an abstention counts as wrong.
    None for both when there are no labels, or when the view abstained on every item: it was
    not measured (a 0.000 beside a view whose budget ran out read as a view that is always
    wrong)."""
    from sklearn.metrics import f1_score

    voted = ~np.isnan(proba).any(axis=1) if len(y_true) else np.zeros(0, dtype=bool)
    if not voted.any():
        return None, None
    pred = np.where(voted, np.nan_to_num(proba, nan=-1).argmax(axis=1), -1)
    acc = float((pred == y_true).mean())
    f1 = float(f1_score(y_true, pred, labels=np.unique(y_true), average="macro", zero_division=0))
    return acc, f1


def crossfit(views: Sequence[View], train: pd.DataFrame, y: np.ndarray, w: np.ndarray, masks: Sequence[np.ndarray],
             gold_rows: np.ndarray, folds: np.ndarray, k: int) -> np.ndarray:
    """Out-of-fold probabilities of the gold rows: for each fold, every view is fitted on
    its training rows less that fold's gold rows and predicts them. (m, V, K) for the
    ``gold_rows`` (positions in ``train``) whose fold is not -1, in that order. The views are
    left fitted on the last fold: fit them on everything afterwards."""
    gold_rows = np.asarray(gold_rows, dtype=np.int64)
    used = gold_rows[folds >= 0]
    out = np.full((len(used), len(views), k), np.nan)
    where = {int(r): i for i, r in enumerate(used)}
    for f in np.unique(folds[folds >= 0]):
        held = gold_rows[folds == f]
        hold = np.zeros(len(train), dtype=bool)
        hold[held] = True
        fit_views(views, train, y, w, [m & ~hold for m in masks], lambda *a: None)
        frame = train.iloc[held].reset_index(drop=True)
        rows = [where[int(r)] for r in held]
        for j, view in enumerate(views):
            out[rows, j] = checked_proba(view, frame, k)
    return out


@dataclass
class Evaluation:
    probs: np.ndarray                                   # (n_test, V, K)
    scores: dict[str, tuple[float | None, float | None]]  # view or "ensemble" -> (accuracy, macro-F1)


def predict_test(views: Sequence[View], test: pd.DataFrame, k: int) -> np.ndarray:
    """Every view's probabilities on the held-out items, (n_test, V, K). Run outside the
    round's transaction: an LLM view's answers are committed as they arrive."""
    return np.stack([checked_proba(v, test, k) for v in views], axis=1) if len(test) else np.zeros((0, len(views), k))


def evaluate_views(names: Sequence[str], probs: np.ndarray, y_test: np.ndarray, k: int,
                   combine: Callable[[np.ndarray], np.ndarray] = ensemble_proba) -> Evaluation:
    """Every view's and the ensemble's scores on the held-out items from their probabilities
    (:func:`predict_test`); the ensemble is ``combine`` of them (the round's combination)."""
    scores = {name: metrics(y_test, probs[:, j]) for j, name in enumerate(names)}
    scores["ensemble"] = metrics(y_test, combine(probs) if len(probs) else np.zeros((0, k)))
    return Evaluation(probs, scores)


@dataclass
class PoolPrediction:
    """The label matrix of the pool (kept compact: int16 labels, float32 confidences: it is
    the only per-item state a round holds) and the ensemble's label of each item."""

    labels: np.ndarray     # (n, V) int16, ABSTAIN where a view abstains
    conf: np.ndarray       # (n, V) float32, NaN where a view abstains
    ensemble: np.ndarray   # (n,) int16
    seconds: dict[str, float] = field(default_factory=dict)
    #: name -> (n, K) float32: each combination of the views' probabilities asked for
    combined: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, n_views: int) -> PoolPrediction:
        return cls(np.zeros((0, n_views), dtype=np.int16), np.zeros((0, n_views), dtype=np.float32),
                   np.zeros(0, dtype=np.int16))


#: ``sink(idx, probs, labels, conf)``: receives each predicted batch (to be stored); ``idx``
#: are the batch's positions in the pool.
BatchSink = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
Combiners = dict[str, Callable[[np.ndarray], np.ndarray]]


def empty_prediction(views: Sequence[View], n: int, k: int, combiners: Combiners | None) -> PoolPrediction:
    """The label matrix of ``n`` pool items before any is predicted (every entry abstains).
    Combinations given by one function (a lone view's product, mean and best view are all
    its probabilities) share one (n, K) array: at 3M items, 48 MB and 1 s a run less."""
    shared: dict[int, np.ndarray] = {}
    for fn in (combiners or {}).values():
        if id(fn) not in shared:
            shared[id(fn)] = np.full((n, k), np.nan, dtype=np.float32)
    combined = {name: shared[id(fn)] for name, fn in (combiners or {}).items()}
    return PoolPrediction(np.full((n, len(views)), ABSTAIN, dtype=np.int16),
                          np.full((n, len(views)), np.nan, dtype=np.float32),
                          np.full(n, ABSTAIN, dtype=np.int16), {v.name: 0.0 for v in views}, combined)


def _rows(idx: np.ndarray) -> np.ndarray | slice:
    """``idx`` as a slice when it is a run of consecutive positions (a local batch): writing
    through a slice skips fancy indexing's gather of positions."""
    idx = np.asarray(idx)
    if (idx.dtype.kind in "iu" and len(idx) and idx[0] >= 0 and int(idx[-1]) - int(idx[0]) + 1 == len(idx)
            and (len(idx) == 1 or (np.diff(idx) == 1).all())):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def fill_batch(out: PoolPrediction, idx: np.ndarray, probs: np.ndarray, combiners: Combiners | None,
               sink: BatchSink | None) -> None:
    """File one predicted batch, the pool items at positions ``idx`` with every view's
    probabilities (len(idx), V, K), into the label matrix and the combinations; hand it
    to ``sink``. The one place a batch's probabilities become the round's state, whichever
    engine predicted them."""
    lab, conf = label_matrix(probs)
    at = _rows(idx)
    out.labels[at], out.conf[at] = lab, conf
    # a lone view is its own ensemble (same NaN rows, same argmax), so it is not recomputed
    out.ensemble[at] = lab[:, 0] if probs.shape[1] == 1 else label_matrix(ensemble_proba(probs)[:, None, :])[0][:, 0]
    done: set[int] = set()
    for name, combine in (combiners or {}).items():
        if id(combine) not in done:  # names sharing a function share its array: filled once
            done.add(id(combine))
            out.combined[name][at] = combine(probs)
    if sink is not None:
        sink(idx, probs, lab, conf)


def predict_into(probs: np.ndarray, views: Sequence[View], cols: Sequence[int], frame: pd.DataFrame,
                 out: PoolPrediction, advance: Advance, total: int) -> None:
    """Fill ``probs[:, j]`` with view j's probabilities of ``frame`` for each j in ``cols``,
    adding each view's seconds to ``out`` and advancing its progress by the batch."""
    for j in cols:
        view = views[j]
        t = time.perf_counter()
        probs[:, j] = checked_proba(view, frame, probs.shape[2])
        out.seconds[view.name] += time.perf_counter() - t
        advance(view.name, "predict", len(frame), total)


def predict_pool(views: Sequence[View], n: int, batch_size: int, fetch: Callable[[int, int], pd.DataFrame],
                 k: int, advance: Advance, sink: BatchSink | None = None,
                 combiners: Combiners | None = None) -> PoolPrediction:
    """Predict ``n`` pool items in batches (``fetch(lo, hi)`` gives the frame of items lo..hi)
    into the label matrix; probabilities are streamed to ``sink`` batch by batch, never held:
    what is kept is the label matrix and, per entry of ``combiners``, the combined (n, K)."""
    out = empty_prediction(views, n, k, combiners)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        probs = np.empty((hi - lo, len(views), k))
        predict_into(probs, views, range(len(views)), fetch(lo, hi), out, advance, n)
        fill_batch(out, np.arange(lo, hi), probs, combiners, sink)
    return out


def agreement_with_ensemble(pred: PoolPrediction, j: int) -> float | None:
    """Share of the pool where view j and the ensemble both vote and agree."""
    if not pred.labels.shape[0]:
        return None
    both = (pred.labels[:, j] != ABSTAIN) & (pred.ensemble != ABSTAIN)
    return float((pred.labels[both, j] == pred.ensemble[both]).mean()) if both.any() else None


def view_pairs(pred: PoolPrediction) -> list[tuple[int, int, int, float | None]]:
    """Pairwise agreement between views over the pool (empty when nothing was predicted)."""
    return pairwise_agreement(pred.labels) if pred.labels.shape[0] else []


__all__ = ["BatchSink", "Combiners", "Evaluation", "FitResult", "PoolPrediction", "agreement_with_ensemble", "crossfit",
           "empty_prediction", "evaluate_views", "fill_batch", "fit_views", "metrics", "predict_into", "predict_pool",
           "predict_test", "set_round", "view_pairs"]
