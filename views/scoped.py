"""Process state that library code borrows and gives back.

cotrain runs inside other people's processes (a notebook, a service, a test suite), so nothing
it imports or calls may leave the environment, the warning filters or logger settings changed.
What a heavy import or a model load needs is set for that block only, and on exit everything
the block changed is put back: our own settings and those a library makes as it is imported
(litellm, for one, loads ``.env`` files, adds warning filters and sets the ``httpx`` logger's
level at import).

Blocks run one at a time (one process-wide lock): ``os.environ``, ``warnings.filters`` and
loggers are process-global, and two overlapping blocks in different threads would restore each
other's state. A change another thread makes to those while a block runs is undone with it.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

_LOCK = threading.RLock()


@dataclass(frozen=True)
class _LoggerState:
    level: int
    propagate: bool
    disabled: bool
    filters: tuple[object, ...]
    handlers: tuple[logging.Handler, ...]


def _logger_state(lg: logging.Logger) -> _LoggerState:
    return _LoggerState(lg.level, lg.propagate, lg.disabled, tuple(lg.filters), tuple(lg.handlers))


def _restore_logger(lg: logging.Logger, st: _LoggerState) -> None:
    if _logger_state(lg) == st:
        return
    lg.setLevel(st.level)  # also clears logging's per-logger level cache
    lg.propagate, lg.disabled = st.propagate, st.disabled
    lg.filters[:] = list(st.filters)
    lg.handlers[:] = list(st.handlers)


def _existing_loggers() -> dict[str, logging.Logger]:
    out: dict[str, logging.Logger] = {"": logging.getLogger()}
    with logging._lock:  # type: ignore[attr-defined]  # the manager's dict may grow in another thread
        items = list(logging.Logger.manager.loggerDict.items())
    out.update((name, lg) for name, lg in items if isinstance(lg, logging.Logger))
    return out


def restore_environ(before: Mapping[str, str]) -> None:
    """Put ``os.environ`` back to ``before``: changed variables get their value back, added ones
    are removed, removed ones return."""
    now = dict(os.environ)
    for k in now.keys() - before.keys():
        os.environ.pop(k, None)
    for k, v in before.items():
        if now.get(k) != v:
            os.environ[k] = v


@contextmanager
def borrowed_process_state(env: Mapping[str, str] | None = None,
                           loggers: Sequence[str] = ()) -> Iterator[None]:
    """Run a block that may change process-wide state, and undo what it changed.

    ``env``: variables the block needs, set only where the user has not set them. On exit
    ``os.environ``, ``warnings.filters`` (``warnings.catch_warnings``) and every logger that
    existed before the block (level, propagate, disabled, filters, handlers; the root logger
    included) are as they were. ``loggers`` names loggers of *other* libraries that the block
    may create and configure (``httpx`` when litellm is imported): they are put back to what
    they were, or to a fresh logger's defaults. Loggers a library creates for itself during the
    block keep that library's own defaults.
    """
    with _LOCK:
        env_before = dict(os.environ)
        for name in loggers:  # a fresh logger now: its defaults are what it goes back to
            logging.getLogger(name)
        logs_before = {name: (lg, _logger_state(lg)) for name, lg in _existing_loggers().items()}
        try:
            with warnings.catch_warnings():
                for k, v in (env or {}).items():
                    os.environ.setdefault(k, v)
                yield
        finally:
            restore_environ(env_before)
            for lg, st in logs_before.values():
                _restore_logger(lg, st)
