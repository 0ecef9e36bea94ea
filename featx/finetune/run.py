"""``finetune``: plan a run, train it, and write its result row, card and plots."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from featx import csvfiles, provenance, report
from featx.data import Collection
from featx.errors import FeatxError, arg
from featx.evaluation import compute_metrics, roc_points, summarize_folds
from featx.files import atomic_json, is_disk_full
from featx.finetune import checkpoint as ckpt
from featx.finetune.events import Callback, RunSummary
from featx.finetune.loop import Trainer
from featx.finetune.plan import plan_run
from featx.finetune.settings import RESOLVED, FinetuneSettings
from featx.keywords import Slot, typed_arguments
from featx.report.subjects import with_predictions
from featx.results import NetworkRecord, ResultRow, jsonable, read_json, summary_scores


def finetune(data: str | Path | Collection, out: str | Path, settings: FinetuneSettings | None = None, *,
             backbone: str = "vgg16", val: str = "subject", positive: str | None = None, device: str = "auto",
             workers: int | None = None, seed: int = 0, resume: bool = False, callback: Callback | None = None,
             strict: bool = False, keep: str = "best", **options) -> RunSummary:
    """Fine-tune ``backbone`` on the labelled images of ``data``; write the run folder ``out``; return a summary.

    ``settings`` (:class:`featx.finetune.FinetuneSettings`): what the network trains with (weights, preset, epochs,
    lr, batch size, optimizer, ..., early stopping); its fields may be given as keywords instead (``finetune(data,
    out, backbone="cnn", epochs=3)``); a keyword that is no field, or one also set in ``settings``, is a TypeError.
    Settings left ``None`` come from ``preset`` (``"paper"``: the reference study) or from the backbone's defaults
    (``default_settings``); an explicit value always wins, and ``settings.json`` records the values used and where
    each came from. ``val``: ``"subject"`` (a subject-grouped holdout, one fold of the 5-fold protocol of
    ``classify``), ``"image"`` (image-level holdout; leaks subjects, marked as such), a split name such as
    ``"fold_2"`` (validate on it, train on the other training folds) or ``"prelim"`` (train on all training folds,
    validate on C-NMC's preliminary test phase). ``early_stopping`` names the validation metric to watch (``loss``,
    ``accuracy``, ``f1``, ``f1_weighted``, ...; ``best.pt`` is the best epoch by it, by validation loss otherwise)
    and stops after ``patience`` epochs without improvement. Half the validation subjects choose ``best.pt``'s epoch
    (and stop the run); a run stopped early is scored at ``best.pt`` on the other half. A validation set too small
    to split (2 subjects of each class in each half) chooses on every image, and then the early-stopped row is
    marked OPTIMISTIC. ``freeze``: ``"head"`` trains only the network's classifier layer; a stage name freezes every
    stage before it. ``callback(kind, info)`` reports progress (:mod:`featx.finetune.events`). ``resume=True``
    continues from ``out/last.pt`` and refuses other settings; on a finished run it trains nothing and returns the
    run's summary again.

    ``keep``: the checkpoints a finished run keeps. ``"best"`` (default): ``best.pt``, what ``featx extract
    --weights`` reads; ``last.pt`` (the training state ``resume`` needs, 2-3x the network's size) exists only
    while the run is unfinished. ``"last"``: only ``last.pt`` (the scored epoch of a fixed-length run).
    ``"both"``: both.

    ``weights`` of unknown provenance (a plain state dict, another tool's checkpoint) warn as the preset
    warning does, and the run's row and checkpoints carry the mark ``weights of unknown provenance``;
    ``weights_never_saw_images=True`` records the user's statement that they never saw these images instead.

    ``preset="paper"`` from random weights (``weights="none"``, or a backbone without ImageNet weights) with the
    preset's lr warns before training: through ``callback("warning", {"message", "template"})``, or
    :func:`warnings.warn` without a callback; ``settings.json`` and the result row's settings keep it as
    ``"warning"``.

    Images that cannot be read are left out of training and validation, listed in ``out/skipped.csv``
    (path, subject, error) and in the summary's ``skipped``; ``strict=True`` raises instead. A run that
    fails before its first checkpoint leaves no run folder behind (when it created it); one that fails later
    keeps its finished epochs in ``last.pt`` for ``resume=True``.
    """
    tuning = typed_arguments("finetune", [Slot("settings", FinetuneSettings, settings)], options)["settings"]
    given = tuning.options()
    out = Path(out)
    ckpt.check_keep(keep)
    existed, root = ckpt.early_files(out), ckpt.new_root(out)
    trainer = None
    try:
        plan = plan_run(data, out, backbone=backbone, preset=tuning.preset, options={k: given[k] for k in RESOLVED},
                        val=val, early_stopping=tuning.early_stopping, patience=tuning.patience, positive=positive,
                        freeze=tuning.freeze, device=device, workers=workers, seed=seed, resume=resume,
                        strict=strict, keep=keep, weights_never_saw_images=tuning.weights_never_saw_images)
        if plan.finished:
            summary = finished_summary(out)
        else:
            _warn(plan.warning, callback)
            _warn(plan.weights_warning, callback)
            trainer = Trainer(plan, callback)
            out.mkdir(parents=True, exist_ok=True)
            if plan.last is None:
                ckpt.write_settings(out, plan.settings)
            ckpt.write_lists(out, plan.collection, trainer.skipped, plan.provenance)
            trainer.fit()
            summary = _write_outputs(trainer)
            summary.update(ckpt.prune(out, keep))
            summary["already_finished"] = plan.last is not None and bool(plan.last["finished"])
    except BaseException as exc:
        ckpt.remove_unsaved_run(out, existed, root)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise FeatxError(disk_full_message(out, exc, trainer)) from None
        raise
    if callback is not None:
        callback("end", summary)
    return summary


def disk_full_message(out: Path, exc: OSError, trainer: Trainer | None) -> str:
    """One line: the file a full disk stopped, what the run folder keeps, and how to go on."""
    where = f" while writing {exc.filename}" if exc.filename else ""
    epoch = trainer.saved_epoch() if trainer is not None else 0
    if epoch and (out / "last.pt").exists():
        best = f", best.pt of epoch {trainer.saved_epoch('best')}" if (out / "best.pt").exists() else ""
        return (f"disk full{where}; {out} keeps last.pt of epoch {epoch}{best}; free space, then run the same "
                f"command with {arg('resume', True)} (it resumes after epoch {epoch})")
    return (f"disk full{where}; no epoch was saved, so nothing of this run was kept; free space, then run the "
            "same command again")


def _warn(template: str | None, callback: Callback | None) -> None:
    """Report a warning before training: to the callback, else through :mod:`warnings`."""
    if not template:
        return
    message = str(FeatxError(template))  # arguments spelled as Python (weights='none')
    if callback is not None:
        callback("warning", {"message": message, "template": template})
    else:
        warnings.warn(message, UserWarning, stacklevel=3)


def finished_summary(out: Path) -> RunSummary:
    """The summary of a finished run, read back from its folder (nothing is trained)."""
    row = with_predictions(read_json(out / "results.json"), out / "results.json")[0]
    settings = ckpt.read_settings(out)
    with open(out / "history.csv", newline="", encoding="utf-8") as fh:
        history = [{k: int(v) if k == "epoch" else float(v) for k, v in line.items()}
                   for line in csvfiles.DictReader(fh)]
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        skipped = [{"path": r["path"], "error": r["error"]} for r in csvfiles.DictReader(fh)]
    results = {kind: out / f"results.{kind}" for kind in ("json", "csv", "md")}
    if (out / "roc.png").exists():
        results["roc"] = out / "roc.png"
    epochs_run = int(row.epochs_run or len(history))
    best, last = (out / name for name in ("best.pt", "last.pt"))
    return {"out": out, "best": best if best.exists() else None, "last": last if last.exists() else None,
            "history": out / "history.csv", "settings": out / "settings.json", "card": out / "card.json",
            "curves": out / "curves.png", "confusion": out / "confusion.png", "results": results, "row": row,
            "epochs_run": epochs_run, "best_epoch": int(row.best_epoch or epochs_run),
            "stopped_early": epochs_run < int(settings["epochs"]), "settings_used": settings,
            "history_rows": history, "provenance": out / "provenance.csv", "skipped": skipped,
            "skipped_csv": out / "skipped.csv", "already_finished": True}


def _write_outputs(trainer: Trainer) -> RunSummary:
    """card.json, results.json/.md/.csv, curves.png, confusion.png (and roc.png) of a finished run."""
    plan, state, out = trainer.plan, trainer.state, trainer.plan.out
    best = trainer.checkpoint_record("best")
    card = dict(best["card"])  # the sample lists stay in the checkpoint (and provenance.csv)
    card["provenance"] = provenance.summary(card.get("provenance") or {})
    atomic_json(out / "card.json", card)
    # Without early stopping the run is a fixed number of epochs (the study's protocol): report the last
    # epoch on every validation image (it chose nothing). best.pt (lowest validation loss on the choosing
    # part) is still kept for `featx extract --weights`. With early stopping, best.pt is scored on the part
    # that did not choose it.
    scored = best if plan.settings["early_stopping"] else trainer.checkpoint_record("last")
    row = result_row(trainer, scored["val_predictions"], int(best["card"]["epoch"]), int(scored["card"]["epoch"]))
    paths = {k: Path(v) for k, v in report.write_results([row], out, plots=False).items()}
    title = f"{row.name}: {row.protocol_label}"
    curves = report.plot_history(state.history, out / "curves.png", title=title, best_epoch=row.best_epoch,
                                 monitor=plan.settings["monitor"], scored_epoch=row.scored_epoch)
    confusion = report.plot_confusion(row.confusion, plan.classes, out / "confusion.png",
                                      title=f"{title}\nepoch {row.scored_epoch}")
    if row.roc:
        paths["roc"] = report.plot_roc(row.roc["fpr"], row.roc["tpr"], row.scores["roc_auc"].mean,
                                       out / "roc.png", title=title, positive=row.positive)
    samples = plan.collection.samples
    return {"out": out, "best": trainer.best_path, "last": trainer.last_path, "history": out / "history.csv",
            "settings": out / "settings.json", "card": out / "card.json", "curves": curves,
            "confusion": confusion, "results": paths, "row": row, "epochs_run": state.epoch,
            "best_epoch": int(best["card"]["epoch"]), "stopped_early": state.epoch < int(plan.settings["epochs"]),
            "settings_used": plan.settings, "history_rows": list(state.history),
            "provenance": out / "provenance.csv",
            "skipped": [{"path": samples[i].path, "error": e} for i, e in trainer.skipped],
            "skipped_csv": out / "skipped.csv"}


def result_row(trainer: Trainer, pred: dict, best_epoch: int, scored_epoch: int) -> ResultRow:
    """The result row of the scored epoch: one validation set, the network's own softmax (``head=None``).

    An epoch chosen on validation images is scored on the others (``split.score``); when the validation set
    was too small to split, on the images that chose it, and the row is OPTIMISTIC."""
    plan, s = trainer.plan, trainer.plan.settings
    split, samples = plan.split, plan.collection.samples
    chosen = bool(s["early_stopping"])
    optimistic = chosen and bool(split.unsplit)
    index = pred["index"].numpy()
    keep = np.isin(index, split.score) if chosen and not split.unsplit else np.ones(len(index), dtype=bool)
    subjects = [samples[i].subject or "" for i in index[keep]]
    pooled = {"y_true": pred["y_true"].numpy()[keep], "y_pred": pred["y_pred"].numpy()[keep],
              "y_score": pred["y_score"].numpy().astype(np.float64)[keep], "subjects": subjects,
              "classes": plan.classes, "positive": plan.pos}
    metrics = compute_metrics(pooled["y_true"], pooled["y_pred"], pooled["y_score"], classes=plan.classes,
                              positive=plan.pos, subjects=subjects)
    summary = summarize_folds([metrics], pooled=pooled)
    # one validation set: there is no spread over folds (the interval over subjects is the uncertainty)
    scores = {m: replace(score, std=None) for m, score in summary_scores(summary).items()}
    epochs_run = trainer.state.epoch
    unit = "subjects" if all(subjects) else "images"
    if optimistic:
        selection = (f"epoch {scored_epoch} of {epochs_run}, chosen by validation {s['monitor']} on the set it is "
                     f"scored on (optimistic: {split.unsplit})")
    elif chosen:
        selection = (f"epoch {scored_epoch} of {epochs_run}, chosen by validation {s['monitor']} on "
                     f"{len(split.choose)} validation images; scored on the other {int(keep.sum())} ({unit} that "
                     "did not choose it)")
    else:
        selection = (f"last epoch ({scored_epoch}) of a fixed-length run; best.pt is epoch {best_epoch} by "
                     f"validation {s['monitor']} ({s.get('val_choose', 'every validation image')})")
    label = s["protocol_label"]
    if optimistic:
        label = f"OPTIMISTIC {label} (epoch chosen on the images it is scored on)"
    elif chosen:
        label = f"{label}, scored on the {unit} that did not choose the epoch"
    name = (" (early-stopped on val)" if optimistic else
            f" (early-stopped on other val {unit})" if chosen else "")
    return ResultRow(
        name=f"{s['backbone']} fine-tuned{name}",
        backbone=s["backbone"], tap="logits", head=None, protocol=plan.split.protocol,
        protocol_label=label, image_level=bool(plan.split.image_level), n_folds=1,
        protocol_short=plan.split.short or None,
        n_train=len(trainer.train_idx), n_test=int(keep.sum()), n_subjects=len({x for x in subjects if x}),
        classes=list(plan.classes), positive=plan.positive, confusion=jsonable(summary["confusion"]),
        ci_unit=summary.get("ci_unit"), interval=summary.get("interval"),
        per_subject_accuracy=jsonable(summary.get("per_subject_accuracy")),
        roc=roc_points(pooled["y_true"] == plan.pos, pooled["y_score"]),
        predictions=scored_predictions(plan, index[keep], pooled),
        fit_seconds=round(sum(float(h["seconds"]) for h in trainer.state.history), 3),
        settings=jsonable({k: v for k, v in s.items() if k not in ("notes", "classes")}),
        scores=scores, optimistic=optimistic,
        network=NetworkRecord(best_epoch=best_epoch, scored_epoch=scored_epoch, epochs_run=epochs_run,
                              n_skipped=len(trainer.skipped), selection=selection),
        weights_provenance=provenance.mark_of(s.get("weights_provenance")))


def scored_predictions(plan, index: np.ndarray, pooled: dict) -> dict:
    """The scored validation images as ``predictions/<row>.csv`` holds a head row's out-of-fold predictions:
    path (relative to the data root, ``settings["data_root"]``), subject, fold 1 (one split), true and predicted
    class, and the network's softmax probability of the positive class as the score."""
    samples, names = plan.collection.samples, np.asarray(plan.classes, dtype=object)
    return {"path": [samples[i].path for i in index], "subject": [samples[i].subject or "" for i in index],
            "fold": [1] * len(index), "y_true": names[pooled["y_true"]].tolist(),
            "y_pred": names[pooled["y_pred"]].tolist(),
            # as the CSV holds them (9 digits; the softmax is float32): a finished run's row read back is equal
            "score": [float(f"{s:.9g}") for s in pooled["y_score"]]}
