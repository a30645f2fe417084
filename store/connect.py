"""DuckDB connections as cotrain opens them.

DuckDB's Python client prints a progress bar to standard output for any statement that runs
longer than two seconds (a large CSV read, a snapshot insert): mid-way through cotrain's own
display, and under ``--quiet``. Every connection cotrain opens turns it off for itself.
"""
from __future__ import annotations

import duckdb


def connect(path: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path, read_only=...)`` without the progress bar."""
    con = duckdb.connect(path, read_only=read_only)
    try:
        con.execute("SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con


__all__ = ["connect"]
