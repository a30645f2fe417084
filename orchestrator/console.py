"""What the CLI prints: progress bars, and the tables and lines of each command's result.

Every function takes the ``rich`` console to print on (the CLI's); tables go through
``orchestrator.tables`` so they fit the terminal without cutting a number.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions


class CommandConsole(Console):
    """A console that goes quiet when its reader goes away (``cotrain run cfg | head -1``): rich's
    default raised SystemExit mid-round and the run stopped as failed; now it finishes unheard.
    Any other failed write (``> /dev/full``: no space left) also goes quiet, so a run is not
    failed by its own progress line, and is kept in ``write_error``: the entry point ends the
    command with exit code 1 and one line saying its output is incomplete (a script reading
    that output must not take a cut-off file for a whole one).
    ``COLUMNS=0`` reads as unset: rich took it as no columns and printed nothing, errors included.
    ``COLUMNS`` and ``LINES`` are read when printing, not when the console is made: rich fixes
    them at construction, and the CLI's consoles are made at import, so a process that imported
    the CLI under one width (a test runner's worker sets 80) printed every later command at it."""

    def __init__(self, **kwargs: Any) -> None:
        if zero_columns():
            kwargs.setdefault("width", shutil.get_terminal_size().columns)  # the terminal's, or 80
        super().__init__(**kwargs)
        if kwargs.get("width") is None:
            self._width = None  # rich's ``size`` then reads COLUMNS each time
        if kwargs.get("height") is None:
            self._height = None
        self.write_error: OSError | None = None

    @property
    def size(self) -> ConsoleDimensions:
        """rich's size, except that on a dumb terminal (``TERM=dumb``: Emacs' shell) COLUMNS and
        LINES still count: rich then answers 80 x 25 whatever they say."""
        dims = Console.size.fget(self)  # type: ignore[attr-defined]
        if self.is_dumb_terminal:
            cols, lines = self._environ.get("COLUMNS", ""), self._environ.get("LINES", "")
            width = self._width or (int(cols) if cols.isdigit() and int(cols) else dims.width)
            height = self._height or (int(lines) if lines.isdigit() and int(lines) else dims.height)
            return ConsoleDimensions(width, height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except BrokenPipeError:  # rich before 13.8 calls no on_broken_pipe of its own
            self.on_broken_pipe()
        except OSError as exc:
            self.write_error = self.write_error or exc
            del self._buffer[:]
            self.on_broken_pipe()  # quiet, onto /dev/null: Python's flush at exit finds nothing to fail on

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())
        os.close(devnull)


def zero_columns() -> bool:
    """Whether ``COLUMNS`` is set to 0 (rich reads it as a terminal no column wide)."""
    return os.environ.get("COLUMNS", "").strip().isdigit() and int(os.environ["COLUMNS"]) == 0


class RichReporter:
    """Progress bars per round and per view."""

    def __init__(self, out: Console) -> None:
        self.out = out
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=out, transient=True)
        self.tasks: dict[str, Any] = {}
        self.round_task: Any = None

    def __enter__(self) -> RichReporter:
        return self  # the display starts with the first round: a run refused before one prints nothing

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.progress.live.is_started:
            return
        if exc_type is None:
            self.progress.stop()
        else:  # Progress.stop ends piped output with a blank line: a failed run's only stdout
            self.progress.live.stop()

    def round_started(self, round_idx: int, pool_size: int, n_views: int) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        for t in self.tasks.values():
            self.progress.remove_task(t)
        self.tasks = {}
        if self.round_task is None:
            self.round_task = self.progress.add_task("rounds", total=None)
        self.progress.update(self.round_task, description=f"round {round_idx} (pool {pool_size:,})")

    def advance(self, view: str, phase: str, n: int, total: int) -> None:
        if not self.progress.live.is_started:  # encoding before round 0
            self.progress.start()
        key = f"{view}:{phase}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"  {view} {phase}", total=total)
        self.progress.advance(self.tasks[key], n)

    def round_finished(self, summary: dict[str, Any]) -> None:
        self.progress.advance(self.round_task, 1)
        m = summary["metrics"].get("ensemble", (None, None))[0]
        acc = f", ensemble test acc {m:.3f}" if m is not None else ""
        self.out.print(f"round {summary['round']}: +{summary['added']} labels, {summary['disputed']} disputed"
                  f"{acc} ({summary['seconds']:.1f}s)", highlight=False)



def dollars(x: float) -> str:
    """An amount with the digits it needs: a $0.0015 budget printed as $0.00."""
    if x == 0 or abs(x) >= 0.1:
        return f"${x:.2f}"
    return f"${x:.{max(2, 1 - math.floor(math.log10(abs(x))))}f}"  # two significant digits, never 9e-05


def print_plan(out: Console, p: dict[str, Any]) -> None:
    out.print(f"data: {p['n_gold']} gold, {p['n_pool']:,} unlabelled, {p['n_test']} test items; "
              f"up to {p['max_rounds']} rounds")
    for line in p.get("unread_settings", []):
        out.print(f"note: {line}", highlight=False)
    if p.get("debate"):
        d = p["debate"]
        cost = "unknown price" if d["cost_usd"] is None else f"${d['cost_usd']:.4f}"
        if d["cost_usd"] is not None and d.get("budget_usd") is not None and d["cost_usd"] > d["budget_usd"]:
            cost = f"${d['cost_usd']:.4f} unbudgeted, at most ${d['budget_usd']:.4f} (the budget)"
        tokens = f"~{d['tokens']:,} tokens"
        if d.get("budget_tokens") is not None and d["tokens"] > d["budget_tokens"]:
            tokens += f" unbudgeted, at most {d['budget_tokens']:,} (the token budget)"
        out.print(f"debate: at most {d['items']} item(s), {d['calls']:,} calls, {tokens}, {cost}", highlight=False)
    if p.get("escalation"):  # the items the budget buys are an estimate: answers cheaper than the offline
        e = p["escalation"]  # token count let 35 items fit where the dry run said "at most 31"
        cost = "unknown price" if e["cost_usd"] is None else f"about {dollars(e['cost_usd'])}"
        calib = f" + {e['calibration_items']:,} calibration" if e.get("calibration_items") else ""
        out.print(f"escalation to {e['model']}: about {e['items']:,} item(s) (at most {e['items_bound']:,}) + "
                  f"{e['gold_items']:,} gold{calib}, about {e['calls']:,} calls, {cost}, never over the budget "
                  f"({dollars(e['budget_usd'])})", highlight=False)
    if not p["views"]:
        out.print("no LLM view" + ("" if p.get("debate") or p.get("escalation") else ": nothing is paid per call"))
        return
    rows = [[v["view"], v["model"], v["mode"], v["demonstrations"], f"{v['calls']:,}", f"{v['prompt_tokens']:,}",
             f"{v['completion_tokens']:,}", "unknown price" if v["cost_usd"] is None else f"${v['cost_usd']:.4f}",
             "-" if v["budget_usd"] is None else dollars(v["budget_usd"])] for v in p["views"]]
    print_tables(out, "LLM views: estimated calls for the whole run (upper bounds)",
                  ["view", "model", "scoring", "demos", "calls", "prompt tok", "output tok", "cost", "budget"], rows,
                  left={"view", "scoring", "demos"}, wrap={"model"})


def print_debates(out: Console, rep: Any) -> None:
    """The debates of a status report: per round of its run, or the store's standalone ones."""
    if not rep.debates:
        return
    rows = [["-" if x["round"] is None else x["round"], x["debated"], x["verdicts"], x["accepted"], x["over_budget"],
             x["calls"], f"{x['tokens']:,}", f"${x['cost_usd']:.4f}",
             "-" if x["test_verdict_accuracy"] is None else f"{x['test_verdict_accuracy']:.3f} ({x['test_debated']})"]
            for x in rep.debates]
    print_tables(out, "standalone debates" if rep.run_id is None else f"run {rep.run_id}: debates per round",
                  ["round", "debated", "verdicts", "accepted", "budget", "calls", "tokens", "cost", "test acc"], rows)


#: Characters a terminal acts on rather than shows: escape sequences, newlines, carriage
#: returns, and the bidirectional overrides that reorder what follows them.
_ACTING = {*map(chr, range(32)), *map(chr, range(127, 160)), *map(chr, range(0x202A, 0x202F)),
           *map(chr, range(0x2066, 0x206A)), "\u200e", "\u200f", "\u061c", "\u2028", "\u2029"}


def printable(value: Any) -> Any:
    """Text from data or a model (an item id, an agent's rationale) with every character a
    terminal would act on written as its escape (``\\x1b``, ``\\n``): a rationale holding
    ``ESC[2J`` cleared the screen of `debate show`, and a newline forged a line of its own.
    Anything but text is returned as it is."""
    if not isinstance(value, str) or not any(ch in _ACTING for ch in value):
        return value
    return "".join(ch.encode("unicode_escape").decode("ascii") if ch in _ACTING else ch for ch in value)


def print_transcript(out: Console, t: dict[str, Any]) -> None:
    from store.queries import abstention_reason  # here: `cotrain --help` imports no DuckDB

    t = {"debate": {k: printable(v) for k, v in t["debate"].items()},
         "turns": [{k: printable(v) for k, v in turn.items()} for turn in t["turns"]]}
    d = t["debate"]
    where = "standalone" if d["run_id"] is None else f"run {d['run_id']}, round {d['round']}"
    if d.get("status") == "budget":  # it showed "verdict - (confidence 0.00, 0 round(s))"
        out.print(f"item {d['item_id']} ({where}, {d['trigger']}): not debated: the budget left could not pay "
                  "for its debate", highlight=False)
        return
    out.print(f"item {d['item_id']} ({where}, {d['trigger']}): verdict {d['verdict'] or '-'} "
              f"(confidence {d['confidence'] or 0:.2f}, {d['aggregation']}, {d['rounds_used']} round(s)"
              f"{', stopped early' if d['early_stopped'] else ''})", highlight=False)
    for turn in t["turns"]:
        label = turn["label"] or f"abstained ({turn['status']})"
        out.print(f"  round {turn['debate_round']}  {turn['agent']} [{turn['model']}]: {label} "
                  f"({turn['confidence'] or 0:.2f}) {turn['rationale'] or abstention_reason(turn)}", highlight=False)


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_precision(out: Console, rows: list[dict[str, Any]], title: str) -> None:
    """Reviewers' verdicts per pseudo-label source: confirmed, corrected, precision."""
    print_tables(out, title, ["by", "source", "confirmed", "corrected", "precision"],
                  [[x["kind"], x["name"], x["confirmed"], x["corrected"], f"{x['precision']:.3f}"] for x in rows],
                  left={"by", "source"}, keep=2)


def print_tables(out: Console, title: str, headers: list[str], rows: list[list[Any]], **kw: Any) -> None:
    """Print rows as one or more tables that fit the terminal without cutting a number."""
    from orchestrator.tables import fitted_tables

    rows = [[printable(c) for c in row] for row in rows]  # ids, labels and texts from data or a model
    for t in fitted_tables(title, headers, rows, out.width, **kw):
        out.print(t)


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def print_live(out: Console, p: dict[str, Any]) -> None:
    """A running run's progress (``api.live_progress``), or one line about a run whose
    process ended without finishing."""
    run = "a run" if p["run_id"] is None else f"run {p['run_id']}"
    where = "while starting" if p["round"] is None else f"in round {p['round']} ({p['phase']})"
    if p["state"] != "running":
        why = p["state"] + (f": {p['error']}" if p.get("error") else "")
        if p["state"] == "failed" and p["run_id"] is None:  # refused before it created a run: nothing to resume
            out.print(f"the last `cotrain run` (PID {p['pid']}) failed while starting ({p.get('error') or 'error'}) "
                      "and created no run; fix what its error said and run it again", highlight=False)
        elif p["state"] == "failed":
            out.print(f"{run}: its process (PID {p['pid']}) stopped with an error ({why}) {where}; fix what the "
                      "error said, then run it again to resume", highlight=False)
        else:
            out.print(f"{run}: its process (PID {p['pid']}) ended without finishing ({why}) {where}; "
                      "run it again to resume", highlight=False)
        return
    of = "" if p["last_round"] is None else f" of {p['last_round']}"
    head = "starting" if p["round"] is None else f"round {p['round']}{of}, {p['phase']}"
    rows = [[v["view"], v["phase"], f"{v['done']:,}", f"{v['total']:,}",
             f"{100 * v['done'] / v['total']:.0f}%" if v["total"] else "-"] for v in p["views"]]
    print_tables(out, f"{run} is running (PID {p['pid']}): {head}", ["view", "step", "done", "total", "%"], rows,
                  left={"view", "step"}, wrap={"view"})
    rate = "-" if p["rate"] is None else f"{p['rate']:,.1f} items/s"
    out.print(f"rate {rate}, ETA of this step {duration(p['eta_s'])}, pool {p['pool'] or 0:,}, "
              f"updated {p['age_s']:.1f}s ago", highlight=False)
    u = p.get("llm") or {}
    if u.get("calls") or u.get("cache_hits"):
        cut = f"{u['cancelled']:,} cancelled, " if u.get("cancelled") else ""
        out.print(f"LLM so far: {u['calls']:,} calls, {u['cache_hits']:,} cached, {u['errors']:,} errors, {cut}"
                  f"{u['prompt_tokens']:,}/{u['completion_tokens']:,} tokens, ${u['cost_usd']:.4f}", highlight=False)


def print_status(out: Console, store: str, run_id: int | None) -> None:
    from orchestrator import api

    rep = api.status(store, run_id)
    if rep.live is not None:
        print_live(out, rep.live)
        if not rep.runs:
            return
    runs = []
    for r in rep.runs:
        state = r["termination"] if r["status"] == "finished" else r["status"]
        runs.append([r["run_id"], state, f"{r['policy']}/{r['feeding']}", r["n_gold"], r["n_reviewed"], r["n_pseudo"],
                     r["n_rounds"], r["n_test"], ", ".join(r["views"])])
    print_tables(out, f"runs in {rep.store}", ["run", "state", "policy", "gold", "reviewed", "pseudo", "rounds", "test",
                                                "views"],
                  runs, left={"state", "policy"}, wrap={"views"})
    if not rep.rounds:
        print_debates(out, rep)  # a store of standalone debates has those
        return
    order = rep.rounds[0]["view_order"]
    rows = [[rd["round"], f"{rd['pool_size']:,}", rd["labels_added"], rd["n_disputed"],
             *(fmt(rd["views"].get(v, {}).get("test_accuracy")) for v in order),
             fmt(rd["mean_pairwise_agreement"]), rd["termination"] or ""] for rd in rep.rounds]
    print_tables(out, f"run {rep.run_id}: rounds (test accuracy per view)",
                  ["round", "pool", "added", "disp", *order, "agree", "end"], rows, left={"end"})
    if rep.estimates:
        rows = [[x["round"], x["combination"], f"{x['n_selected']}/{x['n_candidates']}", fmt(x["est_precision"]),
                 fmt(x["est_precision_all"]), fmt(x["coverage"]),
                 "min_precision" if x["stopped_min_precision"] else (x["stopped"] or "")] for x in rep.estimates]
        print_tables(out, f"run {rep.run_id}: selection estimates per round",
                     ["round", "combination", "picked", "est prec", "est prec all", "coverage", "stopped"], rows,
                     left={"combination", "stopped"})
    if rep.view_estimates:
        rows = [[x["view"], x["round"], fmt(x["cv_accuracy"]), fmt(x["label_model_accuracy"]), fmt(x["weight"])]
                for x in rep.view_estimates]
        print_tables(out, f"run {rep.run_id}: view estimates (latest round)",
                     ["view", "round", "cv acc", "label-model acc", "weight"], rows, left={"view"}, wrap={"view"})
    if rep.llm:
        refused = any(x["over_budget"] for x in rep.llm)  # the column only when a budget bit
        cut = any(x["cancelled"] for x in rep.llm)  # only when a batch stopped with calls in flight
        cols = ["round", "view", "calls", "cached", "errors", *(["cancelled"] if cut else []),
                *(["budget"] if refused else []), "tokens in/out", "cost", "latency"]
        rows = [[x["round"], x["view"], x["calls"], x["cache_hits"], x["errors"], *([x["cancelled"]] if cut else []),
                 *([x["over_budget"]] if refused else []), f"{x['prompt_tokens']:,}/{x['completion_tokens']:,}",
                 f"${x['cost_usd']:.4f}", "-" if x["mean_latency_s"] is None else f"{x['mean_latency_s']:.2f}s"]
                for x in rep.llm]
        print_tables(out, f"run {rep.run_id}: LLM calls per round and view", cols, rows, left={"view"}, keep=2)
    print_debates(out, rep)
    if rep.reviews:
        print_precision(out, rep.reviews, f"run {rep.run_id}: reviewed pseudo-labels per source")
    if rep.problems:
        print_tables(out, f"run {rep.run_id}: unreadable items (the view abstained on them)",
                      ["view", "problem", "items", "e.g."],
                      [[x["view"], x["problem"], x["items"], x["example"] or ""] for x in rep.problems],
                      left={"view"}, wrap={"problem", "e.g."})
