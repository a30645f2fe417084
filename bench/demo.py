"""Demo benchmark: what the default demo's labels are worth, scored against the truth it hides.

``cotrain demo`` (the ``mfeat`` example: each UCI digit's image for a MobileNetV2 view, its
Fourier coefficients and its shape descriptors as two more views; 70 gold labels, a
1,430-item pool, 500 held-out items) runs in a temporary folder, exactly as the README's
command runs it. Then per round: labels added, their estimated precision (mean
``p_correct``) and their true precision (against the dataset's labels, which the example
removed from the pool), and the test accuracy of each view and of the ensemble. The issue's
bar (13, item 8): the final ensemble above every view's round 0 and above the gold-only
ensemble (round 0's).

    .venv/bin/python bench/demo.py [--example mfeat|animals] [--n-items N]
Table on stdout, JSON in bench/results/demo_<example>.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from bench._common import print_table, write_json  # noqa: E402


def score_demo(store: str, dataset: str) -> dict:
    """Per-round figures of the example's run in ``store``, its labels scored against the truth."""
    import duckdb

    from orchestrator.packaged_data import example_truth

    truth = example_truth(dataset)
    con = duckdb.connect(store, read_only=True)
    try:
        run_id = con.execute("SELECT max(run_id) FROM runs").fetchone()[0]
        picks = con.execute(
            "SELECT p.round, p.label, p.p_correct, d.image FROM pseudo_labels p "
            "JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id "
            f"JOIN data_{int(run_id)} d ON d.__row = i.row_idx "
            "WHERE p.run_id = ? AND p.status = 'accepted'", [run_id]).fetchall()
        metrics = con.execute("SELECT round, view, test_accuracy FROM metrics WHERE run_id = ? ORDER BY round, view",
                              [run_id]).fetchall()
    finally:
        con.close()
    rounds: dict[int, dict] = {}
    for r, view, acc in metrics:
        rounds.setdefault(int(r), {"round": int(r), "added": 0, "right": 0, "est": 0.0, "test": {}})["test"][view] = acc
    for r, label, p_correct, image in picks:
        row = rounds[int(r)]
        row["added"] += 1
        row["right"] += int(truth[image.rsplit("/", 1)[1]] == label)
        row["est"] += float(p_correct or 0.0)
    out = []
    for row in sorted(rounds.values(), key=lambda x: x["round"]):
        n = row.pop("added")
        right, est = row.pop("right"), row.pop("est")
        out.append({**row, "added": n, "true_precision": right / n if n else None,
                    "est_precision": est / n if n else None})
    total = sum(r["added"] for r in out)
    right = sum((r["true_precision"] or 0) * r["added"] for r in out)
    first, last = out[0]["test"], out[-1]["test"]
    views = [v for v in first if v != "ensemble"]
    return {"rounds": out, "labels": total, "true_precision": right / total if total else None,
            "est_precision": sum((r["est_precision"] or 0) * r["added"] for r in out) / total if total else None,
            "final_ensemble": last["ensemble"], "round0_ensemble": first["ensemble"],
            "best_round0_view": max(first[v] for v in views),
            "method_works": last["ensemble"] > max(first[v] for v in views) and last["ensemble"] > first["ensemble"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="mfeat", choices=["mfeat", "animals"])
    ap.add_argument("--n-items", type=int, default=None)
    args = ap.parse_args()
    from orchestrator import api

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, res = api.demo(Path(tmp) / "demo", example=args.example, n_items=args.n_items)
        result = score_demo(res.store, args.example)
    seconds = time.perf_counter() - t
    views = sorted(result["rounds"][0]["test"])
    rows = [[r["round"], r["added"], "-" if r["est_precision"] is None else f"{r['est_precision']:.3f}",
             "-" if r["true_precision"] is None else f"{r['true_precision']:.3f}",
             *[f"{r['test'].get(v, float('nan')):.3f}" for v in views]] for r in result["rounds"]]
    print_table(f"cotrain demo --example {args.example}: labels against the hidden truth, test accuracy per view",
                ["round", "added", "est precision", "true precision", *views], rows)
    print(f"\n{result['labels']} labels, {result['true_precision']:.3f} right "
          f"(estimated {result['est_precision']:.3f});"
          f" final ensemble {result['final_ensemble']:.3f} against round 0's best view {result['best_round0_view']:.3f}"
          f" and round 0's ensemble {result['round0_ensemble']:.3f}: method works = {result['method_works']}"
          f" ({seconds:.0f} s)")
    path = write_json(f"demo_{args.example}", {"command": "python " + " ".join(sys.argv), "seconds": seconds,
                                               **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
