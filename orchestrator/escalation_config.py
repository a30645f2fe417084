"""The ``escalate:`` section of a config: which stronger model to ask, and when to stop.
What the cascade does with it is ``orchestrator.escalation``."""
from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from views.checked import CheckedModel
from views.params import LLMParams

#: The view name the escalation model's answers are filed under (no configured view may take it).
ESCALATED = "escalated"


class EscalationConfig(CheckedModel):
    """``below``: items whose p_correct after the cheap views is under this are candidates;
    ``budget_usd``: the most the cascade may spend over the run (required: a strong model
    without a cap is a blank cheque); ``target_precision``: stop a round's escalation once
    the estimated precision of the pool's combined labels reaches it; ``gold_items``: gold
    and reviewed items it answers to estimate its accuracy; ``max_items_per_round``;
    ``chunk``: items per request batch (the budget and the target are checked between
    chunks); ``order``: ``value`` (the default: the close-call review score; items no answer
    could settle never) or ``random`` (a seeded random subset of the candidates: the
    baseline that measures what the ranking is worth). ``kind``: ``llm`` (the default: one
    stronger model, and every other key is a parameter of an ``llm`` view: ``model``,
    ``api_base``, ``api_key_env``, ``fields``, ``price``, ``scoring``, ``concurrency``, ...)
    or ``debate`` (a debate among the agents of the config's ``debate`` section, which
    ``enabled: false`` keeps out of the rounds; its fields, prompts and price are that
    section's, and no other key is taken)."""

    model_config = ConfigDict(extra="allow")

    enabled: bool = True
    kind: Literal["llm", "debate"] = "llm"
    below: float = Field(default=0.9, gt=0.0, le=1.0)
    budget_usd: float = Field(gt=0.0)
    target_precision: float | None = Field(default=None, gt=0.0, lt=1.0)
    gold_items: int = Field(default=50, ge=0)
    max_items_per_round: int | None = Field(default=None, ge=1)
    chunk: int = Field(default=32, ge=1)
    order: Literal["value", "random"] = "value"
    _llm: LLMParams | None = PrivateAttr(default=None)

    @property
    def llm(self) -> LLMParams:
        """The model's parameters as an ``llm`` view's, validated (its budget is ``budget_usd``)."""
        assert self._llm is not None
        return self._llm

    @model_validator(mode="after")
    def _llm_params(self) -> EscalationConfig:
        if self.kind == "debate":
            if self.model_extra:
                raise ValueError(f"kind 'debate' asks the agents of the 'debate' section: "
                                 f"{', '.join(sorted(self.model_extra))} would not be used")
            return self
        self._llm = LLMParams.model_validate({**(self.model_extra or {}), "budget_usd": self.budget_usd})
        return self


__all__ = ["ESCALATED", "EscalationConfig"]
