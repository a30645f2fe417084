"""The blocks a store's DuckDB keeps cached in memory, and letting them go.

DuckDB's buffer manager keeps every block a statement wrote or read until its memory limit
(80% of the machine's memory by default) asks for room. A run writes its data snapshot and
item table once (at 3M items, 400-450 MB of cached blocks on top of the data itself), then
reads from them only the fields its views see, which it holds in memory when they fit
(``orchestrator.frames``). Kept, those blocks only raise the process's peak memory in every
later round. Dropping them costs a re-read from the file of whatever a later query needs.
"""
from __future__ import annotations

import logging

import duckdb

log = logging.getLogger("cotrain")

#: The limit the buffer pool is lowered to for a moment: every block not in use is evicted.
EVICT_TO = "1MB"


def drop_cached_blocks(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Evict the unpinned cached blocks of the store at ``path`` (opened as ``con``), then
    restore its memory limit.

    DuckDB has no statement for this; lowering ``memory_limit`` makes the buffer manager evict
    down to it, which is how its maintainers suggest giving cached blocks back
    (duckdb/duckdb#5455). A file-backed store only: an in-memory database's blocks live
    nowhere else, so evicting them would spill them to a temporary file. Blocks a statement
    is using stay; failing to evict is not an error (the run goes on with its cache)."""
    if path == ":memory:":
        return
    cur = con.cursor()  # the connection may hold a pending result; a cursor leaves it alone
    try:
        limit = cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        try:
            cur.execute("SET memory_limit = ?", [EVICT_TO])
        except duckdb.Error as exc:  # some blocks are pinned: what could go went
            log.debug("cached blocks kept: %s", str(exc).splitlines()[0])
        finally:  # the default exactly (a limit reads back rounded: '18.8 GiB' sets 18.7 GiB)
            cur.execute("RESET memory_limit")
            if cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] != limit:
                cur.execute("SET memory_limit = ?", [limit])  # one that was set: as near as it reads
    finally:
        cur.close()


__all__ = ["EVICT_TO", "drop_cached_blocks"]
