#!/usr/bin/env python
"""Time `featx compare` on one store with the grid on loky (1 and 2 processes) and on a local Dask cluster.

The store: N x D float32 features shaped like fc7 of C-NMC cells (73 subjects, 2:1 ALL/HEM; see
bench_heads.py), written as a featx store. Each run is the real command in a fresh process
(`python -m featx compare STORE --heads H --folds 5 --jobs J [--backend dask]`), timed end to end: start-up,
the cluster's start and stop, the grid and the reports. The tables are compared (largest metric difference).

    .venv/bin/python scripts/bench_backends.py [--rows 4000] [--dim 1024] [--runs loky:1,loky:2,dask:2]

Prints one line per run and a summary line ("compare, N x D, heads H, 5 folds: loky 1 job X s, ...").
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_heads import structured_features  # noqa: E402  (a sibling script)


def write_store(path: Path, rows: int, dim: int) -> None:
    """A featx store of structured random features (tap fc7)."""
    from featx.data.collection import Sample
    from featx.store.writer import FeatureStore

    X, y, subjects = structured_features(rows, dim)
    classes = ["all", "hem"]
    samples = [Sample(path=f"cells/{i:06d}.bmp", label=classes[c], subject=s, split=None)
               for i, (c, s) in enumerate(zip(y, subjects))]
    with FeatureStore.open_for_extraction(path, {"dtype": "float32", "backbone": "bench", "weights": "none"},
                                          samples, classes, {"fc7": dim}) as store:
        for start in range(0, rows, 1024):
            idx = np.arange(start, min(rows, start + 1024))
            store.write_rows(idx, {"fc7": X[idx]})


def run(store: Path, out: Path, heads: str, folds: int, backend: str, jobs: int) -> float:
    cmd = [sys.executable, "-m", "featx", "compare", str(store), "--heads", heads, "--folds", str(folds),
           "--jobs", str(jobs), "--backend", backend, "--no-plots", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's featx
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def table(out: Path) -> dict[str, dict]:
    from featx import csvfiles

    with (out / "results.csv").open(newline="") as fh:
        return {r["name"]: r for r in csvfiles.DictReader(fh)}


def largest_difference(a: dict, b: dict) -> tuple[float, str]:
    """The largest difference of any metric cell between two tables of the same rows, and where it is."""
    from featx.results import METRICS

    if sorted(a) != sorted(b):
        return float("inf"), f"rows {sorted(a)} vs {sorted(b)}"
    cols = [m + s for m in METRICS for s in ("", "_std", "_ci_low", "_ci_high")]
    found = [(abs(float(a[n][c]) - float(b[n][c])), f"{n} {c}") for n in a for c in cols if a[n].get(c)]
    return max(found, default=(0.0, ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--heads", default="softmax,logistic,svm,xgboost")
    parser.add_argument("--runs", default="loky:1,loky:2,dask:2", help="backend:jobs, comma-separated")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    runs = [(b, int(j)) for b, j in (r.split(":") for r in args.runs.split(","))]

    with tempfile.TemporaryDirectory(prefix="featx-bench-backends-") as tmp:
        store = Path(tmp) / "bench.h5"
        write_store(store, args.rows, args.dim)
        print(f"store: {args.rows} x {args.dim} float32, heads {args.heads}, {args.folds}-fold subject CV; machine: "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
        results, tables = [], {}
        for backend, jobs in runs:
            out = Path(tmp) / f"{backend}-{jobs}"
            seconds = run(store, out, args.heads, args.folds, backend, jobs)
            tables[(backend, jobs)] = table(out)
            results.append((backend, jobs, seconds))
            print(f"  {backend} --jobs {jobs}: {seconds:.1f} s", flush=True)
        # BLAS may use several threads in a single process (--jobs 1) but one per worker (loky workers on a
        # small machine, Dask workers always): scores computed with BLAS may then differ in the last digits
        first = tables[runs[0]]
        worst = 0.0
        for run_, t in list(tables.items())[1:]:
            diff, where = largest_difference(first, t)
            worst = max(worst, diff)
            print(f"  {run_[0]} --jobs {run_[1]} vs {runs[0][0]} --jobs {runs[0][1]}: largest metric difference "
                  f"{diff:.1e}" + (f" ({where})" if diff else " (identical)"))

    def name(backend: str, jobs: int) -> str:
        unit = "workers" if backend in ("dask", "ray") else "jobs"
        return f"{backend} {jobs} {unit[:-1] if jobs == 1 else unit}"

    print(f"compare, {args.rows} x {args.dim}, heads {args.heads}, {args.folds} folds: "
          + ", ".join(f"{name(b, j)} {s:.1f} s" for b, j, s in results))
    print(f"command: featx compare STORE --heads {args.heads} --folds {args.folds} --jobs J "
          "[--backend dask] (wall time of the whole command, cluster start and stop included)")
    if worst > 1e-3:
        sys.exit("the tables differ by more than BLAS rounding")


if __name__ == "__main__":
    main()
