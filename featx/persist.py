"""Saved heads: a fitted pipeline with its class names in one file, a JSON card beside it, and prediction.

``models/vgg16-fc7-svm.joblib`` holds a small dict: the pipeline fitted on all training rows, the class names,
the positive class, the number of features, the head and the extraction settings of its features.
``vgg16-fc7-svm.json`` beside it says the same for people (plus the metrics, versions and the file's sha256).
``vgg16-fc7-svm.skops`` (with its own card ``vgg16-fc7-svm.skops.json``) is the same model in the skops
format, which loads without running code: the format to share models in.

A model loads only when its card is present, records the sha256 of the model file and that sha256 matches;
a .skops file loads only when every type it holds is on featx's allow-list (:data:`SKOPS_TRUSTED`). The
settings that decide a prediction (classes, positive class, features) are checked between the file and its
card, so an edited card cannot flip the labels. joblib files are pickles, which run code when loaded: the
sha256 only proves the file is the one its card describes, not who wrote it, so load .joblib files only
from people you trust.

``predict`` applies a saved model to a feature store made with the same settings, or extracts the features
of new images itself with the settings in the card; it writes one CSV row per requested image.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
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
# What the model file itself holds besides the pipeline; the card must agree on each (an edited card is refused).
BUNDLE_KEYS = ("classes", "positive", "n_features", "head", "feature_name", "stores")
# Types a .skops model may hold beyond those skops trusts by default (numpy arrays, builtins, most of
# scikit-learn): the estimators featx's heads are made of. Anything else is refused, naming the type.
SKOPS_TRUSTED = frozenset({
    "featx.heads.SoftmaxClassifier", "featx.heads.XGBoostClassifier", "featx.heads.RBFSVMClassifier",
    "xgboost.sklearn.XGBClassifier", "xgboost.core.Booster",
    "sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
    *(f"sklearn.metrics._dist_metrics.{name}Distance{bits}" for bits in (32, 64) for name in (
        "Euclidean", "SEuclidean", "Manhattan", "Chebyshev", "Minkowski", "Mahalanobis", "Hamming", "Canberra",
        "BrayCurtis")),
})
UNFINISHED = "not extracted: the store is unfinished; run `featx extract` again to fill it"

__all__ = ["CARD_VERSION", "SKOPS_TRUSTED", "card_path", "check_store_matches", "export_skops", "fit_final",
           "load_model", "model_name", "predict", "require_skops", "save_model"]


def _versions() -> dict:
    import joblib
    import sklearn

    import featx

    out = {"featx": featx.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "scikit-learn": sklearn.__version__, "joblib": joblib.__version__}
    for mod in ("torch", "xgboost", "h5py", "skops"):
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
    """The JSON card beside a model file: ``m.json`` for ``m.joblib``, ``m.skops.json`` for ``m.skops``."""
    path = Path(model_path)
    return path.with_name(path.name + ".json") if path.suffix == ".skops" else path.with_suffix(".json")


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


def _plain(value):
    """JSON-shaped copy (tuples -> lists, numpy scalars -> numbers), as the card stores it."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _describe_output(model) -> tuple[str, str]:
    """(``probability`` or ``score``, how it is made) for the card and the CSV."""
    if not hasattr(model, "predict_proba"):
        return "score", "none: the CSV's score column is the decision function of the predicted class"
    return "probability", "predict_proba"


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename onto ``path``: a crash never leaves half a model file under its name."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_card(path: Path, card: dict) -> None:
    _atomic(card_path(path), lambda tmp: tmp.write_text(json.dumps(card, indent=2, default=str) + "\n",
                                                        encoding="utf-8"))


def save_model(model, features, out_dir, *, head: str, n_train: int, preprocess=None, class_weight=None,
               seed: int = 0, params: dict | None = None, row: dict | None = None) -> Path:
    """Write ``out_dir/<backbone>-<tap>-<head>.joblib`` (the pipeline with its class names) and its JSON card."""
    import joblib

    from featx.evaluate import METRICS, resolve_positive
    from featx.heads import get_head

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{model_name(features, head)}.joblib"
    classes = [str(c) for c in features.classes]
    spec = get_head(head)
    protected = _plain({
        "classes": classes, "positive": classes[resolve_positive(classes, getattr(features, "positive", None))],
        "n_features": int(features.X.shape[1]), "head": spec.name, "feature_name": features.name,
        "stores": _store_parts(features),
    })
    _atomic(path, lambda tmp: joblib.dump({"featx_model": CARD_VERSION, "model": model, **protected}, tmp))
    metrics = {}
    if row:
        metrics = {"protocol": row.get("protocol"), "protocol_label": row.get("protocol_label"),
                   "image_level": row.get("image_level"), "n_folds": row.get("n_folds")}
        for m in METRICS:
            for suffix in ("", "_std", "_ci_low", "_ci_high"):
                v = row.get(f"{m}{suffix}")
                metrics[f"{m}{suffix}"] = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
    output, how = _describe_output(model)
    card = {
        "featx_model": CARD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": path.name, "format": "joblib", "sha256": sha256_file(path),
        "head": spec.name, "preprocess": preprocess,
        "class_weight": class_weight if spec.class_weight else None, "params": params or {}, "seed": seed,
        "output": output, "probability": how,
        **{k: protected[k] for k in ("classes", "positive", "n_features")}, "n_train": n_train,
        "backbone": features.backbone, "tap": features.tap, "feature_name": protected["feature_name"],
        "store_fingerprint": features.fingerprint, "stores": protected["stores"],
        "versions": _versions(), "metrics": metrics,
        "warning": "joblib files are pickles, which run code when loaded: load only models you made or trust; "
                   "share the .skops file instead",
    }
    _write_card(path, card)
    return path


def _read_card(path: Path) -> dict:
    cpath = card_path(path)
    if not cpath.is_file():
        raise FeatxError(f"{path}: its card {cpath.name} is missing; featx loads a model only beside the card it "
                         "was saved with (a model file alone may run code when loaded); re-save the model with "
                         "`featx classify --save`")
    try:
        card = json.loads(cpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FeatxError(f"{cpath}: not a valid model card ({exc.msg}, line {exc.lineno}); restore it or re-save "
                         "the model") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise FeatxError(f"{cpath}: cannot read the model card ({exc.__class__.__name__}); restore it or re-save "
                         "the model") from None
    if not isinstance(card, dict) or card.get("featx_model") != CARD_VERSION:
        version = card.get("featx_model") if isinstance(card, dict) else None
        raise FeatxError(f"{cpath}: not a featx model card (version {version!r}); restore it or re-save the model")
    return card


def _skops_types(path: Path, data: bytes) -> list[str]:
    """The types of a .skops file outside skops' defaults; refuses any outside :data:`SKOPS_TRUSTED`."""
    sio = require_skops()
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a damaged zip or schema: the file, not featx, is at fault
        raise FeatxError(f"{path}: not a readable .skops file ({exc.__class__.__name__}); re-export it with "
                         "`featx classify --save --skops`") from None
    refused = sorted(t for t in types if t not in SKOPS_TRUSTED)
    if refused:
        raise FeatxError(f"{path}: refusing to load: it holds type(s) outside featx's allow-list: "
                         f"{', '.join(refused)}; featx loads only the featx, scikit-learn, numpy and xgboost types "
                         "its heads are made of")
    return types


def _check_bundle(bundle, card: dict, path: Path) -> None:
    """The file holds a featx model whose classes, features and settings are those of its card."""
    if not (isinstance(bundle, dict) and bundle.get("featx_model") == CARD_VERSION and "model" in bundle
            and all(k in bundle for k in BUNDLE_KEYS)):
        raise FeatxError(f"{path}: holds no featx model with its class names (saved by an older featx?); "
                         "re-save it with `featx classify --save`")
    for key in BUNDLE_KEYS:
        if _plain(card.get(key)) != _plain(bundle[key]):
            raise FeatxError(f"{card_path(path)}: {key} is {card.get(key)!r} in the card but {bundle[key]!r} in "
                             f"{path.name}; the card was edited: restore it or re-save the model")
    fitted = getattr(bundle["model"], "classes_", None)
    if fitted is None or not set(np.asarray(fitted).tolist()) <= set(range(len(bundle["classes"]))):
        raise FeatxError(f"{path}: the pipeline's classes do not index the {len(bundle['classes'])} class names "
                         "stored with it; re-save the model")


def _load_bundle(path) -> tuple[dict, dict]:
    """``(bundle, card)`` of a model file, after every check (card, sha256, allow-list, classes)."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"{path}: no such model file; save one with `featx classify ... --save`")
    card = _read_card(path)
    want = card.get("sha256")
    if not isinstance(want, str) or not want:
        raise FeatxError(f"{card_path(path)} records no sha256 of {path.name}; refusing to load a model file that "
                         "cannot be checked (loading it may run code); re-save the model with `featx classify --save`")
    data = path.read_bytes()  # hashed and loaded from the same bytes
    if hashlib.sha256(data).hexdigest() != want:
        raise FeatxError(f"{path}: the file changed after it was saved (sha256 differs from {card_path(path).name}); "
                         "refusing to load it; re-save the model")
    fmt = "skops" if path.suffix == ".skops" else "joblib"
    if card.get("format", fmt) != fmt:
        raise FeatxError(f"{path}: a {path.suffix} file but its card says format {card.get('format')!r}; "
                         "restore the model's own card")
    types = _skops_types(path, data) if fmt == "skops" else None
    try:
        bundle = require_skops().loads(data, trusted=types) if fmt == "skops" else joblib.load(io.BytesIO(data))
    except Exception as exc:  # whatever a damaged file raises while it is decoded
        raise FeatxError(f"{path}: damaged model file ({exc.__class__.__name__}: {str(exc)[:80]}); "
                         "re-save the model") from None
    _check_bundle(bundle, card, path)
    return bundle, card


def load_model(path) -> tuple[object, dict]:
    """The fitted pipeline of a saved model (.joblib or .skops) and its card, after checking both.

    Refused with :class:`FeatxError` (one line) when the card is missing, damaged, has no sha256 or one that
    does not match the file, disagrees with the classes or settings stored in the file, or when a .skops
    file holds a type outside :data:`SKOPS_TRUSTED`. The pipeline predicts indices into ``card["classes"]``.
    """
    bundle, card = _load_bundle(path)
    return bundle["model"], card


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


def _requested_rows(card: dict, store_spec: str, split: str | None, unfinished: str):
    """Every requested row of the store(s): ``(paths, errors, X)``; ``X`` holds the rows whose error is ""."""
    from featx.store import load_features, sample_table, store_settings

    stores = [p for p in str(store_spec).split("+") if p]
    check_store_matches(card, [store_settings(p) for p in stores], stores)
    tables = [sample_table(p) for p in stores]
    first = tables[0]
    keep = first["split"] == split if split else np.ones(len(first["path"]), dtype=bool)
    if split and not keep.any():
        raise FeatxError(f"{stores[0]}: no rows of split {split!r}; the store has "
                         f"{', '.join(sorted(set(first['split']))) or 'none'}")
    paths = [str(p) for p in first["path"][keep]]
    errors = [""] * len(paths)
    for store, table in zip(stores, tables):
        row_of = {q: i for i, q in enumerate(table["path"])}
        for j, q in enumerate(paths):
            i = row_of.get(q)
            if errors[j]:
                continue
            if i is None:
                errors[j] = f"not in {store} (fused stores hold other samples)"
            elif table["error"][i]:
                errors[j] = f"not extracted: {table['error'][i]}"
            elif not table["done"][i]:
                errors[j] = unfinished
    blocks, names = [], []
    for store, entry in zip(stores, card["stores"]):
        wanted = [j for j, e in enumerate(errors) if not e]
        if not wanted:
            break
        # unfinished rows already carry their error above: predict the finished ones
        features = load_features(store, "+".join(entry.get("taps") or []) or None, allow_partial=True)
        names.append(features.name)
        row_of = {q: i for i, q in enumerate(features.paths)}
        for j in wanted:
            if paths[j] not in row_of:
                errors[j] = f"not extracted: not among the finished rows of {store}"
        blocks.append((features.X, row_of))
    ok = [j for j, e in enumerate(errors) if not e]
    if not ok:
        return paths, errors, None
    X = np.hstack([Xs[[row_of[paths[j]] for j in ok]] for Xs, row_of in blocks])
    name = "+".join(names)
    if name != card.get("feature_name") or X.shape[1] != card.get("n_features"):
        raise FeatxError(f"{store_spec}: gives features {name} ({X.shape[1]} columns) but the model takes "
                         f"{card.get('feature_name')} ({card.get('n_features')} columns)")
    return paths, errors, X


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
                seed=int(seed) if seed is not None and int(seed) >= 0 else 0, progress=progress, strict=False)
        paths.append(str(out))
    return "+".join(paths)


def _decide(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Predicted class indices, and per row the probability (or decision value) of the predicted class."""
    pred = np.asarray(model.predict(X))
    col = np.searchsorted(np.asarray(model.classes_), pred)
    rows = np.arange(len(pred))
    if hasattr(model, "predict_proba"):
        return pred, model.predict_proba(X)[rows, col], "probability"
    scores = np.asarray(model.decision_function(X))
    if scores.ndim == 1:  # binary: the decision value is that of classes_[1]
        return pred, np.where(col == 1, scores, -scores), "score"
    return pred, scores[rows, col], "score"


def predict(model_path, data=None, *, split: str | None = None, store: str | None = None,
            out="predictions.csv", device: str = "auto", batch_size: int = 32, workers: int | None = None,
            cache=None, progress: bool = False, strict: bool = False) -> dict:
    """Predict every image of ``data`` (optionally one ``split``) with a saved model; write a CSV.

    With ``store`` the features are read from that store (or ``a.h5+b.h5``), which must have been extracted
    with the card's settings; otherwise they are extracted from ``data`` with the card's backbone, weights,
    taps and input size into ``cache`` (a temporary folder when None).

    The CSV has one row per requested image: ``path,prediction,probability,error`` (the probability of the
    predicted class) for models with ``predict_proba``; ``path,prediction,probability,score,error`` with an
    empty probability and the decision value of the predicted class for the others. Images that could not
    be predicted (unreadable, or rows of the store that are unfinished or failed) have an empty prediction
    and the reason in ``error``. With ``strict`` any such row raises :class:`FeatxError` after the CSV is
    written; a request where no image could be predicted always does.

    Returns ``{"out", "rows", "predicted", "failed", "errors" (first (path, error) pairs), "counts", "output",
    "source", "model"}``.
    """
    model, card = load_model(model_path)
    if store is None and data is None:
        raise FeatxError("give the images to predict (DATA) or a feature store (--store)")
    if store is not None:
        paths, errors, X = _requested_rows(card, store, split, UNFINISHED)
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
            paths, errors, X = _requested_rows(card, spec, None, "not extracted: extraction was interrupted; "
                                                                 "run the same command again")
        finally:
            if tmp is not None:
                tmp.cleanup()
        source = str(data)
    if not paths:
        raise FeatxError(f"{source}: no images to predict" + (f" in split {split!r}" if split else ""))
    classes = list(card["classes"])
    ok = [j for j, e in enumerate(errors) if not e]
    output = card.get("output") or ("probability" if hasattr(model, "predict_proba") else "score")
    predicted: dict[int, tuple[str, float]] = {}
    if ok:
        pred, value, output = _decide(model, X)
        predicted = {j: (classes[int(k)], float(v)) for j, k, v in zip(ok, pred, value)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "prediction", "probability"] + (["score"] if output == "score" else []) + ["error"])
        for j, (p, e) in enumerate(zip(paths, errors)):
            label, v = predicted.get(j, ("", None))
            if output == "probability":
                values = ["" if v is None else f"{v:.6f}"]
            else:
                values = ["", "" if v is None else f"{v:.6g}"]
            writer.writerow([p, label, *values, e])
    failed = [(p, e) for p, e in zip(paths, errors) if e]
    counts = {c: sum(1 for label, _ in predicted.values() if label == c) for c in classes}
    summary = {"out": out, "rows": len(paths), "predicted": len(predicted), "failed": len(failed),
               "errors": failed[:5], "counts": counts, "output": output, "source": source, "model": card.get("file")}
    if failed and (strict or not predicted):
        p, e = failed[0]
        raise FeatxError(f"{len(failed)} of {len(paths)} requested image(s) could not be predicted (first: {p}: {e}); "
                         f"{out} holds every row with the reason in its error column"
                         + ("" if predicted else "; nothing was predicted"))
    return summary


def require_skops():
    """The ``skops.io`` module, or :class:`FeatxError` saying how to install it."""
    try:
        import skops.io as sio
    except ImportError:
        raise FeatxError("skops is not installed (a featx dependency); `pip install 'skops>=0.10'` to save and "
                         "load models in the format that loads without running code") from None
    return sio


def export_skops(model_path, out=None) -> Path:
    """Write a saved model in the skops format (loads without running code) with its own card; returns its path.

    The .skops card is the model's card with this file's name, format and sha256. Refused when the model holds
    a type outside :data:`SKOPS_TRUSTED` (featx could not load the export).
    """
    sio = require_skops()
    bundle, card = _load_bundle(model_path)
    out = Path(out) if out else Path(model_path).with_suffix(".skops")
    data = sio.dumps(bundle)
    _skops_types(out, data)
    _atomic(out, lambda tmp: tmp.write_bytes(data))
    _write_card(out, {**card, "file": out.name, "format": "skops", "sha256": hashlib.sha256(data).hexdigest(),
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "warning": "skops format: loads without running code (featx allows only its own heads' "
                                 "types)"})
    return out
