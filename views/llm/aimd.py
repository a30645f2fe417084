"""How many requests an LLM client keeps in flight: additive increase, multiplicative decrease.

:class:`AIMD` is the pure decision (no clock, no I/O, unit-tested on its own): it starts at
``initial`` and doubles per window of successes (slow start, one more slot per answer) until
the first sign of overload, then grows by one slot per window of ``limit`` successes, never
past ``maximum``. A 429, a timeout, a 503, or a smoothed latency (over at least ``min_samples``
answers since the last cut) above ``latency_factor`` times the fastest answer seen, halves the limit (never below ``minimum``) and ends slow start.
Every request carries the *epoch* it started in, and a signal from a request that started
before the last cut is ignored: one burst of 429s from one window of requests cuts once.

:class:`Gate` admits requests under that limit (or under a fixed one) on one event loop, and
:class:`RateLimiter` spaces their starts.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class AIMD:
    initial: int
    maximum: int
    minimum: int = 1
    latency_factor: float = 4.0   # latency above this many times the fastest answer is overload
    smoothing: float = 0.1        # weight of a new latency in the running (exponential) mean
    min_samples: int = 8          # latencies since the last cut before latency alone may cut again
    limit: float = field(init=False)
    ssthresh: float = field(init=False)
    epoch: int = field(init=False, default=0)
    min_latency: float = field(init=False, default=math.inf)
    mean_latency: float | None = field(init=False, default=None)
    cuts: int = field(init=False, default=0)
    peak: int = field(init=False, default=0)
    _window: int = field(init=False, default=0)
    _samples: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.minimum = max(1, self.minimum)
        self.maximum = max(self.minimum, self.maximum)
        self.limit = float(min(max(self.initial, self.minimum), self.maximum))
        self.ssthresh = float(self.maximum)   # slow start until the first overload
        self.peak = self.current

    @property
    def current(self) -> int:
        """The number of requests allowed in flight now."""
        return int(min(max(self.limit, self.minimum), self.maximum))

    def on_success(self, latency_s: float, epoch: int, saturated: bool = True) -> None:
        """An answer arrived after ``latency_s`` for a request started in ``epoch``. The limit
        grows only while it was the constraint (``saturated``): a small batch proves nothing."""
        if epoch == self.epoch and latency_s > 0:   # latencies from before a cut describe the old load
            self.min_latency = min(self.min_latency, latency_s)
            m = self.mean_latency
            self.mean_latency = latency_s if m is None else m + self.smoothing * (latency_s - m)
            self._samples += 1
            if self._samples >= self.min_samples and self.mean_latency > self.latency_factor * self.min_latency:
                self.on_overload(epoch)
                return
        if not saturated:
            return
        if self.limit < self.ssthresh:
            self.limit = min(self.limit + 1.0, float(self.maximum))
        else:
            self._window += 1
            if self._window >= self.current:
                self._window = 0
                self.limit = min(self.limit + 1.0, float(self.maximum))
        self.peak = max(self.peak, self.current)

    def on_overload(self, epoch: int) -> bool:
        """A 429, a timeout or rising latency from a request started in ``epoch``; True if it cut."""
        if epoch < self.epoch:
            return False
        self.limit = max(float(self.minimum), math.floor(self.limit / 2.0))
        self.ssthresh = self.limit
        self.epoch += 1
        self._window = 0
        self.mean_latency = None
        self._samples = 0
        self.cuts += 1
        return True


class Gate:
    """Admission under ``control``'s limit (adaptive) or a fixed ``limit``, FIFO, on one loop."""

    def __init__(self, limit: int, control: AIMD | None = None) -> None:
        self.fixed = max(1, limit)
        self.control = control
        self.inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self.control.current if self.control is not None else self.fixed

    @property
    def epoch(self) -> int:
        return self.control.epoch if self.control is not None else 0

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request starts in."""
        while self.inflight >= self.limit:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                raise
        self.inflight += 1
        return self.epoch

    def release(self, latency_s: float | None = None, epoch: int = 0, overload: bool = False) -> None:
        """Free a slot, telling the controller how the attempt went (``latency_s`` None: it
        neither succeeded nor signalled overload, e.g. a 500 or a refused budget)."""
        if self.control is not None:
            if overload:
                self.control.on_overload(epoch)
            elif latency_s is not None:
                self.control.on_success(latency_s, epoch, saturated=self.inflight >= self.control.current or bool(self._waiters))
        self.inflight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.inflight
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1


class RateLimiter:
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
