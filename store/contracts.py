"""What views and agents may rely on from the store, without reaching into its internals:
the record of one LLM call and the ledger protocol that caches and files such calls.

``store.llm_ledger.LLMLedger`` implements :class:`Ledger` over a DuckDB store; a view or an
agent depends only on this module (and on ``store.errors``, ``store.labels`` and
``store.media``), so it can be used, and tested, with any object that has these methods.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


#: Debate agents' calls are filed in the ledger under ``debate:<model>`` (a view name cannot
#: hold a colon), and under ``escalated-debate:<model>`` when the debate is the escalation
#: model; what the debates of a run cost is what the ledger holds under the two.
DEBATE_VIEW_PREFIX = "debate:"
ESCALATED_DEBATE_VIEW_PREFIX = "escalated-debate:"


@dataclass(frozen=True)
class CallRecord:
    """One request's outcome, as the LLM client reports it."""

    view: str
    key: str
    model: str
    request: dict[str, Any]
    response: dict[str, Any] | None   # None when the call failed or was refused by the budget
    cached: bool
    status: str                       # ok | error | budget | cancelled (in flight when the batch stopped)
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None


@runtime_checkable
class Ledger(Protocol):
    """The LLM response cache and call ledger of one run."""

    round: int | None

    def cached(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored responses for those request keys that have one."""
        ...

    def record(self, calls: Sequence[CallRecord]) -> None:
        """File calls (answered, cached, failed or refused) and cache the answered ones."""
        ...

    def spent(self, view: str) -> float:
        """Dollars this run's ``view`` has spent (cache hits cost nothing)."""
        ...

    def spent_under(self, prefix: str) -> tuple[float, int]:
        """Dollars and tokens of this run's calls whose view name starts with ``prefix``."""
        ...

    def record_demonstrations(self, view: str, item_ids: Sequence[str], demo_ids: Sequence[Sequence[str]]) -> None:
        """Which demonstrations each prediction of ``view`` saw."""
        ...

    def usage(self) -> dict[str, int | float]:
        """This run's LLM usage so far: calls, cache hits, errors, tokens, dollars."""
        ...


__all__ = ["CallRecord", "Ledger"]
