"""Every failure is one line, a failed run never blocks a corrected config, Ctrl-C says how
far the run got, and nothing committed is lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from orchestrator import api
from store.database import Store
from store.errors import ConfigError, RunInterrupted, StoreError, ViewError
from tests.conftest import synthetic_frame, write_config

REPO = Path(__file__).parents[1]


def _cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["COTRAIN_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={**env, "PYTHONPATH": str(REPO)})


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return lines[0]


def _edit(cfg: Path, fn) -> None:
    data = yaml.safe_load(cfg.read_text())
    fn(data)
    cfg.write_text(yaml.safe_dump(data))


def test_nan_and_text_in_numeric_pool_columns_name_column_and_item(tmp_path: Path):
    df = synthetic_frame()
    df["a_2"] = df["a_2"].astype(object)
    df.loc[df.index[100], "a_2"] = np.nan    # a pool row (no gold), so predict met it, not fit
    cfg = write_config(tmp_path, df)
    with pytest.raises(ViewError) as err:
        api.run(cfg)
    assert str(err.value) == ("view 'va': column 'a_2' has a missing (NaN) value at item 'it00100': fill it, "
                              "or use an estimator that accepts missing values (hist_gradient_boosting)")
    df.loc[df.index[100], "a_2"] = "n/a"
    (tmp_path / "t").mkdir()
    cfg = write_config(tmp_path / "t", df, max_rounds=1)
    with pytest.raises(ViewError, match=r"column 'a_2' is not numeric: item 'it00100' holds 'n/a'"):
        api.run(cfg)
    _edit(cfg, lambda d: d["views"][0].update(estimator="hist_gradient_boosting"))
    df.loc[df.index[100], "a_2"] = np.nan
    df["a_2"] = df["a_2"].astype(float)
    df.drop(columns=["truth"]).to_csv(tmp_path / "t" / "items.csv", index=False)
    assert api.run(cfg).status == "finished"  # an estimator that takes NaN gets it


def test_a_bad_cell_is_refused_before_the_run_is_recorded_and_by_the_dry_run(tmp_path: Path):
    """A NaN, an infinity or text in a numeric column fails the command before its run is
    committed: the store keeps only the earlier finished run, which ``status`` and ``export``
    still read, and the dry run refuses the same file with the same line."""
    from orchestrator.planning import plan

    df = synthetic_frame()
    cfg = write_config(tmp_path, df)
    assert api.run(cfg).status == "finished"
    store = tmp_path / "run.duckdb"
    before = api.status(store).runs
    for bad, line in ((np.inf, r"column 'a_2' has an infinite value at item 'it00420'"),
                      ("n/a", r"column 'a_2' is not numeric: item 'it00420' holds 'n/a'"),
                      (np.nan, r"column 'a_2' has a missing \(NaN\) value at item 'it00420'")):
        odd = df.copy()
        odd["a_2"] = odd["a_2"].astype(object)
        odd.loc[odd.index[420], "a_2"] = bad
        odd.drop(columns=["truth"]).to_csv(tmp_path / "items.csv", index=False)
        with pytest.raises(ViewError, match=line):
            api.run(cfg, new_run=True)
        with pytest.raises(ViewError, match=line):
            plan(cfg)
        assert api.status(store).runs == before  # no failed run became the store's latest


def test_a_failed_fit_marks_the_run_failed_and_blocks_nothing(tmp_path: Path):
    cfg = write_config(tmp_path)
    # valid YAML, invalid at fit: a dotted path is the user's class, whose values its fit checks
    _edit(cfg, lambda d: d["views"][0].update(estimator="sklearn.linear_model.LogisticRegression",
                                              estimator_params={"C": -1.0}))
    with pytest.raises(ViewError, match="view 'va': fit failed"):
        api.run(cfg)
    store = tmp_path / "run.duckdb"
    assert [r["status"] for r in api.status(store).runs] == ["failed"]
    _edit(cfg, lambda d: d["views"][0].update(estimator_params={"C": 1.0}))  # the corrected config
    res = api.run(cfg)  # no --new-run needed
    assert res.status == "finished" and res.run_id == 2
    assert [r["status"] for r in api.status(store).runs] == ["failed", "finished"]
    assert api.unfinished_latest_run(store) is None
    _edit(cfg, lambda d: d["views"][0].update(estimator_params={"C": -1.0}))
    with pytest.raises(ViewError):
        api.run(cfg, new_run=True)
    # export and report read the latest run by default: they say it failed, and which one finished
    assert api.unfinished_latest_run(store) == "run 3 (the latest) is failed: its labels so far; pass --run 2 " \
                                               "for the last finished run"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "export", str(store), str(tmp_path / "l.csv")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert proc.returncode == 0 and "run 3 (the latest) is failed" in proc.stderr and "--run 2" in proc.stderr


def test_a_failed_run_resumes_with_nothing_committed_lost(tmp_path: Path):
    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:FailingView",
                                                    "columns": ["b_0", "b_1"], "fail_round": 2}))
    with pytest.raises(RuntimeError, match="boom in round 2"):
        api.run(cfg)
    store = tmp_path / "run.duckdb"
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "failed"
        assert st.scalar("SELECT max(round) FROM rounds") == 1       # rounds 0 and 1 stay committed
        kept = st.scalar("SELECT count(*) FROM pseudo_labels")
    # a corrected config starts a new run at once (no --new-run); the failed run keeps its labels
    _edit(cfg, lambda d: d["views"][1].update(fail_round=-1))
    res = api.run(cfg)
    assert res.run_id == 2 and res.status == "finished"
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM pseudo_labels WHERE run_id = 1") == kept


@pytest.mark.parametrize("exit_request", [False, True])
def test_an_interruption_mid_round_is_not_a_failure(tmp_path: Path, exit_request: bool):
    """DuckDB turns a SIGINT that lands mid-query into its own InterruptException (an
    Exception), and Ray's driver turns SIGTERM (kill, docker stop, Slurm) into SystemExit,
    which was reported "stopped with an error (failed: SystemExit)" while the store still said
    running. Either way the run stays resumable ("running", not "failed") and says how far it got."""
    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:FailingView",
                                                    "columns": ["b_0", "b_1"], "fail_round": 2,
                                                    "exit_request": exit_request,
                                                    "interrupt": str(tmp_path / "interrupted")}))
    with pytest.raises(SystemExit if exit_request else RunInterrupted) as info:
        api.run(cfg)
    # an exit request goes on with its code (SIGTERM's 143), not as a Ctrl-C
    assert info.value.code == 143 if exit_request else info.value.last_round == 1
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "running"
        assert st.scalar("SELECT max(round) FROM rounds") == 1
    assert api.status(tmp_path / "run.duckdb").live["state"] == "interrupted"
    res = api.run(cfg)  # the same config resumes the same run
    assert res.run_id == 1 and res.resumed and res.status == "finished"


def test_the_cli_exits_with_an_exit_requests_own_code(tmp_path: Path):
    """It exited 130, as for Ctrl-C, whatever code the exit request carried."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:FailingView",
                                                    "columns": ["b_0", "b_1"], "fail_round": 1, "exit_request": True,
                                                    "interrupt": str(tmp_path / "interrupted")}))
    assert CliRunner().invoke(app, ["run", str(cfg), "--quiet"]).exit_code == 143
    assert CliRunner().invoke(app, ["run", str(cfg), "--quiet"]).exit_code == 0  # and the run resumes


def test_a_real_ctrl_c_mid_query_exits_130_and_the_run_resumes(tmp_path: Path):
    """SIGINT while DuckDB runs a query: DuckDB 2.0 raises a plain ``RuntimeError('Query
    interrupted')``, which marked the run failed and printed an error. It is an interruption."""
    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:FailingView",
                                                    "columns": ["b_0", "b_1"], "fail_round": 2, "by_signal": True,
                                                    "interrupt": str(tmp_path / "interrupted")}))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=90,
                          env={**env, "PYTHONPATH": str(REPO), "COTRAIN_HOME": str(tmp_path / "home")},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = [x for x in proc.stderr.strip().splitlines() if x]
    assert proc.returncode == 130 and lines == ["interrupted after round 1; run again to resume"], proc.stderr
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "running"
        assert st.scalar("SELECT max(round) FROM rounds") == 1
    assert '"state": "interrupted"' in (tmp_path / "run.duckdb.progress.json").read_text()
    rep = api.status(tmp_path / "run.duckdb")  # its table said "running" under the line saying interrupted
    assert rep.live["state"] == "interrupted" and [r["status"] for r in rep.runs] == ["interrupted"]
    # export and report say it as status does (they said "running" of a run no process held)
    assert api.unfinished_latest_run(tmp_path / "run.duckdb") == "run 1 (the latest) is interrupted: its labels so far"
    res = api.run(cfg)
    assert res.run_id == 1 and res.resumed and res.status == "finished"


def test_a_reader_that_goes_away_leaves_the_run_to_finish(tmp_path: Path):
    """``cotrain run cfg | head -1``: rich's console raised SystemExit at the first line written
    to the closed pipe, mid-round, and the run was shown as failed with nothing said. The
    output goes quiet instead and the run finishes."""
    cfg = write_config(tmp_path, max_rounds=2)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    cmd = f"{sys.executable} -m orchestrator.cli run {cfg} 2>&1 | head -1; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(REPO), "COTRAIN_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1, proc.stderr
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "finished"
        assert st.scalar("SELECT max(round) FROM rounds") == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("unbuffered", [pytest.param("1", marks=pytest.mark.slow), None])  # 7 s each
def test_an_unwritable_stdout_lets_the_run_finish_and_fails_the_command(tmp_path: Path, unbuffered: str | None):
    """``cotrain run cfg > /dev/full``: the first line that reached the full device raised
    OSError (no space left) after round 0 committed, and the run failed. Now the run finishes,
    and the command exits 1 with one line: its output is incomplete. Python's own buffered
    stdout (no PYTHONUNBUFFERED) must not fail again at exit (it exited 120). ``status``, whose
    output is all it does, exits 1 the same way."""
    cfg = write_config(tmp_path, max_rounds=2)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "PYTHONUNBUFFERED")}
    env.update({"PYTHONPATH": str(REPO), "COTRAIN_HOME": str(tmp_path / "home")}, **(
        {"PYTHONUNBUFFERED": unbuffered} if unbuffered else {}))
    for args in (["run", str(cfg)], ["status", str(tmp_path / "run.duckdb")]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=tmp_path, stdout=full,
                                  stderr=subprocess.PIPE, text=True, timeout=120, env=env)
        errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert proc.returncode == 1, proc.stderr
        assert len(errors) == 1 and "cannot write to stdout" in errors[0] and "incomplete" in errors[0], proc.stderr
        assert "Exception ignored" not in proc.stderr, proc.stderr
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "finished"
        assert st.scalar("SELECT max(round) FROM rounds") == 2


def test_a_failed_run_prints_its_one_line_and_nothing_on_stdout(tmp_path: Path):
    """A run that fails in round 0 (here a user's estimator class refuses its parameters at
    its first fit) said so on stderr, and rich's progress display left a blank line as its
    only stdout."""
    cfg = write_config(tmp_path)
    doc = yaml.safe_load(cfg.read_text())
    doc["views"][0].update(estimator="sklearn.linear_model.LogisticRegression", estimator_params={"C": -1.0})
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(REPO), "COTRAIN_HOME": str(tmp_path / "home")})
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: view 'va': fit failed"), proc.stderr


def test_a_bad_estimator_value_is_refused_before_anything_is_stored(tmp_path: Path):
    """``C: -1`` on a built-in estimator was found by round 0's first fit, after the run was
    stored (which then became the store's latest, failed). It is now refused up front."""
    cfg = write_config(tmp_path)
    doc = yaml.safe_load(cfg.read_text())
    doc["views"][1]["estimator_params"] = {"C": -1.0}
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ViewError, match="view 'vb': cannot build estimator 'logistic_regression': C must be"):
        api.plan(cfg)
    with pytest.raises(ViewError, match="C must be a number above 0"):
        api.run(cfg)
    assert not (tmp_path / "run.duckdb").exists()  # created by this run and left empty: removed


def test_the_same_config_resumes_its_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # no cross-validation over gold, so a round is exactly one fit per view and fit 5 is round 2's first
    cfg = write_config(tmp_path, calibration_folds=0)
    import views.sklearn_view as sv

    real_fit = sv.SklearnView.fit
    calls = {"n": 0}

    def flaky(self, items, y, w):  # fails once, in round 2's first fit (a transient fault)
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk hiccup")
        return real_fit(self, items, y, w)

    monkeypatch.setattr(sv.SklearnView, "fit", flaky)
    with pytest.raises(OSError):
        api.run(cfg)
    monkeypatch.setattr(sv.SklearnView, "fit", real_fit)
    res = api.run(cfg)
    assert res.run_id == 1 and res.resumed and res.status == "finished"
    (tmp_path / "ref").mkdir()
    ref = api.run(write_config(tmp_path / "ref", calibration_folds=0))
    assert res.labels_added == ref.labels_added and res.final_metrics == ref.final_metrics


def test_unforeseen_errors_are_one_line_with_a_traceback_file(tmp_path: Path):
    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:FailingView",
                                                    "columns": ["b_0"], "fail_round": 0}))
    proc = _cli("run", str(cfg), "--quiet", cwd=tmp_path, home=tmp_path / "home")
    line = _one_error_line(proc)
    assert line.startswith("error: RuntimeError: boom in round 0 (traceback in ")
    log = Path(line.split("(traceback in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "home" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "plugin_views.py" in text and "boom in round 0" in text


def test_a_secret_the_config_names_never_reaches_the_error_line_or_the_traceback_file(tmp_path: Path):
    """A key of no known shape (a self-hosted server's) was printed on the unforeseen error's
    line and written to its traceback file when a plug-in quoted it: the values of the
    variables a config names (``*_env``) are scrubbed from both, whole and in part."""
    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:FailingView",
                                                    "columns": ["b_0"], "fail_round": 0,
                                                    "credential_env": "PLUGIN_CRED"}))
    secret = "plainSECRET123value9876"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180,
                          env={**env, "PYTHONPATH": str(REPO), "COTRAIN_HOME": str(tmp_path / "home"),
                               "PLUGIN_CRED": secret})
    line = _one_error_line(proc)
    assert line.startswith("error: RuntimeError: boom in round 0: bad credential *** (traceback in ")
    text = Path(line.split("(traceback in ", 1)[1].rstrip(")")).read_text()
    assert "bad credential ***" in text and "plugin_views.py" in text
    assert secret[:8] not in proc.stdout + proc.stderr + text


def test_store_faults_are_one_line(tmp_path: Path):
    home = tmp_path / "home"
    # a foreign DuckDB file with an 'items' table: refused, and left without cotrain's tables
    foreign = tmp_path / "mine.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE items (x INTEGER)")
    con.close()
    cfg = write_config(tmp_path, max_rounds=1)
    line = _one_error_line(_cli("run", str(cfg), "--store", str(foreign), cwd=tmp_path, home=home))
    assert "not a cotrain store" in line and "items" in line
    con = duckdb.connect(str(foreign), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()] == ["items"]
    con.close()
    with pytest.raises(StoreError, match="not a cotrain store"):
        Store(foreign, read_only=True)
    # a store whose data blocks fail DuckDB's checksum after it opens
    api.run(cfg)
    store = tmp_path / "run.duckdb"
    data = bytearray(store.read_bytes())
    for off in range(len(data) // 3, len(data) - 4096, 262144):
        data[off:off + 64] = bytes(b ^ 0xFF for b in data[off:off + 64])
    store.write_bytes(bytes(data))
    for args in (("status", str(store)), ("export", str(store), str(tmp_path / "x.parquet")),
                 ("report", str(store), "--out", str(tmp_path / "r.html")), ("run", str(cfg), "--quiet")):
        line = _one_error_line(_cli(*args, cwd=tmp_path, home=home))
        assert line.startswith(f"error: store {store}: cannot read the file"), line


def test_config_faults_are_one_line(tmp_path: Path):
    cfg = write_config(tmp_path)
    raw = cfg.read_bytes().replace(b"seed: 0", b"seed: 0\n# caf\xe9")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(raw)
    line = _one_error_line(_cli("run", str(bad), cwd=tmp_path, home=tmp_path / "home"))
    assert "not UTF-8 text: byte 0xe9 on line" in line
    _edit(cfg, lambda d: d.update(seed=-5))
    with pytest.raises(ConfigError, match="seed"):
        api.run(cfg)


def test_tfidf_tuples_from_yaml(tmp_path: Path):
    df = pd.DataFrame({"text": [f"{w} film {i}" for i, w in enumerate(["great", "awful"] * 60)]})
    df["label"] = np.where(np.arange(120) < 10, np.where(np.arange(120) % 2 == 0, "pos", "neg"), None)
    df["b_0"] = np.where(np.arange(120) % 2 == 0, 1.0, -1.0) + np.random.default_rng(0).normal(0, 1, 120)
    df.to_csv(tmp_path / "d.csv", index=False)
    cfg = {"task": {"labels": ["neg", "pos"]}, "data": {"train": "d.csv"},
           "views": [{"name": "t", "kind": "sklearn", "text": "text", "tfidf": {"ngram_range": [1, 2]}},
                     {"name": "b", "kind": "sklearn", "column_prefix": "b_"}],
           "cotrain": {"max_rounds": 1, "policy": "threshold"}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert api.run(tmp_path / "c.yaml").status == "finished"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics")
def test_ctrl_c_says_how_far_the_run_got_and_resumes(tmp_path: Path):
    df = synthetic_frame(n=4000, n_gold=30, n_test=100)
    cfg = write_config(tmp_path, df, max_rounds=6, batch_size=200)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:PacedCentroidView",
                                                    "columns": ["b_0", "b_1", "b_2", "b_3"], "delay_s": 0.05}))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    # A shell runs a background job with SIGINT ignored, and a child inherits that (Python then
    # installs no Ctrl-C handler): the run gets the default disposition, as at a terminal.
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "PYTHONPATH": str(REPO), "COTRAIN_HOME": str(tmp_path / "home")},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress = tmp_path / "run.duckdb.progress.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until round 1 is under way (round 0 committed)
        if progress.exists() and '"rounds_done": 1' in progress.read_text(errors="replace"):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [x for x in stderr.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("interrupted after round ") and "run again to resume" in lines[0], \
        stderr
    after = int(lines[0].split("round ")[1].split(";")[0])
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT max(round) FROM rounds") == after
        assert st.scalar("SELECT status FROM runs") == "running"
    res = api.run(cfg)
    assert res.resumed and res.status == "finished" and res.n_rounds > after + 1


@pytest.mark.parametrize(("mode", "says"), [
    ("neg", r"predict_proba gave item 'it\d+' \[.+\] \(\d+ of \d+ rows like it\): each row must be 3 probabilities in "
            r"\[0, 1\] summing to 1, or all NaN to abstain"),
    ("unnorm", r"predict_proba gave item 'it\d+' .+each row must be 3 probabilities"),
    ("inf", r"predict_proba gave item 'it\d+' \[.*inf.*\] \(1 of \d+ rows like it\)"),
    ("partial_nan", r"predict_proba gave item 'it\d+' \[nan, .+\] \(1 of \d+ rows like it\)"),
    ("shape", r"predict_proba returned shape \(\d+, 4\) for \d+ item\(s\) and 3 labels; expected \(\d+, 3\)"),
    ("rows", r"predict_proba returned shape \((\d+), 3\) for \d+ item\(s\)"),
    ("raise", r"predict_proba failed: KeyError: \"no such column 'zz'\""),
])
def test_a_view_that_breaks_the_probability_contract_is_named_and_nothing_is_accepted(tmp_path: Path, mode: str,
                                                                                      says: str):
    """A plug-in's rows of -1 and 2, rows summing to 5 and an inf were stored and accepted as
    labels; a wrong shape or the view's own error came out naming no view (a probe's finding).
    Each is now one error naming the view (and the item), and the run is failed with no label."""
    cfg = write_config(tmp_path)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:MangledView",
                                                    "columns": ["b_0", "b_1"], "mode": mode}))
    with pytest.raises(ViewError, match="^view 'vb': " + says) as err:
        api.run(cfg)
    assert "\n" not in str(err.value)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "failed"
        assert st.scalar("SELECT count(*) FROM pseudo_labels") == 0
        assert st.scalar("SELECT count(*) FROM prediction_rows") == 0


def test_a_view_may_abstain_with_whole_rows_of_nan(tmp_path: Path):
    cfg = write_config(tmp_path, max_rounds=2)
    _edit(cfg, lambda d: d["views"].__setitem__(1, {"name": "vb", "kind": "tests.plugin_views:MangledView",
                                                    "columns": ["b_0", "b_1"], "mode": "abstain"}))
    res = api.run(cfg)
    assert res.status == "finished" and res.final_metrics["vb"]["test_accuracy"] is not None


def test_check_proba_passes_good_rows_as_they_are_and_names_the_first_bad_row():
    from views.proba import check_proba

    items = pd.DataFrame({"__item_id": ["a", "b", "c"]})
    good = np.array([[0.2, 0.8], [np.nan, np.nan], [1.0, 0.0]], dtype=np.float32)
    assert check_proba("v", good, items, 2) is good  # no copy, float32 kept
    assert check_proba("v", [[0.5, 0.5]] * 3, items.iloc[:3], 2).dtype == np.float64
    assert check_proba("v", np.zeros((0, 2)), items.iloc[:0], 2).shape == (0, 2)
    assert check_proba("v", [], items.iloc[:0], 2).shape == (0, 2)  # nothing asked: any empty answer
    nudged = check_proba("v", [[1.0005, -0.0005], [np.nan, np.nan], [0.5, 0.5]], items, 2)  # rounding past 0 and 1
    assert np.array_equal(nudged, [[1.0, 0.0], [np.nan, np.nan], [0.5, 0.5]], equal_nan=True)
    assert check_proba("v", np.full((3, 2), np.nan), items, 2).shape == (3, 2)  # every item abstains
    with pytest.raises(ViewError, match=r"item 'c' \[0\.6, 0\.6\] \(1 of 3 rows"):
        check_proba("v", np.array([[0.2, 0.8], [0.5, 0.5], [0.6, 0.6]]), items, 2)
    with pytest.raises(ViewError, match=r"row 1 \[nan, 1\] \(1 of 2 rows"):  # no ids: the row
        check_proba("v", np.array([[0.2, 0.8], [np.nan, 1.0]]), pd.DataFrame({"x": [1, 2]}), 2)
    with pytest.raises(ViewError, match="predict_proba returned str, not an array of numbers"):
        check_proba("v", "nope", items, 2)


def test_knn_fits_when_a_fold_holds_fewer_rows_than_its_neighbours(tmp_path: Path):
    """``estimator: knn`` (5 neighbours) on 6 gold labels: a calibration fold trained on 4
    rows and failed the run with scikit-learn's "n_neighbors <= n_samples_fit"."""
    df = synthetic_frame(n=120, n_gold=6, n_test=30)
    cfg = write_config(tmp_path, df, max_rounds=2)
    _edit(cfg, lambda d: d["views"][0].update(estimator="knn"))
    res = api.run(cfg)
    assert res.status == "finished" and res.final_metrics["va"]["test_accuracy"] > 1 / 3
