"""Where an item's image lives: a path in the data (absolute, or relative to the data files'
folders), raw bytes, or a Hugging Face-style ``{"bytes", "path"}`` struct.

One resolver for every reader of image cells: the vision view (which decodes and encodes
them), the annotation exports (which hand tools a path or a data URI) and the report's
thumbnails. It only locates and reads bytes; no image library is imported here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def data_roots(*paths: str | None) -> tuple[Path, ...]:
    """The folders relative paths in items resolve against: each given data file's folder
    (an image folder's parent, since its ``image`` paths start with its name), without repeats."""
    out: list[Path] = []
    for path in paths:
        if path:
            parent = Path(path).resolve().parent
            if parent not in out:
                out.append(parent)
    return tuple(out)


def stored_run_roots(store_path: str, input_files: Sequence[str | None]) -> tuple[Path, ...]:
    """Where a stored run's relative image paths resolve, for what reads them from the store
    (exports, the report): its data files' folders first (the images its views saw), then the
    store's own folder, so a project folder moved since the run still finds its images."""
    here = () if store_path == ":memory:" else (Path(store_path).expanduser().resolve().parent,)
    return tuple(dict.fromkeys(data_roots(*input_files) + here))


class ImageProblem(Exception):
    """An item's image cannot be used; ``where`` names the file (or the item's bytes)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class ImageSource:
    """Where one item's image comes from: a resolved file path, or bytes held in the data."""

    where: str  # file path, or "<bytes of item X>"
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise ImageProblem(self.where, "file not found") from None
        except OSError as exc:
            raise ImageProblem(self.where, f"cannot read file: {exc.strerror or exc}") from None


def resolve_source(value: Any, roots: Sequence[Path], item_id: str) -> ImageSource:
    """The source of an image cell: bytes, an HF image struct, or a path string.

    A relative path is looked up under each of ``roots`` in turn (the data files' folders);
    when it is under none, the first root's candidate is named in the problem.
    """
    if isinstance(value, dict):  # Hugging Face datasets Image(): {"bytes": ..., "path": ...}
        if value.get("bytes") is not None:
            return ImageSource(where=str(value.get("path") or f"<image bytes of item {item_id}>"),
                               data=bytes(value["bytes"]))
        value = value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageSource(where=f"<image bytes of item {item_id}>", data=bytes(value))
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return ImageSource(where=f"<no image for item {item_id}>", data=b"")
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return ImageSource(where=str(p), path=p)
    candidates = [r / p for r in roots] or [p]
    for c in candidates:
        if c.is_file():
            return ImageSource(where=str(c), path=c)
    return ImageSource(where=str(candidates[0]), path=candidates[0])
