"""Watching a run while it runs: the progress file beside the store, read by a second process.

DuckDB lets no other process open a store that a run holds, so ``api.status`` reads the
run's ``<store>.progress.json`` then. The tests start real ``cotrain run`` processes and
poll from this one, and assert on the API's return values (never on rendered text).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app
from orchestrator.progress import ProgressFileReporter, TeeReporter
from store.database import Store
from store.errors import StoreError, StoreLockedError
from store.contracts import CallRecord
from store.llm_ledger import USAGE_KEYS, LLMLedger
from store.progress import (Progress, ViewProgress, effective_state, pid_alive, progress_path, read_progress,
                            write_progress)
from tests.conftest import synthetic_frame, write_config

REPO = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------- the file
def test_progress_file_is_replaced_atomically(tmp_path: Path):
    """A reader polling while a writer replaces the file many times sees only whole
    versions, each one consistent, and the versions it sees only move forward."""
    path = tmp_path / "s.duckdb.progress.json"
    n_versions = 150
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(1, n_versions + 1):
                # a few tens of KB: a torn write would show as invalid JSON or a short view list
                views = [ViewProgress(f"view{j:03d}-" + "x" * 40, "predict", i, n_versions) for j in range(200)]
                write_progress(path, Progress(pid=os.getpid(), round=i, views=views, rounds_done=len(views)))
        finally:
            done.set()

    write_progress(path, Progress(pid=os.getpid(), round=0))
    t = threading.Thread(target=writer)
    t.start()
    seen: list[int] = []
    while not done.is_set() or not seen:
        raw = path.read_text(encoding="utf-8")
        data = json.loads(raw)  # never a partial file
        p = read_progress(path)
        assert p is not None and p.pid == os.getpid()
        assert data["rounds_done"] == len(data["views"])
        assert all(v["done"] == data["round"] for v in data["views"])
        seen.append(data["round"])
    t.join()
    assert seen == sorted(seen) and len(set(seen)) > 1
    assert read_progress(path).round == n_versions
    assert sorted(x.name for x in tmp_path.iterdir()) == [path.name]  # no temp file left behind


def test_read_and_pid_states(tmp_path: Path):
    path = tmp_path / "x.progress.json"
    assert read_progress(path) is None
    assert pid_alive(os.getpid()) and not pid_alive(0)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not pid_alive(gone.pid)
    assert effective_state(Progress(pid=os.getpid())) == "running"
    assert effective_state(Progress(pid=gone.pid)) == "interrupted"          # killed without a word
    assert effective_state(Progress(pid=gone.pid, state="finished")) == "finished"
    path.write_text("{not json")
    with pytest.raises(Exception, match="not a progress file"):
        read_progress(path)


# ---------------------------------------------------------------- the reporter
class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class _Ledger:
    def __init__(self) -> None:
        self.u = {"calls": 0, "cache_hits": 0, "errors": 0, "over_budget": 0, "prompt_tokens": 0,
                  "completion_tokens": 0, "cost_usd": 0.0}

    def usage(self) -> dict:
        return dict(self.u)


def test_reporter_phases_rate_eta_throttle_and_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import orchestrator.progress as prog

    writes: list[Progress] = []
    real = prog.write_progress

    def counting(path: Path, p: Progress) -> None:
        writes.append(dataclasses.replace(p, views=list(p.views), llm=dict(p.llm)))
        real(path, p)

    monkeypatch.setattr(prog, "write_progress", counting)
    clock, ledger = _Clock(), _Ledger()
    store = str(tmp_path / "s.duckdb")
    seen: list[str] = []

    class Other:  # the caller's reporter still gets every hook through the tee
        def round_started(self, *a: object) -> None:
            seen.append("round_started")

        def advance(self, *a: object) -> None:
            seen.append("advance")

        def round_finished(self, *a: object) -> None:
            seen.append("round_finished")

    with ProgressFileReporter(store, interval=0.5, clock=clock) as live:
        rep = TeeReporter(Other(), live)
        assert read_progress(progress_path(store)).phase == "starting"
        rep.run_started(7, 0, 2, ledger)
        rep.round_started(0, 1000, 2)
        for v in ("a", "b"):
            clock.t += 1
            rep.advance(v, "fit", 1, 1)
        assert writes[-1].phase == "evaluate" and writes[-1].run_id == 7 and writes[-1].last_round == 2
        clock.t += 5  # evaluation: not the predict pass's work
        n_before = len(writes)
        for batch in range(4):  # 4 batches of 100 per view, 1 s each
            clock.t += 1
            ledger.u["calls"] += 10
            ledger.u["cost_usd"] += 0.01
            rep.advance("a", "predict", 100, 1000)
            rep.advance("b", "predict", 100, 1000)  # same instant: throttled, no write
        # one write per second (the first at the phase change), each at a's advance, so b lags a batch
        assert len(writes) - n_before == 4
        p = read_progress(progress_path(store))
        assert p.phase == "predict" and [(v.view, v.done, v.total) for v in p.views] == [("a", 400, 1000),
                                                                                          ("b", 300, 1000)]
        # rates count from each pass's first report: a 300 items in 3 s, b 200 in 3 s; the ETA is
        # the slower view's: 700 left at 200/3 items/s
        assert p.rate == pytest.approx((100 + 200 / 3) / 2) and p.eta_s == pytest.approx(10.5)
        assert p.llm == {**ledger.usage()} and p.llm["calls"] == 40
        for _ in range(6):
            clock.t += 1
            rep.advance("a", "predict", 100, 1000)
            rep.advance("b", "predict", 100, 1000)
        p = read_progress(progress_path(store))
        assert p.phase == "select" and all(v.done == v.total == 1000 for v in p.views)
        rep.round_finished({})
        assert read_progress(progress_path(store)).phase == "committed"
        assert read_progress(progress_path(store)).rounds_done == 1
        rep.round_started(1, 600, 2)
        clock.t += 1
        rep.advance("a", "encode", 32, 64)  # a view's own step: shown, but the round is still fitting
        p = read_progress(progress_path(store))
        assert p.round == 1 and p.phase == "fit"
        assert [(v.view, v.phase, v.done) for v in p.views] == [("a", "encode", 32)]
    p = read_progress(progress_path(store))
    assert p.state == "finished" and p.pid == os.getpid() and p.rate is None
    assert seen.count("round_started") == 2 and seen.count("round_finished") == 1 and "advance" in seen
    assert all(w.views is not None and all(v.done <= v.total for v in w.views) for w in writes)

    with pytest.raises(KeyboardInterrupt):
        with ProgressFileReporter(store):
            raise KeyboardInterrupt
    assert read_progress(progress_path(store)).state == "interrupted"
    with pytest.raises(ValueError):
        with ProgressFileReporter(store):
            raise ValueError("secret-looking text sk-123")
    p = read_progress(progress_path(store))
    assert p.state == "failed" and p.error == "ValueError"  # the type only, never the message
    assert "sk-123" not in progress_path(store).read_text()


def test_ledger_counts_calls_and_cost_in_memory(mem_store: Store):
    def call(i: int, **kw: object) -> CallRecord:
        base = dict(view="llm", key=f"k{i}", model="m", request={"i": i}, response={"r": i}, cached=False,
                    status="ok", attempts=1, prompt_tokens=10, completion_tokens=2, cost_usd=0.001)
        return CallRecord(**{**base, **kw})  # type: ignore[arg-type]

    ledger = LLMLedger(mem_store, run_id=3)
    assert ledger.usage() == {k: 0 for k in USAGE_KEYS}
    ledger.round = 0
    ledger.record([call(0), call(1), call(2, cached=True, prompt_tokens=None, completion_tokens=None, cost_usd=0.0),
                   call(3, status="error", response=None, cost_usd=None, prompt_tokens=None, completion_tokens=None),
                   call(4, status="budget", response=None, cost_usd=None, prompt_tokens=None, completion_tokens=None),
                   call(5, status="cancelled", response=None, cost_usd=None, prompt_tokens=None, completion_tokens=None)])
    u = ledger.usage()
    assert u == {"calls": 4, "cache_hits": 1, "errors": 1, "over_budget": 1, "prompt_tokens": 20,
                 "completion_tokens": 4, "cost_usd": pytest.approx(0.002), "cancelled": 1}
    ledger.close()
    # a resumed run's ledger starts from what the store already holds for the run, and agrees
    # with the per-round usage `cotrain status` reports
    again = LLMLedger(mem_store, run_id=3)
    assert again.usage() == u
    from store.queries import llm_usage

    rows = llm_usage(mem_store, 3)
    assert sum(r["calls"] for r in rows) == u["calls"] and sum(r["cache_hits"] for r in rows) == u["cache_hits"]
    assert sum(r["cancelled"] for r in rows) == u["cancelled"] == 1 and sum(r["errors"] for r in rows) == 1
    assert LLMLedger(mem_store, run_id=4).usage()["calls"] == 0
    again.close()


# ---------------------------------------------------------------- a locked store, no run or a dead one
def _hold(store: Path) -> subprocess.Popen:
    """Another process that holds ``store`` open for writing until killed."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; from store.database import Store; "
                             f"s = Store({str(store)!r}); print('held', flush=True); time.sleep(60)"],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_locked_store_without_a_live_run_and_stale_files(tmp_path: Path):
    store = tmp_path / "s.duckdb"
    Store(store).close()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # not locked, a file left 'running' by a killed process: reported as interrupted
    write_progress(progress_path(store), Progress(pid=gone.pid, run_id=1, round=2, phase="predict"))
    rep = api.status(store)
    assert rep.runs == [] and rep.live is not None
    assert (rep.live["state"], rep.live["stale"], rep.live["pid"], rep.live["round"]) == ("interrupted", True,
                                                                                        gone.pid, 2)
    assert CliRunner().invoke(app, ["status", str(store)], env={"COLUMNS": "80"}).exit_code == 0
    write_progress(progress_path(store), Progress(pid=gone.pid, state="finished", run_id=1))
    assert api.status(store).live is None  # nothing to say about a finished run
    # a live PID that is not the store's holder (a killed run's PID, reused): the store is
    # readable, so no run holds it: interrupted, not "running (PID 1)"
    write_progress(progress_path(store), Progress(pid=os.getpid(), run_id=1, round=2, phase="predict"))
    live = api.status(store).live
    assert live is not None and (live["state"], live["stale"], live["eta_s"]) == ("interrupted", True, None)
    write_progress(progress_path(store), Progress(pid=os.getpid(), host="another-host", run_id=1, round=2))
    assert api.status(store).live["state"] == "running"  # a run on another host: its lock may not show here
    text = progress_path(store).read_text().replace(f'"pid": {os.getpid()}', '"pid": "abc"')
    progress_path(store).write_text(text)
    with pytest.raises(StoreError, match="not a progress file"):
        read_progress(progress_path(store))
    assert api.status(store).live is None  # the store is readable: a damaged progress file says nothing

    holder = _hold(store)
    try:
        progress_path(store).unlink()
        with pytest.raises(StoreLockedError) as exc:  # no progress file: locked, as before
            api.status(store)
        assert exc.value.pid == holder.pid
        write_progress(progress_path(store), Progress(pid=gone.pid, run_id=1))  # stale: not the holder's
        with pytest.raises(StoreLockedError):
            api.status(store)
        # the holder's own file: live progress, and report/export name the PID and point at status
        write_progress(progress_path(store), Progress(pid=holder.pid, run_id=1, round=0, last_round=3, phase="predict",
                                                      pool=900, views=[ViewProgress("va", "predict", 200, 900)],
                                                      rate=50.0, eta_s=14.0, updated_at=time.time()))
        rep = api.status(store)
        assert rep.runs == [] and rep.rounds == [] and rep.run_id == 1
        assert rep.live["state"] == "running" and rep.live["pid"] == holder.pid and 0 <= rep.live["eta_s"] <= 14.0
        assert CliRunner().invoke(app, ["status", str(store)], env={"COLUMNS": "80"}).exit_code == 0
        for call in (lambda: api.export(store, tmp_path / "x.parquet"), lambda: api.report(store, tmp_path / "r.html")):
            with pytest.raises(StoreLockedError) as exc:
                call()
            msg = str(exc.value)
            assert exc.value.pid == holder.pid and f"PID {holder.pid}" in msg and "\n" not in msg
            assert "cotrain status" in msg and "run 1" in msg
        assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "r.html").exists()
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- a real run, watched from here
def _watched_config(tmp: Path) -> Path:
    """A run of a few seconds: 4,000 pool items in batches of 200 through a real sklearn view
    and a plug-in view that takes 30 ms per batch, over four rounds."""
    df = synthetic_frame(n=4000, n_gold=30, n_test=200, seed=3)
    cfg = write_config(tmp, df, policy="k_best", k=200, max_rounds=3, batch_size=200)
    data = yaml.safe_load(cfg.read_text())
    data["views"][1] = {"name": "vb", "kind": "tests.plugin_views:PacedCentroidView",
                        "columns": [f"b_{j}" for j in range(4)], "delay_s": 0.03}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


def test_status_watches_a_real_run_from_another_process(tmp_path: Path):
    cfg = _watched_config(tmp_path)
    store = tmp_path / "run.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "--quiet", str(cfg)], cwd=REPO,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lives: list[dict] = []
    locked_errors: list[StoreLockedError] = []
    cli_codes: list[int] = []
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if store.exists():
                try:
                    rep = api.status(store)
                except StoreLockedError:  # locked before the run wrote its first progress
                    pass
                else:
                    if rep.live is not None and rep.live["state"] == "running" and proc.poll() is None:
                        assert rep.runs == [] and rep.rounds == []
                        lives.append(rep.live)
                        if not locked_errors and rep.live["phase"] == "predict":
                            try:
                                api.export(store, tmp_path / "labels.parquet")
                            except StoreLockedError as exc:
                                locked_errors.append(exc)
                            cli_codes.append(CliRunner().invoke(app, ["status", str(store)],
                                                                env={"COLUMNS": "80"}).exit_code)
            time.sleep(0.1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err

    # live reports: this run's process, its round and per-view counts, moving forward
    assert len(lives) >= 3, lives
    assert all(x["pid"] == proc.pid and x["state"] == "running" and not x["stale"] for x in lives)
    in_rounds = [x for x in lives if x["round"] is not None]
    assert in_rounds and all(x["run_id"] == 1 and x["last_round"] == 3 and 0 <= x["round"] <= 3 for x in in_rounds)
    assert all(0 <= v["done"] <= v["total"] for x in lives for v in x["views"])
    assert {v["view"] for x in lives for v in x["views"]} <= {"va", "vb"}
    rounds = [x["round"] for x in in_rounds]
    assert rounds == sorted(rounds)  # never backwards
    states = [(x["round"], x["rounds_done"], sum(v["done"] for v in x["views"] if v["phase"] == "predict"))
              for x in in_rounds]
    assert len(set(states)) >= 2  # it advanced between polls
    predicting = [x for x in lives if x["phase"] == "predict"]
    assert predicting and any(x["rate"] is not None and x["rate"] > 0 and x["eta_s"] >= 0 for x in predicting)
    assert all(x["pool"] == x["views"][0]["total"] for x in predicting if x["views"][0]["phase"] == "predict"
               and x["round"] == 0)
    assert all(x["llm"]["calls"] == 0 and x["llm"]["cost_usd"] == 0 for x in lives if x["llm"])  # no LLM view
    # report/export while it ran: one line naming the PID, pointing at status
    assert locked_errors and locked_errors[0].pid == proc.pid and "cotrain status" in str(locked_errors[0])
    assert not (tmp_path / "labels.parquet").exists() and cli_codes == [0]

    # after the run: the store opens as usual, the progress file says finished
    rep = api.status(store)
    assert rep.live is None and rep.runs[0]["status"] == "finished" and len(rep.rounds) == 4
    p = read_progress(progress_path(store))
    assert (p.state, p.pid, p.run_id, p.round, p.rounds_done, p.phase) == ("finished", proc.pid, 1, 3, 4, "done")
    keys = set(json.loads(progress_path(store).read_text()))
    assert keys == {f.name for f in dataclasses.fields(Progress)}  # counts and names only: no config in it


def test_a_run_the_store_calls_running_but_no_process_holds_is_interrupted(tmp_path: Path):
    """After a kill -9, a later command (a --new-run, a refused start) rewrote the progress file,
    and status showed the dead run as 'running' for good."""
    from orchestrator import api
    from store.database import Store
    from tests.conftest import write_config

    cfg = write_config(tmp_path, max_rounds=1)
    api.run(cfg)
    api.run(cfg, new_run=True)
    with Store(tmp_path / "run.duckdb") as st:  # run 1 as a kill -9 leaves it: the store never heard it end
        st.mark_run(1, "running")
    rep = api.status(tmp_path / "run.duckdb")
    assert [(r["run_id"], r["status"]) for r in rep.runs] == [(1, "interrupted"), (2, "finished")]


def test_asking_again_for_a_finished_run_keeps_its_final_progress(tmp_path: Path):
    """A re-run that found the run finished (nothing to do) rewrote the progress file with
    rounds_done 0 and no round, losing the finished run's final state (a probe's finding)."""
    cfg = write_config(tmp_path, max_rounds=2)
    first = api.run(cfg)
    path = tmp_path / "run.duckdb.progress.json"
    before = path.read_bytes()
    assert json.loads(before)["state"] == "finished" and json.loads(before)["rounds_done"] >= 1
    again = api.run(cfg)
    assert again.already_finished and again.run_id == first.run_id
    assert path.read_bytes() == before
    api.run(cfg, new_run=True)  # a run that runs writes its own final state
    after = json.loads(path.read_text())
    assert after["run_id"] == first.run_id + 1 and after["state"] == "finished"


def test_a_kill_after_the_last_commit_does_not_leave_status_saying_interrupted(tmp_path: Path):
    """Killed between the last round's commit (the store: finished) and the progress file's
    final write, the file said 'running' for good: status called the finished run interrupted
    ("run it again to resume") and a re-run, finding it finished, put the stale file back."""
    cfg = write_config(tmp_path, max_rounds=1)
    first = api.run(cfg)
    store = tmp_path / "run.duckdb"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_progress(progress_path(store), Progress(pid=gone.pid, run_id=first.run_id, round=1, phase="evaluate"))
    for _ in range(2):
        rep = api.status(store)
        assert rep.live is None and [(r["run_id"], r["status"]) for r in rep.runs] == [(first.run_id, "finished")]
        assert api.run(cfg).already_finished


def test_the_next_writer_clears_what_a_killed_one_left_beside_the_store(tmp_path: Path):
    """After kill -9, DuckDB's temporary folder ``<store>.tmp`` and a half-written progress
    file's ``.<store>.progress.json.*.tmp`` stayed through every later run; the next process
    that opens the store for writing removes them, and only them. A reader removes nothing."""
    store = tmp_path / "s.duckdb"
    Store(store).close()
    spill = tmp_path / "s.duckdb.tmp"
    spill.mkdir()
    (spill / "duckdb_temp_storage_S32K-0.tmp").write_bytes(b"x")
    half = tmp_path / ".s.duckdb.progress.json.8yjiw1po.tmp"
    half.write_text("{")
    other = tmp_path / ".t.duckdb.progress.json.abc.tmp"  # another store's
    other.write_text("{")
    Store(store, read_only=True).close()
    assert spill.exists() and half.exists()
    Store(store).close()
    assert not spill.exists() and not half.exists() and other.exists()
    spill.mkdir()
    (spill / "notes.txt").write_text("mine")  # not DuckDB's: the folder is kept as it is
    Store(store).close()
    assert (spill / "notes.txt").read_text() == "mine"


def test_a_failed_runs_progress_file_still_names_its_error(tmp_path: Path):
    """The store's word on a finished run must not silence a failed one: its file says where
    it stopped and with which error, which status prints."""
    cfg = write_config(tmp_path, max_rounds=2)
    data = yaml.safe_load(cfg.read_text())
    data["views"][1] = {"name": "vb", "kind": "tests.plugin_views:FailingView", "columns": ["b_0"], "fail_round": 1}
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(RuntimeError, match="boom in round 1"):
        api.run(cfg)
    rep = api.status(tmp_path / "run.duckdb")
    assert [r["status"] for r in rep.runs] == ["failed"]
    assert rep.live is not None and rep.live["state"] == "failed" and "RuntimeError" in str(rep.live)
