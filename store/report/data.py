"""The report's data: everything the page shows, as plain rows read from the store (also
what a test or a notebook may inspect)."""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from store.database import Store
from store.exchange.annotation import latest_votes
from store.media import ImageProblem, open_image, resolve_source, stored_run_roots
from store.queries import (debate_summary, item_problems, label_counts, llm_usage, resolve_run, review_precision,
                           round_estimates, rounds_summary, view_estimates)


def _rows(store: Store, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    return store.query(sql, params).to_pylist()


def report_data(store: Store, run_id: int | None = None, top_disputed: int = 25) -> dict[str, Any]:
    """Everything the page shows, as plain data (also what a test or notebook may inspect)."""
    rid = resolve_run(store, run_id)
    info = store.run_info(rid)
    labels = list(info["labels"])
    d: dict[str, Any] = {"run_id": rid, "info": info, "labels": labels, "rounds": rounds_summary(store, rid)}
    d["metrics"] = _rows(store, "SELECT round, view, test_accuracy, test_macro_f1, n_train FROM metrics"
                                " WHERE run_id = ? ORDER BY round, view", [rid])
    d["added"] = _rows(store, """
        SELECT round, CASE WHEN source = 'debate' THEN 'debate'
                           WHEN len(source_views) > 1 THEN 'agreement'
                           ELSE coalesce(source_views[1], source) END AS maker, count(*) AS n
        FROM pseudo_labels WHERE run_id = ? GROUP BY ALL ORDER BY round, maker""", [rid])
    d["agreement"] = _rows(store, """
        SELECT view_a, view_b, rate, n_both FROM view_agreement
        WHERE run_id = ? AND round = (SELECT max(round) FROM view_agreement WHERE run_id = ?)""", [rid, rid])
    d["gold_test"] = _rows(store, """
        SELECT coalesce(rv.label, i.gold_label) AS truth, t.label AS predicted, count(*) AS n
        FROM test_predictions t JOIN items i ON i.run_id = t.run_id AND i.item_id = t.item_id
        LEFT JOIN reviewed_labels rv ON rv.run_id = t.run_id AND rv.item_id = t.item_id
        WHERE t.run_id = ? AND t.view = 'ensemble'
          AND t.round = (SELECT max(round) FROM test_predictions WHERE run_id = ?) GROUP BY ALL""", [rid, rid])
    d["pseudo_vs_review"] = _rows(store, """
        SELECT r.label AS truth, p.label AS predicted, count(*) AS n
        FROM pseudo_labels p JOIN reviews r ON r.review_id = p.reviewed_by
        WHERE p.run_id = ? GROUP BY ALL""", [rid])
    d["confidence"] = _rows(store, """
        WITH c AS (SELECT round, row_idx, max(confidence) AS conf FROM prediction_rows
                   WHERE run_id = ? AND label IS NOT NULL GROUP BY round, row_idx),
             a AS (SELECT i.row_idx, p.round FROM pseudo_labels p
                   JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id WHERE p.run_id = ?)
        SELECT least(floor(c.conf * 20), 19)::INTEGER AS bin, a.row_idx IS NOT NULL AS accepted, count(*) AS n
        FROM c LEFT JOIN a ON a.row_idx = c.row_idx AND a.round = c.round
        GROUP BY ALL ORDER BY bin""", [rid, rid])
    d["estimates"] = round_estimates(store, rid)    # per round (empty before migration 008)
    d["view_estimates"] = view_estimates(store, rid)  # per view, its latest round
    d["llm"] = llm_usage(store, rid)
    d["debates"] = debate_summary(store, rid)
    d["precision"] = review_precision(store, rid)
    d["problems"] = item_problems(store, rid)
    gold, reviewed, _ = label_counts(store, rid)  # a relabelled gold item counts once, as reviewed
    d["counts"] = {"gold": gold, "reviewed": reviewed, **_rows(store, """
        SELECT (SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'accepted') AS accepted,
               (SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'confirmed') AS confirmed,
               (SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'revoked') AS revoked,
               (SELECT count(*) FROM items WHERE run_id = ? AND split = 'train') AS train,
               (SELECT count(*) FROM items WHERE run_id = ? AND split = 'test') AS test""", [rid] * 5)[0]}
    d["disputed"] = _disputed(store, rid, info, top_disputed)
    return d


def _disputed(store: Store, rid: int, info: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The most disputed items, then the other debated ones: rounds disputed, each view's
    latest vote, the item's label now, a short text of it, and its latest debate with the turns."""
    rows = _rows(store, """
        WITH ds AS (SELECT item_id, count(*) AS rounds, max(round) AS last FROM disputes WHERE run_id = ?
                    GROUP BY item_id),
             db AS (SELECT item_id, max(round) AS last FROM debates WHERE run_id = ? GROUP BY item_id),
             d AS (SELECT coalesce(ds.item_id, db.item_id) AS item_id, coalesce(ds.rounds, 0) AS rounds,
                          greatest(ds.last, db.last) AS last, db.item_id IS NOT NULL AS debated
                   FROM ds FULL OUTER JOIN db ON db.item_id = ds.item_id)
        SELECT d.item_id, d.rounds, d.last, i.row_idx,
               coalesce(rv.label, i.gold_label, p.label) AS label_now,
               CASE WHEN rv.label IS NOT NULL THEN 'review' WHEN i.gold_label IS NOT NULL THEN 'gold'
                    ELSE p.source END AS label_source
        FROM d JOIN items i ON i.run_id = ? AND i.item_id = d.item_id
        LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = d.item_id
        LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = d.item_id AND p.status = 'accepted'
        ORDER BY d.rounds DESC, d.debated DESC, d.last DESC, d.item_id LIMIT ?""", [rid, rid, rid, top])
    if not rows:
        return []
    ids = [r["item_id"] for r in rows]
    votes = latest_votes(store, rid, ids)
    cols = store.data_columns(rid)
    text_fields = [c for c in info["text_fields"] or [] if c in cols]
    image_fields = [c for c in info["image_fields"] or [] if c in cols]
    texts: dict[int, str] = {}
    thumbs: dict[int, str] = {}
    at = np.asarray([r["row_idx"] for r in rows])
    if text_fields:
        t = store.fetch_rows(rid, at, text_fields[:2]).to_pylist()
        texts = {r["row_idx"]: " | ".join(str(x[c]) for c in text_fields[:2]) for r, x in zip(rows, t)}
    if image_fields:
        roots = stored_run_roots(store.path, info["input_files"] or [])
        t = store.fetch_rows(rid, at, image_fields[:1]).to_pylist()
        thumbs = {r["row_idx"]: _thumbnail(x[image_fields[0]], roots) for r, x in zip(rows, t)}
    debates = {r["item_id"]: r for r in _rows(store, """
        SELECT item_id, arg_max(debate_id, debate_id) AS debate_id FROM debates
        WHERE run_id = ? AND list_contains(?, item_id) GROUP BY item_id""", [rid, ids])}
    for r in rows:
        r["votes"] = {view: (label, conf) for view, label, conf in votes.get(r["item_id"], [])}
        r["text"] = texts.get(r["row_idx"], "")
        r["thumbnail"] = thumbs.get(r["row_idx"])
        deb = debates.get(r["item_id"])
        if deb is not None:
            r["debate"] = _rows(store, "SELECT * FROM debates WHERE debate_id = ?", [deb["debate_id"]])[0]
            r["turns"] = _rows(store, "SELECT * FROM debate_turns WHERE debate_id = ? ORDER BY debate_round,"
                                      " agent = 'judge', agent", [deb["debate_id"]])
    return rows


def _thumbnail(value: Any, roots: Sequence[Path], size: int = 56) -> str | None:
    """A small PNG data URI of an item's image (None when it cannot be read)."""
    try:
        import PIL  # noqa: F401
    except ImportError:  # pragma: no cover - Pillow comes with the vision extra
        return None
    try:
        raw = resolve_source(value, roots, "").read()
        with open_image(raw, "") as img:  # refuses pipes, devices, oversized files and bombs
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
    except (ImageProblem, OSError, ValueError, SyntaxError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------ plots
