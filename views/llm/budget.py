"""A dollar budget that in-flight requests cannot overrun.

Checking only what was already spent let every request in flight pass at once: a view with
``budget_usd: 0.05`` and 64 requests in flight spent $0.43. Each request now holds its
worst-case cost (its prompt's tokens, counted offline and padded, plus ``max_tokens`` of
answer) before it is sent, and gives the hold back when its real cost is known; a request
whose hold does not fit beside what is spent and held waits for those in flight, and is
refused once it does not fit beside what is spent. The budget is exceeded only when a server
bills more tokens than the padded count.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from views.llm.calls import Price, count_tokens, estimate_cost

log = logging.getLogger("cotrain")

#: Prompt tokens are counted with litellm's tokenizer for the model (or ~4 characters a
#: token), which need not be the server's: the hold pads the count by this factor.
PROMPT_PAD = 1.25
#: Answer tokens held for a request that sets no ``max_tokens``.
DEFAULT_ANSWER_TOKENS = 1024


def worst_cost(model: str, price: Price | None, request: dict[str, Any]) -> float:
    """The most ``request`` should cost: its padded prompt tokens and ``max_tokens`` of answer
    at the model's price (0 when the price is unknown: nothing to hold)."""
    prompt = count_tokens(model, request.get("messages") or []) * PROMPT_PAD + 8
    answer = int(request.get("max_tokens") or DEFAULT_ANSWER_TOKENS) * max(1, int(request.get("n") or 1))
    return float(estimate_cost(model, price, prompt, answer) or 0.0)


class Budget:
    """What one client may spend (``limit`` None: no limit), what it has spent (read from the
    ledger once, by ``spent_before``) and what its requests in flight hold. Used on the
    client's event loop (every request of a client runs there, whichever thread asked)."""

    def __init__(self, owner: str, limit: float | None, spent_before: Callable[[], float]) -> None:
        self.owner, self.limit = owner, limit
        self._spent_before = spent_before
        self._spent: float | None = None
        self.held = 0.0
        self._settled: asyncio.Event | None = None
        self._warned = False

    @property
    def spent(self) -> float:
        if self._spent is None:
            self._spent = float(self._spent_before())
        return self._spent

    async def hold(self, cost: float) -> bool:
        """Hold ``cost`` for a request about to be sent. While it does not fit beside what is
        spent and held, wait for requests in flight to settle (their real costs are mostly
        below their holds); False (and one warning) once it does not fit with none in flight."""
        if self.limit is None:
            return True
        while self.spent + self.held + cost > self.limit:
            if self.held <= 0:
                if not self._warned:
                    self._warned = True
                    log.warning("%s: budget of $%.4f reached ($%.4f spent; the next request may cost up to "
                                "$%.4f); its remaining items abstain", self.owner, self.limit, self.spent, cost)
                return False
            self._settled = self._settled or asyncio.Event()
            self._settled.clear()
            await self._settled.wait()
        self.held += cost
        return True

    def settle(self, held: float, cost: float) -> None:
        """A request that held ``held`` is done and cost ``cost``."""
        self._spent = self.spent + cost
        self.held = max(0.0, self.held - held)
        if self._settled is not None:
            self._settled.set()


__all__ = ["Budget", "DEFAULT_ANSWER_TOKENS", "PROMPT_PAD", "worst_cost"]
