"""Reading item images: a path (absolute, or relative to a data folder), raw bytes, or a
Hugging Face-style ``{"bytes", "path"}`` struct, decoded with Pillow into RGB arrays.

A missing, truncated or non-image file is an ``ImageProblem`` naming the file; the view
turns it into an abstention for that item and never stops the run.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Suffixes read as images in the image-folder layout.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return ImageSource(where=f"<no image for item {item_id}>", data=b"")
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return ImageSource(where=str(p), path=p)
    candidates = [r / p for r in roots] or [p]
    for c in candidates:
        if c.is_file():
            return ImageSource(where=str(c), path=c)
    return ImageSource(where=str(candidates[0]), path=candidates[0])


def content_key(data: bytes) -> str:
    """Stable cache key of an image: the hash of its bytes (renames never re-encode)."""
    return hashlib.sha1(data).hexdigest()


def decode(data: bytes, where: str, size: int, resize: str = "stretch") -> np.ndarray:
    """Decode to an RGB ``(3, size, size)`` float32 array in [0, 1].

    ``resize``: ``stretch`` (the whole image, aspect not kept; right for small glyphs and
    silhouettes) or ``center_crop`` (shorter side to ``size``, then the centre, as for ImageNet).
    Raises ``ImageProblem`` for empty, truncated or non-image data.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageProblem(where, "no image (empty value)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode fully now: a truncated file fails here, not later
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise ImageProblem(where, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError):  # truncated/corrupt streams
        raise ImageProblem(where, "corrupt or truncated image") from None
    if resize == "center_crop":
        w, h = rgb.size
        scale = size / min(w, h)
        rgb = rgb.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = rgb.size
        left, top = (w - size) // 2, (h - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    else:
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def normalise(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` of a ``(n, 3, h, w)`` batch."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (batch - m) / s
