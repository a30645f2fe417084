"""Files that appear whole or not at all: exports and reports are written beside their
destination under a hidden temporary name and renamed over it (``os.replace``) once complete.

A ``kill -9`` in the middle of writing left a truncated file at the destination (an export
whose retry was then refused as "already exists"; a report emptied, then refused as "not a
cotrain report"). Now a crash leaves the destination as it was, and at most a hidden
``.<random>.part.<name>`` file, which the next write to that destination removes. The
temporary name ends with the destination's, so whatever reads a format or a compression from
the extension (DuckDB's ``COPY ... TO 'x.csv.gz'``) reads the same one.
"""
from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: What marks a destination's temporary file: ``.<12 hex digits>.part.<name>``.
PART = ".part."


def _part(path: Path) -> Path:
    """A new temporary path beside ``path``, created empty with the permissions a plain
    ``open(path, 'w')`` gives (0666 less the umask), so the renamed file gets them too."""
    tmp = path.parent / f".{uuid.uuid4().hex[:12]}{PART}{path.name}"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return tmp


def _leftovers(path: Path) -> list[Path]:
    """Temporary files an interrupted write to ``path`` left behind."""
    return [p for p in path.parent.glob(f".*{PART}{glob.escape(path.name)}") if len(p.name) == len(path.name) + 13 + len(PART)]


@contextmanager
def replacing(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Temporary paths to write instead of ``paths``; when the block ends without an error each
    is flushed to disk and renamed over its destination (a file and its sidecar: the sidecar
    last, so a crash between the two renames leaves a complete main file); on an error they
    are removed and the destinations are as they were."""
    dests = [Path(p) for p in paths]
    for d in dests:
        for old in _leftovers(d):
            old.unlink(missing_ok=True)
    temps: list[Path] = []
    try:
        temps = [_part(d) for d in dests]
        yield temps
        for t in temps:
            with open(t, "rb+") as fh:
                os.fsync(fh.fileno())
        for t, d in zip(temps, dests):
            os.replace(t, d)
    finally:
        for t in temps:
            t.unlink(missing_ok=True)


@contextmanager
def replacing_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder to write instead of ``path`` (absent or empty), renamed over it when
    the block ends without an error, removed on an error. A non-empty ``path`` (an export
    forced into a folder that holds files) is written in place: it cannot be renamed over."""
    dest = Path(path)
    if dest.is_dir() and any(dest.iterdir()):
        yield dest
        return
    for old in _leftovers(dest):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    tmp = dest.parent / f".{uuid.uuid4().hex[:12]}{PART}{dest.name}"
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, dest)  # over an empty folder too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_texts(files: Sequence[tuple[str | Path, str]]) -> None:
    """Write each (path, text) as UTF-8, all of them whole or none (:func:`replacing`)."""
    with replacing([p for p, _ in files]) as temps:
        for t, (_, text) in zip(temps, files):
            t.write_text(text, encoding="utf-8")


__all__ = ["PART", "replacing", "replacing_folder", "write_texts"]
