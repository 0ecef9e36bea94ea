#!/usr/bin/env python
"""Time the default `featx compare` grid (softmax, logistic, svm, xgboost) with 5-fold subject CV.

Features: 10,000 x 4,096 float32 (the size of VGG-16 fc7 on the C-NMC training set), random but
structured like real features: 73 subjects (47 ALL, 26 HEM, about 2:1 cells), a per-subject offset (the
stain), a class signal in a low-dimensional subspace, and non-negative ReLU-like values.

    .venv/bin/python scripts/bench_heads.py [--rows 10000] [--dim 4096] [--jobs 1] [--heads ...]

Prints seconds per head (the 5 fits plus predictions, summed) and the wall time of the whole grid.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="joblib workers over heads x folds")
    parser.add_argument("--heads", default="softmax,logistic,svm,xgboost")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from featx.evaluation import evaluate_many
    from featx.store import FeatureSet

    t0 = time.perf_counter()
    X, y, subjects = structured_features(args.rows, args.dim)
    fs = FeatureSet(X=X, y=y, classes=["all", "hem"], paths=np.array([f"{i}.bmp" for i in range(len(y))]),
                    subjects=subjects, splits=np.array([""] * len(y)), name="bench/fc7", backbone="bench", tap="fc7",
                    positive="all")
    print(f"features: {X.shape[0]} x {X.shape[1]} float32 ({X.nbytes / 2**20:.0f} MiB), "
          f"{len(set(subjects))} subjects, {int((y == 0).sum())} ALL / {int((y == 1).sum())} HEM; "
          f"made in {time.perf_counter() - t0:.1f} s")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jobs={args.jobs}, "
          f"{args.folds}-fold subject CV")
    total = time.perf_counter()
    results = []
    for head in args.heads.split(","):
        t = time.perf_counter()
        row, = evaluate_many(fs, [head], cv="subject", n_folds=args.folds, jobs=args.jobs, device=args.device)
        seconds = time.perf_counter() - t
        results.append((head, seconds, row))
        accuracy = row.scores["accuracy"]
        print(f"{head:>10}: {seconds:7.1f} s  (fit {row.fit_seconds:.1f} s)  accuracy "
              f"{100 * accuracy.mean:.1f} ± {100 * accuracy.std:.1f} %, weighted F1 "
              f"{100 * row.mean('f1_weighted'):.1f} %", flush=True)
    print(f"{'total':>10}: {time.perf_counter() - total:7.1f} s for {len(results)} heads x {args.folds} folds")


if __name__ == "__main__":
    main()
