"""Fine-tuning settings: the backbone's defaults, the reference study's preset, and their checks."""
from __future__ import annotations

import math
from typing import Any

from featx.backbones import get_config, input_size
from featx.errors import FeatxError, arg
from featx.scoring import METRIC_TABLE, METRICS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "none")
CLASS_WEIGHTS = ("none", "balanced")
#: Validation metrics ``early_stopping`` may watch: ``loss`` (the validation loss, lower is better) and every
#: metric of :data:`featx.scoring.METRIC_TABLE` (its direction from there).
MONITORS = ("loss", *METRICS)
MONITORS_MIN = ("loss", *(m.name for m in METRIC_TABLE.values() if not m.greater_is_better))

#: The reference study's settings (Keras, ImageNet transfer learning). Values the study does not state
#: are Keras' defaults; ``PRESET_NOTES`` says which and why, and the run records both.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "weights": "imagenet",
        "image_size": 224,
        "optimizer": "sgd",
        "lr": 1e-5,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "schedule": "none",
        "epochs": 15,
        "batch_size": 32,
        "dropout": 0.5,
        "class_weight": "none",
        "augment": False,
        "color_jitter": False,
    },
}
PRESET_NOTES: dict[str, dict[str, str]] = {
    "paper": {
        "weights": "ImageNet transfer learning as in the study; cnn has no ImageNet weights and is trained "
                   "from scratch (weights none), as the study's traditional CNN was",
        "momentum": "0.0: the study names plain SGD and no momentum, and Keras' SGD defaults to momentum 0",
        "schedule": "none: a constant learning rate, as Keras' SGD without a schedule",
        "batch_size": "32: Keras' fit() default; the study names no batch size",
        "dropout": "0.5 (the study names no rate) on the first two fully connected layers: before fc6 and fc7 "
                   "for alexnet and cnn, as in the study; torchvision's vgg16 places it after fc6 and fc7",
        "augment": "off: the study describes no augmentation",
        "loss": "softmax cross-entropy (the output layer is a softmax over the classes)",
    },
}


def default_settings(backbone: str) -> dict[str, Any]:
    """Sensible fine-tuning defaults for ``backbone`` when no preset is given (not the study's)."""
    cfg = get_config(backbone)
    pretrained = cfg.imagenet is not None
    return {
        "weights": "imagenet" if pretrained else "none",
        "image_size": input_size(cfg),
        "optimizer": "adamw",
        "lr": 1e-4 if pretrained else 1e-3,
        "momentum": 0.9,
        "weight_decay": 0.01,
        "schedule": "cosine",
        "epochs": 10,
        "batch_size": 32,
        "dropout": 0.5,
        "class_weight": "balanced",
        "augment": True,
        "color_jitter": False,
    }


def resolve_settings(backbone: str, preset: str | None, **options) -> dict[str, Any]:
    """Merge ``default_settings`` (or the preset) with the explicit ``options`` (``None`` = not given).

    Returns the settings used, with ``sources``: for each key, ``"option"``, ``"preset"`` or ``"default"``.
    """
    if preset is not None and preset not in PRESETS:
        raise FeatxError(f"{arg('preset', preset)}: unknown preset; choose one of: {', '.join(PRESETS)}")
    base = dict(default_settings(backbone))
    sources = {k: "default" for k in base}
    notes: dict[str, str] = {}
    if preset is not None:
        for key, value in PRESETS[preset].items():
            base[key] = value
            sources[key] = "preset"
        if get_config(backbone).imagenet is None:
            base["weights"] = "none"
        notes = dict(PRESET_NOTES[preset])
    for key, value in options.items():
        if key not in base:
            raise TypeError(f"unknown fine-tuning setting {key!r}")
        if value is not None:
            base[key] = value
            sources[key] = "option"
            notes.pop(key, None)
    base["weights"] = str(base["weights"])
    base["preset"] = preset
    base["sources"] = sources
    base["notes"] = notes
    return base


def preset_warning(backbone: str, settings: dict) -> str | None:
    """A warning (with :func:`~featx.errors.arg` references) when ``settings`` (of :func:`resolve_settings`)
    run the paper preset's SGD at lr 1e-5 from random weights, which barely moves in 15 epochs; else None.

    The study fine-tuned ImageNet weights; its rate is meant for transfer, not for training from scratch.
    Not raised when ``lr`` was given explicitly (the caller chose it).
    """
    if settings.get("preset") != "paper" or settings["weights"] != "none" \
            or settings["sources"].get("lr") != "preset":
        return None
    fix = (f"use {arg('weights', 'imagenet')}, or drop {arg('preset')} for the from-scratch defaults" if
           get_config(backbone).imagenet is not None else
           f"{backbone} has no ImageNet weights: drop {arg('preset')} for the from-scratch defaults")
    epochs = int(settings["epochs"])
    return (f"preset paper from random weights ({arg('weights', 'none')}): the study fine-tuned ImageNet weights; "
            f"plain SGD at lr {float(settings['lr']):g} from scratch will not learn in {epochs} epoch"
            f"{'' if epochs == 1 else 's'} (expect chance-level scores); {fix} (AdamW, lr 1e-3) or set {arg('lr')}")


def _choice(settings: dict, key: str, allowed: tuple[str, ...]) -> None:
    if settings[key] not in allowed:
        raise FeatxError(f"{arg(key, settings[key])}: choose one of: {', '.join(allowed)}")


def check_settings(s: dict) -> None:
    """Validate resolved settings; each error names the argument and the allowed values."""
    _choice(s, "optimizer", OPTIMIZERS)
    _choice(s, "schedule", SCHEDULES)
    _choice(s, "class_weight", CLASS_WEIGHTS)
    for key in ("epochs", "batch_size", "patience"):
        if int(s[key]) < 1:
            raise FeatxError(f"{arg(key, s[key])}: must be at least 1")
    if not (float(s["lr"]) > 0 and math.isfinite(float(s["lr"]))):
        raise FeatxError(f"{arg('lr', s['lr'])}: must be a positive number")
    if not 0.0 <= float(s["dropout"]) < 1.0:
        raise FeatxError(f"{arg('dropout', s['dropout'])}: must be in [0, 1)")
    for key in ("momentum", "weight_decay"):
        if float(s[key]) < 0:
            raise FeatxError(f"{arg(key, s[key])}: must not be negative")


def monitor_name(early_stopping: str | None) -> str:
    """``"val_f1"``/``"f1"``/``"acc"`` -> the metric key of ``compute_metrics`` (``loss`` for the val loss)."""
    if early_stopping is None:
        return "loss"
    name = early_stopping.lower().strip()
    name = name.removeprefix("val_")
    name = {"acc": "accuracy", "auc": "roc_auc", "f1_score": "f1"}.get(name, name)
    if name not in MONITORS:
        raise FeatxError(f"{arg('early_stopping', early_stopping)}: unknown metric; "
                         f"choose one of: {', '.join(MONITORS)}")
    return name


def improves(monitor: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``monitor`` beats ``best``; a NaN metric (e.g. roc_auc on a one-class validation
    set) never beats a number, and is beaten by one."""
    return best is None or (math.isfinite(value) and (
        not math.isfinite(best) or (value < best if monitor in MONITORS_MIN else value > best)))
