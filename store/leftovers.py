"""What a killed writer leaves beside its store, tidied by the next writer to open it.

A clean close removes DuckDB's temporary folder ``<store>.tmp``; after ``kill -9`` it stayed
(empty, or holding the dead process's spill files) through every later run. A kill while
the progress file was being replaced left its temporary ``.<store>.progress.json.*.tmp``
beside it, which nothing ever removed. The writer that holds the store's lock is the only
process that writes either, so whatever it finds at open is a dead process's."""
from __future__ import annotations

import contextlib
import glob
from pathlib import Path

from store.progress import progress_path

#: The prefix of the files DuckDB spills into its temporary folder.
DUCKDB_SPILL_PREFIX = "duckdb_temp"


def clear_leftovers(store: str | Path) -> None:
    """Remove, beside the store at ``store`` that this process just opened for writing, the
    temporary folder DuckDB left when it holds nothing but its spill files, and the progress
    file's unfinished temporary files. Anything else there is kept; a failure to remove is
    not an error (the next writer tries again)."""
    tmp = Path(f"{store}.tmp")
    with contextlib.suppress(OSError):
        if tmp.is_dir() and not tmp.is_symlink():
            spilled = list(tmp.iterdir())
            if all(p.name.startswith(DUCKDB_SPILL_PREFIX) and p.is_file() and not p.is_symlink() for p in spilled):
                for p in spilled:
                    p.unlink()
                tmp.rmdir()
    progress = progress_path(store)
    with contextlib.suppress(OSError):
        for p in progress.parent.glob(f".{glob.escape(progress.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    p.unlink()


__all__ = ["DUCKDB_SPILL_PREFIX", "clear_leftovers"]
