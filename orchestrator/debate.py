"""Debates inside co-training and on their own: choosing items, running the agents, filing
debates and turns in the store, and estimating a debate's cost before it runs.

The graph and the agents live in ``agents/``; this module only connects them to the config,
the label matrix and the store.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from agents.aggregate import ABSTAIN
from agents.debate import AgentSpec, DebateSpec, Prompts
from agents.runner import Budget, DebateOutcome, Debater
from orchestrator.config import AgentConfig, Config, DebateConfig
from store.database import Store, utcnow


def _agent(a: AgentConfig) -> AgentSpec:
    return AgentSpec(name=a.name, model=a.model, persona=a.persona, temperature=a.temperature,
                     api_base=a.api_base, api_key_env=a.api_key_env)


def debate_spec(d: DebateConfig, seed: int) -> DebateSpec:
    return DebateSpec(agents=tuple(_agent(a) for a in d.agents), rounds=d.rounds, context=d.context,
                      aggregation=d.aggregation, consensus=d.consensus,
                      judge=_agent(d.judge) if d.judge is not None else None,
                      max_answer_tokens=d.max_answer_tokens, seed=seed)


def debate_prompts(cfg: Config) -> Prompts:
    d = cfg.debate
    assert d is not None
    return Prompts(labels=cfg.task.names, verbalisers=[[n] for n in cfg.task.names], fields=d.fields,
                   instructions=d.instructions, descriptions=[x.description for x in cfg.task.labels])


def make_debater(cfg: Config, ledger: Any = None) -> Debater:
    """A :class:`Debater` for the config's ``debate`` section (which must be set)."""
    d = cfg.debate
    assert d is not None
    return Debater(debate_spec(d, cfg.seed), debate_prompts(cfg), ledger=ledger, concurrency=d.concurrency,
                   timeout_s=d.timeout_s, max_retries=d.max_retries,
                   price=d.price.model_dump() if d.price else None, budget=Budget(d.budget_usd, d.budget_tokens))


def choose_items(d: DebateConfig, disputed: np.ndarray, picked: np.ndarray, conf_m: np.ndarray) -> list[tuple[int, str]]:
    """Row positions (into the round's label matrix) to debate, with their trigger: disputed
    items first, then (``low_confidence``/``both``) unpicked items whose most confident view is
    below ``low_confidence``, least confident first; at most ``max_items``."""
    out: list[tuple[int, str]] = []
    if d.trigger in ("disputed", "both"):
        out.extend((int(i), "disputed") for i in disputed)
    if d.trigger in ("low_confidence", "both"):
        taken = np.zeros(len(conf_m), dtype=bool)
        taken[np.asarray(picked, dtype=np.int64)] = True
        taken[np.asarray(disputed, dtype=np.int64)] = True
        best = np.nan_to_num(conf_m, nan=0.0).max(axis=1) if conf_m.size else np.zeros(0)
        low = np.flatnonzero(~taken & (best < d.low_confidence))
        out.extend((int(i), "low_confidence") for i in low[np.argsort(best[low], kind="stable")])
    return out[: d.max_items]


def view_votes(labels_row: np.ndarray, conf_row: np.ndarray, views: Sequence[str],
               label_names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"view": views[j], "label": label_names[int(labels_row[j])], "confidence": float(conf_row[j])}
            for j in range(len(views)) if labels_row[j] != ABSTAIN]


def file_debates(store: Store, outcomes: Sequence[DebateOutcome], *, run_id: int | None, round_idx: int | None,
                 triggers: Sequence[str], splits: Sequence[str], accepted: Sequence[bool], aggregation: str,
                 label_names: Sequence[str]) -> None:
    """Insert debates and their turns (the caller owns the transaction)."""
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
        }))


def plan_debate(cfg: Config, n_items: int, sample: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Calls, tokens and dollars to debate ``n_items`` (upper bounds: no early stop)."""
    from views.llm.client import Price, count_tokens, estimate_cost

    d = cfg.debate
    assert d is not None
    spec = debate_spec(d, cfg.seed)
    prompts = debate_prompts(cfg)
    price = Price(**d.price.model_dump()) if d.price is not None else None
    per_agent = []
    for a in spec.all_agents():
        msgs = [prompts.first(a, dict(item), []) for item in sample[:20]] or [prompts.first(a, {}, [])]
        first = float(np.mean([count_tokens(a.model, m) for m in msgs]))
        is_judge = spec.judge is not None and a is spec.judge
        calls = 1 if is_judge else spec.rounds
        # the judge reads every turn; a debater's later rounds add its own and the others' answers
        prompt_tok = (first + spec.rounds * len(spec.agents) * d.max_answer_tokens if is_judge
                      else first + (spec.rounds - 1) * (first + len(spec.agents) * d.max_answer_tokens))
        out_tok = calls * d.max_answer_tokens
        cost = estimate_cost(a.model, price, prompt_tok, out_tok)
        per_agent.append({"agent": a.name, "model": a.model, "calls": calls, "prompt_tokens": prompt_tok,
                          "completion_tokens": out_tok, "cost_usd": cost})
    calls = n_items * sum(x["calls"] for x in per_agent)
    tokens = n_items * sum(x["prompt_tokens"] + x["completion_tokens"] for x in per_agent)
    costs = [x["cost_usd"] for x in per_agent]
    return {"items": n_items, "calls": calls, "tokens": int(tokens),
            "cost_usd": None if any(c is None for c in costs) else n_items * float(sum(costs)),  # type: ignore[arg-type]
            "agents": per_agent, "budget_usd": d.budget_usd, "budget_tokens": d.budget_tokens}
