"""Read-side queries for ``cotrain status`` and reports: plain data, no rendering."""
from __future__ import annotations

from typing import Any

from store.database import Store
from store.errors import StoreError


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


def label_counts(store: Store, run_id: int) -> tuple[int, int]:
    """(gold training labels, accepted pseudo-labels) of a run."""
    n_gold = store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'train'"
                          " AND gold_label IS NOT NULL", [run_id])
    n_pseudo = store.scalar("SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'accepted'", [run_id])
    return int(n_gold), int(n_pseudo)


def run_summaries(store: Store) -> list[dict[str, Any]]:
    out = []
    for info in store.runs():
        rid = info["run_id"]
        n_items = store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'train'", [rid])
        n_test = store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'test'", [rid])
        n_gold, n_pseudo = label_counts(store, rid)
        n_rounds = store.scalar("SELECT count(*) FROM rounds WHERE run_id = ?", [rid])
        out.append({
            "run_id": rid, "status": info["status"], "termination": info["termination"],
            "created_at": info["created_at"], "seed": info["seed"], "policy": info["config"]["cotrain"]["policy"],
            "feeding": info["config"]["cotrain"]["feeding"], "views": list(info["views"]),
            "n_items": n_items, "n_test": n_test, "n_gold": n_gold, "n_pseudo": n_pseudo, "n_rounds": n_rounds,
        })
    return out


def resolve_run(store: Store, run_id: int | None) -> int:
    rid = run_id if run_id is not None else store.latest_run()
    if rid is None:
        raise StoreError("holds no run yet", store.path)
    store.run_info(rid)
    return rid


def llm_usage(store: Store, run_id: int) -> list[dict[str, Any]]:
    """LLM calls per round and view: calls made, cache hits, errors, budget refusals,
    tokens, dollars and mean latency of the calls made."""
    if not store.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'llm_calls'"):
        return []  # a store written before LLM views existed
    return store.query(
        "SELECT round, view,"
        " count(*) FILTER (WHERE NOT cached) AS calls,"
        " count(*) FILTER (WHERE cached) AS cache_hits,"
        " count(*) FILTER (WHERE status = 'error') AS errors,"
        " count(*) FILTER (WHERE status = 'budget') AS over_budget,"
        " coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
        " coalesce(sum(completion_tokens), 0) AS completion_tokens,"
        " coalesce(sum(cost_usd), 0) AS cost_usd,"
        " avg(latency_s) FILTER (WHERE NOT cached AND status = 'ok') AS mean_latency_s"
        " FROM llm_calls WHERE run_id = ? GROUP BY round, view ORDER BY round, view", [run_id]).to_pylist()
