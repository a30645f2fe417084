"""The ``debate:`` section of a config: the agents and how they debate the items the views
dispute. What a debate does with it is ``orchestrator.debate`` and ``agents/``."""
from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from views.checked import CheckedModel
from views.llm.local import DEFAULT_MODEL
from views.params import PriceParams


class _Strict(CheckedModel):
    model_config = ConfigDict(extra="forbid")


class AgentConfig(_Strict):
    """A debater (or the judge): any litellm model, or an embedded ``local:<name>`` model."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    persona: str = ""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    api_base: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


def _default_agents() -> list[AgentConfig]:
    return [AgentConfig(name=f"agent{i}") for i in range(1, 4)]


class DebateConfig(_Strict):
    """Debate among LLM agents on the items the views dispute (Du et al. 2023).

    ``trigger``: disputed | low_confidence | both. A verdict whose aggregated confidence is at
    least ``accept_confidence`` becomes a pseudo-label with source ``debate``. ``evaluate_test``
    disputed held-out items per round are debated for evaluation only (verdict accuracy)."""

    enabled: bool = True
    fields: list[str] = Field(min_length=1)
    instructions: str = ""
    agents: list[AgentConfig] = Field(default_factory=_default_agents, min_length=1, max_length=16)
    rounds: int = Field(default=2, ge=1, le=10)
    context: Literal["full", "summary"] = "full"
    aggregation: Literal["majority", "confidence", "judge"] = "majority"
    judge: AgentConfig | None = None
    consensus: float = Field(default=0.8, ge=0.0, le=1.0)
    trigger: Literal["disputed", "low_confidence", "both"] = "disputed"
    low_confidence: float = Field(default=0.6, gt=0.0, le=1.0)
    max_items: int = Field(default=50, ge=1)
    accept_confidence: float = Field(default=0.67, ge=0.0, le=1.0)
    evaluate_test: int = Field(default=0, ge=0)
    max_answer_tokens: int = Field(default=96, ge=8)
    concurrency: int = Field(default=4, ge=1, le=256)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_tokens: int | None = Field(default=None, ge=1)
    price: PriceParams | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DebateConfig:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agent names must be unique")
        if "judge" in names:
            raise ValueError("'judge' is reserved for the judge agent")
        if self.aggregation == "judge" and self.judge is None:
            raise ValueError("aggregation 'judge' needs a 'judge' agent")
        return self


__all__ = ["AgentConfig", "DebateConfig"]
