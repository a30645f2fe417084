"""The report's plots: matplotlib figures drawn on their own canvas (no pyplot, no backend
switch) and embedded as SVG data URIs."""
from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def _svg(fig: Any) -> str:
    """A matplotlib figure as an <img> with an SVG data URI (self-contained, isolated ids)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return f'<img alt="" src="data:image/svg+xml;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(fig: Any, caption: str, name: str) -> str:
    return (f'<figure class="plot" data-plot="{html.escape(name)}">{_svg(fig)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


#: The report's plot style, applied with ``matplotlib.rc_context`` while it draws (the user's
#: rcParams are as before afterwards). Labels and view names are drawn as written: with math
#: parsing on, a label ``$$`` stopped the report and ``$10-$20`` was drawn as math.
STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
         "svg.hashsalt": "cotrain", "text.parse_math": False, "text.usetex": False}


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


def _plot_precision_coverage(figs: _Figures, d: dict[str, Any]) -> list[str]:
    """Estimated precision of every accepted label so far against the share of the pool
    labelled, one point per round (rounds without both estimates, e.g. older runs, are left
    out). Only the estimate is drawn: the store holds no benchmark truth for the pool."""
    pts = [(e["round"], e["coverage"], e["est_precision_all"]) for e in d.get("estimates", [])
           if e["coverage"] is not None and e["est_precision_all"] is not None]
    if not pts:
        return []
    rounds, x, y = zip(*pts)
    fig, ax = figs.subplots(figsize=(6.2, 3.4))
    ax.plot(x, y, marker="o", color="black", lw=1.2)
    for r, xi, yi in pts:
        ax.annotate(str(r), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("coverage (share of the pool pseudo-labelled)")
    ax.set_ylabel("estimated precision (all labels)")
    ax.set_title("estimated precision vs coverage")
    ax.grid(alpha=0.3)
    return [_figure(fig, "Estimated precision of every accepted pseudo-label so far (mean p_correct) against the "
                         "share of the pool they cover, after each round (the point's number).",
                    "precision_coverage")]


# ------------------------------------------------------------------ page
