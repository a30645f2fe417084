"""Exports and reports appear whole or not at all: a crash while writing keeps the
destination as it was (a kill -9 left a truncated export whose retry was refused, and an
emptied report that every later report refused as "not a cotrain report")."""
from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import api
from store.atomic import replacing, write_texts
from store.database import Store
from tests.conftest import synthetic_frame, write_config


def _ran(tmp_path: Path) -> Path:
    """A store holding one short finished run."""
    api.run(write_config(tmp_path, synthetic_frame(n=60, n_gold=6, n_test=20), store=str(tmp_path / "s.duckdb"),
                         max_rounds=1))
    return tmp_path / "s.duckdb"


def test_a_failed_write_keeps_the_destination_and_leaves_no_temporary_file(tmp_path: Path):
    dest, side = tmp_path / "out.json", tmp_path / "out.xml"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing([dest, side]) as (tmp, tmp_side):
            tmp.write_text("half a fi")
            raise RuntimeError("killed")
    assert dest.read_text() == "old" and not side.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_write_replaces_whole_files_with_the_usual_permissions_and_clears_leftovers(tmp_path: Path):
    dest = tmp_path / "labels [1].csv"  # glob's special characters in the name
    left = tmp_path / f".{'a' * 12}.part.{dest.name}"  # what a killed write left
    left.write_text("half")
    other = tmp_path / f".{'b' * 12}.part.other.csv"  # another destination's: kept
    other.write_text("x")
    write_texts([(dest, "id,label\n1,a\n")])
    assert dest.read_text() == "id,label\n1,a\n" and not left.exists() and other.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_an_export_is_whole_keeps_its_compression_and_a_failed_one_keeps_the_old_file(tmp_path: Path):
    _ran(tmp_path)
    gz = tmp_path / "labels.csv.gz"
    n = api.export(tmp_path / "s.duckdb", gz, "csv")
    with gzip.open(gz, "rt") as fh:  # DuckDB reads the compression from the name: the temporary one ends with it
        assert len(pd.read_csv(fh)) == n > 0
    out = tmp_path / "labels.json"
    api.export(tmp_path / "s.duckdb", out, "label-studio")
    before = out.read_bytes()
    with Store(tmp_path / "s.duckdb") as st:  # fault injection: the rows cannot be read this time
        st.con.execute("ALTER TABLE pseudo_labels RENAME TO pl_away")
    with pytest.raises(Exception):
        api.export(tmp_path / "s.duckdb", out, "label-studio", force=True)
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".part." in p.name]


def test_a_report_that_fails_while_written_keeps_the_previous_one(tmp_path: Path, monkeypatch):
    _ran(tmp_path)
    html = tmp_path / "report.html"
    api.report(tmp_path / "s.duckdb", html)
    before = html.read_bytes()

    real = Path.write_text

    def killed(self, text, *a, **k):  # fault injection: the process dies half-way through the page
        real(self, text[: len(text) // 2], *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        api.report(tmp_path / "s.duckdb", html)
    assert html.read_bytes() == before
    monkeypatch.undo()
    api.report(tmp_path / "s.duckdb", html)  # and the next report replaces it
    assert html.stat().st_size > 0


def test_a_folder_export_appears_whole_or_not_at_all(tmp_path: Path):
    from store.atomic import replacing_folder

    dest = tmp_path / "hf"
    with pytest.raises(RuntimeError):
        with replacing_folder(dest) as folder:
            (folder / "data-00000.arrow").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    dest.mkdir()  # an empty folder is replaced whole
    with replacing_folder(dest) as folder:
        assert folder != dest
        (folder / "dataset_info.json").write_text("{}")
    assert [p.name for p in dest.iterdir()] == ["dataset_info.json"] and list(tmp_path.iterdir()) == [dest]
    with replacing_folder(dest) as folder:  # a folder that holds files (export --force): written in place
        assert folder == dest


def test_writes_keep_a_links_target_a_files_mode_and_take_long_names(tmp_path: Path):
    """Through a symbolic link the file lands where it points (renaming over the link cut
    it, and an hf export into a linked folder failed after writing everything); an existing
    file keeps its mode (a 0600 report became 0644); a 245-byte name still works."""
    from store.atomic import replacing_folder

    real = tmp_path / "disk"
    real.mkdir()
    (real / "labels.csv").write_text("old")
    (tmp_path / "labels.csv").symlink_to(real / "labels.csv")
    os.chmod(real / "labels.csv", 0o600)
    write_texts([(tmp_path / "labels.csv", "new")])
    assert (tmp_path / "labels.csv").is_symlink() and (real / "labels.csv").read_text() == "new"
    assert stat.S_IMODE((real / "labels.csv").stat().st_mode) == 0o600
    (real / "hf").mkdir()
    (tmp_path / "hf").symlink_to(real / "hf")
    with replacing_folder(tmp_path / "hf") as folder:
        (folder / "data.arrow").write_bytes(b"x")
    assert (tmp_path / "hf").is_symlink() and [p.name for p in (real / "hf").iterdir()] == ["data.arrow"]
    long = tmp_path / ("é" * 120 + ".csv")  # 244 bytes: the temporary name is cut, its suffix kept
    write_texts([(long, "x")])
    assert long.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["disk", "labels.csv", "hf", long.name])


def test_an_export_killed_while_duckdb_writes_keeps_the_old_file(tmp_path: Path, monkeypatch):
    """Fault injected inside the write itself (the COPY), not before it."""
    import duckdb

    _ran(tmp_path)
    out = tmp_path / "labels.csv"
    api.export(tmp_path / "s.duckdb", out)
    before = out.read_bytes()
    real = duckdb.DuckDBPyConnection.execute

    def killed(con, sql, *a, **k):
        if sql.startswith("COPY"):
            real(con, sql, *a, **k)  # the rows are written, to the temporary file
            raise KeyboardInterrupt
        return real(con, sql, *a, **k)

    monkeypatch.setattr(duckdb.DuckDBPyConnection, "execute", killed)
    with pytest.raises(KeyboardInterrupt):
        api.export(tmp_path / "s.duckdb", out, force=True)
    monkeypatch.undo()
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir() if "part" in p.name) == []
