"""Reviews: labels people gave in an annotation tool, read back as gold.

``import_reviews`` reads a Label Studio export (full JSON or JSON_MIN), an Argilla export
(``records.to_json`` / ``to_list``, nested or flattened) or a CSV of ``id,label`` (optional
``reviewer``, ``reviewed_at``), checks every record against the run, and in one transaction:

* files each review in ``reviews`` with the reviewer, the time, the file and record, and
  the item's label before it (gold, an earlier review, or a pseudo-label and its source);
* marks the run's accepted pseudo-labels of reviewed items ``confirmed`` or ``revoked``
  (kept, never deleted; ``reviewed_by`` names the review);
* reopens the run for ``rounds`` more rounds, so the next ``cotrain run`` trains on them.

A file with an unknown item, an unknown label, a held-out test item (its label is the
evaluation's truth), one item given two different labels (two records, or a Label Studio
task whose annotators disagree), or records exported from a different task is rejected
with a ``ReviewError`` naming the first bad record, and nothing is written.
"""
from __future__ import annotations

import csv
import getpass
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from store.database import Store, utcnow
from store.encoding import replace_bare_cr, utf8_problem
from store.errors import ReviewError
from store.queries import review_precision
from store.sql import ident

LABEL_QUESTION = "label"  # the question / control name cotrain's exports use


def task_fingerprint(labels: list[str]) -> str:
    """Identity of a task (its labels, in order), written into exported records so a review
    file from another task is recognised on import."""
    return hashlib.sha256(json.dumps(list(labels)).encode()).hexdigest()[:12]


@dataclass
class ParsedReview:
    row: int                     # 1-based record of the file
    item_id: str
    label: str
    reviewer: str | None
    reviewed_at: datetime | None
    task: str | None = None      # cotrain_task carried by the record, when it has one


@dataclass
class ReviewSummary:
    """What an import did: reviews filed, records skipped (no answer), outcomes, and per
    pseudo-label source how many reviewers confirmed or corrected; ``unchanged``: records
    that repeat the item's current review (the same file imported again), not filed."""

    run_id: int
    file_format: str
    imported: int
    skipped: int
    outcomes: dict[str, int] = field(default_factory=dict)   # confirmed | corrected | new
    by_source: list[dict[str, Any]] = field(default_factory=list)
    rounds_granted: int = 0
    unchanged: int = 0


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc).replace(tzinfo=None)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _who(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("email") or value.get("username") or value.get("id")
    return None if value in (None, "") else str(value)


def _choice(value: Any) -> str | None:
    """A single label from a Label Studio value: ``{"choices": [x]}``, ``[x]`` or ``x``."""
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        return str(value[0]) if len(value) == 1 else None
    return None if value in (None, "") else str(value)


def _ann_label(ann: dict[str, Any]) -> str | None:
    """The label a Label Studio annotation chose (cotrain's ``label`` question first), or None."""
    results = [r for r in ann.get("result") or [] if r.get("type") == "choices"]
    mine = [r for r in results if r.get("from_name") == LABEL_QUESTION] or results
    return _choice(mine[0].get("value")) if mine else None


# ------------------------------------------------------------------ readers
def _label_studio(tasks: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    out, skipped = [], 0
    for n, task in enumerate(tasks, start=1):
        data = task.get("data") or {}
        item = data.get("item_id", task.get("item_id"))
        anns = [a for a in (task.get("annotations") or task.get("completions") or [])
                if not a.get("was_cancelled")]
        if item is None:
            raise ReviewError("task has no data.item_id (was it exported by cotrain?)", path, row=n)
        if not anns:
            skipped += 1
            continue
        answered = [(a, lab) for a in anns if (lab := _ann_label(a)) is not None]
        if len({lab for _, lab in answered}) > 1:  # two annotators disagree: no silent winner
            said = "; ".join(f"{_who(a.get('completed_by')) or 'annotation ' + str(a.get('id'))}: {lab!r}"
                             for a, lab in answered[:3])
            raise ReviewError(f"the task's annotations disagree ({said}); settle it in the tool or delete all but "
                              "one annotation, then export again", path, row=n, item=str(item))
        ann = max(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
        label = _ann_label(ann)
        if label is None:
            skipped += 1
            continue
        out.append(ParsedReview(n, str(item), label, _who(ann.get("completed_by")),
                                _time(ann.get("updated_at") or ann.get("created_at")), data.get("cotrain_task")))
    return out, skipped


#: Columns only ``cotrain export``'s labelled dataset has: a file with them (and no
#: ``cotrain_label``) holds cotrain's own labels in ``label``, not a reviewer's answers.
_LABEL_EXPORT = {"source", "agreeing_views", "p_correct"}


def _refuse_label_export(columns: Any, path: str) -> None:
    """Refuse a file written by ``cotrain export`` without ``--select``: every row a reviewer
    left alone would be read as a human answer that confirms cotrain's label (a probe
    imported a whole export: 216 pseudo-labels became gold)."""
    names = {str(c).strip().lower() for c in columns}
    if _LABEL_EXPORT <= names and "cotrain_label" not in names:
        raise ReviewError("a cotrain label export, not a review file: its 'label' column holds cotrain's own "
                          "labels; export the items to review with --select (their 'label' is left for the "
                          "reviewer, cotrain's is in 'cotrain_label'), or import a file of id,label answers", path)


def _label_studio_min(rows: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    _refuse_label_export(rows[0], path)
    out, skipped = [], 0
    for n, row in enumerate(rows, start=1):
        if row.get("item_id") is None:
            raise ReviewError("record has no item_id (was it exported by cotrain?)", path, row=n)
        label = _choice(row.get(LABEL_QUESTION))
        if label is None:
            skipped += 1
            continue
        out.append(ParsedReview(n, str(row["item_id"]), label, _who(row.get("annotator")),
                                _time(row.get("updated_at") or row.get("created_at")), row.get("cotrain_task")))
    return out, skipped


def _argilla(records: list[dict[str, Any]], path: str) -> tuple[list[ParsedReview], int]:
    out, skipped = [], 0
    for n, rec in enumerate(records, start=1):
        meta = rec.get("metadata") or {}
        item = meta.get("item_id") or rec.get("id")
        if item is None:
            raise ReviewError("record has no id or metadata.item_id", path, row=n)
        if "responses" in rec:  # nested: {"label": [{"value", "user_id", "status"}]}
            answers = [(r.get("value"), r.get("user_id"), r.get("status", "submitted"))
                       for r in (rec.get("responses") or {}).get(LABEL_QUESTION, [])]
        else:  # flattened: "label.responses", "label.responses.users", "label.responses.status"
            vals = rec.get(f"{LABEL_QUESTION}.responses") or []
            users = rec.get(f"{LABEL_QUESTION}.responses.users") or [None] * len(vals)
            status = rec.get(f"{LABEL_QUESTION}.responses.status") or ["submitted"] * len(vals)
            answers = list(zip(vals, users, status))
        submitted = [a for a in answers if a[2] in (None, "submitted") and a[0] not in (None, "")]
        if not submitted:
            skipped += 1
            continue
        value, user, _ = submitted[-1]
        out.append(ParsedReview(n, str(item), str(value), _who(user), _time(rec.get("updated_at")),
                                meta.get("cotrain_task")))
    return out, skipped


def _csv(path: Path) -> tuple[list[ParsedReview], int]:
    problem = utf8_problem(path)
    if problem:
        raise ReviewError(f"cannot read the CSV: {problem}", str(path))
    # a CSV export carries every data column; a long text cell is no error
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    data, cr = replace_bare_cr(path.read_bytes())  # a CR inside a cell that pandas left unquoted
    out, skipped = [], 0
    with io.StringIO(data.decode("utf-8-sig"), newline="") as f:
        reader = csv.DictReader(f)

        def back(v: Any) -> Any:  # the CR a stand-in held while the reader split rows
            return v.replace(cr, "\r") if cr is not None and isinstance(v, str) else v

        try:
            cols = [back(c).strip().lower() for c in reader.fieldnames or []]
            _refuse_label_export(cols, str(path))
            id_col = next((c for c in ("item_id", "id") if c in cols), None)
            if id_col is None or "label" not in cols:
                raise ReviewError("a CSV of reviews needs columns 'id' (or 'item_id') and 'label'", str(path),
                                  row=1)
            for n, raw in enumerate(reader, start=1):
                # ids keep their exact text (an id may start or end with a space); import_reviews
                # falls back to the stripped text when the exact one is not an item
                exact = {back(k).strip().lower(): back(v) or "" for k, v in raw.items() if k is not None}
                row = {k: v.strip() for k, v in exact.items()}
                if not row.get(id_col):
                    raise ReviewError(f"empty '{id_col}'", str(path), row=n)
                if not row.get("label"):
                    skipped += 1
                    continue
                out.append(ParsedReview(n, exact[id_col], exact["label"], row.get("reviewer") or None,
                                        _time(row.get("reviewed_at")), row.get("cotrain_task") or None))
        except csv.Error as exc:
            raise ReviewError(f"cannot read the CSV at line {reader.line_num}: {exc}", str(path)) from None
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
    if not p.is_file():
        raise ReviewError("file not found", str(p))
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        return ("csv", *_csv(p))
    if p.suffix.lower() in (".parquet", ".pq"):  # a review file exported as Parquet, labels filled in
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(p).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise ReviewError(f"not a Parquet file: {str(exc).splitlines()[0]}", str(p)) from None
        if not rows:
            raise ReviewError("holds no records", str(p))
        return ("parquet", *_label_studio_min(rows, str(p)))
    problem = utf8_problem(p)
    if problem:
        raise ReviewError(f"not a JSON export: {problem}", str(p))
    text = p.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text) if p.suffix.lower() not in (".jsonl", ".ndjson") else _json_lines(text, p)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ReviewError(f"not a JSON export: {exc}", str(p)) from None
    if isinstance(data, dict):  # {"records": [...]} (Argilla to_dict-style wrappers)
        data = data.get("records", data.get("tasks", []))
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ReviewError("holds no records" if data == [] else
                          "expected a JSON list of records (Label Studio or Argilla export)", str(p))
    first = data[0]
    if "annotations" in first or "completions" in first:
        return ("label_studio", *_label_studio(data, str(p)))
    if "fields" in first or "responses" in first or f"{LABEL_QUESTION}.responses" in first:
        return ("argilla", *_argilla(data, str(p)))
    if "item_id" in first:
        return ("label_studio_min", *_label_studio_min(data, str(p)))
    raise ReviewError("unknown export: records have neither 'annotations' (Label Studio), "
                      "'responses' (Argilla) nor 'item_id' (Label Studio JSON_MIN)", str(p), row=1)


# ------------------------------------------------------------------ import
def _formula_escaped(text: str) -> bool:
    """Whether ``text`` is a cell that ``cotrain export`` escaped against spreadsheet formulas
    (``'`` before ``= + - @``, tab, CR or ``'``); unescaped only where the plain value is a known one."""
    return len(text) > 1 and text[0] == "'" and text[1] in "=+-@\t\r'"


def _resolve(text: str, known: Any) -> str:
    """A CSV cell as the value it names: without the ``'`` a CSV export put before ``= + - @``,
    tab, CR or ``'`` when that names a known value (an export writes the value ``'=x`` as
    ``''=x``, so ``'=x`` always stands for ``=x``), else exactly, else without surrounding
    spaces; as it is when none is known."""
    for cand in (text, text.strip()):
        if _formula_escaped(cand) and cand[1:] in known:
            return cand[1:]
        if cand in known:
            return cand
    return text.strip()


def import_reviews(store: Store, path: str | Path, run_id: int | None = None, reviewer: str | None = None,
                   then: Callable[[int, dict[str, Any]], int] | None = None) -> ReviewSummary:
    """Check and file the reviews of ``path`` against run ``run_id`` (default: the latest).

    ``then(run_id, run_info)``, when given, runs inside the same transaction once the reviews
    are filed (the caller's decision, e.g. reopening the run; the store takes none) and
    returns the rounds it granted; if it raises, nothing of the import is kept."""
    fmt, parsed, skipped = read_reviews(path)
    rid = run_id if run_id is not None else store.latest_run()
    if rid is None:
        raise ReviewError("the store holds no run to import reviews into", str(path))
    info = store.run_info(rid)
    labels = list(info["labels"])
    task = task_fingerprint(labels)
    if not parsed:
        raise ReviewError(f"no reviewed record in the file ({skipped} without an answer)", str(path))
    wanted = [r.item_id for r in parsed]
    if fmt == "csv":  # also the ids without the ' a CSV export put before a cell like =x, -x, @x,
        # and without the spaces around a cell that a spreadsheet may have added
        wanted += [r.item_id.strip() for r in parsed]
        wanted += [r.item_id.strip()[1:] for r in parsed if _formula_escaped(r.item_id.strip())]
    ids = pa.table({"item_id": pa.array(wanted, pa.string())})
    with store.registered(ids) as name:
        split = dict(store.con.execute(
            f'SELECT DISTINCT i.item_id, i.split FROM items i JOIN {ident(name)} f ON f.item_id = i.item_id'
            ' WHERE i.run_id = ?', [rid]).fetchall())
    known = set(split)
    if fmt == "csv":  # a CSV that started as a cotrain export reads back as the values it escaped
        for r in parsed:
            r.item_id = _resolve(r.item_id, known)
            r.label = _resolve(r.label, labels)
    seen: dict[str, ParsedReview] = {}
    for r in parsed:  # file order: the first bad record is the one named
        if r.task is not None and r.task != task:
            raise ReviewError(f"exported from a different task (task {r.task}; run {rid} is task {task}, labels "
                              f"{labels})", str(path), row=r.row, item=r.item_id)
        if r.item_id not in known:
            raise ReviewError(f"unknown item id: run {rid} has no such item", str(path), row=r.row, item=r.item_id)
        if r.label not in labels:
            raise ReviewError(f"label {r.label!r} is not one of the task's labels {labels}", str(path),
                              row=r.row, item=r.item_id)
        if split[r.item_id] == "test":
            raise ReviewError("a held-out test item: its label is what the run is evaluated against, which a review "
                              "may not change mid-run (correct it in the data file and start a new run)", str(path),
                              row=r.row, item=r.item_id)
        first = seen.setdefault(r.item_id, r)
        if first.label != r.label:
            raise ReviewError(f"reviewed twice in the file with different labels ({first.label!r} at record "
                              f"{first.row}, {r.label!r} here); keep one", str(path), row=r.row, item=r.item_id)
    now = utcnow()
    who = reviewer or getpass.getuser()
    state = _prior_state(store, rid, sorted(known))
    rows: list[tuple[Any, ...]] = []
    last_review: dict[str, int] = {}
    next_id = int(store.scalar("SELECT coalesce(max(review_id), 0) + 1 FROM reviews"))
    outcomes: dict[str, int] = {"confirmed": 0, "corrected": 0, "new": 0}
    unchanged = 0
    with store.transaction():
        for r in parsed:
            prior_label, prior_source, prior_views = state.get(r.item_id, (None, None, None))
            if prior_source == "review" and prior_label == r.label:  # said already: filing it again
                unchanged += 1  # counted a second "confirmed" and reopened the run for nothing
                continue
            outcome = "new" if prior_label is None else ("confirmed" if prior_label == r.label else "corrected")
            outcomes[outcome] += 1
            rows.append((next_id, rid, r.item_id, r.label, r.reviewer or who, r.reviewed_at, now, str(Path(path)),
                         fmt, r.row, prior_label, prior_source, prior_views, outcome))
            state[r.item_id] = (r.label, "review", None)
            last_review[r.item_id] = next_id
            next_id += 1
        if not rows:  # every record repeats its item's review: nothing to file, nothing to reopen for
            return ReviewSummary(rid, fmt, 0, skipped, outcomes, review_precision(store, rid), 0, unchanged)
        cols = ("review_id", "run_id", "item_id", "label", "reviewer", "reviewed_at", "imported_at", "source_file",
                "file_format", "file_row", "prior_label", "prior_source", "prior_views", "outcome")
        types = (pa.int64(), pa.int32(), pa.string(), pa.string(), pa.string(), pa.timestamp("us"),
                 pa.timestamp("us"), pa.string(), pa.string(), pa.int32(), pa.string(), pa.string(),
                 pa.list_(pa.string()), pa.string())
        store.insert_arrow("reviews", pa.table([pa.array(list(c), t) for c, t in zip(zip(*rows), types)],
                                               names=list(cols)))
        final = pa.table({"item_id": pa.array(list(last_review), pa.string()),
                          "review_id": pa.array(list(last_review.values()), pa.int64()),
                          "label": pa.array([state[i][0] for i in last_review], pa.string())})
        with store.registered(final) as name:
            store.con.execute(
                f"""UPDATE pseudo_labels p SET
                        status = CASE WHEN p.label = f.label THEN 'confirmed' ELSE 'revoked' END,
                        reviewed_by = f.review_id, status_changed_at = ?
                    FROM {ident(name)} f
                    WHERE p.run_id = ? AND p.item_id = f.item_id AND p.status = 'accepted'""", [now, rid])
        granted = then(rid, info) if then is not None else 0
    return ReviewSummary(rid, fmt, len(rows), skipped, outcomes, review_precision(store, rid), granted, unchanged)


def _prior_state(store: Store, run_id: int, item_ids: list[str]) -> dict[str, tuple[Any, Any, Any]]:
    """item -> (label, source, views) before this import: latest review, else gold, else the
    accepted pseudo-label."""
    ids = pa.table({"item_id": pa.array(item_ids, pa.string())})
    with store.registered(ids) as name:
        rows = store.con.execute(
            f"""SELECT i.item_id,
                       coalesce(rv.label, i.gold_label, p.label),
                       CASE WHEN rv.label IS NOT NULL THEN 'review' WHEN i.gold_label IS NOT NULL THEN 'gold'
                            ELSE p.source END,
                       CASE WHEN rv.label IS NULL AND i.gold_label IS NULL THEN p.source_views END
                FROM items i JOIN {ident(name)} f ON f.item_id = i.item_id
                LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id
                LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = i.item_id AND p.status = 'accepted'
                WHERE i.run_id = ?""", [run_id]).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}
