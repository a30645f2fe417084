"""Decoding item images with Pillow into normalised RGB arrays, and their cache keys.

Where an image lives (path, bytes, HF struct) is resolved by ``store.media``. A missing,
truncated or non-image file is an ``ImageProblem`` naming the file; the view turns it into
an abstention for that item and never stops the run.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from store.media import ImageProblem, open_image

#: Suffixes read as images in the image-folder layout.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def content_key(data: bytes) -> str:
    """Stable cache key of an image: the hash of its bytes (renames never re-encode)."""
    return hashlib.sha1(data).hexdigest()


def decode(data: bytes, where: str, size: int, resize: str = "stretch") -> np.ndarray:
    """Decode to an RGB ``(3, size, size)`` float32 array in [0, 1].

    ``resize``: ``stretch`` (the whole image, aspect not kept; right for small glyphs and
    silhouettes) or ``center_crop`` (shorter side to ``size``, then the centre, as for ImageNet).
    Raises ``ImageProblem`` for empty, truncated or non-image data.
    """
    from PIL import Image

    try:
        with open_image(data, where) as img:  # refuses empty, non-image and oversized data
            img.load()  # decode fully now: a truncated file fails here, not later
            rgb = img.convert("RGB")
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
