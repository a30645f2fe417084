"""Review files: reading what people answered, in any of the layouts ``import-reviews`` takes.

A Label Studio export (full JSON or JSON_MIN), an Argilla export (``records.to_json`` /
``to_list``, nested or flattened), a review file written by ``cotrain export --select`` with
its ``label`` filled in (CSV, JSON, JSON Lines or Parquet), or a CSV of ``id,label``
(optional ``reviewer``, ``reviewed_at``). Each reader gives the records that carry an answer
as :class:`ParsedReview` and counts those that do not; a file cotrain wrote as a labelled
dataset (its ``label`` is cotrain's own) is refused. Checking the records against a run and
filing them is ``store.exchange.reviews``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from store.encoding import replace_bare_cr, utf8_problem
from store.errors import ReviewError, shown
from store.exchange.review_records import (ParsedReview, choice_of, field_of, kind_of, record_errors, reviewer_of,
                                           text_of, time_of)

LABEL_QUESTION = "label"  # the question / control name cotrain's exports use


def _ann_label(ann: dict[str, Any], name: str) -> str | None:
    """The label Label Studio annotation ``name`` chose (cotrain's ``label`` question first), or None."""
    results = [r for r in field_of(ann, "result", list, f"{name}.result", True) if r.get("type") == "choices"]
    mine = [r for r in results if r.get("from_name") == LABEL_QUESTION] or results
    return choice_of(mine[0].get("value")) if mine else None


# ------------------------------------------------------------------ readers
def _label_studio(tasks: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    out, skipped = [], 0
    for n, task in enumerate(tasks, start=1):
        with record_errors(path, n, None):
            data = field_of(task, "data", dict)
        item = data.get("item_id", task.get("item_id"))
        if item is None:
            raise ReviewError("task has no data.item_id (was it exported by cotrain?)", path, row=n)
        with record_errors(path, n, item):
            key = "annotations" if task.get("annotations") or not task.get("completions") else "completions"
            named = [(f"{key}[{i}]", a) for i, a in enumerate(field_of(task, key, list, objects=True))
                     if not a.get("was_cancelled")]
            if not named:
                skipped += 1
                continue
            answered = [(a, lab) for name, a in named if (lab := _ann_label(a, name)) is not None]
            if len({lab for _, lab in answered}) > 1:  # two annotators disagree: no silent winner
                said = "; ".join(f"{reviewer_of(a.get('completed_by')) or 'annotation ' + str(a.get('id'))}: {lab!r}"
                                 for a, lab in answered[:3])
                raise ReviewError(f"the task's annotations disagree ({said}); settle it in the tool or delete all but "
                                  "one annotation, then export again", path, row=n, item=str(item))
            name, ann = max(named, key=lambda na: (str(na[1].get("updated_at") or na[1].get("created_at") or ""),
                                                   str(na[1].get("id") or 0).zfill(20)))  # ids 1, 'b': no TypeError
            label = _ann_label(ann, name)
            if label is None:
                skipped += 1
                continue
            out.append(ParsedReview(n, str(item), label, reviewer_of(ann.get("completed_by")),
                                    time_of(ann.get("updated_at") or ann.get("created_at")), data.get("cotrain_task"),
                                    data.get("cotrain_item") or None))
    return out, skipped


#: What a Parquet review file is read for: the answers, and what tells the layout.
_PARQUET_COLUMNS = {"item_id", LABEL_QUESTION, "reviewer", "reviewed_at", "cotrain_task", "cotrain_item",
                    "cotrain_label", "annotator", "annotation_id", "created_at", "updated_at", "source",
                    "agreeing_views", "p_correct"}
#: Columns only ``cotrain export``'s labelled dataset has: a file with them (and no
#: ``cotrain_label``) holds cotrain's own labels in ``label``, not a reviewer's answers.
_LABEL_EXPORT = {"source", "agreeing_views", "p_correct"}


def _label_export(columns: Any) -> bool:
    """Whether a file was written by ``cotrain export`` without ``--select`` (a labelled dataset)."""
    names = {str(c).strip().lower() for c in columns}
    return _LABEL_EXPORT <= names and "cotrain_label" not in names


def _refuse_cotrains_label(source: Any, path: str, row: int, item: Any) -> None:
    """In a labelled-dataset export, refuse a row whose label cotrain made (its ``source`` is
    neither ``gold`` nor ``review``): read as a reviewer's answer, every row a reviewer left
    alone confirmed cotrain's label (a probe imported a whole export: 216 pseudo-labels became
    gold). Rows of human labels (``export --source review``) carry over to another run."""
    if str(source or "").strip() not in ("gold", "review"):
        raise ReviewError(f"a cotrain label export, not a review file: this row's 'label' is cotrain's own (source "
                          f"{source!r}); export the items to review with --select (their 'label' is left for the "
                          "reviewer, cotrain's is in 'cotrain_label'), or import a file of id,label answers", path,
                          row=row, item=None if item is None else str(item))


def _is_review_file(first: dict[str, Any]) -> bool:
    """Whether a record comes from a review file ``cotrain export --select`` wrote (it carries
    the task's fingerprint at its top level; a Label Studio JSON_MIN record does too, from the
    task's data, but also its annotation's id)."""
    return "item_id" in first and "cotrain_task" in first and "annotation_id" not in first


def _no_label(columns: Any) -> str:
    """The message for records without a ``label`` column, naming a column that differs only in
    case (a CSV's header is read without case; JSON keys and Parquet columns are exact)."""
    near = [str(c) for c in columns if str(c).strip().lower() == LABEL_QUESTION]
    hint = f": its {shown(near[0])} differs only in case or spaces; rename it 'label'" if near else ""
    return f"no record has a 'label' (the reviewer's answer){hint}"


def _flat_records(rows: list[dict[str, Any]], path: str, who: str, when: tuple[str, ...],
                  no_id: str) -> tuple[list[ParsedReview], int]:
    """Records that name their item at the top level: ``item_id``, ``label`` (empty: not
    answered), the reviewer under ``who`` and the time under the first of ``when`` that is set;
    a labelled-dataset export's rows whose label cotrain made are refused."""
    if not any(LABEL_QUESTION in row for row in rows):
        raise ReviewError(_no_label(rows[0]), path)
    exported = _label_export(rows[0])
    out, skipped = [], 0
    for n, row in enumerate(rows, start=1):
        if row.get("item_id") is None:
            raise ReviewError(no_id, path, row=n)
        if exported:
            _refuse_cotrains_label(row.get("source"), path, n, row.get("item_id"))
        with record_errors(path, n, row.get("item_id")):
            label = choice_of(row.get(LABEL_QUESTION))
            if label is None:
                skipped += 1
                continue
            at = next((row.get(k) for k in when if row.get(k)), None)
            out.append(ParsedReview(n, str(row["item_id"]), label, reviewer_of(row.get(who)), time_of(at),
                                    row.get("cotrain_task"), row.get("cotrain_item") or None))
    return out, skipped


def _review_file(rows: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    """A review file's answers: ``item_id``, ``label``, optional ``reviewer`` and ``reviewed_at``; no other
    key is read, every other being the item's own (a data column ``created_at`` is no review time)."""
    return _flat_records(rows, path, "reviewer", ("reviewed_at",), "record has no item_id")


def _label_studio_min(rows: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    """Label Studio's JSON_MIN: the task's data and the answer at the top level."""
    return _flat_records(rows, path, "annotator", ("updated_at", "created_at"),
                         "record has no item_id (was it exported by cotrain?)")


def _argilla(records: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    out, skipped = [], 0
    for n, rec in enumerate(records, start=1):
        with record_errors(path, n, None):
            meta = field_of(rec, "metadata", dict)
        item = meta.get("item_id") or rec.get("id")
        if item is None:
            raise ReviewError("record has no id or metadata.item_id", path, row=n)
        with record_errors(path, n, item):
            if "responses" in rec:  # nested: {"label": [{"value", "user_id", "status"}]}
                answers = [(r.get("value"), r.get("user_id"), r.get("status", "submitted")) for r in field_of(
                    field_of(rec, "responses", dict), LABEL_QUESTION, list, f"responses.{LABEL_QUESTION}", True)]
            else:  # flattened: "label.responses", "label.responses.users", "label.responses.status"
                vals = field_of(rec, key := f"{LABEL_QUESTION}.responses", list)  # a string was read char by char
                users = field_of(rec, f"{key}.users", list) or [None] * len(vals)
                status = field_of(rec, f"{key}.status", list) or ["submitted"] * len(vals)
                answers = list(zip(vals, users, status))
            submitted = [a for a in answers if a[2] in (None, "submitted") and a[0] not in (None, "")]
            if not submitted:
                skipped += 1
                continue
            value, user, _ = submitted[-1]
            label = choice_of(value)  # a multi-label question's list: one label or a refusal
            if label is None:
                skipped += 1
                continue
            out.append(ParsedReview(n, str(item), label, reviewer_of(user), time_of(rec.get("updated_at")),
                                    meta.get("cotrain_task"), meta.get("cotrain_item") or None))
    return out, skipped


def _csv(path: Path) -> tuple[list[ParsedReview], int]:
    if problem := utf8_problem(path):
        raise ReviewError(f"cannot read the CSV: {problem}", str(path))
    # a CSV export carries every data column; a long text cell is no error
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    data, cr = replace_bare_cr(path.read_bytes())  # a CR inside a cell that pandas left unquoted
    out, skipped = [], 0
    with io.StringIO(data.decode("utf-8-sig"), newline="") as f:
        reader = csv.DictReader(f, strict=True)  # a stray quote took the rest of the file into one id

        def back(v: Any) -> Any:  # the CR a stand-in held while the reader split rows
            return v.replace(cr, "\r") if cr is not None and isinstance(v, str) else v

        try:
            cols = [back(c).strip().lower() for c in reader.fieldnames or []]
            exported = _label_export(cols)
            id_col = next((c for c in ("item_id", "id") if c in cols), None)
            if id_col is None or "label" not in cols:
                raise ReviewError("its header needs columns 'id' (or 'item_id') and 'label'; it has "
                                  f"{', '.join(shown(c, 40) for c in cols[:8]) or 'none'}", str(path))
            for n, raw in enumerate(reader, start=1):
                if any(str(v).strip() for v in raw.get(None) or ()):  # more cells than the header: an unquoted
                    # comma moved the label (blank cells past the header, as a spreadsheet pads a row, are no loss)
                    raise ReviewError(f"{len(raw[None])} more cell(s) than the header's {len(cols)} (an unquoted "
                                      "comma?)", str(path), row=n)
                # ids keep their exact text (an id may start or end with a space); import_reviews
                # falls back to the stripped text when the exact one is not an item
                exact = {back(k).strip().lower(): back(v) or "" for k, v in raw.items() if k is not None}
                row = {k: text_of(v) for k, v in exact.items()}
                if not row.get(id_col):
                    raise ReviewError(f"empty '{id_col}'", str(path), row=n)
                if exported:
                    _refuse_cotrains_label(row.get("source"), str(path), n, exact[id_col])
                if not row.get("label"):
                    skipped += 1
                    continue
                with record_errors(str(path), n, exact[id_col]):
                    out.append(ParsedReview(n, exact[id_col], row["label"], reviewer_of(row.get("reviewer")),
                                            time_of(row.get("reviewed_at")), row.get("cotrain_task") or None,
                                            row.get("cotrain_item") or None))
        except csv.Error as exc:
            # the csv reader's own count: the line it stopped on (DictReader's lags, and skips blank lines)
            raise ReviewError(f"cannot read the CSV at line {reader.reader.line_num}: {exc}", str(path)) from None
    return out, skipped


def _json_lines(text: str, path: Path) -> list[Any]:
    """Records of a JSONL file, split at LF only (U+2028 and the like may sit inside a string);
    a bad record names its line of the file."""
    records = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                raise ReviewError(f"not a JSON export: line {n}: nested too deeply", str(path)) from None
            raise ReviewError(f"not a JSON export: line {n}, column {exc.colno}: {exc.msg}", str(path)) from None
    return records


def read_reviews(path: str | Path) -> tuple[str, list[ParsedReview], int]:
    """(format, reviews, records skipped for having no answer) of a review file."""
    p = Path(path)
    if p.is_dir():
        raise ReviewError("is a folder, not a review file", str(p))
    if not p.is_file():
        raise ReviewError("file not found", str(p))
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head[8:12] == b"DUCK":  # a DuckDB file's magic bytes: the store given twice, or as the review file
        raise ReviewError("a DuckDB database (a cotrain store?), not a review file: give the store first, then "
                          "the file people answered", str(p))
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        return ("csv", *_csv(p))
    if p.suffix.lower() in (".parquet", ".pq"):  # a review file exported as Parquet, labels filled in
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:  # the columns a review is read from, not the items' own (images, long texts)
            names = set(pq.read_schema(p).names)
            if LABEL_QUESTION not in names:  # read below, the file's other columns are not seen
                raise ReviewError(_no_label(names), str(p))
            rows = pq.read_table(p, columns=sorted(names & _PARQUET_COLUMNS)).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise ReviewError(f"not a Parquet file: {str(exc).splitlines()[0]}", str(p)) from None
        if not rows:
            raise ReviewError("holds no records", str(p))
        if _is_review_file(rows[0]):
            return ("parquet", *_review_file(rows, str(p)))
        return ("parquet", *_label_studio_min(rows, str(p)))
    if problem := utf8_problem(p):
        raise ReviewError(f"not a JSON export: {problem}", str(p))
    text = p.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text) if p.suffix.lower() not in (".jsonl", ".ndjson") else _json_lines(text, p)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ReviewError(f"not a JSON export: {exc}", str(p)) from None
    if isinstance(data, dict):  # {"records": [...]} (Argilla to_dict-style wrappers)
        data = data.get("records", data.get("tasks", []))
    if not isinstance(data, list) or not data:
        raise ReviewError("holds no records" if data == [] else
                          "expected a JSON list of records (Label Studio or Argilla export)", str(p))
    if bad := next((n for n, rec in enumerate(data, start=1) if not isinstance(rec, dict)), 0):  # no rec.get
        raise ReviewError(f"the record is {kind_of(data[bad - 1])}, not an object", str(p), row=bad)
    first = data[0]
    if _is_review_file(first):  # before the keys below: an item's field may be named 'annotations'
        return ("jsonl" if p.suffix.lower() in (".jsonl", ".ndjson") else "json", *_review_file(data, str(p)))
    if "annotations" in first or "completions" in first:
        return ("label_studio", *_label_studio(data, str(p)))
    if "fields" in first or "responses" in first or f"{LABEL_QUESTION}.responses" in first:
        return ("argilla", *_argilla(data, str(p)))
    if "item_id" in first:
        return ("label_studio_min", *_label_studio_min(data, str(p)))
    raise ReviewError("unknown export: records have neither 'annotations' (Label Studio), "
                      "'responses' (Argilla) nor 'item_id' (Label Studio JSON_MIN)", str(p), row=1)


__all__ = ["LABEL_QUESTION", "ParsedReview", "read_reviews"]
