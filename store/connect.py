"""DuckDB connections as cotrain opens them.

DuckDB's Python client prints a progress bar to standard output for any statement that runs
longer than two seconds (a large CSV read, a snapshot insert): mid-way through cotrain's own
display, and under ``--quiet``. Every connection cotrain opens turns off its printing, not the
bar itself: with ``enable_progress_bar = false`` DuckDB 2.0 no longer notices Ctrl-C while a
statement runs (measured: a query signalled at 0.5 s ran on to its end, 21 s).
"""
from __future__ import annotations

import duckdb


def connect(path: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path, read_only=...)`` that prints no progress bar."""
    con = duckdb.connect(path, read_only=read_only)
    try:
        con.execute("SET enable_progress_bar_print = false")
    except BaseException:
        con.close()
        raise
    return con


__all__ = ["connect"]
