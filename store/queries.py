"""Read-side queries for ``cotrain status`` and reports: plain data, no rendering."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store.contracts import DEBATE_VIEW_PREFIX, ESCALATED_DEBATE_VIEW_PREFIX
from store.database import Store
from store.errors import StoreError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


def rounds_summary(store: Store, run_id: int) -> list[dict[str, Any]]:
    """One dict per round: counts, termination, per-view test accuracy/F1 and pool agreement,
    and the mean pairwise agreement between views."""
    info = store.run_info(run_id)
    out: list[dict[str, Any]] = []
    for rd in store.completed_rounds(run_id):
        r = rd["round"]
        per_view = {
            view: {"test_accuracy": acc, "test_macro_f1": f1, "labels_added": added, "n_train": n_train,
                   "pool_agreement": agr}
            for view, acc, f1, added, n_train, agr in store.con.execute(
                "SELECT view, test_accuracy, test_macro_f1, labels_added, n_train, pool_agreement FROM metrics"
                " WHERE run_id = ? AND round = ?", [run_id, r]).fetchall()
        }
        pair = store.scalar("SELECT avg(rate) FROM view_agreement WHERE run_id = ? AND round = ?", [run_id, r])
        out.append({
            "round": r, "pool_size": rd["pool_size"], "labels_added": rd["labels_added"],
            "n_disputed": rd["n_disputed"], "n_gold": rd["n_gold"], "n_pseudo": rd["n_pseudo"],
            "termination": rd["termination"], "seconds": rd["seconds_total"], "views": per_view,
            "mean_pairwise_agreement": pair, "view_order": list(info["views"]) + ["ensemble"],
        })
    return out


def item_labels(store: Store, run_id: int, labels: list[str]) -> "pa.Table":
    """Every item of a run in data order: ``item_id``, ``row_idx``, ``is_test``, ``gold`` (the
    label's index in ``labels``, -1 none; a reviewer's label overrides the file's) and
    ``reviewed``."""
    return store.query(
        "SELECT i.item_id, i.row_idx, i.split = 'test' AS is_test,"
        " coalesce(list_position(?, coalesce(rv.label, i.gold_label)), 0) - 1 AS gold,"
        " rv.label IS NOT NULL AS reviewed"
        " FROM items i LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id"
        " WHERE i.run_id = ? ORDER BY i.row_idx", [labels, run_id])


def accepted_pseudo_labels(store: Store, run_id: int, labels: list[str]) -> "pa.Table":
    """A run's accepted pseudo-labels: ``row_idx``, ``label`` (index), ``confidence``,
    ``source_views`` and ``shared`` (a debate verdict or an escalated answer, which trains
    every view)."""
    return store.query(
        "SELECT i.row_idx, coalesce(list_position(?, p.label), 0) - 1 AS label, p.confidence, p.source_views,"
        " p.source IN ('debate', 'escalated') AS shared"
        " FROM pseudo_labels p JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id"
        " WHERE p.run_id = ? AND p.status = 'accepted'", [labels, run_id])


def rounds_since_reviews(store: Store, run_id: int) -> int | None:
    """The first committed round that started after the run's last review import (0 when
    nothing was ever imported; None when no round has run since the last import)."""
    last = store.scalar("SELECT max(imported_at) FROM reviews WHERE run_id = ?", [run_id]) \
        if has_table(store, "reviews") else None
    if last is None:
        return 0 if store.scalar("SELECT count(*) FROM rounds WHERE run_id = ?", [run_id]) else None
    return store.scalar("SELECT min(round) FROM rounds WHERE run_id = ? AND started_at > ?", [run_id, last])


def shadow_labels(store: Store, run_id: int, since_round: int = 0) -> "pa.Table":
    """The picks of a run's shadow runs from round ``since_round`` on (``fold``, ``row_idx``,
    ``label`` index, ``confidence``), empty for stores or runs without them."""
    if not has_table(store, "shadow_labels"):
        return store.query("SELECT 0 AS fold, 0 AS row_idx, 0 AS label, 0.0 AS confidence WHERE false")
    return store.query("SELECT fold, row_idx, label, confidence FROM shadow_labels WHERE run_id = ? AND round >= ?",
                       [run_id, since_round])


def latest_answers(store: Store, run_id: int, view: str, labels: list[str], before_round: int) -> "pa.Table":
    """A view's latest non-abstaining answer per item before round ``before_round``:
    ``row_idx`` and ``label`` (index in ``labels``). The escalation step reuses them, so an
    answer that was paid for is never bought twice."""
    return store.query(
        "SELECT row_idx, coalesce(list_position(?, label), 0) - 1 AS label FROM prediction_rows"
        " WHERE run_id = ? AND view = ? AND round < ? AND label IS NOT NULL"
        " QUALIFY row_number() OVER (PARTITION BY row_idx ORDER BY round DESC) = 1",
        [labels, run_id, view, before_round])


def item_counts(store: Store, run_id: int) -> dict[str, int]:
    """A run's gold, pool (unlabelled training) and test item counts."""
    rows = dict(store.con.execute(
        "SELECT CASE WHEN split = 'test' THEN 'test' WHEN gold_label IS NULL THEN 'pool' ELSE 'gold' END, count(*)"
        " FROM items WHERE run_id = ? GROUP BY 1", [run_id]).fetchall())
    return {k: int(rows.get(k, 0)) for k in ("gold", "pool", "test")}


def first_pool_rows(store: Store, run_id: int, n: int) -> "np.ndarray":
    """Data rows of the first ``n`` unlabelled training items (a sample for estimates)."""
    return store.query("SELECT row_idx FROM items WHERE run_id = ? AND split = 'train' AND gold_label IS NULL"
                       " ORDER BY row_idx LIMIT ?", [run_id, n]).column("row_idx").to_numpy()


def rows_not_all_finite(store: Store, run_id: int, fields: list[str]) -> "np.ndarray":
    """Data rows (``__row``, ascending) where one of ``fields`` is missing, infinite, NaN or
    not a number: one scan of the snapshot, so a check of clean data reads no rows."""
    from store.sql import ident

    bad = " OR ".join(f"NOT coalesce(isfinite(TRY_CAST({ident(f)} AS DOUBLE)), false)" for f in fields)
    return store.query(f"SELECT __row FROM {ident(f'data_{int(run_id)}')} WHERE {bad} ORDER BY __row",
                       []).column("__row").to_numpy()


def item_ids_of_rows(store: Store, run_id: int, rows: "np.ndarray") -> list[str]:
    """The item ids of data rows ``rows`` (ascending), in their order: one range read."""
    import numpy as np

    if not len(rows):
        return []
    t = store.query("SELECT row_idx, item_id FROM items WHERE run_id = ? AND row_idx BETWEEN ? AND ? ORDER BY row_idx",
                    [run_id, int(rows[0]), int(rows[-1])])
    at = np.searchsorted(t.column("row_idx").to_numpy(), np.asarray(rows))
    return t.column("item_id").take(at).to_pylist()


def final_metrics(store: Store, run_id: int) -> dict[str, dict[str, float | None]]:
    """Test accuracy and macro-F1 per view (and the ensemble) at the run's last round."""
    rows = store.con.execute(
        "SELECT view, test_accuracy, test_macro_f1 FROM metrics WHERE run_id = ?"
        " AND round = (SELECT max(round) FROM rounds WHERE run_id = ?)", [run_id, run_id]).fetchall()
    return {view: {"test_accuracy": acc, "test_macro_f1": f1} for view, acc, f1 in rows}


def label_counts(store: Store, run_id: int) -> tuple[int, int, int]:
    """(gold, reviewed, accepted pseudo-labels) of a run's training items, each item counted
    once: a gold item a reviewer relabelled counts as reviewed (its review is the label every
    reader uses, and exports it with source ``review``), not as gold too."""
    row = store.con.execute(
        "SELECT count(*) FILTER (i.gold_label IS NOT NULL AND rv.item_id IS NULL), count(rv.item_id)"
        " FROM items i LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id"
        " WHERE i.run_id = ? AND i.split = 'train'", [run_id]).fetchone()
    n_pseudo = store.scalar("SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'accepted'", [run_id])
    return int(row[0]), int(row[1]), int(n_pseudo)


def reviews_of_earlier_runs(store: Store, run_id: int) -> tuple[int, int | None]:
    """(items of this run that a reviewer labelled on an earlier run of the store, the latest
    such run): reviews belong to the run they were filed on, so a new run starts without them."""
    n, latest = store.con.execute(
        "SELECT count(DISTINCT rv.item_id), max(rv.run_id) FROM reviewed_labels rv JOIN items i"
        " ON i.item_id = rv.item_id AND i.run_id = ? AND i.split = 'train' WHERE rv.run_id < ?",
        [run_id, run_id]).fetchone()
    return int(n), None if latest is None else int(latest)


def run_summaries(store: Store) -> list[dict[str, Any]]:
    out = []
    for info in store.runs():
        rid = info["run_id"]
        n_items = store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'train'", [rid])
        n_test = store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'test'", [rid])
        n_gold, n_reviewed, n_pseudo = label_counts(store, rid)
        n_rounds = store.scalar("SELECT count(*) FROM rounds WHERE run_id = ?", [rid])
        out.append({
            "run_id": rid, "status": info["status"], "termination": info["termination"],
            "created_at": info["created_at"], "seed": info["seed"], "policy": info["policy"],
            "feeding": info["feeding"], "views": list(info["views"]),
            "n_items": n_items, "n_test": n_test, "n_gold": n_gold, "n_reviewed": int(n_reviewed),
            "n_pseudo": n_pseudo, "n_rounds": n_rounds, "round_limit": info.get("round_limit"),
        })
    return out


def resolve_run(store: Store, run_id: int | None) -> int:
    from store.exchange.query import whole_number

    whole_number("run_id", run_id)
    rid = int(run_id) if run_id is not None else store.latest_run()
    if rid is None:
        raise StoreError("holds no run yet", store.path)
    store.run_info(rid)
    return rid


def llm_usage(store: Store, run_id: int) -> list[dict[str, Any]]:
    """LLM calls per round and view: calls made, cache hits, errors, calls cancelled once sent, budget refusals,
    tokens, dollars and mean latency of the calls made."""
    if not has_table(store, "llm_calls"):
        return []  # a store written before LLM views existed
    return store.query(
        "SELECT round, view,"
        " count(*) FILTER (WHERE NOT cached AND status <> 'budget') AS calls,"  # a budget refusal is no call
        " count(*) FILTER (WHERE cached) AS cache_hits,"
        " count(*) FILTER (WHERE status = 'error') AS errors,"
        " count(*) FILTER (WHERE status = 'cancelled') AS cancelled,"  # sent, then the batch stopped
        " count(*) FILTER (WHERE status = 'budget') AS over_budget,"
        " coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
        " coalesce(sum(completion_tokens), 0) AS completion_tokens,"
        " coalesce(sum(cost_usd), 0) AS cost_usd,"
        " avg(latency_s) FILTER (WHERE NOT cached AND status = 'ok') AS mean_latency_s"
        " FROM llm_calls WHERE run_id = ? GROUP BY round, view ORDER BY round, view", [run_id]).to_pylist()


def has_table(store: Store, table: str) -> bool:
    """Whether the store has ``table`` (older stores lack the later migrations' tables)."""
    return bool(store.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]))


def debate_summary(store: Store, run_id: int | None) -> list[dict[str, Any]]:
    """Per round: items debated, verdicts, verdicts accepted, tokens, dollars, and the accuracy
    of verdicts on held-out items (debated for evaluation only). Items the budget left
    undebated count only as ``over_budget``. ``run_id`` None: the standalone debates
    (``cotrain debate --items``), one row with round None."""
    if not has_table(store, "debates"):
        return []
    # calls, tokens and dollars come from the ledger, which bills every call once: a debate's own
    # row counts only the turns its last invocation asked (after a kill -9 and a resume, the
    # turns asked before are cache hits there, and a killed invocation's debates have no row)
    return store.query(
        "WITH c AS (SELECT round, count(*) FILTER (WHERE NOT cached AND status <> 'budget') AS calls,"
        "   sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))::BIGINT AS tokens,"
        "   sum(cost_usd) AS cost_usd FROM llm_calls"
        "   WHERE run_id IS NOT DISTINCT FROM ? AND (starts_with(view, ?) OR starts_with(view, ?)) GROUP BY round)"
        " SELECT d.round, count(*) FILTER (WHERE d.split <> 'test' AND d.status <> 'budget') AS debated,"
        " count(*) FILTER (WHERE d.status = 'verdict' AND d.split <> 'test') AS verdicts,"
        " count(*) FILTER (WHERE d.accepted) AS accepted,"
        " count(*) FILTER (WHERE d.status = 'budget') AS over_budget,"
        " count(*) FILTER (WHERE d.early_stopped) AS early_stopped,"
        " coalesce(any_value(c.calls), 0)::BIGINT AS calls, coalesce(any_value(c.tokens), 0)::BIGINT AS tokens,"
        " coalesce(any_value(c.cost_usd), 0.0) AS cost_usd,"
        " count(*) FILTER (WHERE d.split = 'test' AND d.status <> 'budget') AS test_debated,"  # refused: not debated
        " avg(CASE WHEN d.verdict = i.gold_label THEN 1.0 ELSE 0.0 END) FILTER (WHERE d.split = 'test'"
        "   AND d.status <> 'budget') AS test_verdict_accuracy"
        " FROM debates d LEFT JOIN items i ON i.run_id = d.run_id AND i.item_id = d.item_id"
        " LEFT JOIN c ON c.round IS NOT DISTINCT FROM d.round"
        " WHERE d.run_id IS NOT DISTINCT FROM ? GROUP BY d.round ORDER BY d.round",
        [run_id, DEBATE_VIEW_PREFIX, ESCALATED_DEBATE_VIEW_PREFIX, run_id]).to_pylist()


def item_problems(store: Store, run_id: int) -> list[dict[str, Any]]:
    """Items a view could not read (and abstained on), per view and problem, with an example."""
    if not has_table(store, "item_problems"):
        return []
    return store.query(
        "SELECT view, problem, count(*) AS items, min(location) AS example"
        " FROM item_problems WHERE run_id = ? GROUP BY view, problem ORDER BY view, items DESC, problem",
        [run_id]).to_pylist()


def review_precision(store: Store, run_id: int) -> list[dict[str, Any]]:
    """Per pseudo-label source (the policy, ``debate``, and each view whose picks made it): how
    many reviewed pseudo-labels the reviewers confirmed or corrected: the measured precision."""
    if not has_table(store, "reviews"):
        return []
    return store.query(
        """WITH r AS (SELECT source, source_views, status = 'confirmed' AS ok FROM pseudo_labels
                      WHERE run_id = ? AND status IN ('confirmed', 'revoked')),
                s AS (SELECT 'policy' AS kind, source AS name, ok FROM r
                      UNION ALL SELECT 'view', unnest(source_views), ok FROM r)
           SELECT kind, name, count(*) FILTER (WHERE ok) AS confirmed, count(*) FILTER (WHERE NOT ok) AS corrected,
                  count(*) FILTER (WHERE ok) / count(*) AS precision
           FROM s GROUP BY kind, name ORDER BY kind, name""", [run_id]).to_pylist()


def debate_of_item(store: Store, item_id: str) -> dict[str, Any]:
    """The latest debate of an item and its turns; ``StoreError`` when it was never debated."""
    if not has_table(store, "debates"):
        raise StoreError(f"item '{item_id}' was never debated", store.path)
    rows = store.query("SELECT * FROM debates WHERE item_id = ? ORDER BY debate_id DESC LIMIT 1", [item_id]).to_pylist()
    if not rows:
        raise StoreError(f"item '{item_id}' was never debated", store.path)
    turns = store.query("SELECT * FROM debate_turns WHERE debate_id = ? ORDER BY debate_round, agent = 'judge', agent",
                        [rows[0]["debate_id"]]).to_pylist()
    return {"debate": rows[0], "turns": turns}


def abstention_reason(turn: dict[str, Any]) -> str:
    """Why a debate turn (a ``debate_turns`` row) abstained: ``error: ...`` when its call
    failed (the LLM seam's redacted message), ``answered: ...`` when the model's answer named
    no label; empty for a turn with a label, and for turns stored before migration 012.
    ``debate show`` and the report both print it."""
    if turn["label"] is not None:
        return ""
    if turn.get("error"):
        return f"error: {turn['error']}"
    return f"answered: {turn['answer']}" if turn.get("answer") else ""


def round_estimates(store: Store, run_id: int) -> list[dict[str, Any]]:
    """Per round, what selection estimated (migration 008): ``combination``, calibration,
    candidates and picks, ``est_precision`` (of the round's accepted labels),
    ``est_precision_all`` (of every accepted label so far), ``coverage``, the per-class bars,
    quotas and picks, ``stopped`` and ``stopped_min_precision`` (selection stopped because the
    estimated precision would fall below ``min_precision``). Empty for runs before estimates."""
    if not has_table(store, "round_estimates"):
        return []
    return store.query(
        "SELECT round, combination, n_calibration, calibration_accuracy, n_candidates, n_selected, est_precision,"
        " est_precision_all, coverage, class_bars, class_quota, class_selected, stopped,"
        " coalesce(stopped LIKE 'min_precision%', false) AS stopped_min_precision"
        " FROM round_estimates WHERE run_id = ? ORDER BY round", [run_id]).to_pylist()


def view_estimates(store: Store, run_id: int, latest: bool = True) -> list[dict[str, Any]]:
    """Per view: ``cv_accuracy`` (out-of-fold on gold), ``label_model_accuracy`` and ``weight``
    with their ``round``; the latest round each view has (``latest``), else every round."""
    if not has_table(store, "view_estimates"):
        return []
    keep = "QUALIFY row_number() OVER (PARTITION BY view ORDER BY round DESC) = 1" if latest else ""
    views = list(store.run_info(run_id)["views"])
    return store.query(
        "SELECT view, round, cv_accuracy, label_model_accuracy, weight FROM view_estimates"
        f" WHERE run_id = ? {keep} ORDER BY coalesce(list_position(?, view), 1000000), view, round",
        [run_id, views]).to_pylist()
