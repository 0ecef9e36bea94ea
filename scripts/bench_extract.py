"""Benchmark `featx.extract` against a naive per-image loop and against the pure forward pass.

All three run in one process on the same images and the same weights, so the printed ratios compare like
with like. featx and the naive loop are timed from building the model to the written file; the pure
forward pass (random tensors, batched, no decoding, no writing) is the ceiling. Images are synthetic C-NMC
cells at the real data's size (450x450 BMP), resized to --size.

    python scripts/bench_extract.py --backbone alexnet --images 192 --size 224
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from featx.backbones import create_backbone
from featx.data import discover
from featx.data.images import load_image, make_transform
from featx.data.synth import synthesize
from featx.device import resolve_device
from featx.extract import default_workers, extract


def naive_loop(collection, backbone: str, size: int, taps: list[str], out: Path, device) -> float:
    """What a first script looks like: one image at a time, features kept in memory, one write at the end.

    Timed like ``extract``: from building the model to the written file.
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


def pure_forward(model, n: int, size: int, batch: int, taps: list[str], device) -> float:
    """The ceiling: the same number of images as random tensors, batched, no decoding and no writing."""
    model = model.eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model.forward_taps(x, taps)  # warm-up
        start = time.perf_counter()
        done = 0
        while done < n:
            b = min(batch, n - done)
            model.forward_taps(x[:b], taps)
            done += b
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="alexnet")
    ap.add_argument("--images", type=int, default=192, help="number of images (approximate)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_subject = max(1, args.images // 10)
        synthesize(tmp / "data", subjects_all=6, subjects_hem=4, cells_per_subject=per_subject, image_size=450,
                   seed=0)
        collection = discover(tmp / "data", splits=["fold_0", "fold_1", "fold_2"])
        n = len(collection.samples)
        model = create_backbone(args.backbone, "none", seed=0)
        taps = list(model.config.taps)
        print(f"{args.backbone} at {args.size}px, {n} images (450x450 BMP), taps {','.join(taps)}, device {device}, "
              f"batch {args.batch_size}, workers {workers}, torch threads {torch.get_num_threads()}")

        t_pure = pure_forward(model, n, args.size, args.batch_size, taps, device)
        start = time.perf_counter()
        extract(collection, tmp / "featx.h5", backbone=args.backbone, weights="none", image_size=args.size,
                device=str(device), batch_size=args.batch_size, workers=workers)
        t_featx = time.perf_counter() - start
        t_naive = naive_loop(collection, args.backbone, args.size, taps, tmp / "naive.h5", device)

        with h5py.File(tmp / "featx.h5") as a, h5py.File(tmp / "naive.h5") as b:
            worst = max(float(np.abs(a["features"][t][:] - b[t][:]).max()) for t in taps)

    rate = lambda t: n / t  # noqa: E731
    print(f"{'method':<34}{'seconds':>9}{'img/s':>9}")
    print(f"{'pure forward (no I/O, no set-up)':<34}{t_pure:>9.2f}{rate(t_pure):>9.1f}")
    print(f"{'featx extract':<34}{t_featx:>9.2f}{rate(t_featx):>9.1f}")
    print(f"{'naive per-image loop':<34}{t_naive:>9.2f}{rate(t_naive):>9.1f}")
    print(f"featx vs naive loop: {t_naive / t_featx:.2f}x faster")
    print(f"featx vs pure forward pass: {t_pure / t_featx:.2f} of the ceiling "
          f"(extraction overhead {100 * (t_featx / t_pure - 1):.0f}%)")
    print(f"largest difference between featx and naive features: {worst:.2e}")


if __name__ == "__main__":
    main()
