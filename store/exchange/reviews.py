"""Reviews: labels people gave in an annotation tool, read back as gold.

``import_reviews`` reads a review file (``store.exchange.review_files``: Label Studio,
Argilla, a review file from ``cotrain export --select``, or a CSV of ``id,label``), checks
every record against the run, and in one transaction:

* files each review in ``reviews`` with the reviewer, the time, the file and record, and
  the item's label before it (gold, an earlier review, or a pseudo-label and its source);
* marks the run's pseudo-labels of reviewed items ``confirmed`` or ``revoked`` by the
  item's latest review (kept, never deleted; ``reviewed_by`` names the review);
* reopens the run for ``rounds`` more rounds, so the next ``cotrain run`` trains on them.

A record that repeats its item's gold label, or its current review (the same label from the
same reviewer: the same file imported twice, or a duplicate in one file), is not filed: an
export of the run's own gold imported back turned its gold into reviews and reopened the run.

A file with an unknown item, an unknown label, a held-out test item (its label is the
evaluation's truth), one item given two different labels (two records, or a Label Studio
task whose annotators disagree), or records exported from a different task is rejected
with a ``ReviewError`` naming the first bad record, and nothing is written.
"""
from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from store.database import Store, utcnow
from store.errors import ReviewError, shown
from store.exchange.query import content_fingerprint, fingerprinted_columns
from store.exchange.review_files import read_reviews
from store.exchange.review_records import ParsedReview, checked_reviewer
from store.items import label_spelling
from store.queries import review_precision
from store.sql import ident



def task_fingerprint(labels: list[str]) -> str:
    """Identity of a task (its labels, in order), written into exported records so a review
    file from another task is recognised on import."""
    return hashlib.sha256(json.dumps(list(labels)).encode()).hexdigest()[:12]


@dataclass
class ReviewSummary:
    """What an import did: reviews filed, records skipped (no answer), outcomes, and per
    pseudo-label source how many reviewers confirmed or corrected; ``unchanged``: records
    that repeat the item's gold label, or its current review, label and reviewer (the same
    file imported again, a duplicate in one file, an export of the run's gold), not filed."""

    run_id: int
    file_format: str
    imported: int
    skipped: int
    outcomes: dict[str, int] = field(default_factory=dict)   # confirmed | corrected | new
    by_source: list[dict[str, Any]] = field(default_factory=list)
    rounds_granted: int = 0
    unchanged: int = 0
    gold_corrected: int = 0  # of ``corrected``: reviews that replace one of the run's gold labels


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
    if reviewer is not None:
        checked_reviewer(reviewer, lambda msg: ReviewError(f"--reviewer: {msg}"))
    fmt, parsed, skipped = read_reviews(path)
    rid = run_id if run_id is not None else store.latest_run()
    if rid is None:
        raise ReviewError("the store holds no run to import reviews into", str(path))
    info = store.run_info(rid)
    labels = list(info["labels"])
    task = task_fingerprint(labels)
    if not parsed:
        raise ReviewError(f"no reviewed record in the file ({skipped} without an answer)", str(path))
    # also the ids without surrounding spaces (a spreadsheet's or a hand-edited file's), and in a
    # CSV without the ' a CSV export put before a cell like =x, -x, @x
    wanted = [r.item_id for r in parsed] + [r.item_id.strip() for r in parsed]
    if fmt == "csv":
        wanted += [r.item_id.strip()[1:] for r in parsed if _formula_escaped(r.item_id.strip())]
    ids = pa.table({"item_id": pa.array(wanted, pa.string())})
    with store.registered(ids) as name:
        split = dict(store.con.execute(
            f'SELECT DISTINCT i.item_id, i.split FROM items i JOIN {ident(name)} f ON f.item_id = i.item_id'
            ' WHERE i.run_id = ?', [rid]).fetchall())
    known = set(split)
    for r in parsed:  # a CSV that started as a cotrain export reads back as the values it escaped
        if fmt == "csv":
            r.item_id, r.label = _resolve(r.item_id, known), _resolve(r.label, labels)
        elif r.item_id not in known:
            r.item_id = r.item_id.strip()
    contents = _contents(store, rid, fingerprinted_columns(store.data_columns(rid), info["label_column"]),
                         [r.item_id for r in parsed if r.content is not None and r.item_id in known])
    seen: dict[str, ParsedReview] = {}
    for r in parsed:  # file order: the first bad record is the one named
        if r.task is not None and r.task != task:
            raise ReviewError(f"exported from a different task (task {r.task}; run {rid} is task {task}, labels "
                              f"{labels})", str(path), row=r.row, item=r.item_id)
        if r.item_id not in known:
            raise ReviewError(f"unknown item id: run {rid} has no such item", str(path), row=r.row, item=r.item_id)
        if r.content is not None and contents[r.item_id] != r.content:
            raise ReviewError(f"the item's data is not what the reviewer saw (fingerprint {r.content} in the file, "
                              f"{contents[r.item_id]} in run {rid}): the file was exported from other data, or the "
                              "data changed since; export the items to review from this run again", str(path),
                              row=r.row, item=r.item_id)
        r.label = label_spelling(r.label, labels) or r.label  # '1.0' for label 1, as the data loader reads it
        if r.label not in labels:
            raise ReviewError(f"label {shown(r.label)} is not one of the task's labels {labels}", str(path),
                              row=r.row, item=r.item_id)
        if split[r.item_id] == "test":
            raise ReviewError("a held-out test item: its label is what the run is evaluated against, which a review "
                              "may not change mid-run (correct it in the data file and start a new run)", str(path),
                              row=r.row, item=r.item_id)
        first = seen.setdefault(r.item_id, r)
        if first.label != r.label:
            raise ReviewError(f"reviewed twice in the file with different labels ({shown(first.label)} at record "
                              f"{first.row}, {shown(r.label)} here); keep one", str(path), row=r.row, item=r.item_id)
    now = utcnow()
    who = reviewer or getpass.getuser()
    state = _prior_state(store, rid, sorted(known))
    rows: list[tuple[Any, ...]] = []
    last_review: dict[str, int] = {}
    next_id = int(store.scalar("SELECT coalesce(max(review_id), 0) + 1 FROM reviews"))
    outcomes: dict[str, int] = {"confirmed": 0, "corrected": 0, "new": 0}
    unchanged = gold_corrected = 0
    with store.transaction():
        for r in parsed:
            prior_label, prior_source, prior_views, prior_reviewer = state.get(r.item_id, (None, None, None, None))
            said = prior_label == r.label and (prior_source == "gold" or (  # the run's own gold, or the same
                prior_source == "review" and prior_reviewer == (r.reviewer or who)))  # review again
            if said:  # filing it again counted a second "confirmed" and reopened the run for nothing; another
                unchanged += 1  # reviewer's agreement is filed (the reviews table is the audit trail)
                continue
            outcome = "new" if prior_label is None else ("confirmed" if prior_label == r.label else "corrected")
            outcomes[outcome] += 1
            gold_corrected += outcome == "corrected" and prior_source == "gold"
            rows.append((next_id, rid, r.item_id, r.label, r.reviewer or who, r.reviewed_at, now, str(Path(path)),
                         fmt, r.row, prior_label, prior_source, prior_views, outcome))
            state[r.item_id] = (r.label, "review", None, r.reviewer or who)
            last_review[r.item_id] = next_id
            next_id += 1
        if not rows:  # every record repeats its item's review: nothing to file, and nothing to reopen for
            # unless reviews filed since the run's last round wait for it (an import with --rounds 0 before)
            waiting = store.scalar("SELECT count(*) FROM reviews WHERE run_id = ? AND imported_at > (SELECT "
                                   "coalesce(max(finished_at), TIMESTAMP '-infinity') FROM rounds WHERE run_id = ?)",
                                   [rid, rid])
            granted = then(rid, info) if then is not None and waiting and info["status"] == "finished" else 0
            return ReviewSummary(rid, fmt, 0, skipped, outcomes, review_precision(store, rid), granted, unchanged, 0)
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
                    WHERE p.run_id = ? AND p.item_id = f.item_id
                      AND (p.status = 'accepted' OR p.reviewed_by IS NOT NULL)""", [now, rid])
            # a pseudo-label an earlier review revoked is confirmed by a later one that agrees, and
            # the other way round: the latest review decides, as it decides the item's gold label
        granted = then(rid, info) if then is not None else 0
    return ReviewSummary(rid, fmt, len(rows), skipped, outcomes, review_precision(store, rid), granted, unchanged,
                         gold_corrected)


def _contents(store: Store, run_id: int, columns: list[str], item_ids: list[str]) -> dict[str, str]:
    """item -> its content fingerprint over ``columns`` in the run's data (``query.content_fingerprint``)."""
    if not item_ids:
        return {}
    fp = content_fingerprint(columns)
    ids = pa.table({"item_id": pa.array(sorted(set(item_ids)), pa.string())})
    with store.registered(ids) as name:
        return dict(store.con.execute(
            f"SELECT i.item_id, {fp} FROM items i JOIN {ident(name)} f ON f.item_id = i.item_id "
            f"JOIN {ident(f'data_{int(run_id)}')} d ON d.__row = i.row_idx WHERE i.run_id = ?", [run_id]).fetchall())


def _prior_state(store: Store, run_id: int, item_ids: list[str]) -> dict[str, tuple[Any, Any, Any, Any]]:
    """item -> (label, source, views, reviewer) before this import: latest review (and who gave
    it), else gold, else the accepted pseudo-label."""
    ids = pa.table({"item_id": pa.array(item_ids, pa.string())})
    with store.registered(ids) as name:
        rows = store.con.execute(
            f"""SELECT i.item_id,
                       coalesce(rv.label, i.gold_label, p.label),
                       CASE WHEN rv.label IS NOT NULL THEN 'review' WHEN i.gold_label IS NOT NULL THEN 'gold'
                            ELSE p.source END,
                       CASE WHEN rv.label IS NULL AND i.gold_label IS NULL THEN p.source_views END,
                       rv.reviewer
                FROM items i JOIN {ident(name)} f ON f.item_id = i.item_id
                LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id
                LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = i.item_id AND p.status = 'accepted'
                WHERE i.run_id = ?""", [run_id]).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
