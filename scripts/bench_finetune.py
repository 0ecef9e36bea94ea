"""Fine-tuning speed: featx's seconds per epoch per 1,000 training images beside the training ceiling.

For each backbone, in one process: the ceiling is the same network (random weights, channels-last, featx's
optimizer and loss; on the CPU deterministic algorithms without the NaN fill, AMP on CUDA, as featx's loop)
trained on preloaded tensors: forward + backward + optimizer step over as many images as featx trains on, in
batches of the same size at the same image size, then a forward pass over the validation images. featx is
``featx.finetune.finetune`` on a C-NMC-like tree of 450x450 BMP cells (decoding, augmentation, validation,
metrics, checkpoints), several epochs; the first is reported apart (workers start, first allocations). A
ceiling pass runs before featx's first epoch and after each epoch (from the epoch callback, outside featx's
timings): each featx epoch is compared with the mean of the ceilings just before and after it, so that the
load of a shared machine, which changes over minutes, cancels in the ratio (the median over epochs is
printed).

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


class Ceiling:
    """featx's training step on preloaded tensors: the same network (random weights), optimizer, loss, batch and
    image size, channels-last; deterministic algorithms on the CPU and AMP on CUDA, as featx's loop."""

    def __init__(self, backbone: str, settings: dict, n_train: int, n_val: int,
                 class_weight: torch.Tensor | None, device: torch.device):
        size, self.bs, self.device = int(settings["image_size"]), int(settings["batch_size"]), device
        network = create_backbone(backbone, "none", dropout=float(settings["dropout"]), seed=0)
        network.reset_classifier(2, seed=0)
        self.network = network.to(device=device, memory_format=torch.channels_last)
        params = [p for p in self.network.parameters() if p.requires_grad]
        self.opt = (torch.optim.SGD(params, lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                                    weight_decay=float(settings["weight_decay"]))
                    if settings["optimizer"] == "sgd" else
                    torch.optim.AdamW(params, lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"])))
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=None if class_weight is None else class_weight.to(device))
        gen = torch.Generator().manual_seed(0)
        n = max(n_train, n_val)
        self.x = torch.randn(n, 3, size, size, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 2, (n,), generator=gen).to(device)
        # featx drops a last training batch of one image
        self.n_train = n_train - 1 if n_train > self.bs and n_train % self.bs == 1 else n_train
        self.n_val, self.warm = n_val, False

    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            logits = self.network(xb)
        loss = self.loss_fn(logits.float(), yb)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach())  # featx's one host sync per step

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def passes(self) -> dict:
        """Seconds of one pass of training steps over the training images and of a forward pass over the
        validation images (the first call starts with an untimed warm-up step). The caller's RNG is untouched."""
        prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                torch.utils.deterministic.fill_uninitialized_memory)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.utils.deterministic.fill_uninitialized_memory = False
        else:
            torch.backends.cudnn.benchmark = True
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                return self._passes()
        finally:
            torch.use_deterministic_algorithms(prev[0], warn_only=True)
            torch.backends.cudnn.benchmark = prev[1]
            torch.utils.deterministic.fill_uninitialized_memory = prev[2]

    def _passes(self) -> dict:
        x, y, bs, net = self.x, self.y, self.bs, self.network
        net.train()
        if not self.warm:
            self._step(x[:bs], y[:bs])
        self._sync()
        t0 = time.perf_counter()
        for start in range(0, self.n_train, bs):
            stop = min(start + bs, self.n_train)
            self._step(x[start:stop], y[start:stop])
        self._sync()
        train = time.perf_counter() - t0
        net.eval()
        with torch.inference_mode():
            if not self.warm:
                with autocast(self.device):
                    net(x[:bs])
            self._sync()
            t0 = time.perf_counter()
            for start in range(0, self.n_val, bs):
                with autocast(self.device):
                    torch.softmax(net(x[start:start + bs]).float(), 1)
            self._sync()
            val = time.perf_counter() - t0
        self.warm = True
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


def bench_featx(tree: Path, out: Path, backbone: str, settings: dict, args, device: torch.device,
                ceiling: Ceiling) -> dict:
    """finetune() for ``args.epochs`` epochs, with a ceiling pass before the run and after every epoch (in the
    ``"epoch"`` callback, which featx's epoch timings do not include): each featx epoch has a ceiling measured
    just before and just after it."""
    epochs: list[dict] = []
    ceilings = [ceiling.passes()]

    def callback(kind: str, info: dict) -> None:
        if kind == "epoch":
            epochs.append(dict(info["timings"], seconds=info["seconds"]))
            ceilings.append(ceiling.passes())

    t0 = time.perf_counter()
    summary = finetune(tree, out, backbone=backbone, weights="none", epochs=args.epochs,
                       batch_size=int(settings["batch_size"]), image_size=int(settings["image_size"]),
                       optimizer=settings["optimizer"], val=args.val, workers=args.workers, device=str(device),
                       keep="both", seed=0, callback=callback, preset=args.preset)
    total = time.perf_counter() - t0 - sum(c["train"] + c["validate"] for c in ceilings[1:])
    sizes = {name: (out / name).stat().st_size for name in ("best.pt", "last.pt")}
    return {"epochs": epochs, "ceilings": ceilings, "total": total, "n_train": summary["row"].n_train,
            "n_val": summary["row"].n_test, "workers": summary["settings_used"]["workers"],
            "checkpoint_bytes": sizes}


def per_1k(seconds: float, n: int) -> float:
    return 1000.0 * seconds / n


PARTS = ("train", "validate", "metrics", "checkpoints")


def run_backbone(backbone: str, tree: Path, work: Path, args, device: torch.device) -> dict:
    settings = resolve_settings(backbone, args.preset, weights="none", batch_size=args.batch_size,
                                image_size=args.image_size, optimizer=args.optimizer)
    collection = discover(tree)
    classes = list(collection.classes)
    train_idx = [i for i, s in enumerate(collection.samples)
                 if s.label is not None and s.split not in ("prelim", "final", args.val)]
    n_val = sum(s.split == args.val and s.label is not None for s in collection.samples)
    weight = (balanced_weights(labels(collection, classes), train_idx, len(classes))
              if settings["class_weight"] == "balanced" else None)
    cfg = get_config(backbone)
    decode = decode_seconds(collection, train_idx, int(settings["image_size"]), cfg.mean, cfg.std)

    ceiling = Ceiling(backbone, settings, len(train_idx), n_val, weight, device)
    ft = bench_featx(tree, work / backbone, backbone, settings, args, device, ceiling)
    del ceiling
    shutil.rmtree(work / backbone, ignore_errors=True)

    n, eps, ceils = ft["n_train"], ft["epochs"], ft["ceilings"]
    steady = range(1, len(eps)) if len(eps) > 1 else range(len(eps))  # epoch 1 (index 0) apart

    def around(k: int, key: str) -> float:  # the ceiling just before and just after featx's epoch k
        return (ceils[k][key] + ceils[k + 1][key]) / 2

    ratio_train = statistics.median(around(k, "train") / eps[k]["train"] for k in steady)
    ratio_epoch = statistics.median((around(k, "train") + around(k, "validate")) / sum(eps[k][p] for p in PARTS)
                                    for k in steady)
    ceil_train = statistics.fmean(around(k, "train") for k in steady)
    ceil_val = statistics.fmean(around(k, "validate") for k in steady)
    epoch_wall = {key: statistics.fmean(eps[k][key] for k in steady)
                  for key in PARTS + ("data_wait", "validate_data_wait")}
    result = {
        "backbone": backbone, "image_size": int(settings["image_size"]), "batch_size": int(settings["batch_size"]),
        "optimizer": settings["optimizer"], "augment": bool(settings["augment"]), "n_train": n, "n_val": ft["n_val"],
        "workers": ft["workers"], "epochs": args.epochs, "steady_epochs": [k + 1 for k in steady],
        "decode_ms_per_image": 1000 * decode,
        "ceiling_train_s_per_1k": per_1k(ceil_train, n),
        "ceiling_train_passes_s_per_1k": [per_1k(c["train"], n) for c in ceils],
        "featx_train_passes_s_per_1k": [per_1k(e["train"], n) for e in eps],
        "ceiling_epoch_s_per_1k": per_1k(ceil_train + ceil_val, n),
        "featx_train_s_per_1k": per_1k(epoch_wall["train"], n),
        "featx_epoch_s_per_1k": per_1k(sum(epoch_wall[p] for p in PARTS), n),
        "ratio_train": ratio_train, "ratio_epoch": ratio_epoch,
        "epoch_seconds": epoch_wall, "ceiling_seconds": {"train": ceil_train, "validate": ceil_val},
        "first_epoch_seconds": sum(eps[0][p] for p in PARTS), "run_seconds": ft["total"],
        "checkpoint_mb": {k: v / 2**20 for k, v in ft["checkpoint_bytes"].items()},
    }
    report(result)
    return result


def report(r: dict) -> None:
    e, c = r["epoch_seconds"], r["ceiling_seconds"]
    steady = r["steady_epochs"]
    which = f"epochs {steady[0]}-{steady[-1]}" if len(steady) > 1 else f"epoch {steady[0]}"
    print(f"\n{r['backbone']}: {r['image_size']} px, batch {r['batch_size']}, {r['optimizer']}, "
          f"augment {'on' if r['augment'] else 'off'}; {r['n_train']} training + {r['n_val']} validation images; "
          f"{r['workers']} decode worker(s); {r['epochs']} epochs, figures from {which}")
    print("                                              s/epoch/1,000 training images")
    print(f"  ceiling: train steps on preloaded tensors      {r['ceiling_train_s_per_1k']:8.1f}")
    print(f"  featx:   train pass                            {r['featx_train_s_per_1k']:8.1f}"
          f"   ratio {r['ratio_train']:.2f} of the ceiling (target >= 0.9)")
    print(f"  ceiling: train steps + validation forward      {r['ceiling_epoch_s_per_1k']:8.1f}")
    print(f"  featx:   whole epoch                           {r['featx_epoch_s_per_1k']:8.1f}"
          f"   ratio {r['ratio_epoch']:.2f}")
    print("  train passes in run order, s/1,000 (ceiling before epoch 1, featx epoch 1, ceiling, featx epoch 2, ...): "
          + ", ".join(f"{v:.1f}" for pair in zip(r["ceiling_train_passes_s_per_1k"], r["featx_train_passes_s_per_1k"]
                                                  + [None]) for v in pair if v is not None))
    total = sum(e[k] for k in PARTS)
    print(f"  featx epoch, seconds ({which}): {total:.2f} = train {e['train']:.2f} (of which waiting for batches "
          f"{e['data_wait']:.2f}) + validation {e['validate']:.2f} (waiting {e['validate_data_wait']:.2f}; ceiling "
          f"{c['validate']:.2f}) + metrics "
          f"{e['metrics']:.3f} + history and checkpoints {e['checkpoints']:.2f} (best.pt "
          f"{r['checkpoint_mb']['best.pt']:.0f} MB when it improves, last.pt {r['checkpoint_mb']['last.pt']:.0f} MB)")
    print(f"  epoch 1: {r['first_epoch_seconds']:.2f} s; the whole run without the ceiling passes (scan, model, "
          f"{r['epochs']} epochs, outputs): {r['run_seconds']:.1f} s; decode + augment "
          f"{r['decode_ms_per_image']:.1f} ms per image on one core")
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
