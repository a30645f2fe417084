"""One contract per view kind: its ``Params`` model is the one place its parameters and their
defaults live; the config keeps the validated model and the view is built from it, once per
run; optional capabilities are protocols."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from orchestrator import api
from orchestrator.config import parse_config
from store.errors import ConfigError, ViewError
from tests import plugin_views
from tests.conftest import write_config
from views.base import Closeable, Plannable, RoundAware, ViewContext, ZeroShot
from views.registry import BUILTIN_KINDS, build_view, check_view, params_model, resolve_kind

#: The fewest parameters each built-in kind needs.
REQUIRED: dict[str, dict[str, Any]] = {"sklearn": {"column_prefix": "a_"}, "embedding": {"text": "t"},
                                       "vision": {"image": "image"}, "llm": {"fields": ["t"]},
                                       "graph": {"column_prefix": "a_"}}
CTX = ViewContext(labels=("neg", "pos"), seed=0)


def _plain(x: Any) -> Any:
    """A value as plain data, so a model and the view's copy of it compare."""
    if isinstance(x, BaseModel):
        return _plain(x.model_dump())
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def test_every_builtin_kind_declares_the_model_the_registry_names():
    assert set(REQUIRED) == set(BUILTIN_KINDS)
    for kind in BUILTIN_KINDS:
        assert resolve_kind(kind).Params is params_model(kind), kind


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_a_view_ends_up_with_its_params_defaults(kind: str):
    """No drift: every parameter the view was not given holds the model's default, and the
    constructor has no defaults of its own to drift from."""
    cls = resolve_kind(kind)
    sig = inspect.signature(cls.__init__)
    assert list(sig.parameters) == ["self", "name", "context", "params"]
    assert all(p.default is inspect.Parameter.empty for p in sig.parameters.values())
    model = cls.Params.model_validate(REQUIRED[kind])
    view = cls.from_params("v", CTX, **REQUIRED[kind])
    renamed = getattr(cls, "param_attrs", {})  # a parameter whose name a method of the view holds
    for key in cls.Params.model_fields:
        assert _plain(getattr(view, renamed.get(key, key))) == _plain(getattr(model, key)), f"{kind}.{key}"
    assert all(callable(getattr(view, key)) for key in renamed)


def test_the_config_keeps_the_validated_model_and_the_view_is_built_from_it(tmp_path: Path):
    cfg = parse_config(yaml.safe_load(write_config(tmp_path).read_text()))
    vc = cfg.views[0]
    assert isinstance(vc.validated, params_model("sklearn"))
    assert vc.view_params is vc.validated and vc.validated.estimator == "logistic_regression"
    assert vc.params == {"column_prefix": "a_"}  # what the run's snapshot stores is as written
    view = build_view(vc.name, vc.kind, vc.view_params, CTX)
    assert view.column_prefix == "a_" and view.calibration_cv == 3


@pytest.mark.parametrize(("kind", "params", "key"), [
    ("sklearn", {"column_prefix": "a_", "calibration": "platt"}, "calibration"),
    ("sklearn", {"column_prefix": "a_", "calibration_cv": 1}, "calibration_cv"),
    ("embedding", {"text": "t", "head": "svm"}, "head"),
    ("embedding", {"text": "t", "batch_size": 0}, "batch_size"),
    ("vision", {"image": "image", "resize": "squash"}, "resize"),
    ("vision", {"image": "image", "mean": [0.5, 0.5]}, "mean"),
    ("llm", {"fields": ["t"], "temperature": 3.0}, "temperature"),
    ("llm", {"fields": ["t"], "demonstrations": {"k": 0}}, r"demonstrations\.k"),
    ("graph", {"column_prefix": "a_", "alpha": 1.0}, "alpha"),
])
def test_a_bad_parameter_is_one_config_error_naming_its_key(kind: str, params: dict, key: str):
    data = {"task": {"labels": ["neg", "pos"]}, "data": {"train": "items.csv"},
            "views": [{"name": "a", "kind": kind, **params}, {"name": "b", "kind": "sklearn", "text": "t"}]}
    with pytest.raises(ConfigError, match=rf"'views\[0\]\.{key}'") as info:
        parse_config(copy.deepcopy(data))
    assert "\n" not in str(info.value)


def test_from_params_names_the_bad_key():
    with pytest.raises(ViewError, match=r"view 'v': head: Input should be"):
        resolve_kind("embedding").from_params("v", CTX, text="t", head="svm")
    with pytest.raises(ViewError, match=r"view 'v': unknown_key: unknown parameter"):
        resolve_kind("sklearn").from_params("v", CTX, text="t", unknown_key=1)


# ---------------------------------------------------------------- plug-ins
COUNTING = "tests.plugin_views:CountingView"
LEGACY = "tests.plugin_views:CountingLegacyView"


def test_plugin_params_model_is_its_declared_params_or_none():
    assert params_model(COUNTING) is plugin_views.CentroidParams
    assert params_model(LEGACY) is None


def test_a_plugin_with_params_is_validated_when_built_not_when_loaded():
    data = {"task": {"labels": ["neg", "pos"]}, "data": {"train": "items.csv"},
            "views": [{"name": "p", "kind": COUNTING, "colums": ["x"]}, {"name": "b", "kind": "sklearn", "text": "t"}]}
    vc = parse_config(data).views[0]  # loading a config imports no plug-in code
    assert vc.validated is None and vc.view_params == {"colums": ["x"]}
    with pytest.raises(ViewError, match=r"view 'p': colums: unknown parameter"):
        build_view("p", COUNTING, vc.view_params, CTX)
    with pytest.raises(ViewError, match=r"view 'p': bad parameters for kind .*unknown parameter 'colums'"):
        check_view("p", COUNTING, vc.view_params, CTX)  # a dry run: keys checked, nothing constructed
    with pytest.raises(ViewError, match=r"required parameter 'columns' is missing"):
        check_view("p", COUNTING, {}, CTX)
    view = build_view("p", COUNTING, {"columns": ["x"]}, CTX)
    assert view.columns == ["x"] and view.temperature == 1.0


def test_a_legacy_plugin_gets_keyword_parameters():
    view = build_view("q", LEGACY, {"columns": ["x"], "temperature": 2.0}, CTX)
    assert view.columns == ["x"] and view.temperature == 2.0
    with pytest.raises(ViewError, match="bad parameters for kind"):
        build_view("q", LEGACY, {"colums": ["x"]}, CTX)


def test_capabilities_are_protocols():
    llm = resolve_kind("llm").from_params("l", CTX, fields=["t"], model="openai/x")
    assert isinstance(llm, RoundAware) and isinstance(llm, Closeable) and isinstance(llm, Plannable)
    assert isinstance(llm, ZeroShot) and llm.zero_shot
    sk = resolve_kind("sklearn").from_params("s", CTX, text="t")
    assert isinstance(sk, RoundAware)  # a round's first large fit tunes its C (heads.RoundC)
    assert not any(isinstance(sk, p) for p in (Closeable, Plannable, ZeroShot))
    assert isinstance(plugin_views.FailingView("f", CTX, ["x"]), RoundAware)  # structural: no base class needed
    llm.close()


# ---------------------------------------------------------------- built once per run
@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(plugin_views.CountingView, "built", [])
    monkeypatch.setattr(plugin_views.CountingView, "fail_in_round", None)
    monkeypatch.setattr(plugin_views.CountingLegacyView, "built", [])
    return plugin_views


def _counting_config(tmp: Path) -> Path:
    cfg = write_config(tmp, max_rounds=3)
    data = yaml.safe_load(cfg.read_text())
    data["views"] = [{"name": "va", "kind": COUNTING, "columns": [f"a_{j}" for j in range(4)]},
                     {"name": "vb", "kind": LEGACY, "columns": [f"b_{j}" for j in range(4)]}]
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def _built(pv: Any) -> list[str]:
    return pv.CountingView.built + pv.CountingLegacyView.built


def test_a_new_run_builds_each_view_once(tmp_path: Path, counting):
    cfg = _counting_config(tmp_path)
    api.plan(cfg)  # a dry run constructs no plug-in view
    assert _built(counting) == []
    res = api.run(cfg)
    assert res.status == "finished" and res.n_rounds == 4
    assert _built(counting) == ["va", "vb"]


def test_a_resumed_run_builds_each_view_once(tmp_path: Path, counting):
    cfg = _counting_config(tmp_path)
    counting.CountingView.fail_in_round = 2
    with pytest.raises(RuntimeError, match="boom in round 2"):
        api.run(cfg)
    assert _built(counting) == ["va", "vb"]
    counting.CountingView.fail_in_round = None
    counting.CountingView.built.clear()
    counting.CountingLegacyView.built.clear()
    res = api.run(cfg)
    assert res.resumed and res.status == "finished"
    assert _built(counting) == ["va", "vb"]


def test_the_vision_encoder_loads_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("torch")
    image = pytest.importorskip("PIL.Image")
    monkeypatch.setattr(plugin_views, "ENCODER_LOADS", [])
    colours = {"red": (220, 20, 30), "green": (20, 200, 40), "blue": (30, 40, 210)}
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(24):
        name = list(colours)[i % 3]
        image.fromarray(np.full((8, 8, 3), colours[name], dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "label": name if i < 6 or i >= 18 else "",
                     "split": "test" if i >= 18 else "train", "hue": float(np.argmax(colours[name]))})
    pd.DataFrame(rows).to_csv(tmp_path / "items.csv", index=False)
    cfg = {"task": {"labels": list(colours)}, "data": {"train": "items.csv", "split_column": "split"},
           "views": [{"name": "clip", "kind": "vision", "image": "image", "image_size": 16,
                      "encoder": "tests.plugin_views:counting_colour_clip",
                      "tokenizer": "tests.plugin_views:colour_tokenizer"},
                     {"name": "hue", "kind": "sklearn", "columns": ["hue"]}],
           "cotrain": {"policy": "k_best", "k": 3, "max_rounds": 1}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert api.run(tmp_path / "c.yaml").status == "finished"
    assert plugin_views.ENCODER_LOADS == [1]
