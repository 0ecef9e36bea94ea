"""Fine-tuning speed: featx's seconds per epoch per 1,000 training images beside the training ceiling.

For each backbone, in one process: the ceiling is the same network (random weights, channels-last, featx's
optimizer, loss and, on the CPU, deterministic algorithms; AMP on CUDA) trained on preloaded tensors:
forward + backward + optimizer step over as many images as featx trains on, in batches of the same size at
the same image size, then a forward pass over the validation images. featx is ``featx.finetune.finetune`` on a
C-NMC-like tree of 450x450 BMP cells (decoding, augmentation, validation, metrics, checkpoints), several
epochs; the first is reported apart (workers start, first allocations). The ceiling runs before and after
featx, and their mean is used, so that a change in machine load shows as a spread instead of a ratio.

Printed per backbone: s/epoch/1,000 training images for the ceiling and featx (train pass alone, and the
whole epoch with validation and checkpoints), their ratios, and where featx's epoch goes.

    python scripts/bench_finetune.py                     # alexnet and cnn, 320 images at 224 px: a few minutes
    python scripts/bench_finetune.py --backbones vgg16 --images 96 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from featx.backbones import create_backbone, get_config
from featx.data import discover
from featx.data.images import make_transform
from featx.data.synth import synthesize
from featx.device import autocast, resolve_device
from featx.finetune import finetune, resolve_settings
from featx.finetune.batches import SeededImages, default_workers, pil_steps
from featx.finetune.split import balanced_weights, labels


def make_tree(root: Path, n_images: int) -> Path:
    """A C-NMC-like tree (3 folds, 450x450 BMP) of about ``n_images`` labelled training cells: a few synthetic
    cells, each linked under several cell numbers (decoding costs the same; the files share the page cache)."""
    synthesize(root, subjects_all=3, subjects_hem=3, cells_per_subject=2, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=1, final_cells=1, image_size=450, seed=0)
    cells = sorted((root / "C-NMC_training_data").glob("fold_*/*/*.bmp"))
    for copy in range(1, math.ceil(n_images / len(cells))):
        for path in cells:
            uid, subject, image, cell, cls = path.stem.split("_")
            os.link(path, path.with_name(f"{uid}_{subject}_{image}_{int(cell) + 1000 * copy}_{cls}.bmp"))
    return root


def ceiling(backbone: str, settings: dict, n_train: int, n_val: int, class_weight: torch.Tensor | None,
            device: torch.device) -> dict:
    """Seconds of one pass of training steps over ``n_train`` preloaded images and of a forward pass over
    ``n_val``, as featx's loop runs them (after one untimed warm-up step)."""
    size, bs = int(settings["image_size"]), int(settings["batch_size"])
    network = create_backbone(backbone, "none", dropout=float(settings["dropout"]), seed=0)
    network.reset_classifier(2, seed=0)
    network = network.to(device=device, memory_format=torch.channels_last)
    params = [p for p in network.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                           weight_decay=float(settings["weight_decay"])) if settings["optimizer"] == "sgd" else
           torch.optim.AdamW(params, lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"])))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if class_weight is None else class_weight.to(device))
    gen = torch.Generator().manual_seed(0)
    n = max(n_train, n_val)
    x = torch.randn(n, 3, size, size, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (n,), generator=gen).to(device)
    n_steps = n_train - 1 if n_train > bs and n_train % bs == 1 else n_train  # featx drops a last batch of one

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            logits = network(xb)
        loss = loss_fn(logits.float(), yb)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())  # featx's one host sync per step

    prev = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if device.type == "cpu":  # as featx's loop
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        return _timed_passes(network, step, x, y, n_train=n_steps, n_val=n_val, bs=bs, device=device)
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=True)
        torch.backends.cudnn.benchmark = prev[1]


def _timed_passes(network, step, x, y, *, n_train: int, n_val: int, bs: int, device: torch.device) -> dict:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    network.train()
    step(x[:bs], y[:bs])
    sync()
    t0 = time.perf_counter()
    for start in range(0, n_train, bs):
        step(x[start:min(start + bs, n_train)], y[start:min(start + bs, n_train)])
    sync()
    train = time.perf_counter() - t0
    network.eval()
    with torch.inference_mode():
        with autocast(device):
            network(x[:bs])
        sync()
        t0 = time.perf_counter()
        for start in range(0, n_val, bs):
            with autocast(device):
                torch.softmax(network(x[start:start + bs]).float(), 1)
        sync()
        val = time.perf_counter() - t0
    return {"train": train, "validate": val}


def decode_seconds(collection, indices: list[int], size: int, mean, std) -> float:
    """Seconds per image of featx's training pipeline (read, resize, augment, to uint8), on one core."""
    ds = SeededImages(collection, pil_steps(make_transform(size, mean, std, augment=True)), size)
    ds[(indices[0], 0)]
    chosen = indices[:48]
    t0 = time.perf_counter()
    for k, i in enumerate(chosen):
        ds[(i, k)]
    return (time.perf_counter() - t0) / len(chosen)


def bench_featx(tree: Path, out: Path, backbone: str, settings: dict, args, device: torch.device) -> dict:
    """finetune() for ``args.epochs`` epochs; each epoch's timings (from the ``"epoch"`` events) and the run's."""
    epochs: list[dict] = []
    t0 = time.perf_counter()
    summary = finetune(tree, out, backbone=backbone, weights="none", epochs=args.epochs,
                       batch_size=int(settings["batch_size"]), image_size=int(settings["image_size"]),
                       optimizer=settings["optimizer"], val=args.val, workers=args.workers, device=str(device),
                       keep="both", seed=0,
                       callback=lambda kind, info: epochs.append(dict(info["timings"], seconds=info["seconds"]))
                       if kind == "epoch" else None)
    total = time.perf_counter() - t0
    sizes = {name: (out / name).stat().st_size for name in ("best.pt", "last.pt")}
    return {"epochs": epochs, "total": total, "n_train": summary["row"].n_train, "n_val": summary["row"].n_test,
            "workers": summary["settings_used"]["workers"], "checkpoint_bytes": sizes}


def per_1k(seconds: float, n: int) -> float:
    return 1000.0 * seconds / n


def run_backbone(backbone: str, tree: Path, work: Path, args, device: torch.device) -> dict:
    settings = resolve_settings(backbone, args.preset, weights="none", batch_size=args.batch_size,
                                image_size=args.image_size, optimizer=args.optimizer)
    collection = discover(tree)
    classes = list(collection.classes)
    train_idx = [i for i, s in enumerate(collection.samples)
                 if s.label is not None and s.split not in ("prelim", "final", args.val)]
    weight = (balanced_weights(labels(collection, classes), train_idx, len(classes))
              if settings["class_weight"] == "balanced" else None)
    cfg = get_config(backbone)
    decode = decode_seconds(collection, train_idx, int(settings["image_size"]), cfg.mean, cfg.std)

    n_val = sum(s.split == args.val and s.label is not None for s in collection.samples)
    before = ceiling(backbone, settings, len(train_idx), n_val, weight, device)
    ft = bench_featx(tree, work / backbone, backbone, settings, args, device)
    after = ceiling(backbone, settings, ft["n_train"], ft["n_val"], weight, device)
    shutil.rmtree(work / backbone, ignore_errors=True)

    n = ft["n_train"]
    steady = ft["epochs"][1:] or ft["epochs"]

    def mean_of(key: str) -> float:
        return statistics.fmean(e[key] for e in steady)

    ceil_train = (before["train"] + after["train"]) / 2
    ceil_val = (before["validate"] + after["validate"]) / 2
    epoch_wall = {k: mean_of(k) for k in ("train", "data_wait", "validate", "metrics", "checkpoints")}
    featx_epoch = sum(epoch_wall[k] for k in ("train", "validate", "metrics", "checkpoints"))
    first = ft["epochs"][0]
    first_epoch = sum(first[k] for k in ("train", "validate", "metrics", "checkpoints"))
    result = {
        "backbone": backbone, "image_size": int(settings["image_size"]), "batch_size": int(settings["batch_size"]),
        "optimizer": settings["optimizer"], "augment": bool(settings["augment"]), "n_train": n, "n_val": ft["n_val"],
        "workers": ft["workers"], "epochs": args.epochs, "steady_epochs": len(steady),
        "decode_ms_per_image": 1000 * decode,
        "ceiling_train_s_per_1k": per_1k(ceil_train, n),
        "ceiling_train_spread_s_per_1k": [per_1k(before["train"], n), per_1k(after["train"], n)],
        "ceiling_epoch_s_per_1k": per_1k(ceil_train + ceil_val, n),
        "featx_train_s_per_1k": per_1k(epoch_wall["train"], n),
        "featx_epoch_s_per_1k": per_1k(featx_epoch, n),
        "ratio_train": ceil_train / epoch_wall["train"],
        "ratio_epoch": (ceil_train + ceil_val) / featx_epoch,
        "epoch_seconds": epoch_wall, "ceiling_seconds": {"train": ceil_train, "validate": ceil_val},
        "first_epoch_seconds": first_epoch, "run_seconds": ft["total"],
        "checkpoint_mb": {k: v / 2**20 for k, v in ft["checkpoint_bytes"].items()},
    }
    report(result)
    return result


def report(r: dict) -> None:
    e, c = r["epoch_seconds"], r["ceiling_seconds"]
    lo, hi = r["ceiling_train_spread_s_per_1k"]
    print(f"\n{r['backbone']}: {r['image_size']} px, batch {r['batch_size']}, {r['optimizer']}, "
          f"augment {'on' if r['augment'] else 'off'}; {r['n_train']} training + {r['n_val']} validation images; "
          f"{r['workers']} decode worker(s); {r['epochs']} epochs (epoch 1 apart)")
    print("                                              s/epoch/1,000 training images")
    print(f"  ceiling: train steps on preloaded tensors      {r['ceiling_train_s_per_1k']:8.1f}"
          f"   (before featx {lo:.1f}, after {hi:.1f})")
    print(f"  featx:   train pass                            {r['featx_train_s_per_1k']:8.1f}"
          f"   ratio {r['ratio_train']:.2f} of the ceiling (target >= 0.9)")
    print(f"  ceiling: train steps + validation forward      {r['ceiling_epoch_s_per_1k']:8.1f}")
    print(f"  featx:   whole epoch                           {r['featx_epoch_s_per_1k']:8.1f}"
          f"   ratio {r['ratio_epoch']:.2f}")
    total = sum(e[k] for k in ("train", "validate", "metrics", "checkpoints"))
    print(f"  featx epoch, seconds (mean of epochs 2-{r['epochs']}): {total:.2f} = train {e['train']:.2f} "
          f"(of which waiting for batches {e['data_wait']:.2f}) + validation {e['validate']:.2f} (ceiling "
          f"{c['validate']:.2f}) + metrics {e['metrics']:.3f} + history and checkpoints {e['checkpoints']:.2f} "
          f"(best.pt {r['checkpoint_mb']['best.pt']:.0f} MB when it improves, last.pt "
          f"{r['checkpoint_mb']['last.pt']:.0f} MB)")
    print(f"  epoch 1: {r['first_epoch_seconds']:.2f} s; the whole run (scan, model, {r['epochs']} epochs, "
          f"outputs): {r['run_seconds']:.1f} s; decode + augment {r['decode_ms_per_image']:.1f} ms per image "
          "on one core")
    print(f"  => all C-NMC training folds (10,661 cells) x 15 epochs at this rate: about "
          f"{15 * 10.661 * r['featx_epoch_s_per_1k'] / 3600:.1f} h")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="alexnet,cnn")
    ap.add_argument("--images", type=int, default=320, help="labelled training-folds images to synthesise")
    ap.add_argument("--data", type=Path, default=None, help="bench on this image tree instead (e.g. C-NMC)")
    ap.add_argument("--val", default="fold_2", help="validation split (as finetune's val)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=None, help="default: featx's (32)")
    ap.add_argument("--optimizer", default=None, choices=("sgd", "adamw"), help="default: featx's (adamw)")
    ap.add_argument("--preset", default=None, help="settings preset (paper: SGD, no augmentation)")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: featx's choice)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    workers = default_workers(device) if args.workers is None else args.workers
    print(f"bench_finetune: {' '.join(sys.argv[1:]) or '(defaults)'}")
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__} on {device.type} ({cpu_name()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads{gpu}); {workers} decode worker(s); random weights")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data is None:
            t0 = time.perf_counter()
            tree = make_tree(work / "data", args.images)
            print(f"synthetic C-NMC tree, 450x450 BMP cells: {time.perf_counter() - t0:.1f} s")
        else:
            tree = args.data
        for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
            results.append(run_backbone(name, tree, work, args, device))
    print("\nsummary (s/epoch/1,000 training images; ratio = ceiling / featx)")
    for r in results:
        print(f"  {r['backbone']:<8} train pass: featx {r['featx_train_s_per_1k']:.1f}, ceiling "
              f"{r['ceiling_train_s_per_1k']:.1f}, ratio {r['ratio_train']:.2f}; whole epoch: featx "
              f"{r['featx_epoch_s_per_1k']:.1f}, ceiling {r['ceiling_epoch_s_per_1k']:.1f}, "
              f"ratio {r['ratio_epoch']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                         "torch": torch.__version__, "results": results}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
