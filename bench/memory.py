"""Memory breakdown of the rounds process: Python heap (tracemalloc) vs DuckDB vs RSS.

Same synthetic pool and views as ``bench/overhead.py`` (predictions not stored). Separates
what cotrain's own code holds (the Python heap, where the label matrix lives and through
which probabilities are streamed in batches) from DuckDB's buffer cache of the data
snapshot. tracemalloc slows the run, so timings are not reported here.
Run:  .venv/bin/python bench/memory.py  [--sizes 100000,1000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import print_table, write_json  # noqa: E402
from bench.overhead import config, make_data, peak_rss_mb  # noqa: E402


def child(mode: str, data: str, store: str) -> None:
    import tracemalloc

    from orchestrator.config import parse_config
    from orchestrator.rounds import RoundRunner
    from store.database import Store

    cfg = parse_config(config(Path(data), Path(store), False))
    if mode == "load":
        with Store(cfg.store) as st:
            RoundRunner(cfg, st).start()
        return
    tracemalloc.start()
    with Store(cfg.store) as st:
        RoundRunner(cfg, st).run()
        duck = st.con.sql("SELECT sum(memory_usage_bytes) / 1e6 FROM duckdb_memory()").fetchall()[0][0]
    print(json.dumps({"python_heap_peak_mb": tracemalloc.get_traced_memory()[1] / 1e6,
                      "duckdb_end_mb": duck, "rss_peak_mb": peak_rss_mb()}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    args = ap.parse_args()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            data, store = Path(tmp) / f"d{n}.parquet", Path(tmp) / f"s{n}.duckdb"
            make_data(n, data)
            for mode in ("load", "rounds"):
                p = subprocess.run([sys.executable, __file__, "--child", mode, str(data), str(store)],
                                   capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
                if p.returncode:
                    raise SystemExit(p.stderr)
            r = {"n": n, **json.loads(p.stdout.strip().splitlines()[-1])}
            results.append(r)
            rows.append([f"{n:,}", f"{r['python_heap_peak_mb']:.0f}", f"{r['duckdb_end_mb']:.0f}",
                         f"{r['rss_peak_mb']:.0f}"])
    print_table("rounds process memory (MB), two sklearn views, predictions not stored",
                ["pool", "python heap peak", "duckdb at end", "RSS peak"], rows)
    print(f"\nwrote {write_json('memory', {'command': 'python bench/memory.py ' + ' '.join(sys.argv[1:]), 'results': results})}")


if __name__ == "__main__":
    main()
