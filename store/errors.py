"""The one exception root of cotrain and its families.

It lives in ``store`` because ``store`` is the lowest layer: every other package
(views, agents, orchestrator) may import it without pulling in model code. Every
subclass carries the context a user needs (the file, field, item or PID) and renders
as one line, so the CLI can print ``str(err)`` and exit cleanly.
"""
from __future__ import annotations

from typing import Any

import duckdb

#: What Ctrl-C can arrive as. DuckDB checks for SIGINT while a query runs and raises its own
#: ``InterruptException`` (an ``Exception``, not a ``KeyboardInterrupt``) when the signal lands
#: mid-query, so code that treats Ctrl-C as a stop must catch both.
INTERRUPTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, duckdb.InterruptException)


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C or a request to stop: one of :data:`INTERRUPTS`, the plain
    ``RuntimeError('Query interrupted')`` that DuckDB 2.0 raises instead of its
    ``InterruptException`` (a run stopped mid-query was marked failed, and its user told to fix
    an error), or ``SystemExit``, which Ray's driver raises on SIGTERM (kill, docker stop,
    Slurm): a run stopped that way was reported failed under Ray and interrupted without it.
    (The run and the CLI let a ``SystemExit`` go on with its code once they have said so.)"""
    return isinstance(exc, (*INTERRUPTS, SystemExit)) or (type(exc) is RuntimeError and str(exc) == "Query interrupted")


def hidden_cause(exc: BaseException) -> BaseException | None:
    """The error an aborted transaction's ``TransactionException`` (``exc``) hides: the first
    exception down its ``__context__`` chain that is not itself an abort (an interrupt, or the
    statement's own failure); None when there is none."""
    seen, cur = {id(exc)}, exc.__context__
    while cur is not None and id(cur) not in seen:
        if is_interrupt(cur) or "aborted" not in str(cur):
            return cur
        seen.add(id(cur))
        cur = cur.__context__
    return None


class CotrainError(Exception):
    """Root of every error cotrain raises on purpose."""


class ConfigError(CotrainError):
    """A configuration key is missing, malformed or inconsistent.

    ``key`` is the dotted path of the offending key (``views[1].kind``).
    """

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}config key '{key}': {message}")

    def __reduce__(self) -> tuple[Any, ...]:  # pickles whole (Ray hands a worker's error back pickled)
        return type(self), (self.key, self.message, self.source)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with the length said: a 5 MB
    cell made a 5 MB error line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}...{size}"


class DataError(CotrainError):
    """Input data cannot be used: missing file, missing column, bad label, empty file.

    ``path`` names the file; ``row`` (1-based data row) and ``item`` name the item when known.
    """

    def __init__(
        self,
        message: str,
        path: str | None = None,
        row: int | None = None,
        item: str | None = None,
    ) -> None:
        self.path = path
        self.row = row
        self.item = item
        parts = []
        if path:
            parts.append(str(path))
        if row is not None:
            parts.append(f"row {row}")
        if item is not None:
            parts.append(f"item {shown(item)}")
        prefix = " ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.detail = message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.detail, self.path, self.row, self.item)


class ReviewError(DataError):
    """A review file cannot be imported: unknown format, item, label or task. Names the file
    and the first bad record (1-based); nothing of the file is stored."""


class StoreError(CotrainError):
    """The DuckDB store cannot be opened, migrated or queried as asked."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"store {path}: {message}" if path else message)
        self.detail = message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.detail, self.path)


class StoreLockedError(StoreError):
    """Another process holds the store open for writing."""

    def __init__(self, path: str, pid: int | None, hint: str = "wait for it to finish or stop it") -> None:
        self.pid = pid
        who = f"PID {pid}" if pid is not None else "another process"
        super().__init__(f"locked by {who}; {hint}", path)
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.pid, self.hint)


class ViewError(CotrainError):
    """A view could not be built, fitted or asked for predictions."""

    def __init__(self, view: str, message: str) -> None:
        self.view = view
        self.detail = message
        super().__init__(f"view '{view}': {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.view, self.detail)


class RunError(CotrainError):
    """A run cannot start or resume as asked (e.g. the store holds a different config)."""


class RunInterrupted(CotrainError, KeyboardInterrupt):
    """Ctrl-C (or SIGINT) stopped a run. Everything up to ``last_round`` is committed; running
    the same config again resumes after it. Still a ``KeyboardInterrupt``, so code that stops
    on Ctrl-C keeps doing so."""

    def __init__(self, run_id: int, last_round: int | None) -> None:
        self.run_id = run_id
        self.last_round = last_round
        done = f"after round {last_round}" if last_round is not None else "before round 0 was committed"
        super().__init__(f"interrupted {done}; run again to resume")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.run_id, self.last_round)
