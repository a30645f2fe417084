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
#: Rows per insert of a run's data snapshot (a multiple of DuckDB's 122,880-row row group).
#: Each slice is made one Arrow chunk before its insert, since many chunks made DuckDB write
#: partial row groups that the close's checkpoint rewrote; slicing keeps that copy a slice's
#: size, not the whole file's (at 3M rows a 240 MB copy beside the file's own).
SNAPSHOT_SLICE_ROWS = 8 * 122_880
#: A round gives back its tables' cached blocks once they exceed this (at 3M items they held
#: 40 MB at the last fit; at 100k dropping every round's 8 MB cost 0.05 s of a 1.6 s run).
ROUND_CACHE_BYTES = 32 * 2**20


def drop_cached_blocks(con: duckdb.DuckDBPyConnection, path: str, default_limit: str, above_bytes: int = 0) -> None:
    """Evict the unpinned cached blocks of the store at ``path`` (opened as ``con``), then reset
    its memory limit; only while that limit is DuckDB's default, ``default_limit``, and the
    tables' cached blocks take more than ``above_bytes`` (reading that costs under a
    millisecond; evicting, 5-15 ms, and a later query reads back what it needs).

    DuckDB has no statement for this; lowering ``memory_limit`` makes the buffer manager evict
    down to it, which is how its maintainers suggest giving cached blocks back
    (duckdb/duckdb#5455). A file-backed store only: an in-memory database's blocks live
    nowhere else, so evicting them would spill them to a temporary file; and one whose limit
    somebody set is left alone (that limit bounds its cache, and a limit reads back rounded
    down: setting it again would lower it). Blocks a statement is using stay; failing to
    evict is not an error (the run goes on with its cache), nor is failing to ask. Committed
    rows not yet checkpointed into the file (``IN_MEMORY_TABLE``, at most DuckDB's checkpoint
    threshold of WAL) cannot be dropped: DuckDB moves them to its temporary folder beside the
    store until the next checkpoint writes them into the file."""
    if path == ":memory:":
        return
    cur = con.cursor()  # the connection may hold a pending result; a cursor leaves it alone
    try:
        _evict(cur, default_limit, above_bytes)
    except duckdb.Error as exc:
        log.debug("cached blocks kept: %s", str(exc).splitlines()[0])
    finally:
        cur.close()


def _evict(cur: duckdb.DuckDBPyConnection, default_limit: str, above_bytes: int) -> None:
    """:func:`drop_cached_blocks` on one cursor."""
    limit = cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if limit != default_limit:
        return  # somebody set a limit: it bounds the cache already (and reads back rounded)
    if above_bytes > 0 and cur.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                                       "WHERE tag = 'BASE_TABLE'").fetchall()[0][0] <= above_bytes:
        return
    try:  # refused when some blocks are pinned: what could go went (the caller logs it)
        cur.execute("SET memory_limit = ?", [EVICT_TO])
    finally:
        cur.execute("RESET memory_limit")


def default_memory_limit() -> str:
    """DuckDB's default memory limit on this machine, as ``current_setting`` spells it, read
    from a fresh in-memory database (a store's own may have been set through another
    connection to the same file: they share one instance)."""
    with duckdb.connect() as fresh:
        return str(fresh.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])


__all__ = ["EVICT_TO", "ROUND_CACHE_BYTES", "SNAPSHOT_SLICE_ROWS", "default_memory_limit", "drop_cached_blocks"]
