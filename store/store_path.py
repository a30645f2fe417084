"""What a store path must be before DuckDB opens it: each refusal is one line naming the
path, where DuckDB's own messages misled (a CSV opened read-only reported a catalog error
about in-memory databases) or an open would have created a file nobody asked for."""
from __future__ import annotations

import re
from pathlib import Path

from store.errors import StoreError, StoreLockedError

_PID_RE = re.compile(r"PID (\d+)")


def locked(path: str, exc: BaseException) -> StoreLockedError:
    """DuckDB's "could not set lock ... (PID n)" as a ``StoreLockedError`` naming the holder."""
    m = _PID_RE.search(str(exc))
    return StoreLockedError(path, int(m.group(1)) if m else None)


#: DuckDB's magic bytes, at offset 8 of a database file.
DUCKDB_MAGIC = b"DUCK"


def is_duckdb_file(path: str | Path) -> bool:
    """Whether a regular file holds DuckDB's magic bytes (:data:`DUCKDB_MAGIC` at offset 8)."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(12)[8:] == DUCKDB_MAGIC


def check_store_path(path: str, read_only: bool, create: bool) -> None:
    """Refuse a path in a missing folder; a missing file when reading or when ``create`` is
    False; a file that is not a DuckDB database; and ``:memory:`` read-only."""
    if path == ":memory:":
        if read_only:
            raise StoreError("an in-memory database holds no store to read; give the .duckdb file a run wrote", path)
        return
    p = Path(path)
    if not p.parent.exists():
        raise StoreError(f"folder {p.parent} does not exist", path)
    if (read_only or not create) and not p.exists():
        raise StoreError("no such store file", path)
    if p.is_dir():  # DuckDB's own "IO Error: Could not read from file ...: Is a directory"
        raise StoreError("is a folder; a cotrain store is the .duckdb file a run wrote", path)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(12)
        if len(head) < 12:  # DuckDB refuses an empty file too, with its own words
            raise StoreError("not a store: the file is empty or cut short; a cotrain store is the .duckdb file a "
                             "run wrote", path)
        if head[8:] != DUCKDB_MAGIC:  # the head read above: no second read
            raise StoreError("not a store: a cotrain store is the .duckdb file a run wrote", path)


__all__ = ["check_store_path", "is_duckdb_file"]
