"""What a review selection ranks: the training items nobody has labelled for certain yet,
with what the views last said about each.

A *candidate* is a training item that holds no gold and no reviewed label: either it carries
an accepted pseudo-label (a review confirms or corrects it) or none (a review adds a label).
For each, :func:`review_candidates` reads the views' probabilities from the latest round that
predicted it, its pseudo-label if any, and how each view was weighted in
the run's latest round. Which items are worth a person's time is policy, and lives in the
orchestrator (``orchestrator.review_selection``); this module only reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from store.database import Store
from store.errors import StoreError
from store.labels import ABSTAIN
from store.queries import has_table


@dataclass(frozen=True)
class ReviewCandidates:
    """The candidates of one run, in item-row order.

    ``probs``: (n, V, K) each view's probabilities from the latest round that predicted the
    item (NaN rows: the view abstained, or the item was never predicted); ``round``: (n,)
    that round (-1: never predicted); ``pseudo``: (n,) the accepted pseudo-label's class
    index (ABSTAIN: none); ``class_counts``: (K,)
    labels per class the run holds now (gold, reviewed and accepted pseudo-labels);
    ``combination`` and ``weights`` (V,): how the latest round combined the views (None and
    ones for a run that recorded no estimates); ``coverage``: the share of all the run's
    candidates (disputed or not) that hold an accepted pseudo-label, with or without a
    p_correct (0 when there are none)."""

    run_id: int
    labels: list[str]
    views: list[str]
    item_id: np.ndarray
    probs: np.ndarray
    round: np.ndarray
    pseudo: np.ndarray
    class_counts: np.ndarray
    combination: str | None
    weights: np.ndarray
    coverage: float

    def __len__(self) -> int:
        return len(self.item_id)


def review_candidates(store: Store, run_id: int, *, disputed_only: bool = False,
                      ranked: bool = True) -> ReviewCandidates:
    """Read the candidates of ``run_id`` (only items the views disputed in some round with
    ``disputed_only``). Raises :class:`StoreError` when the run stored no predictions and
    ``ranked`` (the candidates are to be ranked by the views); a random draw (``ranked``
    False) needs none, and is what such a run allows."""
    info = store.run_info(run_id)
    labels, views = list(info["labels"]), list(info["views"])
    k, v = len(labels), len(views)
    candidates = (" FROM items i LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id"
                  " LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = i.item_id"
                  " AND p.status = 'accepted'"
                  " WHERE i.run_id = ? AND i.split = 'train' AND i.gold_label IS NULL AND rv.label IS NULL")
    disputed = " AND i.item_id IN (SELECT item_id FROM disputes WHERE run_id = ?)" if disputed_only else ""
    cand = store.query("SELECT i.item_id, p.label AS pseudo" + candidates + disputed
                       + " ORDER BY i.row_idx", [run_id] + ([run_id] if disputed_only else []))
    # (counted, not EXISTS: DuckDB 2.0.1 answers false over this LEFT JOIN when pseudo_labels is empty)
    if not cand.num_rows and (not disputed_only or not store.scalar("SELECT count(*) > 0" + candidates, [run_id])):
        # it said "store_predictions: false ... use --select random", which then wrote nothing
        raise StoreError(f"run {run_id} has no item to choose from: every training item has a gold or a reviewed "
                         "label", store.path)
    if ranked and not store.scalar("SELECT count(*) > 0 FROM predictions WHERE run_id = ? AND list_contains(?, view)",
                        [run_id, views]):
        raise StoreError(f"run {run_id} stored no predictions to rank items by (cotrain.store_predictions: false, "
                         "or no round predicted a pool); use --select random", store.path)
    coverage = float(store.scalar("SELECT coalesce(avg(CASE WHEN p.label IS NULL THEN 0 ELSE 1 END), 0)"
                                  + candidates, [run_id]))
    n = cand.num_rows
    ids = cand.column("item_id").to_numpy(zero_copy_only=False).astype(object)
    index = pd.Index(ids)
    label_of = {name: j for j, name in enumerate(labels)}
    pseudo = np.array([label_of.get(x, ABSTAIN) if x is not None else ABSTAIN
                       for x in cand.column("pseudo").to_pylist()], dtype=np.int64)
    probs = np.full((n, v, k), np.nan, dtype=np.float64)
    rnd = np.full(n, -1, dtype=np.int64)
    if n:
        pred = store.query(
            "WITH c AS (SELECT unnest(?) AS item_id),"
            " last AS (SELECT p.item_id, max(p.round) AS round FROM predictions p JOIN c USING (item_id)"
            "          WHERE p.run_id = ? GROUP BY p.item_id)"
            " SELECT p.item_id, p.round, p.view, p.probs FROM predictions p"
            " JOIN last ON last.item_id = p.item_id AND last.round = p.round"
            " WHERE p.run_id = ? AND p.probs IS NOT NULL AND len(p.probs) = ?",
            [list(ids), run_id, run_id, k])
        if pred.num_rows:
            row = index.get_indexer(pred.column("item_id").to_numpy(zero_copy_only=False))
            col = pd.Index(views).get_indexer(pred.column("view").to_numpy(zero_copy_only=False))
            ok = (row >= 0) & (col >= 0)
            flat = pc.list_flatten(pred.column("probs")).to_numpy(zero_copy_only=False).astype(np.float64)
            flat = flat.reshape(pred.num_rows, k)
            probs[row[ok], col[ok]] = flat[ok]
            rnd[row[ok]] = pred.column("round").to_numpy(zero_copy_only=False)[ok]
    counts = store.query(
        "SELECT label, count(*) AS n FROM current_labels WHERE run_id = ? AND split = 'train' AND label IS NOT NULL"
        " GROUP BY label", [run_id]).to_pylist()
    class_counts = np.zeros(k, dtype=np.int64)
    for r in counts:
        if r["label"] in label_of:
            class_counts[label_of[r["label"]]] = int(r["n"])
    combination, weights = _latest_combination(store, run_id, views)
    return ReviewCandidates(run_id, labels, views, ids, probs, rnd, pseudo, class_counts, combination,
                            weights, coverage)


def _latest_combination(store: Store, run_id: int, views: list[str]) -> tuple[str | None, np.ndarray]:
    """The latest round's combination and per-view weights (None and ones when unrecorded)."""
    weights = np.ones(len(views))
    if not has_table(store, "round_estimates"):
        return None, weights
    row = store.query("SELECT round, combination FROM round_estimates WHERE run_id = ? ORDER BY round DESC LIMIT 1",
                      [run_id]).to_pylist()
    if not row:
        return None, weights
    for r in store.query("SELECT view, weight FROM view_estimates WHERE run_id = ? AND round = ?",
                         [run_id, row[0]["round"]]).to_pylist():
        if r["view"] in views and r["weight"] is not None:
            weights[views.index(r["view"])] = float(r["weight"])
    return str(row[0]["combination"]), weights


__all__ = ["ReviewCandidates", "review_candidates"]
