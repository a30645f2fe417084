"""Kill -9 a real ``cotrain run`` mid-round, re-run it, and get exactly the labels of an
uninterrupted run: nothing duplicated, nothing lost."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from store.database import Store
from tests.conftest import synthetic_frame, write_config

REPO = Path(__file__).parents[1]


def _cli(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _lines(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _kill_during_round(cfg: Path, round_idx: int, delay: float) -> bool:
    """Start a run, SIGKILL it ``delay`` s after round ``round_idx`` starts; False if it finished first."""
    proc = _cli(cfg)
    q = _lines(proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            proc.wait()
            return False
        if f"round {round_idx} started" in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.kill()
    raise AssertionError("run did not reach the round in time")


def _snapshot(store: Path) -> dict:
    with Store(store, read_only=True) as st:
        return {
            "pseudo": st.con.execute("SELECT item_id, label, round, source_views FROM pseudo_labels"
                                     " ORDER BY item_id").fetchall(),
            "rounds": st.con.execute("SELECT round, pool_size, labels_added, n_disputed, termination"
                                     " FROM rounds ORDER BY round").fetchall(),
            "pred_rows": st.scalar("SELECT count(*) FROM predictions"),
            "pred_distinct": st.scalar("SELECT count(*) FROM (SELECT DISTINCT round, view, item_id FROM predictions)"),
            "metrics": st.scalar("SELECT count(*) FROM metrics"),
            "disputes": st.scalar("SELECT count(*) FROM disputes"),
            "runs": st.con.execute("SELECT run_id, status, termination FROM runs").fetchall(),
        }


def _config(tmp: Path) -> Path:
    df = synthetic_frame(n=30_000, n_gold=30, n_test=300, seed=5)
    return write_config(tmp, df, policy="k_best", k=300, max_rounds=5, batch_size=1500, pool_sample=20_000)


def test_kill_minus_nine_mid_round_then_resume(tmp_path: Path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "crash").mkdir()
    ref_cfg = _config(tmp_path / "ref")
    proc = _cli(ref_cfg)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    reference = _snapshot(tmp_path / "ref" / "run.duckdb")

    cfg = _config(tmp_path / "crash")
    killed = [_kill_during_round(cfg, 2, 0.3), _kill_during_round(cfg, 3, 0.05)]
    assert any(killed)
    with Store(tmp_path / "crash" / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "running"
        assert st.scalar("SELECT max(round) FROM rounds") < 5
    proc = _cli(cfg)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "resuming after round" in err
    resumed = _snapshot(tmp_path / "crash" / "run.duckdb")
    assert resumed == reference
    assert resumed["pred_rows"] == resumed["pred_distinct"]  # no duplicated prediction rows


@pytest.mark.slow
def test_kill_at_random_moments_many_times(tmp_path: Path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "crash").mkdir()
    proc = _cli(_config(tmp_path / "ref"))
    proc.communicate(timeout=300)
    reference = _snapshot(tmp_path / "ref" / "run.duckdb")
    cfg = _config(tmp_path / "crash")
    rng = np.random.default_rng(0)
    for _ in range(8):
        with Store(tmp_path / "crash" / "run.duckdb", read_only=True) if (tmp_path / "crash" / "run.duckdb").exists() \
                else _Null() as st:
            nxt = 0 if st is None else (st.scalar("SELECT coalesce(max(round), -1) FROM rounds") + 1)
        if not _kill_during_round(cfg, int(nxt), float(rng.uniform(0, 0.6))):
            break
    proc = _cli(cfg)
    proc.communicate(timeout=300)
    assert _snapshot(tmp_path / "crash" / "run.duckdb") == reference


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
