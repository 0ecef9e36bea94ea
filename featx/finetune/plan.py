"""What a fine-tuning run is, fixed before its first step: :func:`plan_run` builds one :class:`RunPlan`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from featx import provenance
from featx.backbones import TappedNetwork, create_backbone, get_config, input_size, origin_of
from featx.data import Collection, discover
from featx.device import resolve_device
from featx.errors import FeatxError, arg
from featx.evaluation import resolve_positive
from featx.finetune.batches import default_workers
from featx.finetune.checkpoint import (
                                       is_pruned_finished,
                                       kept_checkpoints,
                                       read_last,
                                       read_settings,
                                       refuse_other_settings,
)
from featx.finetune.presets import check_settings, monitor_name, preset_warning, resolve_settings
from featx.finetune.split import Split, balanced_weights, labels, select_images
from featx.report import refuse_results_folder


@dataclass(frozen=True)
class RunPlan:
    """One fine-tuning run: its folder, data, split, settings and starting network.

    ``settings`` is what ``settings.json`` and every card record; ``last`` is the ``last.pt`` a resumed
    run continues from (None for a new run). ``finished``: ``resume=True`` on a run that finished and kept one
    checkpoint (``keep``): nothing to train, its outputs are read back (``network`` is None).
    """

    out: Path
    collection: Collection
    classes: list[str]
    pos: int  # index of the positive class in ``classes``
    y: torch.Tensor  # class index of every sample (-1: unlabelled)
    split: Split
    settings: dict
    network: TappedNetwork | None  # on the CPU, classifier layer sized to ``classes``, frozen stages set
    provenance: dict
    preprocessing: dict
    device: torch.device
    workers: int
    strict: bool
    last: dict | None
    finished: bool = False
    warning: str | None = None  # a warning to report before training (with featx.errors.arg markers)
    weights_warning: str | None = None  # likewise: the starting weights are of unknown provenance

    @property
    def positive(self) -> str:
        return self.classes[self.pos]


def plan_run(data: str | Path | Collection, out: Path, *, backbone: str, preset: str | None, options: dict,
             val: str, early_stopping: str | None, patience: int, positive: str | None, freeze: str | None,
             device: str, workers: int | None, seed: int, resume: bool, strict: bool, keep: str = "best",
             weights_never_saw_images: bool = False) -> RunPlan:
    """Resolve and check the settings, draw the split, scan the images, read ``last.pt`` (``resume``) and
    build the starting network. Writes nothing. ``weights_never_saw_images``: the user's statement about
    starting weights of unknown provenance (:func:`featx.provenance.stated_origin`)."""
    collection = data if isinstance(data, Collection) else discover(data)
    classes = list(collection.classes)
    if len(classes) < 2:
        raise FeatxError(f"{collection.root}: fine-tuning needs at least two classes, found "
                         f"{classes or 'no labelled images'}")
    pos = resolve_positive(classes, positive)
    settings = resolve_settings(backbone, preset, **options)
    settings.update(backbone=backbone, val=val, monitor=monitor_name(early_stopping),
                    early_stopping=early_stopping is not None, patience=int(patience), freeze=freeze,
                    seed=int(seed), positive=classes[pos], classes=classes,
                    dataset_fingerprint=collection.fingerprint(), data_root=str(collection.root))
    settings["loss"] = "softmax cross-entropy" + (" (class-weighted)" if settings["class_weight"] == "balanced"
                                                  else "")
    check_settings(settings)
    size = input_size(get_config(backbone), int(settings["image_size"]))
    device_ = resolve_device(device)
    workers = default_workers(device_) if workers is None else int(workers)
    settings.update(device=str(device_), workers=workers, keep=keep)
    warning = preset_warning(backbone, settings)
    if warning:
        settings["warning"] = str(FeatxError(warning))  # in Python terms (weights='none')

    split = select_images(collection, val, seed, workers=workers, strict=strict)
    skipped_paths = sorted(collection.samples[i].path for i, _ in split.skipped)
    settings.update(protocol=split.protocol, protocol_label=split.protocol_label, image_level=split.image_level,
                    n_train=len(split.train), n_val=len(split.val), strict=bool(strict),
                    n_skipped=len(split.skipped), skipped=skipped_paths, val_choose=choose_text(collection, split))

    refuse_results_folder(out, "finetune")
    last_path = out / "last.pt"
    last = None
    if resume and is_pruned_finished(out):  # finished, one checkpoint kept: check the settings, report it again
        before = read_settings(out)
        refuse_other_settings(before, settings, out / "settings.json")
        return RunPlan(out=out, collection=collection, classes=classes, pos=pos, y=labels(collection, classes),
                       split=split, settings=before, network=None, provenance={}, preprocessing={}, device=device_,
                       workers=workers, strict=bool(strict), last=None, finished=True)
    if resume:
        last = read_last(last_path)
        refuse_other_settings(last["card"]["settings"], settings, last_path)
        # what the first run recorded about its weights stays the truth for this run
        for key in ("weights_source", "weights_sha256", "weights_provenance"):
            settings[key] = last["card"]["settings"].get(key)
    elif is_pruned_finished(out):
        raise FeatxError(f"{out} holds a finished run (results.json, {', '.join(kept_checkpoints(out)) or 'no .pt'}); "
                         f"choose another run folder ({arg('out')}), or pass {arg('resume', True)} to report it again")
    elif last_path.exists() or (out / "best.pt").exists():
        name = last_path.name if last_path.exists() else "best.pt"
        raise FeatxError(f"{out} already holds a run ({name}); pass {arg('resume', True)} to continue "
                         f"it or choose another run folder ({arg('out')})")

    network = create_backbone(backbone, "none" if last is not None else settings["weights"],
                              dropout=float(settings["dropout"]), seed=int(seed))
    skipped_idx = sorted(i for i, _ in split.skipped)
    weights_warning = None
    if last is not None:  # what the first run recorded (including a starting checkpoint's samples) stays
        prov = last["card"].get("provenance") or provenance.record(collection, split.train, split.val, skipped_idx,
                                                                   choose=split.choose)
    else:
        info = network.weights_info
        origin = provenance.stated_origin(origin_of(network.config, info), weights_never_saw_images, info.source)
        settings["weights_provenance"] = origin
        if origin == provenance.UNKNOWN:
            weights_warning = provenance.unknown_weights_warning(info.source, info.card)
        prov = provenance.record(collection, split.train, split.val, skipped_idx, start_card=info.card,
                                 choose=split.choose, start_weights=origin)
    if last is not None or network.classes != classes:  # keep the classifier of a checkpoint of these classes
        network.reset_classifier(len(classes), seed=int(seed))
    if last is None:
        settings["weights_source"] = network.weights_info.source
        settings["weights_sha256"] = network.weights_info.sha256
    if freeze is not None:
        if freeze not in network.stages:
            raise FeatxError(f"{arg('freeze', freeze)}: unknown stage of {backbone}; choose one of: "
                             f"{', '.join(network.stages)}")
        network.freeze(freeze)

    y = labels(collection, classes)
    settings["class_weights"] = (None if settings["class_weight"] != "balanced" else
                                 [round(float(w), 6) for w in balanced_weights(y, split.train, len(classes))])
    cfg = network.config
    preprocessing = {"input_size": size, "mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std],
                     "resize": f"resize to {size}x{size} (bilinear, antialias), ToTensor, normalise"}
    return RunPlan(out=out, collection=collection, classes=classes, pos=pos, y=y, split=split, settings=settings,
                   network=network, provenance=prov, preprocessing=preprocessing, device=device_, workers=workers,
                   strict=bool(strict), last=last, warning=warning, weights_warning=weights_warning)


def choose_text(collection: Collection, split: Split) -> str:
    """Which validation images choose best.pt's epoch, in words (``settings.json``, reports)."""
    if split.unsplit:
        return f"all {len(split.val)} validation images choose best.pt's epoch: {split.unsplit}"

    def subjects(indices) -> str:
        n = len({collection.samples[i].subject for i in indices if collection.samples[i].subject})
        return f" of {n} subjects" if n else ""

    return (f"{len(split.choose)} validation images{subjects(split.choose)} choose best.pt's epoch, the other "
            f"{len(split.score)}{subjects(split.score)} score it")
