"""CPU cost of fine-tuning VGG-16 and AlexNet at 224x224: seconds per epoch per 1,000 training images.

A full epoch on this machine would take hours, so the script times a few real training steps (forward,
cross-entropy, backward, optimizer step; channels-last and deterministic algorithms, as featx.finetune
runs on the CPU), the decoding + augmentation of 450x450 BMP cells (the C-NMC format), and the validation
forward pass, then extrapolates linearly to 1,000 images. It prints every measurement it extrapolates from.

    python scripts/bench_finetune.py [--backbones vgg16,alexnet] [--batch-size 8] [--steps 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featx.backbones import create_backbone
from featx.data.images import load_image, make_transform
from featx.finetune import PRESETS


def time_training(backbone: str, *, size: int, batch: int, steps: int, optimizer: str) -> dict:
    """Seconds of each of ``steps`` training steps of ``batch`` images (after one untimed warm-up step)."""
    model = create_backbone(backbone, "none", num_classes=2, dropout=0.5, seed=0)
    model = model.train().to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    paper = PRESETS["paper"]
    opt = (torch.optim.SGD(params, lr=paper["lr"], momentum=paper["momentum"]) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01))
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), generator=gen)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if i:  # the first step (allocation, oneDNN kernel selection) is not timed
            times.append(time.perf_counter() - t0)
    model.eval()
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        model(x)
        eval_s = time.perf_counter() - t0
    return {"step_seconds": times, "eval_batch_seconds": eval_s,
            "parameters": sum(p.numel() for p in model.parameters())}


def time_decoding(size: int, n: int = 24) -> float:
    """Mean seconds to read one 450x450 BMP and apply the training transform (augmentation on)."""
    transform = make_transform(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), augment=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(4):
            path = Path(tmp) / f"cell{i}.bmp"
            Image.fromarray(rng.integers(0, 255, (450, 450, 3), dtype=np.uint8)).save(path)
            paths.append(path)
        transform(load_image(paths[0]))
        t0 = time.perf_counter()
        for i in range(n):
            transform(load_image(paths[i % len(paths)]))
        return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="vgg16,alexnet")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per backbone (after a warm-up)")
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                    help="sgd: the paper preset (lr 1e-5, momentum 0); adamw: featx's default")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as featx.finetune does on the CPU

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {args.image_size}x{args.image_size}, "
          f"batch {args.batch_size}, optimizer {args.optimizer}")
    decode = time_decoding(args.image_size)
    print(f"decode + augment one 450x450 BMP: {decode * 1000:.1f} ms -> {decode * 1000:.0f} s per 1,000 images "
          "(in DataLoader workers; overlaps compute only when a core is free)")
    report = {"image_size": args.image_size, "batch_size": args.batch_size, "optimizer": args.optimizer,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "decode_seconds_per_image": decode, "backbones": {}}
    for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        r = time_training(name, size=args.image_size, batch=args.batch_size, steps=args.steps,
                          optimizer=args.optimizer)
        steps = r["step_seconds"]
        per_image = statistics.median(steps) / args.batch_size
        train_1k = 1000 * per_image
        eval_1k = 1000 * r["eval_batch_seconds"] / args.batch_size
        print(f"\n{name} ({r['parameters'] / 1e6:.1f} M parameters)")
        print(f"  measured: {len(steps)} training steps of {args.batch_size} images: "
              + ", ".join(f"{s:.2f}" for s in steps) + " s (median "
              f"{statistics.median(steps):.2f} s = {per_image:.3f} s per image)")
        print(f"  measured: one validation forward of {args.batch_size} images: {r['eval_batch_seconds']:.2f} s")
        print(f"  extrapolated, per 1,000 training images: {train_1k:.0f} s training compute "
              f"({train_1k / 60:.1f} min); {train_1k + 1000 * decode:.0f} s with decoding done serially")
        print(f"  extrapolated, validation of 1,000 images: {eval_1k:.0f} s")
        print(f"  => training on all C-NMC training folds (10,661 cells) x 15 epochs (paper preset), validation "
              f"not counted: about "
              f"{15 * 10.661 * (train_1k + 1000 * decode) / 3600:.0f} h on this CPU")
        report["backbones"][name] = {"step_seconds": steps, "eval_batch_seconds": r["eval_batch_seconds"],
                                     "train_seconds_per_1000_images": train_1k,
                                     "train_plus_decode_seconds_per_1000_images": train_1k + 1000 * decode,
                                     "eval_seconds_per_1000_images": eval_1k, "parameters": r["parameters"]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
