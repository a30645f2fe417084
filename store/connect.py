"""DuckDB connections as cotrain opens them.

DuckDB's Python client prints a progress bar to standard output for any statement that runs
longer than two seconds (a large CSV read, a snapshot insert): mid-way through cotrain's own
display, and under ``--quiet``. Every connection cotrain opens turns off its printing, not the
bar itself: with ``enable_progress_bar = false`` DuckDB 2.0 no longer notices Ctrl-C while a
statement runs (measured: a query signalled at 0.5 s ran on to its end, 21 s).
"""
from __future__ import annotations

import time

import duckdb

#: How long opening a store waits for another process's lock to go: ``cotrain status`` holds
#: it for about a second, and a ``cotrain run`` started meanwhile (``watch cotrain status``
#: beside it) was refused in 3 of 12 tries. A run that holds it is still refused, this much later.
LOCK_WAIT_S = 3.0


def connect(path: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path, read_only=...)`` that prints no progress bar."""
    con = duckdb.connect(path, read_only=read_only)
    try:
        con.execute("SET enable_progress_bar_print = false")
    except BaseException:
        con.close()
        raise
    return con


def connect_when_unlocked(path: str, read_only: bool = False, wait_s: float = LOCK_WAIT_S
                          ) -> duckdb.DuckDBPyConnection:
    """:func:`connect`, trying again while another process holds the file's lock, for up to
    ``wait_s`` seconds; then DuckDB's lock error (naming the holder's PID) as it came. Opened
    for writing, it tidies what a killed writer left beside the store (``store.leftovers``)."""
    deadline, pause = time.monotonic() + wait_s, 0.05
    while True:
        try:
            con = connect(path, read_only)
            if not read_only and path != ":memory:":  # the lock is ours: what a killed writer left goes
                from store.leftovers import clear_leftovers

                clear_leftovers(path)
            return con
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


__all__ = ["LOCK_WAIT_S", "connect", "connect_when_unlocked"]
