"""What a view's ``predict_proba`` must give, checked where the orchestrator asks for it.

Selection, calibration and the store all assume each row is K probabilities in [0, 1]
summing to 1, or all NaN (the view abstains). A plug-in view that broke this was believed:
rows of -1 and 2, rows summing to 5 and an ``inf`` were stored and accepted as labels, and a
wrong number of columns ended in numpy's "all input arrays must have the same shape", naming
no view (a probe's finding). :func:`checked_proba` is the one place every caller asks a view
for probabilities: a view's own error and a malformed answer are each one ``ViewError``
naming the view (and the first item at fault).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from store.errors import CotrainError, ViewError, is_interrupt
from views.base import ITEM_ID_COLUMN, View

#: How far a row's sum may be from 1, and a probability outside [0, 1], by rounding alone.
TOLERANCE = 1e-3


def checked_proba(view: View, items: pd.DataFrame, k: int) -> np.ndarray:
    """``view.predict_proba(items)``, checked by :func:`check_proba`; an error the view raises
    that is not cotrain's own (nor an interruption) becomes a ``ViewError`` naming the view."""
    try:
        out = view.predict_proba(items)
    except CotrainError:
        raise
    except Exception as exc:  # a plug-in's or an estimator's own error: say which view raised it
        if is_interrupt(exc):  # DuckDB's Ctrl-C mid-query (a cache read) stays an interruption
            raise
        raise ViewError(view.name, f"predict_proba failed: {type(exc).__name__}: {exc}") from exc
    return check_proba(view.name, out, items, k)


def check_proba(name: str, out: Any, items: pd.DataFrame, k: int) -> np.ndarray:
    """``out`` as an (n, K) array when each row is K finite numbers in [0, 1] summing to 1
    (within :data:`TOLERANCE`) or all NaN; else a ``ViewError`` naming the view ``name``, the
    first row at fault (its item id where the frame has one) and how many are. The common
    case costs a product and a few reductions over the whole array (about 10 ms per million
    rows of two labels, abstentions or not), not row-wise passes (160 ms)."""
    n = len(items)
    if n == 0 and np.size(out) == 0:  # nothing asked: any empty answer will do
        return np.zeros((0, k))
    p = np.asarray(out) if isinstance(out, np.ndarray) else _as_array(name, out)
    if p.dtype.kind not in "fiu":
        p = _as_array(name, p)
    if p.shape != (n, k):
        raise ViewError(name, f"predict_proba returned shape {p.shape} for {n} item(s) and {k} labels; "
                        f"expected ({n}, {k})")
    if not n:
        return p
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in a row's sum: NaN, refused below
        s = p @ np.ones(k)  # each row's sum: NaN for a row holding a NaN, inf for one holding an inf
    voted = ~np.isnan(s)
    abstentions_whole = voted.all() or bool(np.isnan(p[~voted]).all())  # copies the abstaining rows only
    if abstentions_whole and not voted.any():
        return p
    # whole-array reductions that skip the abstentions' NaN (the row-wise checks below cost 15x)
    lo, hi = np.fmin.reduce(p, axis=None), np.fmax.reduce(p, axis=None)
    if abstentions_whole and 1 - TOLERANCE <= np.fmin.reduce(s) and np.fmax.reduce(s) <= 1 + TOLERANCE \
            and lo >= -TOLERANCE and hi <= 1 + TOLERANCE:
        return np.clip(p, 0.0, 1.0) if lo < 0 or hi > 1 else p  # past 0 or 1 by rounding: no NaN log(p) later
    nan = np.isnan(p)
    filled = np.where(nan, 0.5, p)
    ok = nan.all(axis=1) | (~nan.any(axis=1) & (np.abs(s - 1) <= TOLERANCE) & (filled.min(axis=1) >= -TOLERANCE)
                            & (filled.max(axis=1) <= 1 + TOLERANCE))  # an all-NaN row abstains, as it may
    bad = np.flatnonzero(~ok)
    if not len(bad):
        return p
    row = int(bad[0])
    which = f"item '{items[ITEM_ID_COLUMN].iloc[row]}'" if ITEM_ID_COLUMN in items.columns else f"row {row}"
    shown = ", ".join(f"{x:.3g}" for x in p[row][:12]) + (", ..." if k > 12 else "")
    raise ViewError(name, f"predict_proba gave {which} [{shown}] "
                    f"({len(bad)} of {n} rows like it): each row must be {k} probabilities in [0, 1] summing to 1, "
                    "or all NaN to abstain")


def _as_array(name: str, out: Any) -> np.ndarray:
    try:
        return np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ViewError(name, f"predict_proba returned {type(out).__name__}, not an array of numbers ({exc})") from None


__all__ = ["TOLERANCE", "check_proba", "checked_proba"]
