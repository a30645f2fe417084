"""Shadow runs: the whole co-training procedure replayed once per fold of the gold items,
without that fold, so the fold's gold labels measure it honestly.

Why. ``p_correct`` is calibrated on out-of-fold predictions of the gold items. Fitting a
fold's views on the other gold items plus the run's pseudo-labels is not honest after round
0: those pseudo-labels were chosen by views that had seen the held-out fold, so its items'
neighbours arrive already labelled by them. On image segments at 1% gold the out-of-fold
accuracy climbed to 1.0 over the rounds while the pseudo-labels' true precision fell to
0.6-0.75, and ``auto`` went on accepting at an estimated 0.9.

How. Each fold f keeps its own pseudo-labels: round by round, the views are fitted on the
gold items outside f plus fold f's pseudo-labels (these fits replace the plain
cross-validation fits, so they cost no extra fit), predict f's gold items (the honest
out-of-fold evidence the round calibrates on) and a fixed sample of the pool, and fold f
selects from that sample with the round's combination, calibration and policy, as the run
itself does. Folds are fixed for the run (stratified over the gold items by a per-item key
drawn from the seed), so a shadow's history stays its own. Every shadow pick is stored
(``shadow_labels``), so a resumed run continues the same shadows.

Shadows pay nothing per call: an LLM view takes part only when its prompts do not depend on
what it trains on (no few-shot demonstrations, ``fixed_prompts``), so a shadow's predictions
are cache hits of the run's own calls (only the calibration, applied after the cache, is
the shadow's). With demonstrations, or with ``pool_sample`` (the run then predicts fewer pool
items than a shadow's sample holds), a shadow would pay for its pool predictions again, and
the run falls back to the plain cross-validation. Failed calls are not cached: an item whose
call failed is asked again by each shadow (with a failing endpoint, set ``shadows: false``).

A shadow is the run's selection, simplified where the difference does not bear on honesty:
every view trains on all of a shadow's picks (``feeding: shared``, whatever the run's
feeding), candidates are ranked by posterior (not the cut statistic), debate verdicts and
escalated answers have no shadow, and a shadow labels at most its sample.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from orchestrator.calibration import gold_folds
from orchestrator.evidence import RoundEvidence, top
from orchestrator.selection import select_adaptive, training_weights
from orchestrator.state import LabelState
from orchestrator.steps import fit_views, predict_test
from store.database import Store
from store.queries import rounds_since_reviews, shadow_labels
from store.writers import RoundWriter
from views.base import LABEL_SOURCE_COLUMN, Plannable, View

log = logging.getLogger("cotrain")

#: Pool items each shadow predicts and selects from (a fixed random sample when the pool is larger).
SHADOW_POOL = 20_000


@dataclass
class Shadows:
    """The run's shadows. ``fold`` (n_items,): the fold of each gold item (-1: not gold, or
    in no fold because its class has a single gold item, which then trains every shadow and
    is scored by none, as in ``calibration.gold_folds``); ``sample``: sorted positions of the pool items the shadows
    select from; ``pseudo``/``conf`` (n_folds, len(sample)): each shadow's pseudo-label of
    each sample item (-1: none), so memory grows with the sample, not the pool."""

    fold: np.ndarray
    sample: np.ndarray
    pseudo: np.ndarray
    conf: np.ndarray

    @property
    def n_folds(self) -> int:
        return int(self.pseudo.shape[0])

    @classmethod
    def start(cls, gold: np.ndarray, trainable: np.ndarray, n_folds: int, seed: int,
              sample_size: int = SHADOW_POOL) -> Shadows:
        """Fixed folds over the gold items (``gold``: (n,) label or -1; ``trainable``: (n,)
        items that are not test items) and a fixed pool sample, both from ``seed`` alone."""
        rng = np.random.default_rng([int(seed), 0x5AD0])
        key = rng.random(len(gold))
        fold = np.full(len(gold), -1, dtype=np.int8)
        at = np.flatnonzero((gold >= 0) & trainable)
        fold[at] = gold_folds(gold[at], n_folds, None, key=key[at])  # n_folds >= 2: shadows.wanted checks it
        pool = np.flatnonzero(trainable & (gold < 0))
        if pool.size > sample_size:
            pool = np.sort(pool[np.argsort(key[pool], kind="stable")[:sample_size]])
        return cls(fold=fold, sample=pool, pseudo=np.full((n_folds, len(pool)), -1, dtype=np.int16),
                   conf=np.zeros((n_folds, len(pool)), dtype=np.float32))

    def usable(self) -> bool:
        """Whether any gold item has a fold (else there is nothing honest to score on)."""
        return bool((self.fold >= 0).any())

    def restore(self, fold_idx: np.ndarray, pos: np.ndarray, label: np.ndarray, conf: np.ndarray) -> bool:
        """Record picks: shadow ``fold_idx[i]`` labels item position ``pos[i]``. False (and
        nothing recorded) when a position is not in the sample or a fold is out of range:
        stored picks made under another sample or fold count."""
        at = np.minimum(np.searchsorted(self.sample, pos), max(len(self.sample) - 1, 0))
        fold_idx = np.asarray(fold_idx, dtype=np.int64)
        if len(pos) and (not len(self.sample) or (self.sample[at] != pos).any()
                         or fold_idx.min() < 0 or fold_idx.max() >= self.n_folds):
            return False
        self.pseudo[fold_idx, at] = label
        self.conf[fold_idx, at] = conf
        return True

    def training_set(self, f: int, gold: np.ndarray, pseudo_weight: float | str,
                     align: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, labels and weights shadow ``f`` trains on: the gold items outside
        fold f and its own pseudo-labels, in position order; ``align``: the pseudo-labels'
        weights aligned to the gold class shares, as the run's (``selection.aligned_scale``)."""
        mine = np.flatnonzero(self.pseudo[f] >= 0)
        kept = np.flatnonzero((gold >= 0) & (self.fold != f))
        pos = np.concatenate([kept, self.sample[mine]])
        y = np.concatenate([gold[kept], self.pseudo[f, mine]]).astype(np.int64)
        conf = np.concatenate([np.ones(len(kept)), self.conf[f, mine]])
        w = training_weights(y, np.arange(len(y)) < len(kept), conf, pseudo_weight, align)
        order = np.argsort(pos, kind="stable")  # position order, as the run's own training set
        return pos[order], y[order], w[order]

    def left(self, f: int) -> np.ndarray:
        """Pool-sample positions shadow ``f`` has not labelled yet."""
        return self.sample[self.pseudo[f] < 0]


def train_gold(state: LabelState) -> np.ndarray:
    """(n,) gold label of each training item, -1 for pool and test items."""
    return np.where(state.is_test, -1, state.gold).astype(np.int16)


def wanted(cfg: Any, views: list[View]) -> bool:
    """Whether a run keeps shadow runs: ``shadows: true``, or ``auto`` with ``policy: auto``,
    cross-validation over gold, and no view whose shadow predictions would be paid for (an
    LLM view with demonstrations: its prompts change with what it trains on)."""
    c = cfg.cotrain
    if c.shadows is False or c.calibration_folds < 2:
        return False
    # a paid view without ``fixed_prompts`` (a plug-in, say) counts as paying again; with
    # ``pool_sample`` the run predicts fewer items per round than a shadow's sample holds
    paid = any(isinstance(v, Plannable) and (c.pool_sample or not getattr(v, "fixed_prompts", False))
               for v in views)
    return c.shadows is True or (c.policy == "auto" and not paid)


def open_shadows(cfg: Any, store: Store, run_id: int, state: LabelState, views: list[View]) -> Shadows | None:
    """The run's shadows, with the picks of its committed rounds put back; None when the
    run keeps none or no gold item can be held out. Reviews change the gold set (new items,
    or a corrected label), and the folds are dealt over it: so only the picks of rounds run
    since the last review import are restored, and a run reopened by one starts afresh."""
    if not wanted(cfg, views):
        return None
    sh = Shadows.start(train_gold(state), ~state.is_test, cfg.cotrain.calibration_folds, cfg.seed)
    if not sh.usable():
        return None
    since = rounds_since_reviews(store, run_id)
    t = shadow_labels(store, run_id, since) if since is not None else None
    if t is not None and not t.num_rows:  # a run made before its views had shadows, or shadows that picked nothing
        log.warning("run %d: no shadow picks are stored for its committed rounds; the shadows start from the gold "
                    "labels alone, so this round's estimate may differ from the last one's", run_id)
    if t is not None and t.num_rows and not sh.restore(
            t.column("fold").to_numpy(), t.column("row_idx").to_numpy(), t.column("label").to_numpy(),
            t.column("confidence").to_numpy()):
        log.warning("run %d: stored shadow picks do not fit this run's folds and sample; shadows start afresh",
                    run_id)
    return sh


def write_picks(write: RoundWriter, picks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """File the round's shadow picks (in the round's transaction)."""
    if picks:
        fold = np.concatenate([np.full(len(p[0]), f) for f, p in enumerate(picks)])
        write.shadow_labels(fold, *(np.concatenate([p[i] for p in picks]) for i in range(3)))


@dataclass
class ShadowRound:
    """One round's shadow fits: ``oof`` (m, V, K) and ``oof_y`` (m,) for the gold items with
    a fold (fold order, then position); per fold, the pool-sample positions it has left and
    their probabilities (n_f, V, K)."""

    oof: np.ndarray
    oof_y: np.ndarray
    left: list[np.ndarray]
    probs: list[np.ndarray]


def shadow_crossfit(views: list[View], shadows: Shadows, state: LabelState, cot: Any,
                    fetch: Callable[[np.ndarray], pd.DataFrame], k: int, batch_size: int,
                    advance: Callable[..., Any], with_pool: bool = True) -> ShadowRound:
    """Fit every view once per shadow and predict that fold's gold items and (``with_pool``:
    not at the last round, which selects nothing) the pool sample the shadow has left
    (``fetch(positions)``: the items' fields); ``cot``: the run's ``cotrain`` section (its
    ``pseudo_weight`` and ``align_pseudo_labels``). The views are left fitted on the last shadow:
    fit them on the run's own training set afterwards."""
    gold = train_gold(state)
    transductive = any(getattr(v, "transductive", False) for v in views)
    folds = [f for f in range(shadows.n_folds) if (shadows.fold == f).any()]
    oof_parts, y_parts, lefts, probs = [], [], [], []
    for f in range(shadows.n_folds):
        if f not in folds:
            lefts.append(np.zeros(0, dtype=np.int64))
            probs.append(np.zeros((0, len(views), k), dtype=np.float32))
            continue
        pos, y, w = shadows.training_set(f, gold, cot.pseudo_weight, bool(cot.align_pseudo_labels))
        train = fetch(pos)
        train[LABEL_SOURCE_COLUMN] = state.label_sources(pos)
        fit_views(views, train, y, w, [np.ones(len(pos), dtype=bool)] * len(views), lambda *a: None)
        held = np.flatnonzero(shadows.fold == f)
        left = shadows.left(f)
        # held-out gold and the pool in one prediction: a transductive view (graph) then spreads
        # over both in one graph, as when it labels the pool, so its gold scores calibrate the
        # regime they are applied to (held-out gold alone spread over a graph of a few gold
        # items: news 5% with a graph view accepted labels at an estimated 0.9 that were 0.59 right).
        # The last round needs no pool scores, but such a view's gold scores still need the pool.
        context = left if with_pool or transductive else np.zeros(0, dtype=np.int64)
        both = _predict(views, fetch, np.concatenate([held, context]), k, batch_size)
        oof_parts.append(both[:len(held)])
        y_parts.append(gold[held].astype(np.int64))
        rest = left if with_pool else np.zeros(0, dtype=np.int64)
        lefts.append(rest)
        probs.append(both[len(held):len(held) + len(rest)].astype(np.float32))
        advance("shadows", "fit", f + 1, len(folds))
    oof = np.concatenate(oof_parts) if oof_parts else np.zeros((0, len(views), k))
    oof_y = np.concatenate(y_parts) if y_parts else np.zeros(0, dtype=np.int64)
    return ShadowRound(oof, oof_y, lefts, probs)


def _predict(views: list[View], fetch: Callable[[np.ndarray], pd.DataFrame], pos: np.ndarray, k: int,
             batch_size: int) -> np.ndarray:
    """(len(pos), V, K) every view's probabilities of the items at ``pos``, in batches."""
    parts = [predict_test(views, fetch(pos[lo:lo + batch_size]), k) for lo in range(0, len(pos), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, len(views), k))


def pool_reference(sr: ShadowRound, pool: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shadow, the items it and the run both have left: (indices into ``pool``, the run's
    sorted pool positions; the shadow's probabilities of those items (m, V, K)). The same items seen
    by both, so the run's scores can be put on the shadows' scale item for item, whatever
    each has labelled already."""
    out = []
    for rest, probs in zip(sr.left, sr.probs):
        _, at_run, at_shadow = np.intersect1d(pool, rest, assume_unique=True, return_indices=True)
        if len(at_run):
            out.append((at_run, probs[at_shadow]))
    return out


def shadow_select(sr: ShadowRound, evidence: RoundEvidence, rounds_left: int,
                  min_precision: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each shadow's picks this round, made as ``auto`` makes the run's own: the round's
    combination and calibration over the shadow's pool sample, then ``select_adaptive``
    (ranked by posterior) with the volume that spreads what it has left over the rounds left. Returns per fold
    (positions, labels, combined posterior of the label)."""
    out = []
    for rest, probs in zip(sr.left, sr.probs):
        if not len(rest):
            out.append((rest, np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float32)))
            continue
        post = evidence.combination.combine(probs.astype(np.float64))
        score = top(post)
        p = np.where(np.isnan(score), np.nan, evidence.calibrator(np.nan_to_num(score, nan=0.5)))
        volume = int(np.ceil(len(rest) / max(1, rounds_left)))
        sel = select_adaptive(post, p, evidence.prior, volume, min_precision)
        out.append((rest[sel.item], sel.label.astype(np.int16), post[sel.item, sel.label].astype(np.float32)))
    return out


def accept(shadows: Shadows, picks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Record each shadow's picks (after the round committed)."""
    for f, (pos, label, conf) in enumerate(picks):
        shadows.restore(np.full(len(pos), f), pos, label, conf)


__all__ = ["SHADOW_POOL", "ShadowRound", "Shadows", "accept", "open_shadows", "pool_reference",
           "shadow_crossfit", "shadow_select", "train_gold", "wanted", "write_picks"]
