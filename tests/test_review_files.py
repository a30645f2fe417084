"""Review files of a malformed shape, and answers padded with whitespace, in every layout
``import-reviews`` reads (``store.exchange.review_files``).

A record that is no object, or a Label Studio / Argilla field of the wrong kind (an object
where a list is expected, a string where an object is), is refused with one line naming the
file, the record and the field; it was an AttributeError or TypeError that named neither.
Nothing of a refused file is stored. An answer's surrounding whitespace is trimmed in every
format, as a CSV's always was (a JSON ``" bee\\n"`` was refused as an unknown label)."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import api
from store.database import Store
from store.errors import ReviewError
from tests.conftest import synthetic_frame, write_config


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-round run; each test imports into a copy of its store."""
    tmp = tmp_path_factory.mktemp("run")
    api.run(write_config(tmp, synthetic_frame(n=120, n_test=30), max_rounds=1))
    return tmp / "run.duckdb"


@pytest.fixture
def store_copy(small_run: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """(a copy of the run's store, three train item ids without a gold label)."""
    dst = tmp_path / "run.duckdb"
    shutil.copy(small_run, dst)
    with Store(dst, read_only=True) as st:
        ids = [r[0] for r in st.con.execute("SELECT item_id FROM items WHERE gold_label IS NULL AND split = 'train'"
                                            " ORDER BY row_idx LIMIT 3").fetchall()]
    return dst, ids


def _filed(store: Path) -> list[tuple[Any, ...]]:
    with Store(store, read_only=True) as st:
        return st.con.execute("SELECT item_id, label, reviewer, file_format FROM reviews ORDER BY file_row").fetchall()


def _ls_task(item: str, label: Any = "ant", **ann: Any) -> dict[str, Any]:
    """A Label Studio task whose one annotation chose ``label``."""
    result = [{"type": "choices", "from_name": "label", "to_name": "text", "value": {"choices": [label]}}]
    return {"data": {"item_id": item}, "annotations": [{"id": 1, "result": result, **ann}]}


def _argilla(item: str, label: Any = "ant") -> dict[str, Any]:
    """An Argilla record (``to_list(flatten=False)``) with one submitted answer."""
    return {"id": item, "metadata": {"item_id": item},
            "responses": {"label": [{"value": label, "user_id": "u1", "status": "submitted"}]}}


def _flat(item: str, label: Any = "ant") -> dict[str, Any]:
    """A flattened Argilla record (``to_list(flatten=True)``) with one submitted answer."""
    return {"id": item, "label.responses": [label], "label.responses.users": ["u1"],
            "label.responses.status": ["submitted"]}


def _bad(record: Callable[[str], dict[str, Any]], **change: Any) -> Callable[[str], dict[str, Any]]:
    """``record`` with ``change`` made to its top level."""
    return lambda item: {**record(item), **change}


def _bad_result(item: str) -> dict[str, Any]:
    task = _ls_task(item)
    task["annotations"][0]["result"] = ["x"]
    return task


# (the second record, given the second item id; what the refusal says after "r.json row 2")
MALFORMED = {
    "record is a string": (lambda item: "oops", r": the record is a string, not an object"),
    "json_min record is a number": (lambda item: 5, r": the record is a number, not an object"),
    "annotations an object": (_bad(_ls_task, annotations={"a": 1}),
                              r" item '{}': 'annotations' is an object, not a list"),
    "annotation a string": (_bad(_ls_task, annotations=["x"]),
                            r" item '{}': 'annotations\[0\]' is a string, not an object"),
    "result item a string": (_bad_result, r" item '{}': 'annotations\[0\]\.result\[0\]' is a string, not an object"),
    "data a string": (_bad(_ls_task, data="str"), r": 'data' is a string, not an object"),
    "argilla responses a list": (_bad(_argilla, responses=[{"value": "cat"}]),
                                 r" item '{}': 'responses' is a list, not an object"),
    "argilla responses.label a string": (_bad(_argilla, responses={"label": "cat"}),
                                         r" item '{}': 'responses\.label' is a string, not a list"),
    "argilla responses.label item a string": (_bad(_argilla, responses={"label": ["cat"]}),
                                              r" item '{}': 'responses\.label\[0\]' is a string, not an object"),
    "argilla metadata a string": (_bad(_argilla, metadata="x"), r": 'metadata' is a string, not an object"),
    "flat argilla responses a string": (_bad(_flat, **{"label.responses": "cat"}),
                                        r" item '{}': 'label\.responses' is a string, not a list"),
}
FIRST = {"record is a string": _ls_task, "json_min record is a number": lambda item: {"item_id": item, "label": "ant"},
         "data a string": _ls_task, "argilla metadata a string": _argilla, "flat argilla responses a string": _flat}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_record_or_field_of_the_wrong_kind_is_one_line_naming_record_and_field(store_copy, tmp_path: Path,
                                                                                case: str):
    store, ids = store_copy
    second, says = MALFORMED[case]
    first = FIRST.get(case) or (_argilla if case.startswith("argilla") else _ls_task)
    path = tmp_path / "r.json"
    path.write_text(json.dumps([first(ids[0]), second(ids[1])]))
    with pytest.raises(ReviewError, match=f"^{re.escape(str(path))} row 2{says.format(re.escape(ids[1]))}$") as err:
        api.import_reviews(store, path)
    assert "\n" not in str(err.value) and err.value.row == 2
    assert _filed(store) == []  # the first, sound record is not filed either


def test_a_list_whose_first_record_is_no_object_names_record_1(store_copy, tmp_path: Path):
    store, _ = store_copy
    (tmp_path / "r.json").write_text("[[1, 2]]")
    with pytest.raises(ReviewError, match=r"r\.json row 1: the record is a list, not an object$"):
        api.import_reviews(store, tmp_path / "r.json")


@pytest.mark.parametrize("ids, newest", [((1, "b"), "b@x"), (("b", 1), "b@x"), ((9, 10), "10@x"), ((10, 9), "10@x")])
def test_agreeing_annotations_whose_ids_mix_numbers_and_text_are_one_review(store_copy, tmp_path: Path, ids, newest):
    """With no time to order them, the newest is the highest id: numbers in order, text after
    (1 against 'b' was a TypeError)."""
    store, items = store_copy
    task = _ls_task(items[0])
    task["annotations"] = [{**task["annotations"][0], "id": i, "completed_by": {"email": f"{i}@x"}} for i in ids]
    (tmp_path / "r.json").write_text(json.dumps([task]))
    assert api.import_reviews(store, tmp_path / "r.json", rounds=0).imported == 1
    assert _filed(store) == [(items[0], "ant", newest, "label_studio")]


def _csv(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "r.csv"
    path.write_text("id,label\n" + "".join(f"{i},{lab}\n" for i, lab in rows))
    return path


def _json(tmp_path: Path, records: list[Any]) -> Path:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    return path


# how each layout writes (item id, answer) pairs
LAYOUTS = {
    "csv": lambda tmp, rows: _csv(tmp, rows),
    "label_studio_min": lambda tmp, rows: _json(tmp, [{"item_id": i, "label": lab} for i, lab in rows]),
    "label_studio": lambda tmp, rows: _json(tmp, [_ls_task(i, lab) for i, lab in rows]),
    "argilla": lambda tmp, rows: _json(tmp, [_argilla(i, lab) for i, lab in rows]),
    "argilla flat": lambda tmp, rows: _json(tmp, [_flat(i, lab) for i, lab in rows]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_answers_are_trimmed_and_a_blank_one_is_no_answer_in_every_layout(store_copy, tmp_path: Path, layout: str):
    store, ids = store_copy
    path = LAYOUTS[layout](tmp_path, [(ids[0], " bee\t"), (ids[1], " cat "), (ids[2], " \t ")])
    rep = api.import_reviews(store, path, rounds=0)
    assert (rep.imported, rep.skipped) == (2, 1)
    assert [(i, lab) for i, lab, _, _ in _filed(store)] == [(ids[0], "bee"), (ids[1], "cat")]


def test_a_label_padded_with_a_newline_in_json_min_is_the_label(store_copy, tmp_path: Path):
    store, ids = store_copy
    rep = api.import_reviews(store, _json(tmp_path, [{"item_id": ids[0], "label": " bee\n"}]), rounds=0)
    assert (rep.file_format, rep.imported) == ("label_studio_min", 1)
    assert _filed(store)[0][:2] == (ids[0], "bee")


@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k != "csv"])
def test_an_id_padded_with_spaces_falls_back_to_the_trimmed_id_as_in_a_csv(store_copy, tmp_path: Path, layout: str):
    store, ids = store_copy
    rep = api.import_reviews(store, LAYOUTS[layout](tmp_path, [(f"{ids[0]} ", "bee")]), rounds=0)
    assert rep.imported == 1 and _filed(store)[0][:2] == (ids[0], "bee")


def test_a_csv_id_padded_with_spaces_falls_back_to_the_trimmed_id(store_copy, tmp_path: Path):
    store, ids = store_copy
    assert api.import_reviews(store, _csv(tmp_path, [(f" {ids[0]} ", " bee ")]), rounds=0).imported == 1
    assert _filed(store)[0][:2] == (ids[0], "bee")


@pytest.mark.parametrize(("text", "says"), [
    ('id,label\n{0},bee\n"{1},bee\n{2},bee\n', r"cannot read the CSV at line 4: unexpected end of data"),
    ('id,label\n\n\n"{0}"x,bee\n', r"cannot read the CSV at line 4: ',' expected after '\"'"),  # blank lines count
    ('id,label,reviewer\n{0},bee,"Bob "the builder""\n', r"cannot read the CSV at line 2: ',' expected after '\"'"),
    ('id,label\n{0},bee,extra\n', r"row 1: 1 more cell\(s\) than the header's 2 \(an unquoted comma\?\)"),
])
def test_a_malformed_csv_is_refused_whole_and_files_nothing(store_copy, tmp_path: Path, text: str, says: str):
    """A stray quote took every later row into one id field, which had no label and was
    skipped: the import said 1 review filed and exited 0. A row with more cells than the header
    (an unquoted comma) was read as its first two. Both are now one line, and nothing is filed."""
    store, ids = store_copy
    path = tmp_path / "r.csv"
    path.write_text(text.format(*ids[:3]), encoding="utf-8")
    with pytest.raises(ReviewError, match=says):
        api.import_reviews(store, path, rounds=0)
    assert _filed(store) == []


def test_blank_cells_past_the_header_are_no_loss(store_copy, tmp_path: Path):
    """A spreadsheet pads a row with empty cells; only a cell that holds something is refused."""
    store, ids = store_copy
    path = tmp_path / "r.csv"
    path.write_text(f"id,label\n{ids[0]},bee,\n{ids[1]},bee, ,\n", encoding="utf-8")
    assert api.import_reviews(store, path, rounds=0).imported == 2


def test_a_float_spelling_of_an_integer_label_is_that_label(tmp_path: Path):
    """The data loader reads a label column pandas wrote as floats (``1.0``) as the task's
    label ``1``; a review file written the same way was refused (a probe's finding). An exact
    spelling still wins, and ``1.5`` is still no label."""
    df = synthetic_frame(n=90, n_gold=6, n_test=30)
    df["label"] = df["label"].map({"ant": 0, "bee": 1, "cat": 2}).astype("Int64")
    cfg = write_config(tmp_path, df, max_rounds=0)
    data = yaml.safe_load(cfg.read_text())
    data["task"]["labels"] = [0, 1, 2]
    cfg.write_text(yaml.safe_dump(data))
    api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        ids = [r[0] for r in st.con.execute("SELECT item_id FROM items WHERE gold_label IS NULL AND split = 'train'"
                                            " ORDER BY row_idx LIMIT 2").fetchall()]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"item_id,label\n{ids[0]},1.5\n")
    with pytest.raises(ReviewError, match=r"label '1\.5' is not one of the task's labels"):
        api.import_reviews(tmp_path / "run.duckdb", bad)
    good = tmp_path / "reviews.jsonl"
    good.write_text("".join(json.dumps({"item_id": i, "label": lab}) + "\n" for i, lab in zip(ids, ["1.0", "2.00"])))
    api.import_reviews(tmp_path / "run.duckdb", good)
    assert [(r[0], r[1]) for r in _filed(tmp_path / "run.duckdb")] == [(ids[0], "1"), (ids[1], "2")]
