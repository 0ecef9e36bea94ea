"""The training loop: a :class:`Trainer` trains a :class:`~featx.finetune.plan.RunPlan`'s network epoch by
epoch, validates, keeps ``best.pt`` and ``last.pt``, and stops early when asked.

Every epoch is validated on the whole validation set; ``best.pt`` is chosen, and early stopping decided, on
its choosing part (``split.choose``) alone, whose numbers are history.csv's ``val_*`` columns. A checkpoint's
``val_predictions`` cover every validation image (``index``: the sample of each), so the result row can
score the part that chose nothing.

The network and its batches are channels-last; batches come from :mod:`featx.finetune.batches` (workers that
persist across epochs, uint8 images normalised on the device). The host waits for the device once per step
(the step's loss, for the ``"batch"`` event and the divergence check), after the step is queued.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import featx
from featx.data.images import make_transform
from featx.device import autocast, memory_format
from featx.errors import FeatxError, arg
from featx.evaluation import compute_metrics
from featx.finetune import checkpoint as ckpt
from featx.finetune.batches import (
                                    EpochBatches,
                                    SeededImages,
                                    channel_stats,
                                    close_loader,
                                    make_loader,
                                    pil_steps,
                                    to_device,
)
from featx.finetune.events import Callback
from featx.finetune.plan import RunPlan
from featx.finetune.presets import improves
from featx.finetune.split import balanced_weights, strict_stop
from featx.provenance import FIXED
from featx.results import jsonable


@dataclass
class TrainState:
    """How far training is: saved in ``last.pt`` after every epoch."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)  # the lines of history.csv
    best: dict = field(default_factory=lambda: {"value": None, "epoch": 0})  # by the monitored metric
    bad_epochs: int = 0  # epochs since the best one
    finished: bool = False


class Trainer:
    """Trains ``plan.network`` on ``plan.split``; reports through ``callback(kind, info)`` (see
    :mod:`featx.finetune.events`). Images that turn unreadable during training are left out from then on
    (``train_idx``, ``val_idx``, ``skipped`` follow)."""

    def __init__(self, plan: RunPlan, callback: Callback | None = None):
        self.plan, self.settings, self.callback = plan, plan.settings, callback
        s, device = plan.settings, plan.device
        self.fmt = memory_format(device)
        self.network = plan.network.to(device=device, memory_format=self.fmt)
        params = [p for p in self.network.parameters() if p.requires_grad]
        if s["optimizer"] == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=float(s["lr"]), momentum=float(s["momentum"]),
                                             weight_decay=float(s["weight_decay"]))
        else:
            self.optimizer = torch.optim.AdamW(params, lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
        epochs = int(s["epochs"])
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs)
                          if s["schedule"] == "cosine" else
                          torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=max(1, epochs // 3), gamma=0.1)
                          if s["schedule"] == "step" else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
        weight = (balanced_weights(plan.y, plan.split.train, len(plan.classes)).to(device)
                  if s["class_weight"] == "balanced" else None)
        self.criterion = nn.CrossEntropyLoss(weight=weight)
        cfg, size = self.network.config, int(s["image_size"])
        self.mean, self.std = channel_stats(cfg.mean, device), channel_stats(cfg.std, device)
        self.y = plan.y.to(device)
        train_tf = pil_steps(make_transform(size, cfg.mean, cfg.std, augment=bool(s["augment"]),
                                            color_jitter=bool(s["color_jitter"])))
        eval_tf = pil_steps(make_transform(size, cfg.mean, cfg.std))
        self.loader_gen = torch.Generator()  # the shuffled order and the augmentation seeds; saved in last.pt
        self.loader_gen.manual_seed(int(s["seed"]))
        bs = int(s["batch_size"])
        self.train_batches = EpochBatches(bs, generator=self.loader_gen, drop_single=True)
        self.val_batches = EpochBatches(bs)
        self.train_loader = make_loader(SeededImages(plan.collection, train_tf, size), self.train_batches,
                                        workers=plan.workers, device=device)
        self.val_loader = make_loader(SeededImages(plan.collection, eval_tf, size), self.val_batches,
                                      workers=plan.workers, device=device)
        self.train_idx, self.val_idx = list(plan.split.train), list(plan.split.val)
        self.choose = np.array(sorted(plan.split.choose), dtype=np.int64)  # the part of val_idx that chooses
        self.skipped = list(plan.split.skipped)
        self.best_path, self.last_path = plan.out / "best.pt", plan.out / "last.pt"
        self.state = TrainState()
        self.saved: dict[str, dict] = {}  # "best"/"last" -> the card and predictions this run last saved there
        self.rng_to_restore = None
        if plan.last is not None:
            self._restore(plan.last)

    def _restore(self, last: dict) -> None:
        self.network.load_state_dict(last["model"])
        self.optimizer.load_state_dict(last["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(last["scheduler"])
        if last.get("scaler"):
            self.scaler.load_state_dict(last["scaler"])
        self.state = TrainState(epoch=int(last["epoch"]), history=[dict(r) for r in last["history"]],
                                best=dict(last["best"]), bad_epochs=int(last["bad_epochs"]),
                                finished=bool(last["finished"]))
        self.rng_to_restore = last["rng"]

    def saved_epoch(self, which: str = "last") -> int:
        """The epoch ``last.pt`` (``which="best"``: ``best.pt``) holds now; 0: none yet."""
        if which in self.saved:
            return int(self.saved[which]["card"]["epoch"])
        last = self.plan.last
        return 0 if last is None else int(last["epoch"] if which == "last" else last["best"]["epoch"])

    def _emit(self, kind: str, info: dict) -> None:
        if self.callback is not None:
            self.callback(kind, info)

    # -- training ------------------------------------------------------------------------------------

    def fit(self) -> TrainState:
        """Train the remaining epochs; the caller's RNG states and torch flags are restored afterwards."""
        prev_det = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled())
        prev_bench, prev_fill = torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory
        np_state, py_state = np.random.get_state(), random.getstate()
        device = self.plan.device
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
            # deterministic mode also fills every new tensor with NaN, which costs up to ~5% of a step; the
            # loop's kernels write all they allocate
            torch.utils.deterministic.fill_uninitialized_memory = False
        else:
            torch.backends.cudnn.benchmark = True
        cuda = [device.index or 0] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                if self.rng_to_restore is not None:
                    ckpt.set_rng_state(self.rng_to_restore, self.loader_gen)
                else:
                    seed = int(self.settings["seed"])
                    torch.manual_seed(seed)
                    np.random.seed(seed)
                    random.seed(seed)
                self._emit("start", {"settings": self.settings, "n_train": len(self.train_idx),
                                     "n_val": len(self.val_idx), "epoch": self.state.epoch})
                while not self.state.finished and self.state.epoch < int(self.settings["epochs"]):
                    self.run_epoch(self.state.epoch + 1)
                return self.state
        finally:
            for loader in (self.train_loader, self.val_loader):
                close_loader(loader)
            torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
            torch.backends.cudnn.benchmark = prev_bench
            torch.utils.deterministic.fill_uninitialized_memory = prev_fill
            np.random.set_state(np_state)
            random.setstate(py_state)

    def run_epoch(self, epoch: int) -> None:
        """Train and validate one epoch, then save ``best.pt`` (when it improved), history.csv and ``last.pt``."""
        t0 = time.perf_counter()
        timings = dict.fromkeys(("train", "data_wait", "validate", "validate_data_wait", "metrics", "checkpoints"),
                                0.0)
        lr = float(self.optimizer.param_groups[0]["lr"])
        train_loss, train_acc = self._train_epoch(epoch, timings)
        t1 = time.perf_counter()
        losses, y_true, y_pred, proba, index = self._validate(timings)
        if self.scheduler is not None:
            self.scheduler.step()
        t2 = time.perf_counter()
        plan = self.plan
        subjects = np.array([plan.collection.samples[i].subject or "" for i in index], dtype=object)
        raw = compute_metrics(y_true, y_pred, proba[:, plan.pos], classes=plan.classes, positive=plan.pos,
                              subjects=subjects)
        metrics = dict(jsonable(raw), loss=float(losses.mean()))  # the whole validation set
        pick = np.isin(index, self.choose)
        if not pick.any():  # every choosing image turned unreadable during the run: all of them choose
            pick[:] = True
        chose = raw if pick.all() else compute_metrics(y_true[pick], y_pred[pick], proba[pick, plan.pos],
                                                       classes=plan.classes, positive=plan.pos,
                                                       subjects=subjects[pick])
        val_loss = float(losses[pick].mean())
        predictions = {"y_true": torch.from_numpy(y_true.astype(np.int64)),
                       "y_pred": torch.from_numpy(y_pred.astype(np.int64)),
                       "y_score": torch.from_numpy(proba[:, plan.pos].astype(np.float32)),
                       "index": torch.from_numpy(index.astype(np.int64))}
        line = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                "val_acc": float(chose["accuracy"]), "val_f1_weighted": float(chose["f1_weighted"]),
                "lr": lr, "seconds": round(time.perf_counter() - t0, 3)}
        t3 = time.perf_counter()
        timings.update(train=t1 - t0, validate=t2 - t1, metrics=t3 - t2)
        state, monitor, epochs = self.state, self.settings["monitor"], int(self.settings["epochs"])
        state.history.append(line)
        value = val_loss if monitor == "loss" else float(chose[monitor])
        if improves(monitor, value, state.best["value"]):
            state.best = {"value": value, "epoch": epoch}
            state.bad_epochs = 0
            self._save(self.best_path, epoch, metrics, predictions)
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        if self.settings["early_stopping"] and state.bad_epochs >= int(self.settings["patience"]):
            state.finished = True
        if epoch >= epochs:
            state.finished = True
        ckpt.write_history(self.plan.out, state.history)
        self._save(self.last_path, epoch, metrics, predictions, last=True)
        timings["checkpoints"] = time.perf_counter() - t3
        self._emit("epoch", dict(line, best_epoch=state.best["epoch"], monitor=monitor, monitor_value=value,
                                 stopping=state.finished and epoch < epochs,
                                 timings={k: round(v, 4) for k, v in timings.items()}))

    def _save(self, path, epoch: int, metrics: dict, predictions: dict, *, last: bool = False) -> None:
        card = jsonable({"backbone": self.settings["backbone"], "classes": self.plan.classes,
                         "positive": self.plan.positive, "preprocessing": self.plan.preprocessing,
                         "settings": self.settings, "metrics": metrics, "epoch": epoch,
                         "featx_version": featx.__version__, "torch_version": str(torch.__version__),
                         "provenance": self.plan.provenance,
                         # whether the validation images of provenance "val_choose" chose this epoch
                         "epoch_choice": FIXED if last and not self.settings["early_stopping"] else "val-choose"})
        extra = {}
        if last:
            s = self.state
            extra = {"optimizer": self.optimizer.state_dict(),
                     "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict(), "epoch": epoch, "rng": ckpt.rng_state(self.loader_gen),
                     "history": jsonable(s.history), "best": dict(s.best), "bad_epochs": s.bad_epochs,
                     "finished": s.finished}
        ckpt.save_checkpoint(path, backbone=self.settings["backbone"], classes=self.plan.classes,
                             network=self.network, card=card, val_predictions=predictions, **extra)
        self.saved["last" if last else "best"] = {"card": card, "val_predictions": predictions}

    def checkpoint_record(self, which: str) -> dict:
        """``card`` and ``val_predictions`` of ``best.pt`` or ``last.pt``: as this run saved them, or read back
        (a checkpoint of an earlier session)."""
        if which in self.saved:
            return self.saved[which]
        return ckpt.load_checkpoint(self.best_path if which == "best" else self.last_path)

    def _batches(self, loader: DataLoader, timings: dict, wait: str):
        """(images, labels, indices) on the device; images unreadable now are dropped and recorded.
        ``timings[wait]`` adds up the time spent waiting for the loader."""
        device = self.plan.device
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                images, index, error = next(it)
            except StopIteration:
                return
            timings[wait] += time.perf_counter() - t0
            bad = [e for e in error if e]
            if bad:  # readable when scanned, unreadable now (changed on disk, or a transform failed)
                if self.plan.strict:
                    raise strict_stop(bad[0])
                ok = torch.tensor([not e for e in error], dtype=torch.bool)
                for i, e in zip(index[~ok].tolist(), bad):
                    if i not in {j for j, _ in self.skipped}:
                        self.skipped.append((int(i), e))
                        ckpt.write_lists(self.plan.out, self.plan.collection, self.skipped, self.plan.provenance)
                    # out of later epochs and of the validation metrics (this epoch's batches are drawn)
                    self.train_idx = [j for j in self.train_idx if j != i]
                    self.val_idx = [j for j in self.val_idx if j != i]
                if not ok.any():
                    continue
                images, index = images[ok], index[ok]
            yield (to_device(images, device, self.mean, self.std, self.fmt),
                   self.y[index.to(device, non_blocking=True)], index)

    def _train_epoch(self, epoch: int, timings: dict) -> tuple[float, float]:
        network, opt, device = self.network, self.optimizer, self.plan.device
        network.train()
        self.train_batches.indices = list(self.train_idx)
        steps = len(self.train_batches)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen, run_sum = 0, 0.0  # run_sum: the epoch's loss so far, on the host (from the step's one wait)
        for step, (x, y, _) in enumerate(self._batches(self.train_loader, timings, "data_wait"), start=1):
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                logits = network(x)
            loss = self.criterion(logits.float(), y)
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
            n = y.numel()
            loss_sum += loss.detach().double() * n
            correct += (logits.detach().argmax(1) == y).sum()
            seen += n
            value = float(loss.detach())  # the step's one wait for the device, once the step is queued
            if not math.isfinite(value):
                raise FeatxError(f"training diverged at epoch {epoch}, step {step} (loss {value}); "
                                 f"lower {arg('lr')} (now {self.settings['lr']})")
            run_sum += value * n
            self._emit("batch", {"epoch": epoch, "step": step, "steps": steps, "loss": value,
                                 "mean_loss": run_sum / seen})
        return float(loss_sum) / max(seen, 1), int(correct) / max(seen, 1)

    @torch.inference_mode()
    def _validate(self, timings: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(unweighted cross-entropy, y_true, predicted class, class probabilities, sample index) of every
        validation image."""
        network, device = self.network, self.plan.device
        network.eval()
        losses, ys, probs, indices = [], [], [], []
        self.val_batches.indices = list(self.val_idx)
        for x, y, index in self._batches(self.val_loader, timings, "validate_data_wait"):
            with autocast(device):
                logits = network(x)
            logits = logits.float()
            losses.append(nn.functional.cross_entropy(logits, y, reduction="none").double())
            ys.append(y)
            probs.append(torch.softmax(logits, 1))
            indices.append(index)
        y_true = torch.cat(ys).cpu().numpy()
        p = torch.cat(probs).cpu().numpy()
        return (torch.cat(losses).cpu().numpy(), y_true, p.argmax(1), p,
                torch.cat(indices).cpu().numpy().astype(np.int64))
