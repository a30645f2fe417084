"""The CLI is a thin shell: each command works end to end, and errors are one clean line.

What a command did is read from the API's return values, the store and the files written,
never from the terminal's text (its layout and wording are free to change); of an error the
contract is the exit code and one line starting with ``error:`` that names the key or file."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app
from orchestrator.config import load_config
from tests.conftest import debate_config, llm_config, write_config, write_estimates
from tests.openai_server import MisbehavingServer

REPO = Path(__file__).parents[1]
runner = CliRunner()


def _error_line(res) -> str:
    """The one line a failed command prints (exit code 1, a line starting with ``error:``)."""
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def test_init_writes_a_valid_commented_config(tmp_path: Path):
    target = tmp_path / "c.yaml"
    res = runner.invoke(app, ["init", str(target)])
    assert res.exit_code == 0, res.output
    text = target.read_text()
    assert text.count("#") > 20
    cfg = load_config(target)
    assert [v.kind for v in cfg.views] == ["sklearn", "embedding", "llm"]
    again = runner.invoke(app, ["init", str(target)])
    assert str(target) in _error_line(again)  # the error names the file ...
    assert target.read_text() == text  # ... which is left as it was
    target.write_text("mine")
    assert runner.invoke(app, ["init", str(target), "--force"]).exit_code == 0
    assert target.read_text() == text
    # a missing folder, a file as the folder, a device: one line naming it, not a traceback
    for bad, says in ((tmp_path / "nodir" / "x.yaml", "does not exist"), (target / "x.yaml", "is a file"),
                      (Path("/dev/null"), "is not a regular file")):
        res = runner.invoke(app, ["init", str(bad), "--force"])
        assert res.exit_code == 1 and str(bad) in _error_line(res) and says in _error_line(res)
        assert "Traceback" not in res.output and "traceback in" not in _error_line(res)


def test_init_never_replaces_a_store_or_writes_through_a_link(tmp_path: Path):
    """`init s.duckdb --force` replaced a store with YAML (every run lost), and wrote through a
    hard link into the file it shared; init now writes only .yaml/.yml names, never over a
    DuckDB file (even under another name, or behind a link), and replaces the file whole."""
    import os

    import duckdb

    store = tmp_path / "s.duckdb"
    with duckdb.connect(str(store)) as con:
        con.execute("CREATE TABLE runs AS SELECT 1 AS run_id")
    before = store.read_bytes()
    (tmp_path / "named.yaml").symlink_to(store)
    os.link(store, tmp_path / "hard.yml")
    for name, says in (("s.duckdb", "name it .yaml or .yml"), ("x.csv", "name it .yaml or .yml"),
                       ("named.yaml", "is a DuckDB database"), ("hard.yml", "is a DuckDB database")):
        res = runner.invoke(app, ["init", str(tmp_path / name), "--force"])
        assert res.exit_code == 1 and says in _error_line(res) and name in _error_line(res), res.output
    assert store.read_bytes() == before and not (tmp_path / "x.csv").exists()
    mine = tmp_path / "mine.yaml"
    mine.write_text("mine: 1\n")
    os.link(mine, tmp_path / "other.yaml")
    assert runner.invoke(app, ["init", str(tmp_path / "other.yaml"), "--force"]).exit_code == 0
    assert mine.read_text() == "mine: 1\n" and "views:" in (tmp_path / "other.yaml").read_text()


def test_run_status_export(tmp_path: Path):
    """Each command succeeds; what it did is read from the store and the API, not from the
    terminal (whose width the test does not control)."""
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


def test_status_reports_the_selections_estimates(tmp_path: Path):
    """Per round: combination, estimated precision (the round's and all so far), coverage,
    whether selection stopped on min_precision; per view: its latest estimates. Older rounds
    without estimates (NULLs) read as None."""
    cfg = write_config(tmp_path, max_rounds=2)
    store = tmp_path / "run.duckdb"
    assert runner.invoke(app, ["run", str(cfg), "--quiet"]).exit_code == 0
    rounds = {1: {"combination": "label_model", "n_calibration": 15, "calibration_accuracy": 0.8, "n_candidates": 40,
                  "n_selected": 12, "est_precision": 0.95, "est_precision_all": 0.95, "coverage": 0.02},
              2: {"combination": "label_model", "n_calibration": 15, "n_candidates": 30, "n_selected": 5,
                  "est_precision": 0.9, "est_precision_all": 0.93, "coverage": 0.03, "stopped": "min_precision"}}
    views = {1: [{"view": "va", "cv_accuracy": 0.7, "label_model_accuracy": 0.72, "weight": 1.1},
                 {"view": "vb", "cv_accuracy": 0.6, "label_model_accuracy": 0.61, "weight": 0.5}],
             2: [{"view": "vb", "cv_accuracy": 0.65, "label_model_accuracy": None, "weight": 0.7}]}
    write_estimates(store, rounds, views)
    rep = api.status(store)
    got = [(e["round"], e["combination"], e["est_precision"], e["est_precision_all"], e["coverage"],
            e["stopped_min_precision"], e["calibration_accuracy"]) for e in rep.estimates]
    assert got == [(1, "label_model", 0.95, 0.95, 0.02, False, 0.8), (2, "label_model", 0.9, 0.93, 0.03, True, None)]
    assert [(v["view"], v["round"], v["cv_accuracy"], v["label_model_accuracy"], v["weight"])
            for v in rep.view_estimates] == [("va", 1, 0.7, 0.72, 1.1), ("vb", 2, 0.65, None, 0.7)]
    res = runner.invoke(app, ["status", str(store)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(x) for x in res.output.splitlines()) <= 80
    write_estimates(store, {1: {"combination": "single"}}, {1: [{"view": "va"}]})  # nothing estimated
    rep = api.status(store)
    assert [(e["est_precision"], e["coverage"], e["stopped_min_precision"]) for e in rep.estimates] == \
        [(None, None, False)]
    assert runner.invoke(app, ["status", str(store)]).exit_code == 0


def test_tables_fit_the_terminal_without_cutting_numbers(tmp_path: Path):
    """At 80 and 40 columns (set here, not inherited) no cell of status is cut short: a
    table too wide for the terminal is split, repeating its key column. (This test is about
    the rendering itself: no line wider than the terminal, no cell ellipsised.)"""
    cfg = write_config(tmp_path, max_rounds=2)
    assert runner.invoke(app, ["run", str(cfg), "--quiet"]).exit_code == 0
    for width in ("80", "40"):
        res = runner.invoke(app, ["status", str(tmp_path / "run.duckdb")], env={"COLUMNS": width})
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()
        assert "…" not in res.output and max(len(x) for x in lines) <= int(width)


def test_the_consoles_read_the_width_when_printing_not_when_made(monkeypatch):
    """The CLI's consoles are made at import; a process that imported it under COLUMNS=80 (an
    xdist worker does) printed later commands at 80 whatever COLUMNS said then."""
    from orchestrator.console import CommandConsole

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "30")
    console = CommandConsole()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "12")
    assert (console.width, console.height) == (40, 12)
    assert CommandConsole(width=55).width == 55  # a width given is kept
    monkeypatch.setenv("TERM", "dumb")  # Emacs' shell: rich alone answers 80 x 25 on a dumb terminal
    dumb = CommandConsole(force_terminal=True)
    assert dumb.is_dumb_terminal and (dumb.width, dumb.height) == (40, 12)
    assert CommandConsole(force_terminal=True, width=55).width == 55
    monkeypatch.delenv("COLUMNS")
    assert dumb.width == 80


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
    # a split table narrower than its title is widened to it, so the title never breaks mid-word
    title = "runs in /tmp/some/store.duckdb"
    narrow = fitted_tables(title, ["run", "state", "views"], [[1, "x" * 60, "va, vb"]], 80, wrap={"views"})
    assert len(narrow) == 2 and all(t.min_width == len(f"{title} (1/2)") for t in narrow)


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
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert str(tmp_path / "nothing.duckdb") in lines[0] and not (tmp_path / "nothing.duckdb").exists()


def test_run_refuses_an_in_memory_store_before_any_round(tmp_path: Path):
    """It ran every round, then failed to show them: the work was gone with the process."""
    cfg = write_config(tmp_path)
    for args in (["run", str(cfg), "--store", ":memory:"], ["run", str(_with_store(cfg, ":memory:"))]):
        res = runner.invoke(app, args)
        assert ":memory:" in _error_line(res) and "keeps nothing" in _error_line(res)
        assert not list(tmp_path.glob("*.duckdb")) and not list(tmp_path.glob("*.progress.json"))


def _with_store(cfg: Path, store: str) -> Path:
    data = yaml.safe_load(cfg.read_text())
    data["store"] = store
    out = cfg.with_name("memory.yaml")
    out.write_text(yaml.safe_dump(data))
    return out


def test_help_is_fast():
    t = time.perf_counter()
    proc = _cli("--help")
    assert proc.returncode == 0 and "export" in proc.stdout
    assert time.perf_counter() - t < 5  # heavy libraries are imported lazily
    mods = subprocess.run([sys.executable, "-c", "import orchestrator.cli, sys; "
                           "print(sorted(m for m in ('torch','sklearn','sentence_transformers','litellm','duckdb')"
                           " if m in sys.modules))"], cwd=REPO, capture_output=True, text=True).stdout
    assert mods.strip() == "[]"


def test_entry_point_freezes_the_heap_at_exit_and_still_runs_atexit_handlers(tmp_path):
    """``main`` collects no garbage during the imports, freezes them before a command works
    (collection back on, so a long run frees its cycles) and freezes the rest at the end;
    handlers registered with atexit, as logging's and Ray's are, still run after it, and a
    failing command keeps its exit code."""
    probe = ("import atexit, gc, sys; from orchestrator.cli import main; "
             "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, 'collecting', gc.isenabled())); "
             "sys.argv = ['cotrain', *sys.argv[1:]]; "
             "main()")
    ok = subprocess.run([sys.executable, "-c", probe, "--help"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("frozen True collecting False")  # --help: no work
    bad = subprocess.run([sys.executable, "-c", probe, "status", str(tmp_path / "missing.duckdb")], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.strip().endswith("frozen True collecting True")


def test_app_run_in_process_leaves_the_callers_collector_alone(tmp_path):
    """Only ``main`` (the process's entry point) turns collection off and freezes the heap: a
    caller that runs ``app`` itself (tests, a notebook) and had collection off keeps it off,
    and nothing is frozen."""
    import gc

    from typer.testing import CliRunner

    from orchestrator.cli import app

    frozen = gc.get_freeze_count()
    gc.disable()
    try:
        res = CliRunner().invoke(app, ["init", str(tmp_path / "cotrain.yaml")])
        assert res.exit_code == 0 and (tmp_path / "cotrain.yaml").exists()
        assert not gc.isenabled() and gc.get_freeze_count() == frozen
    finally:
        gc.enable()


def test_columns_zero_reads_as_unset(tmp_path):
    """``COLUMNS=0`` (rich took it as no columns) still prints errors and help."""
    import os

    env = {**os.environ, "COLUMNS": "0"}
    bad = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(tmp_path / "none.duckdb")],
                         cwd=REPO, capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "no such store file" in bad.stderr
    help_ = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--help"], cwd=REPO, capture_output=True,
                           text=True, env=env)
    assert help_.returncode == 0 and "export" in help_.stdout


def test_models_lists_local_models():
    rows = {m["name"]: m for m in api.models()}
    assert {"smollm2-135m", "qwen2.5-coder-0.5b"} <= set(rows)
    assert [name for name, m in rows.items() if m["default"]] == ["smollm2-135m"]
    assert all(m["path"] == "" or m["installed"] for m in rows.values())  # a path only for an installed model
    res = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output


def test_dry_run_estimates_without_calling_or_storing(tmp_path: Path):
    cfg = llm_config(tmp_path, "http://127.0.0.1:9/v1", key_env=None,  # nothing listens there: nothing is called
                     price={"input_per_mtok": 0.15, "output_per_mtok": 0.6})
    before = _files(tmp_path)
    plan = api.plan(cfg)
    assert (plan["n_gold"], plan["n_pool"], plan["n_test"], plan["max_rounds"]) == (8, 40, 20, 2)
    [v] = plan["views"]  # the LLM view; TF-IDF costs nothing per call
    assert v["view"] == "llm" and v["calls_per_item"] == 1 and v["demonstrations"] == "none"
    # pool, test and the gold items (asked out of fold); zero-shot: later rounds ask the same prompts (cache hits)
    assert v["items"] == 40 + 20 + 8 and v["calls"] == 68
    assert v["cost_usd"] == pytest.approx((v["prompt_tokens"] * 0.15 + v["completion_tokens"] * 0.6) / 1e6, rel=1e-3)
    assert 0 < v["cost_usd"] < 0.01 and v["budget_usd"] is None and plan["debate"] is None
    res = runner.invoke(app, ["run", str(cfg), "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert _files(tmp_path) == before  # nothing written: no store, no progress file


def test_debate_commands(tmp_path: Path, monkeypatch):
    items = tmp_path / "d.jsonl"
    pd.DataFrame({"id": ["q1", "q2"], "text": ["great film", "dull film"]}).to_json(items, orient="records", lines=True)
    store = tmp_path / "run.duckdb"
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url, price={"input_per_mtok": 1.0, "output_per_mtok": 1.0},
                            budget_usd=2.0)
        plan = api.debate(cfg, items, dry_run=True).plan
        assert (plan["items"], plan["calls"], plan["budget_usd"]) == (2, 12, 2.0)  # 2 items x 3 agents x 2 rounds
        assert plan["cost_usd"] > 0 and [a["calls"] for a in plan["agents"]] == [2, 2, 2]
        dry = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--dry-run"], env={"COLUMNS": "200"})
        assert dry.exit_code == 0, dry.output
        assert srv.count == 0 and not store.exists()
        res = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--quiet"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert srv.count == 12  # no consensus at 0.95: every agent speaks in both rounds
        again = api.debate(cfg, items)  # what the command filed: every turn is in the store's cache
        assert (again.n_items, again.verdicts, again.no_verdict, again.over_budget) == (2, 2, 0, 0)
        assert again.calls == 0 and srv.count == 12
        # the flags reach the API as overrides of the config's debate section
        seen: list[tuple[dict, api.DebateReport]] = []
        real = api.debate

        def spy(*args, **kwargs):
            rep = real(*args, **kwargs)
            seen.append((kwargs, rep))
            return rep

        monkeypatch.setattr(api, "debate", spy)
        flags = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--dry-run", "--rounds", "3",
                                    "--agents", "4", "--aggregation", "confidence"], env={"COLUMNS": "200"})
        assert flags.exit_code == 0, flags.output
        [(kwargs, rep)] = seen
        assert kwargs["dry_run"] and kwargs["overrides"] == {"rounds": 3, "n_agents": 4, "aggregation": "confidence"}
        assert rep.plan["calls"] == 2 * 4 * 3 and srv.count == 12
        monkeypatch.setattr(api, "debate", real)
        bad = runner.invoke(app, ["debate", str(cfg), "--items", str(items), "--aggregation", "vote"])
        assert "debate.aggregation" in _error_line(bad) and srv.count == 12
    show = runner.invoke(app, ["debate", "show", "q1", "--store", str(store)], env={"COLUMNS": "200"})
    assert show.exit_code == 0, show.output
    t = api.debate_transcript(store, "q1")
    assert t["debate"]["verdict"] == "positive" and t["debate"]["run_id"] is None
    assert [(x["debate_round"], x["agent"]) for x in t["turns"]] == [(r, f"a{i}") for r in (0, 1) for i in range(3)]
    missing = runner.invoke(app, ["debate", "show", "nope", "--store", str(store)])
    assert "'nope'" in _error_line(missing)


def test_the_cli_turns_library_progress_bars_off_in_a_fresh_process():
    """transformers prints a tqdm bar while it dequantises a GGUF model; the CLI turns tqdm off
    (``TQDM_DISABLE``) before any command imports it, quiet or verbose; a value the user set
    (empty: show the bars) is left alone. Checked in a fresh interpreter, as a command starts."""
    probe = ("import os, sys; from orchestrator.cli import _logging; _logging(sys.argv[1] == 'v'); "
             "import tqdm.auto; print(repr(os.environ.get('TQDM_DISABLE')), tqdm.auto.tqdm(range(1)).disable)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TQDM_DISABLE"}

    def probe_with(mode: str, **extra: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", probe, mode], cwd=REPO, env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.split()

    assert probe_with("q") == probe_with("v") == ["'1'", "True"]
    assert probe_with("v", TQDM_DISABLE="") == ["''", "False"]


def test_data_values_in_the_cli_output_are_text_not_markup():
    """An item id ``[/bold]`` crashed ``debate show`` (Rich read it as a closing tag) and a
    transcript's ``[model]`` vanished as a tag; the CLI's consoles print values as written."""
    from rich.console import Console

    from orchestrator import cli
    from orchestrator.console import print_transcript

    assert not cli.out._markup and not cli.err._markup
    t = {"debate": {"item_id": "[/bold]", "run_id": None, "round": None, "trigger": "[red]x", "verdict": "pos",
                    "confidence": 0.9, "aggregation": "majority", "rounds_used": 1, "early_stopped": False},
         "turns": [{"label": "pos", "status": "ok", "debate_round": 0, "agent": "a1", "model": "m1",
                    "confidence": 0.8, "rationale": "[/i] because"}]}
    con = Console(markup=False, record=True, width=200)
    print_transcript(con, t)
    text = con.export_text()
    assert "item [/bold]" in text and "[red]x" in text and "round 0  a1 [m1]" in text and "[/i] because" in text


@pytest.mark.parametrize("argv, line", [
    (["export", "x.duckdb", "y.csv", "--sample", "abc"],
     "error: Invalid value for '--sample': Input should be a valid integer, unable to parse string as an integer; "
     "see `cotrain export --help`"),
    (["export"], "error: Missing argument 'store'; see `cotrain export --help`"),
    (["nosuchcmd"], "error: No such command 'nosuchcmd'; see `cotrain --help`"),
])
def test_a_command_line_that_does_not_parse_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], line: str):
    """It was a framed box of four lines sized to the terminal; every other failure is one line."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**env, "PYTHONPATH": str(REPO)})
    assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (2, "", [line])


def test_debate_show_writes_what_a_terminal_would_act_on_as_escapes():
    """An agent's rationale holding ESC[2J cleared the screen of `debate show`, and a newline in
    it (or in an item id) forged a line of its own; table cells from data are escaped alike."""
    import io

    from rich.console import Console

    from orchestrator.console import print_tables, print_transcript, printable

    assert printable("ok\x1b[31mred\nx\r\u202eevil") == "ok\\x1b[31mred\\nx\\r\\u202eevil"
    assert printable("café ☃") == "café ☃" and printable(0.5) == 0.5
    assert printable("a\u2028b\u200fc\x9b") == "a\\u2028b\\u200fc\\x9b"  # line separator, RTL mark, CSI
    from orchestrator.console import dollars
    assert [dollars(x) for x in (0, 0.0015, 9e-05, 0.05, 2.0)] == ["$0.00", "$0.0015", "$0.000090", "$0.050", "$2.00"]
    buf = io.StringIO()
    out = Console(file=buf, width=200, markup=False, color_system=None)
    debate = {"item_id": "e1\nFAKE", "run_id": None, "round": None, "trigger": "items", "status": "done",
              "verdict": "positive", "confidence": 0.9, "aggregation": "majority", "rounds_used": 1,
              "early_stopped": True}
    turns = [{"debate_round": 0, "agent": "a1", "model": "openai/fake", "label": "positive", "status": "ok",
              "confidence": 0.95, "rationale": "fine\x1b[2J\x1b[31mRED\nFAKE LINE: verdict negative\r"}]
    print_transcript(out, {"debate": debate, "turns": turns})
    print_tables(out, "t", ["id"], [["x\x1b[2Jy"]])
    text = buf.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert [line for line in text.splitlines() if "FAKE" in line] == [
        "item e1\\nFAKE (standalone, items): verdict positive (confidence 0.90, majority, 1 round(s), stopped early)",
        "  round 0  a1 [openai/fake]: positive (0.95) fine\\x1b[2J\\x1b[31mRED\\nFAKE LINE: verdict negative\\r"]


def test_an_error_line_writes_what_a_terminal_would_act_on_as_escapes(tmp_path: Path):
    """`cotrain status` on a file name holding ESC ] 0 ; ... BEL (a terminal-title sequence)
    printed it raw in its error line (a probe's finding); every error line escapes it."""
    import os

    name = tmp_path / "n\x1b]0;t\x07.duckdb"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(name)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**env, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "n\\x1b]0;t\\x07.duckdb" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_a_commands_log_lines_scrub_the_values_its_config_names(tmp_path: Path):
    """A warning quoting a key of no known shape (a self-hosted server's, named by
    ``api_key_env``) printed it: the command's log handler scrubs the values the config names,
    and keeps every other word of the line."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"views": [{"name": "llm", "kind": "llm", "api_key_env": "MY_SERVER_KEY"}]}))
    probe = ("import logging, os, sys; from orchestrator.cli_text import setup_logging; setup_logging(False, sys.argv[1]);"
             " logging.getLogger('cotrain').warning('view llm: refused with key %s (head %s)',"
             " os.environ['MY_SERVER_KEY'], os.environ['MY_SERVER_KEY'][:9])")
    env = {**__import__("os").environ, "MY_SERVER_KEY": "devSERVERkey4242abc"}
    proc = subprocess.run([sys.executable, "-c", probe, str(cfg)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True)
    assert proc.stderr.strip() == "cotrain: view llm: refused with key *** (head ***)"
