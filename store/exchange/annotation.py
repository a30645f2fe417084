"""Exports people load unchanged: Hugging Face ``datasets`` (``save_to_disk`` folder or
Parquet with a ``ClassLabel``), Label Studio import JSON with each view's vote as a
prediction, and Argilla v2 records with cotrain's label as a suggestion.

Every review record carries the item id and the task's fingerprint, so
``store.exchange.reviews.import_reviews`` can map answers back and refuse another task's file.
"""
from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow as pa

from store.atomic import replacing, replacing_folder, write_texts
from store.database import Store
from store.errors import StoreError
from store.exchange.query import ITEM_TABLE, PROVENANCE, ExportFilter, export_query, field_aliases
from store.media import resolve_source, stored_run_roots
from store.exchange.review_files import LABEL_QUESTION
from store.exchange.reviews import task_fingerprint
from store.sql import ident



def latest_votes(store: Store, run_id: int, item_ids: list[str]) -> dict[str, list[tuple[str, str, float]]]:
    """item -> [(view, label, confidence)], by view name, from each view's latest stored
    prediction of the item (abstentions are not votes)."""
    if not item_ids:
        return {}
    out: dict[str, list[tuple[str, str, float]]] = {}
    with store.registered(pa.table({"item_id": pa.array(item_ids, pa.string())})) as name:
        rows = store.con.execute(
            f"""SELECT p.item_id, p.view, arg_max(p.label, p.round), arg_max(p.confidence, p.round)
                FROM predictions p JOIN {ident(name)} f ON f.item_id = p.item_id
                WHERE p.run_id = ? AND p.label IS NOT NULL GROUP BY p.item_id, p.view ORDER BY p.view""",
            [run_id]).fetchall()
    for item, view, label, conf in rows:
        out.setdefault(item, []).append((view, label, float(conf)))
    return out


def image_value(value: Any, roots: Sequence[Path], *, must_exist: bool = False) -> str | None:
    """What a tool can open for an image cell: an absolute path, or a data URI for image
    bytes; None when the item has no image. ``must_exist`` (an ``hf`` export reads the
    file): a missing file is one line naming it, not ``FileNotFoundError``. A review tool may
    serve the images from elsewhere, so its exports write the path either way."""
    src = resolve_source(value, roots, "")
    if src.data is not None:
        return "data:image/png;base64," + base64.b64encode(src.data).decode() if src.data else None
    if must_exist and (src.path is None or not src.path.is_file()):
        raise StoreError(f"image {src.where} of an exported item is missing (moved or deleted since the run?)")
    return str(src.path)


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a cell (NaN becomes null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return value


def export_annotation(store: Store, out: Path, fmt: str, flt: ExportFilter) -> int:
    """Write ``fmt`` (hf | hf-parquet | label-studio | argilla) to ``out``; return the rows."""
    sql, params = export_query(store, flt, fingerprint=fmt in ("label-studio", "argilla"))
    table = store.con.sql(sql, params=params).to_arrow_table()
    run_id = flt.run_id if flt.run_id is not None else store.latest_run()
    info = store.run_info(run_id)
    labels = list(info["labels"])
    columns = [c for c in table.column_names if c not in (*PROVENANCE, "cotrain_item")]  # a fingerprint, no field
    exported = dict(field_aliases(store.data_columns(run_id), info["label_column"]))  # data name -> column
    text = [exported[c] for c in info["text_fields"] or [] if exported.get(c) in columns]
    images = [exported[c] for c in info["image_fields"] or [] if exported.get(c) in columns]
    roots = stored_run_roots(store.path, info["input_files"] or [])
    if fmt in ("hf", "hf-parquet"):
        if not table.num_rows:  # datasets' load_from_disk / load_dataset failed on the empty result
            raise StoreError(f"no row matches the filters, and an empty {fmt} dataset does not load; nothing "
                             "written (loosen the filters, or export csv/parquet, which may be empty)")
        _to_hf(table, labels, images, roots, out, fmt)
    elif fmt in ("label-studio", "argilla"):
        rows = table.to_pylist()
        votes = latest_votes(store, run_id, [r["item_id"] for r in rows])
        fields = text or images
        if not fields:  # a table's row (numbers, categories): every field, shown as one key-value table
            for r in rows:
                r[ITEM_TABLE] = {c: _plain(r.get(c)) for c in columns}
            fields = [ITEM_TABLE]
        task = task_fingerprint(labels)
        writer = _to_label_studio if fmt == "label-studio" else _to_argilla
        writer(rows, votes, labels, fields, images, roots, task, out)
    else:
        raise StoreError(f"unknown export format '{fmt}'")
    return table.num_rows


def _agent(row: dict[str, Any]) -> str:
    views = ",".join(row.get("source_views") or [])
    return f"cotrain:{row['source']}" + (f"({views})" if views else "")


# ------------------------------------------------------------------ Hugging Face
def _to_hf(table: pa.Table, labels: list[str], images: list[str], roots: Sequence[Path], out: Path,
           fmt: str) -> None:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StoreError("the Hugging Face export needs the datasets package: pip install datasets") from exc
    ds = datasets.Dataset(table)
    ds = ds.cast_column("label", datasets.ClassLabel(names=labels))
    for col in images:  # paths (made absolute), bytes or {bytes, path} structs become an Image feature
        kind = table.schema.field(col).type
        if pa.types.is_string(kind):
            ds = ds.map(lambda b, c=col: {c: [image_value(v, roots, must_exist=True) for v in b[c]]}, batched=True)
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            ds = ds.map(lambda b, c=col: {c: [None if v is None else {"bytes": v, "path": None} for v in b[c]]},
                        batched=True)
        elif not pa.types.is_struct(kind):
            continue
        ds = ds.cast_column(col, datasets.Image())
    if fmt == "hf":  # export_labels' guard_output has refused a non-empty folder unless forced
        with replacing_folder(out) as folder:
            ds.save_to_disk(str(folder))
    else:
        with replacing([out]) as (tmp,):
            ds.to_parquet(str(tmp))


# ------------------------------------------------------------------ Label Studio
def label_studio_config(labels: list[str], fields: list[str], images: list[str]) -> str:
    """A Label Studio labeling config: the item's fields and one Choices control named ``label``."""
    shown = [f'  <Image name={quoteattr(c)} value={quoteattr("$" + c)}/>' for c in images] + \
            [f'  <Table name={quoteattr(c)} value={quoteattr("$" + c)}/>' if c == ITEM_TABLE else
             f'  <Header value={quoteattr(c)}/>\n  <Text name={quoteattr(c)} value={quoteattr("$" + c)}/>'
             for c in fields if c not in images]
    target = (images or fields or ["item_id"])[0]
    choices = "\n".join(f"    <Choice value={quoteattr(lab)}/>" for lab in labels)
    return ("<View>\n" + "\n".join(shown) + f'\n  <Choices name="{LABEL_QUESTION}" toName={quoteattr(target)} '
            f'choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n')


def _to_label_studio(rows: list[dict[str, Any]], votes: dict[str, list[tuple[str, str, float]]], labels: list[str],
                     fields: list[str], images: list[str], roots: Sequence[Path], task: str, out: Path) -> None:
    target = (images or fields or ["item_id"])[0]

    def result(label: str) -> list[dict[str, Any]]:
        return [{"from_name": LABEL_QUESTION, "to_name": target, "type": "choices", "value": {"choices": [label]}}]

    tasks = []
    for r in rows:
        data = {"item_id": r["item_id"], "cotrain_task": task, "cotrain_item": r["cotrain_item"],
                "cotrain_label": r["label"],
                "cotrain_source": r["source"], "cotrain_confidence": _plain(r["confidence"]),
                "cotrain_p_correct": _plain(r["p_correct"])}
        for c in fields:
            data[c] = _plain(r.get(c))
        for c in images:
            data[c] = image_value(r.get(c), roots)
        preds = [{"model_version": _agent(r), "score": _plain(r["confidence"]), "result": result(r["label"])}
                 ] if r["label"] is not None else []  # a disputed item nobody labelled: only the views' votes
        preds += [{"model_version": view, "score": conf, "result": result(label)}
                  for view, label, conf in votes.get(r["item_id"], [])]
        tasks.append({"data": data, "predictions": preds})
    write_texts([(out, json.dumps(tasks, indent=1, default=str)),
                 (out.with_suffix(".label_config.xml"), label_studio_config(labels, fields, images))])


# ------------------------------------------------------------------ Argilla
def _shown_text(value: Any) -> str:
    """A text field's value as Argilla shows it; the item table (:data:`ITEM_TABLE`) as one
    ``name: value`` line per field (plain text, not markdown: nothing in a value renders)."""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {'' if v is None else v}" for k, v in value.items())
    return str(_plain(value))


def argilla_settings(labels: list[str], fields: list[str], images: list[str], views: list[str]) -> dict[str, Any]:
    """Dataset settings in the layout of Argilla's ``Settings.to_json``: the item's fields,
    a single-label question named ``label``, and metadata for provenance and votes."""
    terms = ["item_id", "cotrain_source", *[f"vote_{v}" for v in views]]
    return {
        "guidelines": "Check the suggested label (cotrain's); each view's vote is in the metadata.",
        "questions": [{"name": LABEL_QUESTION, "title": LABEL_QUESTION, "description": None, "required": True,
                       "settings": {"type": "label_selection", "visible_options": len(labels) if len(labels) >= 3
                                    else None, "options": [{"value": x, "text": x, "description": None}
                                                           for x in labels]}}],
        "fields": [{"name": c, "title": c, "required": True, "description": None,
                    "settings": {"type": "image"} if c in images else {"type": "text", "use_markdown": False}}
                   for c in [*images, *[f for f in fields if f not in images]]],
        "vectors": [],
        "metadata": [{"name": n, "title": n, "visible_for_annotators": True,
                      "settings": {"type": "terms", "values": None, "visible_for_annotators": True}} for n in terms]
                    + [{"name": n, "title": n, "visible_for_annotators": True,
                        "settings": {"type": "float", "min": 0.0, "max": 1.0, "visible_for_annotators": True}}
                       for n in ("cotrain_confidence", "cotrain_p_correct")],
        "allow_extra_metadata": True,
        "distribution": {"strategy": "overlap", "min_submitted": 1},
        "mapping": None,
    }


def _to_argilla(rows: list[dict[str, Any]], votes: dict[str, list[tuple[str, str, float]]], labels: list[str],
                fields: list[str], images: list[str], roots: Sequence[Path], task: str, out: Path) -> None:
    records = []
    views: list[str] = sorted({v for vs in votes.values() for v, _, _ in vs})
    for r in rows:
        shown = {c: image_value(r.get(c), roots) for c in images}
        shown.update({c: None if r.get(c) is None else _shown_text(r[c]) for c in fields if c not in images})
        meta = {"item_id": r["item_id"], "cotrain_task": task, "cotrain_item": r["cotrain_item"],
                "cotrain_source": r["source"],
                "cotrain_confidence": _plain(r["confidence"]), "cotrain_p_correct": _plain(r["p_correct"]),
                **{f"vote_{v}": f"{label} ({conf:.2f})" for v, label, conf in votes.get(r["item_id"], [])}}
        suggestion = {LABEL_QUESTION: {"value": r["label"], "score": _plain(r["confidence"]), "agent": _agent(r)}}
        records.append({"id": r["item_id"], "fields": shown, "metadata": meta,
                        "suggestions": suggestion if r["label"] is not None else {},
                        "responses": {}, "vectors": {}, "status": "pending", "_server_id": None})
    write_texts([(out, json.dumps(records, indent=1, default=str)),
                 (out.with_suffix(".settings.json"), json.dumps(argilla_settings(labels, fields, images, views),
                                                                 indent=1))])
