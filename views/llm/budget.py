"""A dollar budget that in-flight requests cannot overrun.

Checking only what was already spent let every request in flight pass at once: a view with
``budget_usd: 0.05`` and 64 requests in flight spent $0.43. Each request now holds its
worst-case cost (its prompt's tokens, counted offline and padded, plus ``max_tokens`` of
answer) before it is sent, and gives the hold back when its real cost is known; a request
whose hold does not fit beside what is spent and held waits for those in flight, and is
refused once it does not fit beside what is spent. The holds assume the server bills the
tokens it reports: an attempt that returns no answer but reports tokens (an empty
``choices``) is charged at once (:meth:`Budget.charge`), and retried only while the request's
hold still fits beside what is spent; an attempt that reports nothing (a timeout, a 5xx) is
filed at $0, whatever the server may bill for it.
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
    client's event loop (every request of a client runs there, whichever thread asked); a
    request holds before it takes a concurrency slot, so one waiting for money never keeps
    a slot from a request that holds money and must retry."""

    def __init__(self, owner: str, limit: float | None, spent_before: Callable[[], float]) -> None:
        self.owner, self.limit = owner, limit
        self._spent_before = spent_before
        self._spent: float | None = None
        self.held = 0.0
        self.holding = 0  # requests holding money: "none in flight" by count, not by a float sum
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
            if self.holding == 0:
                if not self._warned:
                    self._warned = True
                    log.warning("%s: budget of $%.4f reached ($%.4f spent; the next request may cost up to "
                                "$%.4f); its remaining items abstain", self.owner, self.limit, self.spent, cost)
                return False
            if self._settled is None:
                self._settled = asyncio.Event()
            self._settled.clear()
            await self._settled.wait()
        self.held += cost
        self.holding += 1
        return True

    def charge(self, cost: float) -> bool:
        """Spend ``cost`` now, for a billed attempt of a request that still holds its hold
        (an answer with no choice that reports tokens). True while every hold still fits
        beside what is spent, so the request may try again: each in flight costs at most what
        it holds, so the limit still holds whatever they cost."""
        self._spent = self.spent + cost
        return self.limit is None or self.spent + self.held <= self.limit

    def settle(self, held: float, cost: float) -> None:
        """A request that held ``held`` (after a successful :meth:`hold`) is done and cost ``cost``."""
        self._spent = self.spent + cost
        if self.limit is None:
            return
        self.holding -= 1
        self.held = self.held - held if self.holding > 0 else 0.0  # no float residue once none is held
        if self._settled is not None:
            self._settled.set()

    def reset_loop(self) -> None:
        """Forget the event of a closed event loop (the client starts a new loop when reused)."""
        self._settled = None


__all__ = ["Budget", "DEFAULT_ANSWER_TOKENS", "PROMPT_PAD", "worst_cost"]
