"""The dry run: read and check the data and views, and estimate each LLM view's (and the
debate's) calls, tokens and dollars for the whole run, calling no model and no user code and
writing no store."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config import Config, resolve_config
from orchestrator.rounds import RoundRunner
from orchestrator.unread_settings import unread_settings
from store.database import Store
from store.queries import first_pool_rows, item_counts
from views.base import Plannable


def plan(config: str | Path | Config | dict[str, Any]) -> dict[str, Any]:
    """A dry run: read and check the data and views, and estimate each LLM view's calls,
    tokens and dollars for the whole run, without calling any model or writing a store.

    Estimates are upper bounds: every round asks about the whole pool (it shrinks as labels
    are accepted), and repeated prompts (zero-shot rounds after the first) would be cache hits.
    """
    cfg, base = resolve_config(config)
    with Store(":memory:") as st:
        runner = RoundRunner(cfg, st, base_dir=base, dry_run=True)
        try:
            run_id, _ = runner.start()  # builds the views once (dry: no user code runs)
            counts = item_counts(st, run_id)
            n_gold, n_pool, n_test = (counts[k] for k in ("gold", "pool", "test"))
            pool_rows = first_pool_rows(st, run_id, 50)
            wanted = sorted(set(runner.fields) | set(cfg.debate.fields if cfg.debate is not None else []))
            sample = st.fetch_rows(run_id, pool_rows, wanted).to_pandas()
            rounds = cfg.cotrain.max_rounds
            per_round_pool = min(n_pool, cfg.cotrain.pool_sample or n_pool)
            out = [_plan_view(v, sample, n_gold, n_test, rounds, per_round_pool)
                   for v in runner.views or [] if isinstance(v, Plannable)]
            escalation = None
            if cfg.escalate is not None and cfg.escalate.enabled:
                from orchestrator.escalation import make_escalator, plan_escalation

                view, esc_fields = make_escalator(cfg, None, st.data_columns(run_id), base, None)
                try:
                    esc_sample = st.fetch_rows(run_id, pool_rows, esc_fields).to_pandas()
                    escalation = plan_escalation(cfg, view, esc_sample, n_pool, n_gold, rounds)
                finally:
                    view.close()
        finally:
            runner.close()
    debate = None
    if cfg.debate is not None and cfg.debate.enabled:
        from orchestrator.debate import plan_debate

        d = cfg.debate
        records = sample[d.fields].astype(str).to_dict("records") if all(f in sample for f in d.fields) else []
        # a round debates at most max_items of the pool and evaluate_test of the test items
        debate = plan_debate(cfg, rounds * (min(d.max_items, n_pool) + min(d.evaluate_test, n_test)), records)
    return {"n_gold": n_gold, "n_pool": n_pool, "n_test": n_test, "max_rounds": rounds, "views": out,
            "debate": debate, "escalation": escalation, "unread_settings": unread_settings(cfg)}


def _plan_view(v: Plannable, sample: Any, n_gold: int, n_test: int, rounds: int, per_round_pool: int) -> dict[str, Any]:
    """One LLM view's calls, tokens and dollars for the whole run (see ``plan``)."""
    p = v.plan(sample)
    calib = 0 if v.calibration == "none" else min(n_gold + rounds * per_round_pool, int(v.calibration_max_items))
    # every gold item is asked about too: cross-validation over gold predicts each out of fold
    # (the calibration's items are gold items and pool items already counted)
    if p["demonstrations"] == "none":  # same prompts every round: later rounds hit the cache
        items = per_round_pool + n_test + n_gold
    else:
        items = rounds * per_round_pool + (rounds + 1) * (n_test + max(calib, n_gold))
    calls = items * p["calls_per_item"]
    per_call = v.price_per_call(p["prompt_tokens_per_call"], p["completion_tokens_per_call"])
    return {**p, "items": items, "calls": calls,
            "prompt_tokens": int(calls * p["prompt_tokens_per_call"]),
            "completion_tokens": int(calls * p["completion_tokens_per_call"]),
            "cost_usd": None if per_call is None else calls * per_call, "budget_usd": v.budget_usd}
