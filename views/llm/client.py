"""The one seam where cotrain calls an LLM.

Every chat completion of every view and agent goes through :class:`LLMClient`: litellm
(``acompletion``) under an async concurrency limit and a rate limit, retries with
exponential backoff on timeouts, 429 and 5xx, a response cache in the store keyed by
(model identity, full request), and a ledger row per request with tokens, latency and
cost. The API key is read from the environment at call time and never leaves this module.

The client owns one event loop in a background thread, so it can be called from plain
synchronous code and from inside a running loop (a notebook) alike, and litellm's pooled
HTTP clients stay bound to one loop for the client's lifetime.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from store.errors import ViewError
from store.contracts import Ledger
from views.llm.calls import (ClientStats, Completion, Endpoint, Price, count_tokens, estimate_cost,
                             parse_response, request_key)
from views.llm.litellm_import import import_litellm

log = logging.getLogger("cotrain")

#: litellm exception class names worth retrying (transient), looked up lazily.
RETRYABLE = ("Timeout", "RateLimitError", "APIConnectionError", "InternalServerError",
             "ServiceUnavailableError", "BadGatewayError", "APIError", "APIResponseValidationError")
#: Errors that no retry or other item will fix: the whole view stops with a clear message.
FATAL = ("AuthenticationError", "PermissionDeniedError", "NotFoundError", "PaymentRequiredError")


class _RateLimiter:
    """At most ``rate`` request starts per second (no limit when None)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


@dataclass
class LLMClient:
    """Chat completions for one view (or agent) against one endpoint.

    ``complete(requests)`` returns one :class:`Completion` per request, in order; cached
    requests make no call. Transient failures are retried ``max_retries`` times with
    exponential backoff (``backoff_s`` × 2^attempt, jittered, honouring Retry-After);
    what still fails comes back with ``status='error'``. Once ``budget_usd`` is spent the
    remaining requests come back with ``status='budget'`` without a call.
    """

    endpoint: Endpoint
    view: str
    ledger: Ledger | None = None
    concurrency: int = 4
    rate_limit: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    price: Price | None = None
    budget_usd: float | None = None
    api_base_override: str | None = None   # a local server's URL, not part of the cache key
    progress_every_s: float = 15.0  # log "n/N requests" at most this often during long batches
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._spent: float | None = None
        self._budget_warned = False
        self._jitter = random.Random()  # backoff jitter only; never affects results
        self._sem: asyncio.Semaphore | None = None
        self._loop_lock = threading.Lock()
        self._limiter: _RateLimiter | None = None

    # ------------------------------------------------------------------ lifecycle
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:  # several threads (parallel debate agents) may call at once
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name=f"cotrain-llm-{self.view}", daemon=True)
                t.start()
                self._loop, self._thread = loop, t
            return self._loop

    def close(self) -> None:
        """Cancel what litellm left running on the loop (its logging worker), then stop it."""
        if self._loop is not None:
            async def _cancel_pending() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            try:
                asyncio.run_coroutine_threadsafe(_cancel_pending(), self._loop).result(timeout=5)
            except Exception:  # a stuck task must not keep the process from finishing
                log.debug("view %s: pending LLM tasks did not cancel in time", self.view)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop.close()
            self._loop = self._thread = None
            self._sem = self._limiter = None

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def key(self, request: dict[str, Any]) -> str:
        return request_key(self.endpoint.key_identity(), request)

    def complete(self, requests: Sequence[dict[str, Any]]) -> list[Completion]:
        """Answer ``requests`` (each ``{"messages": [...], **params}``), from the cache where possible."""
        if not requests:
            return []
        fut: Future[list[Completion]] = asyncio.run_coroutine_threadsafe(
            self._complete_all(list(requests)), self._ensure_loop())
        return fut.result()

    def spent(self) -> float:
        if self._spent is None:
            self._spent = self.ledger.spent(self.view) if self.ledger is not None else 0.0
        return self._spent

    # ------------------------------------------------------------------ internals
    async def _complete_all(self, requests: list[dict[str, Any]]) -> list[Completion]:
        keys = [self.key(r) for r in requests]
        hits = self.ledger.cached(keys) if self.ledger is not None else {}
        out: list[Completion | None] = [None] * len(requests)
        records: list[Any] = []
        for i, k in enumerate(keys):
            if k in hits:
                out[i] = self._from_response(k, hits[k], cached=True)
                records.append(self._record(requests[i], out[i], hits[k]))
        self.stats.cache_hits += len(records)
        if records:
            self._flush(records)
        todo = [i for i in range(len(requests)) if out[i] is None]
        # identical requests within one batch are asked once
        first: dict[str, int] = {}
        for i in todo:
            first.setdefault(keys[i], i)
        # one semaphore and one rate limiter per client (created on its loop): concurrent
        # complete() calls from several threads share the limits
        if self._sem is None:
            self._sem = asyncio.Semaphore(max(1, self.concurrency))
            self._limiter = _RateLimiter(self.rate_limit)
        sem, limiter = self._sem, self._limiter
        total, done = len(first), 0
        t_start = last_log = time.monotonic()

        async def one(i: int) -> None:
            async with sem:
                comp, raw = await self._call(requests[i], keys[i], limiter)
                out[i] = comp
                # filed before the slot is released: a later request never starts before
                # an earlier answer is safely in the cache
                self._flush([self._record(requests[i], comp, raw)])
                nonlocal done, last_log
                done += 1
                now = time.monotonic()
                if now - last_log >= self.progress_every_s and done < total:
                    last_log = now
                    log.info("view %s: %d/%d requests answered (%.1f/s; %d more were cached)", self.view, done,
                             total, done / (now - t_start), len(records))

        await asyncio.gather(*(one(i) for i in first.values()))
        dups = []
        for i in todo:
            if out[i] is None:  # a duplicate of a request answered above: no call, no cost
                src = out[first[keys[i]]]
                assert src is not None
                out[i] = Completion(key=src.key, content=src.content, top_logprobs=src.top_logprobs,
                                    status=src.status, error=src.error, cached=True)
                dups.append(self._record(requests[i], out[i], None))
        self.stats.cache_hits += len(dups)
        self._flush(dups)
        return [c for c in out if c is not None]

    def _flush(self, records: list[Any]) -> None:
        if self.ledger is not None:
            self.ledger.record(records)

    def _record(self, request: dict[str, Any], comp: Completion, response: dict[str, Any] | None) -> Any:
        from store.contracts import CallRecord

        return CallRecord(
            view=self.view, key=comp.key, model=self.endpoint.key_identity(), request=request, response=response,
            cached=comp.cached, status=comp.status, error=comp.error, attempts=comp.attempts,
            prompt_tokens=None if comp.cached else comp.prompt_tokens,
            completion_tokens=None if comp.cached else comp.completion_tokens,
            cost_usd=0.0 if comp.cached else comp.cost_usd, latency_s=comp.latency_s)

    def _from_response(self, key: str, resp: dict[str, Any], cached: bool) -> Completion:
        top = resp.get("top_logprobs")
        return Completion(
            key=key, content=resp.get("content"),
            top_logprobs=[[(str(t), float(lp)) for t, lp in pos] for pos in top] if top else None,
            prompt_tokens=int(resp.get("usage", {}).get("prompt_tokens", 0)),
            completion_tokens=int(resp.get("usage", {}).get("completion_tokens", 0)), cached=cached)

    def _over_budget(self) -> bool:
        if self.budget_usd is None:
            return False
        if self.spent() >= self.budget_usd:
            if not self._budget_warned:
                log.warning("view %s: budget of $%.4f spent ($%.4f); its remaining items abstain",
                            self.view, self.budget_usd, self.spent())
                self._budget_warned = True
            return True
        return False

    def _api_key(self) -> str | None:
        if self.endpoint.api_key_env:
            val = os.environ.get(self.endpoint.api_key_env)
            if not val:
                raise ViewError(self.view, f"environment variable {self.endpoint.api_key_env} (api_key_env) is not set")
            return val
        # a self-hosted server (llama.cpp, vLLM, the embedded one) needs no key, but litellm's
        # OpenAI route insists on one; hosted providers read their usual variable themselves
        return "sk-no-key" if (self.api_base_override or self.endpoint.api_base) else None

    async def _call(self, request: dict[str, Any], key: str,
                    limiter: _RateLimiter) -> tuple[Completion, dict[str, Any] | None]:
        litellm = import_litellm()
        if self._over_budget():
            self.stats.budget_refused += 1
            return Completion(key=key, status="budget", error="budget spent"), None
        api_base = self.api_base_override or self.endpoint.api_base
        attempts = 0
        last_err = ""
        t0 = time.perf_counter()
        while True:
            await limiter.wait()
            attempts += 1
            try:
                resp = await litellm.acompletion(
                    model=self.endpoint.model, api_base=api_base, api_key=self._api_key(),
                    timeout=self.timeout_s, num_retries=0, max_retries=0, drop_params=True, **request)
                data = parse_response(resp)
                break
            except Exception as exc:  # classified below; never swallowed silently
                name = type(exc).__name__
                last_err = _redact(_one_line(exc), self._api_key())
                if name in FATAL:
                    raise ViewError(self.view, f"{self.endpoint.model}: {name}: {last_err}") from None
                retryable = name in RETRYABLE or isinstance(exc, (asyncio.TimeoutError, json.JSONDecodeError))
                if not retryable or attempts > self.max_retries:
                    self.stats.errors += 1
                    self.stats.calls += 1
                    log.warning("view %s: request failed after %d attempt(s): %s: %s",
                                self.view, attempts, name, last_err)
                    return Completion(key=key, status="error", error=f"{name}: {last_err}"[:500], attempts=attempts,
                                      latency_s=time.perf_counter() - t0), None
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempts, exc))
        latency = time.perf_counter() - t0
        pt, ct = data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]
        cost = self._cost(resp, pt, ct)
        comp = self._from_response(key, data, cached=False)
        comp.cost_usd, comp.latency_s, comp.attempts = cost, latency, attempts
        self.stats.calls += 1
        self.stats.prompt_tokens += pt
        self.stats.completion_tokens += ct
        self.stats.cost_usd += cost
        self._spent = self.spent() + cost
        return comp, data

    def _delay(self, attempt: int, exc: Exception) -> float:
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        return min(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + self._jitter.random()), self.max_backoff_s)

    def _cost(self, resp: Any, prompt_tokens: int, completion_tokens: int) -> float:
        if self.price is not None:
            return self.price.cost(prompt_tokens, completion_tokens)
        litellm = import_litellm()

        try:
            return float(litellm.completion_cost(completion_response=resp, model=self.endpoint.model) or 0.0)
        except Exception:  # model not in litellm's price map: a local or unknown model
            return 0.0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _redact(text: str, secret: str | None) -> str:
    """Never let a key (or a prefix a provider echoes back) into a log or the store."""
    if secret and len(secret) >= 8:
        for n in (len(secret), 12, 8):
            text = text.replace(secret[:n], "***")
    return text


def _retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    val = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(val)) if val is not None else None
    except (TypeError, ValueError):
        return None


__all__ = ["ClientStats", "Completion", "Endpoint", "LLMClient", "Price", "count_tokens", "estimate_cost",
           "parse_response", "request_key"]
