"""Benchmark `featx extract` against a naive per-image loop and against the forward pass alone.

Default mode, one run gives every ratio (same images, same random weights, one tap, fc7 by default):

- featx: the whole `python -m featx extract` process (a child process), less the `import torch, torchvision`
  it did itself (timed inside it) and less the interpreter's start and exit (a `python -c "import torch,
  torchvision"` process less its own import, the least of three; its heap frozen at the end, as featx's CLI
  freezes it, so that the exit, which tears torch down, costs the same in both). The ratio with the whole
  import process taken off instead is printed too. Its peak RSS is the child's ru_maxrss. With
  --in-process the `featx.extract.extract` call is also timed inside this process, and its steady state.
- naive loop: this process, one image at a time (PIL -> make_transform -> forward), features kept in memory
  and written at the end; timed from building the network to the written file.
- ceiling: the forward pass alone on preloaded random tensors (channels-last, batches of --batch-size; fp16
  autocast on CUDA), as many images, no decoding, no writing, no set-up.
- decode rate: the decode path alone (read, sha256 of the bytes, decode, resize to uint8: what featx's decoders
  run per image), in one thread (images/s per core), and with DataLoader worker processes on every core
  (images/s, all cores).
- on CUDA, the GPU's utilisation during the featx process, sampled by nvidia-smi.

Images: synthetic C-NMC cells at the real data's size (450x450 BMP); --distinct cells are drawn and hard-linked
under more names up to --images (decoding costs the same; drawing 450 px cells is slow).

--memory: peak RSS of the whole `featx extract` process for N and 4N images (--images N, default 1000;
AlexNet at 64 px by default), to show that extraction's memory does not grow with the number of images.

    python scripts/bench_extract.py --backbone alexnet --images 896
    python scripts/bench_extract.py --backbone vgg16 --images 320
    python scripts/bench_extract.py --memory
    python scripts/bench_extract.py --device cuda --backbone alexnet --images 8000 --in-process
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's featx, also where another one is installed

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from featx.backbones import create_backbone  # noqa: E402
from featx.data import discover  # noqa: E402
from featx.data.batches import LoaderBatches  # noqa: E402
from featx.data.decoders import decode_plan  # noqa: E402
from featx.data.images import ImageDataset, ResizeUint8, load_image, make_transform  # noqa: E402
from featx.data.synth import synthesize  # noqa: E402
from featx.device import autocast, resolve_device  # noqa: E402
from featx.extract import extract  # noqa: E402
from featx.machine import cpu_cores as cores  # noqa: E402

# the acceptance on the CPU: (share of the ceiling, speed-up over the naive loop)
CPU_TARGETS = {"alexnet": (0.75, 2.5), "vgg16": (0.95, 1.35)}
GPU_TARGET = 0.8  # of the GPU ceiling, or of the all-core decode rate when decoding is the bound


def make_data(root: Path, n: int, distinct: int, size: int = 450) -> Path:
    """``root/data/{all,hem}/cell_*.bmp``: ``n`` images, hard links to ``distinct`` synthetic cells; reused when
    already there with ``n`` images."""
    data = root / "data"
    if data.is_dir() and sum(1 for _ in data.rglob("*.bmp")) == n:
        return data
    shutil.rmtree(data, ignore_errors=True)
    src = root / f"cells-{size}-{distinct}"
    if not src.is_dir():
        per = max(1, -(-distinct // 10))
        synthesize(src, subjects_all=6, subjects_hem=4, cells_per_subject=per, prelim_subjects_all=0,
                   prelim_subjects_hem=0, final_cells=0, image_size=size, seed=0)
    cells = sorted(src.rglob("*.bmp"))[:distinct]
    for i in range(n):
        cell = cells[i % len(cells)]
        target = data / cell.parent.name / f"cell_{i:06d}.bmp"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cell, target)
        except OSError:
            shutil.copyfile(cell, target)
    return data


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def run_child(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv``; its wall time, peak RSS (bytes) and output. Fails loudly when the child fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{out}")
    return wall, usage.ru_maxrss * 1024, out


# `import torch, torchvision`, timed and reported on stderr (read back by own_import)
TIMED_IMPORT = ("import sys, time; t = time.perf_counter(); import torch, torchvision; "
                "print(f'featx-bench-import {time.perf_counter() - t:.6f}', file=sys.stderr); ")
# The featx CLI freezes the heap once torch is loaded (featx.imports.import_paused), so its exit skips the
# final collection over torch's objects (~0.5 s): the baseline freezes it too, and that saving is not counted.
IMPORT_ONLY = TIMED_IMPORT + "import gc; gc.freeze()"


def import_time(runs: int = 3) -> tuple[float, float]:
    """The whole `python -c "import torch, torchvision"` process (start, import, exit with the heap frozen, as
    featx's exit is), and its start and exit alone (the whole less the import it reports): the least of
    ``runs`` each."""
    walls, rests = [], []
    for _ in range(runs):
        wall, _, output = run_child([sys.executable, "-c", IMPORT_ONLY])
        walls.append(wall)
        rests.append(wall - own_import(output))
    return min(walls), min(rests)


# `python -m featx ARGS` that also reports how long its own `import torch, torchvision` took (on stderr)
RUN_FEATX = TIMED_IMPORT + ("import runpy; sys.argv = ['featx', *sys.argv[1:]]; "
                            "runpy.run_module('featx', run_name='__main__', alter_sys=True)")


def own_import(output: str) -> float:
    """The import time the featx child reported."""
    return next(float(line.split()[1]) for line in output.splitlines() if line.startswith("featx-bench-import "))


def featx_argv(data: Path, out: Path, args) -> list[str]:
    argv = [sys.executable, "-c", RUN_FEATX, "extract", str(data), "--backbone", args.backbone, "--weights", "none",
            "--taps", ",".join(args.taps), "--image-size", str(args.size), "--batch-size", str(args.batch_size),
            "--device", args.device, "-q", "--out", str(out)]
    return argv + (["--workers", str(args.workers)] if args.workers is not None else [])


class GpuSampler:
    """nvidia-smi's GPU utilisation (%), every 100 ms, while the ``with`` block runs (nothing without nvidia-smi)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[int] = []

    def __enter__(self):
        if self.enabled:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-i", "0", "-lms", "100"], stdout=subprocess.PIPE, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.proc.terminate()
            self.proc.wait()
            self.reader.join(timeout=5)

    def summary(self) -> dict:
        s = self.samples
        busy = s[next((i for i, v in enumerate(s) if v > 0), len(s)):]  # from the first busy sample on
        return {"gpu_util_mean": statistics.fmean(s) if s else None,
                "gpu_util_busy_mean": statistics.fmean(busy) if busy else None, "gpu_util_samples": len(s)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(backbone: str, n: int, size: int, batch: int, taps: list[str], device: torch.device) -> float:
    """Seconds for the forward pass alone over ``n`` images: preloaded random tensors, channels-last, batched."""
    model = create_backbone(backbone, "none", seed=0).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device):
        for _ in range(2):  # warm-up (cuDNN / oneDNN choose their kernels)
            model.forward_taps(x, taps)
        sync(device)
        start = time.perf_counter()
        done = 0
        while done < n:
            b = min(batch, n - done)
            model.forward_taps(x[:b], taps)
            done += b
        sync(device)
    return time.perf_counter() - start


def naive_loop(collection, backbone: str, size: int, taps: list[str], out: Path, device: torch.device) -> float:
    """What a first script looks like: one image at a time, features kept in memory, one write at the end.

    Timed from building the network to the written file; the same preprocessing as featx (make_transform).
    """
    start = time.perf_counter()
    model = create_backbone(backbone, "none", seed=0).eval().to(device)
    transform = make_transform(size, model.config.mean, model.config.std)
    rows: dict[str, list[np.ndarray]] = {t: [] for t in taps}
    with torch.no_grad():
        for i in range(len(collection.samples)):
            x = transform(load_image(collection.abspath(i))).unsqueeze(0).to(device)
            feats = model.forward_taps(x, taps)
            for t in taps:
                rows[t].append(feats[t].cpu().numpy()[0])
    with h5py.File(out, "w") as h5:
        for t in taps:
            h5[t] = np.stack(rows[t])
    return time.perf_counter() - start


def decode_per_core(collection, size: int, count: int) -> float:
    """Images/s of the decode path alone (what featx's decoders run per image) in one thread."""
    dataset = ImageDataset(collection, ResizeUint8(size), indices=range(min(count, len(collection.samples))),
                           identify=True)  # as extract: each file's sha256 from the bytes decoded
    dataset[0]
    start = time.perf_counter()
    for i in range(1, len(dataset)):
        dataset[i]
    return (len(dataset) - 1) / (time.perf_counter() - start)


def steady_rate(marks: list[tuple[float, int]], n: int) -> float | None:
    """Images/s from the first progress report at or past 10% of the rows to the last one."""
    first = next((m for m in marks if m[1] >= 0.1 * n), None)
    if first is None or marks[-1][0] <= first[0]:
        return None
    return (marks[-1][1] - first[1]) / (marks[-1][0] - first[0])


def decode_all_cores(collection, size: int, batch: int) -> float:
    """Images/s of the decode path in DataLoader worker processes on every core (start-up included)."""
    dataset = ImageDataset(collection, ResizeUint8(size), identify=True)
    start = time.perf_counter()
    batches = LoaderBatches(dataset, batch, cores())
    try:
        count = sum(len(index) for _, index, _, _ in batches)
    finally:
        batches.close()
    return count / (time.perf_counter() - start)


def bench(args) -> dict:
    device = resolve_device(args.device)
    args.device = str(device)
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="featx-bench-"))
    try:
        data = make_data(root, args.images, args.distinct)
        collection = discover(data)
        n = len(collection.samples)
        plan = decode_plan(device, args.workers)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{args.backbone} at {args.size}px, {n} images (450x450 BMP, {args.distinct} distinct), taps "
              f"{','.join(args.taps)}, device {device} ({name}), "
              f"batch {args.batch_size}, featx decodes with {plan[1]} {plan[0]}, torch threads "
              f"{torch.get_num_threads()}, {cores()} cores", flush=True)
        r: dict = {"backbone": args.backbone, "images": n, "size": args.size, "device": str(device)}
        r["import_s"], r["interpreter_s"] = import_time()
        out = root / "featx.h5"
        out.unlink(missing_ok=True)
        # the ceiling brackets the featx process (once before, once after; their mean counts), so that a drift
        # of the machine's speed (shared hosts) shows and weighs on both sides alike
        before = ceiling(args.backbone, n, args.size, args.batch_size, args.taps, device)
        with GpuSampler(device.type == "cuda") as gpu:
            wall, rss, output = run_child(featx_argv(data, out, args))
        r.update(gpu.summary())
        r["featx_process_s"], r["featx_peak_rss_mb"] = wall, rss / 2**20
        r["featx_import_s"] = own_import(output)
        # the import varies by ~1 s from run to run; the one this process did is taken off, not another's
        r["featx_s"] = wall - r["featx_import_s"] - r["interpreter_s"]
        r["featx_less_import_process_s"] = wall - r["import_s"]
        after = ceiling(args.backbone, n, args.size, args.batch_size, args.taps, device)
        r["ceiling_runs_s"] = [before, after]
        r["ceiling_s"] = (before + after) / 2
        if args.in_process:
            out2 = root / "featx-call.h5"
            out2.unlink(missing_ok=True)
            marks: list[tuple[float, int]] = []
            start = time.perf_counter()
            extract(collection, out2, backbone=args.backbone, weights="none", taps=args.taps, image_size=args.size,
                    device=str(device), batch_size=args.batch_size, workers=args.workers,
                    on_progress=lambda done, total: marks.append((time.perf_counter(), done)))
            r["featx_call_s"] = time.perf_counter() - start
            r["featx_steady"] = steady_rate(marks, n)
        r["naive_s"] = naive_loop(collection, args.backbone, args.size, args.taps, root / "naive.h5", device)
        with h5py.File(out) as a, h5py.File(root / "naive.h5") as b:
            r["max_abs_diff"] = max(float(np.abs(a["features"][t][:] - b[t][:]).max()) for t in args.taps)
            r["max_abs_feature"] = max(float(np.abs(b[t][:]).max()) for t in args.taps)
        r["decode_per_core"] = decode_per_core(collection, args.size, 200)
        r["decode_all_cores"] = decode_all_cores(collection, args.size, args.batch_size)
    finally:
        if not args.data:
            shutil.rmtree(root, ignore_errors=True)
    report(r, args)
    return r


def report(r: dict, args) -> None:
    n = r["images"]
    rate = lambda t: n / t  # noqa: E731
    rows = [("ceiling: forward pass alone (preloaded)", r["ceiling_s"]),
            ("featx extract, whole process - import", r["featx_s"])]
    if "featx_call_s" in r:
        rows.append(("featx extract() call, in this process", r["featx_call_s"]))
    rows.append(("naive per-image loop (from model build)", r["naive_s"]))
    print(f"{'method':<44}{'seconds':>9}{'img/s':>10}")
    for name, t in rows:
        print(f"{name:<44}{t:>9.2f}{rate(t):>10.1f}")
    print(f"(ceiling: mean of {' s and '.join(f'{t:.2f}' for t in r['ceiling_runs_s'])} s, measured before and "
          "after the featx process)")
    print(f"(whole featx process {r['featx_process_s']:.2f} s, less its own `import torch, torchvision` "
          f"{r['featx_import_s']:.2f} s and the interpreter's start and exit {r['interpreter_s']:.2f} s; less "
          f"instead the whole `python -c 'import torch, torchvision'` process {r['import_s']:.2f} s, featx "
          f"would be {r['ceiling_s'] / r['featx_less_import_process_s']:.2f} of the ceiling)")
    share, speedup = r["ceiling_s"] / r["featx_s"], r["naive_s"] / r["featx_s"]
    r["featx_vs_ceiling"], r["featx_vs_naive"] = share, speedup
    target = CPU_TARGETS.get(r["backbone"]) if r["device"] == "cpu" else None
    mark = lambda ok: "" if target is None else ("  [ok]" if ok else "  [BELOW TARGET]")  # noqa: E731
    print(f"featx vs ceiling: {share:.2f} of the forward-only rate"
          f"{f' (target {target[0]})' if target else ''}{mark(target and share >= target[0])}")
    print(f"featx vs naive loop: {speedup:.2f}x faster{f' (target {target[1]}x)' if target else ''}"
          f"{mark(target and speedup >= target[1])}; the ceiling itself is {r['naive_s'] / r['ceiling_s']:.2f}x the "
          "naive loop on this machine")
    if "featx_call_s" in r:
        steady = r["featx_steady"]
        share = "n/a" if steady is None else f"{steady:.1f} img/s, {steady * r['ceiling_s'] / n:.2f} of the ceiling"
        print(f"featx call vs ceiling: {r['ceiling_s'] / r['featx_call_s']:.2f}; steady state (after the first 10% of "
              f"rows): {share}")
    print(f"decode path alone: {r['decode_per_core']:.0f} images/s per core; {r['decode_all_cores']:.0f} images/s "
          f"on all {cores()} cores (worker processes)")
    if r["device"] != "cpu":
        bound = min(rate(r["ceiling_s"]), r["decode_all_cores"])
        best = max(rate(r["featx_s"]), rate(r.get("featx_call_s", r["featx_s"])), r.get("featx_steady") or 0)
        r["featx_vs_bound"] = best / bound
        print(f"GPU: featx {best:.0f} img/s = {best / bound:.2f} of min(ceiling, all-core decode) = {bound:.0f} img/s "
              f"(target {GPU_TARGET}); GPU utilisation during featx: mean {_pct(r['gpu_util_mean'])}, "
              f"from its first busy sample {_pct(r['gpu_util_busy_mean'])} ({r['gpu_util_samples']} samples)")
    print(f"peak RSS of the featx process: {r['featx_peak_rss_mb']:.0f} MiB")
    print(f"largest difference featx vs naive features: {r['max_abs_diff']:.2e} (largest feature "
          f"{r['max_abs_feature']:.2e})")


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def memory(args) -> dict:
    """Peak RSS of the featx process for N and 4N images."""
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="featx-mem-"))
    r: dict = {"backbone": args.backbone, "size": args.size, "device": args.device}
    try:
        for n in (args.images, 4 * args.images):
            sub = root / f"n{n}"
            data = make_data(sub, n, args.distinct)
            out = sub / "featx.h5"
            out.unlink(missing_ok=True)
            wall, rss, _ = run_child(featx_argv(data, out, args))
            r[f"rss_{n}_mb"] = rss / 2**20
            print(f"{args.backbone} at {args.size}px, {n:>6} images: peak RSS {rss / 2**20:7.1f} MiB "
                  f"({wall:.1f} s whole process)", flush=True)
    finally:
        if not args.data:
            shutil.rmtree(root, ignore_errors=True)
    growth = r[f"rss_{4 * args.images}_mb"] / r[f"rss_{args.images}_mb"]
    r["rss_growth"] = growth
    verdict = "[ok]" if growth <= 1.10 else "[TOO MUCH GROWTH]"
    print(f"peak RSS at 4N / at N: {growth:.3f} (target <= 1.10)  {verdict}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="alexnet")
    ap.add_argument("--images", type=int, default=None, help="number of images (default 896; --memory: 1000)")
    ap.add_argument("--distinct", type=int, default=100, help="distinct synthetic cells, hard-linked up to --images")
    ap.add_argument("--size", type=int, default=None, help="network input size (default 224; --memory: 64)")
    ap.add_argument("--taps", default="fc7", help="comma-separated taps (default fc7)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="featx --workers (default: featx's own choice)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--data", default=None, help="folder to keep the images in (reused by later runs)")
    ap.add_argument("--in-process", action="store_true", help="also time the extract() call in this process")
    ap.add_argument("--memory", action="store_true", help="peak RSS for N and 4N images instead")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    args.taps = [t for t in args.taps.split(",") if t]
    args.images = args.images or (1000 if args.memory else 896)
    args.size = args.size or (64 if args.memory else 224)
    result = memory(args) if args.memory else bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
