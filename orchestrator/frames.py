"""Where a round reads the fields its views see: from the store on every call, or from one
copy held in memory across rounds.

A round reads every training item and every pool item at least once (fit, predict, the
cut statistic); with the store as the source that is a DuckDB scan and an Arrow-to-pandas
conversion per batch, every round. When the snapshot's fields fit in memory
(``cotrain.data_in_memory``), they are read once into a pandas frame, and each later read
is an in-memory ``take``: the same rows and values, no SQL (see :class:`FrameSource` on dtypes).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from store.database import Store

log = logging.getLogger("cotrain")

#: ``data_in_memory: auto`` holds the fields when they take at most this share of the
#: memory available when the run starts.
AUTO_SHARE = 0.25
#: Without a way to read the available memory, ``auto`` allows this many bytes.
AUTO_FALLBACK_BYTES = 2 * 2**30
SAMPLE_ROWS = 2000


class FrameSource(Protocol):
    """Rows of the run's data snapshot (by ``__row``, in the order given) as a pandas frame
    of the fields views read. The two sources give the same values; a column with nulls
    may differ in dtype (an int column with a null is float64 in memory for every row, but
    int64 in a batch from the store that happens to hold none)."""

    in_memory: bool

    def rows(self, row_idx: np.ndarray) -> pd.DataFrame: ...


class StoreFrames:
    """Every read is a query of the store (bounded memory whatever the pool's size)."""

    in_memory = False

    def __init__(self, store: Store, run_id: int, fields: Sequence[str]) -> None:
        self.store, self.run_id, self.fields = store, run_id, list(fields)

    def rows(self, row_idx: np.ndarray) -> pd.DataFrame:
        return self.store.fetch_rows(self.run_id, row_idx, self.fields).to_pandas()


class MemoryFrames:
    """The fields of every row, read once and held in memory; a read is a positional gather
    (row i is ``__row`` i).

    Fields of one floating type (the numeric views' common case) are held as one row-major
    matrix: a read is one row gather, and the frame it gives wraps that gather without a
    copy, so a view's float matrix of all of them is the gather itself (at 3M items a fit
    holds one copy of its training rows, not three). Other fields are one pandas frame."""

    in_memory = True

    def __init__(self, table: pa.Table) -> None:
        self.nbytes = int(table.nbytes)
        self.columns = list(table.column_names)
        types = set(table.schema.types)
        self.matrix: np.ndarray | None = None
        self.frame: pd.DataFrame | None = None
        if len(types) == 1 and pa.types.is_floating(next(iter(types))):
            self.matrix = np.empty((table.num_rows, table.num_columns), dtype=next(iter(types)).to_pandas_dtype())
            for j, col in enumerate(table.columns):
                self.matrix[:, j] = col.to_numpy()  # a null is NaN, as pandas reads it
        else:
            self.frame = table.to_pandas()

    @classmethod
    def load(cls, store: Store, run_id: int, fields: Sequence[str]) -> MemoryFrames:
        return cls(store.data_columns_table(run_id, fields))

    def rows(self, row_idx: np.ndarray) -> pd.DataFrame:
        idx = np.asarray(row_idx, dtype=np.int64)
        if self.matrix is not None:
            return pd.DataFrame(self.matrix[idx], columns=self.columns, copy=False)
        assert self.frame is not None
        return self.frame.take(idx).reset_index(drop=True)


def available_bytes() -> int | None:
    """Memory available to this process now: the machine's (Linux ``MemAvailable``), or less
    when a container's cgroup limit leaves less; None if unknown."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as fh:
            found += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError):
        try:
            found.append(int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup = Path("/sys/fs/cgroup")
    try:  # cgroup v2: memory.max is "max" when unlimited
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def estimated_bytes(store: Store, run_id: int, fields: Sequence[str], n_rows: int) -> int:
    """The fields' in-memory size, extrapolated from the first rows' Arrow size."""
    if not n_rows or not fields:
        return 0
    m = min(n_rows, SAMPLE_ROWS)
    sample = store.fetch_rows(run_id, np.arange(m, dtype=np.int64), fields)
    return int(sample.nbytes / m * n_rows)


def open_frames(store: Store, run_id: int, fields: Sequence[str], n_rows: int, mode: str | bool,
                limit_bytes: int | None = None) -> FrameSource:
    """The run's frame source: ``mode`` True holds the fields in memory, False reads the
    store each time, ``"auto"`` holds them when they take at most ``limit_bytes`` (default:
    :data:`AUTO_SHARE` of the available memory). The store's cached blocks are dropped first
    (the load left every column of the snapshot and the item table cached, and a run reads
    only the fields) and, when the fields are held, again once they are (``store.buffers``)."""
    if mode == "auto":
        # the Arrow read and its pandas copy coexist while loading, and pandas may hold a
        # column wider than Arrow does (bools, objects): budget twice the Arrow estimate
        need = 2 * estimated_bytes(store, run_id, fields, n_rows)
        avail = available_bytes()
        limit = limit_bytes if limit_bytes is not None else \
            AUTO_FALLBACK_BYTES if avail is None else int(avail * AUTO_SHARE)
        mode = need <= limit
        log.info("data fields: %.0f MB; %s", need / 2**20,
                 "held in memory" if mode else f"read from the store (limit {limit / 2**20:.0f} MB)")
    store.drop_cached_blocks()  # the snapshot's and item table's blocks, cached as they were written
    if not mode:
        return StoreFrames(store, run_id, fields)
    held = MemoryFrames.load(store, run_id, fields)
    store.drop_cached_blocks()  # the blocks of the fields just read: held in memory now
    return held


__all__ = ["FrameSource", "MemoryFrames", "StoreFrames", "available_bytes", "estimated_bytes", "open_frames"]
