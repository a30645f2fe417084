"""Applying the named migrations of ``store.migrations`` to a store, each in its own
transaction, and recording each in ``_migrations``."""
from __future__ import annotations

from contextlib import suppress
from datetime import datetime, timezone

import duckdb

from store.migrations import MIGRATIONS


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the migrations a store has not had yet (all of them for an empty file)."""
    has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = '_migrations'").fetchall()
    done = {r[0] for r in con.execute("SELECT name FROM _migrations").fetchall()} if has[0][0] else set()
    return [name for name, _ in MIGRATIONS if name not in done]


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT name FROM _migrations").fetchall()}
    applied: list[str] = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute(
                "INSERT INTO _migrations VALUES (?, ?)", [name, datetime.now(timezone.utc).replace(tzinfo=None)]
            )
            con.execute("COMMIT")
        except BaseException:
            with suppress(duckdb.Error):  # an interrupted COMMIT may have ended the transaction
                con.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
