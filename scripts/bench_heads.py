#!/usr/bin/env python
"""Time the default `featx compare` grid (softmax, logistic, svm, xgboost) with 5-fold subject CV, against
the heads' previous settings on the same features in the same run.

Features: 10,000 x 4,096 float32 (the size of VGG-16 fc7 on the C-NMC training set), random but
structured like real features: 73 subjects (47 ALL, 26 HEM, about 2:1 cells), a per-subject offset (the
stain), a class signal in a low-dimensional subspace, and non-negative ReLU-like values.

    PYTHONPATH=. .venv/bin/python scripts/bench_heads.py [--rows 10000] [--dim 4096] [--jobs auto]
        [--heads softmax,logistic,svm,xgboost] [--only before|after]

"before" is each head's settings before the heads-grid work (issue 12), given as explicit parameters
(:data:`BEFORE`) and fitted the way `featx compare --jobs 1` did: one head at a time, folds in series. "after"
is today's defaults, every head x fold in one pool sized by ``--jobs`` (auto: cores and memory). Prints,
per head, the seconds of its fits and predictions summed over folds, the wall time of its own run
(before), the weighted F1 of both and the change, then the wall time of each whole grid.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

# The heads' parameters before issue 12 (where today's defaults differ); jobs=1.
BEFORE = {
    "softmax": {"epochs": 30},
    "svm": {"kernel_dtype": "float64", "cache_size": 500},
    "xgboost": {"learning_rate": 0.1, "max_bin": 64, "early_stopping_rounds": None, "sketch_rows": None},
}


def structured_features(rows: int, dim: int, seed: int = 0):
    """Return (X, y, subjects) shaped like fc7 features of C-NMC cells."""
    rng = np.random.default_rng(seed)
    n_all, n_hem = 47, 26
    subjects = np.array([f"S{i}" for i in range(n_all)] + [f"H{i}" for i in range(n_hem)])
    labels = np.array([0] * n_all + [1] * n_hem)
    # ALL subjects hold about as many cells each as HEM ones: 7,272 ALL / 3,389 HEM cells on the real data
    weights = np.where(labels == 0, 7272 / n_all, 3389 / n_hem)
    subj_of_row = rng.choice(len(subjects), size=rows, p=weights / weights.sum())
    y = labels[subj_of_row]
    latent = 32
    basis = (rng.normal(0, 1, (latent, dim)) / np.sqrt(latent)).astype(np.float32)
    class_centre = rng.normal(0, 1, (2, latent)).astype(np.float32) * 0.45
    subject_offset = rng.normal(0, 0.8, (len(subjects), latent)).astype(np.float32)
    z = class_centre[y] + subject_offset[subj_of_row] + rng.normal(0, 1, (rows, latent)).astype(np.float32)
    X = z @ basis + rng.normal(0, 0.5, (rows, dim)).astype(np.float32)
    np.maximum(X, 0, out=X)  # fc7 follows a ReLU
    return X, y, subjects[subj_of_row]


def _before(fs, heads, args) -> tuple[dict, float]:
    """Each head alone with its previous settings, folds in series: {head: (wall s, row)}, total wall."""
    from featx.evaluation import evaluate_many

    out, total = {}, time.perf_counter()
    for head in heads:
        t = time.perf_counter()
        row, = evaluate_many(fs, [head], cv="subject", n_folds=args.folds, jobs=1, device=args.device,
                             params={head: BEFORE[head]} if head in BEFORE else None)
        out[head] = (time.perf_counter() - t, row)
        print(f"  before {head:>9}: {out[head][0]:6.1f} s wall, fits {row.fit_seconds:6.1f} s, weighted F1 "
              f"{100 * row.mean('f1_weighted'):.2f} %", flush=True)
    return out, time.perf_counter() - total


def _after(fs, heads, args) -> tuple[dict, float]:
    """Every head x fold in one pool with today's defaults: {head: row}, wall."""
    from featx.evaluation import evaluate_many

    t = time.perf_counter()
    rows = evaluate_many(fs, heads, cv="subject", n_folds=args.folds, jobs=args.jobs, device=args.device)
    wall = time.perf_counter() - t
    for row in rows:
        print(f"  after  {row.head:>9}: fits {row.fit_seconds:6.1f} s (in the shared pool), weighted F1 "
              f"{100 * row.mean('f1_weighted'):.2f} %", flush=True)
    return {row.head: row for row in rows}, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", default="auto", help="processes of the after grid: a number, -1, or auto")
    parser.add_argument("--heads", default="softmax,logistic,svm,xgboost")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", choices=("before", "after"), help="run one side only")
    args = parser.parse_args()
    args.jobs = None if args.jobs == "auto" else int(args.jobs)
    heads = args.heads.split(",")

    from featx.evaluation.pool import plan_jobs
    from featx.machine import cpu_cores as cores
    from featx.store import FeatureSet

    t0 = time.perf_counter()
    X, y, subjects = structured_features(args.rows, args.dim)
    fs = FeatureSet(X=X, y=y, classes=["all", "hem"], paths=np.array([f"{i}.bmp" for i in range(len(y))]),
                    subjects=subjects, splits=np.array([""] * len(y)), name="bench/fc7", backbone="bench", tap="fc7",
                    positive="all")
    print(f"features: {X.shape[0]} x {X.shape[1]} float32 ({X.nbytes / 2**20:.0f} MiB), "
          f"{len(set(subjects))} subjects, {int((y == 0).sum())} ALL / {int((y == 1).sum())} HEM; "
          f"made in {time.perf_counter() - t0:.1f} s")
    flags = " ".join(f for f in ("avx512f", "avx2") if f in _cpu_flags())
    most = plan_jobs(None, len(heads) * args.folds, X.nbytes, 0)
    jobs = args.jobs if args.jobs is not None else f"auto (at most {most})"
    print(f"machine: {platform.processor() or platform.machine()} ({flags or 'no avx2'}), {cores()} cores, "
          f"load {os.getloadavg()[0]:.1f}; {args.folds}-fold subject CV; after: jobs={jobs}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}", flush=True)

    before, before_wall = _before(fs, heads, args) if args.only != "after" else ({}, None)
    after, after_wall = _after(fs, heads, args) if args.only != "before" else ({}, None)

    print(f"\n{'head':>9} | {'before wall':>11} | {'before fits':>11} | {'after fits':>10} | {'F1 before':>9} | "
          f"{'F1 after':>8} | {'change':>6}")
    for head in heads:
        b = before.get(head)
        a = after.get(head)
        f1b = 100 * b[1].mean("f1_weighted") if b else None
        f1a = 100 * a.mean("f1_weighted") if a else None
        print(f"{head:>9} | {_s(b and b[0]):>11} | {_s(b and b[1].fit_seconds):>11} | {_s(a and a.fit_seconds):>10} | "
              f"{_pct(f1b):>9} | {_pct(f1a):>8} | "
              f"{(f'{f1a - f1b:+.2f}' if f1a is not None and f1b is not None else '-'):>6}")
    if before_wall is not None:
        print(f"before: {before_wall:.1f} s wall for {len(heads)} heads x {args.folds} folds (one head at a time, "
              "jobs=1)")
    if after_wall is not None:
        pool = max(row.wall_seconds for row in after.values())
        print(f"after:  {after_wall:.1f} s wall for {len(heads)} heads x {args.folds} folds (one pool: {pool:.1f} s; "
              f"splits, metrics and intervals: {after_wall - pool:.1f} s)")


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


if __name__ == "__main__":
    main()
