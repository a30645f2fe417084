"""Running debates over many items: one client per endpoint, debates in parallel, budgets.

Every turn goes through the LLM seam (``views.llm.connect``), filed in the store's ledger
under ``debate:<agent>``: a turn already answered (a resumed run, a re-run) is served from the
cache and costs nothing. Debates run ``concurrency`` at a time (langgraph ``batch``); the
clients' own limits bound the requests in flight. Before each batch the dollars and tokens
spent so far are checked against the budget: once it is spent, the remaining items are not
debated (status ``budget``) and a warning says so. Under a budget the first debate runs alone
and each batch is only as wide as the budget left pays for at the cost seen so far, so the
budget is overshot by one debate at most. What was spent is read from the ledger (its
``debate:`` calls of this run), as the views' budgets are, so a resumed run goes on from what it
spent before it stopped; without a ledger it is counted in memory.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.aggregate import ABSTAIN
from agents.debate import AgentSpec, DebateSpec, Prompts, TurnResult, build_debate_graph, turn_request
from store.contracts import DEBATE_VIEW_PREFIX
from views.llm.calls import request_key
from views.llm.connect import Connection, check_model, connect, endpoint_for

log = logging.getLogger("cotrain")


@dataclass
class DebateOutcome:
    """One item's debate: the verdict (label index or -1), its aggregated confidence, and every turn."""

    item_id: str
    status: str                   # verdict | no_verdict | budget
    verdict: int = ABSTAIN
    confidence: float = 0.0
    rounds_used: int = 0
    early_stopped: bool = False
    turns: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def calls(self) -> int:
        return sum(1 for t in self.turns if not t["cached"])

    @property
    def tokens(self) -> int:
        return sum(int(t["prompt_tokens"] or 0) + int(t["completion_tokens"] or 0) for t in self.turns
                   if not t["cached"])

    @property
    def cost_usd(self) -> float:
        return float(sum(t["cost_usd"] or 0.0 for t in self.turns if not t["cached"]))


@dataclass
class Budget:
    usd: float | None = None
    tokens: int | None = None


class Debater:
    """Debates items under one :class:`DebateSpec`. Use as a context manager (it may start
    local model servers)."""

    def __init__(self, spec: DebateSpec, prompts: Prompts, ledger: Any = None, concurrency: int = 4,
                 timeout_s: float = 60.0, max_retries: int = 4, backoff_s: float = 0.5,
                 price: dict[str, float] | None = None, budget: Budget | None = None,
                 view_prefix: str = DEBATE_VIEW_PREFIX,
                 worst_case: Callable[[dict[str, str]], tuple[float, int]] | None = None) -> None:
        self.spec = spec
        self.view_prefix = view_prefix  # its calls are filed (and its budget counted) under this
        self.prompts = prompts
        self.ledger = ledger
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.price = price
        self.budget = budget or Budget()
        # an item's debate at its most (dollars, tokens: every round run, every answer at its
        # longest), so a batch starts only what the budget left pays for even then
        self.worst_case = worst_case
        self._mem_usd = 0.0   # spent by this Debater (counts only without a ledger)
        self._mem_tokens = 0
        # a run's debates count all the run spent on them, before a resume too; a standalone
        # debate (the ledger has no run) counts from here
        self._base = (0.0, 0)
        if getattr(ledger, "run_id", None) is None:
            self._base = self._ledger_spend() or (0.0, 0)
        self._conns: dict[tuple[str, str | None, str | None], Connection] = {}
        self._graph: Any = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Fail early if an agent's local model is missing."""
        for a in self.spec.all_agents():
            check_model(a.model)

    def _client(self, agent: AgentSpec) -> Any:
        key = (agent.model, agent.api_base, agent.api_key_env)
        with self._lock:  # agents run in parallel threads: open each endpoint once
            if key not in self._conns:  # agents on one model share its server and client
                self._conns[key] = connect(
                    agent.model, f"{self.view_prefix}{agent.model}", api_base=agent.api_base, api_key_env=agent.api_key_env,
                    ledger=self.ledger, concurrency=self.concurrency, timeout_s=self.timeout_s,
                    max_retries=self.max_retries, backoff_s=self.backoff_s, price=self.price,
                    # a budgeted debate holds one worst-case answer per turn: a billed empty one is not asked again
                    retry_billed=self.budget.usd is None and self.budget.tokens is None)
            return self._conns[key].client

    def ask(self, agent: AgentSpec, request: dict[str, Any]) -> TurnResult:
        c = self._client(agent).complete([request])[0]
        return TurnResult(content=c.content, ok=c.ok, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                          cost_usd=c.cost_usd, latency_s=c.latency_s, cached=c.cached, error=c.error)

    def graph(self) -> Any:
        if self._graph is None:
            self._graph = build_debate_graph(self.spec, self.prompts, self.ask)
        return self._graph

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns = {}

    def __enter__(self) -> Debater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ledger_spend(self) -> tuple[float, int] | None:
        fn = getattr(self.ledger, "spent_under", None)
        return fn(self.view_prefix) if fn is not None else None

    def spent(self) -> tuple[float, int]:
        """Dollars and tokens the debates have spent against the budget: from the ledger where
        there is one (this run's ``debate:`` calls), else counted by this Debater."""
        got = self._ledger_spend()
        if got is None:
            return self._mem_usd, self._mem_tokens
        return got[0] - self._base[0], got[1] - self._base[1]

    @property
    def spent_usd(self) -> float:
        return self.spent()[0]

    @property
    def spent_tokens(self) -> int:
        return self.spent()[1]

    def _over_budget(self) -> bool:
        b = self.budget
        if b.usd is None and b.tokens is None:
            return False
        usd, tokens = self.spent()
        return (b.usd is not None and usd >= b.usd) or (b.tokens is not None and tokens >= b.tokens)

    def _chunk(self, step: int, done: int, start: tuple[float, int]) -> int:
        """How many debates to start together: ``step`` without a budget; under one, as many
        as the budget left pays for at the mean cost of this call's debates so far (one to
        learn it), so a parallel batch overshoots the budget by at most one debate, not by a
        whole batch (a 4-wide batch spent three times a $0.01 budget)."""
        b = self.budget
        if b.usd is None and b.tokens is None:
            return step
        if done == 0:
            return 1
        usd, tokens = self.spent()
        n = step
        for cap, used, before in ((b.usd, usd, start[0]), (b.tokens, tokens, start[1])):
            per = (used - before) / done
            if cap is not None and per > 0:
                n = min(n, int((cap - used) // per))
        return max(1, n)

    def _affordable(self, upcoming: Sequence[tuple[str, dict[str, str], Any]]) -> int:
        """How many of ``upcoming`` the budget left pays for if each debate costs its worst
        case (a batch sized by the mean cost so far spent $1.43 of a $0.50 budget, and a first
        debate of a huge item $720)."""
        assert self.worst_case is not None
        b = self.budget
        usd, tokens = self.spent()
        n = 0
        for _, fields, votes in upcoming:
            w_usd, w_tokens = self.worst_case(fields)
            over = (b.usd is not None and usd + w_usd > b.usd) or \
                (b.tokens is not None and tokens + w_tokens > b.tokens)
            if over and not self._first_round_cached(fields, votes):  # a resumed run's debate: free
                break
            usd, tokens = (usd, tokens) if over else (usd + w_usd, tokens + w_tokens)
            n += 1
        return n

    def _first_round_cached(self, fields: dict[str, str], votes: Any) -> bool:
        """Whether the ledger's cache holds every agent's first turn on this item: the debate
        was paid for before a resume (its later turns almost surely too), so it replays free."""
        cached = getattr(self.ledger, "cached", None)
        if cached is None:
            return False
        keys = [request_key(endpoint_for(a.model, a.api_base, a.api_key_env).key_identity(),  # no server started
                            turn_request(self.spec, i, 0, self.prompts.first(a, fields, votes or []), a))
                for i, a in enumerate(self.spec.agents)]
        return len(cached(keys)) == len(keys)

    def run(self, items: Sequence[tuple[str, dict[str, str], list[dict[str, Any]]]]) -> list[DebateOutcome]:
        """Debate ``(item_id, fields, views' votes)`` triples; outcomes in the same order."""
        out: list[DebateOutcome] = []
        step = max(1, self.concurrency)
        start, lo = self.spent(), 0
        budgeted = self.budget.usd is not None or self.budget.tokens is not None
        while lo < len(items):
            n = (self._affordable(items[lo:lo + step]) if budgeted and self.worst_case is not None
                 else 0 if self._over_budget() else self._chunk(step, lo, start))
            if n == 0:
                usd, tokens = self.spent()
                log.warning("%s budget reached ($%.4f, %d tokens spent; the next debate may cost more than is "
                            "left): %d item(s) not debated", self.view_prefix.rstrip(":"), usd, tokens,
                            len(items) - lo)
                out.extend(DebateOutcome(item_id=i, status="budget") for i, _, _ in items[lo:])
                break
            chunk = items[lo:lo + n]
            lo += len(chunk)
            t0 = time.perf_counter()
            states = self.graph().batch([{"item_id": i, "item": f, "votes": v, "round": 0, "transcript": []}
                                         for i, f, v in chunk], config={"max_concurrency": step})
            dt = (time.perf_counter() - t0) / len(chunk)
            for (item_id, _, _), st in zip(chunk, states):
                o = DebateOutcome(item_id=item_id, status="verdict" if st.get("verdict", ABSTAIN) != ABSTAIN
                                  else "no_verdict", verdict=int(st.get("verdict", ABSTAIN)),
                                  confidence=float(st.get("confidence", 0.0)), rounds_used=int(st.get("round", 0)),
                                  early_stopped=bool(st.get("early_stopped", False)),
                                  turns=list(st.get("transcript", [])), seconds=dt)
                self._mem_usd += o.cost_usd
                self._mem_tokens += o.tokens
                out.append(o)
        return out
