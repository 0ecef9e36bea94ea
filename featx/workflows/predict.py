"""Predict images with a saved model: from feature stores made with the model's settings, or by extracting
the features of new images with the settings in the model's card. One CSV row per requested image."""
from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx import csvfiles
from featx.data import IMAGE_EXTENSIONS
from featx.data.content import check_files, name_some
from featx.errors import FeatxError, FeatxWarning, arg, speak
from featx.extract import extract
from featx.files import sha256_file, write_or_keep
from featx.persist import card_path, check_store_matches, load_model
from featx.store import SCHEMA_VERSION, load_features, sample_table, store_settings
from featx.store.hints import extracting

# the error cell of a row not predicted (templates, featx.errors.speak: the CLI names its command)
UNFINISHED = f"not extracted: the store is unfinished; run {extracting()} again to fill it"
INTERRUPTED = "not extracted: extraction was interrupted; run the same command again"

__all__ = ["predict"]


def _store_list(store) -> list[Path]:
    """One store path or several (fused, in the card's order)."""
    stores = [store] if isinstance(store, (str, Path)) else list(store)
    return [Path(s) for s in stores]


def _check_out(out: Path, model_path: Path, card: dict, data, stores: list[Path]) -> None:
    """Refuse an ``out`` that is a folder, or any file predict reads (model, card, data, store, weights)."""
    if out.is_dir():
        raise FeatxError(f"{arg('out', out)} is a folder; give the CSV file to write, e.g. "
                         f"{arg('out', out / 'predictions.csv')}")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise FeatxError(f"{arg('out', out)}: {above} is a file, not a folder; give a CSV path in a folder")
    if out.suffix.lower() in IMAGE_EXTENSIONS:
        raise FeatxError(f"{arg('out', out)} names an image; give the CSV file to write, e.g. "
                         f"{arg('out', out.with_suffix('.csv'))}")
    inputs = [("the model", model_path), ("the model's card", card_path(model_path))]
    inputs += [("a store it reads", p) for p in stores]
    inputs += [("the weights of the model's features", Path(e["weights"])) for e in card.get("stores") or []
               if e.get("weights_kind") == "file" and e.get("weights")]
    target = out.resolve()
    if data is not None:
        inputs.append(("the data", Path(data)))
        if Path(data).is_dir() and target.is_relative_to(Path(data).resolve()) and target.name.endswith("_labels.csv"):
            inputs.append(("a labels file of the data", out))  # C-NMC's prelim labels (CNMC_PRELIM_LABELS) and kin
    for what, path in inputs:
        if path.resolve() == target:
            raise FeatxError(f"{arg('out', out)} is {what} ({path}); predictions would replace it: write them to "
                             f"another file, e.g. {arg('out', 'predictions.csv')}")


def _check_files(store: Path, settings: dict, table: dict, rows: list[int]) -> None:
    """Refuse a store whose rows ``rows`` (to predict) hold features of images changed since they were
    extracted; say so when that cannot be checked (an older featx's store, images no longer there)."""
    if table["file"] is None:
        warnings.warn(FeatxWarning(f"{store} was written by an older featx: its rows record no content of their "
                                   "image files, so featx cannot tell whether the images changed since they were "
                                   "extracted; predicting from its stored features"), stacklevel=4)
        return
    root, paths = str(settings.get("data_root") or ""), table["path"][rows]
    check = check_files(root, paths, table["file"][rows])
    if check.changed.size:
        raise FeatxError(f"{store}: {check.changed.size} image(s) changed since they were extracted "
                         f"({name_some(paths, check.changed)}), so its features of them are stale; run the same "
                         f"{extracting()} into {store} again (it recomputes them), then predict")
    if check.missing.size or check.unknown.size:
        n = check.missing.size + check.unknown.size
        warnings.warn(FeatxWarning(f"{store}: featx cannot tell whether {n} of the {len(rows)} images changed since "
                                   f"they were extracted (first: {paths[np.union1d(check.missing, check.unknown)[0]]}"
                                   f"{', not under ' + root if check.missing.size else ''}); predicting them from "
                                   "the stored features"), stacklevel=4)


def _requested_rows(card: dict, stores: list[Path], split: str | None, unfinished: str, extracted: bool = False):
    """Every requested row of the store(s): ``(paths, errors, X)``; ``X`` holds the rows whose error is "".

    ``extracted``: the stores were just extracted for the model (else the user's stores, whose rows' image
    files are compared with those they were extracted from)."""
    settings = [store_settings(p) for p in stores]
    check_store_matches(card, settings, [str(p) for p in stores], extracted=extracted)
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
    for store, table, settings_of in ([] if extracted else zip(stores, tables, settings)):
        row_of = {q: i for i, q in enumerate(table["path"])}
        _check_files(store, settings_of, table, [row_of[paths[j]] for j, e in enumerate(errors) if not e])
    blocks, names = [], []
    for store, entry in zip(stores, card["stores"]):
        wanted = [j for j, e in enumerate(errors) if not e]
        if not wanted:
            break
        # unfinished rows already carry their error above: predict the finished ones, labelled or not
        features = load_features(store, entry.get("taps") or None, allow_partial=True, labelled=None)
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
        raise FeatxError(f"{', '.join(map(str, stores))}: gives features {name} ({X.shape[1]} columns) but the model "
                         f"takes {card.get('feature_name')} ({card.get('n_features')} columns)")
    return paths, errors, X


def _extract_for_model(card: dict, data, split: str | None, cache_dir: Path, *, device: str, batch_size: int,
                       workers: int | None, on_progress=None) -> list[Path]:
    """Extract ``data`` (one ``split``) once per store of the card, with that store's settings; the stores."""
    paths = []
    for i, entry in enumerate(card["stores"]):
        weights = entry.get("weights") or "none"
        if entry.get("weights_kind") == "file" and not Path(weights).is_file():
            raise FeatxError(f"the model's features came from weights file {weights}, which is missing; "
                             f"put it back or extract a store yourself and pass it as {arg('store')}")
        if entry.get("weights_kind") == "file" and entry.get("weights_sha256") and \
                sha256_file(weights) != entry["weights_sha256"]:
            raise FeatxError(f"{weights}: the weights file the model's features came from changed since the model "
                             f"was trained (its sha256 is not the {entry['weights_sha256'][:12]}... that "
                             f"{card.get('file')}'s card records); put the original file back, or train a model on "
                             "features of this one")
        seed = entry.get("weights_seed")
        # the schema version too: a cache store of an older featx (rows without content) is not resumed
        key = hashlib.sha256(json.dumps([str(Path(data).resolve()), split, entry, SCHEMA_VERSION], sort_keys=True,
                                        default=str).encode()).hexdigest()[:12]
        out = cache_dir / f"{i}-{entry.get('backbone')}-{key}.h5"
        extract(data, out, backbone=entry["backbone"], weights=weights, taps=entry.get("taps") or None,
                image_size=entry.get("input_size"), splits=[split] if split else None, device=device,
                batch_size=batch_size, workers=workers, dtype=entry.get("dtype") or "float32",
                seed=int(seed) if seed is not None and int(seed) >= 0 else 0, on_progress=on_progress, strict=False,
                pool=entry.get("pooling") or "avg")
        paths.append(out)
    return paths


def _decide(pipeline, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Predicted class indices, and per row the probability (or decision value) of the predicted class."""
    pred = np.asarray(pipeline.predict(X))
    col = np.searchsorted(np.asarray(pipeline.classes_), pred)
    rows = np.arange(len(pred))
    if hasattr(pipeline, "predict_proba"):
        return pred, pipeline.predict_proba(X)[rows, col], "probability"
    scores = np.asarray(pipeline.decision_function(X))
    if scores.ndim == 1:  # binary: the decision value is that of classes_[1]
        return pred, np.where(col == 1, scores, -scores), "score"
    return pred, scores[rows, col], "score"


def _write_csv(out: Path, paths: list[str], errors: list[str], predicted: dict, output: str) -> None:
    """The CSV, whole or not at all (a full disk keeps the earlier file); no cell a spreadsheet would run."""
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csvfiles.writer(fh)
            writer.writerow(["path", "prediction", "probability"] + (["score"] if output == "score" else [])
                            + ["error"])
            for j, (p, e) in enumerate(zip(paths, errors)):
                label, v = predicted.get(j, ("", None))
                if output == "probability":
                    values = ["" if v is None else f"{v:.6f}"]
                else:
                    values = ["", "" if v is None else f"{v:.6g}"]
                writer.writerow([p, label, *values, e])

    write_or_keep(out, write)


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` returns."""
    out: Path                          # the CSV written
    rows: int                          # requested images (CSV rows)
    predicted: int                     # of which predicted
    failed: int                        # of which not (the reason in the CSV's error column)
    errors: list[tuple[str, str]]      # the first (path, error) pairs
    counts: dict[str, int]             # predictions per class
    output: str                        # "probability" or "score": the CSV's value column
    source: str                        # the data folder or the store(s) read
    model: str | None                  # the model's file name (from its card)


def predict(model_path, data=None, *, split: str | None = None,
            store: str | Path | Sequence[str | Path] | None = None, out="predictions.csv", device: str = "auto",
            batch_size: int = 32, workers: int | None = None, cache=None, on_progress=None,
            strict: bool = False, trust_pickle: bool = False) -> PredictResult:
    """Predict every image of ``data`` (optionally one ``split``) with a saved model; write a CSV.

    With ``store`` (one path, or a list for a model trained on fused stores) the features are read from the
    store(s), which must have been extracted with the card's settings; otherwise they are extracted from
    ``data`` with the card's backbone, weights, taps and input size into ``cache`` (a temporary folder when
    None). ``on_progress(done, total)`` follows the extraction of ``data``.

    The CSV has one row per requested image: ``path,prediction,probability,error`` (the probability of the
    predicted class) for models with ``predict_proba``; ``path,prediction,probability,score,error`` with an
    empty probability and the decision value of the predicted class for the others. Images that could not
    be predicted (unreadable, or rows of the store that are unfinished or failed) have an empty prediction
    and the reason in ``error``. With ``strict`` any such row raises :class:`FeatxError` after the CSV is
    written; a request where no image could be predicted always does.

    Images changed since their features were extracted: a ``cache`` store recomputes them (saying how many);
    a ``store`` given is the user's and is not written: refused, naming the images and the fix (extract into
    it again). Rows of a store of an older featx, or whose images are no longer there, cannot be checked
    (warned). ``out`` may not be a folder, an image name, or a file predict reads (model, card, data, store,
    weights). A .joblib model loads only with ``trust_pickle`` (:func:`featx.persist.load_model`).

    Returns a :class:`PredictResult`.
    """
    pipeline, card = load_model(model_path, trust_pickle=trust_pickle)
    if store is None and data is None:
        raise FeatxError(f"give the images to predict ({arg('data')}) or a feature store ({arg('store')})")
    out = Path(out)
    _check_out(out, Path(model_path), card, data, _store_list(store) if store is not None else [])
    if store is not None:
        stores = _store_list(store)
        paths, errors, X = _requested_rows(card, stores, split, speak(UNFINISHED))
        source = ", ".join(map(str, stores))
    else:
        folder = tempfile.TemporaryDirectory(prefix="featx-predict-") if cache is None else nullcontext(cache)
        with folder as cache_dir:
            cache_dir = Path(cache_dir)
            cache_dir.mkdir(parents=True, exist_ok=True)
            stores = _extract_for_model(card, data, split, cache_dir, device=device, batch_size=batch_size,
                                        workers=workers, on_progress=on_progress)
            paths, errors, X = _requested_rows(card, stores, None, INTERRUPTED, extracted=True)
        source = str(data)
    if not paths:
        raise FeatxError(f"{source}: no images to predict" + (f" in split {split!r}" if split else ""))
    classes = list(card["classes"])
    ok = [j for j, e in enumerate(errors) if not e]
    output = card.get("output") or ("probability" if hasattr(pipeline, "predict_proba") else "score")
    predicted: dict[int, tuple[str, float]] = {}
    if ok:
        pred, value, output = _decide(pipeline, X)
        predicted = {j: (classes[int(k)], float(v)) for j, k, v in zip(ok, pred, value)}
    _write_csv(out, paths, errors, predicted, output)
    failed = [(p, e) for p, e in zip(paths, errors) if e]
    counts = {c: sum(1 for label, _ in predicted.values() if label == c) for c in classes}
    summary = PredictResult(out=out, rows=len(paths), predicted=len(predicted), failed=len(failed),
                            errors=failed[:5], counts=counts, output=output, source=source, model=card.get("file"))
    if failed and (strict or not predicted):
        p, e = failed[0]
        raise FeatxError(f"{len(failed)} of {len(paths)} requested image(s) could not be predicted (first: {p}: {e}); "
                         f"{out} holds every row with the reason in its error column"
                         + ("" if predicted else "; nothing was predicted"))
    return summary
