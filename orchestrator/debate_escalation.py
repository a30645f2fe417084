"""A debate as the escalation model (``escalate: {kind: debate}``): the agents of the
config's ``debate`` section answer the items the cheap views leave uncertain, through the
same cascade as one stronger model (ranking, budget, accuracy measured on gold, one more
voter in the evidence).

:class:`DebateEscalator` gives the escalation step what it uses of an ``llm`` view: ``fit``
(nothing to fit: the agents see no demonstrations), ``predict_proba`` (one debate per
item; its verdict carries the debate's aggregated confidence, the rest is spread over the
other classes; no verdict is an abstention), ``plan`` and ``price_per_call`` (the debate's
dry-run estimate per item) and ``client().spent()`` (what its debates have cost this run).
Its calls are filed in the ledger under ``escalated-debate:<model>``, apart from the
rounds' own debates, and every debate it holds is kept (``take_outcomes``) so the
escalation step files it with its turns.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from agents.runner import Budget, DebateOutcome, Debater
from orchestrator.config import Config
from orchestrator.debate import debate_prompts, debate_spec, plan_debate, worst_case
from orchestrator.escalation_config import ESCALATED
from store.contracts import ESCALATED_DEBATE_VIEW_PREFIX
from views.base import ITEM_ID_COLUMN

#: Ledger prefix of the escalation debate's calls (a view name cannot hold a colon).
VIEW_PREFIX = ESCALATED_DEBATE_VIEW_PREFIX


class DebateEscalator:
    """The debate of ``cfg.debate`` standing in for the escalation model, within
    ``cfg.escalate.budget_usd``."""

    name = ESCALATED
    calibration = "none"
    calibration_max_items = 0

    def __init__(self, cfg: Config, ledger: Any = None) -> None:
        d = cfg.debate
        assert d is not None, "escalate kind 'debate' needs a debate section (checked by the config)"
        self.cfg = cfg
        self.k = len(cfg.task.names)
        self.fields = list(d.fields)
        self.debater = Debater(debate_spec(d, cfg.seed), debate_prompts(cfg), ledger=ledger,
                               concurrency=d.concurrency, timeout_s=d.timeout_s, max_retries=d.max_retries,
                               price=d.price.model_dump() if d.price else None,
                               budget=Budget(cfg.escalate.budget_usd if cfg.escalate else None, None),
                               view_prefix=VIEW_PREFIX, worst_case=worst_case(cfg))
        self.model = "debate(" + ", ".join(a.model for a in self.debater.spec.all_agents()) + ")"
        self._outcomes: list[DebateOutcome] = []
        self._per_item: tuple[int, float | None] | None = None

    # ------------------------------------------------------------------ what the cascade uses
    def set_round(self, round_idx: int) -> None:
        """Nothing is drawn per round: the same item gets the same prompts (cache hits)."""

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None) -> DebateEscalator:
        return self

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        """One debate per row: (n, K), the verdict at the debate's confidence (at least a
        uniform share), the rest spread evenly; NaN rows where no verdict came."""
        ids = [str(i) for i in items[ITEM_ID_COLUMN]] if ITEM_ID_COLUMN in items else [str(i) for i in items.index]
        rows = [(ids[k], {f: "" if pd.isna(items[f].iloc[k]) else str(items[f].iloc[k]) for f in self.fields}, [])
                for k in range(len(items))]
        outcomes = self.debater.run(rows) if rows else []
        self._outcomes.extend(outcomes)
        return verdict_probs(outcomes, self.k)

    def take_outcomes(self) -> list[DebateOutcome]:
        """The debates held since the last call, in the order they were asked."""
        out, self._outcomes = self._outcomes, []
        return out

    def plan(self, items: pd.DataFrame) -> dict[str, Any]:
        """Calls and tokens to debate one item (upper bounds: every debate round runs)."""
        records = items[self.fields].astype(str).to_dict("records") if all(f in items for f in self.fields) else []
        p = plan_debate(self.cfg, 1, records)
        calls = max(int(p["calls"]), 1)
        prompt = sum(a["prompt_tokens"] for a in p["agents"]) / calls
        completion = sum(a["completion_tokens"] for a in p["agents"]) / calls
        self._per_item = (calls, p["cost_usd"])
        return {"view": ESCALATED, "model": self.model, "mode": "debate", "calls_per_item": calls,
                "prompt_tokens_per_call": prompt, "completion_tokens_per_call": completion,
                "demonstrations": "none"}

    def price_per_call(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """Dollars per call of the last :meth:`plan` (None: an agent's price is unknown)."""
        if self._per_item is None or self._per_item[1] is None:
            return None
        return float(self._per_item[1]) / self._per_item[0]

    def client(self) -> DebateEscalator:
        return self

    def spent(self) -> float:
        """Dollars the escalation debates have spent this run."""
        return float(self.debater.spent_usd)

    def is_local(self) -> bool:
        """Whether every agent runs a packaged local model (nothing to pay)."""
        return all(str(a.model).startswith("local:") for a in self.debater.spec.all_agents())

    def close(self) -> None:
        self.debater.close()


def verdict_probs(outcomes: list[DebateOutcome], k: int) -> np.ndarray:
    """(n, K) from debate outcomes: the verdict gets max(confidence, 1/K), the other classes
    share the rest; NaN rows for no verdict (or no budget left)."""
    out = np.full((len(outcomes), k), np.nan)
    for i, o in enumerate(outcomes):
        if o.status == "verdict" and 0 <= o.verdict < k:
            c = min(max(float(o.confidence), 1.0 / k), 1.0)
            out[i] = (1.0 - c) / max(k - 1, 1)
            out[i, o.verdict] = c
    return out


__all__ = ["DebateEscalator", "VIEW_PREFIX", "verdict_probs"]
