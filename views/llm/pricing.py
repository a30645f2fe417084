"""What one answer cost: the configured price, $0 for an embedded model, else litellm's price
map (memoised per answer size on the HTTP path, where there is no litellm response object)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from views.llm.calls import Price, estimate_cost
from views.llm.litellm_import import import_litellm


@dataclass
class Pricer:
    """Prices the answers of one endpoint. ``identity`` is the endpoint's key identity
    (``local:...`` for an embedded model, which costs nothing and needs no price map)."""

    model: str
    identity: str
    price: Price | None = None
    _memo: dict[tuple[int, int], float | None] = field(default_factory=dict, repr=False)

    def cost(self, resp: Any, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for an answer of that many tokens; ``resp`` is the raw answer (a litellm
        response object, or the HTTP path's dict). A model litellm cannot price costs $0."""
        if self.price is not None:
            return self.price.cost(prompt_tokens, completion_tokens)
        if self.identity.startswith("local:"):
            return 0.0
        if resp is None or isinstance(resp, dict):
            sizes = (prompt_tokens, completion_tokens)
            if sizes not in self._memo:
                self._memo[sizes] = estimate_cost(self.model, None, *sizes)
            return float(self._memo[sizes] or 0.0)
        litellm = import_litellm()
        try:
            return float(litellm.completion_cost(completion_response=resp, model=self.model) or 0.0)
        except Exception:  # model not in litellm's price map: a local or unknown model
            return 0.0


__all__ = ["Pricer"]
