"""Benchmark scale-out on one machine: one process vs two processes (shards, torchrun) vs two threads.

Every configuration is a real `featx extract` command line timed from its start to its exit (interpreter,
torch import, model, decode, forward, write: what a user waits for), on the same synthetic C-NMC cells at the
real data's size (450x450 BMP) and the same random weights. Decoding happens in the compute process
(--workers 0) unless a row says otherwise, so the thread counts are exactly the ones named:

- 1 process x 1 thread            the unit of work
- 1 process x 2 threads           what threads give (torch intra-op parallelism; decode stays serial)
- 2 shards x 1 thread             `--shard 0/2` and `--shard 1/2` run at the same time, then `featx merge`
- torchrun 2 ranks x 1 thread     `torchrun --standalone --nproc-per-node 2 -m featx extract` (gloo), merge included
- 1 process, featx defaults       --workers default (cores - 1 decode processes) and all torch threads

It also times `featx merge` (copy and --virtual) and the bare start-up of one process, and checks that the
merged stores equal the single-process store. Run it alone on the machine:

    flock /tmp/featx-bench.lock python scripts/bench_scale.py --backbone alexnet --images 400
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from featx.data import discover
from featx.data.synth import synthesize

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _env(threads: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
        if threads is not None:
            env[var] = str(threads)
    return env


def _extract_cmd(args, data: Path, out: Path, *extra: str) -> list[str]:
    return ["extract", str(data), "--backbone", args.backbone, "--weights", "none", "--image-size",
            str(args.size), "--batch-size", str(args.batch_size), "--out", str(out), "-q", *extra]


def _run(cmds: list[list[str]], threads: int | None) -> float:
    """Start every command at once; seconds until the last one exits (each must succeed)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=_env(threads), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in cmds]
    for proc, cmd in zip(procs, cmds):
        output, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{output}")
    return time.perf_counter() - start


def _featx(*args: str) -> list[str]:
    return [sys.executable, "-m", "featx", *args]


def _max_diff(a: Path, b: Path) -> float:
    with h5py.File(a) as x, h5py.File(b) as y:
        assert list(x["samples/path"].asstr()[:]) == list(y["samples/path"].asstr()[:]), f"{b}: other row order"
        return max(float(np.abs(x["features"][t][:] - y["features"][t][:]).max()) for t in x["features"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="alexnet")
    ap.add_argument("--images", type=int, default=400, help="number of images (approximate)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the fastest is kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_subject = max(1, args.images // 10)
        synthesize(tmp / "cells", subjects_all=6, subjects_hem=4, cells_per_subject=per_subject, image_size=450,
                   prelim_subjects_all=0, prelim_subjects_hem=0, final_cells=0, seed=0)
        data = tmp / "cells"
        n = len(discover(data).samples)
        print(f"{args.backbone} at {args.size}px, {n} images (450x450 BMP), random weights, batch {args.batch_size}, "
              f"{os.cpu_count()} cores; each row is whole `featx extract` processes, start to exit")
        w0 = ("--workers", "0")
        configs = {
            "1 process x 1 thread": lambda o: _run([_featx(*_extract_cmd(args, data, o / "one.h5", *w0))], 1),
            "1 process x 2 threads": lambda o: _run([_featx(*_extract_cmd(args, data, o / "two.h5", *w0))], 2),
            "2 shards x 1 thread, concurrent": lambda o: _run(
                [_featx(*_extract_cmd(args, data, o / f"part-{i}.h5", *w0, "--shard", f"{i}/2")) for i in range(2)],
                1),
            "torchrun 2 ranks x 1 thread": lambda o: _run(
                [[str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "featx",
                  *_extract_cmd(args, data, o / "torchrun.h5", *w0)]], 1),
            "1 process, featx defaults": lambda o: _run([_featx(*_extract_cmd(args, data, o / "defaults.h5"))], None),
        }
        best: dict[str, float] = {}
        folders = {name: tmp / f"run-{k}" for k, name in enumerate(configs)}
        for _ in range(args.repeat):
            for name, run in configs.items():
                out = folders[name]
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                best[name] = min(best.get(name, float("inf")), run(out))
                if name.startswith("2 shards"):
                    parts = [str(out / f"part-{i}.h5") for i in range(2)]
                    for label, file, extra in (("merge (copy)", "merged.h5", ()),
                                               ("merge --virtual", "virtual.h5", ("--virtual",))):
                        t = _run([_featx("merge", *parts, "--out", str(out / file), *extra)], 1)
                        best[label] = min(best.get(label, float("inf")), t)
        startup = min(_run([[sys.executable, "-c", "import featx.extract, featx.cli"]], 1) for _ in range(2))
        one = folders["1 process x 1 thread"] / "one.h5"
        shards = folders["2 shards x 1 thread, concurrent"]
        diffs = {"merged": _max_diff(one, shards / "merged.h5"), "virtual": _max_diff(one, shards / "virtual.h5"),
                 "torchrun": _max_diff(one, folders["torchrun 2 ranks x 1 thread"] / "torchrun.h5")}

    base = best["1 process x 1 thread"]
    best["2 shards, then merge (copy)"] = best["2 shards x 1 thread, concurrent"] + best["merge (copy)"]
    # start-up (interpreter, torch import) is paid once per process, in parallel: without it, the steady state
    print(f"{'configuration':<36}{'seconds':>8}{'img/s':>7}{'vs 1x1':>8}   {'minus start-up: img/s':>21}{'vs 1x1':>8}")
    for name in [*configs, "2 shards, then merge (copy)"]:
        t = best[name]
        steady = max(t - startup, 1e-9)
        print(f"{name:<36}{t:>8.2f}{n / t:>7.1f}{base / t:>7.2f}x   {n / steady:>21.1f}"
              f"{(base - startup) / steady:>7.2f}x")
    print(f"featx merge of the 2 parts (whole process; merge imports no torch): copy {best['merge (copy)']:.2f} s, "
          f"--virtual {best['merge --virtual']:.2f} s")
    print(f"start-up of one extract process (python, import torch and featx.extract): {startup:.2f} s, "
          f"{100 * startup / base:.0f}% of the 1x1 run")
    print(f"2 processes vs 2 threads: {best['1 process x 2 threads'] / best['2 shards x 1 thread, concurrent']:.2f}x "
          f"(shards), {best['1 process x 2 threads'] / best['torchrun 2 ranks x 1 thread']:.2f}x (torchrun)")
    print("largest difference from the 1-process store: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
