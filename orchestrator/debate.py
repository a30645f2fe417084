"""Debates inside co-training and on their own: choosing items, running the agents, filing
debates and turns in the store, and estimating a debate's cost before it runs.

The graph and the agents live in ``agents/``; this module only connects them to the config,
the label matrix and the store.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from agents.aggregate import ABSTAIN
from agents.debate import AgentSpec, DebateSpec, Prompts
from agents.runner import Budget, Debater
from orchestrator.config import Config
from orchestrator.debate_config import AgentConfig, DebateConfig
from store.writers import RoundWriter, write_debates

log = logging.getLogger("cotrain")


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


def check_debate_budget(cfg: Config) -> None:
    """A dollar budget needs every remote agent's price (``debate.price``, else litellm's
    map): without one its calls would be filed at $0 and the budget never reached. Checked
    before anything runs (``ConfigError`` naming ``debate.price``)."""
    from store.errors import ConfigError
    from views.llm.client import estimate_cost

    d = cfg.debate
    if d is None or d.budget_usd is None or d.price is not None:
        return
    unknown = [a.model for a in debate_spec(d, cfg.seed).all_agents()
               if not str(a.model).startswith("local:") and estimate_cost(a.model, None, 100.0, 1.0) is None]
    if unknown:
        raise ConfigError("debate.price", f"debate.budget_usd is set but the price of '{unknown[0]}' is unknown "
                          "(litellm has none); give debate.price: {input_per_mtok, output_per_mtok} so the budget "
                          "can be enforced")


def make_debater(cfg: Config, ledger: Any = None) -> Debater:
    """A :class:`Debater` for the config's ``debate`` section (which must be set)."""
    d = cfg.debate
    assert d is not None
    check_debate_budget(cfg)
    return Debater(debate_spec(d, cfg.seed), debate_prompts(cfg), ledger=ledger, concurrency=d.concurrency,
                   timeout_s=d.timeout_s, max_retries=d.max_retries,
                   price=d.price.model_dump() if d.price else None, budget=Budget(d.budget_usd, d.budget_tokens),
                   worst_case=worst_case(cfg))


#: The dry-run's token counts are litellm's, not necessarily the server's: a debate's worst
#: case is padded by this factor before the budget is held against it.
WORST_CASE_PAD = 1.25


def worst_case(cfg: Config) -> Any:
    """``fields -> (dollars, tokens)``: an item's debate at its most (every round, every answer
    at ``max_answer_tokens``; :func:`plan_debate` for that one item), padded by
    ``WORST_CASE_PAD``; an unknown price counts as $0 (a remote agent needs one)."""
    planner = _debate_planner(cfg)

    def one(fields: dict[str, str]) -> tuple[float, int]:
        plan = planner(1, [fields])
        return WORST_CASE_PAD * float(plan["cost_usd"] or 0.0), int(WORST_CASE_PAD * plan["tokens"])
    return one


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


def debate_round(runner: Any, write: RoundWriter, state: Any, pool: np.ndarray, merged: Any, pred: Any,
                 test_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The debate step of a co-training round: debate the round's disputed (or
    low-confidence) pool items, plus up to ``evaluate_test`` disputed held-out items for
    evaluation only; file everything; write and return the accepted verdicts as
    (positions, labels, confidences). ``runner`` is the round's ``RoundRunner``."""
    from orchestrator.selection import find_disputes, label_matrix

    cfg, store = runner.cfg, runner.store
    d = cfg.debate
    assert d is not None
    chosen = choose_items(d, merged.disputed, merged.item, pred.conf)
    rows = [(pool[i], trig, pred.labels[i], pred.conf[i], "train") for i, trig in chosen]
    if d.evaluate_test and state.is_test.any():
        t_lab, t_conf = label_matrix(test_probs)
        t_disp = np.flatnonzero(find_disputes(t_lab, t_conf, cfg.cotrain.threshold))
        test_pos = state.test_pos
        # held-out items chosen by the same trigger, for the verdicts' accuracy only
        chosen_t = choose_items(d.model_copy(update={"max_items": d.evaluate_test}), t_disp,
                                np.zeros(0, dtype=np.int64), t_conf)
        rows += [(test_pos[i], trig, t_lab[i], t_conf[i], "test") for i, trig in chosen_t]
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float32))
    if not rows:
        return empty
    positions = np.asarray([x[0] for x in rows], dtype=np.int64)
    df = store.fetch_rows(write.run_id, state.row_idx[positions], d.fields).to_pandas()
    ids = state.ids(positions).to_pylist()
    items = [(ids[k], {f: "" if df[f].iloc[k] is None else str(df[f].iloc[k]) for f in d.fields},
              view_votes(lab, cf, write.views, write.labels)) for k, (_, _, lab, cf, _) in enumerate(rows)]
    outcomes = runner.debater.run(items)
    accepted = [o.status == "verdict" and o.confidence >= d.accept_confidence and split == "train"
                for o, (_, _, _, _, split) in zip(outcomes, rows)]
    write_debates(store, outcomes, run_id=write.run_id, round_idx=write.round, triggers=[x[1] for x in rows],
                  splits=[x[4] for x in rows], accepted=accepted, aggregation=d.aggregation,
                  label_names=write.labels)
    acc = np.flatnonzero(accepted)
    if acc.size == 0:
        return empty
    pos = positions[acc]
    lab = np.asarray([outcomes[k].verdict for k in acc], dtype=np.int16)
    conf = np.asarray([outcomes[k].confidence for k in acc], dtype=np.float32)
    write.pseudo_labels(state.ids(pos), lab, conf, "debate", pa.array([["debate"]] * len(pos), pa.list_(pa.string())))
    log.info("round %d: %d item(s) debated, %d verdict(s) accepted", write.round,
             sum(o.status != "budget" for o in outcomes), len(pos))
    return pos, lab, conf


def plan_debate(cfg: Config, n_items: int, sample: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Calls, tokens and dollars to debate ``n_items`` (upper bounds: no early stop)."""
    check_debate_budget(cfg)  # a dry run refuses what the run would
    return _debate_planner(cfg)(n_items, sample)


def _debate_planner(cfg: Config) -> Any:
    """``(n_items, sample) -> plan`` for the config's debate section, its spec, prompts and
    price built once (:func:`worst_case` plans every item it is asked about)."""
    from views.llm.client import Price

    d = cfg.debate
    assert d is not None
    spec, prompts = debate_spec(d, cfg.seed), debate_prompts(cfg)
    price = Price(**d.price.model_dump()) if d.price is not None else None
    return lambda n_items, sample: _plan(d, spec, prompts, price, n_items, sample)


def _plan(d: DebateConfig, spec: Any, prompts: Any, price: Any, n_items: int,
          sample: Sequence[dict[str, str]]) -> dict[str, Any]:
    from views.llm.client import count_tokens, estimate_cost

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
