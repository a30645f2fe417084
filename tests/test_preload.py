"""The views' modules are imported beside the data load (orchestrator.viewset.preloading_view_modules):
built-in kinds only, never user code, failures left to build_views, no thread left behind."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator import api
from orchestrator.config import parse_config
from orchestrator.viewset import preloading_view_modules
from store.errors import ViewError
from tests.conftest import LABELS

REPO = Path(__file__).resolve().parents[1]


def _cfg(views: list[dict]) -> dict:
    return {"task": {"labels": LABELS}, "data": {"train": "items.csv"}, "views": views}


def test_built_in_kinds_are_imported_and_plug_ins_are_not():
    """In a fresh interpreter: the sklearn kind's module is loaded by the block's end, the
    plug-in's module is not (it is user code: build_views imports it), and the thread is gone."""
    views = [{"name": "va", "kind": "sklearn", "column_prefix": "a_"},
             {"name": "cent", "kind": "tests.plugin_views:CentroidView"}]
    body = f"""
import json, sys, threading
from orchestrator.config import parse_config
from orchestrator.viewset import preloading_view_modules
cfg = parse_config({_cfg(views)!r}, base_dir=__import__("pathlib").Path("."))
before = "views.sklearn_view" in sys.modules
with preloading_view_modules(cfg):
    pass
print(json.dumps({{"before": before, "after": "views.sklearn_view" in sys.modules,
                  "plugin": "tests.plugin_views" in sys.modules,
                  "threads": [t.name for t in threading.enumerate() if t.name.startswith("cotrain-")]}}))
"""
    out = subprocess.run([sys.executable, "-c", body], cwd=REPO, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"before": False, "after": True, "plugin": False, "threads": []}


def test_a_failing_import_is_left_to_build_views(monkeypatch, tmp_path: Path):
    """The background import swallows the failure; building the views then names the view."""
    from views import registry

    monkeypatch.setitem(registry.BUILTIN_KINDS, "sklearn", "no_such_module_for_cotrain:View")
    cfg = parse_config(_cfg([{"name": "va", "kind": "sklearn", "column_prefix": "a_"}]), base_dir=tmp_path)
    with preloading_view_modules(cfg):
        pass
    assert not [t for t in threading.enumerate() if t.name == "cotrain-preload-views"]
    with pytest.raises(ViewError, match="no_such_module_for_cotrain"):
        registry.resolve_kind("sklearn")


def test_the_block_s_error_still_waits_for_the_thread(tmp_path: Path):
    cfg = parse_config(_cfg([{"name": "va", "kind": "sklearn", "column_prefix": "a_"}]), base_dir=tmp_path)
    with pytest.raises(RuntimeError, match="load failed"):
        with preloading_view_modules(cfg):
            raise RuntimeError("load failed")
    assert not [t for t in threading.enumerate() if t.name == "cotrain-preload-views"]


def _labels(store: Path) -> list[tuple]:
    from store.database import Store

    with Store(store, read_only=True) as st:
        return st.con.execute("SELECT item_id, label, round FROM pseudo_labels ORDER BY item_id").fetchall()


@pytest.mark.slow  # 11 s; test_frames keeps the in-memory and in-store runs' equal labels
def test_a_run_with_preloading_matches_one_without(tmp_path: Path, monkeypatch):
    """The labels do not depend on whether the modules were imported beside the load."""
    import contextlib

    from orchestrator import rounds
    from tests.conftest import write_config

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    api.run(write_config(tmp_path / "a"))
    monkeypatch.setattr(rounds, "preloading_view_modules", lambda cfg: contextlib.nullcontext())
    api.run(write_config(tmp_path / "b"))
    a, b = _labels(tmp_path / "a" / "run.duckdb"), _labels(tmp_path / "b" / "run.duckdb")
    assert a == b and len(a) > 0
