"""Model files shipped as byte pieces across wheels: joined in order, checked, never half-written."""
from __future__ import annotations

import hashlib
import sys

import pytest

from store.errors import ViewError
from views.llm.local import LocalModel


@pytest.fixture
def pieces(tmp_path, monkeypatch):
    for i, blob in enumerate((b"GGUF-head-", b"middle-", b"tail"), start=1):
        pkg = tmp_path / f"cotrain_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COTRAIN_HOME", str(tmp_path / "home"))
    yield tuple((f"cotrain_fake_part{i}", f"data/part{i:02d}.bin") for i in range(1, 4))
    for i in range(1, 4):
        sys.modules.pop(f"cotrain_fake_part{i}", None)


def _model(parts, sha):
    return LocalModel(name="fake", description="", licence="", origin="", install="pip install fake", parts=parts,
                      sha256=sha)


def test_pieces_are_joined_in_order_and_verified(pieces):
    good = hashlib.sha256(b"GGUF-head-middle-tail").hexdigest()
    m = _model(pieces, good)
    assert m.verify() == (True, "installed; assembled at first use")
    path = m.path()
    assert path.read_bytes() == b"GGUF-head-middle-tail"
    assert m.verify() == (True, "sha256 verified")


def test_a_wrong_checksum_leaves_no_file(pieces):
    m = _model(pieces, "0" * 64)
    with pytest.raises(ViewError, match="sha256 .* is not the published"):
        m.path()
    assert not m.target().exists() and not list(m.target().parent.glob("*.part-*"))


def test_a_missing_piece_names_the_install_command(pieces):
    m = _model((*pieces, ("cotrain_fake_absent", "data/part04.bin")), None)
    assert m.verify() == (False, "not installed (pip install fake)")
    with pytest.raises(ViewError, match="local model not installed: pip install fake"):
        m.path()
