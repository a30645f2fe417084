"""Arrow conversions the store's reads and writes share."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def rows_as_lists(matrix: np.ndarray) -> pa.Array:
    """An (n, d) float matrix as an Arrow list<float> array, one list per row (no Python loop)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)),
                                    pa.array(matrix.ravel()))


def by_row(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """A read of the snapshot in ``__row`` order, with its ``__row`` values: a scan keeps
    insertion order (never seen otherwise; sorted then, to stay correct anyway)."""
    have = table.column("__row").to_numpy()
    if have.size > 1 and not (np.diff(have) > 0).all():
        order = np.argsort(have, kind="stable")
        table, have = table.take(pa.array(order)), have[order]
    return table, have


__all__ = ["by_row", "rows_as_lists"]
