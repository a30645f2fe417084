"""Views never read the label, id or split column (nor cotrain's ``__`` columns).

Before: ``column_prefix: l`` matched the ``label`` column, and with
``hist_gradient_boosting`` a run "succeeded" at test accuracy 1.000, since held-out rows
carry their gold label in that column."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from orchestrator import api
from store.errors import ConfigError, ViewError


def _project(tmp: Path, view: dict, **data: str) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"id": [f"i{k}" for k in range(n)],
                       "len_a": y + rng.normal(0, 1.2, n),   # weak: test accuracy well below 1
                       "b_1": y + rng.normal(0, 1.2, n),
                       "text": "x"})
    labels = np.where(y == 1, "pos", "neg").astype(object)
    df["label"] = np.where((np.arange(n) < 20) | (np.arange(n) >= 200), labels, None)
    df["split"] = np.where(np.arange(n) >= 200, "test", "train")
    # labels as numbers too, so a leaking numeric view could use them: l_code == label
    df.to_csv(tmp / "d.csv", index=False)
    cfg = {"task": {"labels": ["neg", "pos"]},
           "data": {"train": "d.csv", "id_column": "id", "split_column": "split", **data},
           "views": [view, {"name": "b", "kind": "sklearn", "column_prefix": "b_"}],
           "cotrain": {"max_rounds": 1, "policy": "threshold"}, "store": "s.duckdb"}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "c.yaml"


def test_a_prefix_never_matches_the_label_column(tmp_path: Path):
    cfg = _project(tmp_path, {"name": "l", "kind": "sklearn", "column_prefix": "l",
                              "estimator": "hist_gradient_boosting"})
    res = api.run(cfg)
    acc = res.final_metrics["l"]["test_accuracy"]
    assert acc is not None and acc < 0.9  # with the label as a feature it was 1.000
    from orchestrator.config import load_config
    from orchestrator.rounds import build_views

    views, fields = build_views(load_config(cfg), None, ["id", "len_a", "b_1", "text", "label", "split"], tmp_path)
    assert views[0].fields_ == ["len_a"] and "label" not in fields and "split" not in fields


@pytest.mark.parametrize("view,key", [
    ({"columns": ["label"]}, "data.label_column"),
    ({"columns": ["len_a", "split"]}, "data.split_column"),
    ({"columns": ["id"]}, "data.id_column"),
    ({"text": "label"}, "data.label_column"),
    ({"column_prefix": "lab"}, "data.label_column"),   # a prefix that matches only the label
    ({"columns": ["__row"]}, "an internal cotrain column"),
])
def test_naming_a_protected_column_is_one_line(tmp_path: Path, view: dict, key: str):
    cfg = _project(tmp_path, {"name": "l", "kind": "sklearn", **view})
    with pytest.raises(ViewError) as err:
        api.run(cfg)
    msg = str(err.value)
    assert "\n" not in msg and key in msg and msg.startswith("view 'l': reads '")
    assert not (tmp_path / "s.duckdb").exists()  # refused before a run row exists: the store it created is gone


def test_a_renamed_label_column_is_protected_too(tmp_path: Path):
    cfg = _project(tmp_path, {"name": "l", "kind": "sklearn", "columns": ["len_a"]})
    data = yaml.safe_load(cfg.read_text())
    df = pd.read_csv(tmp_path / "d.csv").rename(columns={"label": "b_gold"})
    df.to_csv(tmp_path / "d.csv", index=False)
    data["data"]["label_column"] = "b_gold"  # the other view's prefix b_ would match it
    cfg.write_text(yaml.safe_dump(data))
    res = api.run(cfg)
    assert res.final_metrics["b"]["test_accuracy"] < 0.9


def test_debate_fields_may_not_name_the_label(tmp_path: Path):
    cfg = _project(tmp_path, {"name": "l", "kind": "sklearn", "columns": ["len_a"]})
    data = yaml.safe_load(cfg.read_text())
    data["debate"] = {"fields": ["text", "label"], "agents": [{"name": "a1", "model": "openai/x",
                                                                "api_base": "http://127.0.0.1:9/v1"}]}
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        api.plan(cfg)
    assert "debate.fields" in str(err.value) and "'label'" in str(err.value)


@pytest.mark.parametrize("field", ["label", "split", "id"])
def test_a_standalone_debate_may_not_read_the_label_id_or_split_either(tmp_path: Path, field: str):
    """``cotrain debate CONFIG --items FILE`` read ``debate.fields`` unchecked: the agents were
    shown the gold label that then scored their verdicts' accuracy. Refused before any call,
    dry run or not, and no store is left behind."""
    cfg = _project(tmp_path, {"name": "l", "kind": "sklearn", "columns": ["len_a"]})
    data = yaml.safe_load(cfg.read_text())
    data["debate"] = {"fields": ["text", field], "agents": [{"name": "a1", "model": "openai/x",
                                                             "api_base": "http://127.0.0.1:9/v1"}]}
    cfg.write_text(yaml.safe_dump(data))
    items = tmp_path / "items.csv"
    pd.DataFrame({"id": ["x1"], "text": ["fine"], "label": ["pos"], "split": ["train"]}).to_csv(items, index=False)
    for dry in (True, False):
        with pytest.raises(ConfigError) as err:
            api.debate(cfg, items, dry_run=dry, store=tmp_path / "deb.duckdb")
        assert err.value.key == "debate.fields" and f"'{field}'" in str(err.value)
    assert not (tmp_path / "deb.duckdb").exists()
