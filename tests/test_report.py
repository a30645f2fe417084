"""The HTML report of a real small run (an LLM view, a debate, reviews), checked in headless
Chromium: it loads with no console error, asks for nothing outside the file, and shows every
plot."""
from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator import api
from store.database import Store
from store.report import report_data
from tests.conftest import debate_config, sentiment_frame, synthetic_frame, write_config, write_estimates
from tests.openai_server import MisbehavingServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXPECTED_PLOTS = {"test_accuracy", "test_macro_f1", "added", "agreement", "confusion_test", "confusion_review",
                  "confidence", "cost", "precision_coverage"}


@pytest.fixture(scope="module")
def reviewed_run(tmp_path_factory) -> Path:
    """A finished co-training run with an LLM view and a debate, then one review import."""
    tmp = tmp_path_factory.mktemp("report")
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp, srv.base_url, trigger="both", low_confidence=0.95, max_items=4,
                             evaluate_test=3, accept_confidence=0.6)
        api.run(cfg)
    store = tmp / "run.duckdb"
    with Store(store, read_only=True) as st:
        pseudo = st.con.execute("SELECT item_id FROM pseudo_labels ORDER BY item_id LIMIT 4").fetchall()
    truth = dict(zip(sentiment_frame()["id"], sentiment_frame()["text"]))
    rows = [(i, "positive" if any(w in truth[i] for w in ("good", "great", "wonderful", "excellent")) else "negative")
            for (i,) in pseudo]
    (tmp / "reviews.csv").write_text("id,label,reviewer\n" + "".join(f"{i},{lab},rev\n" for i, lab in rows))
    api.import_reviews(store, tmp / "reviews.csv", rounds=0)
    with Store(store, read_only=True) as st:
        estimated = st.scalar("SELECT count(*) FROM round_estimates WHERE est_precision_all IS NOT NULL"
                              " AND coverage IS NOT NULL")
        rounds = [r for (r,) in st.con.execute("SELECT round FROM rounds ORDER BY round").fetchall()]
    if not estimated:  # a run whose selection estimated nothing: the estimates a selection would write
        write_estimates(store, {r: {"est_precision": 0.9, "est_precision_all": 0.95 - 0.01 * r, "coverage": 0.1 * r}
                                for r in rounds},
                        {rounds[-1]: [{"view": "llm", "cv_accuracy": 0.9, "label_model_accuracy": 0.88, "weight": 2.0},
                                      {"view": "tfidf", "cv_accuracy": 0.6, "label_model_accuracy": None,
                                       "weight": 0.4}]})
    return store


def test_report_data_adds_up(reviewed_run: Path):
    with Store(reviewed_run, read_only=True) as st:
        d = report_data(st)
        n_pseudo = st.scalar("SELECT count(*) FROM pseudo_labels")
        n_test = st.scalar("SELECT count(*) FROM items WHERE split = 'test'")
    assert sum(a["n"] for a in d["added"]) == n_pseudo
    assert sum(r["n"] for r in d["gold_test"]) == n_test
    assert sum(r["n"] for r in d["pseudo_vs_review"]) == 4
    assert d["llm"] and d["debates"] and d["precision"]
    assert any("debate" in it for it in d["disputed"])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh installs it as root)")
def test_report_loads_in_headless_chromium_and_shows_every_plot(reviewed_run: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    out = api.report(reviewed_run, tmp_path / "report.html")
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html) and "<script" not in html  # self-contained
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                    else None)
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri(), wait_until="load")
            plots = page.evaluate("""() => [...document.querySelectorAll('figure.plot')].map(f => {
                const img = f.querySelector('img'); const box = img.getBoundingClientRect();
                return {name: f.dataset.plot, complete: img.complete, natural: img.naturalWidth,
                        width: box.width, height: box.height};
            })""")
            links = page.evaluate("""() => [...document.querySelectorAll('a[href^="#debate-"]')].map(
                a => !!document.getElementById(a.getAttribute('href').slice(1)))""")
            headings = page.evaluate("() => [...document.querySelectorAll('h2')].map(h => h.textContent)")
        finally:
            browser.close()
    assert problems == []
    assert all(u.startswith(("file:", "data:")) for u in requests)
    assert {p["name"] for p in plots} == EXPECTED_PLOTS
    for plot in plots:
        assert plot["complete"] and plot["natural"] > 0 and plot["width"] > 200 and plot["height"] > 100, plot
    assert links and all(links)  # every debate link lands on its transcript
    assert {"Run", "Rounds", "Plots", "LLM usage", "Most disputed and debated items", "Reviewers' verdict on pseudo-labels"} \
        <= set(headings)


def test_report_cli_and_bad_input(reviewed_run: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    res = CliRunner().invoke(app, ["report", str(reviewed_run), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 10_000
    for args, named in ((["--run", "9", "--out", str(tmp_path / "x.html")], str(reviewed_run)),
                        (["--out", str(tmp_path / "nope" / "r.html")], str(tmp_path / "nope"))):
        res = CliRunner().invoke(app, ["report", str(reviewed_run), *args])
        lines = res.output.strip().splitlines()  # exit code 1 and one error line naming the store or folder
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # the failures wrote nothing


def test_report_leaves_matplotlib_as_it_found_it(reviewed_run: Path, tmp_path: Path):
    """In a notebook the report must not switch the user's backend, touch pyplot's figures or
    change rcParams; it still draws in its own style (9 pt text kept as text)."""
    import base64

    import matplotlib
    import matplotlib.pyplot as plt

    old = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's own backend (not the Agg the report draws with)
    try:
        with matplotlib.rc_context({"font.size": 13.0, "axes.spines.top": True, "svg.fonttype": "path"}):
            before, figs = dict(matplotlib.rcParams), plt.get_fignums()
            out = api.report(reviewed_run, tmp_path / "report.html")
            assert matplotlib.get_backend() == "svg"
            assert dict(matplotlib.rcParams) == before and plt.get_fignums() == figs
    finally:
        matplotlib.use(old)
    svgs = [base64.b64decode(s).decode() for s in re.findall(r'data:image/svg\+xml;base64,([^"]+)', out.read_text())]
    assert len(svgs) == len(EXPECTED_PLOTS)
    assert all("font-size: 9px" in s and "<text" in s for s in svgs)


# ------------------------------------------------------------------ estimates (issue 13)
@pytest.fixture(scope="module")
def estimated_run(tmp_path_factory) -> Path:
    """A small finished sklearn run whose rounds carry known estimates: round 0 (gold only)
    none, as an older run's rows would be."""
    tmp = tmp_path_factory.mktemp("estimates")
    api.run(write_config(tmp, max_rounds=3))
    store = tmp / "run.duckdb"
    write_estimates(store, {0: {"combination": "single"},
                            1: {"est_precision": 0.97, "est_precision_all": 0.97, "coverage": 0.05},
                            2: {"est_precision": 0.9, "est_precision_all": 0.94, "coverage": 0.09},
                            3: {"est_precision": 0.8, "est_precision_all": 0.9, "coverage": 0.12,
                                "stopped": "min_precision"}},
                    {2: [{"view": "va", "cv_accuracy": 0.5, "label_model_accuracy": 0.52, "weight": 0.3}],
                     3: [{"view": "va", "cv_accuracy": 0.61, "label_model_accuracy": 0.63, "weight": 0.45},
                         {"view": "vb", "cv_accuracy": 0.58, "label_model_accuracy": None, "weight": None}]})
    return store


def test_report_plots_estimated_precision_against_coverage(estimated_run: Path, tmp_path: Path):
    import html as html_mod

    from store.report.plots import _Figures, _plot_precision_coverage

    with Store(estimated_run, read_only=True) as st:
        d = report_data(st)
    pts = [(e["round"], e["coverage"], e["est_precision_all"]) for e in d["estimates"]]
    assert pts == [(0, None, None), (1, 0.05, 0.97), (2, 0.09, 0.94), (3, 0.12, 0.9)]
    assert [(v["view"], v["round"], v["weight"]) for v in d["view_estimates"]] == [("va", 3, 0.45), ("vb", 3, None)]
    [fig] = _plot_precision_coverage(_Figures(), d)  # one figure; round 0 (no estimate) is left out
    assert 'data-plot="precision_coverage"' in fig
    page = api.report(estimated_run, tmp_path / "r.html").read_text()
    assert page.count('data-plot="precision_coverage"') == 1 and 'id="view-estimates"' in page
    table = page.split('id="view-estimates"')[1].split("</table>")[0]
    cells = [html_mod.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", table)]
    assert cells == ["va", "3", "0.610", "0.630", "0.450", "vb", "3", "0.580", "-", "-"]


def test_report_without_estimates(estimated_run: Path, tmp_path: Path):
    """Rows of NULL estimates (an older run's) draw no precision plot and break nothing; a run
    without any has neither the plot nor the table."""
    import shutil

    store = tmp_path / "run.duckdb"
    shutil.copy(estimated_run, store)
    write_estimates(store, {1: {"combination": "single"}, 2: {"combination": "single", "coverage": 0.1}},
                    {2: [{"view": "va"}, {"view": "vb"}]})
    page = api.report(store, tmp_path / "r.html").read_text()
    assert 'data-plot="precision_coverage"' not in page and 'id="view-estimates"' in page
    write_estimates(store, {}, {})
    page = api.report(store, tmp_path / "r.html").read_text()
    assert 'data-plot="precision_coverage"' not in page and 'id="view-estimates"' not in page
    assert 'data-plot="test_accuracy"' in page


def test_labels_with_dollar_signs_are_drawn_as_written(tmp_path: Path):
    """Price tiers as labels: matplotlib's math parsing stopped the report at ``$$`` and drew
    ``$10-$20`` as a formula."""

    df = synthetic_frame(n=120, n_gold=30, n_test=30)
    tiers = {"ant": "$", "bee": "$$", "cat": "$10-$20"}
    df["label"] = df["label"].map(tiers)
    cfg = write_config(tmp_path, df, max_rounds=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["task"]["labels"] = list(tiers.values())
    cfg.write_text(yaml.safe_dump(raw))
    api.run(cfg)
    page = api.report(tmp_path / "run.duckdb", tmp_path / "r.html").read_text()
    svgs = [base64.b64decode(b).decode() for b in re.findall(r"data:image/svg\+xml;base64,([^\"]+)", page)]
    assert svgs and any(">$10-$20<" in svg for svg in svgs) and any(">$$<" in svg for svg in svgs)
