"""The result rows of a finished hybrid run: every head on each fold's tuned features, and the tuned networks'
own softmax, all scored on the same outer subject folds (see :mod:`featx.workflows.hybrid`)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from featx.errors import FeatxError
from featx.evaluation import Hybrid, Protocol, compute_metrics, roc_points, run_grid, summarize_folds
from featx.evaluation.protocols import hybrid_label
from featx.heads import HeadSettings
from featx.provenance import rows_mark
from featx.results import NetworkRecord, ResultRow, summary_scores
from featx.store import load_features, store_settings

__all__ = ["head_rows", "network_row", "protocol_label"]


def protocol_label(n_folds: int) -> str:
    return hybrid_label(n_folds)


def _checkpoints(records: list[dict]) -> list[str]:
    """Each fold's scored checkpoint, relative to the run folder."""
    return [f"fold_{r['fold']}/{r['checkpoint']}" for r in records]


def _stacked_features(out: Path, records: list[dict], folds, collection, taps: Sequence[str], backbone: str):
    """The folds' feature blocks (train rows, then test rows) stacked into one FeatureSet, and the protocol
    folds that keep each fold training and testing inside its own block."""
    parts, protocol_folds, offset = [], [], 0
    for (train, test), record in zip(folds, records):
        store = out / f"fold_{record['fold']}" / record["store"]
        fs = load_features(store, list(taps), labelled=True)
        where = {p: i for i, p in enumerate(fs.paths)}
        want = [collection.samples[i].path for i in train] + [collection.samples[i].path for i in test]
        missing = [p for p in want if p not in where]
        if missing:
            raise FeatxError(f"{store}: {len(missing)} row(s) of fold {record['fold']} have no features "
                             f"(first {missing[0]}); delete {store.parent} to recompute that fold")
        parts.append(fs.select(np.array([where[p] for p in want])))
        protocol_folds.append((offset + np.arange(len(train)), offset + len(train) + np.arange(len(test))))
        offset += len(want)
    first = parts[0]
    digest = hashlib.sha256("".join(p.fingerprint for p in parts).encode()).hexdigest()
    per_row = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(first)
               if all(isinstance(getattr(p, f.name), np.ndarray) and len(getattr(p, f.name)) == len(p) for p in parts)}
    stacked = replace(first, **per_row, name=f"{backbone}[fine-tuned per fold]/{'+'.join(taps)}",
                      settings=[s for p in parts for s in p.settings], fingerprint=digest,
                      stores=[s for p in parts for s in p.stores], store_taps=[t for p in parts for t in p.store_taps])
    return stacked, protocol_folds


def head_rows(out: Path, records: list[dict], folds, collection, taps: Sequence[str], heads: list[str], *,
              backbone: str, pos: int, settings: HeadSettings, jobs: int | None, note: str,
              on_fit=None) -> list[ResultRow]:
    """Every head on every fold's own tuned features (``taps`` fused), through the grid `featx compare` runs
    (``on_fit``: its progress, :func:`featx.evaluation.run_grid`)."""
    stacked, protocol_folds = _stacked_features(out, records, folds, collection, taps, backbone)
    seed = settings.seed
    protocol = Hybrid(len(folds), seed).named(Protocol("hybrid", "", False, protocol_folds, seed, note,
                                                       stacked.subjects))
    rows = run_grid(stacked, heads, protocol, positive=pos, settings=settings, jobs=jobs, on_fit=on_fit)
    return [replace(row, settings={**row.settings, "checkpoints": _checkpoints(records)}) for row in rows]


def network_row(out: Path, records: list[dict], collection, folds, *, backbone: str, pos: int, seed: int,
                early_stopping: str | None, finetune_options: dict) -> ResultRow:
    """The tuned networks' own softmax on the same outer folds, summarised as the head rows are; marked as the
    head rows are when the weights it started from are of unknown provenance (or stated to be unseen)."""
    classes = list(collection.classes)
    subjects_of = {s.path: s.subject for s in collection.samples}
    fold_metrics, trues, preds, scores, subj, fold_of, paths = [], [], [], [], [], [], []
    for k, record in enumerate(records):
        net = record["network"]
        y_true = np.asarray(net["y_true"], dtype=np.int64)
        proba = np.asarray(net["proba"], dtype=np.float64)
        y_pred = proba.argmax(1)
        fold_subjects = np.array([subjects_of[p] for p in net["paths"]], dtype=object)
        fold_metrics.append(compute_metrics(y_true, y_pred, proba[:, pos], classes=classes, positive=pos,
                                            subjects=fold_subjects))
        trues.append(y_true), preds.append(y_pred), scores.append(proba[:, pos]), subj.append(fold_subjects)
        fold_of.append(np.full(len(y_true), k))
        paths.extend(str(p) for p in net["paths"])
    pooled = {"y_true": np.concatenate(trues), "y_pred": np.concatenate(preds), "y_score": np.concatenate(scores),
              "classes": classes, "positive": pos, "subjects": np.concatenate(subj),
              "fold": np.concatenate(fold_of)}
    summary = summarize_folds(fold_metrics, pooled=pooled)
    return ResultRow(
        name=f"{backbone} fine-tuned" + (" (early-stopped on inner val)" if early_stopping else ""),
        backbone=backbone, tap="logits", head=None, protocol="hybrid", protocol_label=protocol_label(len(folds)),
        protocol_short=f"hybrid {len(folds)}-fold",
        image_level=False, n_folds=len(folds), n_train=int(round(np.mean([len(a) for a, _ in folds]))),
        n_test=int(len(pooled["y_true"])),
        n_subjects=len({collection.samples[int(i)].subject for a, b in folds for i in np.concatenate([a, b])}),
        classes=classes, positive=classes[pos], confusion=summary["confusion"], ci_unit=summary.get("ci_unit"),
        interval=summary.get("interval"),
        per_subject_accuracy=summary.get("per_subject_accuracy"),
        roc=roc_points(pooled["y_true"] == pos, pooled["y_score"], folds=pooled["fold"]),
        predictions={"path": paths, "subject": [str(s) for s in pooled["subjects"]],
                     "fold": (pooled["fold"] + 1).tolist(), "y_true": [classes[i] for i in pooled["y_true"]],
                     "y_pred": [classes[i] for i in pooled["y_pred"]], "score": pooled["y_score"].tolist()},
        fit_seconds=round(sum(r["finetune_seconds"] for r in records), 3),
        network=NetworkRecord(scored_epochs=[r["scored_epoch"] for r in records],
                              train_accuracy_last_epoch=[r["train_acc_last_epoch"] for r in records]),
        settings={"finetune": finetune_options, "seed": seed, "checkpoints": _checkpoints(records)},
        scores=summary_scores(summary),
        weights_provenance=rows_mark([store_settings(out / f"fold_{r['fold']}" / r["store"]) for r in records]),
    )
