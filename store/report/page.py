"""The report page: one self-contained HTML file (no script, no external resource)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from store.atomic import write_texts
from store.database import Store
from store.errors import StoreError
from store.queries import abstention_reason
from store.report.data import report_data
from store.report.plots import (STYLE, _confusion, _Figures, _plot_added, _plot_agreement, _plot_confidence,
                                _plot_cost, _plot_metrics, _plot_precision_coverage)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:0 24px 60px;
color:#1d232a}
h1{margin:28px 0 4px}h2{margin:36px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.muted{color:#5b6773}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px}
figure{margin:0;background:#fff;border:1px solid #e3e8ee;border-radius:6px;padding:8px}
figure img{width:100%;height:auto;display:block}figcaption{color:#5b6773;font-size:12.5px;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e8edf2;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f6f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv td:first-child{color:#5b6773;width:220px}details{margin:8px 0}pre{background:#f6f8fa;padding:10px;overflow:auto}
.thumb{width:48px;height:48px;image-rendering:pixelated;vertical-align:middle}.turn{border-left:3px solid #c9d3de;margin:6px 0;padding:2px 10px}.label{font-weight:600}
"""



def _table(header: list[str], rows: list[list[Any]], num: set[int] | None = None) -> str:
    num = num or set()
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if j in num else ""}>{c}</td>' for j, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render(d: dict[str, Any]) -> str:
    """The HTML page for ``report_data``'s output."""
    import matplotlib

    info, labels, e = d["info"], d["labels"], html.escape
    cfg = info["config"]
    c = d["counts"]
    figs = _Figures()
    with matplotlib.rc_context(STYLE):
        figures = (_plot_metrics(figs, d) + _plot_added(figs, d) + _plot_agreement(figs, d)
                   + _confusion(figs, d["gold_test"], labels, "ensemble vs held-out gold",
                                "The ensemble's labels on held-out items (last round) against their gold labels.",
                                "confusion_test", "gold", "ensemble")
                   + _confusion(figs, d["pseudo_vs_review"], labels, "pseudo-labels vs reviewers",
                                "Reviewed pseudo-labels against the reviewers' labels.", "confusion_review",
                                "reviewer", "pseudo-label")
                   + _plot_confidence(figs, d) + _plot_precision_coverage(figs, d) + _plot_cost(figs, d))
    views = ", ".join(info["views"])
    summary = _table(["", ""], [
        ["status", e(f"{info['status']}" + (f" ({info['termination']})" if info.get("termination") else ""))],
        ["views", e(views)], ["labels", e(", ".join(labels))],
        ["policy", e(f"{info['policy']} / {info['feeding']}, max_rounds {info['max_rounds']}")],
        ["training items", f"{c['train']:,} ({c['gold']:,} gold, {c['reviewed']:,} reviewed)"],
        ["pseudo-labels", f"{c['accepted']:,} accepted, {c['confirmed']:,} confirmed and {c['revoked']:,} revoked "
                          "by reviewers"],
        ["held-out items", f"{c['test']:,}"],
        ["created / finished", e(f"{info['created_at']} / {info.get('finished_at') or '-'}")],
        ["code version", e(str(info.get("code_version")))]]).replace("<table>", '<table class="kv">', 1)
    order = d["rounds"][0]["view_order"] if d["rounds"] else []
    rounds_table = _table(["round", "pool", "added", "disputed", *order, "agreement", "seconds", "end"], [
        [r["round"], f"{r['pool_size']:,}", r["labels_added"], r["n_disputed"],
         *[_f(r["views"].get(v, {}).get("test_accuracy")) for v in order], _f(r["mean_pairwise_agreement"]),
         _f(r["seconds"], 1), e(r["termination"] or "")] for r in d["rounds"]], num=set(range(0, len(order) + 6)))
    parts = [f"<h1>cotrain run {d['run_id']}</h1><p class=muted>{e(info.get('data_table', ''))} · "
             f"report of a DuckDB store: every number here is a query over it.</p>", "<h2>Run</h2>", summary,
             "<h2>Rounds</h2>", rounds_table, "<h2>Plots</h2>",
             f'<div class="grid">{"".join(figures)}</div>' if figures else "<p class=muted>Nothing to plot yet.</p>"]
    if d["view_estimates"]:
        parts += ['<h2 id="view-estimates">View estimates</h2><p class=muted>Each view\'s latest round: how '
                  "accurate it is estimated to be and how much its vote weighs when the views' evidence is "
                  "combined.</p>",
                  _table(["view", "round", "out-of-fold accuracy on gold", "label-model accuracy", "weight"], [
                      [e(x["view"]), x["round"], _f(x["cv_accuracy"]), _f(x["label_model_accuracy"]), _f(x["weight"])]
                      for x in d["view_estimates"]], num={1, 2, 3, 4})]
    if d["llm"] or d["debates"]:
        parts += ["<h2>LLM usage</h2>", _table(["round", "view", "calls", "cache hits", "errors",
                                                "cancelled once sent", "tokens in/out", "cost", "latency"], [
            [x["round"], e(x["view"]), x["calls"], x["cache_hits"], x["errors"], x["cancelled"],
             f"{x['prompt_tokens']:,}/{x['completion_tokens']:,}", f"${x['cost_usd']:.4f}",
             _f(x["mean_latency_s"], 2)] for x in d["llm"]], num={0, 2, 3, 4, 5, 6, 7, 8})]
        if d["debates"]:
            parts += ["<h3>Debates</h3>", _table(
                ["round", "debated", "verdicts", "accepted", "over budget", "calls", "tokens", "cost",
                 "verdict accuracy on held-out"],
                [[x["round"], x["debated"], x["verdicts"], x["accepted"], x["over_budget"], x["calls"],
                  f"{x['tokens']:,}", f"${float(x['cost_usd'] or 0):.4f}",
                  _f(x["test_verdict_accuracy"]) + (f" ({x['test_debated']})" if x["test_debated"] else "")]
                 for x in d["debates"]], num=set(range(9)))]
    parts += ["<h2>Most disputed and debated items</h2>", _disputed_html(d)]
    if d["precision"]:
        parts += ["<h2>Reviewers' verdict on pseudo-labels</h2>", _table(
            ["by", "source", "confirmed", "corrected", "precision"],
            [[e(x["kind"]), e(x["name"]), x["confirmed"], x["corrected"], _f(x["precision"])] for x in d["precision"]],
            num={2, 3, 4})]
    if d["problems"]:
        parts += ["<h2>Unreadable items</h2>", _table(["view", "problem", "items", "e.g."], [
            [e(x["view"]), e(x["problem"]), x["items"], e(x["example"] or "")] for x in d["problems"]], num={2})]
    parts += ["<h2>Config</h2><details><summary>the run's validated config</summary><pre>"
              f"{e(json.dumps(cfg, indent=2))}</pre></details>"]
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>cotrain run {d['run_id']}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _disputed_html(d: dict[str, Any]) -> str:
    e = html.escape
    items = d["disputed"]
    if not items:
        return "<p class=muted>No item was disputed (no two confident views disagreed) or debated.</p>"
    views = list(dict.fromkeys(v for it in items for v in it["votes"]))
    rows, transcripts = [], []
    for n, it in enumerate(items):
        deb = it.get("debate")
        link = ""
        if deb is not None:
            verdict = deb["verdict"] or "no verdict"
            link = f'<a href="#debate-{n}">{e(verdict)} ({_f(deb["confidence"], 2)})</a>'
            turns = "".join(
                f'<div class=turn><span class=label>{e(t["agent"])} · round {t["debate_round"]} · '
                f'{e(t["label"] or "abstained: " + t["status"])} ({_f(t["confidence"], 2)})</span><br>'
                f'{e(t["rationale"] or abstention_reason(t))}</div>'
                for t in it["turns"])
            transcripts.append(f'<details id="debate-{n}" open><summary>debate on <b>{e(it["item_id"])}</b>: '
                               f'{e(verdict)}, {deb["rounds_used"]} round(s), {deb["calls"]} call(s)</summary>'
                               f"{turns}</details>")
        cells = []
        for v in views:
            lab, conf = it["votes"].get(v, (None, None))
            cells.append("-" if lab is None else f"{e(lab)} ({_f(conf, 2)})")
        text = e(it["text"][:160] + ("…" if len(it["text"]) > 160 else ""))
        if it.get("thumbnail"):
            text = f'<img class=thumb alt="" src="{it["thumbnail"]}"> ' + text
        rows.append([e(it["item_id"]), text, it["rounds"], *cells,
                     e(f"{it['label_now']} ({it['label_source']})") if it["label_now"] else "-", link or "-"])
    out = _table(["item", "text", "rounds disputed", *[f"{v} vote" for v in views], "label now", "debate"], rows,
                 num={2})
    if transcripts:
        out += "<h3>Debate transcripts</h3>" + "".join(transcripts)
    return out


def write_report(store: Store, out: str | Path, run_id: int | None = None, top_disputed: int = 25) -> Path:
    """Render the run's report to ``out`` (one self-contained HTML file). An earlier report
    there is replaced; any other file is not (``--out cotrain.yaml`` replaced the config), nor
    ever the store itself or the runs' input data."""
    from store.exchange.export import check_output_folder, guard_output
    from store.exchange.query import whole_number

    p = Path(out)
    whole_number("top_disputed", top_disputed, optional=False)
    top_disputed = int(top_disputed)  # numpy's integers: DuckDB binds Python's only
    if top_disputed < 0:  # DuckDB's LIMIT refused it with its own message
        raise StoreError(f"--top must be 0 or more (disputed items to list), not {top_disputed}")
    check_output_folder(p)
    guard_output(store, [p], force=True)
    if p.is_file() and not _is_report(p):
        raise StoreError(f"{p} already exists and is not a cotrain report; remove it or choose another name")
    write_texts([(p, render(report_data(store, run_id, top_disputed)))])  # a killed write kept the old one
    return p


def _is_report(path: Path) -> bool:
    """Whether ``path`` starts as :func:`render`'s pages do (an earlier report, safe to replace)."""
    with open(path, "rb") as f:
        head = f.read(200)
    return head.startswith(b"<!doctype html><html lang=en><head>") and b"<title>cotrain run " in head
