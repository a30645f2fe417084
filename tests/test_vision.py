"""The vision view against real images written here (PNG, JPEG, a truncated file, a text
file posing as an image) and the real packaged MobileNetV2 weights."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from orchestrator import api
from orchestrator.config import parse_config
from orchestrator.rounds import build_views
from store.adapters import StoreCache, StoreProblems
from store.database import Store
from store.errors import ConfigError, CotrainError, ViewError
from views.base import ITEM_ID_COLUMN, ViewContext
from views.vision.images import ImageProblem, decode
from views.vision.view import VisionView

DIGITS = [str(d) for d in range(10)]


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path_factory, monkeypatch):
    """Exported ONNX encoders go to a folder of the test session, not the user's cache."""
    monkeypatch.setenv("COTRAIN_HOME", str(tmp_path_factory.getbasetemp() / "cotrain-home"))


def _digit_png(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray((pixels.reshape(8, 8) * 16).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    """scikit-learn's 8x8 digits as PNG and JPEG files + items.csv (path, 64 pixel columns,
    label, split); item 3 is truncated, item 5 is text, item 9 names a missing file."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    (root / "img").mkdir()
    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:360]
    rows = []
    for n, i in enumerate(idx):
        name = f"img/{n}.{'png' if n % 2 == 0 else 'jpg'}"
        _digit_png(X[i]).save(root / name)
        split = "test" if n >= 260 else "train"
        rows.append({"image": name, "label": str(y[i]) if split == "test" or n < 40 else "", "split": split,
                     **{f"px{j}": X[i, j] for j in range(64)}})
    full = (root / "img" / "3.jpg").read_bytes()
    (root / "img" / "3.jpg").write_bytes(full[: len(full) // 3])  # truncated JPEG
    (root / "img" / "5.jpg").write_text("this is not an image", encoding="utf-8")
    rows[9]["image"] = "img/missing.png"
    pd.DataFrame(rows).to_csv(root / "items.csv", index=False)
    return root


def _config(root: Path, store: str = "run.duckdb", **vision) -> Path:
    cfg = {"task": {"labels": DIGITS}, "data": {"train": "items.csv", "split_column": "split"},
           "views": [{"name": "vision", "kind": "vision", "image": "image", "image_size": 32, **vision},
                     {"name": "pixels", "kind": "sklearn", "column_prefix": "px"}],
           # these tests are about images, not calibration: no cross-validation over gold
           "cotrain": {"policy": "k_best", "k": 10, "max_rounds": 2, "calibration_folds": 0}, "store": store}
    path = root / f"{Path(store).stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- the encoder
def test_packaged_mobilenet_loads_and_onnx_matches_eager_torch(digits_folder: Path):
    from views.vision.encoders import OnnxEncoder, TorchEncoder
    from views.vision.images import IMAGENET_MEAN, IMAGENET_STD, normalise
    from views.vision.mobilenet import FEATURE_DIM, mobilenet_v2

    torch_enc = TorchEncoder(mobilenet_v2(), "mobilenet_v2:imagenet", "cpu")
    batch = normalise(np.stack([decode((digits_folder / f"img/{i}.png").read_bytes(), "x", 64)
                                for i in (0, 2, 4, 6)]), IMAGENET_MEAN, IMAGENET_STD)
    eager = torch_enc.encode(batch)
    onnx = OnnxEncoder(torch_enc, 64)
    assert onnx.path.is_file() and eager.shape == (4, FEATURE_DIM)
    np.testing.assert_allclose(onnx.encode(batch), eager, atol=1e-4)
    assert np.abs(eager[0] - eager[1]).max() > 1e-3  # different digits, different features
    # the ImageNet classifier came with the weights: real, trained parameters
    assert float(torch_enc.module.classifier[1].weight.abs().mean()) > 1e-3


def test_images_decode_and_broken_ones_are_named(digits_folder: Path):
    png = decode((digits_folder / "img/0.png").read_bytes(), "0.png", 40)
    jpg = decode((digits_folder / "img/1.jpg").read_bytes(), "1.jpg", 40, resize="center_crop")
    assert png.shape == jpg.shape == (3, 40, 40) and 0 <= png.min() and png.max() <= 1
    with pytest.raises(ImageProblem, match=r"3\.jpg: corrupt or truncated image"):
        decode((digits_folder / "img/3.jpg").read_bytes(), "img/3.jpg", 40)
    with pytest.raises(ImageProblem, match=r"5\.jpg: not an image Pillow can read"):
        decode((digits_folder / "img/5.jpg").read_bytes(), "img/5.jpg", 40)


def test_bombs_pipes_and_devices_are_refused_as_image_problems(tmp_path: Path):
    """A 20,000 x 20,000 PNG of a few KB stopped every run with Pillow's own error (no file
    named); a path to a named pipe hung the run, one to /dev/zero filled memory. Each is an
    ImageProblem naming the file now, before anything is decoded or read."""
    import io
    import os

    from PIL import Image

    from store.media import MAX_IMAGE_PIXELS, ImageSource

    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG")  # 400M pixels in a few KB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ImageProblem, match=r"bomb\.png: claims more than 89,478,485 pixels"):
        decode(buf.getvalue(), "bomb.png", 32)
    buf = io.BytesIO()
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1  # over cotrain's bar, under Pillow's error
    Image.new("1", (side, side)).save(buf, format="PNG")
    with pytest.raises(ImageProblem, match=rf"big\.png: {side:,} x {side:,} pixels: more than the 89,478,485"):
        decode(buf.getvalue(), "big.png", 32)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "dir.png").mkdir()
    for name in ("pipe.png", "zero.png", "dir.png"):
        with pytest.raises(ImageProblem, match=rf"{name}: not a regular file"):
            ImageSource(where=str(tmp_path / name), path=tmp_path / name).read()


def test_unreadable_images_abstain_are_filed_and_warned(digits_folder: Path, caplog):
    df = pd.read_csv(digits_folder / "items.csv").head(12)
    df[ITEM_ID_COLUMN] = [f"item{i}" for i in range(len(df))]
    with Store(":memory:") as st:
        problems = StoreProblems(st, run_id=1)
        ctx = ViewContext(labels=tuple(DIGITS), seed=0, cache=StoreCache(st), data_dirs=(digits_folder,),
                          problems=problems)
        view = VisionView.from_params("vision", ctx, image="image", image_size=32)
        view.resolve_fields(df.columns)
        with caplog.at_level(logging.WARNING, logger="cotrain"):
            X, mask = view.encode(df)
        assert mask.tolist() == [i not in (3, 5, 9) for i in range(12)] and X.shape == (9, 1280)
        filed = st.query("SELECT item_id, problem, location FROM item_problems ORDER BY item_id").to_pylist()
        assert [(r["item_id"], r["problem"]) for r in filed] == [
            ("item3", "corrupt or truncated image"), ("item5", "not an image Pillow can read"),
            ("item9", "file not found")]
        assert [Path(r["location"]) for r in filed] == [digits_folder / "img/3.jpg", digits_folder / "img/5.jpg",
                                                        digits_folder / "img/missing.png"]
        # one warning per broken item, whose values are the view, the item, the file and the problem
        warned = sorted(r.args for r in caplog.records if r.name.startswith("cotrain") and r.levelno >= logging.WARNING)
        assert [(v, i, Path(w), pr) for v, i, w, pr in warned] == [
            ("vision", r["item_id"], Path(r["location"]), r["problem"]) for r in filed]
        y = np.array([int(v) for v in df["label"].fillna(-1)])
        y = np.where(y < 0, np.arange(len(y)) % 10, y)
        view.fit(df, y, np.ones(len(df)))
        proba = view.predict_proba(df)
        assert np.isnan(proba[[3, 5, 9]]).all() and np.allclose(proba[mask].sum(axis=1), 1)
        assert view.encoded_count_ == 9  # fit and predict re-used the features of the first pass
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cotrain"):
            view.encode(df)
        assert not [r for r in caplog.records if r.name.startswith("cotrain")]  # each broken file is warned about once
        assert st.scalar("SELECT count(*) FROM item_problems") == 3  # ... and filed once


# ---------------------------------------------------------------- co-training runs
class _Recorder:
    """A run reporter that keeps every progress step (the CLI draws them as bars)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, int, int]] = []

    def round_started(self, round_idx: int, pool_size: int, n_views: int) -> None:
        pass

    def advance(self, view: str, phase: str, n: int, total: int) -> None:
        self.steps.append((view, phase, n, total))

    def round_finished(self, summary: dict) -> None:
        pass


def _encoded(rec: _Recorder, view: str) -> int:
    """Images the view sent to its encoder (cache misses), as its progress steps counted them."""
    return sum(n for v, phase, n, _ in rec.steps if (v, phase) == (view, "encode"))


def _cached_vectors(store: Path) -> int:
    with Store(store, read_only=True) as st:
        return st.scalar("SELECT count(*) FROM feature_cache WHERE namespace LIKE 'vision:%'")


@pytest.fixture
def encoded_images(monkeypatch) -> list[int]:
    """Images run through the image encoder (either backend), one entry per batch."""
    from views.vision.encoders import OnnxEncoder, TorchEncoder

    batches: list[int] = []
    for cls in (TorchEncoder, OnnxEncoder):
        def encode(self, batch, _real=cls.encode):
            batches.append(len(batch))
            return _real(self, batch)

        monkeypatch.setattr(cls, "encode", encode)
    return batches


def test_cross_modal_run_reports_broken_images_and_never_re_encodes(digits_folder: Path, encoded_images):
    cfg = _config(digits_folder)
    rec = _Recorder()
    res = api.run(cfg, reporter=rec)
    # 360 items, one file missing, 2 that do not decode: 357 images encoded once and cached
    assert sum(encoded_images) == 360 - 3 and _cached_vectors(digits_folder / "run.duckdb") == 360 - 3
    # encoding advanced the run's progress display, batch by batch, over every file read
    assert _encoded(rec, "vision") == 360 - 1
    assert res.termination_condition == "max_rounds" and res.n_pseudo > 0
    assert res.final_metrics["vision"]["test_accuracy"] > 0.4  # 10 classes: chance is 0.1
    rep = api.status(digits_folder / "run.duckdb")
    assert sum(p["items"] for p in rep.problems) == 3
    assert {p["problem"] for p in rep.problems} == {"corrupt or truncated image", "not an image Pillow can read",
                                                    "file not found"}
    with Store(digits_folder / "run.duckdb", read_only=True) as st:
        sources = dict(st.con.execute("SELECT v, count(*) FROM (SELECT unnest(source_views) AS v FROM pseudo_labels) GROUP BY 1").fetchall())
        assert sources.get("vision", 0) > 0 and sources.get("pixels", 0) > 0  # each view taught the other
        # the broken items never got a vision prediction, only abstentions
        assert st.scalar("SELECT count(*) FROM item_problems WHERE view = 'vision'") == 3
    encoded_images.clear()
    res2 = api.run(cfg, new_run=True)
    assert encoded_images == [] and _cached_vectors(digits_folder / "run.duckdb") == 360 - 3  # all from the store
    assert res2.final_metrics["vision"]["test_accuracy"] == res.final_metrics["vision"]["test_accuracy"]


def test_the_cut_statistic_is_built_in_a_vision_views_space(digits_folder: Path):
    """A vision view gave its readable items' vectors and a mask where the cut statistic
    wanted a matrix: ``select: cut_statistic`` with a vision view first (the default space)
    failed with numpy's "inhomogeneous shape". Its features are one row per item now, NaN
    where the image cannot be read; such an item has no place in the space and ranks last."""
    from orchestrator.cut_statistic import cut_rank

    df = pd.read_csv(digits_folder / "items.csv").iloc[:40]
    df[ITEM_ID_COLUMN] = [f"item{i}" for i in range(len(df))]
    ctx = ViewContext(labels=tuple(DIGITS), seed=0, data_dirs=(digits_folder,))
    view = VisionView.from_params("vision", ctx, image="image", image_size=32)
    X = view.features(df)
    assert X.shape == (40, 1280) and np.isnan(X[[3, 5, 9]]).all() and not np.isnan(np.delete(X, [3, 5, 9], 0)).any()
    labels = df["label"].fillna(0).astype(int).to_numpy()
    rank = cut_rank(lambda: iter([df.iloc[:20], df.iloc[20:]]), [view], labels, np.full(10, 0.1), None, 5)
    assert np.isneginf(rank[[3, 5, 9]]).all() and np.isfinite(np.delete(rank, [3, 5, 9])).all()
    broken = df.iloc[[3, 5, 9]].reset_index(drop=True)  # a batch with no readable image: the encoder's width, NaN
    assert view.features(broken).shape == (3, 1280) and np.isnan(view.features(broken)).all()

    cfg = yaml.safe_load(_config(digits_folder, "cut.duckdb").read_text())
    cfg["cotrain"] = {"policy": "auto", "select": "cut_statistic", "max_rounds": 1, "calibration_folds": 0}
    (digits_folder / "cut.yaml").write_text(yaml.safe_dump(cfg))
    res = api.run(digits_folder / "cut.yaml")
    assert res.termination_condition == "max_rounds" and res.n_pseudo > 0


def test_a_graph_view_spreads_labels_over_image_vectors_a_vision_view_cached(digits_folder: Path):
    """``kind: graph`` with ``image:``: label spreading over the image encoder's vectors,
    read from the cache a vision view with the same encoder and size filled (nothing encoded
    twice); an unreadable image abstains; spreading over the pool's structure labels the
    test split better than chance by far."""
    from views.graph import GraphView

    df = pd.read_csv(digits_folder / "items.csv")
    df[ITEM_ID_COLUMN] = [f"item{i}" for i in range(len(df))]
    with Store(":memory:") as st:
        ctx = ViewContext(labels=tuple(DIGITS), seed=0, cache=StoreCache(st), data_dirs=(digits_folder,))
        vision = VisionView.from_params("vision", ctx, image="image", image_size=32)
        vision.resolve_fields(df.columns)
        vision.encode(df)
        graph = GraphView.from_params("g", ctx, image="image", image_size=32, n_neighbors=5)
        assert graph.resolve_fields(list(df.columns)) == ["image"]
        gold = df.index[df["label"].notna() & (df["split"] == "train")]
        test = df.index[df["split"] == "test"]
        graph.fit(df.loc[gold].reset_index(drop=True), df.loc[gold, "label"].astype(int).to_numpy(),
                  np.ones(len(gold)))
        proba = graph.predict_proba(df)
        X = graph.features(df)
        none = graph.features(df.iloc[[3, 5, 9]].reset_index(drop=True))  # nothing readable in it
        assert graph._vision_view().encoded_count_ == 0  # every vector came from the vision view's cache
    broken = [3, 5, 9]
    assert np.isnan(proba[broken]).all()
    ok = ~np.isnan(proba).any(axis=1)
    assert ok.sum() >= len(df) - 3 - 5 and np.allclose(proba[ok].sum(axis=1), 1)  # a few may go unreached
    right = proba[test].argmax(axis=1) == df.loc[test, "label"].astype(int).to_numpy()
    assert right[ok[test]].mean() > 0.4  # 10 classes, 40 gold 8x8 digits (the vision view: > 0.4 too); chance 0.1
    assert X.shape == (len(df), 1280) and np.isnan(X[broken]).all() and none.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(np.delete(X, broken, 0), axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("params, match", [
    ({"image": "image", "features": "tfidf"}, "'features' applies to a 'text' field only"),
    ({"column_prefix": "px", "image_size": 32}, "'image_size' and 'image_root' apply to an 'image' field only"),
    ({"column_prefix": "px", "encoder": "mobilenet_v2"}, "'encoder' applies to a 'text' or 'image' field only"),
    ({"image": "image", "text": "label"}, "exactly one of 'columns', 'column_prefix', 'text' or 'image'"),
])
def test_a_graph_views_inputs_are_checked(params, match):
    from views.params import GraphParams

    with pytest.raises(ValueError, match=re.escape(match)):
        GraphParams.model_validate(params)


@pytest.mark.slow  # the encoders' parity is checked in the default suite by the first test here
def test_torch_and_onnx_backends_give_the_same_labels(digits_folder: Path):
    res = {b: api.run(_config(digits_folder, store=f"{b}.duckdb", backend=b)) for b in ("torch", "onnx")}
    labels = {}
    for b in res:
        with Store(digits_folder / f"{b}.duckdb", read_only=True) as st:
            labels[b] = st.query("SELECT item_id, label, round FROM pseudo_labels ORDER BY item_id").to_pylist()
    assert labels["torch"] and labels["torch"] == labels["onnx"]
    # features agree to 1e-4, so the heads agree; the head's C, chosen by cross-validated
    # log-loss over a grid, may still flip between neighbours on near-ties: one test item apart
    acc = [res[b].final_metrics["vision"]["test_accuracy"] for b in res]
    assert abs(acc[0] - acc[1]) <= 0.05


def test_image_folder_layout(tmp_path: Path):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    for split, rng in (("train", range(0, 200)), ("test", range(200, 300))):
        for i in rng:
            label = "unlabelled" if split == "train" and i >= 30 else str(y[i])
            (tmp_path / split / label).mkdir(parents=True, exist_ok=True)
            _digit_png(X[i]).save(tmp_path / split / label / f"{i}.png")
    (tmp_path / "train" / "3" / "notes.txt").write_text("ignored: not an image suffix")
    cfg = {"task": {"labels": DIGITS}, "data": {"train": "train", "test": "test"},
           "views": [{"name": "a", "kind": "vision", "image": "image", "image_size": 32},
                     {"name": "b", "kind": "vision", "image": "image", "image_size": 48, "head": "mlp"}],
           "cotrain": {"policy": "k_best", "k": 10, "max_rounds": 1, "calibration_folds": 0}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = api.run(tmp_path / "c.yaml")
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        counts = dict(st.con.execute(
            "SELECT CASE WHEN split = 'test' THEN 'test' WHEN gold_label IS NULL THEN 'pool' ELSE 'gold' END,"
            " count(*) FROM items GROUP BY 1").fetchall())
        ids = [r[0] for r in st.con.execute("SELECT item_id FROM items ORDER BY row_idx LIMIT 2").fetchall()]
    assert counts == {"gold": 30, "pool": 170, "test": 100}
    assert all(re.fullmatch(r"train/\d/\d+\.png", i) for i in ids)  # an image's path is its id
    assert res.final_metrics["a"]["test_accuracy"] > 0.3 and not api.status(tmp_path / "s.duckdb").problems
    import datasets

    api.export(tmp_path / "s.duckdb", tmp_path / "hf.parquet", "hf-parquet")
    pq = datasets.load_dataset("parquet", data_files=str(tmp_path / "hf.parquet"), split="train")
    assert isinstance(pq.features["image"], datasets.Image) and pq[0]["image"].size == (8, 8)
    # the project copied elsewhere and the original's images gone: exports read the copy's images
    # (hf failed with FileNotFoundError; label-studio wrote the old paths)
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train", "test", "c.yaml", "s.duckdb"):
        (shutil.copytree if (tmp_path / name).is_dir() else shutil.copy)(tmp_path / name, copy / name)
    shutil.rmtree(tmp_path / "train")
    assert api.export(copy / "s.duckdb", copy / "hf.parquet", "hf-parquet") == len(pq)
    api.export(copy / "s.duckdb", copy / "ls.json", "label-studio")
    paths = [t["data"]["image"] for t in json.loads((copy / "ls.json").read_text())]
    assert paths and all(p.startswith(str(copy.resolve() / "train")) and Path(p).is_file() for p in paths)
    missing = sorted((copy / "train" / "3").glob("*.png"))[0]  # a gold item's: exported
    missing.unlink()  # in neither place now: hf, which reads it, names where the run read it
    where = tmp_path.resolve() / "train" / "3" / missing.name
    with pytest.raises(CotrainError, match=rf"image {re.escape(str(where))} of an exported item is missing"):
        api.export(copy / "s.duckdb", copy / "hf2.parquet", "hf-parquet")
    api.export(copy / "s.duckdb", copy / "ls2.json", "label-studio")  # a review tool may serve it from elsewhere
    assert str(where) in [t["data"]["image"] for t in json.loads((copy / "ls2.json").read_text())]


def test_images_as_bytes_in_parquet_share_features_with_files(digits_folder: Path, tmp_path: Path, encoded_images):
    full = pd.read_csv(digits_folder / "items.csv")
    df = pd.concat([full.iloc[20:60], full.iloc[260:320]], ignore_index=True)  # 20 gold, 20 pool, 60 test
    raw = [(digits_folder / p).read_bytes() for p in df["image"]]
    df["hf"] = [{"bytes": b, "path": p} for b, p in zip(raw, df["image"])]  # HF datasets' Image struct ...
    df["image"] = raw  # ... and plain bytes
    df.to_parquet(tmp_path / "items.parquet", index=False)
    cfg = {"task": {"labels": DIGITS}, "data": {"train": "items.parquet", "split_column": "split"},
           "views": [{"name": "raw", "kind": "vision", "image": "image", "image_size": 32},
                     {"name": "hf", "kind": "vision", "image": "hf", "image_size": 32}],
           "cotrain": {"policy": "k_best", "k": 5, "max_rounds": 1, "calibration_folds": 0}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rec = _Recorder()
    res = api.run(tmp_path / "c.yaml", reporter=rec)
    assert sum(encoded_images) == 100 and _cached_vectors(tmp_path / "s.duckdb") == 100  # each image once
    assert _encoded(rec, "raw") == 100 and _encoded(rec, "hf") == 0  # the same bytes: hf found them in the store
    assert res.final_metrics["raw"]["test_accuracy"] == res.final_metrics["hf"]["test_accuracy"]
    # the Hugging Face export turns both image columns into Image features that decode
    import datasets

    api.export(tmp_path / "s.duckdb", tmp_path / "hf", "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["hf"], datasets.Image)
    assert ds[0]["image"].size == (8, 8) and ds[0]["hf"].size == (8, 8)


def test_clip_like_encoder_labels_zero_shot_without_gold(tmp_path: Path):
    rows = []
    colours = {"red": (220, 20, 30), "green": (20, 200, 40), "blue": (30, 40, 210)}
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(60):
        name = list(colours)[i % 3]
        noise = rng.integers(-15, 15, size=(16, 16, 3))
        arr = (np.array(colours[name]) + noise).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "label": name if i >= 45 else "", "split": "test" if i >= 45 else "train",
                     "hue": float(np.argmax(colours[name])) + rng.normal(0, 0.3)})
    pd.DataFrame(rows).to_csv(tmp_path / "items.csv", index=False)
    cfg = {"task": {"labels": list(colours)}, "data": {"train": "items.csv", "split_column": "split"},
           "views": [{"name": "clip", "kind": "vision", "image": "image", "image_size": 16,
                      "encoder": "tests.plugin_views:colour_clip", "tokenizer": "tests.plugin_views:colour_tokenizer",
                      "prompt": "a {label} square"},
                     {"name": "hue", "kind": "sklearn", "columns": ["hue"]}],
           "cotrain": {"policy": "k_best", "k": 5, "max_rounds": 2, "calibration_folds": 0}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = api.run(tmp_path / "c.yaml")  # no gold label at all: the CLIP-like view starts
    rounds = api.status(tmp_path / "s.duckdb").rounds
    assert rounds[0]["views"]["clip"]["test_accuracy"] == 1.0  # zero-shot, before any training
    assert res.final_metrics["hue"]["test_accuracy"] > 0.9  # taught by the image view's labels


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, match", [
    ({"image": None}, r"views\[0\].*image"),
    ({"image": "picture"}, r"image field 'picture' is not a column"),
    ({"backend": "tensorrt"}, r"views\[0\].*backend"),
    ({"image_size": 8}, r"views\[0\].*image_size"),
    ({"std": [0.2, 0.0, 0.2]}, r"std values must be > 0"),
    ({"encoder": "no_such_pkg.models:net"}, r"cannot import image encoder 'no_such_pkg.models:net'"),
    ({"encoder": "tests.plugin_views:colour_tokenizer"}, r"returned Tensor, not a torch.nn.Module|building the encoder"),
    ({"weights": "absent.pt"}, r"weights file not found: .*absent.pt"),
    ({"weights": "items.csv"}, r"cannot read weights file"),
    ({"head_params": {"C": 0}}, r"head 'logistic_regression': C must be a number above 0, not 0"),
])
def test_bad_vision_view_is_named_and_nothing_is_stored(digits_folder: Path, tmp_path: Path, params, match):
    cfg = yaml.safe_load(_config(digits_folder).read_text())
    cfg["views"][0].update(params)
    cfg["views"][0] = {k: v for k, v in cfg["views"][0].items() if v is not None}
    cfg["data"]["train"] = str(digits_folder / "items.csv")
    cfg["store"] = str(tmp_path / "bad.duckdb")
    if "weights" in params:
        cfg["views"][0]["weights"] = str(digits_folder / params["weights"])
    with pytest.raises(CotrainError, match=match):
        c = parse_config(cfg)
        views, _ = build_views(c, None, list(pd.read_csv(digits_folder / "items.csv", nrows=1).columns), digits_folder)
        for v in views:
            v.zero_shot  # noqa: B018 - loads the encoder, as a run's start does
    with pytest.raises(CotrainError, match=match):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        api.run(tmp_path / "c.yaml")
    if (tmp_path / "bad.duckdb").exists():
        with Store(tmp_path / "bad.duckdb", read_only=True) as st:
            assert st.scalar("SELECT count(*) FROM runs") == 0


def test_image_folder_with_a_stray_file_is_named(tmp_path: Path):
    (tmp_path / "train" / "1").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "1" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "stray.png")
    cfg = {"task": {"labels": DIGITS}, "data": {"train": "train"},
           "views": [{"name": "a", "kind": "vision", "image": "image"}, {"name": "b", "kind": "vision", "image": "image"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CotrainError, match=r"train: 'stray.png' lies directly in the image folder"):
        api.run(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"unknown example 'cifar'"):
        api.demo(tmp_path / "demo", example="cifar")
    # a size for the other kind of example changed nothing, silently (the default is mfeat)
    with pytest.raises(ConfigError, match=r"'n_labelled': applies to the text example only, not to 'mfeat'"):
        api.demo(tmp_path / "demo", n_labelled=100)
    with pytest.raises(ConfigError, match=r"'n_items': applies to image examples \(mfeat, animals\) only, not to "
                                          r"'text'"):
        api.write_example(tmp_path / "demo", example="text", n_items=50)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("example, views, fraction, n_gold", [
    pytest.param("mfeat", {"vision", "fourier", "shape"}, 0.2, 70, marks=pytest.mark.slow),
    pytest.param("animals", {"vision", "pixels"}, 0.3, 100, marks=pytest.mark.slow)])
def test_cross_modal_examples_run(tmp_path: Path, example: str, views: set[str], fraction: float, n_gold: int):
    """The README's `cotrain demo --example ...`, on a subsample of the packaged dataset. Three
    gold labels a class cannot certify a 0.9-precise batch under `auto` (the out-of-fold estimate
    from 30 labels is too uncertain), so the subsample keeps 20% of its labels (7 a class);
    Animal-MNIST's weaker pixel view needs 30% (10 a class) since the shadow runs' honest estimate."""
    d, res = api.demo(tmp_path / example, example=example, n_items=500, n_test=150, max_rounds=1,
                      labelled_fraction=fraction)
    assert set(res.final_metrics) == views | {"ensemble"}
    assert res.n_gold == n_gold and res.n_pseudo > 0  # a share of the 350 training items
    assert res.final_metrics["vision"]["test_accuracy"] > 0.4  # 10 classes: chance is 0.1
    assert len(list((d / "images").glob("*.png"))) == 500


@pytest.mark.slow
def test_the_default_demo_shows_the_method_working(tmp_path: Path):
    """`cotrain demo` as the README runs it (the mfeat example, 70 gold labels): the final
    ensemble beats every view's round 0 (trained on gold alone) and round 0's ensemble, and the
    labels it accepts are right, scored against the truth the example hides (README: 1,236
    labels, 0.984 right). About 40 s on 2 cores."""
    from orchestrator.packaged_data import example_truth

    folder, res = api.demo(tmp_path / "demo")
    assert {v["name"] for v in yaml.safe_load((folder / "cotrain.yaml").read_text())["views"]} == {
        "vision", "fourier", "shape"}
    with Store(res.store, read_only=True) as st:
        acc = {(r, v): a for r, v, a in st.con.execute("SELECT round, view, test_accuracy FROM metrics").fetchall()}
    last = max(r for r, _ in acc)
    assert acc[(last, "ensemble")] > max(a for (r, v), a in acc.items() if r == 0)  # round 0's views and ensemble
    api.export(res.store, tmp_path / "labels.parquet", include_gold=False)  # each label with its item's image
    picks = pd.read_parquet(tmp_path / "labels.parquet", columns=["label", "image"])
    right = picks["image"].str.rsplit("/", n=1).str[1].map(example_truth("mfeat")) == picks["label"]
    assert len(right) == res.n_pseudo > 1000 and right.mean() >= 0.95


def test_frames_without_item_ids_never_share_what_was_read(digits_folder: Path):
    """A view used on its own gets frames without ids: row 0 of one frame is not row 0 of the next."""
    df = pd.read_csv(digits_folder / "items.csv")
    ctx = ViewContext(labels=tuple(DIGITS), seed=0, data_dirs=(digits_folder,))
    view = VisionView.from_params("vision", ctx, image="image", image_size=32)
    first, _ = view.encode(df.iloc[[0, 1]].reset_index(drop=True))
    second, _ = view.encode(df.iloc[[2, 4]].reset_index(drop=True))
    again, _ = view.encode(df.iloc[[2, 4]].reset_index(drop=True))
    assert not np.allclose(first, second) and np.allclose(second, again)
    _, mask = view.encode(df.iloc[[3, 0]].reset_index(drop=True))  # row 3's file is truncated
    assert mask.tolist() == [False, True]
    _, mask = view.encode(df.iloc[[0, 3]].reset_index(drop=True))
    assert mask.tolist() == [True, False]


def test_a_relative_image_path_in_two_data_folders_is_ambiguous_unless_the_files_match(tmp_path: Path):
    """A test file beside its own img/0.png was read from the train file's folder, which held
    another img/0.png: two views scored 0.30 on test against 0.93 with distinct names."""
    from store.media import resolve_source

    train, test = tmp_path / "train", tmp_path / "test"
    for d, seed in ((train, 0), (test, 1)):
        (d / "img").mkdir(parents=True)
        _digit_png(np.random.default_rng(seed).random(64)).save(d / "img" / "0.png")
        _digit_png(np.zeros(64)).save(d / "img" / "same.png")
    src = resolve_source("img/0.png", [train, test], "it1")
    with pytest.raises(ImageProblem, match=r"ambiguous: the data files' folders hold different files of that name"):
        src.read()
    assert resolve_source("img/same.png", [train, test], "it2").path == train / "img" / "same.png"  # a copy: fine
    assert resolve_source("img/0.png", [test], "it3").path == test / "img" / "0.png"


def test_a_missing_image_root_is_one_error_and_unreadable_images_are_warned_about_a_few_at_a_time(
        tmp_path: Path, caplog):
    ctx = ViewContext(labels=tuple(DIGITS), seed=0, base_dir=tmp_path, data_dirs=(tmp_path,))
    view = VisionView.from_params("vision", ctx, image="image", image_size=32, image_root="nowhere")
    with pytest.raises(ViewError, match=r"view 'vision': image_root 'nowhere' is not a folder"):
        view.resolve_fields(["image"])
    view = VisionView.from_params("vision", ctx, image="image", image_size=32)
    frame = pd.DataFrame({"image": [f"gone/{i}.png" for i in range(12)], ITEM_ID_COLUMN: [f"it{i}" for i in range(12)]})
    with caplog.at_level(logging.WARNING, logger="cotrain"):
        _, mask = view.encode(frame)
    lines = [r.getMessage() for r in caplog.records if r.name == "cotrain"]
    assert not mask.any() and len(lines) == 6 and "7 more item(s) abstain" in lines[-1]
