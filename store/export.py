"""Export a run's labelled dataset (gold, reviewed and accepted pseudo-labels) with provenance.

Columns: ``item_id``, ``label``, ``source`` (``gold``, ``review`` or the policy that accepted
the label),
``source_views`` (views whose picks made it), ``agreeing_views`` (views whose prediction in
that round gave the same label), ``round``, ``confidence``, then the item's own fields.
Parquet output loads unchanged with ``datasets.load_dataset("parquet", data_files=...)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from store.database import Store
from store.errors import StoreError

ExportFormat = Literal["parquet", "jsonl", "csv", "hf", "hf-parquet", "label-studio", "argilla"]
FLAT_FORMATS = ("parquet", "jsonl", "csv")
_INTERNAL = ("__row", "__split", "__file_row")


@dataclass(frozen=True)
class ExportFilter:
    run_id: int | None = None          # default: the latest run
    max_round: int | None = None       # pseudo-labels accepted at or before this round
    min_confidence: float | None = None
    source: str | None = None          # gold | review | pseudo | a policy name | a view name
    include_gold: bool = True          # gold and reviewed labels
    disputed_only: bool = False        # items the views disputed in some round (unlabelled ones too)
    sample: int | None = None          # a sample of this size, stratified by label
    seed: int = 0                      # of the sample


def export_query(store: Store, flt: ExportFilter) -> tuple[str, list[object]]:
    run_id = flt.run_id if flt.run_id is not None else store.latest_run()
    if run_id is None:
        raise StoreError("holds no run to export", store.path)
    info = store.run_info(run_id)  # raises for an unknown run
    data_cols = [c for c in store.data_columns(run_id) if c not in _INTERNAL]
    label_col = info["config"]["data"]["label_column"]
    fields = ", ".join(f'd."{c}"' for c in data_cols if c != label_col and c not in ("item_id", "label"))
    fields = (", " + fields) if fields else ""
    where: list[str] = []
    params: list[object] = [run_id, run_id, run_id]  # reviews, items, pseudo_labels
    disputed_unlabelled = ""
    if flt.disputed_only:  # disputed items nobody labelled yet are the ones most worth a review
        disputed_unlabelled = """
            UNION ALL
            SELECT i.item_id, i.row_idx, CAST(NULL AS VARCHAR) AS label, 'disputed' AS source,
                   CAST([] AS VARCHAR[]), CAST([] AS VARCHAR[]), max(ds.round), CAST(NULL AS FLOAT)
            FROM items i JOIN disputes ds ON ds.run_id = i.run_id AND ds.item_id = i.item_id
            LEFT JOIN rv ON rv.item_id = i.item_id
            WHERE i.run_id = ? AND i.split = 'train' AND i.gold_label IS NULL AND rv.label IS NULL
              AND NOT EXISTS (SELECT 1 FROM pseudo_labels p WHERE p.run_id = i.run_id AND p.item_id = i.item_id
                              AND p.status = 'accepted')
            GROUP BY i.item_id, i.row_idx"""
        params.append(run_id)
    if flt.max_round is not None:
        where.append("(l.round IS NULL OR l.round <= ?)")
        params.append(flt.max_round)
    if flt.min_confidence is not None:
        where.append("l.confidence >= ?")
        params.append(flt.min_confidence)
    if flt.source is not None:
        if flt.source == "pseudo":
            where.append("l.source NOT IN ('gold', 'review')")
        else:
            where.append("(l.source = ? OR list_contains(l.source_views, ?))")
            params.extend([flt.source, flt.source])
    if not flt.include_gold:
        where.append("l.source NOT IN ('gold', 'review')")
    if flt.disputed_only:
        where.append("l.item_id IN (SELECT item_id FROM disputes WHERE run_id = ?)")
        params.append(run_id)
    cond = ("WHERE " + " AND ".join(where)) if where else ""
    sample = ""
    if flt.sample is not None:
        if flt.sample < 1:
            raise StoreError("the sample size must be >= 1")
        # stratified: each label keeps its share (at least one item), drawn by a seeded hash
        sample = f"""QUALIFY row_number() OVER (PARTITION BY l.label ORDER BY hash(l.item_id, {int(flt.seed)}))
                         <= greatest(1, round({int(flt.sample)} * count(*) OVER (PARTITION BY l.label)
                                               / count(*) OVER ()))"""
    sql = f"""
        WITH rv AS (SELECT item_id, label FROM reviewed_labels WHERE run_id = ?), l AS (
            SELECT i.item_id, i.row_idx, coalesce(rv.label, i.gold_label) AS label,
                   CASE WHEN rv.label IS NOT NULL THEN 'review' ELSE 'gold' END AS source,
                   CAST([] AS VARCHAR[]) AS source_views, CAST([] AS VARCHAR[]) AS agreeing_views,
                   CAST(NULL AS INTEGER) AS round, CAST(1.0 AS FLOAT) AS confidence
            FROM items i LEFT JOIN rv ON rv.item_id = i.item_id
            WHERE i.run_id = ? AND i.split = 'train' AND coalesce(rv.label, i.gold_label) IS NOT NULL
            UNION ALL
            SELECT p.item_id, i.row_idx, p.label, p.source, p.source_views,
                   coalesce((SELECT list(pr.view ORDER BY pr.view) FROM predictions pr
                             WHERE pr.run_id = p.run_id AND pr.round = p.round AND pr.item_id = p.item_id
                               AND pr.label = p.label), CAST([] AS VARCHAR[])) AS agreeing_views,
                   p.round, p.confidence
            FROM pseudo_labels p JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id
            WHERE p.run_id = ? AND p.status = 'accepted'{disputed_unlabelled}
        ), chosen AS (
            SELECT l.* FROM l {cond} {sample}
        )
        SELECT l.item_id, l.label, l.source, l.source_views, l.agreeing_views, l.round, l.confidence{fields}
        FROM chosen l JOIN "data_{run_id}" d ON d.__row = l.row_idx
        ORDER BY l.row_idx
    """
    return sql, params


def export_labels(store: Store, out: str | Path, fmt: ExportFormat | None = None,
                  flt: ExportFilter | None = None) -> int:
    """Write the labelled dataset to ``out``; return the number of rows written.

    ``hf`` / ``hf-parquet`` (a Hugging Face ``datasets`` folder or Parquet file with a
    ``ClassLabel``), ``label-studio`` and ``argilla`` (review tasks with each view's vote) are
    written by ``store.annotation``."""
    flt = flt or ExportFilter()
    out = Path(out)
    fmt = fmt or _format_from_name(out)
    if not out.parent.exists():
        raise StoreError(f"output folder {out.parent} does not exist")
    if fmt not in FLAT_FORMATS:
        from store.annotation import export_annotation

        return export_annotation(store, out, fmt, flt)
    sql, params = export_query(store, flt)
    rel = store.con.sql(sql, params=params)
    n = int(store.con.sql(f"SELECT count(*) FROM ({sql})", params=params).fetchall()[0][0])
    target = str(out).replace("'", "''")
    if fmt == "parquet":
        rel.to_parquet(str(out))
    elif fmt == "csv":
        rel.to_csv(str(out), header=True)
    elif fmt == "jsonl":
        store.con.execute(f"COPY ({sql}) TO '{target}' (FORMAT json)", params)
    else:
        raise StoreError(f"unknown export format '{fmt}' ({', '.join(FLAT_FORMATS)}, hf, hf-parquet, "
                         "label-studio, argilla)")
    return n


def _format_from_name(out: Path) -> ExportFormat:
    suf = out.suffix.lower()
    if out.is_dir() or not suf:
        return "hf"
    if suf in (".parquet", ".pq"):
        return "parquet"
    if suf in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suf == ".csv":
        return "csv"
    raise StoreError(f"cannot tell the export format from '{out.name}'; pass --format "
                     "parquet|jsonl|csv|hf|hf-parquet|label-studio|argilla")
