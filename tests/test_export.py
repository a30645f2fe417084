"""Export round-trip: Parquet (loads with HF datasets), JSONL, CSV; provenance and filters."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import api
from store.database import Store
from store.errors import StoreError
from tests.conftest import write_config


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("exp")
    api.run(write_config(tmp, policy="k_best", k=12, max_rounds=3))
    return tmp / "run.duckdb"


def _stored(store: Path) -> pd.DataFrame:
    with Store(store, read_only=True) as st:
        return st.con.sql("SELECT item_id, label, round, confidence FROM pseudo_labels").df()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_export_roundtrip(finished_store: Path, tmp_path: Path, fmt: str):
    out = tmp_path / f"labels.{fmt}"
    n = api.export(finished_store, out)
    df = {"parquet": pd.read_parquet, "csv": pd.read_csv,
          "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](out)
    assert len(df) == n == 15 + len(_stored(finished_store))
    assert list(df.columns[:7]) == ["item_id", "label", "source", "source_views", "agreeing_views", "round",
                                    "confidence"]
    assert {"a_0", "b_3", "split"} <= set(df.columns)  # the item's own fields come along
    pseudo = df[df.source != "gold"].set_index("item_id")
    stored = _stored(finished_store).set_index("item_id")
    assert pseudo.label.sort_index().tolist() == stored.label.sort_index().tolist()
    assert (pseudo["round"].sort_index().astype(int) == stored["round"].sort_index()).all()
    assert set(df.source) == {"gold", "k_best"}


def test_export_parquet_loads_with_hf_datasets(finished_store: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "labels.parquet"
    n = api.export(finished_store, out)
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == n
    assert "source_views" in ds.features and ds[0]["source"] == "gold"


def test_agreeing_views_come_from_that_rounds_predictions(finished_store: Path, tmp_path: Path):
    out = tmp_path / "l.parquet"
    api.export(finished_store, out, source="pseudo")
    df = pd.read_parquet(out)
    assert len(df) == len(_stored(finished_store)) > 0 and (df.source != "gold").all()
    for _, row in df.iterrows():
        assert set(row.source_views) <= set(row.agreeing_views)


def test_export_filters(finished_store: Path, tmp_path: Path):
    out = tmp_path / "f.parquet"
    stored = _stored(finished_store)
    assert api.export(finished_store, out, max_round=0, include_gold=False) == (stored["round"] == 0).sum()
    assert api.export(finished_store, out, min_confidence=0.95, include_gold=False, force=True) == \
        (stored.confidence >= 0.95).sum()
    n_va = api.export(finished_store, out, source="va", force=True)
    assert n_va == len(pd.read_parquet(out)) and n_va > 0
    assert all("va" in v for v in pd.read_parquet(out).source_views)
    assert api.export(finished_store, out, source="gold", force=True) == 15


def test_export_errors(finished_store: Path, tmp_path: Path):
    with pytest.raises(StoreError, match="cannot tell the export format from 'x.xlsx'"):
        api.export(finished_store, tmp_path / "x.xlsx")
    with pytest.raises(StoreError, match="no run 9"):
        api.export(finished_store, tmp_path / "x.csv", run_id=9)
    with pytest.raises(StoreError, match="does not exist"):
        api.export(finished_store, tmp_path / "nope" / "x.csv")
