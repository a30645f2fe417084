"""A running run's progress, in a small JSON file beside its store.

DuckDB lets one process hold a store file for writing and no other process open it, not
even read-only. So a run also writes ``<store>.progress.json``: run id, round, phase,
items done per view, rate, ETA and LLM usage so far. It is written atomically (a temp
file in the same folder, fsync, ``os.replace``): a reader sees the previous version or the
next, never half of one. It stays after the run with its final ``state`` (``finished``,
``failed``, ``interrupted``) and the writer's ``pid``; a file that still says ``running``
while its pid is dead was left by a killed process (:func:`effective_state` says
``interrupted`` then).

The file holds counts, names of views and phases, and times; never config values, data or
credentials.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from store.errors import StoreError

SUFFIX = ".progress.json"
SCHEMA = 1
STATES = ("running", "finished", "failed", "interrupted")


def progress_path(store: str | Path) -> Path:
    """Where the progress file of ``store`` lives: ``<store>.progress.json``."""
    return Path(f"{store}{SUFFIX}")


@dataclass
class ViewProgress:
    """One view's current phase in the current round: ``done`` of ``total`` items."""

    view: str
    phase: str
    done: int
    total: int


@dataclass
class Progress:
    """The progress file's content (``schema`` 1)."""

    pid: int
    state: str = "running"             # running | finished | failed | interrupted
    host: str = ""
    run_id: int | None = None
    round: int | None = None           # the round in progress (or the last one, once ended)
    last_round: int | None = None      # the run's last round (max_rounds, or a reopened run's limit)
    rounds_done: int = 0               # rounds committed by this process
    pool: int | None = None            # unlabelled items at the start of the round
    phase: str = "starting"            # starting | fit | evaluate | predict | encode | select | committed | ...
    views: list[ViewProgress] = field(default_factory=list)
    rate: float | None = None          # items/s of the current phase (per view, averaged over views)
    eta_s: float | None = None         # seconds left in the current phase at that rate
    llm: dict[str, float] = field(default_factory=dict)  # store.llm_ledger.USAGE_KEYS: calls, errors, cost_usd, ...
    started_at: float = 0.0            # epoch seconds: the process started the run
    updated_at: float = 0.0            # epoch seconds: this version was written
    error: str | None = None           # the exception's type when state is failed
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        kept["views"] = [ViewProgress(**{k: v[k] for k in ("view", "phase", "done", "total")})
                         for v in data.get("views") or []]
        return cls(**kept)


def this_host() -> str:
    return socket.gethostname()


def written_here(host: str | None) -> bool:
    """Whether a progress file written on ``host`` came from this machine (no host: an older
    file, taken as local): only then do its PID and the store's lock say anything here."""
    return not host or host == this_host()


def write_progress(path: str | Path, progress: Progress) -> None:
    """Replace the file at ``path`` with ``progress``, atomically: write a temp file in the
    same folder, flush and fsync it, then ``os.replace`` it over the old one."""
    path = Path(path)
    text = json.dumps(progress.to_dict(), sort_keys=True, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_progress(path: str | Path) -> Progress | None:
    """The progress file at ``path``, or None when there is none. A file that is not a
    progress file raises ``StoreError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read progress file: {exc}", str(path)) from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        progress = Progress.from_dict(data)
        if not isinstance(progress.pid, int) or isinstance(progress.pid, bool):
            raise TypeError(f"pid {progress.pid!r} is not a process id")
        return progress
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"not a progress file ({exc})", str(path)) from None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def effective_state(progress: Progress) -> str:
    """The file's state, except that a ``running`` file whose writer is dead (on this host)
    is ``interrupted``: the process was killed before it could say so."""
    if progress.state == "running" and written_here(progress.host) and not pid_alive(progress.pid):
        return "interrupted"
    return progress.state
