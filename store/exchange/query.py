"""Which labels an export holds: the filter and the one query every export format reads.

Columns: ``item_id``, ``label``, ``source`` (``gold``, ``review`` or the policy that accepted
the label), ``source_views``, ``agreeing_views``, ``round``, ``confidence``, ``p_correct`` (the
estimated probability that the label is right: 1.0 for gold and reviewed labels, NULL when the
run estimated none: runs before migration 008 and debate verdicts), then the item's own fields.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from store.database import Store
from store.errors import StoreError
from store.sql import ident

ExportFormat = Literal["parquet", "json", "jsonl", "csv", "hf", "hf-parquet", "label-studio", "argilla"]
FLAT_FORMATS = ("parquet", "json", "jsonl", "csv")
_INTERNAL = ("__row", "__split", "__file_row")
#: The export's own columns, before the item's fields.
PROVENANCE = ("item_id", "label", "source", "source_views", "agreeing_views", "round", "confidence", "p_correct")
#: A review file's names for cotrain's own label and its provenance (its ``label`` is left for
#: the reviewer's answer), as the Label Studio tasks name them, and the task's fingerprint.
REVIEW_COLUMNS = {"label": "cotrain_label", "source": "cotrain_source", "confidence": "cotrain_confidence",
                  "p_correct": "cotrain_p_correct"}
#: The review task's field that shows an item with no text or image field (a table's row):
#: its columns and values, one key-value table.
ITEM_TABLE = "cotrain_fields"
#: Names an item's field never takes in an export: the provenance, and what a review file and
#: ``import-reviews`` read (a field named ``cotrain_task`` or ``reviewer`` was read as one).
RESERVED = (*PROVENANCE, *REVIEW_COLUMNS.values(), "cotrain_task", "cotrain_item", ITEM_TABLE, "reviewer",
            "reviewed_at", "annotator", "annotation_id")


def content_fingerprint(columns: Sequence[str], alias: str = "d") -> str:
    """SQL for an item's content fingerprint (``cotrain_item``): the first 16 hex digits of the
    MD5 of its fields (``columns`` of its data-snapshot row ``alias``) as JSON. A review file
    carries it, so an import can tell an item of another data file that happens to share its
    id (``it0185`` in two stores) from the item the reviewer saw; the same data in a new run
    gives the same fingerprint."""
    if not columns:
        return "CAST(NULL AS VARCHAR)"
    packed = ", ".join(f"{ident(c)} := {alias}.{ident(c)}" for c in columns)
    return f"substr(md5(CAST(to_json(struct_pack({packed})) AS VARCHAR)), 1, 16)"


def fingerprinted_columns(data_columns: Sequence[str], label_column: str) -> list[str]:
    """The data columns a content fingerprint covers: every field but cotrain's own and the label."""
    return [c for c in data_columns if c not in _INTERNAL and c != label_column]


def field_aliases(columns: list[str], label_column: str) -> list[tuple[str, str]]:
    """(data column, exported name) of the item's fields. A field named like one of the
    export's own columns (SQL names are case-insensitive: ``Source`` too) is exported as
    ``data_<name>``, so it neither replaces nor shadows the provenance, nor what a review
    file carries (:data:`RESERVED`)."""
    taken = {c.lower() for c in RESERVED}
    out = []
    for c in columns:
        if c == label_column:
            continue
        alias = c
        while alias.lower() in taken:
            alias = f"data_{alias}"
        taken.add(alias.lower())
        out.append((c, alias))
    return out


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
    min_p_correct: float | None = None  # pseudo-labels estimated right with at least this probability
                                        # (gold and reviewed always pass; no estimate: dropped)
    items: tuple[str, ...] | None = None  # only these items, unlabelled ones too, in this order
                                          # (a review selection)

    def __post_init__(self) -> None:
        # a library caller's "1" or True met DuckDB's or Python's own error, and numpy's numbers
        # DuckDB's refusal to bind them: checked, then held as Python's own
        for name in ("run_id", "max_round", "sample", "seed"):
            value = getattr(self, name)
            whole_number(name, value, optional=name != "seed")
            object.__setattr__(self, name, None if value is None else int(value))
        for name in ("min_confidence", "min_p_correct"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise StoreError(f"{name} must be a number, not {value!r}")
            object.__setattr__(self, name, None if value is None else float(value))
        for name in ("include_gold", "disputed_only"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise StoreError(f"{name} must be true or false, not {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.max_round is not None and self.max_round < 0:
            raise StoreError(f"--round must be 0 or more (rounds count from 0), not {self.max_round}")
        if not 0 <= self.seed < 2**63:  # a sample's hash takes a BIGINT; numpy's draws no negative seed
            raise StoreError(f"--seed must be between 0 and 2^63 - 1, not {self.seed}")
        if not self.include_gold and self.source in ("gold", "review"):
            raise StoreError(f"--source {self.source} with --no-gold selects nothing: gold and reviewed labels "
                             "are what --no-gold leaves out")
        for name in ("min_p_correct", "min_confidence"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:  # NaN too
                raise StoreError(f"--{name.replace('_', '-')} must be between 0 and 1, not {value}")


def whole_number(name: str, value: object, optional: bool = True) -> None:
    """Refuse, in one line naming ``name``, a value that is not an int (a bool is not one)."""
    if (value is None and optional) or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return  # numpy's integers too
    raise StoreError(f"{name} must be a whole number, not {value!r}")


def stratified_quota(counts: dict[str | None, int], n: int) -> dict[str | None, int]:
    """Rows to draw per label for a sample of ``n`` out of ``counts`` rows per label: exactly
    ``min(n, total)``, each label its share by largest remainder, and at least one row of
    every label when ``n`` covers one of each (rounding each share up to one gave more rows
    than asked: 6 for ``--sample 5`` over two labels). Ties go to the label first in order."""
    total = sum(counts.values())
    if n >= total:
        return dict(counts)
    labels = [label for label, c in counts.items() if c > 0]
    floor = 1 if n >= len(labels) else 0
    exact = {label: n * counts[label] / total for label in labels}
    quota = {label: min(counts[label], max(floor, int(exact[label]))) for label in labels}
    by_remainder = sorted(labels, key=lambda label: exact[label] - quota[label], reverse=True)
    while sum(quota.values()) < n:  # the largest remainders get one more, while they have rows
        label = next(x for x in by_remainder if quota[x] < counts[x])
        quota[label] += 1
        by_remainder.remove(label)
        by_remainder.append(label)
    while sum(quota.values()) > n:  # the floor of one over-spent: the largest quotas above it give one back
        label = max((x for x in labels if quota[x] > floor), key=lambda x: quota[x] - exact[x])
        quota[label] -= 1
    return {label: quota.get(label, 0) for label in counts}


def export_query(store: Store, flt: ExportFilter, *, count_unestimated: bool = False,
                 fingerprint: bool = False) -> tuple[str, list[object]]:
    """The export's SQL and its parameters. With ``count_unestimated``: instead, one count of
    the rows every other filter keeps but ``min_p_correct`` drops for lacking an estimate
    (``p_correct`` NULL), before any sample is drawn. With ``fingerprint``: a ``cotrain_item``
    column after ``p_correct``, each item's :func:`content_fingerprint` (files sent to reviewers)."""
    run_id = flt.run_id if flt.run_id is not None else store.latest_run()
    if run_id is None:
        raise StoreError("holds no run to export", store.path)
    info = store.run_info(run_id)  # raises for an unknown run
    data_cols = [c for c in store.data_columns(run_id) if c not in _INTERNAL]
    label_col = info["label_column"]
    fields = ", ".join(f"d.{ident(c)} AS {ident(alias)}" for c, alias in field_aliases(data_cols, label_col))
    fields = (", " + fields) if fields else ""
    if fingerprint:
        fields = f", {content_fingerprint(fingerprinted_columns(data_cols, label_col))} AS cotrain_item" + fields
    where: list[str] = []
    params: list[object] = [run_id, run_id, run_id]  # reviews, items, pseudo_labels
    disputed_unlabelled = ""
    if flt.items is not None and not flt.disputed_only:  # a review selection may pick unlabelled items
        disputed_unlabelled = """
            UNION ALL
            SELECT i.item_id, i.row_idx, CAST(NULL AS VARCHAR) AS label, 'unlabelled' AS source,
                   CAST([] AS VARCHAR[]), CAST([] AS VARCHAR[]), CAST(NULL AS INTEGER), CAST(NULL AS FLOAT),
                   CAST(NULL AS FLOAT)
            FROM items i LEFT JOIN rv ON rv.item_id = i.item_id
            WHERE i.run_id = ? AND i.split = 'train' AND i.gold_label IS NULL AND rv.label IS NULL
              AND NOT EXISTS (SELECT 1 FROM pseudo_labels p WHERE p.run_id = i.run_id AND p.item_id = i.item_id
                              AND p.status = 'accepted')"""
        params.append(run_id)
    if flt.disputed_only:  # disputed items nobody labelled yet are the ones most worth a review
        disputed_unlabelled = """
            UNION ALL
            SELECT i.item_id, i.row_idx, CAST(NULL AS VARCHAR) AS label, 'disputed' AS source,
                   CAST([] AS VARCHAR[]), CAST([] AS VARCHAR[]), max(ds.round), CAST(NULL AS FLOAT),
                   CAST(NULL AS FLOAT)
            FROM items i JOIN disputes ds ON ds.run_id = i.run_id AND ds.item_id = i.item_id
            LEFT JOIN rv ON rv.item_id = i.item_id
            WHERE i.run_id = ? AND i.split = 'train' AND i.gold_label IS NULL AND rv.label IS NULL
              AND NOT EXISTS (SELECT 1 FROM pseudo_labels p WHERE p.run_id = i.run_id AND p.item_id = i.item_id
                              AND p.status = 'accepted')
            GROUP BY i.item_id, i.row_idx"""
        params.append(run_id)
    if flt.max_round is not None:
        last = store.scalar("SELECT max(round) FROM rounds WHERE run_id = ?", [run_id])
        if last is None or flt.max_round > last:  # exported every round without a word
            held = "no rounds yet" if last is None else f"rounds 0-{last}"
            raise StoreError(f"--round {flt.max_round}: run {run_id} has {held}", store.path)
        where.append("(l.round IS NULL OR l.round <= ?)")
        params.append(flt.max_round)
    if flt.min_confidence is not None:
        where.append("l.confidence >= CAST(? AS FLOAT)")  # at the stored precision: an exported 0.9999 passes 0.9999
        params.append(flt.min_confidence)
    if flt.source is not None:
        known = {"gold", "review", "pseudo", *info["views"], *(r[0] for r in store.con.execute(
            "SELECT DISTINCT source FROM pseudo_labels WHERE run_id = ?", [run_id]).fetchall())}
        if flt.source not in known:  # a typo gave an empty file with exit 0
            raise StoreError(f"--source {flt.source!r} names no source of run {run_id} (one of "
                             f"{', '.join(sorted(known))})", store.path)
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
    if flt.items is not None:
        where.append("l.item_id IN (SELECT unnest(CAST(? AS VARCHAR[])))")
        params.append(list(flt.items))
    unestimated, unestimated_params = where + ["l.p_correct IS NULL"], list(params)
    if flt.min_p_correct is not None:
        where.append("(l.source IN ('gold', 'review') OR l.p_correct >= CAST(? AS FLOAT))")
        params.append(flt.min_p_correct)
    cond = ("WHERE " + " AND ".join(where)) if where else ""
    if flt.sample is not None and flt.sample < 1:
        raise StoreError(f"--sample must be 1 or more (items to draw), not {flt.sample}")
    cte = f"""
        WITH rv AS (SELECT item_id, label FROM reviewed_labels WHERE run_id = ?), l AS (
            SELECT i.item_id, i.row_idx, coalesce(rv.label, i.gold_label) AS label,
                   CASE WHEN rv.label IS NOT NULL THEN 'review' ELSE 'gold' END AS source,
                   CAST([] AS VARCHAR[]) AS source_views, CAST([] AS VARCHAR[]) AS agreeing_views,
                   CAST(NULL AS INTEGER) AS round, CAST(1.0 AS FLOAT) AS confidence,
                   CAST(1.0 AS FLOAT) AS p_correct
            FROM items i LEFT JOIN rv ON rv.item_id = i.item_id
            WHERE i.run_id = ? AND i.split = 'train' AND coalesce(rv.label, i.gold_label) IS NOT NULL
            UNION ALL
            SELECT p.item_id, i.row_idx, p.label, p.source, p.source_views,
                   coalesce((SELECT list(pr.view ORDER BY list_position(r.views, pr.view), pr.view)
                             FROM prediction_rows pr, runs r WHERE r.run_id = p.run_id
                               AND pr.run_id = p.run_id AND pr.round = p.round AND pr.row_idx = i.row_idx
                               AND pr.label = p.label), CAST([] AS VARCHAR[])) AS agreeing_views,
                   p.round, p.confidence, p.p_correct
            FROM pseudo_labels p JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id
            WHERE p.run_id = ? AND p.status = 'accepted'{disputed_unlabelled}
        )"""
    if count_unestimated:
        return f"{cte} SELECT count(*) FROM l WHERE {' AND '.join(unestimated)}", unestimated_params
    sample = ""
    if flt.sample is not None:
        # stratified: each label keeps its share, drawn by a seeded hash; exactly --sample rows
        counts = store.con.execute(f"{cte} SELECT l.label, count(*) FROM l {cond} GROUP BY l.label "
                                   "ORDER BY l.label NULLS LAST", params).fetchall()  # ties go by label
        quota = stratified_quota({label: int(c) for label, c in counts}, int(flt.sample))
        named = [label for label in quota if label is not None]
        sample = """QUALIFY row_number() OVER (PARTITION BY l.label ORDER BY hash(l.item_id, CAST(? AS BIGINT)))
                        <= CASE WHEN l.label IS NULL THEN ? ELSE coalesce(list_extract(CAST(? AS BIGINT[]),
                                list_position(CAST(? AS VARCHAR[]), l.label)), 0) END"""
        params.extend([int(flt.seed), quota.get(None, 0), [quota[label] for label in named], named])
    sql = f"""{cte}, chosen AS (
            SELECT l.* FROM l {cond} {sample}
        )
        SELECT l.item_id, l.label, l.source, l.source_views, l.agreeing_views, l.round, l.confidence,
               l.p_correct{fields}
        FROM chosen l JOIN {ident(f"data_{int(run_id)}")} d ON d.__row = l.row_idx
        ORDER BY {"list_position(CAST(? AS VARCHAR[]), l.item_id), " if flt.items is not None else ""}l.row_idx
    """
    if flt.items is not None:  # a review selection: in the order it was chosen
        params.append(list(flt.items))
    return sql, params
