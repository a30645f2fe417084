"""Store: named migrations, lock error across processes, columnar writes, feature cache."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from store.database import Store
from store.errors import StoreError, StoreLockedError
from store.migrations import MIGRATIONS


def test_migrations_recorded_once(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        names = [r[0] for r in st.con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]
        assert names == [name for name, _ in MIGRATIONS]
    with Store(path) as st:  # reopening applies nothing twice
        assert st.scalar("SELECT count(*) FROM _migrations") == len(MIGRATIONS)


def test_read_only_open_of_non_store(tmp_path: Path):
    import duckdb

    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(StoreError, match="not a cotrain store"):
        Store(path, read_only=True)
    with pytest.raises(StoreError, match="no such store file"):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_second_process_gets_locked_by_pid(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from store.database import Store
            st = Store({str(path)!r})
            print("ready", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=rf"locked by PID {holder.pid}") as info:
            Store(path)
        assert info.value.pid == holder.pid
        with pytest.raises(StoreLockedError):
            Store(path, read_only=True)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with Store(path) as st:  # free again once the holder is gone
        assert st.scalar("SELECT 1") == 1


def test_transaction_rolls_back_everything(mem_store: Store):
    with pytest.raises(RuntimeError):
        with mem_store.transaction():
            mem_store.insert_arrow("view_agreement", pa.table({
                "run_id": [1], "round": [0], "view_a": ["a"], "view_b": ["b"], "n_both": [3], "rate": [1.0]}))
            raise RuntimeError("crash mid-round")
    assert mem_store.scalar("SELECT count(*) FROM view_agreement") == 0


def test_feature_cache_roundtrip_and_idempotent_put(mem_store: Store):
    vecs = np.arange(6, dtype=np.float32).reshape(3, 2)
    mem_store.cache_put("enc", ["a", "b", "a"], vecs)  # duplicate key in one put
    mem_store.cache_put("enc", ["b", "c"], np.ones((2, 2), dtype=np.float32))  # b already cached
    got = mem_store.cache_get("enc", ["a", "b", "c", "zz"])
    assert set(got) == {"a", "b", "c"}
    assert got["a"].tolist() == [0.0, 1.0]
    assert got["b"].tolist() == [2.0, 3.0]  # first value kept
    assert mem_store.cache_get("other", ["a"]) == {}


def test_insert_arrow_is_columnar_and_fast(mem_store: Store):
    n = 200_000
    t = pa.table({"run_id": np.ones(n, dtype=np.int32), "round": np.zeros(n, dtype=np.int32),
                  "view": pa.array(["v"] * n), "item_id": pa.array([str(i) for i in range(n)]),
                  "label": pa.array(["a"] * n), "confidence": np.full(n, 0.5, dtype=np.float32)})
    mem_store.insert_arrow("predictions", t)
    assert mem_store.scalar("SELECT count(*) FROM predictions") == n
