"""Export a run's labelled dataset (gold, reviewed and accepted pseudo-labels) with provenance.

Columns: ``item_id``, ``label``, ``source`` (``gold``, ``review`` or the policy that accepted
the label),
``source_views`` (views whose picks made it), ``agreeing_views`` (views whose prediction in
that round gave the same label), ``round``, ``confidence``, ``p_correct`` (the estimated
probability that the label is right; 1.0 for gold and reviewed labels, empty when the run
estimated none), then the item's own fields.
Parquet output loads unchanged with ``datasets.load_dataset("parquet", data_files=...)``.
A review selection (``flt.items``) is written as a review file instead (:func:`review_file_select`):
``label`` empty for the reviewer's answer, cotrain's label and provenance beside it.

Exports are safe to open: a CSV cell (and header) that a spreadsheet would run as a formula
(it starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading ``'``, as
OWASP recommends for CSV injection (``escape_formulas=False`` turns this off); an existing
file is replaced only with ``force``; and the store itself (and its ``.wal``) and the input
data of any run in it are never written over, force or not (:func:`guard_output`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from store.atomic import replacing
from store.database import Store
from store.errors import StoreError
from store.exchange.query import FLAT_FORMATS, PROVENANCE, REVIEW_COLUMNS, ExportFilter, ExportFormat, export_query
from store.progress import progress_path
from store.sql import ident, idents, literal

class ExportCount(int):
    """The number of rows an export wrote; ``unestimated``: how many rows the ``min_p_correct``
    filter dropped because they carry no estimate (None when that filter was not given)."""

    unestimated: int | None

    def __new__(cls, rows: int, unestimated: int | None = None) -> ExportCount:
        self = super().__new__(cls, rows)
        self.unestimated = unestimated
        return self


def export_labels(store: Store, out: str | Path, fmt: ExportFormat | None = None,
                  flt: ExportFilter | None = None, *, force: bool = False,
                  escape_formulas: bool = True) -> ExportCount:
    """Write the labelled dataset to ``out``; return the number of rows written (with, when
    ``flt.min_p_correct`` is given, how many it dropped for lacking an estimate).

    ``hf`` / ``hf-parquet`` (a Hugging Face ``datasets`` folder or Parquet file with a
    ``ClassLabel``), ``label-studio`` and ``argilla`` (review tasks with each view's vote) are
    written by ``store.exchange.annotation``. An existing file (a non-empty folder for ``hf``) is
    replaced only with ``force``; the store and the runs' input data never are. CSV cells
    that a spreadsheet would run as formulas are escaped unless ``escape_formulas`` is False."""
    flt = flt or ExportFilter()
    out = Path(out)
    given, fmt = fmt, fmt or _format_from_name(out)
    check_output_folder(out)
    if fmt not in (*FLAT_FORMATS, "hf", "hf-parquet", "label-studio", "argilla"):
        raise StoreError(f"unknown export format '{fmt}' ({', '.join(FLAT_FORMATS)}, hf, hf-parquet, "
                         "label-studio, argilla)")
    guard_output(store, output_paths(out, fmt), force=force, folder=fmt == "hf")
    if given is not None:  # after the guard: "refusing to overwrite the input data" says more
        _check_suffix(out, given)
    unestimated = None
    if flt.min_p_correct is not None:
        count_sql, count_params = export_query(store, flt, count_unestimated=True)
        unestimated = int(store.scalar(count_sql, count_params))
    if fmt not in FLAT_FORMATS:
        from store.exchange.annotation import export_annotation

        return ExportCount(export_annotation(store, out, fmt, flt), unestimated)
    sql, params = export_query(store, flt, fingerprint=flt.items is not None)
    if flt.items is not None:  # a review selection: a review file, whose label is the reviewer's to fill
        sql, params = review_file_select(store, flt, sql, params)
    if fmt == "csv" and escape_formulas:  # the columns' names and types, without running the query
        shape = store.con.sql(f"SELECT * FROM ({sql}) LIMIT 0", params=params)
        sql = escaped_select(sql, shape.columns, shape.types)
    if fmt in ("json", "jsonl"):  # JSON has no Infinity or NaN: strict parsers refused the lines that held them
        shape = store.con.sql(f"SELECT * FROM ({sql}) LIMIT 0", params=params)
        sql = finite_select(sql, shape.columns, shape.types)
    options = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER", "jsonl": "FORMAT json",
               "json": "FORMAT json, ARRAY true"}[fmt]  # .json: one array, what json.load and pandas read
    with replacing([out]) as (tmp,):  # whole or not at all: a killed export left half a file, then refused it
        # USE_TMP_FILE false: to a file that exists, DuckDB writes its own tmp_<name> beside it first,
        # which a kill -9 left behind, visible and never removed
        written = store.con.execute(f"COPY ({sql}) TO {literal(str(tmp))} ({options}, USE_TMP_FILE false)",
                                    params).fetchone()
    return ExportCount(int(written[0]) if written else 0, unestimated)


def review_file_select(store: Store, flt: ExportFilter, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The export ``sql`` as a review file: ``label`` empty for the reviewer's answer, the task's
    fingerprint as ``cotrain_task`` (and, from ``export_query``, each item's as ``cotrain_item``),
    and cotrain's label and its provenance under the names the
    Label Studio tasks give them (:data:`REVIEW_COLUMNS`). With cotrain's label in ``label``, an
    import read every row a reviewer left alone as a human answer: every pseudo-label became gold."""
    from store.exchange.reviews import task_fingerprint

    run_id = flt.run_id if flt.run_id is not None else store.latest_run()
    task = task_fingerprint(list(store.run_info(int(run_id))["labels"]))
    renamed = ", ".join(f"{ident(c)} AS {ident(REVIEW_COLUMNS[c])}" if c in REVIEW_COLUMNS else ident(c)
                        for c in PROVENANCE[1:])
    return (f"SELECT item_id, CAST(NULL AS VARCHAR) AS label, CAST(? AS VARCHAR) AS cotrain_task, {renamed}, "
            f"* EXCLUDE ({idents(PROVENANCE)}) FROM ({sql})", [task, *params])


# ------------------------------------------------------------------ CSV formula injection
#: A cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV Injection"); one
#: starting with ``'`` is escaped too, so that reading an export back is unambiguous (``'=x`` is
#: always the escaped ``=x``, the value ``'=x`` is written ``''=x``).
FORMULA_START = r"^[-=+@\t\r']"
#: DuckDB types whose text a spreadsheet reads as a value (a number, true/false), never as a
#: formula; a negative number's leading ``-`` is its sign. Every other column is written as
#: text (lists and structs render as ``[...]`` / ``{...}``) and escaped, dates and times too:
#: a DATE of -infinity was written as a bare ``-infinity`` (a probe's finding).
_VALUE_TYPES = {"boolean", "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
                "uinteger", "ubigint", "uhugeint", "float", "double", "decimal", "uuid"}


def escape_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would run it as a formula, or when it
    starts with ``'`` itself (see ``FORMULA_START``)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", "'") else text


def escaped_select(sql: str, columns: Sequence[str], types: Sequence[Any]) -> str:
    """``sql`` wrapped so that every text cell (and header) a spreadsheet would run as a
    formula starts with ``'``: one vectorised ``CASE`` per text or nested column, in SQL."""
    return _per_column(sql, columns, types, _escaped_cell)


def _escaped_cell(expr: str, name: str, kind: Any) -> str:
    alias = ident(escape_formula(name))
    kind_id = str(getattr(kind, "id", kind)).lower()
    if kind_id in ("float", "double"):  # a spreadsheet reads -inf as a formula (#NAME?): written as text '-inf
        return f"CASE WHEN {expr} = '-infinity'::DOUBLE THEN '''-inf' ELSE CAST({expr} AS VARCHAR) END AS {alias}"
    if kind_id in _VALUE_TYPES:
        return f"{expr} AS {alias}"
    text = expr if str(kind).upper() == "VARCHAR" else f"CAST({expr} AS VARCHAR)"
    return (f"CASE WHEN regexp_matches({text}, {literal(FORMULA_START)}) THEN concat('''', {text}) "
            f"ELSE {text} END AS {alias}")


def finite_select(sql: str, columns: Sequence[str], types: Sequence[Any]) -> str:
    """``sql`` wrapped so that every non-finite float (inf, -inf, NaN), alone or inside lists,
    arrays, structs and maps, is NULL: JSON has no value for them."""
    return _per_column(sql, columns, types, lambda expr, name, kind: f"{_finite(expr, kind, 0)} AS {ident(name)}")


def _per_column(sql: str, columns: Sequence[str], types: Sequence[Any], cell: Callable[[str, str, Any], str]) -> str:
    """``sql`` wrapped, each column rewritten by ``cell(expression, name, type)``. Columns are
    addressed by position, so duplicate or hostile names change nothing."""
    inner = [f"c{i}" for i in range(len(columns))]
    exprs = [cell(f"q.{col}", str(name), kind) for name, col, kind in zip(columns, inner, types)]
    return f"SELECT {', '.join(exprs)} FROM ({sql}) AS q({', '.join(inner)})"


def _finite(expr: str, kind: Any, depth: int) -> str:
    """``expr`` (of DuckDB type ``kind``) with its non-finite floats NULL, or as it is when it holds none."""
    kid = getattr(kind, "id", "")
    if kid in ("float", "double"):
        return f"CASE WHEN isfinite({expr}) THEN {expr} END"
    if not _has_float(kind):
        return expr
    children = dict(kind.children)
    if kid in ("list", "array"):
        v = f"v{depth}"
        return f"list_transform({expr}, lambda {v}: {_finite(v, children['child'], depth + 1)})"
    if kid == "struct":
        fields = (f"{ident(n)} := {_finite(f'struct_extract({expr}, {literal(n)})', t, depth)}"
                  for n, t in kind.children)
        return f"struct_pack({', '.join(fields)})"
    if kid == "map":
        return f"map_from_entries(list_transform(map_entries({expr}), lambda e{depth}: struct_pack(key := " \
               f"e{depth}.key, value := {_finite(f'e{depth}.value', children['value'], depth + 1)})))"
    return expr


def _has_float(kind: Any) -> bool:
    kid = getattr(kind, "id", "")
    if kid in ("float", "double"):
        return True
    if kid in ("list", "array", "struct", "map"):
        return any(_has_float(t) for _, t in kind.children if hasattr(t, "id"))
    return False


# ------------------------------------------------------------------ what an export may write over
def output_paths(out: Path, fmt: str) -> list[Path]:
    """Every path an export in ``fmt`` writes (the review formats write a sidecar)."""
    if fmt == "label-studio":
        return [out, out.with_suffix(".label_config.xml")]
    if fmt == "argilla":
        return [out, out.with_suffix(".settings.json")]
    return [out]


def protected_paths(store: Store) -> list[tuple[Path, str, bool]]:
    """(path, what it is, is a folder) of what no output may replace: the store file, its
    write-ahead log and progress file, and the input data (files or image folders) of every run in the store."""
    out: list[tuple[Path, str, bool]] = []
    if store.path != ":memory:":
        db = Path(store.path).expanduser().resolve()
        out += [(db, "the store itself", False), (Path(str(db) + ".wal"), "the store's write-ahead log", False),
                (progress_path(db), "the store's progress file", False)]
    for run in store.runs():
        for key, f in zip(("train", "test"), run.get("input_files") or []):
            p = Path(str(f)).expanduser().resolve()
            out.append((p, f"run {run['run_id']}'s input data (data.{key})", p.is_dir()))
    return out


def image_input(store: Store, dest: Path) -> str | None:
    """What names ``dest`` as an input image, or None: a run whose ``image:`` column holds a
    path to it, absolute or relative to the data files' folders (as views resolve it without
    an ``image_root``, a config key the store does not read). Only values ending in its file
    name are resolved, so an export of a large pool scans one column once."""
    import re

    import duckdb

    for run in store.runs():
        files, table = [Path(str(f)).expanduser() for f in run.get("input_files") or []], run.get("data_table")
        if not run.get("image_fields") or not files or not table:
            continue
        folders = {f.resolve() if f.is_dir() else f.parent.resolve() for f in files}
        types = dict(store.con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                                       "table_name = ?", [table]).fetchall())
        for col in run["image_fields"]:
            t = str(types.get(col, ""))
            expr = ident(col) if t == "VARCHAR" else f"{ident(col)}.path" if t.startswith("STRUCT") and \
                re.search(r'[(,]\s*"?path"?\s+VARCHAR', t) else None
            if expr is None:
                continue
            try:
                values = store.con.execute(f"SELECT DISTINCT {expr} FROM {ident(table)} WHERE ends_with({expr}, ?)",
                                           [dest.name]).fetchall()
            except duckdb.Error:
                continue
            for (v,) in values:
                for folder in folders:
                    if _same(dest, (folder / Path(v).expanduser()).resolve()):  # any spelling, or a hard link
                        return f"run {run['run_id']}'s input image (column '{col}')"
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also a hard link or another spelling of the same file
    except OSError:
        return False


def check_output_folder(out: Path) -> None:
    """One line when ``out``'s folder is missing or is a file (``labels.csv/x.csv``)."""
    if not out.parent.exists():
        raise StoreError(f"output folder {out.parent} does not exist")
    if not out.parent.is_dir():
        raise StoreError(f"{out.parent} is a file, not a folder to write {out.name} in")


def guard_output(store: Store, paths: Sequence[str | Path], *, force: bool, folder: bool = False) -> None:
    """Refuse, with one line naming the path, to write any of ``paths`` when it is the store,
    its ``.wal``, a run's input file or lies inside a run's input folder (always), or when it
    already exists (unless ``force``; for a ``folder`` output: when it is a non-empty folder)."""
    protected = protected_paths(store)
    for given in paths:
        p = Path(given).expanduser()
        if str(given).strip() == "-":  # a file named '-' (an hf folder, with no suffix) where stdout was meant
            raise StoreError("'-' reads as standard output, which is not written to here; name a file (./- for a "
                             "file of that name)")
        if not str(given).strip() or p.resolve() == Path.cwd().resolve():  # Path("") and "./" are the working
            # folder: an hf export with --force would fill it
            what = "no output path given" if str(given).strip() in ("", ".") else f"{given} is the working folder"
            raise StoreError(f"{what} ({str(given)!r}); name a file (or, for hf, a folder of its own)")
        r = p.resolve()
        for q, what, is_dir in protected:
            same = r == q or _same(p, q)
            if same or (is_dir and q in r.parents):
                where = str(p) if r == p.absolute() else f"{p} (= {r})"
                raise StoreError(f"refusing to overwrite {what}{'' if same else ' (a path inside it)'}: {where}")
        image = image_input(store, p) if p.exists() else None  # a new file is no input image
        if image:
            raise StoreError(f"refusing to overwrite {image}: {p}")
        if folder and p.is_file():
            raise StoreError(f"{p} is a file; the hf format writes a save_to_disk folder there")
        if not folder and p.is_dir():
            raise StoreError(f"{p} is a folder; name a file to write")
        if p.exists() and not p.is_dir() and not p.is_file():  # /dev/null, a FIFO, a socket
            raise StoreError(f"{p} is not a regular file; name a file to write")
        if force:
            continue
        if folder:
            if p.is_dir() and any(p.iterdir()):
                raise StoreError(f"{p} exists and is not empty; the hf format writes a save_to_disk folder "
                                 "there (pass --force to write into it)")
        elif p.exists() or p.is_symlink():
            raise StoreError(f"{p} already exists; pass --force to overwrite it")


#: The formats a file name's suffix admits: ``--format parquet`` into ``x.csv`` wrote Parquet
#: bytes that a spreadsheet then failed on, silently.
_SUFFIX_FORMATS = {".parquet": ("parquet", "hf-parquet"), ".pq": ("parquet", "hf-parquet"), ".csv": ("csv",),
                   ".jsonl": ("jsonl",), ".ndjson": ("jsonl",), ".json": ("json", "jsonl", "label-studio", "argilla"),
                   # no export: `--format parquet --force` into the run's own config replaced it
                   ".yaml": (), ".yml": (), ".duckdb": (), ".wal": ()}


def _check_suffix(out: Path, fmt: str) -> None:
    admitted = _SUFFIX_FORMATS.get(out.suffix.lower())
    if admitted == ():
        raise StoreError(f"--format {fmt} into '{out.name}': a {out.suffix} file is a config or a store, not an "
                         "export; name the file for its format")
    if admitted is not None and fmt not in admitted:
        raise StoreError(f"--format {fmt} into '{out.name}': its suffix says {' or '.join(admitted)}; name the "
                         "file for its format, or drop --format")


def _format_from_name(out: Path) -> ExportFormat:
    suf = out.suffix.lower()
    if out.is_dir() or not suf:
        return "hf"
    if suf in (".parquet", ".pq"):
        return "parquet"
    if suf == ".json":  # JSON Lines here made a file that json.load, pandas and import-reviews refused
        return "json"
    if suf in (".jsonl", ".ndjson"):
        return "jsonl"
    if suf == ".csv":
        return "csv"
    raise StoreError(f"cannot tell the export format from '{out.name}'; pass --format "
                     "parquet|json|jsonl|csv|hf|hf-parquet|label-studio|argilla")
