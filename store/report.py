"""``cotrain report``: one self-contained HTML page about a run, for people to look at.

Plots are drawn with matplotlib and embedded as SVG data URIs (no script, no network):
per-view test accuracy and macro-F1 per round, labels added per round by source, the view
agreement matrix, confusion matrices (the ensemble on held-out items; pseudo-labels against
reviewers' labels), the confidence of accepted vs passed-over candidates, and LLM tokens
and dollars per round. Tables list the most disputed items with each view's vote and a link
to the debate transcript, the reviewers' measured precision per source, and unreadable items.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from store.database import Store
from store.errors import StoreError
from store.media import ImageProblem, data_roots, resolve_source
from store.queries import (debate_summary, item_problems, llm_usage, resolve_run, review_precision,
                           rounds_summary)

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


def _svg(fig: Any) -> str:
    """A matplotlib figure as an <img> with an SVG data URI (self-contained, isolated ids)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return f'<img alt="" src="data:image/svg+xml;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(fig: Any, caption: str, name: str) -> str:
    return (f'<figure class="plot" data-plot="{html.escape(name)}">{_svg(fig)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


#: The report's plot style, applied with ``matplotlib.rc_context`` while it draws (the user's
#: rcParams are as before afterwards).
STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
         "svg.hashsalt": "cotrain"}


class _Figures:
    """Makes the report's figures without pyplot: each is a plain ``matplotlib.figure.Figure``
    on its own Agg canvas, so no backend is switched (``matplotlib.use`` is never called, a
    notebook's inline backend stays) and pyplot's figure registry is never touched."""

    def subplots(self, figsize: tuple[float, float]) -> tuple[Any, Any]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot()


# ------------------------------------------------------------------ data
def _rows(store: Store, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    return store.query(sql, params).to_pylist()


def report_data(store: Store, run_id: int | None = None, top_disputed: int = 25) -> dict[str, Any]:
    """Everything the page shows, as plain data (also what a test or notebook may inspect)."""
    rid = resolve_run(store, run_id)
    info = store.run_info(rid)
    labels = list(info["labels"])
    d: dict[str, Any] = {"run_id": rid, "info": info, "labels": labels, "rounds": rounds_summary(store, rid)}
    d["metrics"] = _rows(store, "SELECT round, view, test_accuracy, test_macro_f1, n_train FROM metrics"
                                " WHERE run_id = ? ORDER BY round, view", [rid])
    d["added"] = _rows(store, """
        SELECT round, CASE WHEN source = 'debate' THEN 'debate'
                           WHEN len(source_views) > 1 THEN 'agreement'
                           ELSE coalesce(source_views[1], source) END AS maker, count(*) AS n
        FROM pseudo_labels WHERE run_id = ? GROUP BY ALL ORDER BY round, maker""", [rid])
    d["agreement"] = _rows(store, """
        SELECT view_a, view_b, rate, n_both FROM view_agreement
        WHERE run_id = ? AND round = (SELECT max(round) FROM view_agreement WHERE run_id = ?)""", [rid, rid])
    d["gold_test"] = _rows(store, """
        SELECT coalesce(rv.label, i.gold_label) AS truth, t.label AS predicted, count(*) AS n
        FROM test_predictions t JOIN items i ON i.run_id = t.run_id AND i.item_id = t.item_id
        LEFT JOIN reviewed_labels rv ON rv.run_id = t.run_id AND rv.item_id = t.item_id
        WHERE t.run_id = ? AND t.view = 'ensemble'
          AND t.round = (SELECT max(round) FROM test_predictions WHERE run_id = ?) GROUP BY ALL""", [rid, rid])
    d["pseudo_vs_review"] = _rows(store, """
        SELECT r.label AS truth, p.label AS predicted, count(*) AS n
        FROM pseudo_labels p JOIN reviews r ON r.review_id = p.reviewed_by
        WHERE p.run_id = ? GROUP BY ALL""", [rid])
    d["confidence"] = _rows(store, """
        WITH c AS (SELECT round, item_id, max(confidence) AS conf FROM predictions
                   WHERE run_id = ? AND label IS NOT NULL GROUP BY round, item_id)
        SELECT least(floor(c.conf * 20), 19)::INTEGER AS bin, p.item_id IS NOT NULL AS accepted, count(*) AS n
        FROM c LEFT JOIN pseudo_labels p ON p.run_id = ? AND p.item_id = c.item_id AND p.round = c.round
        GROUP BY ALL ORDER BY bin""", [rid, rid])
    d["llm"] = llm_usage(store, rid)
    d["debates"] = debate_summary(store, rid)
    d["precision"] = review_precision(store, rid)
    d["problems"] = item_problems(store, rid)
    d["counts"] = _rows(store, """
        SELECT (SELECT count(*) FROM items WHERE run_id = ? AND split = 'train' AND gold_label IS NOT NULL) AS gold,
               (SELECT count(DISTINCT item_id) FROM reviews WHERE run_id = ?) AS reviewed,
               (SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'accepted') AS accepted,
               (SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'confirmed') AS confirmed,
               (SELECT count(*) FROM pseudo_labels WHERE run_id = ? AND status = 'revoked') AS revoked,
               (SELECT count(*) FROM items WHERE run_id = ? AND split = 'train') AS train,
               (SELECT count(*) FROM items WHERE run_id = ? AND split = 'test') AS test""", [rid] * 7)[0]
    d["disputed"] = _disputed(store, rid, info, top_disputed)
    return d


def _disputed(store: Store, rid: int, info: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The most disputed items, then the other debated ones: rounds disputed, each view's
    latest vote, the item's label now, a short text of it, and its latest debate with the turns."""
    from store.annotation import display_fields, latest_votes

    rows = _rows(store, """
        WITH ds AS (SELECT item_id, count(*) AS rounds, max(round) AS last FROM disputes WHERE run_id = ?
                    GROUP BY item_id),
             db AS (SELECT item_id, max(round) AS last FROM debates WHERE run_id = ? GROUP BY item_id),
             d AS (SELECT coalesce(ds.item_id, db.item_id) AS item_id, coalesce(ds.rounds, 0) AS rounds,
                          greatest(ds.last, db.last) AS last, db.item_id IS NOT NULL AS debated
                   FROM ds FULL OUTER JOIN db ON db.item_id = ds.item_id)
        SELECT d.item_id, d.rounds, d.last, i.row_idx,
               coalesce(rv.label, i.gold_label, p.label) AS label_now,
               CASE WHEN rv.label IS NOT NULL THEN 'review' WHEN i.gold_label IS NOT NULL THEN 'gold'
                    ELSE p.source END AS label_source
        FROM d JOIN items i ON i.run_id = ? AND i.item_id = d.item_id
        LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = d.item_id
        LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = d.item_id AND p.status = 'accepted'
        ORDER BY d.rounds DESC, d.debated DESC, d.last DESC, d.item_id LIMIT ?""", [rid, rid, rid, top])
    if not rows:
        return []
    ids = [r["item_id"] for r in rows]
    votes = latest_votes(store, rid, ids)
    cols = store.data_columns(rid)
    text_fields, image_fields = display_fields(info["config"], cols)
    texts: dict[int, str] = {}
    thumbs: dict[int, str] = {}
    at = np.asarray([r["row_idx"] for r in rows])
    if text_fields:
        t = store.fetch_rows(rid, at, text_fields[:2]).to_pylist()
        texts = {r["row_idx"]: " | ".join(str(x[c]) for c in text_fields[:2]) for r, x in zip(rows, t)}
    if image_fields:
        data = info["config"].get("data", {})
        roots = data_roots(data.get("train"), data.get("test"))
        t = store.fetch_rows(rid, at, image_fields[:1]).to_pylist()
        thumbs = {r["row_idx"]: _thumbnail(x[image_fields[0]], roots) for r, x in zip(rows, t)}
    debates = {r["item_id"]: r for r in _rows(store, """
        SELECT item_id, arg_max(debate_id, debate_id) AS debate_id FROM debates
        WHERE run_id = ? AND list_contains(?, item_id) GROUP BY item_id""", [rid, ids])}
    for r in rows:
        r["votes"] = {view: (label, conf) for view, label, conf in votes.get(r["item_id"], [])}
        r["text"] = texts.get(r["row_idx"], "")
        r["thumbnail"] = thumbs.get(r["row_idx"])
        deb = debates.get(r["item_id"])
        if deb is not None:
            r["debate"] = _rows(store, "SELECT * FROM debates WHERE debate_id = ?", [deb["debate_id"]])[0]
            r["turns"] = _rows(store, "SELECT * FROM debate_turns WHERE debate_id = ? ORDER BY debate_round,"
                                      " agent = 'judge', agent", [deb["debate_id"]])
    return rows


def _thumbnail(value: Any, roots: Sequence[Path], size: int = 56) -> str | None:
    """A small PNG data URI of an item's image (None when it cannot be read)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with the vision extra
        return None
    try:
        raw = resolve_source(value, roots, "").read()
        with Image.open(io.BytesIO(raw)) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
    except (ImageProblem, OSError, ValueError, SyntaxError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------ plots
def _rounds_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")


def _plot_metrics(figs: _Figures, d: dict[str, Any]) -> list[str]:
    rows = [m for m in d["metrics"] if m["test_accuracy"] is not None]
    if not rows:
        return []
    views = list(dict.fromkeys(m["view"] for m in d["metrics"]))
    out = []
    for key, title in (("test_accuracy", "test accuracy"), ("test_macro_f1", "test macro-F1")):
        fig, ax = figs.subplots(figsize=(6.2, 3.4))
        for v in views:
            pts = [(m["round"], m[key]) for m in rows if m["view"] == v and m[key] is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", lw=2.4 if v == "ensemble" else 1.4, ls="--" if v == "ensemble" else "-",
                        label=v, color="black" if v == "ensemble" else None)
        _rounds_axis(ax)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, ncol=2)
        out.append(_figure(fig, f"Per-view {title} on held-out items, round by round (round 0 = gold labels only).",
                           key))
    return out


def _plot_added(figs: _Figures, d: dict[str, Any]) -> list[str]:
    if not d["added"]:
        return []
    rounds = sorted({a["round"] for a in d["added"]})
    cats = list(dict.fromkeys(a["maker"] for a in d["added"]))
    fig, ax = figs.subplots(figsize=(6.2, 3.4))
    bottom = np.zeros(len(rounds))
    for c in cats:
        h = np.array([sum(a["n"] for a in d["added"] if a["round"] == r and a["maker"] == c) for r in rounds])
        ax.bar(rounds, h, bottom=bottom, label=c)
        bottom += h
    _rounds_axis(ax)
    ax.set_ylabel("pseudo-labels added")
    ax.legend(fontsize=8, frameon=False)
    return [_figure(fig, "Pseudo-labels added per round, by who made them: a single view's pick, several views "
                         "agreeing, or a debate verdict (revoked labels included).", "added")]


def _heatmap(figs: _Figures, m: np.ndarray, rows: list[str], cols: list[str], title: str, fmt: str, cmap: str,
             xlabel: str = "", ylabel: str = "") -> Any:
    fig, ax = figs.subplots(figsize=(max(3.6, 0.55 * len(cols) + 2.4), max(3.0, 0.45 * len(rows) + 1.6)))
    im = ax.imshow(m, cmap=cmap, vmin=0, vmax=np.nanmax(m) if np.isfinite(np.nanmax(m)) and np.nanmax(m) > 0 else 1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if m.size <= 400:
        hi = np.nanmax(m) if np.isfinite(np.nanmax(m)) else 1
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > 0.6 * hi else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _plot_agreement(figs: _Figures, d: dict[str, Any]) -> list[str]:
    if not d["agreement"]:
        return []
    views = sorted({a["view_a"] for a in d["agreement"]} | {a["view_b"] for a in d["agreement"]})
    m = np.eye(len(views))
    for a in d["agreement"]:
        i, j = views.index(a["view_a"]), views.index(a["view_b"])
        m[i, j] = m[j, i] = np.nan if a["rate"] is None else a["rate"]
    fig = _heatmap(figs, m, views, views, "agreement on the pool", ".2f", "viridis")
    return [_figure(fig, "Share of pool items on which two views give the same label (last round with "
                         "predictions; items where either abstains are left out).", "agreement")]


def _confusion(figs: _Figures, rows: list[dict[str, Any]], labels: list[str], title: str, caption: str, name: str,
               ylabel: str, xlabel: str) -> list[str]:
    if not rows:
        return []
    cols = labels + (["(abstain)"] if any(r["predicted"] is None for r in rows) else [])
    m = np.zeros((len(labels), len(cols)))
    for r in rows:
        if r["truth"] in labels:
            m[labels.index(r["truth"]), cols.index(r["predicted"]) if r["predicted"] in labels else -1] += r["n"]
    return [_figure(_heatmap(figs, m, labels, cols, title, ".0f", "Blues", xlabel, ylabel), caption, name)]


def _plot_confidence(figs: _Figures, d: dict[str, Any]) -> list[str]:
    if not d["confidence"]:
        return []
    edges = np.arange(20) / 20
    acc = np.zeros(20)
    rej = np.zeros(20)
    for c in d["confidence"]:
        (acc if c["accepted"] else rej)[c["bin"]] += c["n"]
    fig, ax = figs.subplots(figsize=(6.2, 3.4))
    ax.bar(edges, rej, width=0.05, align="edge", alpha=0.6, label="passed over")
    ax.bar(edges, acc, width=0.05, align="edge", alpha=0.8, label="accepted", bottom=rej)
    ax.set_xlabel("highest view confidence for the item in the round")
    ax.set_ylabel("candidates (item x round)")
    ax.legend(fontsize=8, frameon=False)
    return [_figure(fig, "Confidence of the candidates each round: accepted as pseudo-labels vs passed over.",
                    "confidence")]


def _plot_cost(figs: _Figures, d: dict[str, Any]) -> list[str]:
    per: dict[int, list[float]] = {}
    for x in d["llm"]:
        a = per.setdefault(x["round"], [0.0, 0.0, 0.0])
        a[0] += float(x["prompt_tokens"] or 0)  # sums come back as DECIMAL
        a[1] += float(x["completion_tokens"] or 0)
        a[2] += float(x["cost_usd"] or 0)
    if not per:
        return []
    rounds = sorted(per)
    fig, ax = figs.subplots(figsize=(6.2, 3.4))
    p = np.array([per[r][0] for r in rounds])
    c = np.array([per[r][1] for r in rounds])
    ax.bar(rounds, p, label="prompt tokens")
    ax.bar(rounds, c, bottom=p, label="completion tokens")
    _rounds_axis(ax)
    ax.set_ylabel("tokens")
    ax2 = ax.twinx()
    ax2.plot(rounds, [per[r][2] for r in rounds], color="black", marker="o", label="$ (views + debate)")
    ax2.set_ylabel("dollars")
    ax2.spines["right"].set_visible(True)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, frameon=False)
    return [_figure(fig, "LLM tokens asked per round by views and debate agents (cache hits cost nothing) "
                         "and dollars spent.", "cost")]


# ------------------------------------------------------------------ page
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
                   + _plot_confidence(figs, d) + _plot_cost(figs, d))
    views = ", ".join(f"{v['name']} ({v['kind']})" for v in cfg.get("views", []))
    co = cfg.get("cotrain", {})
    summary = _table(["", ""], [
        ["status", e(f"{info['status']}" + (f" ({info['termination']})" if info.get("termination") else ""))],
        ["views", e(views)], ["labels", e(", ".join(labels))],
        ["policy", e(f"{co.get('policy')} / {co.get('feeding')}, veto {co.get('veto')}, max_rounds "
                     f"{co.get('max_rounds')}")],
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
    if d["llm"] or d["debates"]:
        parts += ["<h2>LLM usage</h2>", _table(["round", "view", "calls", "cache hits", "errors", "tokens in/out",
                                                "cost", "latency"], [
            [x["round"], e(x["view"]), x["calls"], x["cache_hits"], x["errors"],
             f"{x['prompt_tokens']:,}/{x['completion_tokens']:,}", f"${x['cost_usd']:.4f}",
             _f(x["mean_latency_s"], 2)] for x in d["llm"]], num={0, 2, 3, 4, 5, 6, 7})]
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
                f'{e(t["label"] or "abstained")} ({_f(t["confidence"], 2)})</span><br>{e(t["rationale"] or "")}</div>'
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
    there is replaced; the store itself and the runs' input data never are."""
    from store.export import guard_output

    p = Path(out)
    if not p.parent.exists():
        raise StoreError(f"output folder {p.parent} does not exist")
    guard_output(store, [p], force=True)
    p.write_text(render(report_data(store, run_id, top_disputed)), encoding="utf-8")
    return p
