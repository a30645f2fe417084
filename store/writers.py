"""What a round writes, and the Arrow schema of each table it writes, beside the migrations
that create them. The orchestrator hands arrays; nothing outside ``store`` spells a column.

Writes go through the store's connection, so inside ``Store.transaction()`` a round's
predictions, pseudo-labels, disputes, metrics and round row commit together.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.arrow import rows_as_lists
from store.database import Store, utcnow
from store.labels import ABSTAIN


#: Rows of predictions collected before one insert inside ``RoundWriter.collecting``: DuckDB
#: writes an insert of two row groups (2 x 122,880 rows) or more straight to the file, and
#: smaller ones through its log, which doubled the cost of a 50,000-item batch per insert.
#: ``PREDICTION_BYTES`` caps what is held (many classes make long probability lists).
PREDICTION_CHUNK = 2 * 122_880
PREDICTION_BYTES = 64 * 2**20


def masked_lists(mask: np.ndarray, values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """Row i -> values[i][mask[i]] as an Arrow list array, without a Python loop.

    ``values`` is (n, V) or (V,) (broadcast to every row)."""
    mask = np.asarray(mask, dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    rows, cols = np.nonzero(mask)
    flat = values[cols] if values.ndim == 1 else values[rows, cols]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=dtype))


@dataclass
class RoundWriter:
    """Writes one round of one run. ``labels`` and ``views`` give names to the indices the
    orchestrator works with (label matrix columns, class indices)."""

    store: Store
    run_id: int
    round: int
    labels: Sequence[str]
    views: Sequence[str]
    _pending: list[pa.Table] | None = field(default=None, repr=False)  # collecting predictions

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Inside, ``predictions`` are gathered and inserted ``PREDICTION_CHUNK`` rows (or
        ``PREDICTION_BYTES``) at a time, the rest on leaving (on an error they are dropped
        with the round's transaction)."""
        self._pending = []
        try:
            yield
            self._flush(force=True)
        finally:
            self._pending = None

    def _flush(self, force: bool = False) -> None:
        pending = self._pending or []
        if pending and (force or sum(t.num_rows for t in pending) >= PREDICTION_CHUNK
                        or sum(t.nbytes for t in pending) >= PREDICTION_BYTES):
            self.store.insert_arrow("prediction_rows", pa.concat_tables(pending).combine_chunks())
            pending.clear()

    def _const(self, n: int) -> dict[str, pa.Array]:
        return {"run_id": pa.array(np.full(n, self.run_id, dtype=np.int32)),
                "round": pa.array(np.full(n, self.round, dtype=np.int32))}

    def _label_names(self, lab: np.ndarray) -> pa.Array:
        """Class indices as label names, NULL where the index is ABSTAIN."""
        lab = np.asarray(lab)
        voted = lab != ABSTAIN  # a take in Arrow, not an array of Python strings (3M rows: 0.5 s)
        return pa.array(list(self.labels), pa.string()).take(
            pa.array(np.where(voted, lab, 0).astype(np.int32), mask=~voted))

    def shadow_labels(self, fold: np.ndarray, row_idx: np.ndarray, label: np.ndarray, conf: np.ndarray) -> None:
        """The round's picks of the gold folds' shadow runs (item positions, label indices)."""
        n = len(row_idx)
        if n:
            self.store.insert_arrow("shadow_labels", pa.table({
                **self._const(n), "fold": pa.array(np.asarray(fold, dtype=np.int16)),
                "row_idx": pa.array(np.asarray(row_idx, dtype=np.int64)),
                "label": pa.array(np.asarray(label, dtype=np.int16)),
                "confidence": pa.array(np.asarray(conf, dtype=np.float32))}))

    def predictions(self, row_idx: np.ndarray, view: str, lab: np.ndarray, conf: np.ndarray,
                    probs: np.ndarray) -> None:
        """One view's prediction of a batch of pool items (their positions, ``items.row_idx``;
        label, confidence, probabilities), filed in ``prediction_rows`` (the ``predictions``
        view adds the item ids)."""
        n = len(row_idx)
        voted = np.asarray(lab) != ABSTAIN
        table = pa.table({
            **self._const(n), "view": pa.repeat(pa.scalar(view), n),
            "row_idx": pa.array(np.asarray(row_idx, dtype=np.int64)),
            "label": self._label_names(lab),
            "confidence": pa.array(np.asarray(conf, dtype=np.float32), mask=~voted),
            "probs": rows_as_lists(probs),
        })
        if self._pending is None:
            self.store.insert_arrow("prediction_rows", table)
        else:
            self._pending.append(table)
            self._flush()

    def test_predictions(self, ids: pa.Array, view: str, lab: np.ndarray, conf: np.ndarray) -> None:
        """A view's (or the ensemble's) label and confidence on every held-out item."""
        n = len(ids)
        self.store.insert_arrow("test_predictions", pa.table({
            **self._const(n), "view": pa.array([view] * n, pa.string()), "item_id": ids,
            "label": pc.if_else(pa.array(np.asarray(lab) != ABSTAIN), self._label_names(lab),
                                pa.scalar(None, pa.string())),
            "confidence": pa.array(np.asarray(conf), pa.float32())}))

    def pseudo_labels(self, ids: pa.Array, label: np.ndarray, conf: np.ndarray, source: str,
                      source_views: pa.Array, p_correct: np.ndarray | None = None) -> None:
        """Accepted pseudo-labels, each with who made it (a policy, or ``debate``) and, when
        the selection estimated it, the probability that it is right."""
        n = len(ids)
        self.store.insert_arrow("pseudo_labels", pa.table({
            "run_id": pa.array(np.full(n, self.run_id, dtype=np.int32)), "item_id": ids,
            "label": self._label_names(label),
            "confidence": pa.array(np.asarray(conf, dtype=np.float32)),
            "source": pa.repeat(pa.scalar(source), n), "source_views": source_views,
            "round": pa.array(np.full(n, self.round, dtype=np.int32)),
            "status": pa.repeat(pa.scalar("accepted"), n),
            "created_at": pa.repeat(pa.scalar(utcnow(), pa.timestamp("us")), n),
            "p_correct": pa.array(np.asarray(p_correct, dtype=np.float32)) if p_correct is not None
            else pa.nulls(n, pa.float32()),
        }))

    def view_picks(self, ids: pa.Array, label: np.ndarray, conf: np.ndarray, source: str, picked_by: np.ndarray,
                   p_correct: np.ndarray | None = None) -> None:
        """Accepted picks of views: ``picked_by`` is (n, V) bool over ``views``."""
        self.pseudo_labels(ids, label, conf, source,
                           masked_lists(picked_by, np.asarray(self.views, dtype=object), pa.string()), p_correct)

    def estimates(self, round_row: dict[str, Any], views: Sequence[dict[str, Any]]) -> None:
        """What the round's selection estimated: one ``round_estimates`` row (combination,
        calibration, per-class bars, quotas and picks, estimated precision, coverage) and one
        ``view_estimates`` row per view (out-of-fold accuracy, label-model accuracy, weight)."""
        row = {"run_id": self.run_id, "round": self.round, **round_row}
        row["est_precision_all"] = self.store.scalar(  # this round's labels are already inserted
            "SELECT avg(p_correct) FROM pseudo_labels WHERE run_id = ? AND status = 'accepted'", [self.run_id])
        self.store.insert_arrow("round_estimates", pa.table({
            "run_id": pa.array([row["run_id"]], pa.int32()), "round": pa.array([row["round"]], pa.int32()),
            "combination": [row["combination"]], "n_calibration": pa.array([row["n_calibration"]], pa.int32()),
            "calibration_accuracy": pa.array([row.get("calibration_accuracy")], pa.float64()),
            "n_candidates": pa.array([row["n_candidates"]], pa.int32()),
            "n_selected": pa.array([row["n_selected"]], pa.int32()),
            "est_precision": pa.array([row.get("est_precision")], pa.float64()),
            "est_precision_all": pa.array([row.get("est_precision_all")], pa.float64()),
            "coverage": pa.array([row.get("coverage")], pa.float64()),
            "class_bars": pa.array([row.get("class_bars")], pa.list_(pa.float64())),
            "class_quota": pa.array([row.get("class_quota")], pa.list_(pa.int32())),
            "class_selected": pa.array([row.get("class_selected")], pa.list_(pa.int32())),
            "stopped": pa.array([row.get("stopped")], pa.string())}))
        if views:
            self.store.insert_arrow("view_estimates", pa.table({
                "run_id": pa.array([self.run_id] * len(views), pa.int32()),
                "round": pa.array([self.round] * len(views), pa.int32()),
                "view": [v["view"] for v in views],
                "cv_accuracy": pa.array([v.get("cv_accuracy") for v in views], pa.float64()),
                "label_model_accuracy": pa.array([v.get("label_model_accuracy") for v in views], pa.float64()),
                "weight": pa.array([v.get("weight") for v in views], pa.float64())}))

    def view_estimate(self, view: str, cv_accuracy: float | None, weight: float | None) -> None:
        """One more ``view_estimates`` row, for a voter outside the round's views (the
        escalation model: its accuracy estimated on gold)."""
        self.store.insert_arrow("view_estimates", pa.table({
            "run_id": pa.array([self.run_id], pa.int32()), "round": pa.array([self.round], pa.int32()),
            "view": [view], "cv_accuracy": pa.array([cv_accuracy], pa.float64()),
            "label_model_accuracy": pa.array([None], pa.float64()), "weight": pa.array([weight], pa.float64())}))

    def disputes(self, ids: pa.Array, voices: np.ndarray, lab: np.ndarray, conf: np.ndarray) -> None:
        """Disputed items: the views that spoke on each (``voices``, (n, V)), their labels
        and confidences."""
        self.store.insert_arrow("disputes", pa.table({
            **self._const(len(ids)), "item_id": ids,
            "views": masked_lists(voices, np.asarray(self.views, dtype=object), pa.string()),
            "labels": masked_lists(voices, np.asarray(self.labels, dtype=object)[np.maximum(lab, 0)], pa.string()),
            "confidences": masked_lists(voices, np.asarray(conf, dtype=np.float32), pa.float32()),
        }))

    def metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """Per view (and ``ensemble``): n_train, labels_added, test accuracy and macro-F1,
        pool agreement with the ensemble, seconds fitting and predicting."""
        cols = ["view", "n_train", "labels_added", "test_accuracy", "test_macro_f1", "pool_agreement",
                "seconds_fit", "seconds_predict"]
        data = {"run_id": [self.run_id] * len(rows), "round": [self.round] * len(rows)}
        data.update({c: [r.get(c) for r in rows] for c in cols})
        self.store.insert_arrow("metrics", pa.table(data))

    def view_agreement(self, pairs: Sequence[tuple[int, int, int, float | None]]) -> None:
        """Pairwise agreement (view a, view b, items both voted on, share with equal labels)."""
        if not pairs:
            return
        self.store.insert_arrow("view_agreement", pa.table({
            "run_id": [self.run_id] * len(pairs), "round": [self.round] * len(pairs),
            "view_a": [self.views[a] for a, _, _, _ in pairs], "view_b": [self.views[b] for _, b, _, _ in pairs],
            "n_both": [n for _, _, n, _ in pairs], "rate": [x for _, _, _, x in pairs]}))

    def round_row(self, **row: Any) -> None:
        """The round's own row (counts, termination, generator state, timings)."""
        self.store.insert_round({"run_id": self.run_id, "round": self.round, "finished_at": utcnow(), **row})
        if row.get("termination") is not None:
            self.store.finish_run(self.run_id, row["termination"])


def write_debates(store: Store, outcomes: Sequence[Any], *, run_id: int | None, round_idx: int | None,
                 triggers: Sequence[str], splits: Sequence[str], accepted: Sequence[bool], aggregation: str,
                 label_names: Sequence[str]) -> None:
    """Insert debates and their turns (the caller owns the transaction). ``outcomes`` are
    ``agents.runner.DebateOutcome``s (read by attribute: the store imports no agent code)."""
    if not outcomes:
        return
    start = int(store.scalar("SELECT coalesce(max(debate_id), 0) FROM debates")) + 1
    ids = list(range(start, start + len(outcomes)))
    now = utcnow()
    store.insert_arrow("debates", pa.table({
        "debate_id": pa.array(ids, pa.int64()),
        "run_id": pa.array([run_id] * len(ids), pa.int32()),
        "round": pa.array([round_idx] * len(ids), pa.int32()),
        "item_id": [o.item_id for o in outcomes], "split": list(splits), "trigger": list(triggers),
        "status": [o.status for o in outcomes],
        "verdict": pa.array([label_names[o.verdict] if o.verdict != ABSTAIN else None for o in outcomes], pa.string()),
        "confidence": pa.array([o.confidence for o in outcomes], pa.float64()),
        "accepted": list(accepted), "aggregation": [aggregation] * len(ids),
        "rounds_used": pa.array([o.rounds_used for o in outcomes], pa.int32()),
        "early_stopped": [o.early_stopped for o in outcomes],
        "calls": pa.array([o.calls for o in outcomes], pa.int32()),
        "tokens": pa.array([o.tokens for o in outcomes], pa.int64()),
        "cost_usd": pa.array([o.cost_usd for o in outcomes], pa.float64()),
        "seconds": pa.array([o.seconds for o in outcomes], pa.float64()),
        "created_at": pa.array([now] * len(ids), pa.timestamp("us")),
    }))
    turns = [(did, t) for did, o in zip(ids, outcomes) for t in o.turns]
    if turns:
        store.insert_arrow("debate_turns", pa.table({
            "debate_id": pa.array([d for d, _ in turns], pa.int64()),
            "agent": [t["agent"] for _, t in turns], "model": [t["model"] for _, t in turns],
            "debate_round": pa.array([t["debate_round"] for _, t in turns], pa.int32()),
            "label": pa.array([t["label"] for _, t in turns], pa.string()),
            "confidence": pa.array([t["confidence"] for _, t in turns], pa.float64()),
            "rationale": [t["rationale"] for _, t in turns], "status": [t["status"] for _, t in turns],
            "prompt_tokens": pa.array([t["prompt_tokens"] for _, t in turns], pa.int64()),
            "completion_tokens": pa.array([t["completion_tokens"] for _, t in turns], pa.int64()),
            "latency_s": pa.array([t["latency_s"] for _, t in turns], pa.float64()),
            "cached": [bool(t["cached"]) for _, t in turns],
            "answer": pa.array([t.get("raw") for _, t in turns], pa.string()),
            "error": pa.array([t.get("error") for _, t in turns], pa.string()),
        }))


__all__ = ["RoundWriter", "masked_lists", "write_debates"]
