"""Where an item's image lives: a path in the data (absolute, or relative to the data files'
folders), raw bytes, or a Hugging Face-style ``{"bytes", "path"}`` struct.

One resolver for every reader of image cells: the vision view (which decodes and encodes
them), the annotation exports (which hand tools a path or a data URI) and the report's
thumbnails. It locates and reads bytes, refusing what is no image file (a device, a pipe)
or too large; :func:`open_image` is the one place Pillow opens them, refusing decompression
bombs before anything is decoded.
"""
from __future__ import annotations

import filecmp
import io
import math
import os
import stat
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


#: Largest image decoded, in pixels: Pillow's own decompression-bomb bar (a 48 KB PNG can
#: claim 20,000 x 20,000 pixels, 1.2 GB once decoded).
MAX_IMAGE_PIXELS = 89_478_485
#: Largest image file read.
MAX_IMAGE_BYTES = 256 * 2**20


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
    problem: str | None = None  # why no image can be read for the item, found while resolving it

    def read(self) -> bytes:
        """The image's bytes. A path must be a regular file of at most ``MAX_IMAGE_BYTES``
        (opened without blocking: a named pipe hung the run, ``/dev/zero`` filled memory)."""
        if self.problem is not None:
            raise ImageProblem(self.where, self.problem)
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise ImageProblem(self.where, "file not found") from None
        except OSError as exc:
            raise ImageProblem(self.where, f"cannot read file: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageProblem(self.where, "not a regular file (a folder, device or pipe)")
            if st.st_size > MAX_IMAGE_BYTES:
                raise ImageProblem(self.where, f"a file of {st.st_size / 2**20:,.0f} MB: more than the "
                                   f"{MAX_IMAGE_BYTES // 2**20} MB cotrain reads as one image")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_IMAGE_BYTES + 1)  # the file may have grown since fstat
            if len(data) > MAX_IMAGE_BYTES:
                raise ImageProblem(self.where, f"a file of more than {MAX_IMAGE_BYTES // 2**20} MB: more than "
                                   "cotrain reads as one image")
            return data
        except OSError as exc:
            raise ImageProblem(self.where, f"cannot read file: {exc.strerror or exc}") from None
        finally:
            os.close(fd)


def open_image(data: bytes, where: str) -> Any:
    """Pillow's image of ``data``, not decoded yet; :class:`ImageProblem` when it is empty, no
    image, corrupt, or claims more than ``MAX_IMAGE_PIXELS`` pixels (read from its header, before
    any pixel is decoded; Pillow's own bomb error becomes that too, naming the file)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageProblem(where, "no image (empty value)")
    try:  # (Pillow warns from 89M pixels and refuses from twice that; the size check below refuses both;
        img = Image.open(io.BytesIO(data))  # its warnings are left to the process's filters, not changed here)
    except Image.DecompressionBombError:
        raise ImageProblem(where, f"claims more than {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageProblem(where, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError):  # truncated/corrupt streams
        raise ImageProblem(where, "corrupt or truncated image") from None
    if img.width * img.height > MAX_IMAGE_PIXELS:  # whatever Pillow's own bar was set to
        img.close()
        raise ImageProblem(where, f"{img.width:,} x {img.height:,} pixels: more than the {MAX_IMAGE_PIXELS:,} "
                           "cotrain decodes (a decompression bomb?)")
    return img


def resolve_source(value: Any, roots: Sequence[Path], item_id: str) -> ImageSource:
    """The source of an image cell: bytes, an HF image struct, or a path string.

    A relative path is looked up under each of ``roots`` (the data files' folders); when it is
    under none, the first root's candidate is named in the problem. When it is under several
    and the files differ, the image is ambiguous: a test file's ``img/0.png`` beside its own
    folder was read from the train file's folder, silently (two views scored 0.30 on test
    against 0.93 with distinct names).
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
    found = [c for c in candidates if c.is_file()]
    if len(found) > 1 and not all(filecmp.cmp(found[0], c, shallow=False) for c in found[1:]):
        return ImageSource(where=str(p), problem=f"ambiguous: the data files' folders hold different files of that "
                           f"name ({', '.join(str(c) for c in found)}); set the view's image_root or give absolute paths")
    if found:
        return ImageSource(where=str(found[0]), path=found[0])
    return ImageSource(where=str(candidates[0]), path=candidates[0])
