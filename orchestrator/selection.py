"""Selection policies and consensus as pure functions over the label matrix.

The label matrix is two aligned (n_items, n_views) arrays: ``labels`` (class index, -1 when
the view abstains) and ``conf`` (the view's probability of that label, NaN when abstaining).
A policy returns a boolean ``picked`` matrix of the same shape: view v vouches for item i.
``merge_picks`` turns picks into accepted pseudo-labels and disputes. Nothing here touches a
model, a store or global state, so each function is tested on synthetic arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.labelmodel import weighted_mean
from store.labels import ABSTAIN


def label_matrix(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, V, K) probabilities (NaN rows = abstain) -> (labels, conf) of shape (n, V)."""
    probs = np.asarray(probs, dtype=np.float64)
    absent = np.isnan(probs).any(axis=-1)
    labels = probs.argmax(axis=-1).astype(np.int64)
    conf = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    labels[absent] = ABSTAIN
    conf[absent] = np.nan
    return labels, conf


def select_threshold(labels: np.ndarray, conf: np.ndarray, threshold: float) -> np.ndarray:
    """A view picks an item when its top probability is strictly above ``threshold``
    (the criterion of scikit-learn's SelfTrainingClassifier)."""
    with np.errstate(invalid="ignore"):
        return (labels != ABSTAIN) & (conf > threshold)  # NaN compares False


def class_quota(prior: np.ndarray, k: int) -> np.ndarray:
    """Picks per class for one view and round: ``k`` split by the labelled class prior
    (Blum-Mitchell's p positives and n negatives), at least one for every class seen.
    With no gold label at all (zero-shot LLM + small model, as in Lang et al. 2022) the
    prior is uniform."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.sum() <= 0:
        prior = np.ones(len(prior))
    prior = prior / prior.sum()
    quota = np.rint(prior * k).astype(np.int64)
    quota[(prior > 0) & (quota == 0)] = 1
    return quota


def select_k_best(labels: np.ndarray, conf: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Per view and class c, the ``quota[c]`` items predicted c with the highest confidence.

    Ties are broken by item order (stable sort), so equal inputs give equal picks.
    """
    n, v = labels.shape
    picked = np.zeros((n, v), dtype=bool)
    for j in range(v):
        for c, q in enumerate(np.asarray(quota)):
            if q <= 0:
                continue
            idx = np.flatnonzero(labels[:, j] == c)
            if idx.size == 0:
                continue
            score = conf[idx, j]
            if idx.size > q:  # keep every item tied with the q-th best, then sort only those
                kth = np.partition(score, idx.size - q)[idx.size - q]
                keep = score >= kth
                idx, score = idx[keep], score[keep]
            order = np.argsort(-score, kind="stable")
            picked[idx[order[:q]], j] = True
    return picked


def select_agreement(labels: np.ndarray, conf: np.ndarray, min_agree: int, threshold: float) -> np.ndarray:
    """Items where at least ``min_agree`` views give the same label, each above ``threshold``.
    The views in that majority are the ones that pick the item."""
    confident = select_threshold(labels, conf, threshold)
    n, v = labels.shape
    picked = np.zeros((n, v), dtype=bool)
    k = int(labels.max()) + 1 if labels.size else 0
    for c in range(k):
        votes = confident & (labels == c)
        enough = votes.sum(axis=1) >= min_agree
        picked |= votes & enough[:, None]
    return picked


def disagreement(labels: np.ndarray, voices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dispute rule, in one place: among the views that speak on an item (``voices``),
    (the highest label spoken, ABSTAIN when none speaks; whether two voices differ)."""
    big = np.iinfo(labels.dtype).max if labels.dtype.kind == "i" else np.iinfo(np.int64).max
    hi = np.where(voices, labels, ABSTAIN).max(axis=1)
    lo = np.where(voices, labels, big).min(axis=1)
    return hi, voices.any(axis=1) & (hi != lo)


def find_disputes(labels: np.ndarray, conf: np.ndarray, threshold: float) -> np.ndarray:
    """Items on which at least two confident views (above ``threshold``) disagree."""
    return disagreement(labels, select_threshold(labels, conf, threshold))[1]


@dataclass(frozen=True)
class Merged:
    """Outcome of one round's selection.

    ``item``: row positions accepted; ``label``/``confidence``: per accepted item;
    ``sources``: (n_accepted, V) bool, the views whose picks made the label;
    ``disputed``: row positions where confident views disagree (never accepted);
    ``voices``: (n_disputed, V) bool, the views that took part in each dispute;
    ``p_correct``: per accepted item, the estimated probability that its label is right
    (None when nothing estimated it).
    """

    item: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    sources: np.ndarray
    disputed: np.ndarray
    voices: np.ndarray
    p_correct: np.ndarray | None = None


def merge_picks(labels: np.ndarray, conf: np.ndarray, picked: np.ndarray, dispute_threshold: float,
                consensus: np.ndarray | None = None) -> Merged:
    """Accept items whose picking views agree and on which no confident view disagrees.

    ``consensus`` (optional, one label per item, e.g. the ensemble's) vetoes a pick whose
    label differs from it: the item is neither accepted nor disputed and stays in the pool.

    The "voices" on an item are the views that picked it plus every view confident above
    ``dispute_threshold``; voices that give different labels make the item disputed, and a
    disputed item is never accepted. Confidence of an accepted label is the mean
    confidence of the views that picked it.
    """
    picked = picked & (labels != ABSTAIN)
    voices = picked | select_threshold(labels, conf, dispute_threshold)
    hi, disputed = disagreement(labels, voices)
    accept = picked.any(axis=1) & ~disputed
    if consensus is not None:
        accept &= np.asarray(consensus) == hi
    item = np.flatnonzero(accept)
    label = hi[item].astype(np.int64)
    src = picked[item]
    c = np.where(src, np.nan_to_num(conf[item], nan=0.0), 0.0)
    confidence = c.sum(axis=1) / np.maximum(src.sum(axis=1), 1)
    disputed_at = np.flatnonzero(disputed)
    return Merged(item=item, label=label, confidence=confidence, sources=src,
                  disputed=disputed_at, voices=voices[disputed_at])


def ensemble_proba(probs: np.ndarray) -> np.ndarray:
    """Mean of the non-abstaining views' probabilities; NaN where all abstain."""
    return weighted_mean(probs, np.ones(np.shape(probs)[1]))


def pairwise_agreement(labels: np.ndarray) -> list[tuple[int, int, int, float | None]]:
    """For each pair of views: (a, b, n items where both vote, share with the same label)."""
    out = []
    v = labels.shape[1]
    for a in range(v):
        for b in range(a + 1, v):
            both = (labels[:, a] != ABSTAIN) & (labels[:, b] != ABSTAIN)
            nb = int(both.sum())
            rate = float((labels[both, a] == labels[both, b]).mean()) if nb else None
            out.append((a, b, nb, rate))
    return out


# ---------------------------------------------------------------------- combined evidence
#: No pick is ever accepted with an estimated p_correct below this: more likely wrong than right.
P_CORRECT_FLOOR = 0.5


@dataclass(frozen=True)
class AdaptiveSelection:
    """What :func:`select_adaptive` chose. ``item``: pool positions accepted, ``label`` and
    ``p_correct`` per accepted item; per class: ``bars`` (the p_correct a pick needed),
    ``quota`` (the most picks allowed) and ``selected`` (picks made); ``stopped``:
    ``min_precision`` when no candidate was good enough, else None."""

    item: np.ndarray
    label: np.ndarray
    p_correct: np.ndarray
    bars: np.ndarray
    quota: np.ndarray
    selected: np.ndarray
    stopped: str | None


def class_bars(label: np.ndarray, p_correct: np.ndarray, prior: np.ndarray, min_precision: float) -> np.ndarray:
    """Per-class acceptance bars in the spirit of FlexMatch (Zhang et al. 2021): a class's
    learning effect is how many candidates reach ``min_precision``, relative to its prior
    (so a rare class is not judged by a common one's count); normalised by the best class
    (beta), the bar is ``min_precision * beta / (2 - beta)``, never below
    :data:`P_CORRECT_FLOOR`. A class no view is sure of yet gets a low bar, so its best
    candidate still comes through (:func:`_trim_each_class` keeps one such pick a class); a
    class being learned well keeps the full bar."""
    k = len(prior)
    sure = np.bincount(label[p_correct >= min_precision], minlength=k)[:k].astype(np.float64)
    sigma = np.where(prior > 0, sure / np.maximum(prior, 1e-12), 0.0)
    beta = sigma / sigma.max() if sigma.max() > 0 else np.zeros(k)
    return np.maximum(min_precision * beta / (2.0 - beta), P_CORRECT_FLOOR)


def select_adaptive(posterior: np.ndarray, p_correct: np.ndarray, prior: np.ndarray, volume: int,
                    min_precision: float, rank: np.ndarray | None = None) -> AdaptiveSelection:
    """Select on combined evidence, class by class, so no class starves.

    ``posterior``: (n, K) combined posterior of the pool (NaN rows: nobody voted);
    ``p_correct``: (n,) the calibrated probability that each item's top label is right;
    ``prior``: (K,) estimated class shares; ``volume``: the picks wanted this round. Class c
    may take ``class_quota(prior, volume)[c]`` items whose top label is c and whose
    p_correct reaches its bar (:func:`class_bars`), best posterior first (or highest
    ``rank`` first, e.g. minus the cut statistic). Each class then keeps the picks whose own
    p_correct reaches ``min_precision``, or its single best pick when none does
    (:func:`_trim_each_class`); if the batch's mean p_correct (its estimated precision) is
    then below ``min_precision``, those best picks are dropped, least likely first, until it
    is not; if nothing qualifies, selection stops (``min_precision``)."""
    posterior = np.asarray(posterior, dtype=np.float64)
    p_correct = np.asarray(p_correct, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    k = posterior.shape[1]
    voted = ~np.isnan(posterior).any(axis=1) & ~np.isnan(p_correct)
    label = np.where(voted, np.nan_to_num(posterior, nan=-1.0).argmax(axis=1), ABSTAIN)
    bars = class_bars(label[voted], p_correct[voted], prior, min_precision)
    quota = class_quota(prior, volume)
    chosen: list[np.ndarray] = []
    for c in range(k):
        idx = np.flatnonzero(voted & (label == c) & (p_correct >= bars[c]))
        if idx.size and quota[c] > 0:
            key = posterior[idx, c] if rank is None else np.asarray(rank, dtype=np.float64)[idx]
            order = np.argsort(-key, kind="stable")
            chosen.append(idx[order[: quota[c]]])
    item = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    item = _trim_each_class(item, label, p_correct, min_precision)
    item = _trim_to_precision(item, label, p_correct, min_precision)
    selected = np.bincount(label[item], minlength=k)[:k] if item.size else np.zeros(k, dtype=np.int64)
    return AdaptiveSelection(item=item, label=label[item].astype(np.int64), p_correct=p_correct[item], bars=bars,
                             quota=quota, selected=selected, stopped=None if item.size else "min_precision")


def _trim_each_class(item: np.ndarray, label: np.ndarray, p: np.ndarray, min_precision: float) -> np.ndarray:
    """Per class, keep the picks whose p_correct reaches ``min_precision``; a class with none
    keeps its single best pick (so a class no view is sure of still grows, one item a round,
    while the batch's mean allows it).

    Each pick must reach the bar, not only the batch's mean: a mean held at the bar by sure
    picks carrying unsure ones ends a calibrated estimate on either side of the bar, and
    later rounds, whose pool is the hard rest, run optimistic. Picks trimmed to a mean of
    0.9 were 0.893 right on news and Rotten Tomatoes at 5% gold (5 seeds; 0.899 and 0.870
    over 10); each pick at 0.9, 0.912 and 0.915 (0.913 and 0.925 over 10), at the cost of
    9-45% of the labels and up to 0.8 points of test accuracy (image segments at 5%, 10
    seeds; README, benchmarks). Before that, a per-class mean replaced the batch's alone,
    which let one class at 0.99 carry another at 0.6."""
    if not item.size:
        return item
    keep = []
    for c in np.unique(label[item]):
        mine = item[label[item] == c]
        sure = mine[p[mine] >= min_precision]
        keep.append(sure if sure.size else mine[[int(np.argmax(p[mine]))]])
    return np.sort(np.concatenate(keep))


def _trim_to_precision(item: np.ndarray, label: np.ndarray, p: np.ndarray, min_precision: float) -> np.ndarray:
    """Drop picks below ``min_precision``, least likely first, until the mean p_correct
    reaches it (dropping a pick above the bar would only lower the mean). A class's single
    best pick goes only after every other pick below the bar."""
    if not item.size or p[item].mean() >= min_precision:
        return item
    order = item[np.argsort(p[item], kind="stable")]          # least likely first
    best = {}
    for i in order:                                            # the last seen per class is its best
        best[int(label[i])] = i
    low = order[p[order] < min_precision]
    protected = np.isin(low, list(best.values()))
    drop_order = np.concatenate([low[~protected], low[protected]])
    total, n = float(p[item].sum()), item.size
    dropped = []
    for i in drop_order:
        if total / n >= min_precision:
            break
        dropped.append(i)
        total -= float(p[i])
        n -= 1
    return np.sort(np.setdiff1d(item, np.asarray(dropped, dtype=np.int64)))


# ---------------------------------------------------------------------- a round's decisions
POLICIES = ("auto", "threshold", "k_best", "agreement", "self")


def select_round(policy: str, labels: np.ndarray, conf: np.ndarray, *, threshold: float, k: int = 10,
                 min_agree: int = 2, prior: np.ndarray | None = None, ensemble: np.ndarray | None = None,
                 veto: bool = True) -> Merged:
    """Every selection decision of a round, from the label matrix to accepted labels and
    disputes: the policy's picks, merged, with the ensemble's veto.

    ``prior``: gold label counts per class (``k_best`` splits ``k`` by it); ``ensemble``:
    one label per item (the ensemble's), which vetoes a disagreeing pick when ``veto`` and the
    policy is not ``self`` (self-training has no peers to veto it)."""
    if policy == "auto":
        raise ValueError("policy 'auto' selects with select_adaptive on the combined posterior")
    if policy in ("threshold", "self"):
        picked = select_threshold(labels, conf, threshold)
    elif policy == "agreement":
        picked = select_agreement(labels, conf, min_agree, threshold)
    elif policy == "k_best":
        if prior is None:
            raise ValueError("k_best needs the gold prior")
        picked = select_k_best(labels, conf, class_quota(prior, k))
    else:
        raise ValueError(f"unknown policy '{policy}' ({', '.join(POLICIES)})")
    consensus = ensemble if veto and policy != "self" else None
    return merge_picks(labels, conf, picked, threshold, consensus=consensus)


def feeding_masks(is_gold: np.ndarray, sources: np.ndarray, shared: np.ndarray, *, policy: str,
                  feeding: str) -> list[np.ndarray]:
    """Which training items each view learns from, one mask per view over the same items.

    Gold (and reviewed) items and ``shared`` labels (debate verdicts) train every view. A
    pseudo-label made by views ``sources[i]`` trains: only its own maker(s) under ``self``
    (self-training); every view under ``shared`` feeding; under ``cross`` feeding only the
    views other than its maker, so no view is taught what it said itself (Blum-Mitchell); a
    lone view has no peer, so under ``cross`` it learns from its own picks."""
    is_gold = np.asarray(is_gold, dtype=bool)
    sources = np.asarray(sources, dtype=bool)
    base = is_gold | np.asarray(shared, dtype=bool)
    masks = []
    for j in range(sources.shape[1]):
        if policy == "self":
            mp = sources[:, j]
        elif feeding == "shared" or sources.shape[1] == 1:
            mp = np.ones(len(is_gold), dtype=bool)
        else:  # cross: picks made (also) by another view
            mp = np.delete(sources, j, axis=1).any(axis=1)
        masks.append(base | mp)
    return masks


def aligned_scale(y: np.ndarray, is_gold: np.ndarray) -> np.ndarray:
    """(n,) what each training row's weight is multiplied by so that a class's pseudo-labels
    count as at most its gold share of all of them: 1 for gold rows; for a pseudo-label of
    class c, ``min(1, g_c * N / n_c)`` with ``g_c`` the gold share of c, ``N`` the
    pseudo-labels and ``n_c`` those of class c (1 for a class without gold).

    It is a partial alignment, by design of what was measured: ``N`` is the unscaled count,
    so after scaling a surplus class can still hold more than ``g_c`` of the pseudo-labels'
    remaining weight (gold 50/50, picks 90/10: 50 against 10); it is computed over every
    training row, while under ``cross`` feeding each view sees only its peers' picks; and
    debate verdicts count among the pseudo-labels. Reviewed labels count as gold.

    The views are surest of the easy classes, so those fill their quotas round after round
    (news at 5% gold, one seed: 125 of 309 labels in one of nine classes) and the views
    trained on them drift towards those classes. Down-weighting the surplus (distribution
    alignment, as in ReMixMatch) keeps every label and the co-training's picks, and only
    stops the surplus from moving the class priors: news 5% 0.547 -> 0.557 over five seeds.
    Capping the picks themselves instead cost news's labels their precision (0.825 right at
    an estimated 0.9): the easy classes' labels were what kept the batch's estimate honest."""
    y = np.asarray(y, dtype=np.int64)
    is_gold = np.asarray(is_gold, dtype=bool)
    out = np.ones(len(y))
    pseudo = ~is_gold
    if not pseudo.any() or not is_gold.any():
        return out
    k = int(y.max()) + 1
    gold_share = np.bincount(y[is_gold], minlength=k) / is_gold.sum()
    n_c = np.bincount(y[pseudo], minlength=k).astype(np.float64)
    scale = np.where((gold_share > 0) & (n_c > 0), np.minimum(1.0, gold_share * pseudo.sum() / np.maximum(n_c, 1)), 1.0)
    out[pseudo] = scale[y[pseudo]]
    return out


def training_weights(y: np.ndarray, is_gold: np.ndarray, conf: np.ndarray, pseudo_weight: float | str,
                     align: bool) -> np.ndarray:
    """(n,) the sample weight of each training row: 1 for gold; for a pseudo-label
    ``pseudo_weight``, or its confidence ``conf`` (n,) when that is ``"confidence"``; times
    :func:`aligned_scale` when ``align``. The run's training set and each shadow's weigh
    their rows here, so a shadow trains as the run does."""
    is_gold = np.asarray(is_gold, dtype=bool)
    pw = np.asarray(conf, dtype=np.float64) if pseudo_weight == "confidence" else np.full(len(is_gold),
                                                                                           float(pseudo_weight))
    w = np.where(is_gold, 1.0, pw)
    return w * aligned_scale(y, is_gold) if align else w


def termination(round_idx: int, last_round: int, pool_left: int, added: int | None = None) -> str | None:
    """Why the run ends at this round, or None to go on: ``max_rounds`` (the last round only
    fits and evaluates), ``pool_exhausted`` (nothing left to label), or, once the round's
    selection is known (``added``), ``no_change`` (it added nothing)."""
    if round_idx >= last_round:
        return "max_rounds"
    if pool_left == 0:
        return "pool_exhausted"
    if added is not None and added == 0:
        return "no_change"
    return None
