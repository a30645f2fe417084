"""The one seam where cotrain calls an LLM.

Every chat completion of every view and agent goes through :class:`LLMClient`: plain HTTP
for OpenAI-compatible servers and litellm (``acompletion``) for other providers
(:mod:`views.llm.transport`), under a concurrency limit (fixed, or adapted between
``concurrency`` and ``max_concurrency`` by :mod:`views.llm.aimd`) and a rate limit, retries
with exponential backoff on timeouts, 429 and 5xx, a response cache in the store keyed by
(model identity, full request), and a ledger row per request with tokens, latency and
cost, committed in small groups (:mod:`views.llm.group_commit`). The API key is read from
the environment at call time and never leaves this module.

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
from views.llm.aimd import AIMD, Gate, RateLimiter as _RateLimiter
from views.llm.budget import Budget, worst_cost
from views.llm.calls import (ClientStats, Completion, Endpoint, MalformedResponse, Price, call_record, cancelled_record,
                             count_tokens, estimate_cost, parse_response, redacted_error, request_key, usable_key)
from views.llm.group_commit import GroupCommitter
from views.llm.litellm_import import import_litellm
from views.llm.pricing import Pricer
from views.llm.transport import HTTPTransport, fast_path, litellm_complete, retry_after as _retry_after

log = logging.getLogger("cotrain")

#: litellm exception class names worth retrying (transient), looked up lazily.
RETRYABLE = ("Timeout", "APITimeoutError", "RateLimitError", "APIConnectionError", "InternalServerError",
             "ServiceUnavailableError", "BadGatewayError", "APIError", "APIResponseValidationError",
             "PassLost")  # views.llm.batched: a batched model's process died and was replaced
#: Errors that no retry or other item will fix: the whole view stops with a clear message.
FATAL = ("AuthenticationError", "PermissionDeniedError", "NotFoundError", "PaymentRequiredError")
#: Errors that say the server is overloaded: the adaptive limit halves.
OVERLOAD = ("Timeout", "APITimeoutError", "RateLimitError", "ServiceUnavailableError")
#: Largest group of answers committed together (see :mod:`views.llm.group_commit`).
MAX_COMMIT_GROUP = 64
#: Failed requests of one batch logged one by one; the rest are counted in one line.
FAILURES_SHOWN = 3


@dataclass
class LLMClient:
    """Chat completions for one view (or agent) against one endpoint.

    ``complete(requests)`` returns one :class:`Completion` per request, in order; cached
    requests make no call. Transient failures are retried ``max_retries`` times with
    exponential backoff (``backoff_s`` × 2^attempt, jittered, honouring Retry-After);
    what still fails comes back with ``status='error'``. Once ``budget_usd`` is spent the
    remaining requests come back with ``status='budget'`` without a call.

    ``concurrency`` requests are in flight at most; with ``max_concurrency`` above it the limit
    starts there and adapts up to ``max_concurrency`` (AIMD: halved on 429, timeouts and rising
    latency). Answers are filed in groups of ``commit_group`` (default: a quarter of the
    current limit, at most 64; 1 at concurrency below 8), or after ``commit_wait_s``.
    ``transport``: ``auto`` (plain HTTP for OpenAI-compatible servers), ``http`` or ``litellm``.
    """

    endpoint: Endpoint
    view: str
    ledger: Ledger | None = None
    concurrency: int = 4
    max_concurrency: int | None = None
    commit_group: int | None = None
    commit_wait_s: float = 0.05
    transport: str = "auto"
    rate_limit: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    price: Price | None = None
    budget_usd: float | None = None
    api_base_override: str | None = None   # a local server's URL, not part of the cache key
    batched: Any = None  # views.llm.batched.BatchedModel: the model answers in this process
    progress_every_s: float = 15.0  # log "n/N requests" at most this often during long batches
    retry_billed: bool = True  # retry an answer with no choice that reports tokens (False: a caller's budget)
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.budget = Budget(f"view {self.view}", self.budget_usd,
                             lambda: self.ledger.spent(self.view) if self.ledger is not None else 0.0)
        self._shown: tuple[int | None, int] = (None, 0)  # (round, failed requests logged one by one in it)
        self._jitter = random.Random()  # backoff jitter only; never affects results
        self._gate: Gate | None = None
        self._loop_lock = threading.Lock()
        self._limiter: _RateLimiter | None = None
        self._http: HTTPTransport | None = None
        self.control: AIMD | None = None  # the adaptive limit, once a batch has run
        self.commits = 0                  # ledger transactions of answers made by this client
        self._pricer = Pricer(self.endpoint.model, self.endpoint.key_identity(), self.price)

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
        """Cancel what runs on the loop (a batch cut by Ctrl-C, litellm's logging worker), then
        close the HTTP session (after: a request in flight is filed cancelled, not failed)."""
        if self._loop is not None:
            async def _cancel_pending() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if self._http is not None:
                    await self._http.close()

            try:
                asyncio.run_coroutine_threadsafe(_cancel_pending(), self._loop).result(timeout=5)
            except Exception:  # a stuck task must not keep the process from finishing
                log.debug("view %s: pending LLM tasks did not cancel in time", self.view)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop.close()
            self._loop = self._thread = None
            self._gate = self._limiter = self._http = None
            self.budget.reset_loop()
        if self.batched is not None:
            self.batched.close()

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
        return self.budget.spent

    # ------------------------------------------------------------------ internals
    async def _complete_all(self, requests: list[dict[str, Any]]) -> list[Completion]:
        keys = [self.key(r) for r in requests]
        hits = self.ledger.cached(keys) if self.ledger is not None else {}
        # a server's empty `choices` was cached by earlier versions as an answer with no content,
        # no logprobs and no finish reason; it answered nothing, so the request is asked again
        hits = {k: v for k, v in hits.items()
                if v.get("content") is not None or v.get("top_logprobs") or v.get("finish_reason") is not None}
        out: list[Completion | None] = [None] * len(requests)
        records: list[Any] = []
        for i, k in enumerate(keys):
            if k in hits:
                out[i] = self._from_response(k, hits[k], cached=True)
                records.append(call_record(self.view, self.endpoint, requests[i], out[i], hits[k]))
        self.stats.cache_hits += len(records)
        if records:
            self._flush(records)
        todo = [i for i in range(len(requests)) if out[i] is None]
        # identical requests within one batch are asked once
        first: dict[str, int] = {}
        for i in todo:
            first.setdefault(keys[i], i)
        # one gate and one rate limiter per client (created on its loop): concurrent
        # complete() calls from several threads share the limits
        gate, limiter = self._limits()
        committer = GroupCommitter(self.ledger.record if self.ledger is not None else None, self._group,
                                   self.commit_wait_s)
        total, done, failed, shown = len(first), 0, 0, 0
        t_start = last_log = time.monotonic()

        async def one(i: int) -> None:
            comp, raw = await self._call(requests[i], keys[i], gate, limiter, committer)
            out[i] = comp
            committer.add(call_record(self.view, self.endpoint, requests[i], comp, raw))
            nonlocal done, last_log, failed, shown
            done += 1
            if comp.status == "error":
                failed += 1
                if self._show_failure():
                    shown += 1
                    log.warning("view %s: request failed after %d attempt(s): %s", self.view, comp.attempts,
                                comp.error)
            now = time.monotonic()
            if now - last_log >= self.progress_every_s and done < total:
                last_log = now
                log.info("view %s: %d/%d requests answered (%.1f/s, %d in flight; %d more were cached)", self.view,
                         done, total, done / (now - t_start), gate.inflight, len(records))

        tasks = [asyncio.ensure_future(one(i)) for i in first.values()]
        try:
            await asyncio.gather(*tasks)
        finally:  # after a fatal answer (401) or Ctrl-C the rest stop where they stand (left running, they failed on
            for t in tasks:  # the closed session, filed "Session is closed"); those in flight are filed as cancelled
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await committer.flush()
            self.commits += committer.commits
            if failed > shown:  # one line for the rest, not one per request
                log.warning("view %s: %d of %d requests failed in this batch (%d shown above); each is filed "
                            "in llm_calls with its error and its item abstains", self.view, failed, total, shown)
        dups = []
        for i in todo:
            if out[i] is None:  # a duplicate of a request answered above: no call, no cost
                src = out[first[keys[i]]]
                assert src is not None
                out[i] = Completion(key=src.key, content=src.content, top_logprobs=src.top_logprobs,
                                    status=src.status, error=src.error, cached=True)
                dups.append(call_record(self.view, self.endpoint, requests[i], out[i], None))
        self.stats.cache_hits += len(dups)
        self._flush(dups)
        return [c for c in out if c is not None]

    def _show_failure(self) -> bool:
        """Whether one more failed request is logged by itself: the first ``FAILURES_SHOWN`` of
        each round (a round asks a view in several batches, the pool's, the test's and each
        gold fold's: a server that was down printed 25 lines in two rounds); the rest are
        counted in one line per batch."""
        rnd = getattr(self.ledger, "round", None)
        if self._shown[0] != rnd:
            self._shown = (rnd, 0)
        self._shown = (rnd, self._shown[1] + 1)
        return self._shown[1] <= FAILURES_SHOWN

    def _limits(self) -> tuple[Gate, _RateLimiter]:
        if self._gate is None:
            adaptive = self.max_concurrency is not None and self.max_concurrency > self.concurrency
            if adaptive and self.control is None:
                self.control = AIMD(initial=max(1, self.concurrency), maximum=int(self.max_concurrency or 1))
            self._gate = Gate(self.concurrency, self.control if adaptive else None)
            self._limiter = _RateLimiter(self.rate_limit)
        assert self._limiter is not None
        return self._gate, self._limiter

    def _group(self) -> int:
        if self.commit_group:
            return self.commit_group
        return max(1, min(MAX_COMMIT_GROUP, (self._gate.limit if self._gate else self.concurrency) // 4))

    def _flush(self, records: list[Any]) -> None:
        if self.ledger is not None:
            self.ledger.record(records)

    def _from_response(self, key: str, resp: dict[str, Any], cached: bool) -> Completion:
        top = resp.get("top_logprobs")
        return Completion(
            key=key, content=resp.get("content"),
            top_logprobs=[[(str(t), float(lp)) for t, lp in pos] for pos in top] if top else None,
            prompt_tokens=int(resp.get("usage", {}).get("prompt_tokens", 0)),
            completion_tokens=int(resp.get("usage", {}).get("completion_tokens", 0)), cached=cached)

    def _api_key(self) -> str | None:
        if self.endpoint.api_key_env:
            return usable_key(self.view, self.endpoint.api_key_env, os.environ.get(self.endpoint.api_key_env))
        # a self-hosted server (llama.cpp, vLLM, the embedded one) needs no key, but litellm's
        # OpenAI route insists on one; hosted providers read their usual variable themselves
        return "sk-no-key" if (self.api_base_override or self.endpoint.api_base) else None

    def _transport(self) -> HTTPTransport | None:
        api_base = self.api_base_override or self.endpoint.api_base
        if self._http is None and self.transport != "litellm" and api_base and \
                (self.transport == "http" or fast_path(self.endpoint.model, api_base)):
            self._http = HTTPTransport(self.endpoint.model, api_base, self.timeout_s)
        return self._http

    async def _attempt(self, request: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        http = self._transport()
        if self.batched is not None:
            resp = await self.batched.complete(request)
        elif http is not None:
            resp = await http.complete(request, self._api_key())
        else:
            resp = await litellm_complete(import_litellm(), self.endpoint.model,
                                          self.api_base_override or self.endpoint.api_base, self._api_key(),
                                          self.timeout_s, request)
        try:
            return resp, parse_response(resp, self._api_key() if self.endpoint.api_key_env else None)
        except MalformedResponse as exc:
            exc.response = resp  # its price is read from it on the litellm path
            raise

    async def _call(self, request: dict[str, Any], key: str, gate: Gate, limiter: _RateLimiter,
                    committer: GroupCommitter) -> tuple[Completion, dict[str, Any] | None]:
        """One request under the budget: its worst-case cost is held before it takes a slot
        (a request waiting for money keeps no slot from one that must retry) and settled at
        its real cost exactly once, however it ends."""
        held = worst_cost(self.endpoint.model, self.price, request) if self.budget.limit is not None else 0.0
        if not await self.budget.hold(held):
            self.stats.budget_refused += 1
            return Completion(key=key, status="budget", error="budget spent"), None
        comp: Completion | None = None
        charged = [0.0]  # billed attempts that answered nothing, charged as they came
        try:
            comp, data = await self._send(request, key, gate, limiter, committer, charged)
            return comp, data
        finally:
            self.budget.settle(held, max(0.0, comp.cost_usd - charged[0]) if comp is not None else 0.0)

    async def _send(self, request: dict[str, Any], key: str, gate: Gate, limiter: _RateLimiter,
                    committer: GroupCommitter, charged: list[float]) -> tuple[Completion, dict[str, Any] | None]:
        """One request: a slot under the gate per attempt (a retry waits under the limit as it is
        after the cut its 429 caused), the rate limit, retries with backoff. An attempt that
        answers nothing but reports tokens is billed: its tokens and cost go into the
        request's row whatever the outcome, and into ``charged`` as the budget is charged.
        Cancelled once an attempt was made, it is filed ``cancelled`` (``calls.cancelled_record``);
        cancelled before any, it was never sent and is not filed."""
        attempts = 0
        t0 = 0.0  # the first attempt's start
        billed = [0, 0]
        try:
            while True:
                epoch = await gate.acquire()
                latency: float | None = None
                overload = False
                try:
                    await committer.room()  # at most one group of answers uncommitted
                    await limiter.wait()
                    attempts += 1
                    t_try = time.perf_counter()
                    t0 = t0 or t_try
                    try:
                        resp, data = await self._attempt(request)
                        latency = time.perf_counter() - t_try
                        break
                    except ViewError:  # the view's own refusal (no usable key): fatal, not a failed request
                        raise
                    except Exception as exc:  # classified below; never swallowed silently
                        name = type(exc).__name__
                        overload = name in OVERLOAD or isinstance(exc, asyncio.TimeoutError)
                        last_err = redacted_error(exc, self._api_key())
                        if name in FATAL:
                            raise ViewError(self.view, f"{self.endpoint.model}: {name}: {last_err}") from None
                        retryable = name in RETRYABLE or isinstance(exc, (asyncio.TimeoutError, json.JSONDecodeError,
                                                                          MalformedResponse))
                        if isinstance(exc, MalformedResponse) and exc.usage is not None:
                            cost = self._pricer.cost(exc.response, *exc.usage)
                            billed[0], billed[1] = billed[0] + exc.usage[0], billed[1] + exc.usage[1]
                            charged[0] += cost
                            retryable = self.budget.charge(cost) and retryable and self.retry_billed
                        if not retryable or attempts > self.max_retries:
                            self.stats.errors += 1
                            self.stats.count(billed[0], billed[1], charged[0])
                            return Completion(key=key, status="error", error=f"{name}: {last_err}"[:500],
                                              prompt_tokens=billed[0], completion_tokens=billed[1], cost_usd=charged[0],
                                              attempts=attempts, latency_s=time.perf_counter() - t0), None
                        delay = self._delay(attempts, exc)
                        log.debug("view %s: attempt %d failed, retrying in %.2f s: %s: %s", self.view, attempts, delay,
                                  name, last_err)
                finally:
                    gate.release(latency, epoch, overload)
                self.stats.retries += 1
                await asyncio.sleep(delay)
        except asyncio.CancelledError:  # the batch stopped (a fatal answer to another request, Ctrl-C)
            if attempts:  # sent at least once: the server may still answer it, and bill it
                self.stats.count(billed[0], billed[1], charged[0])
                committer.add(cancelled_record(self.view, self.endpoint, request, key, attempts,
                                               time.perf_counter() - t0, billed, charged[0]))
            raise
        pt, ct = data["usage"]["prompt_tokens"] + billed[0], data["usage"]["completion_tokens"] + billed[1]
        cost = self._pricer.cost(resp, data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]) + charged[0]
        comp = self._from_response(key, data, cached=False)
        comp.prompt_tokens, comp.completion_tokens = pt, ct
        comp.cost_usd, comp.latency_s, comp.attempts = cost, time.perf_counter() - t0, attempts
        self.stats.count(pt, ct, cost)
        return comp, data

    def _delay(self, attempt: int, exc: Exception) -> float:
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        return min(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + self._jitter.random()), self.max_backoff_s)


__all__ = ["ClientStats", "Completion", "Endpoint", "LLMClient", "Price", "count_tokens", "estimate_cost",
           "parse_response", "request_key"]
