"""Saved heads ("models"): a fitted pipeline with its class names in one file, and a JSON card beside it.

``models/vgg16-fc7-svm.joblib`` holds a small dict: the pipeline fitted on all training rows, the class names,
the positive class, the number of features, the head and the extraction settings of its features.
``vgg16-fc7-svm.json`` beside it says the same for people (plus the metrics, versions and the file's sha256).
``vgg16-fc7-svm.skops`` (with its own card ``vgg16-fc7-svm.skops.json``) is the same model in the skops
format, which loads without running code: the format to share models in.

A model loads only when its card is present, records the sha256 of the model file and that sha256 matches;
a .skops file loads only when every type it holds is on featx's allow-list (:data:`SKOPS_TRUSTED`). The
settings that decide a prediction (classes, positive class, features) are checked between the file and its
card, so an edited card cannot flip the labels. joblib files are pickles, which run code when loaded: the
sha256 only proves the file is the one its card describes, not who wrote it, so featx loads a .joblib file
only when asked to trust it (``trust_pickle``, ``featx predict --trust-pickle``).

Predicting new images with a saved model is a workflow: :func:`featx.workflows.predict.predict`.
"""
from __future__ import annotations

import hashlib
import io
import json
import platform
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
import sklearn

import featx
from featx.errors import FeatxError, arg
from featx.evaluation import HELD_OUT_SPLITS, every_row_has_subject, resolve_positive
from featx.files import atomic_json, atomic_write, json_shaped, sha256_file
from featx.heads import fit_params, get_head, head_params, make_head, preprocess_text
from featx.results import METRICS, ResultRow
from featx.store.schema import LEGACY_SETTINGS

CARD_VERSION = 1
# Extraction settings a store must share with the model's card (compared in this order).
MATCH_KEYS = ("backbone", "weights_kind", "weights", "weights_sha256", "weights_seed", "input_size", "mean", "std",
              "resize", "pooling",   # pooling: graph-node taps of models resolved by name (extract --pool)
              "exif_orientation")    # "applied" since featx turns images upright; older stores have none
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
# How to make a model again, for refusals (`featx classify --save` on the command line).
RESAVE = f"re-save the model (classify with {arg('save', True)})"

__all__ = ["CARD_VERSION", "SKOPS_TRUSTED", "card_path", "check_store_matches", "export_skops", "fit_final",
           "load_model", "model_name", "require_skops", "save_model"]


def _versions() -> dict:
    """Versions of what made the model (torch and xgboost from package metadata: nothing heavy is imported)."""
    out = {"featx": featx.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "scikit-learn": sklearn.__version__, "joblib": joblib.__version__}
    for dist in ("torch", "xgboost", "h5py", "skops"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            pass
    return out


def model_name(features, head: str) -> str:
    """``vgg16-fc7-svm`` (file-name safe) for a feature set and head."""
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", f"{features.backbone}-{features.tap}-{head}")


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


def fit_final(features, head: str, *, preprocess=("standard",), class_weight=None, seed: int = 0,
              device: str = "auto", params: dict | None = None, eval_set: str | None = None):
    """Fit the evaluated pipeline (same head, parameters, preprocessing and seed as
    :func:`featx.evaluation.evaluate`) on the rows its protocol trains on: every labelled row outside the
    held-out phases (prelim/final/test) and outside ``eval_set``. With ``eval_set`` it is the very model
    that was scored on that split. Heads without ``predict_proba`` stay so (their score is the decision
    function). ``params``: this head's parameters (``{"C": 10}``). Returns ``(pipeline, n_train)``.
    """
    held_out = [*HELD_OUT_SPLITS, *([eval_set] if eval_set else [])]
    keep = (np.asarray(features.y) >= 0) & ~np.isin(np.asarray(features.splits).astype(str), held_out)
    if keep.sum() == 0:
        raise FeatxError("no labelled training rows to fit the model on (all rows are unlabelled or held out)")
    if len(np.unique(features.y[keep])) < 2:
        raise FeatxError("the training rows hold only one class; a model needs at least two")
    pipeline = make_head(head, preprocess=preprocess, class_weight=class_weight, seed=seed, device=device,
                         **(params or {}))
    subjects = np.asarray(features.subjects).astype(str)[keep] if len(features.subjects) else None
    groups = subjects if subjects is not None and every_row_has_subject(subjects) else None
    pipeline.fit(features.X[keep], features.y[keep], **fit_params(head, groups))
    return pipeline, int(keep.sum())


def _describe_output(pipeline) -> tuple[str, str]:
    """(``probability`` or ``score``, how it is made) for the card and the CSV."""
    if not hasattr(pipeline, "predict_proba"):
        return "score", "none: the CSV's score column is the decision function of the predicted class"
    return "probability", "predict_proba"


def _card_metrics(row: ResultRow | None) -> dict:
    """The card's ``metrics``: the protocol the model was scored under and every score (None when absent)."""
    if row is None:
        return {}
    out = {"protocol": row.protocol, "protocol_label": row.protocol_label, "image_level": row.image_level,
           "n_folds": row.n_folds}
    for m in METRICS:
        score = row.scores.get(m)
        for attr, suffix in (("mean", ""), ("std", "_std"), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
            out[f"{m}{suffix}"] = None if score is None else getattr(score, attr)
    return out


def save_model(pipeline, features, out_dir, *, head: str, n_train: int, preprocess=None, class_weight=None,
               seed: int = 0, params: dict | None = None, row: ResultRow | None = None,
               search: dict | None = None) -> Path:
    """Write ``out_dir/<backbone>-<tap>-<head>.joblib`` (the pipeline with its class names) and its JSON card.

    ``row`` is the result row the pipeline was evaluated as: the card records its protocol and scores.
    ``search``: how ``params`` were chosen by a parameter search (settings, chosen parameters, inner best
    score), recorded as the card's ``search``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{model_name(features, head)}.joblib"
    classes = [str(c) for c in features.classes]
    spec = get_head(head)
    protected = json_shaped({
        "classes": classes, "positive": classes[resolve_positive(classes, getattr(features, "positive", None))],
        "n_features": int(features.X.shape[1]), "head": spec.name, "feature_name": features.name,
        "stores": _store_parts(features),
    })
    atomic_write(path, lambda tmp: joblib.dump({"featx_model": CARD_VERSION, "model": pipeline, **protected}, tmp))
    output, how = _describe_output(pipeline)
    card = {
        "featx_model": CARD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": path.name, "format": "joblib", "sha256": sha256_file(path),
        "head": spec.name, "preprocess": preprocess_text(preprocess),
        "class_weight": class_weight if spec.class_weight else None, "params": params or {},
        "head_params": json_shaped(head_params(pipeline)), "seed": seed,
        "output": output, "probability": how,
        **{k: protected[k] for k in ("classes", "positive", "n_features")}, "n_train": n_train,
        "backbone": features.backbone, "tap": features.tap, "feature_name": protected["feature_name"],
        "store_fingerprint": features.fingerprint, "stores": protected["stores"],
        "versions": _versions(), "metrics": _card_metrics(row),
        **({"search": json_shaped(search)} if search is not None else {}),
        "warning": "joblib files are pickles, which run code when loaded: load only models you made or trust; "
                   "share the .skops file instead",
    }
    atomic_json(card_path(path), card)
    return path


def _read_card(path: Path) -> dict:
    cpath = card_path(path)
    if not cpath.is_file():
        raise FeatxError(f"{path}: its card {cpath.name} is missing; featx loads a model only beside the card it "
                         f"was saved with (a model file alone may run code when loaded); {RESAVE}")
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
        raise FeatxError(f"{path}: not a readable .skops file ({exc.__class__.__name__}); {RESAVE}") from None
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
        raise FeatxError(f"{path}: holds no featx model with its class names (a bare pipeline saved by an older "
                         f"featx, or not a featx model at all); {RESAVE}")
    for key in BUNDLE_KEYS:
        if json_shaped(card.get(key)) != json_shaped(bundle[key]):
            raise FeatxError(f"{card_path(path)}: {key} is {card.get(key)!r} in the card but {bundle[key]!r} in "
                             f"{path.name}; the card was edited: restore it or re-save the model")
    fitted = getattr(bundle["model"], "classes_", None)
    if fitted is None or not set(np.asarray(fitted).tolist()) <= set(range(len(bundle["classes"]))):
        raise FeatxError(f"{path}: the pipeline's classes do not index the {len(bundle['classes'])} class names "
                         "stored with it; re-save the model")


def _refuse_pickle(path: Path) -> None:
    """The refusal of a .joblib file loaded without ``trust_pickle``, pointing to the .skops beside it."""
    skops = path.with_suffix(".skops")
    instead = (f"use {skops.name} beside it instead" if skops.is_file() else
               f"use a .skops model (classify with {arg('save', True)} writes one beside the .joblib)")
    raise FeatxError(f"{path}: not loading a .joblib model without {arg('trust_pickle', True)}: it is a pickle, which "
                     "runs any code it holds when loaded, and its card's sha256 shows only that the two files belong "
                     f"together, not who wrote them; {instead}, or pass {arg('trust_pickle', True)} if you made this "
                     "file yourself")


def _load_bundle(path, trust_pickle: bool = False) -> tuple[dict, dict]:
    """``(bundle, card)`` of a model file, after every check (card, sha256, allow-list, classes); a .joblib
    file is unpickled only with ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"{path}: no such model file; save one with classify and {arg('save', True)}")
    card = _read_card(path)
    want = card.get("sha256")
    if not isinstance(want, str) or not want:
        raise FeatxError(f"{card_path(path)} records no sha256 of {path.name}; refusing to load a model file that "
                         f"cannot be checked (loading it may run code); {RESAVE}")
    data = path.read_bytes()  # hashed and loaded from the same bytes
    if hashlib.sha256(data).hexdigest() != want:
        raise FeatxError(f"{path}: the file changed after it was saved (sha256 differs from {card_path(path).name}); "
                         "refusing to load it; re-save the model")
    fmt = "skops" if path.suffix == ".skops" else "joblib"
    if card.get("format", fmt) != fmt:
        raise FeatxError(f"{path}: a {path.suffix} file but its card says format {card.get('format')!r}; "
                         "restore the model's own card")
    if fmt == "joblib" and not trust_pickle:
        _refuse_pickle(path)
    types = _skops_types(path, data) if fmt == "skops" else None
    try:
        bundle = require_skops().loads(data, trusted=types) if fmt == "skops" else joblib.load(io.BytesIO(data))
    except Exception as exc:  # whatever a damaged file raises while it is decoded
        raise FeatxError(f"{path}: damaged model file ({exc.__class__.__name__}: {str(exc)[:80]}); "
                         "re-save the model") from None
    _check_bundle(bundle, card, path)
    return bundle, card


def load_model(path, *, trust_pickle: bool = False) -> tuple[object, dict]:
    """The fitted pipeline of a saved model (.skops, or .joblib with ``trust_pickle``) and its card, after
    checking both.

    Refused with :class:`FeatxError` (one line) when the card is missing, damaged, has no sha256 or one that
    does not match the file, disagrees with the classes or settings stored in the file, or when a .skops
    file holds a type outside :data:`SKOPS_TRUSTED`. A .joblib file is a pickle: unpickling it runs whatever
    code it holds (the sha256 in its card does not stop a file whose card was written with it), so it is
    refused unless ``trust_pickle``; with it, after the same checks, it is unpickled (its code runs) and must
    then hold a featx model. The pipeline predicts indices into ``card["classes"]``.
    """
    bundle, card = _load_bundle(path, trust_pickle)
    return bundle["model"], card


def _setting_matches(have, want) -> bool:
    """A store's extraction setting equals the card's: numbers (and lists of them) to float precision, the
    rest as text, None and "" alike."""
    if isinstance(have, (list, tuple)) or isinstance(want, (list, tuple)):
        have, want = list(np.atleast_1d(have)), list(np.atleast_1d(want))
        if len(have) != len(want):
            return False
        try:
            return bool(np.allclose(np.asarray(have, dtype=float), np.asarray(want, dtype=float), rtol=1e-6,
                                    atol=1e-9))
        except (TypeError, ValueError):
            return [str(x) for x in have] == [str(x) for x in want]
    if have is None or want is None:
        return (have in (None, "")) and (want in (None, ""))
    return str(have) == str(want)


def check_store_matches(card: dict, settings: Sequence[dict], stores: Sequence[str], *, extracted: bool = False
                        ) -> None:
    """Refuse stores whose extraction settings differ from the card's, naming the first differing setting.

    ``extracted``: the stores were just extracted with the card's settings (predict without a store): the
    message then says that extracting now gives other features, not which (possibly temporary) file holds them.
    """
    expected = card.get("stores") or []
    if len(expected) != len(settings):
        raise FeatxError(f"the model was trained on {len(expected)} fused store(s) "
                         f"({card.get('feature_name')}); got {len(settings)}: {', '.join(map(str, stores))}")
    for want, have, store in zip(expected, settings, stores):
        for key in MATCH_KEYS:
            if key not in want:
                continue
            if key == "weights" and want.get("weights_kind") == "file":
                continue  # a checkpoint may live at another path; its sha256 decides
            value = have.get(key, LEGACY_SETTINGS.get(key))  # a store made before featx recorded the setting
            if not _setting_matches(value, want[key]) and extracted:
                raise FeatxError(f"{key} is {want[key]!r} in the model card ({card.get('file')}) but extracting with "
                                 f"the card's settings now gives {key}={value!r}: the weights or featx changed "
                                 "since the model was trained; restore them, or train the model again on features "
                                 "extracted now")
            if not _setting_matches(value, want[key]):
                raise FeatxError(f"{store}: {key} is {value!r} in the store but {want[key]!r} in the model "
                                 f"card ({card.get('file')}); features made with other settings do not fit the model: "
                                 f"extract with the model's settings, or predict without {arg('store')} to extract "
                                 "them")


def require_skops():
    """The ``skops.io`` module, or :class:`FeatxError` saying how to install it."""
    try:
        import skops.io as sio  # deferred: only .skops files need it, and a broken install must not stop joblib
    except ImportError:
        raise FeatxError("skops is not installed (a featx dependency); `pip install 'skops>=0.10'` to save and "
                         "load models in the format that loads without running code") from None
    return sio


def export_skops(model_path, out=None, *, trust_pickle: bool = False) -> Path:
    """Write a saved model in the skops format (loads without running code) with its own card; returns its path.

    The .skops card is the model's card with this file's name, format and sha256. Refused when the model holds
    a type outside :data:`SKOPS_TRUSTED` (featx could not load the export). A .joblib model is read only with
    ``trust_pickle`` (as :func:`load_model`).
    """
    sio = require_skops()
    bundle, card = _load_bundle(model_path, trust_pickle)
    out = Path(out) if out else Path(model_path).with_suffix(".skops")
    data = sio.dumps(bundle)
    _skops_types(out, data)
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    atomic_json(card_path(out), {**card, "file": out.name, "format": "skops",
                                 "sha256": hashlib.sha256(data).hexdigest(),
                                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "warning": "skops format: loads without running code (featx allows only its own "
                                            "heads' types)"})
    return out
