"""Terminal tables that fit the console: numbers are never cut.

rich shrinks a table that is wider than the terminal by cutting cells (``0.7…``). Here every
column of numbers or short codes keeps its full width; only columns named as free text
(view lists, paths, models) may wrap. When the numeric columns alone are wider than the
console, the table is split into several tables, each repeating the leading key columns
(``round``), so an 80-column terminal shows every figure in full.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

_GAP = 3          # between two columns: a space of padding each side of the box's divider
_FREE_MIN = 12    # what a wrapping text column needs at least


def _width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in str(text).splitlines()), default=0)


def fitted_tables(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int, *,
                  left: Collection[str] = (), wrap: Collection[str] = (), keep: int = 1) -> list[Any]:
    """rich Tables showing ``rows`` within ``width`` columns.

    ``left``: left-justified columns (others are right-justified); ``wrap``: columns of free
    text that may wrap; ``keep``: how many leading columns every split table repeats."""
    from rich import box
    from rich.table import Table

    rows = [[str(c) for c in r] for r in rows]
    need = [max([_width(h), *(_width(r[j]) for r in rows)]) if h not in wrap else _FREE_MIN
            for j, h in enumerate(headers)]
    keep = min(keep, len(headers))
    groups: list[list[int]] = []
    base = sum(need[:keep]) + _GAP * (keep - 1)   # the repeated key columns
    current: list[int] = []
    used = base
    for j in range(keep, len(headers)):
        if current and used + _GAP + need[j] > width:
            groups.append(current)
            current, used = [], base
        current.append(j)
        used += _GAP + need[j]
    if current or not groups:
        groups.append(current)
    tables = []
    for g, cols in enumerate(groups):
        part = f" ({g + 1}/{len(groups)})" if len(groups) > 1 else ""
        # as wide as its title (up to the console): a narrow split table broke the title mid-word
        t = Table(title=title + part, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  min_width=min(width, _width(title + part)))
        for j in [*range(keep), *cols]:
            h = headers[j]
            if h in wrap:
                t.add_column(h, justify="left", overflow="fold")
            else:
                t.add_column(h, justify="left" if h in left else "right", no_wrap=True, min_width=need[j])
        for r in rows:
            t.add_row(*(r[j] for j in [*range(keep), *cols]))
        tables.append(t)
    return tables


__all__ = ["fitted_tables"]
