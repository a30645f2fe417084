"""``cotrain`` command line: a thin typer shell over ``orchestrator.api``.

Each command calls one API function inside :func:`_guarded`: a ``CotrainError`` becomes one
red line on stderr and exit code 1; any other exception one line too, its traceback in a log
file the line names; Ctrl-C says how far the run got and exits 130. Heavy modules are imported
inside the commands so ``cotrain --help`` is instant."""
from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Optional

import typer

from orchestrator.cli_text import Scrub, one_line as _one_line, path_text as _path, scrubber, setup_logging as _logging
from orchestrator.console import (CommandConsole, RichReporter, print_plan, print_precision, print_status, print_tables,
                                  print_transcript, zero_columns)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,  # main() guards
                  help="Co-train N model views on a small labelled set and a large pool; every label in DuckDB.")
#: Set by ``main`` alone, in its own context: :func:`_guarded` then resumes collection (see ``main``).
_COLLECTION_OFF: ContextVar[bool] = ContextVar("cotrain_collection_off", default=False)
# markup off: ids, labels, texts and rationales print as they are ("[/bold]" in an id crashed `debate show`)
out = CommandConsole(markup=False)
err = CommandConsole(stderr=True, markup=False)


def _fail(exc: Exception, scrub: Scrub = str) -> None:
    err.print(f"[red]error:[/red] {_one_line(str(exc), scrub)}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(1)


@contextmanager
def _guarded(work: bool = True, config: Path | None = None) -> Iterator[None]:
    """Every failure of a command is one line on stderr and a non-zero exit code. ``work``: the
    command's imports are done and its work starts here (collection resumes: see ``main``).
    Its line and log file never hold a secret, the values ``config`` names too (``cli_text``).

    * ``CotrainError``: its own message, which names the file, key, view or item; exit 1.
    * Ctrl-C: ``interrupted after round r; run again to resume`` (or as much as is known); 130.
    * anything else (a bug, or a library failing in a way cotrain did not foresee): its type
      and message on one line, the traceback in a log file whose path the line gives; exit 1."""
    import click

    from store.errors import CotrainError, RunInterrupted, is_interrupt

    if work and _COLLECTION_OFF.get():  # main() turned it off for the imports (app run otherwise: never)
        _COLLECTION_OFF.set(False)
        gc.freeze()
        gc.enable()
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, typer.TyperException, typer.Exit,
            typer.Abort):  # the command line's own errors (typer's click): main() says them
        raise
    except RunInterrupted as exc:
        err.print(_one_line(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except CotrainError as exc:
        _fail(exc, scrubber(config))
    except BaseException as exc:  # noqa: BLE001 - the one place every unforeseen failure is reported
        if isinstance(exc, SystemExit):  # Ray's driver on SIGTERM, or sys.exit() in a plug-in: its code stays
            err.print(f"stopped by a request to exit ({exc.code}); nothing after the last commit was kept",
                      highlight=False, soft_wrap=True)
            raise
        if is_interrupt(exc):  # Ctrl-C, also as DuckDB's own exception when it lands mid-query
            err.print("interrupted; nothing after the last commit was kept; run again to resume", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(130) from None
        if not isinstance(exc, Exception):  # GeneratorExit and the like go on as they are
            raise
        from orchestrator.crash_log import crash_log

        scrub = scrubber(config)
        path = crash_log(exc, scrub)
        where = f" (traceback in {_one_line(str(path))})" if path else ""
        err.print(f"[red]error:[/red] {type(exc).__name__}: {_one_line(str(exc), scrub)}{where}",
                  highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(1) from None


@app.command()
def init(path: Path = typer.Argument(Path("cotrain.yaml"), help="Where to write the example config."),
         force: bool = typer.Option(False, "--force", help="Overwrite an existing file.")) -> None:
    """Write a commented example config."""
    from orchestrator import api

    with _guarded():
        p = api.init_config(path, force)
    out.print(f"wrote {_path(p)}", highlight=False, soft_wrap=True)


@app.command()
def run(config: Path = typer.Argument(..., help="YAML config."),
        store: Optional[Path] = typer.Option(None, help="Store file (overrides the config's 'store')."),
        new_run: bool = typer.Option(False, "--new-run", help="Start a new run even if one exists."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Check the config and data, estimate LLM calls, "
                                     "tokens and cost; call nothing, write nothing."),
        verbose: bool = typer.Option(True, "--verbose/--quiet", help="Log round events to stderr.")) -> None:
    """Run co-training rounds (resumes an unfinished run of the same config)."""
    _logging(verbose and not dry_run, config)  # a dry run's throwaway in-memory run: its log lines would mislead
    from orchestrator import api
    from store.errors import StoreError

    if dry_run:
        with _guarded(config=config):
            print_plan(out, api.plan(config))
        return
    with _guarded(config=config):
        if str(store) == ":memory:" or (store is None and api.resolve_config(config)[0].store == ":memory:"):
            raise StoreError("a store of ':memory:' keeps nothing once the command ends; name a .duckdb file",
                             ":memory:")
        with RichReporter(out) as rep:
            result = api.run(config, store=store, new_run=new_run, reporter=rep)
        if result.already_finished:
            out.print(f"run {result.run_id} in {result.store} already finished ({result.termination_condition}); "
                      "pass --new-run to run again")
        print_status(out, result.store, result.run_id)


@app.command()
def debate(target: str = typer.Argument(..., metavar="CONFIG|show", help="YAML config, or 'show'."),
           item: Optional[str] = typer.Argument(None, help="With 'show': the item id."),
           items: Optional[Path] = typer.Option(None, "--items", help="Items to debate (CSV, JSONL, Parquet)."),
           store: Optional[Path] = typer.Option(None, help="Store file (default: the config's; for show: "
                                                "cotrain.duckdb)."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print planned items, calls, tokens and cost only."),
           rounds: Optional[int] = typer.Option(None, help="Override debate.rounds."),
           agents: Optional[int] = typer.Option(None, help="Override the number of agents (cycling the configured ones)."),
           aggregation: Optional[str] = typer.Option(None, help="Override debate.aggregation: majority | confidence | judge."),
           context: Optional[str] = typer.Option(None, help="Override debate.context: full | summary."),
           budget_usd: Optional[float] = typer.Option(None, "--budget-usd", help="Override debate.budget_usd."),
           verbose: bool = typer.Option(True, "--verbose/--quiet")) -> None:
    """Debate items among LLM agents without co-training, or show an item's debate:
    cotrain debate CONFIG --items FILE [--dry-run];  cotrain debate show ITEM [--store S]."""
    config = None if target == "show" else Path(target)
    _logging(verbose and not dry_run, config)
    from orchestrator import api

    with _guarded(config=config):
        if target == "show":
            if item is None:
                raise typer.BadParameter("give the item id: cotrain debate show ITEM")
            print_transcript(out, api.debate_transcript(store or Path("cotrain.duckdb"), item))
            return
        if items is None:
            raise typer.BadParameter("give the items to debate with --items FILE")
        overrides = {k: v for k, v in (("rounds", rounds), ("n_agents", agents), ("aggregation", aggregation),
                                       ("context", context), ("budget_usd", budget_usd)) if v is not None}
        rep = api.debate(target, items, store=store, dry_run=dry_run, overrides=overrides)
    p = rep.plan
    cost = "unknown price" if p["cost_usd"] is None else f"${p['cost_usd']:.4f}"
    out.print(f"plan: {p['items']} item(s), at most {p['calls']:,} calls, ~{p['tokens']:,} tokens, {cost}"
              + (f" (budget ${p['budget_usd']:.2f})" if p["budget_usd"] is not None else "")
              + (f" (token budget {p['budget_tokens']:,})" if p.get("budget_tokens") is not None else ""),
              highlight=False)
    if dry_run:
        return
    acc = "" if rep.accuracy is None else f", accuracy on gold {rep.accuracy:.3f}"
    out.print(f"debated {rep.n_items}: {rep.verdicts} verdicts, {rep.no_verdict} without verdict, "
              f"{rep.over_budget} over budget{acc}; {rep.calls} calls, {rep.tokens:,} tokens, ${rep.cost_usd:.4f} "
              f"-> {rep.store}", highlight=False)


@app.command()
def models() -> None:
    """Embedded local LLMs: where their files are and whether they verify."""
    from orchestrator import api

    with _guarded():
        rows = [[m["name"], "yes" if m["default"] else "", m["status"], m["licence"], m["path"] or "-"]
                for m in api.models()]
    print_tables(out, "local models (model: local:<name>)", ["name", "default", "status", "licence", "path"], rows,
                 left={"name", "default", "status", "licence"}, wrap={"path", "licence", "status"})  # install in full


@app.command()
def status(store: Path = typer.Argument(Path("cotrain.duckdb"), help="Store file."),
           run_id: Optional[int] = typer.Option(None, "--run", help="Run id (default: latest).")) -> None:
    """Runs and rounds: labels added, per-view test accuracy, agreement. While a run holds
    the store: its live progress (round, phase, items per view, rate, ETA, LLM calls and cost)."""

    with _guarded():
        print_status(out, str(store), run_id)


EXPORT_FORMATS = ("parquet", "json", "jsonl", "csv", "hf", "hf-parquet", "label-studio", "argilla")


@app.command()
def export(store: Path = typer.Argument(..., help="Store file."),
           out_path: Path = typer.Argument(..., metavar="OUT", help="Output file (.parquet, .jsonl, .csv, .json) "
                                           "or folder (hf)."),
           fmt: Optional[str] = typer.Option(None, "--format", help="parquet | json | jsonl | csv | hf | hf-parquet | "
                                             "label-studio | argilla (default: from OUT)."),
           run_id: Optional[int] = typer.Option(None, "--run", help="Run id (default: latest)."),
           max_round: Optional[int] = typer.Option(None, "--round", help="Pseudo-labels up to this round."),
           min_confidence: Optional[float] = typer.Option(None, "--min-confidence", help="Keep pseudo-labels of at "
                                                          "least this confidence (0 to 1); gold labels always pass."),
           min_p_correct: Optional[float] = typer.Option(None, "--min-p-correct", help="Keep pseudo-labels whose "
                                                         "estimated probability of being right is at least this "
                                                         "(0 to 1); gold and reviewed labels always pass, "
                                                         "pseudo-labels without an estimate are dropped."),
           source: Optional[str] = typer.Option(None, help="gold | review | pseudo | a policy | a view name."),
           no_gold: bool = typer.Option(False, "--no-gold", help="Pseudo-labels only."),
           disputed: bool = typer.Option(False, "--disputed", help="Only items the views disputed in some round."),
           sample: Optional[int] = typer.Option(None, help="A sample of this many items (see --select)."),
           select: str = typer.Option("stratified", help="How --sample draws: stratified (by label, among the "
                                      "rows exported) | random | uncertainty | active | typical (for review: among "
                                      "items without gold or reviewed label, typical = one clear example per "
                                      "region, active = close calls and typical items mixed by the run's "
                                      "coverage; parquet/json/jsonl/csv then write a review file, 'label' "
                                      "left for the reviewer)."),
           seed: Optional[int] = typer.Option(None, help="Seed of --sample (default 0)."),
           force: bool = typer.Option(False, "--force", help="Replace an existing OUT (never the store or the "
                                      "run's input data)."),
           no_escape_formulas: bool = typer.Option(False, "--no-escape-formulas",
                                                   help="CSV: keep cells starting with = + - @ (or ') as they "
                                                        "are (by default they get a leading ' so a spreadsheet "
                                                        "does not run them).")) -> None:
    """Export labels with provenance: flat files, Hugging Face datasets, or review tasks for
    Label Studio / Argilla (each view's vote as a prediction or in the metadata)."""
    from orchestrator import api

    if fmt is not None and fmt not in EXPORT_FORMATS:
        _fail(ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not '{fmt}'"))
    if seed is not None and sample is None:  # it changed nothing: a seed without a draw
        _fail(ValueError("--seed seeds the draw of --sample; give --sample N too"))
    with _guarded():
        n = api.export(store, out_path, fmt, run_id=run_id, max_round=max_round,  # type: ignore[arg-type]
                       min_confidence=min_confidence, source=source, include_gold=not no_gold,
                       disputed_only=disputed, sample=sample, seed=seed or 0, force=force,
                       escape_formulas=not no_escape_formulas, min_p_correct=min_p_correct, select=select)
        note = api.unfinished_latest_run(store) if run_id is None else None
    if note:
        err.print(note, highlight=False, soft_wrap=True)
    if n.unestimated:
        err.print(f"--min-p-correct dropped {n.unestimated} pseudo-label(s) that carry no p_correct estimate "
                  "(runs before estimates were recorded, debate verdicts)", highlight=False, soft_wrap=True)
    if sample is not None and n < sample:  # "exactly N rows": unless fewer are there to draw
        err.print(f"--sample {sample}: only {n} row(s) matched, so all of them were written", highlight=False,
                  soft_wrap=True)
    out.print(f"wrote {n} rows to {_path(out_path)}", highlight=False, soft_wrap=True)


@app.command()
def report(store: Path = typer.Argument(..., help="Store file."),
           out_path: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
           run_id: Optional[int] = typer.Option(None, "--run", help="Run id (default: latest)."),
           top: int = typer.Option(25, help="Disputed items to list.")) -> None:
    """Write one self-contained HTML page about a run: accuracy per round, labels by source,
    view agreement, confusion matrices, confidence, cost, disputed items and debates."""
    from orchestrator import api

    with _guarded():
        path = api.report(store, out_path, run_id=run_id, top_disputed=top)
        note = api.unfinished_latest_run(store) if run_id is None else None
    if note:
        err.print(note, highlight=False, soft_wrap=True)
    out.print(f"wrote {_path(path)}", highlight=False, soft_wrap=True)


@app.command("import-reviews")
def import_reviews(store: Path = typer.Argument(..., help="Store file."),
                   file: Path = typer.Argument(..., help="Label Studio export (JSON or JSON_MIN), Argilla export "
                                               "(JSON), a review file from `cotrain export --select` with 'label' "
                                               "filled in (CSV, JSON, JSONL, Parquet), or CSV with columns "
                                               "id,label[,reviewer,reviewed_at]."),
                   run_id: Optional[int] = typer.Option(None, "--run", help="Run id (default: latest)."),
                   reviewer: Optional[str] = typer.Option(None, help="Name for records that carry none "
                                                          "(default: the OS user)."),
                   rounds: Optional[int] = typer.Option(None, help="More rounds the next `cotrain run` may run "
                                                        "(default 2; the last only fits the views, so 2 = one "
                                                        "round that adds labels).")) -> None:
    """Record reviewed labels as gold, revoke the pseudo-labels they contradict (kept in
    history), and reopen the run so the next `cotrain run` trains on them."""
    from orchestrator import api

    with _guarded():
        rep = api.import_reviews(store, file, run_id=run_id, reviewer=reviewer,
                                 rounds=api.REVIEW_ROUNDS if rounds is None else rounds)
    o = rep.outcomes
    out.print(f"run {rep.run_id}: {rep.imported} reviews from {_path(file)} ({rep.file_format}); {rep.skipped} records "
              f"without an answer skipped; confirmed {o['confirmed']}, corrected {o['corrected']}, new {o['new']}")
    if rep.gold_corrected:  # the user's own labels: said apart from pseudo-labels a reviewer corrected
        out.print(f"{rep.gold_corrected} of the corrections replace gold labels of the run; the reviewed label is "
                  "gold from now on (the old one stays in the reviews table as prior_label)")
    if rep.unchanged:
        out.print(f"{rep.unchanged} records repeat their item's review (the same label): not filed again")
    if rep.by_source:
        print_precision(out, rep.by_source, "reviewed pseudo-labels per source (all reviews of this run)")
    if rep.rounds_granted:
        out.print(f"run {rep.run_id} reopened: the next `cotrain run` runs {rep.rounds_granted} more round(s) "
                  "with these labels as gold")
    elif rep.imported and rounds == 0:
        out.print(f"run {rep.run_id} not reopened (--rounds 0): import the file again with --rounds N to train "
                  "this run on them")


@app.command()
def demo(folder: Path = typer.Argument(Path("cotrain-demo"), help="Folder for data, config and store."),
         n_pool: Optional[int] = typer.Option(None, help="Unlabelled items (text example; default 300)."),
         n_labelled: Optional[int] = typer.Option(None, help="Gold labels (text example; default 20)."),
         max_rounds: int = typer.Option(4),
         example: str = typer.Option("mfeat", help="mfeat (the default) | animals (cross-modal image examples) "
                                     "| text (LLM views)."),
         labelled_fraction: Optional[float] = typer.Option(None, help="Share of training items keeping their "
                                                           "label (image examples; default 0.05)."),
         n_items: Optional[int] = typer.Option(None, help="Subsample the image dataset to this many items "
                                               "(image examples).")) -> None:
    """Run an offline example: cross-modal images, mfeat (the default: a digit's image vs its
    Fourier and shape descriptors) and animals (Animal-MNIST silhouettes vs their raw pixels),
    or text (Rotten Tomatoes: TF-IDF + MiniLM + local LLM views)."""
    _logging(False)
    from orchestrator import api

    with _guarded():
        with RichReporter(out) as rep:
            d, result = api.demo(folder, n_pool=n_pool, n_labelled=n_labelled, max_rounds=max_rounds, reporter=rep,
                                 example=example, labelled_fraction=labelled_fraction, n_items=n_items)
    print_status(out, result.store, result.run_id)
    out.print(f"config: {d / 'cotrain.yaml'}", soft_wrap=True)  # whole lines: a wrapped command cannot be copied
    out.print(f"export: cotrain export {result.store} labels.parquet", soft_wrap=True)


def main() -> None:
    """The ``cotrain`` entry point. Garbage collection is off while a command imports its
    modules (~10^5 objects that live as long as the process); :func:`_guarded` freezes them
    before the command works and the end freezes the rest, so no collection, finalization's
    included, walks them: 0.35 s of a 2 s run at 100k items (``bench/scale.py``). Only here."""
    gc.disable()
    _COLLECTION_OFF.set(True)
    if zero_columns():  # typer's help reads it too (see CommandConsole)
        del os.environ["COLUMNS"]
    try:
        _main()
    finally:
        gc.freeze()


def _main() -> None:
    """Every failure one line, a command line that does not parse too (exit 2); tqdm's bars
    (``datasets``, transformers' GGUF dequantising) would break into the tables: tqdm reads
    ``TQDM_DISABLE`` when first imported, which commands do later (set it empty to see them)."""
    import click

    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        with _guarded(work=False):  # click's usage errors come here, not as a framed box; named cotrain however started
            code = app(standalone_mode=False, prog_name="cotrain")
    except typer.Exit as exc:  # a failure outside any command: its line is printed, no traceback
        raise SystemExit(exc.exit_code) from None
    except (click.UsageError, typer.TyperException) as exc:  # an option that does not parse: one line, click's code
        ctx = getattr(exc, "ctx", None)
        where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        message = (exc.format_message() if hasattr(exc, "format_message") else str(exc)).rstrip(".")
        if message.strip():  # `cotrain` alone has printed its help and has nothing to add
            err.print(f"[red]error:[/red] {_one_line(message)}{where}", highlight=False, soft_wrap=True, markup=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except (click.Abort, typer.Abort):  # end of input at a prompt (typer makes Ctrl-C an Exit(130) itself)
        err.print("interrupted", highlight=False)
        raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
    if out.write_error is not None:  # the command ran to its end; what it printed did not all arrive
        why = out.write_error.strerror or type(out.write_error).__name__
        err.print(f"[red]error:[/red] cannot write to stdout ({_one_line(why)}); the command ran to its end, but its "
                  "output is incomplete", highlight=False, soft_wrap=True, markup=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
