"""The files of a results folder: results.csv/.json/.md, out-of-fold predictions, plots; and reading
results.json back (``featx table``)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featx import csvfiles
from featx.errors import FeatxError
from featx.files import atomic_text, atomic_write, remove_on_commit
from featx.report.forest import plot_forest
from featx.report.markdown import results_markdown
from featx.report.notes import protocol_text, provenance_suffix, slug
from featx.report.outputs import claimed, find_results, results_commit, write_manifest, written_by
from featx.report.plots import plot_confusion, plot_roc
from featx.results import ResultRow, read_json, write_csv, write_json
from featx.row_names import TAG, tag_names, unique_names, untagged

PREDICTION_COLUMNS = ("path", "subject", "fold", "y_true", "y_pred", "score")
SEARCH_COLUMNS = ("fold", "params", "mean_test_score", "std_test_score", "rank_test_score", "chosen")


def write_results(rows: Sequence[ResultRow], out_dir, *, plots: bool = True, stem: str = "results") -> dict[str, Path]:
    """Write ``results.csv``, ``results.json`` and ``results.md`` (one row per backbone x tap x head x
    protocol, every metric and the settings), ``predictions/`` for rows that carry out-of-fold predictions
    and, with ``plots``, a confusion-matrix and a ROC PNG per row under ``plots/`` plus ``comparison.png`` (the
    forest plot of :func:`featx.report.forest.plot_forest` on the metric the rows were compared on).
    Results already in ``out_dir`` are replaced, with their per-row files. Returns ``{kind: path}``."""
    rows = list(rows)
    out = Path(out_dir)
    with results_commit(out):  # every file, or (a full disk) none: the earlier results stay whole
        out.mkdir(parents=True, exist_ok=True)
        if (out / f"{stem}.json").is_file():
            _clear_row_files(out)
        paths = {"csv": atomic_write(out / f"{stem}.csv", lambda tmp: write_csv(rows, tmp)),
                 "json": atomic_write(out / f"{stem}.json", lambda tmp: write_json(rows, tmp)),
                 "md": atomic_text(out / f"{stem}.md", results_markdown(rows))}
        if any(r.predictions for r in rows):
            paths["predictions"] = write_predictions(rows, out / "predictions")
        if any(r.inner_scores for r in rows):
            paths["search"] = write_search_scores(rows, out / "search")
        if plots and rows:
            _plot_rows(rows, out / "plots")
            paths["plot"] = plot_forest(rows, out / "comparison.png", metric=_sort_metric(rows))
    return paths


def _sort_metric(rows: Sequence[ResultRow]) -> str:
    """The metric the rows were compared on (their ``comparison`` records name it), else ``f1_weighted``."""
    return next((r.comparison["metric"] for r in rows if r.comparison and r.comparison.get("metric")), "f1_weighted")


def _clear_row_files(out: Path) -> None:
    """Remove the per-row files of the results being replaced (plots, predictions, inner scores): rows of
    the earlier results that the new ones lack must not be left beside them."""
    for pattern in ("plots/*.png", "predictions/*.csv", "search/*.csv", "comparison.png"):
        for path in out.glob(pattern):
            remove_on_commit(path)  # when the new files are renamed in


def unique_slugs(rows: Sequence[ResultRow]) -> list[str]:
    """Each row's :func:`slug`, numbered from the second use on (e.g. frozen and fine-tuned weights of one
    backbone): no row's file overwrites another's."""
    used: dict[str, int] = {}
    names = []
    for r in rows:
        name = slug(r)
        used[name] = used.get(name, 0) + 1
        names.append(name if used[name] == 1 else f"{name}-{used[name]}")
    return names


def _plot_rows(rows: Sequence[ResultRow], plot_dir: Path) -> None:
    plot_dir.mkdir(exist_ok=True)
    for r, name in zip(rows, unique_slugs(rows)):
        title = f"{r.name}\n{protocol_text(r)}{provenance_suffix(r)}"
        if r.confusion is not None:
            plot_confusion(r.confusion, r.classes or [str(i) for i in range(len(r.confusion))],
                           plot_dir / f"confusion-{name}.png", title=title)
        if r.roc:
            plot_roc(r.roc["fpr"], r.roc["tpr"], r.mean("roc_auc"), plot_dir / f"roc-{name}.png",
                     title=title, folds=r.n_folds or 1, positive=r.positive)


def write_predictions(rows: Sequence[ResultRow], out_dir) -> Path:
    """``<out_dir>/<row slug>.csv`` per row that carries out-of-fold ``predictions``: one line per test image
    (path, subject, fold, y_true, y_pred, score of the positive class). Returns the folder."""
    return _write_per_row(rows, out_dir, "predictions", _write_prediction_csv)


def write_search_scores(rows: Sequence[ResultRow], out_dir) -> Path:
    """``<out_dir>/<row slug>.csv`` per nested row: one line per outer fold x inner candidate (fold, the
    candidate's parameters as JSON, mean and std of its inner score, its rank, whether it was chosen)."""
    return _write_per_row(rows, out_dir, "inner_scores", _write_search_csv)


def _write_per_row(rows: Sequence[ResultRow], out_dir, field: str, write) -> Path:
    """``write(value, tmp)`` of each row's ``field`` (rows without it are skipped) to ``<out_dir>/<slug>.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    carrying = [r for r in rows if getattr(r, field)]
    for r, name in zip(carrying, unique_slugs(carrying)):
        value = getattr(r, field)
        atomic_write(out / f"{name}.csv", lambda tmp, value=value: write(value, tmp))
    return out


def _write_search_csv(scores: list[dict], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csvfiles.writer(fh)
        writer.writerow(SEARCH_COLUMNS)
        for s in scores:
            writer.writerow([s["fold"], json.dumps(s["params"], sort_keys=True), f"{s['mean_test_score']:.9g}",
                             f"{s['std_test_score']:.9g}", s["rank"], s["chosen"]])


def _write_prediction_csv(pred: dict, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csvfiles.writer(fh)
        writer.writerow(PREDICTION_COLUMNS)
        for values in zip(*(pred[c] for c in PREDICTION_COLUMNS)):
            writer.writerow([f"{v:.9g}" if isinstance(v, float) else v for v in values])


def read_results(sources: Sequence) -> list[ResultRow]:
    """Result rows from ``results.json`` files and folders: a folder is searched recursively for every
    results.json under it (:func:`featx.report.outputs.find_results`: compare/classify folders, finetune and
    hybrid runs); results.json written before the typed rows (``model``, head ``finetune``) read too."""
    rows: list[ResultRow] = []
    for path in find_results(sources):
        try:
            rows.extend(read_json(path))
        except FileNotFoundError:
            raise FeatxError(f"{path}: no such results file; point to a results.json written by "
                             f"{written_by('compare', 'classify', 'finetune')} (or a folder above it)") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FeatxError(f"{path}: not a featx results.json (not JSON)") from None
        except ValueError as exc:
            raise FeatxError(f"{path}: not a featx results.json ({exc})") from None
    return rows


@dataclass(frozen=True)
class MergedResults:
    """What :func:`merge_results` returns."""
    rows: list[ResultRow]                                   # every row read once, told apart by name
    paths: dict[str, Path] = field(default_factory=dict)    # the files written to ``out`` by kind ({}: none)
    # the same rows with the names their own results.json gave them (a pivot tells them apart by source)
    as_read: list[ResultRow] = field(default_factory=list)
    # each row's results folder, in the shortest form that tells the folders apart; [] when all share one
    sources: list[str] = field(default_factory=list)


# Fields that differ between two runs of the same computation (its timings, and its paired difference from
# the other rows of its own results set): rows equal but for these are one row read twice.
_RUN_FIELDS = ("fit_seconds", "wall_seconds", "comparison")


def row_identity(row: ResultRow) -> tuple:
    """What makes two rows the same row read twice: the name its results set gave it (without a tag
    :func:`merge_results` added), its protocol and its whole record, but for its timings and its comparison
    (e.g. the same store x tap x head x protocol run by ``compare`` and again by ``classify``)."""
    record = row.to_dict()
    for key in _RUN_FIELDS:
        record.pop(key, None)
    record["name"] = untagged(row)
    record["settings"] = {k: v for k, v in (record.get("settings") or {}).items() if k != TAG}
    return json.dumps(record, sort_keys=True, default=str)


def dedupe_rows(rows: Sequence[ResultRow], origins: Sequence[Path]) -> list[int]:
    """The indices of ``rows`` to keep, in order: each row once (``origins``: the results.json each was read
    from). A row is read twice when its results file is reached by two paths (same resolved file, name and
    protocol) or when another results file holds the same row (:func:`row_identity`); the first is kept, or the
    first that carries a ``comparison`` when only a later copy does."""
    first: dict = {}
    keep: list[int] = []
    for i, (r, origin) in enumerate(zip(rows, origins)):
        for key in ((str(Path(origin).resolve()), r.name, r.protocol), row_identity(r)):
            if key in first:
                j = first[key]
                if rows[keep[j]].comparison is None and r.comparison is not None:
                    keep[j] = i
                break
        else:
            first[(str(Path(origin).resolve()), r.name, r.protocol)] = first[row_identity(r)] = len(keep)
            keep.append(i)
    return keep


def source_labels(origins: Sequence[Path]) -> list[str]:
    """The folder of each results file in the shortest form that tells the folders apart (``compare``,
    ``runs/cnn``); [] when every file is in one folder."""
    folders = [str(Path(o).resolve().parent) for o in origins]
    distinct = list(dict.fromkeys(folders))
    if len(distinct) < 2:
        return []
    labels = dict(zip(distinct, tag_names([0] * len(distinct), [()] * len(distinct), distinct)))
    return [str(labels[f]) for f in folders]


def merge_results(sources: Sequence, out=None, *, plots: bool = True, overwrite: bool = False) -> MergedResults:
    """``featx table``: the rows of every results.json ``sources`` name (:func:`read_results`), each row once
    (:func:`dedupe_rows`: a folder and its parent, a file reached by two paths, the same row in two results
    files), rows of one name and protocol told apart by their stores or folders
    (:func:`featx.row_names.unique_names`) and, with ``out``, those rows written there as one results folder
    (refused when ``out`` holds another command's results, unless ``overwrite``). Returns a
    :class:`MergedResults` (with each row's source folder when they come from several)."""
    files = find_results(sources)
    read = [(f, r) for f in files for r in read_results([f])]
    kept = [read[i] for i in dedupe_rows([r for _, r in read], [f for f, _ in read])]
    as_read = [r for _, r in kept]
    origins = [f for f, _ in kept]
    rows = unique_names(as_read, origins=origins)
    grid = {"sources": [str(f.resolve()) for f in files]}
    paths = {}
    if out is not None:
        keys = [(untagged(r), r.protocol, r.n_test) for r in rows]  # names as written before rows had tags
        with claimed(out, "table", grid, overwrite=overwrite,  # a merged table written before run.json: same rows
                     same_rows=lambda old: [(untagged(r), r.protocol, r.n_test) for r in old] == keys), \
                results_commit(out):
            paths = write_results(rows, out, plots=plots)
            write_manifest(out, "table", grid, len(rows))
    return MergedResults(rows=rows, paths=paths, as_read=as_read, sources=source_labels(origins))
