"""Tidying after a failed command: a store it created and left with nothing in it goes."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.database import Store
from store.progress import progress_path
from store.sql import ident


def remove_if_empty(path: str) -> None:
    """Remove a store that a failed command created and left with nothing in it (a data file
    that is missing or refused: no run, no cached embedding or answer), with its progress file
    and DuckDB's temporary folder, so nothing empty is left behind. A store holding any row,
    or one that cannot be read, is kept as it is. The caller knows it created the file."""
    try:
        with Store(path, read_only=True) as st:
            tables = [r[0] for r in st.con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()]
            if any(t != "_migrations" and st.scalar(f"SELECT count(*) > 0 FROM {ident(t)}") for t in tables):
                return
    except Exception:  # noqa: BLE001 - the failure being reported matters more than tidying up
        return
    for p in (Path(path + ".wal"), progress_path(path), Path(path)):  # the store last: never a .wal without it
        p.unlink(missing_ok=True)
    shutil.rmtree(path + ".tmp", ignore_errors=True)


@contextmanager
def removed_if_left_empty(path: str) -> Iterator[None]:
    """Around a command that opens the store at ``path``: when the command fails and the store
    is one it created (not ``:memory:``, not a file or a link, dangling or not, that was there
    before: a link is the user's), remove it if it holds nothing (:func:`remove_if_empty`)."""
    created = path != ":memory:" and not (Path(path).exists() or Path(path).is_symlink())
    try:
        yield
    except BaseException:
        if created:
            remove_if_empty(path)
        raise


__all__ = ["remove_if_empty", "removed_if_left_empty"]
