"""Fields held in memory across rounds read exactly as fields read from the store, and a run
gives the same labels either way."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from orchestrator import api
from orchestrator.frames import MemoryFrames, StoreFrames, estimated_bytes, open_frames
from store.database import Store
from store.errors import ConfigError
from tests.conftest import synthetic_frame, write_config

FIELDS = ["a_0", "a_1", "b_0", "b_3"]


def _store_with_run(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path, synthetic_frame(n=600, n_gold=20, n_test=50), max_rounds=0)
    api.run(cfg)
    return tmp_path / "run.duckdb"


def test_memory_and_store_read_the_same_rows(tmp_path: Path):
    with Store(_store_with_run(tmp_path), read_only=True) as st:
        n = st.scalar("SELECT count(*) FROM data_1")
        mem, db = MemoryFrames.load(st, 1, FIELDS), StoreFrames(st, 1, FIELDS)
        rng = np.random.default_rng(0)
        for rows in (np.arange(n), rng.permutation(n)[:97], np.array([5, 5, 0, n - 1]), np.zeros(0, dtype=np.int64)):
            a, b = mem.rows(rows), db.rows(rows)
            assert list(a.columns) == FIELDS and a.dtypes.tolist() == b.dtypes.tolist()
            pd.testing.assert_frame_equal(a, b)
        assert mem.nbytes >= n * len(FIELDS) * 4


def test_auto_holds_what_fits_and_reads_the_rest_from_the_store(tmp_path: Path):
    with Store(_store_with_run(tmp_path), read_only=True) as st:
        n = st.scalar("SELECT count(*) FROM data_1")
        need = estimated_bytes(st, 1, FIELDS, n)
        assert need > 0
        assert open_frames(st, 1, FIELDS, n, "auto", limit_bytes=2 * need).in_memory  # loading budgets twice the Arrow size
        assert not open_frames(st, 1, FIELDS, n, "auto", limit_bytes=2 * need - 1).in_memory
        assert open_frames(st, 1, FIELDS, n, True).in_memory and not open_frames(st, 1, FIELDS, n, False).in_memory


@pytest.mark.parametrize("policy", ["auto", pytest.param("k_best", marks=pytest.mark.slow)])
def test_a_run_gives_the_same_labels_with_fields_in_memory_or_in_the_store(tmp_path: Path, policy: str):
    labels = []
    for mode in (True, False):
        d = tmp_path / str(mode)
        d.mkdir()
        # noise 1.2: at the default 1.6 the honest estimate (shadow runs) accepts nothing at 0.9
        df = synthetic_frame(n=1500, n_gold=20, n_test=100, noise=1.2)
        cfg = write_config(d, df, policy=policy, k=20, max_rounds=3, batch_size=256, data_in_memory=mode)
        api.run(cfg)
        with Store(d / "run.duckdb", read_only=True) as st:
            labels.append(st.query("SELECT item_id, label, round FROM pseudo_labels ORDER BY item_id").to_pylist())
    assert labels[0] and labels[0] == labels[1]


def test_the_setting_is_validated(tmp_path: Path):
    cfg = write_config(tmp_path, data_in_memory="sometimes")
    with pytest.raises(ConfigError, match="data_in_memory"):
        api.run(cfg)
    assert not (tmp_path / "run.duckdb").exists()  # refused before a store was made


def test_float_fields_are_one_row_major_matrix_that_a_views_matrix_reads_without_a_copy(tmp_path: Path):
    from views.base import ViewContext
    from views.sklearn_view import SklearnView

    table = pa.table({"a_0": np.arange(6, dtype=np.float32), "a_1": pa.array([1, None, 3, 4, 5, 6], pa.float32())})
    mem = MemoryFrames(table)
    assert mem.matrix is not None and mem.matrix.flags.c_contiguous and mem.matrix.dtype == np.float32
    df = mem.rows(np.array([4, 1, 1]))
    assert df["a_0"].tolist() == [4.0, 1.0, 1.0] and np.isnan(df["a_1"].tolist()[1]) and df.dtypes.tolist() == [np.float32] * 2
    view = SklearnView.from_params("v", ViewContext(["x", "y"], seed=0), column_prefix="a_",
                                   estimator="hist_gradient_boosting")  # it takes the NaN
    view.resolve_fields(list(df.columns))
    X = view._matrix(df)
    assert np.shares_memory(X, df["a_0"].to_numpy()) and X.flags.c_contiguous  # the gather itself
    assert X[:, 0].tolist() == [4.0, 1.0, 1.0]
    mixed = MemoryFrames(pa.table({"a_0": [1.0, 2.0], "t": ["p", "q"]}))
    assert mixed.matrix is None and mixed.rows(np.array([1]))["t"].tolist() == ["q"]
