"""The items of a standalone debate (``cotrain debate CONFIG --items FILE``), read and checked
before any store is opened, so a bad file costs nothing and leaves nothing behind."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config
from orchestrator.data import read_table
from store.errors import ConfigError, DataError
from store.items import LABEL_TRIM, label_spelling


@dataclass(frozen=True)
class DebateItems:
    """``ids`` (the file's ``data.id_column``, else ``row1``, ``row2``...), each item's
    ``records`` (the debate's fields as text) and ``gold`` label (``data.label_column`` as the
    file spells it; None where absent or blank), all in file order."""

    ids: list[str]
    records: list[dict[str, str]]
    gold: list[str | None]


def read_debate_items(cfg: Config, items: str | Path) -> DebateItems:
    """Read ``items`` (CSV / JSONL / Parquet) for the config's debate. One line naming the file,
    and the row and item where there is one, for a missing field or id column, a missing or
    repeated id, or a label the task does not have. As a run's data: ids and labels are read
    as the file spells them (``007`` stays ``007``), a label is trimmed, a blank one is no
    label, and ``1.0`` is the task's label ``1`` when the task has no ``1.0``."""
    assert cfg.debate is not None
    fields, id_column, label_column = cfg.debate.fields, cfg.data.id_column, cfg.data.label_column
    from orchestrator.viewset import protected_columns

    leaks = [f for f in fields if f in protected_columns(cfg) or f.startswith("__")]
    if leaks:  # the gold label read by the agents would also score their verdicts
        raise ConfigError("debate.fields", f"'{leaks[0]}' is the label, id or split column; agents may never read it")
    table = read_table(items, text_columns=(id_column, label_column))
    cols = table.column_names
    for f in fields:
        if f not in cols:
            raise DataError(f"column '{f}' (debate.fields) is missing", str(items))
    if id_column is not None and id_column not in cols:
        raise DataError(f"column '{id_column}' (data.id_column) is missing", str(items))
    if id_column is not None:
        ids = table.column(id_column).to_pylist()
        seen: set[str] = set()
        for row, x in enumerate(ids, start=1):
            if x is None or str(x).strip() == "":
                raise DataError(f"missing id (column '{id_column}')", str(items), row=row)
            if str(x) in seen:
                raise DataError("duplicate id", str(items), row=row, item=str(x))
            seen.add(str(x))
        ids = [str(x) for x in ids]
    else:
        ids = [f"row{i + 1}" for i in range(len(table))]
    records = [{f: "" if v is None else str(v) for f, v in zip(fields, vals)}
               for vals in zip(*(table.column(f).to_pylist() for f in fields))]
    names = cfg.task.names
    cells = [None if g is None else str(g).strip(LABEL_TRIM) for g in  # trimmed as a run's loader trims
             (table.column(label_column).to_pylist() if label_column in cols else [None] * len(ids))]
    gold = [(label_spelling(g, names) or g) if g else None for g in cells]
    for row, g in enumerate(gold, start=1):
        if g is not None and g not in names:
            raise DataError(f"unknown label '{g}' (labels: {', '.join(names)})", str(items), row=row,
                            item=ids[row - 1])
    return DebateItems(ids, records, gold)


__all__ = ["DebateItems", "read_debate_items"]
