"""Which items people should review: the ones whose answer changes the most labels.

Four strategies over the same candidates (training items with no gold or reviewed label,
``store.exchange.candidates``), so their gain can be measured against each other:

* ``random``: a seeded uniform draw, the baseline.
* ``uncertainty``: the smallest margin between the combined posterior's two best classes.
* ``typical``: coverage alone, for small budgets (TypiClust, Hacohen et al. 2022, "Active
  learning on a budget"): the candidates fall into N clusters (k-means) and each cluster
  gives its most typical item, the one nearest its centre, largest cluster first. The
  clusters are found in the run's pretrained vectors when its views have them cached
  (``orchestrator.review_space``: text embeddings, image encoders), else in the views'
  probabilities. With a
  few labels per class, what the views gain most from is one clear example of every region
  they have not seen, not the close calls.
* ``active``: the two mixed by what the run already knows (:func:`active_batch`). Hacohen
  et al. found that which of the two pays depends on how much the learner already knows:
  representative items while it knows little, close calls once it knows most of the data.
  The run's own measure of that is its coverage, the share of candidates that hold an
  accepted pseudo-label (accepted only above the run's precision bar; all candidates, also
  under ``--disputed``): that share of the batch goes to the close calls
  (:func:`close_call_batch`), the rest to typical items, interleaved. The
  close calls are ranked by the expected gain of a reviewed label (:func:`active_scores`):
  how likely a review changes the item's label (the combined posterior's margin and the
  views' vote entropy), how many pool items resemble the item in what the views say about
  it (its neighbourhood, so one answer teaches the views about many items), and how short
  of labels its likely classes are; chosen greedily, each pick halving its nearest
  neighbours' scores, so N reviews cover N regions rather than one. On the benchmarks
  (``bench/review.py``, 1% gold) the runs cover almost nothing (Rotten Tomatoes, news, and
  image segments on four seeds of five: ``active`` is then ``typical``) or almost everything
  (UCI digits: close calls, and 50 reviews reach 200 random ones).

The neighbourhood is taken in the space of the views' concatenated probabilities, which
every kind of view has (text, images, tables, LLMs) and which groups items by how the views
see them. Pure functions over arrays, plus :func:`review_filter`, which reads a run's
candidates from the store and narrows an export to the chosen items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.combination import LABEL_MODEL_FIT_ITEMS, Combination
from orchestrator.labelmodel import dawid_skene
from orchestrator.selection import label_matrix
from store.errors import StoreError
from store.exchange.query import ExportFilter
from store.labels import ABSTAIN

#: The review selections ``export --select`` offers besides today's stratified sample.
REVIEW_SELECTIONS = ("random", "uncertainty", "active", "typical")
#: Neighbours that define an item's neighbourhood (and which a pick discounts).
NEIGHBOURS = 10
#: Candidates scored for their neighbourhood: the best by the other terms, this many per pick.
SHORTLIST_PER_PICK = 20
#: Items a shortlist's neighbourhoods are counted over (a random subset of a larger pool).
REFERENCE_ITEMS = 20_000
#: How much an active score's first factor rests on uncertainty: (1 - w) + w x (margin +
#: disagreement) / 2; at 0 the score is class need and density alone (1 was best on segment).
UNCERTAINTY_WEIGHT = 1.0


@dataclass(frozen=True)
class ReviewScores:
    """Per candidate: ``posterior`` (n, K) combined, ``margin`` uncertainty (1 = a tie between
    the two best classes), ``disagreement`` (normalised vote entropy, 0 = all views agree),
    ``need`` (how short of labels its likely classes are, mean 1 over classes weighted by
    the posterior); ``density`` and ``score`` are filled for the shortlist only (NaN
    elsewhere)."""

    posterior: np.ndarray
    margin: np.ndarray
    disagreement: np.ndarray
    need: np.ndarray
    density: np.ndarray
    score: np.ndarray


def combined_posterior(probs: np.ndarray, combination: str | None, weights: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The candidates' posterior under the run's latest combination (``label_model``: a
    Dawid-Skene model refitted on the candidates' votes, when there are enough of them; an
    unknown combination: the weighted product). Items no view predicted get ``prior``."""
    n, v, k = probs.shape
    method = combination if combination in ("single", "product", "mean", "best_view", "label_model") else "product"
    if method == "label_model":
        votes = label_matrix(probs)[0]
        if len(votes) >= 10 * k:
            fit_rows = np.random.default_rng(0).permutation(len(votes))[:LABEL_MODEL_FIT_ITEMS]
            fit = dawid_skene(votes[np.sort(fit_rows)], k)  # fitted on a sample, applied to all
            comb = Combination("label_model", weights, fit.confusion, fit.prior)
        else:
            comb = Combination("product", weights)
    else:
        comb = Combination(method, weights)
    post = comb.combine(probs) if n else np.zeros((0, k))
    missing = np.isnan(post).any(axis=1)
    post[missing] = prior
    return post


def margin_uncertainty(posterior: np.ndarray) -> np.ndarray:
    """1 - (best - second best) per row: 1 for a tie, 0 for a certain label."""
    if posterior.shape[1] < 2:
        return np.zeros(len(posterior))
    top2 = np.sort(posterior, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def vote_disagreement(probs: np.ndarray) -> np.ndarray:
    """Entropy of the views' votes per item over its most, log(min(views that voted, K)), in
    [0, 1]; 0 where fewer than two views voted."""
    votes = label_matrix(probs)[0]
    n, v = votes.shape
    k = probs.shape[2]
    counts = np.zeros((n, k))
    for j in range(v):
        ok = votes[:, j] != ABSTAIN
        np.add.at(counts, (np.flatnonzero(ok), votes[ok, j]), 1.0)
    total = counts.sum(axis=1)
    share = counts / np.maximum(total, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -(np.where(share > 0, share * np.log(share), 0.0)).sum(axis=1)
    norm = np.log(np.maximum(np.minimum(total, k), 2.0))
    return np.where(total >= 2, ent / norm, 0.0)


def class_need(posterior: np.ndarray, class_counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """How short of labels an item's likely classes are: per class the square root of its
    expected count (estimated share x labels held) over the labels it holds (+1), scaled to
    mean 1 over classes and clipped to [0.25, 4]; per item its posterior-weighted mean."""
    counts = np.asarray(class_counts, dtype=np.float64)
    expected = np.asarray(prior, dtype=np.float64) * max(counts.sum(), 1.0)
    per_class = np.sqrt((expected + 1.0) / (counts + 1.0))
    per_class = np.clip(per_class / per_class.mean(), 0.25, 4.0)
    return posterior @ per_class


def _space(probs: np.ndarray) -> np.ndarray:
    """The views' probabilities side by side (n, V*K); an abstaining view counts as uniform."""
    n, v, k = probs.shape
    return np.nan_to_num(probs, nan=1.0 / k).reshape(n, v * k)


def neighbourhood(space: np.ndarray, shortlist: np.ndarray, rng: np.random.Generator,
                  neighbours: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(density, near) for the shortlisted rows of ``space``: ``density`` how many reference
    items (every row, or a random ``REFERENCE_ITEMS`` of them) count the item among their
    ``neighbours`` nearest shortlisted items, scaled to max 1 (the items whose labels would
    follow its label in a nearest-neighbour graph); ``near`` (m, neighbours) each
    shortlisted item's nearest other shortlisted items (positions in ``shortlist``)."""
    from sklearn.neighbors import NearestNeighbors

    m = len(shortlist)
    if m == 0:
        return np.zeros(0), np.zeros((0, 0), dtype=np.int64)
    ref = np.arange(len(space)) if len(space) <= REFERENCE_ITEMS else rng.choice(len(space), REFERENCE_ITEMS,
                                                                                   replace=False)
    kk = min(neighbours, m)
    nn = NearestNeighbors(n_neighbors=kk).fit(space[shortlist])
    hits = nn.kneighbors(space[ref], return_distance=False)
    count = np.bincount(hits.ravel(), minlength=m).astype(np.float64)
    density = count / count.max() if count.max() > 0 else np.ones(m)
    near = nn.kneighbors(space[shortlist], n_neighbors=min(kk + 1, m), return_distance=False)[:, 1:]
    return density, near


def active_scores(probs: np.ndarray, combination: str | None, weights: np.ndarray, class_counts: np.ndarray,
                  n_pick: int, rng: np.random.Generator) -> tuple[ReviewScores, np.ndarray, np.ndarray]:
    """Score the candidates as close calls: (scores, shortlist, near), ``shortlist`` the
    positions scored in full, ``near`` each one's neighbours among them (:func:`neighbourhood`).

    score = change x need x (0.5 + density): ``change`` is how likely a review changes the
    item's label ((margin + disagreement) / 2, for a pseudo-labelled item too: its p_correct,
    calibrated on a few gold items, ranked the wrong ones worse than the margin on UCI digits),
    ``need`` whether the label lands where the training sets are thin, ``density`` how many
    items resemble it."""
    n, _, k = probs.shape
    counts = np.asarray(class_counts, dtype=np.float64)
    prior = (counts + 1.0) / (counts.sum() + k)
    post = combined_posterior(probs, combination, weights, prior)
    if n:
        prior = 0.5 * prior + 0.5 * post.mean(axis=0)
    margin, dis = margin_uncertainty(post), vote_disagreement(probs)
    need = class_need(post, counts, prior)
    change = 0.5 * (margin + dis)
    base = ((1.0 - UNCERTAINTY_WEIGHT) + UNCERTAINTY_WEIGHT * change) * need
    m = min(n, max(SHORTLIST_PER_PICK * n_pick, 2_000))
    shortlist = np.argsort(-base, kind="stable")[:m]
    density, near = neighbourhood(_space(probs), shortlist, rng)
    dens = np.full(n, np.nan)
    dens[shortlist] = density
    score = np.full(n, np.nan)
    score[shortlist] = base[shortlist] * (0.5 + density)
    return ReviewScores(post, margin, dis, need, dens, score), shortlist, near


def greedy_batch(score: np.ndarray, shortlist: np.ndarray, near: np.ndarray, n_pick: int,
                 discount: float = 0.5) -> np.ndarray:
    """Pick ``n_pick`` of the ``shortlist`` (item positions) by ``score`` (indexed by item),
    each pick multiplying the scores of its neighbours (``near``: rows aligned with
    ``shortlist``, entries positions in it) by ``discount``; most valuable first. Lazy
    re-evaluation is exact because a score only ever falls."""
    import heapq

    cur = np.asarray(score, dtype=np.float64)[shortlist].copy()
    heap = [(-cur[j], j) for j in range(len(shortlist))]
    heapq.heapify(heap)
    taken = np.zeros(len(shortlist), dtype=bool)
    chosen: list[int] = []
    while heap and len(chosen) < n_pick:
        neg, j = heapq.heappop(heap)
        if taken[j]:
            continue
        if -neg > cur[j]:  # stale: discounted since it was pushed
            heapq.heappush(heap, (-cur[j], j))
            continue
        chosen.append(j)
        taken[j] = True
        for nb in near[j]:
            if not taken[nb]:
                cur[nb] *= discount
    return np.asarray(shortlist, dtype=np.int64)[np.asarray(chosen, dtype=np.int64)]


def typical_batch(space: np.ndarray, n_pick: int, seed: int) -> np.ndarray:
    """Positions of ``n_pick`` rows of ``space`` (n, d), one per k-means cluster: the row
    nearest its cluster's centre, clusters largest first (TypiClust's typical items, with
    distance to the centre as typicality). k-means is fitted on at most ``REFERENCE_ITEMS``
    rows (a seeded draw) and assigns every row. Picks a cluster could not give (fewer
    distinct rows than picks, as when the views answer many items alike) are made up by the
    most typical rows not chosen, so exactly ``min(n_pick, n)`` distinct rows come back."""
    from sklearn.cluster import KMeans

    n = len(space)
    n_pick = min(int(n_pick), n)
    if n_pick <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(n) if n <= REFERENCE_ITEMS else np.sort(rng.choice(n, REFERENCE_ITEMS, replace=False))
    distinct = len(np.unique(space[fit_rows], axis=0))         # no more clusters than distinct rows
    km = KMeans(n_clusters=min(n_pick, distinct), n_init=1,  # scikit-learn takes seeds below 2^32 only
                random_state=seed % 2**32).fit(space[fit_rows])
    cluster = km.predict(space)
    dist = np.linalg.norm(space - km.cluster_centers_[cluster], axis=1)
    order = np.lexsort((np.arange(n), dist))                    # most typical first, ties by position
    _, at, sizes = np.unique(cluster[order], return_index=True, return_counts=True)
    chosen = order[at][np.argsort(-sizes, kind="stable")]       # each cluster's most typical row, largest first
    taken = np.zeros(n, dtype=bool)
    taken[chosen] = True
    return np.concatenate([chosen, order[~taken[order]][:n_pick - len(chosen)]]).astype(np.int64)


def choose_for_review(probs: np.ndarray, combination: str | None, weights: np.ndarray, class_counts: np.ndarray,
                      n_pick: int, strategy: str, seed: int, coverage: float = 0.0,
                      space: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``n_pick`` candidates to review under ``strategy`` (all of them when
    there are fewer), in the order chosen: ``uncertainty`` the closest call first, ``typical``
    the largest region first, ``active`` both interleaved (``coverage``: :func:`active_batch`)."""
    if strategy not in REVIEW_SELECTIONS:
        raise ValueError(f"unknown review selection '{strategy}' (one of {', '.join(REVIEW_SELECTIONS)})")
    n, _, k = probs.shape
    n_pick = min(int(n_pick), n)
    rng = np.random.default_rng(seed)
    if n_pick <= 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "random":
        return np.sort(rng.choice(n, n_pick, replace=False))
    if strategy == "uncertainty":
        counts = np.asarray(class_counts, dtype=np.float64)
        post = combined_posterior(probs, combination, weights, (counts + 1.0) / (counts.sum() + k))
        return np.argsort(-margin_uncertainty(post), kind="stable")[:n_pick]
    if strategy == "typical":
        return typical_batch(_space(probs) if space is None else space, n_pick, seed)
    return active_batch(probs, combination, weights, class_counts, n_pick, seed, coverage, space)


def close_call_batch(probs: np.ndarray, combination: str | None, weights: np.ndarray, class_counts: np.ndarray,
                     n_pick: int, seed: int) -> np.ndarray:
    """Positions of the ``n_pick`` best close calls (:func:`active_scores`, then
    :func:`greedy_batch`), most valuable first; the escalation cascade asks its model in this order."""
    n_pick = min(int(n_pick), len(probs))
    if n_pick <= 0:
        return np.zeros(0, dtype=np.int64)
    scores, shortlist, near = active_scores(probs, combination, weights, class_counts, n_pick,
                                            np.random.default_rng(seed))
    return greedy_batch(scores.score, shortlist, near, n_pick)


def close_share(coverage: float, n_pick: int) -> int:
    """How many of ``active``'s ``n_pick`` are close calls: ``coverage`` of them, rounded half up."""
    return int(np.floor(float(coverage) * n_pick + 0.5))


def active_batch(probs: np.ndarray, combination: str | None, weights: np.ndarray, class_counts: np.ndarray,
                 n_pick: int, seed: int, coverage: float, space: np.ndarray | None = None) -> np.ndarray:
    """Positions of ``n_pick`` candidates for ``active`` review: ``coverage`` (0 to 1, the
    share of the run's candidates holding an accepted pseudo-label) of the batch, rounded half
    up, goes to close calls, the rest to typical items among the others (found in ``space``,
    the run's pretrained vectors, else in the views' probabilities), interleaved in
    proportion so that any first part of the list keeps the mix."""
    if not 0.0 <= float(coverage) <= 1.0:
        raise ValueError(f"coverage must be between 0 and 1, not {coverage}")
    n = len(probs)
    n_pick = min(int(n_pick), n)
    if n_pick <= 0:
        return np.zeros(0, dtype=np.int64)
    close = close_call_batch(probs, combination, weights, class_counts, close_share(coverage, n_pick), seed)
    rest = np.setdiff1d(np.arange(n), close)
    typical = rest[typical_batch((_space(probs) if space is None else space)[rest], n_pick - len(close), seed)]
    both = np.concatenate([close, typical])
    at = np.concatenate([(np.arange(len(close)) + 0.5) / max(len(close), 1),
                         (np.arange(len(typical)) + 0.5) / max(len(typical), 1)])
    return both[np.argsort(at, kind="stable")]


def check_review_selection(flt: ExportFilter, select: str) -> None:
    """One clear error for a selection ``export`` cannot make: an unknown name, no sample
    size, or a filter that would drop chosen items afterwards (only ``--disputed`` narrows
    the candidates)."""
    if select not in REVIEW_SELECTIONS:
        raise StoreError(f"--select: unknown selection '{select}' (stratified, {', '.join(REVIEW_SELECTIONS)})")
    if flt.sample is None or flt.sample < 1:
        raise StoreError(f"--select {select} chooses --sample N items for review; give N >= 1")
    given = [name for name, v in (("--round", flt.max_round), ("--min-confidence", flt.min_confidence),
                                  ("--source", flt.source), ("--min-p-correct", flt.min_p_correct)) if v is not None]
    if given:
        raise StoreError(f"--select {select} chooses among all items without gold or reviewed label; "
                         f"{given[0]} does not combine with it (only --disputed does)")


def review_filter(store: Any, flt: ExportFilter, select: str) -> ExportFilter:
    """``flt`` narrowed to the items ``select`` picks for review, in the order chosen (no
    gold rows, no stratified draw)."""
    from dataclasses import replace

    from store.exchange.candidates import review_candidates

    run_id = flt.run_id if flt.run_id is not None else store.latest_run()
    if run_id is None:
        raise StoreError("holds no run to choose items from", store.path)
    c = review_candidates(store, int(run_id), disputed_only=flt.disputed_only, ranked=select != "random")
    space = None
    n_pick = min(int(flt.sample or 0), len(c))
    typical_left = select == "typical" or (select == "active" and close_share(c.coverage, n_pick) < n_pick)
    if typical_left and len(c):  # active at full coverage picks close calls only: no vectors to read
        from orchestrator.review_space import pretrained_space

        space = pretrained_space(store, int(run_id), c.item_id.tolist())
    pick = choose_for_review(c.probs, c.combination, c.weights, c.class_counts, int(flt.sample or 0), select,
                             flt.seed, c.coverage, space)
    return replace(flt, run_id=int(run_id), include_gold=False, sample=None, items=tuple(c.item_id[pick].tolist()))


__all__ = ["check_review_selection", "review_filter", "REVIEW_SELECTIONS", "ReviewScores", "active_batch",
           "active_scores", "choose_for_review", "class_need", "close_call_batch", "close_share",
           "combined_posterior", "greedy_batch", "margin_uncertainty", "neighbourhood", "typical_batch",
           "vote_disagreement"]
