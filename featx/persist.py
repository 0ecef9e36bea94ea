"""Saved heads: a fitted pipeline (joblib) plus a JSON card, and prediction on new images.

``models/vgg16-fc7-svm.joblib`` holds the pipeline fitted on all training rows; ``vgg16-fc7-svm.json`` next to
it says what it is: classes, positive class, the feature stores' extraction settings (backbone, weights and
their sha256, input size, mean, std, resize), the store fingerprint, library versions and the evaluation
metrics. joblib files are pickles (loading one runs code): load only models you made or trust; the card's
sha256 of the model file is checked before loading.

``predict`` applies a saved model to a feature store made with the same settings, or extracts the features
of new images itself with the settings in the card.
"""
from __future__ import annotations

import csv
import hashlib
import json
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from featx.errors import FeatxError
from featx.files import sha256_file

CARD_VERSION = 1
# Extraction settings a store must share with the model's card (compared in this order).
MATCH_KEYS = ("backbone", "weights_kind", "weights", "weights_sha256", "weights_seed", "input_size", "mean", "std",
              "resize")
STORE_KEYS = MATCH_KEYS + ("dtype", "dataset_fingerprint", "data_root", "layout", "featx_version")

__all__ = ["CARD_VERSION", "card_path", "check_store_matches", "export_skops", "fit_final", "load_model",
           "model_name", "predict", "require_skops", "save_model", "train_and_save"]


def _versions() -> dict:
    import joblib
    import sklearn

    import featx

    out = {"featx": featx.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "scikit-learn": sklearn.__version__, "joblib": joblib.__version__}
    for mod in ("torch", "xgboost", "h5py"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    return out


def model_name(features, head: str) -> str:
    """``vgg16-fc7-svm`` (file-name safe) for a feature set and head."""
    import re

    text = f"{features.backbone}-{features.tap}-{head}"
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text)


def card_path(model_path) -> Path:
    """The JSON card next to a model file."""
    return Path(model_path).with_suffix(".json")


def _store_parts(features) -> list[dict]:
    """Per store: its taps and its extraction settings."""
    parts = []
    stores = list(features.stores)
    for i, settings in enumerate(features.settings):
        entry = {k: settings.get(k) for k in STORE_KEYS if k in settings}
        entry["taps"] = list(features.store_taps[i]) if i < len(features.store_taps) else []
        entry["store"] = str(Path(stores[i]).resolve()) if i < len(stores) else ""
        parts.append(entry)
    return parts


def fit_final(features, head: str, *, preprocess: str | None = "standard", class_weight=None, seed: int = 0,
              device: str = "auto", params: dict | None = None, eval_set: str | None = None):
    """Fit the evaluated pipeline (same head, parameters, preprocessing and seed as
    :func:`featx.evaluate.evaluate`) on the rows its protocol trains on: every labelled row outside the
    held-out phases (prelim/final/test) and outside ``eval_set``. With ``eval_set`` it is the very model
    that was scored on that split. Heads without ``predict_proba`` stay so (their score is the decision
    function). Returns ``(pipeline, n_train)``.
    """
    from featx.evaluate import HELD_OUT_SPLITS, _head_params
    from featx.heads import make_head

    held_out = [*HELD_OUT_SPLITS, *([eval_set] if eval_set else [])]
    keep = (np.asarray(features.y) >= 0) & ~np.isin(np.asarray(features.splits).astype(str), held_out)
    if keep.sum() == 0:
        raise FeatxError("no labelled training rows to fit the model on (all rows are unlabelled or held out)")
    if len(np.unique(features.y[keep])) < 2:
        raise FeatxError("the training rows hold only one class; a model needs at least two")
    model = make_head(head, preprocess=preprocess, class_weight=class_weight, seed=seed, device=device,
                      **_head_params(params, head))
    model.fit(features.X[keep], features.y[keep])
    return model, int(keep.sum())


def save_model(model, features, out_dir, *, head: str, n_train: int, preprocess=None, class_weight=None,
               seed: int = 0, params: dict | None = None, row: dict | None = None) -> Path:
    """Write ``out_dir/<backbone>-<tap>-<head>.joblib`` and its JSON card; returns the model path."""
    import joblib

    from featx.evaluate import METRICS, resolve_positive
    from featx.heads import get_head

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{model_name(features, head)}.joblib"
    joblib.dump(model, path)
    classes = list(features.classes)
    spec = get_head(head)
    metrics = {}
    if row:
        metrics = {"protocol": row.get("protocol"), "protocol_label": row.get("protocol_label"),
                   "image_level": row.get("image_level"), "n_folds": row.get("n_folds")}
        for m in METRICS:
            for suffix in ("", "_std", "_ci_low", "_ci_high"):
                v = row.get(f"{m}{suffix}")
                metrics[f"{m}{suffix}"] = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
    card = {
        "featx_model": CARD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": path.name, "sha256": sha256_file(path),
        "head": spec.name, "preprocess": preprocess,
        "class_weight": class_weight if spec.class_weight else None, "params": params or {}, "seed": seed,
        "probability": "predict_proba" if spec.probability else
                       "none: the score is the decision function (positive side = the class predicted)",
        "classes": classes, "positive": classes[resolve_positive(classes, getattr(features, "positive", None))],
        "n_features": int(features.X.shape[1]), "n_train": n_train,
        "backbone": features.backbone, "tap": features.tap, "feature_name": features.name,
        "store_fingerprint": features.fingerprint, "stores": _store_parts(features),
        "versions": _versions(), "metrics": metrics,
        "warning": "joblib files are pickles: load only models you trust",
    }
    card_path(path).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def train_and_save(features, head: str, out_dir, *, preprocess: str | None = "standard", class_weight=None,
                   seed: int = 0, device: str = "auto", params: dict | None = None, row: dict | None = None) -> Path:
    """:func:`fit_final` then :func:`save_model`; ``row`` (the evaluation result) goes into the card."""
    model, n_train = fit_final(features, head, preprocess=preprocess, class_weight=class_weight, seed=seed,
                               device=device, params=params)
    return save_model(model, features, out_dir, head=head, n_train=n_train, preprocess=preprocess,
                      class_weight=class_weight, seed=seed, params=params, row=row)


def load_model(path) -> tuple[object, dict]:
    """Load a saved model and its card, after checking the file is the one the card describes."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"{path}: no such model file; save one with `featx classify ... --save`")
    cpath = card_path(path)
    if not cpath.is_file():
        raise FeatxError(f"{path}: its card {cpath.name} is missing; featx loads only models saved with their card")
    try:
        card = json.loads(cpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FeatxError(f"{cpath}: not a valid model card ({exc.msg}); re-save the model") from None
    if card.get("featx_model") != CARD_VERSION:
        raise FeatxError(f"{cpath}: not a featx model card (version {card.get('featx_model')!r})")
    if card.get("sha256") and card["sha256"] != sha256_file(path):
        raise FeatxError(f"{path}: the file changed after it was saved (sha256 differs from {cpath.name}); "
                         "refusing to load it; re-save the model")
    return joblib.load(path), card


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        a, b = list(np.atleast_1d(a)), list(np.atleast_1d(b))
        if len(a) != len(b):
            return False
        try:
            return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-6, atol=1e-9))
        except (TypeError, ValueError):
            return [str(x) for x in a] == [str(x) for x in b]
    if a is None or b is None:
        return (a in (None, "")) and (b in (None, ""))
    return str(a) == str(b)


def check_store_matches(card: dict, settings: Sequence[dict], stores: Sequence[str]) -> None:
    """Refuse stores whose extraction settings differ from the card's, naming the first differing setting."""
    expected = card.get("stores") or []
    if len(expected) != len(settings):
        raise FeatxError(f"the model was trained on {len(expected)} fused store(s) "
                         f"({card.get('feature_name')}); got {len(settings)}: {'+'.join(map(str, stores))}")
    for want, have, store in zip(expected, settings, stores):
        for key in MATCH_KEYS:
            if key not in want:
                continue
            if key == "weights" and want.get("weights_kind") == "file":
                continue  # a checkpoint may live at another path; its sha256 decides
            if not _same(have.get(key), want[key]):
                raise FeatxError(f"{store}: {key} is {have.get(key)!r} in the store but {want[key]!r} in the model "
                                 f"card ({card.get('file')}); features made with other settings do not fit the model: "
                                 "extract with the model's settings, or run predict without --store to extract them")


def _load_for_model(card: dict, store_spec: str, split: str | None):
    from featx.store import load_features, store_settings

    paths = [p for p in str(store_spec).split("+") if p]
    settings = [store_settings(p) for p in paths]
    check_store_matches(card, settings, paths)
    tap_lists = [s.get("taps") or [] for s in card["stores"]]
    taps = "+".join(tap_lists[0]) if all(t == tap_lists[0] for t in tap_lists) and tap_lists[0] else None
    features = load_features("+".join(paths), taps, splits=[split] if split else None)
    if features.name != card.get("feature_name") or features.X.shape[1] != card.get("n_features"):
        raise FeatxError(f"{store_spec}: gives features {features.name} ({features.X.shape[1]} columns) but the "
                         f"model takes {card.get('feature_name')} ({card.get('n_features')} columns)")
    return features


def _extract_for_model(card: dict, data, split: str | None, cache_dir: Path, *, device: str, batch_size: int,
                       workers: int | None, progress: bool) -> str:
    from featx.extract import extract

    paths = []
    for i, entry in enumerate(card["stores"]):
        weights = entry.get("weights") or "none"
        if entry.get("weights_kind") == "file" and not Path(weights).is_file():
            raise FeatxError(f"the model's features came from weights file {weights}, which is missing; "
                             "put it back or extract a store yourself and pass it with --store")
        seed = entry.get("weights_seed")
        key = hashlib.sha256(json.dumps([str(Path(data).resolve()), split, entry], sort_keys=True,
                                        default=str).encode()).hexdigest()[:12]
        out = cache_dir / f"{i}-{entry.get('backbone')}-{key}.h5"
        extract(data, out, backbone=entry["backbone"], weights=weights, taps=",".join(entry.get("taps") or []) or None,
                image_size=entry.get("input_size"), splits=[split] if split else None, device=device,
                batch_size=batch_size, workers=workers, dtype=entry.get("dtype") or "float32",
                seed=int(seed) if seed is not None and int(seed) >= 0 else 0, progress=progress)
        paths.append(str(out))
    return "+".join(paths)


def predict(model_path, data=None, *, split: str | None = None, store: str | None = None,
            out="predictions.csv", device: str = "auto", batch_size: int = 32, workers: int | None = None,
            cache=None, progress: bool = False) -> dict:
    """Predict every image of ``data`` (optionally one ``split``) with a saved model; write a CSV.

    With ``store`` the features are read from that store (or ``a.h5+b.h5``), which must have been extracted
    with the card's settings; otherwise they are extracted from ``data`` with the card's backbone, weights,
    taps and input size into ``cache`` (a temporary folder when None). The CSV has ``path,prediction,
    probability`` (probability of the predicted class), one row per image. Returns a summary dict.
    """
    model, card = load_model(model_path)
    if store is None and data is None:
        raise FeatxError("give the images to predict (DATA) or a feature store (--store)")
    if store is not None:
        features = _load_for_model(card, store, split)
        source = str(store)
    else:
        tmp = None
        if cache is None:
            tmp = tempfile.TemporaryDirectory(prefix="featx-predict-")
            cache_dir = Path(tmp.name)
        else:
            cache_dir = Path(cache)
            cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            spec = _extract_for_model(card, data, split, cache_dir, device=device, batch_size=batch_size,
                                      workers=workers, progress=progress)
            features = _load_for_model(card, spec, None)
        finally:
            if tmp is not None:
                tmp.cleanup()
        source = str(data)
    if len(features) == 0:
        raise FeatxError(f"{source}: no images to predict" + (f" in split {split!r}" if split else ""))
    classes = card["classes"]
    pred = model.predict(features.X)
    proba = model.predict_proba(features.X).max(axis=1) if hasattr(model, "predict_proba") else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "prediction", "probability"])
        for i, (p, k) in enumerate(zip(features.paths, pred)):
            writer.writerow([p, classes[int(k)], "" if proba is None else f"{proba[i]:.6f}"])
    counts = {c: int(np.sum(pred == i)) for i, c in enumerate(classes)}
    return {"out": out, "rows": int(len(pred)), "counts": counts, "source": source, "model": card.get("file")}


def require_skops():
    """The ``skops.io`` module, or :class:`FeatxError` saying how to install it."""
    try:
        import skops.io as sio
    except ImportError:
        raise FeatxError("--skops: skops is not installed; `pip install skops` (or featx[skops]) to export "
                         "models in a format that loads without running code") from None
    return sio


def export_skops(model_path, out=None) -> Path:
    """Also write the model in the skops format (safe to load without running code), if skops is installed."""
    sio = require_skops()
    model, _ = load_model(model_path)
    out = Path(out) if out else Path(model_path).with_suffix(".skops")
    sio.dump(model, out)
    return out
