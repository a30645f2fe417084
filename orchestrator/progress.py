"""Reporters that keep a run's progress file (``store.progress``) up to date.

``ProgressFileReporter`` implements the rounds' ``Reporter`` hooks (plus the optional
``run_started``, through which the runner hands over the run id, the round range and the
LLM ledger whose in-memory counters give calls and cost so far). It writes at most every
``interval`` seconds, and at once when the round's phase changes, a view finishes a step,
or a round starts or ends; a failed write is logged once and never stops the run.
``TeeReporter`` forwards every hook to several reporters, so ``api.run`` keeps the file
beside whatever reporter its caller passed (the CLI's progress bars).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from store.errors import is_interrupt
from store.progress import Progress, ViewProgress, progress_path, this_host, write_progress

log = logging.getLogger("cotrain")

#: Phases the runner itself reports (views may report steps of their own, such as ``encode``).
ROUND_PHASES = ("fit", "predict")


class TeeReporter:
    """Forwards every reporter hook (optional ones included) to each of ``reporters``."""

    def __init__(self, *reporters: Any) -> None:
        self.reporters = [r for r in reporters if r is not None]

    def round_started(self, round_idx: int, pool_size: int, n_views: int) -> None:
        for r in self.reporters:
            r.round_started(round_idx, pool_size, n_views)

    def advance(self, view: str, phase: str, n: int, total: int) -> None:
        for r in self.reporters:
            r.advance(view, phase, n, total)

    def round_finished(self, summary: dict[str, Any]) -> None:
        for r in self.reporters:
            r.round_finished(summary)

    def run_started(self, run_id: int, first_round: int, last_round: int, ledger: Any = None) -> None:
        for r in self.reporters:
            hook = getattr(r, "run_started", None)
            if callable(hook):
                hook(run_id, first_round, last_round, ledger)


class ProgressFileReporter:
    """Keeps ``<store>.progress.json`` current while a run runs (see ``store.progress``).

    Use as a context manager: entering writes ``running`` at once; leaving writes the final
    state (``finished``; ``interrupted`` on Ctrl-C; ``failed`` with the exception's type).
    Thread-safe: views may report from worker threads.
    """

    def __init__(self, store: str, interval: float = 0.5, clock: Any = time.monotonic) -> None:
        self.path = progress_path(store)
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        now = time.time()
        self.progress = Progress(pid=os.getpid(), host=this_host(), started_at=now, updated_at=now)
        self._ledger: Any = None
        self._n_views = 0
        self._entries: dict[tuple[str, str], ViewProgress] = {}  # (view, step) -> items done this round
        self._t0: dict[tuple[str, str], tuple[float, float, int]] = {}  # pass began, first report, its n
        self._current: dict[str, tuple[str, str]] = {}  # each view's latest step
        self._last_event = clock()
        self._last_write = float("-inf")
        self._broken = False
        self._closed = False
        try:  # what a call that runs nothing puts back (:meth:`put_back`)
            self._before: bytes | None = self.path.read_bytes()
        except OSError:
            self._before = None

    def __enter__(self) -> ProgressFileReporter:
        with self._lock:
            self._write()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close("finished")
        elif is_interrupt(exc):
            self.close("interrupted")
        else:
            self.close("failed", error=exc_type.__name__)  # the type only: a message may quote anything

    # ------------------------------------------------------------------ hooks
    def run_started(self, run_id: int, first_round: int, last_round: int, ledger: Any = None) -> None:
        with self._lock:
            p = self.progress
            p.run_id, p.round, p.last_round = run_id, first_round, last_round
            self._ledger = ledger
            self._write()

    def round_started(self, round_idx: int, pool_size: int, n_views: int) -> None:
        with self._lock:
            p = self.progress
            p.round, p.pool, p.phase = round_idx, pool_size, "fit"
            self._n_views = n_views
            self._entries, self._t0, self._current = {}, {}, {}
            self._last_event = self._clock()
            self._write()

    def advance(self, view: str, phase: str, n: int, total: int) -> None:
        with self._lock:
            now = self._clock()
            key = (view, phase)
            v = self._entries.get(key)
            if v is None or v.done >= v.total:  # a new step of this view, or a new pass (views encode per batch)
                v = self._entries[key] = ViewProgress(view, phase, 0, int(total))
                # the pass began when the step before it ended; its first report comes now
                self._t0[key] = (self._last_event, now, int(n))
            v.total = max(int(total), v.total)
            v.done = min(v.done + int(n), v.total)
            self._current[view] = key
            self._last_event = now
            before = self.progress.phase
            self.progress.phase = self._run_phase(phase)
            step_done = v.done >= v.total and phase in ROUND_PHASES
            if self.progress.phase != before or step_done or now - self._last_write >= self.interval:
                self._write()

    def round_finished(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self.progress.rounds_done += 1
            self.progress.phase = "committed"
            self._write()

    # ------------------------------------------------------------------ end
    def close(self, state: str, run_id: int | None = None, error: str | None = None) -> None:
        """Write the final ``state`` (and ``run_id`` when the runner never reported it)."""
        with self._lock:
            self._closed = True
            p = self.progress
            p.state = state
            if run_id is not None and p.run_id is None:
                p.run_id = run_id
            p.error = error
            if state == "finished":
                p.phase = "done"
            self._write()

    def put_back(self) -> None:
        """Leave the file as this reporter found it (none: no file): asking again for a run
        that had finished replaced its final state (rounds done, the LLM's bill) with an
        empty one that said 0 rounds done (a probe's finding)."""
        from store.atomic import replacing

        with self._lock:
            self._closed = True
            try:
                if self._before is None:
                    self.path.unlink(missing_ok=True)
                else:
                    with replacing([self.path]) as [tmp]:
                        tmp.write_bytes(self._before)
            except OSError as exc:
                log.warning("cannot restore the progress file %s (%s)", self.path, exc)

    # ------------------------------------------------------------------ internals
    def _run_phase(self, phase: str) -> str:
        """The round's phase after an advance: ``fit``, then ``evaluate`` once every view has
        fitted, ``predict`` from the first predicted batch, ``select`` once every view has
        predicted the whole pool. A view's own steps (``encode``) do not change it."""
        if phase not in ROUND_PHASES:
            return self.progress.phase
        mine = [v for (_, ph), v in self._entries.items() if ph == phase]
        if len(mine) >= self._n_views and all(v.done >= v.total for v in mine):
            return {"fit": "evaluate", "predict": "select"}[phase]
        return phase

    def _shown(self) -> list[tuple[tuple[str, str], ViewProgress]]:
        """Per view the step to show: its ``predict`` pass while the round predicts, else its latest."""
        out = []
        for view, key in self._current.items():
            if self.progress.phase in ("predict", "select") and (view, "predict") in self._entries:
                key = (view, "predict")
            out.append((key, self._entries[key]))
        return out

    def _rate(self, now: float, shown: list[tuple[tuple[str, str], ViewProgress]]
              ) -> tuple[float | None, float | None]:
        """Items per second (per view, averaged over the views at it) of the steps shown, and
        the seconds until the slowest of them is done at its own rate. A pass's rate counts
        from its first report (what came before, e.g. evaluation, is not its work), or from
        the step before it while only one report has come."""
        rates, etas = [], []
        for key, v in shown:
            if v.total <= 1 or v.done >= v.total or v.done <= 0:
                continue  # a fit (1 of 1) or a finished pass says nothing about what is left
            began, first, first_n = self._t0[key]
            done, elapsed = (v.done - first_n, now - first) if v.done > first_n and now > first \
                else (v.done, now - began)
            if elapsed <= 0 or done <= 0:
                continue
            r = done / elapsed
            rates.append(r)
            etas.append((v.total - v.done) / r)
        if not rates:
            return None, None
        return sum(rates) / len(rates), max(etas)

    def _write(self) -> None:
        """Write the file now (the caller holds the lock)."""
        if self._broken:
            return
        now = self._clock()
        p = self.progress
        shown = self._shown()
        p.views = [ViewProgress(v.view, v.phase, v.done, v.total) for _, v in shown]
        p.rate, p.eta_s = self._rate(now, shown) if p.state == "running" else (None, None)
        if self._ledger is not None and callable(getattr(self._ledger, "usage", None)):
            p.llm = self._ledger.usage()
        p.updated_at = time.time()
        try:
            write_progress(self.path, p)
        except (OSError, ValueError) as exc:  # the run matters more than its progress display
            self._broken = True
            log.warning("cannot write the progress file %s (%s); `cotrain status` will not show live progress",
                        self.path, exc)
        self._last_write = now
