"""The CLI is a thin shell: each command works end to end, and errors are one clean line."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import load_config
from tests.conftest import write_config

REPO = Path(__file__).parents[1]
runner = CliRunner()


def test_init_writes_a_valid_commented_config(tmp_path: Path):
    target = tmp_path / "c.yaml"
    res = runner.invoke(app, ["init", str(target)])
    assert res.exit_code == 0, res.output
    text = target.read_text()
    assert text.count("#") > 20
    cfg = load_config(target)
    assert [v.kind for v in cfg.views] == ["sklearn", "embedding", "llm"]
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output


def test_run_status_export(tmp_path: Path):
    """Each command succeeds; what it did is read from the store and the API, not from the
    terminal (whose width the test does not control)."""
    from orchestrator import api

    cfg = write_config(tmp_path)
    store = tmp_path / "run.duckdb"
    res = runner.invoke(app, ["run", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    rep = api.status(store)
    assert [r["round"] for r in rep.rounds] == [0, 1, 2, 3, 4]
    assert rep.rounds[-1]["labels_added"] == 0 and rep.rounds[-1]["termination"] == "max_rounds"
    assert rep.runs[0]["status"] == "finished" and rep.runs[0]["termination"] == "max_rounds"
    res = runner.invoke(app, ["status", str(store)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "labels.csv"
    res = runner.invoke(app, ["export", str(store), str(out), "--min-confidence", "0.9"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == api.export(store, tmp_path / "again.parquet", min_confidence=0.9)
    assert len(df) > 15 and (df.confidence >= 0.9).all()
    res = runner.invoke(app, ["run", str(cfg), "--quiet"])  # finished: nothing runs again
    assert res.exit_code == 0, res.output
    assert len(api.status(store).runs) == 1 and api.run(cfg).already_finished


def test_tables_fit_the_terminal_without_cutting_numbers(tmp_path: Path):
    """At 80 and 40 columns (set here, not inherited) no cell of status is cut short: a
    table too wide for the terminal is split, repeating its key column."""
    cfg = write_config(tmp_path, max_rounds=2)
    assert runner.invoke(app, ["run", str(cfg), "--quiet"]).exit_code == 0
    for width in ("80", "40"):
        res = runner.invoke(app, ["status", str(tmp_path / "run.duckdb")], env={"COLUMNS": width})
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()
        assert "…" not in res.output and max(len(x) for x in lines) <= int(width)
        assert "max_rounds" in lines[-1]  # the last round's end reason is printed in full


def test_fitted_tables_split_rather_than_cut():
    from rich.console import Console

    from orchestrator.tables import fitted_tables

    headers = ["round", *(f"view_{i}" for i in range(12)), "end"]
    rows = [[r, *(f"{0.123456 * i:.3f}" for i in range(12)), "max_rounds"] for r in range(3)]
    tables = fitted_tables("t", headers, rows, 40)
    shown = [[c.header for c in t.columns] for t in tables]
    assert all(cols[0] == "round" for cols in shown)  # the key column is repeated
    assert sorted(h for cols in shown for h in cols[1:]) == sorted(headers[1:])  # every column exactly once
    for t in tables:
        con = Console(width=40, record=True, file=open("/dev/null", "w"))
        con.print(t)
        assert max(con.measure(t).maximum, 0) <= 40


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_errors_are_one_line_with_exit_code_1(tmp_path: Path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("views: [\n")
    cfg = write_config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["views"][0]["kind"] = "telepathy"
    unknown_kind = tmp_path / "unknown.yaml"
    unknown_kind.write_text(yaml.safe_dump(data))
    cases = {
        (str(bad_yaml),): "malformed YAML",
        (str(unknown_kind),): "unknown view kind 'telepathy'",
        (str(tmp_path / "absent.yaml"),): "config file not found",
    }
    for args, expected in cases.items():
        proc = _cli("run", *args)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    proc = _cli("status", str(tmp_path / "nothing.duckdb"))
    assert proc.returncode == 1 and "no such store file" in proc.stderr


def test_help_is_fast():
    t = time.perf_counter()
    proc = _cli("--help")
    assert proc.returncode == 0 and "export" in proc.stdout
    assert time.perf_counter() - t < 5  # heavy libraries are imported lazily
    mods = subprocess.run([sys.executable, "-c", "import orchestrator.cli, sys; "
                           "print(sorted(m for m in ('torch','sklearn','sentence_transformers','litellm','duckdb')"
                           " if m in sys.modules))"], cwd=REPO, capture_output=True, text=True).stdout
    assert mods.strip() == "[]"


def test_models_lists_local_models():
    res = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "smollm2-135m" in res.output and "qwen2.5-coder-0.5b" in res.output


def test_dry_run_estimates_without_calling_or_storing(tmp_path: Path):
    from tests.test_llm_view import llm_config

    cfg = llm_config(tmp_path, "http://127.0.0.1:9/v1", key_env=None,  # nothing listens there: nothing is called
                     price={"input_per_mtok": 0.15, "output_per_mtok": 0.6})
    res = runner.invoke(app, ["run", str(cfg), "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "8 gold, 40 unlabelled, 20 test items" in res.output and "$0.0" in res.output
    assert not (tmp_path / "run.duckdb").exists()


def test_debate_commands(tmp_path: Path):
    from tests.openai_server import MisbehavingServer
    from tests.test_debate import _debate_config

    items = tmp_path / "d.jsonl"
    pd.DataFrame({"id": ["q1", "q2"], "text": ["great film", "dull film"]}).to_json(items, orient="records", lines=True)
    with MisbehavingServer() as srv:
        cfg = _debate_config(tmp_path, srv.base_url, price={"input_per_mtok": 1.0, "output_per_mtok": 1.0},
                             budget_usd=2.0)
        dry = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--dry-run"], env={"COLUMNS": "200"})
        assert dry.exit_code == 0, dry.output
        assert "plan: 2 item(s), at most 12 calls" in dry.output and "(budget $2.00)" in dry.output
        assert srv.count == 0
        res = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--quiet"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "debated 2: 2 verdicts" in res.output and srv.count == 12
        flags = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--dry-run", "--rounds", "3",
                                    "--agents", "4", "--aggregation", "confidence"], env={"COLUMNS": "200"})
        assert flags.exit_code == 0 and "at most 24 calls" in flags.output, flags.output
        bad = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--aggregation", "vote"])
        assert bad.exit_code == 1 and "debate.aggregation" in bad.output
    show = runner.invoke(app, ["debate", "show", "q1", "--store", str(tmp_path / "run.duckdb")],
                         env={"COLUMNS": "200"})
    assert show.exit_code == 0, show.output
    assert "verdict positive" in show.output and show.output.count("round 2  a") == 3
    missing = runner.invoke(app, ["debate", "show", "nope", "--store", str(tmp_path / "run.duckdb")])
    assert missing.exit_code == 1 and "item 'nope' was never debated" in missing.output
