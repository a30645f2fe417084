"""The store's side of LLM calls: response cache, call ledger and demonstrations shown.

Everything here is written through a cursor of its own, committed as it arrives and
independently of the round's transaction: an answer that was paid for is never asked for
again, even if the process dies before the round commits. The cache is keyed by the
model's identity and the full request (messages and parameters), never by credentials:
nothing that reaches this module carries an API key.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import duckdb
import pyarrow as pa

from store.contracts import CallRecord
from store.database import Store, utcnow
from store.sql import ident, idents


#: The keys of :meth:`LLMLedger.usage`.
USAGE_KEYS = ("calls", "cache_hits", "errors", "over_budget", "prompt_tokens", "completion_tokens", "cost_usd",
              "cancelled")


class LLMLedger:
    """Response cache, call log and demonstration log of one run (``run_id``) in a store
    (the ``store.contracts.Ledger`` protocol).

    ``round`` is set by the orchestrator at the start of every round so calls and
    demonstrations are filed under it. Thread-safe: the LLM client may call it from its
    event-loop thread.
    """

    def __init__(self, store: Store, run_id: int | None) -> None:
        self.store = store
        self.run_id = run_id
        self.round: int | None = None
        self._lock = threading.Lock()
        self._con = store.con.cursor()
        self._usage_lock = threading.Lock()
        self._usage = dict.fromkeys(USAGE_KEYS, 0)
        self._usage["cost_usd"] = 0.0
        if run_id is not None:  # a resumed run's earlier calls count too
            row = self._con.execute(
                "SELECT count(*) FILTER (WHERE NOT cached AND status <> 'budget'), count(*) FILTER (WHERE cached),"
                " count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'budget'),"
                " coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(cost_usd), 0),"
                " count(*) FILTER (WHERE status = 'cancelled') FROM llm_calls WHERE run_id = ?",
                [run_id]).fetchall()[0]  # fetchall: duckdb 2.x keeps a half-read result open, and the next
            # register() on this cursor would fail
            self._usage.update(zip(USAGE_KEYS, (*map(int, row[:6]), float(row[6]), int(row[7]))))

    def usage(self) -> dict[str, int | float]:
        """This run's LLM usage so far, from counters in memory (no query): ``calls`` made,
        ``cache_hits``, ``errors``, ``over_budget``, ``prompt_tokens``, ``completion_tokens``, ``cancelled``,
        ``cost_usd`` (as ``cotrain status`` counts them from ``llm_calls``)."""
        with self._usage_lock:
            return dict(self._usage)

    def _count(self, calls: Sequence[CallRecord]) -> None:
        with self._usage_lock:
            u = self._usage
            for c in calls:
                if c.cached or c.status != "budget":  # a budget refusal is filed, but no call was made
                    u["cache_hits" if c.cached else "calls"] += 1
                u["errors"] += c.status == "error"
                u["over_budget"] += c.status == "budget"
                u["cancelled"] += c.status == "cancelled"
                u["prompt_tokens"] += c.prompt_tokens or 0
                u["completion_tokens"] += c.completion_tokens or 0
                u["cost_usd"] += c.cost_usd or 0.0

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def _insert(self, table: str, data: pa.Table, conflict: str = "") -> None:
        cols = idents(data.column_names)
        with self.store.registered(data, self._con) as name:
            self._con.execute(f"INSERT INTO {ident(table)} ({cols}) SELECT {cols} FROM {ident(name)} {conflict}")

    # ------------------------------------------------------------------ cache
    def cached(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored responses for those keys that have one."""
        if not keys:
            return {}
        with self._lock, self.store.registered(pa.table({"key": pa.array(list(set(keys)), pa.string())}),
                                                self._con) as name:
            rows = self._con.execute(
                f"SELECT c.key, c.response FROM llm_cache c JOIN {ident(name)} k ON c.key = k.key").fetchall()
        return {k: json.loads(r) for k, r in rows}

    # ------------------------------------------------------------------ calls
    def record(self, calls: Sequence[CallRecord]) -> None:
        """Cache the new answers and log every call, in one commit."""
        if not calls:
            return
        now = utcnow()
        fresh = {c.key: c for c in calls if not c.cached and c.status == "ok" and c.response is not None}
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                if fresh:
                    self._insert("llm_cache", pa.table({
                        "key": list(fresh), "model": [c.model for c in fresh.values()],
                        "request": [json.dumps(c.request, sort_keys=True) for c in fresh.values()],
                        "response": [json.dumps(c.response, sort_keys=True) for c in fresh.values()],
                        "created_at": pa.array([now] * len(fresh), pa.timestamp("us")),
                    }), "ON CONFLICT (key) DO UPDATE SET response = excluded.response, created_at = excluded.created_at")
                # (a key answered again replaces what an earlier version cached: an empty answer)
                n = len(calls)
                self._insert("llm_calls", pa.table({
                    "run_id": pa.array([self.run_id] * n, pa.int32()),
                    "round": pa.array([self.round] * n, pa.int32()),
                    "view": pa.array([c.view for c in calls], pa.string()),
                    "key": [c.key for c in calls], "model": [c.model for c in calls],
                    "cached": [c.cached for c in calls], "status": [c.status for c in calls],
                    "error": pa.array([c.error for c in calls], pa.string()),
                    "attempts": pa.array([c.attempts for c in calls], pa.int32()),
                    "prompt_tokens": pa.array([c.prompt_tokens for c in calls], pa.int64()),
                    "completion_tokens": pa.array([c.completion_tokens for c in calls], pa.int64()),
                    "cost_usd": pa.array([c.cost_usd for c in calls], pa.float64()),
                    "latency_s": pa.array([c.latency_s for c in calls], pa.float64()),
                    "created_at": pa.array([now] * n, pa.timestamp("us")),
                }))
                self._con.execute("COMMIT")
            except BaseException:
                with suppress(duckdb.Error):  # an interrupted COMMIT may have ended the transaction
                    self._con.execute("ROLLBACK")
                raise
        self._count(calls)

    def spent(self, view: str) -> float:
        """Dollars this run's view has spent on calls (cache hits cost nothing)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id IS NOT DISTINCT FROM ? AND view = ?"
                " AND NOT cached", [self.run_id, view]).fetchall()
        return float(rows[0][0])

    def spent_under(self, prefix: str) -> tuple[float, int]:
        """Dollars and tokens (prompt + completion) this run has spent on calls filed under a
        view whose name starts with ``prefix`` (``debate:`` for every debate agent; view names
        cannot hold a colon). Cache hits cost nothing. Read from the store, so a resumed run
        counts what it spent before it stopped."""
        with self._lock:
            rows = self._con.execute(
                "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(coalesce(prompt_tokens, 0)"
                " + coalesce(completion_tokens, 0)), 0) FROM llm_calls"
                " WHERE run_id IS NOT DISTINCT FROM ? AND starts_with(view, ?) AND NOT cached",
                [self.run_id, prefix]).fetchall()
        return float(rows[0][0]), int(rows[0][1])

    # ------------------------------------------------------------------ demonstrations
    def record_demonstrations(self, view: str, item_ids: Sequence[str], demo_ids: Sequence[Sequence[str]]) -> None:
        """Which examples each item's prompt showed in the current round (re-done rounds overwrite)."""
        if self.run_id is None or self.round is None or not item_ids:
            return
        n = len(item_ids)
        t = pa.table({
            "run_id": pa.array([self.run_id] * n, pa.int32()), "round": pa.array([self.round] * n, pa.int32()),
            "view": pa.array([view] * n, pa.string()), "item_id": pa.array(list(item_ids), pa.string()),
            "demo_ids": pa.array([list(d) for d in demo_ids], pa.list_(pa.string())),
        })
        with self._lock:
            self._insert("llm_demonstrations", t, "ON CONFLICT DO UPDATE SET demo_ids = excluded.demo_ids")
