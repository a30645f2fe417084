"""Files that appear whole or not at all: exports and reports are written beside their
destination under a hidden temporary name and renamed over it (``os.replace``) once complete.

A ``kill -9`` in the middle of writing left a truncated file at the destination (an export
whose retry was then refused as "already exists"; a report emptied, then refused as "not a
cotrain report"). Now a crash leaves the destination as it was, and at most a hidden
``.<random>.part.<name>`` file, which the next write to that destination removes. The
temporary name ends with the destination's, so whatever reads a format or a compression from
the extension (DuckDB's ``COPY ... TO 'x.csv.gz'``) reads the same one. A destination that
is a symbolic link is written where it points, as a plain write would.
"""
from __future__ import annotations

import glob
import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: What marks a destination's temporary file: ``.<12 hex digits>.part.<name>``.
PART = ".part."
#: The longest file name most file systems take, in bytes.
NAME_MAX = 255


def _target(path: str | Path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (replacing the link itself
    would have cut it), else the path."""
    p = Path(path)
    return p.resolve() if p.is_symlink() else p


def _temp_name(dest: Path) -> Path:
    """A new temporary path beside ``dest``: ``.<hex>.part.<name>``, the name cut from the left
    (its suffixes kept) where the whole would pass ``NAME_MAX`` bytes."""
    head, tail = f".{uuid.uuid4().hex[:12]}{PART}", dest.name
    while len((head + tail).encode()) > NAME_MAX:
        tail = tail[1:]
    return dest.parent / (head + tail)


def _part(dest: Path) -> Path:
    """A new, empty temporary file beside ``dest`` with ``dest``'s permissions when it exists,
    else those a plain ``open(dest, 'w')`` gives (0666 less the umask)."""
    tmp = _temp_name(dest)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        os.chmod(tmp, stat.S_IMODE(dest.stat().st_mode))  # a report kept 0600 stays 0600
    except FileNotFoundError:
        pass
    return tmp


def _leftovers(path: Path) -> list[Path]:
    """Temporary files an interrupted write to ``path`` left behind."""
    return [p for p in path.parent.glob(f".*{PART}{glob.escape(path.name)}")
            if len(p.name) == len(path.name) + 13 + len(PART)]


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def replacing(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Temporary paths to write instead of ``paths``; when the block ends without an error each
    is flushed to disk and renamed over its destination (a file and its sidecar: the sidecar
    last, so a crash between the two renames leaves a complete main file); on an error they
    are removed and the destinations are as they were. In a folder where no new file can be
    made (an existing file, writable, in a read-only folder) the destinations are written in
    place, as before."""
    dests = [_target(p) for p in paths]
    for d in dests:
        for old in _leftovers(d):
            _remove(old)
    temps: list[Path] = []
    try:
        try:
            for d in dests:
                temps.append(_part(d))
        except PermissionError:
            if not all(d.exists() and os.access(d, os.W_OK) for d in dests):
                raise
            for t in temps:
                t.unlink(missing_ok=True)
            temps = []
            yield dests
            return
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
    dest = _target(path)
    if dest.is_dir() and any(dest.iterdir()):
        yield dest
        return
    for old in _leftovers(dest):
        _remove(old)
    tmp = _temp_name(dest)
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
