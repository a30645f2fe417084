"""A round's evidence: the views' probabilities combined into one posterior per pool item,
with the probability that its label is right, all estimated from gold labels only.

``assess`` fits the round's :class:`~orchestrator.combination.Combination` (chosen by
out-of-fold accuracy on gold when ``combination: auto``) and a calibration map from its
top probability to p_correct (Platt scaling on the out-of-fold gold predictions), then
applies both to the pool. ``merge_adaptive`` turns the adaptive selection into the
``Merged`` the writers and the debate step take. Pure functions over arrays.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from orchestrator.calibration import Calibrator, ScoreMap, accuracy_prior, fit_calibrator, fit_score_map
from orchestrator.combination import Combination, fit_combination
from orchestrator.labelmodel import dawid_skene, ds_posterior
from orchestrator.selection import ABSTAIN, AdaptiveSelection, Merged, find_disputes, select_threshold

log = logging.getLogger("cotrain")


@dataclass(frozen=True)
class RoundEvidence:
    """``combination`` and ``calibrator`` fitted this round; over the pool: ``posterior``
    (n, K; NaN rows where no view voted) and ``p_correct`` (n,) of its top label; ``prior``:
    (K,) estimated class shares (gold and pool posterior); ``score_map``: the run's scores
    onto the shadows' scale before calibration (identity without shadows)."""

    combination: Combination
    calibrator: Calibrator
    posterior: np.ndarray
    p_correct: np.ndarray
    prior: np.ndarray
    score_map: ScoreMap = ScoreMap()

    @property
    def label(self) -> np.ndarray:
        """The combined label of each pool item (ABSTAIN where no view voted)."""
        voted = ~np.isnan(self.posterior).any(axis=1)  # a row's argmax is read only where it has no NaN
        return np.where(voted, self.posterior.argmax(axis=1), ABSTAIN).astype(np.int16)

    def p_correct_of(self, item: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Calibrated probability that ``label`` is right for pool items ``item`` (a label
        other than the combined one is scored by its own posterior share)."""
        if not len(item):
            return np.zeros(0)
        return self.calibrator(self.score_map(self.posterior[item, np.asarray(label, dtype=np.int64)]))


def top(posterior: np.ndarray) -> np.ndarray:
    """(n,) top probability per row, NaN for NaN rows."""
    voted = ~np.isnan(posterior).any(axis=1)  # a row's max is read only where it has no NaN
    return np.where(voted, posterior.max(axis=1), np.nan)


def estimate_prior(gold_counts: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """Class shares: the mean of the gold shares and the pool's mean combined posterior
    (either alone when the other is missing; uniform when both are)."""
    k = len(gold_counts)
    parts = []
    if gold_counts.sum() > 0:
        parts.append(gold_counts / gold_counts.sum())
    voted = ~np.isnan(posterior).any(axis=1) if len(posterior) else np.zeros(0, dtype=bool)
    if voted.all() and len(posterior):  # the common case, without a copy of the pool's posterior
        parts.append(posterior.mean(axis=0))
    elif voted.any():
        parts.append(posterior[voted].mean(axis=0))
    prior = np.mean(parts, axis=0) if parts else np.full(k, 1.0 / k)
    return prior / prior.sum()


def pool_posterior(comb: Combination, combined: dict[str, np.ndarray], votes: np.ndarray) -> np.ndarray:
    """The pool's posterior under ``comb``: the batch-combined array when the prediction step
    kept one for it, else (the label model) from the votes."""
    if comb.method == "single":  # one view: the product is that view
        return np.asarray(combined["product"], dtype=np.float64)
    if comb.method in combined:
        return np.asarray(combined[comb.method], dtype=np.float64)
    assert comb.confusion is not None and comb.prior is not None
    out = ds_posterior(votes, comb.confusion, comb.prior)
    out[(np.asarray(votes) == ABSTAIN).all(axis=1)] = np.nan
    return out


def assess(method: str, oof: np.ndarray, oof_y: np.ndarray, combined: dict[str, np.ndarray] | None,
           votes: np.ndarray | None, gold_counts: np.ndarray, k: int, rng: np.random.Generator,
           reference: list[tuple[np.ndarray, np.ndarray]] | None = None, folds_asked: bool = True) -> RoundEvidence:
    """Fit the combination and the calibration on the out-of-fold gold predictions (``oof``,
    ``oof_y``) and the pool's votes, and score the pool (``combined``: the prediction step's
    batch combinations; None at a round that predicts no pool). ``reference``: per shadow
    run, pool items it predicted (their indices in the pool) with its probabilities of them
    (m, V, K): the same items' scores from the run and from the shadows put the run's scores
    on the calibrator's scale (:class:`~orchestrator.calibration.ScoreMap`). ``folds_asked``:
    the config asks for gold folds (``calibration_folds`` 2 or more), so a round without any
    held-out gold says its estimate is uncalibrated."""
    comb = fit_combination(method, oof, oof_y, votes, k, rng)
    cal = Calibrator()
    if len(oof_y):
        post = comb.combine(oof)
        ok = ~np.isnan(post).any(axis=1)
        right = post[ok].argmax(axis=1) == np.asarray(oof_y)[ok]
        cal = fit_calibrator(top(post[ok]), right, prior=accuracy_prior(right))
    if combined is None or votes is None:
        empty = np.zeros((0, k))
        return RoundEvidence(comb, cal, empty, np.zeros(0), estimate_prior(gold_counts, empty))
    post = pool_posterior(comb, combined, votes)
    score = top(post) if len(oof_y) else uncalibrated_score(post, combined, votes, k)
    if folds_asked and not len(oof_y) and len(post):  # a probe accepted at an estimated 0.99 what was 0.84 right
        log.warning("no gold label can be held out (one per class): p_correct is the views' own estimate, not "
                    "calibrated on gold, and may be optimistic; a second gold label per class makes it honest")
    smap = ScoreMap()
    if len(oof_y) and reference:
        run = np.concatenate([score[at] for at, _ in reference])
        shadow = np.concatenate([top(comb.combine(np.asarray(p, dtype=np.float64))) for _, p in reference])
        both = np.isfinite(run) & np.isfinite(shadow)  # items one side abstains on would skew the other's quantiles
        smap = fit_score_map(run[both], shadow[both])
    p = np.where(np.isnan(score), np.nan, cal(smap(np.nan_to_num(score, nan=0.5))))
    return RoundEvidence(comb, cal, post, p, estimate_prior(gold_counts, post), smap)


def uncalibrated_score(post: np.ndarray, combined: dict[str, np.ndarray], votes: np.ndarray, k: int) -> np.ndarray:
    """p_correct when no gold item can be held out (one gold label per class, nothing else
    of its class yet): with three or more views the Dawid-Skene posterior of the combined
    label, fitted on the pool's votes alone (the label model's own estimate); with fewer,
    the weighted mean's probability of it, which unlike the product is not sharpened by
    counting agreeing views as independent evidence."""
    label = np.nan_to_num(post, nan=-1.0).argmax(axis=1)
    if votes.shape[1] >= 3 and len(votes) >= 10 * k:
        fit = dawid_skene(np.asarray(votes, dtype=np.int64), k)
        ref = ds_posterior(votes, fit.confusion, fit.prior)
    else:
        ref = combined["mean"]
    out = np.asarray(ref[np.arange(len(label)), label], dtype=np.float64)  # picked, then widened
    out[np.isnan(post).any(axis=1)] = np.nan
    return out


def merge_adaptive(sel: AdaptiveSelection, ev: RoundEvidence, labels: np.ndarray, conf: np.ndarray,
                   dispute_threshold: float) -> Merged:
    """The adaptive selection as a ``Merged``: an accepted item's sources are the views whose
    own label agrees with it (all views when none does: the combination alone made it), so
    ``cross`` feeding still teaches each view what the others found; its confidence is the
    combined posterior of the label. Items where confident views disagree and that were not
    accepted are disputed (the debate's input)."""
    item = sel.item
    sources = labels[item] == sel.label[:, None]
    sources[~sources.any(axis=1)] = True
    confidence = ev.posterior[item, sel.label] if item.size else np.zeros(0)
    disputed = find_disputes(labels, conf, dispute_threshold)
    disputed[item] = False
    at = np.flatnonzero(disputed)
    voices = select_threshold(labels[at], conf[at], dispute_threshold)
    return Merged(item=item, label=sel.label, confidence=confidence, sources=sources, disputed=at, voices=voices,
                  p_correct=sel.p_correct)


__all__ = ["RoundEvidence", "assess", "estimate_prior", "merge_adaptive", "pool_posterior", "top"]
