"""The error gallery: for a result row, the test cells it got most confidently wrong and the least confident
right ones, as one PNG sheet of thumbnails (:mod:`featx.report.gallery_sheet`) and a CSV beside it that lists
every cell of the sheet and every misclassified cell of the row (``drawn`` says which are on the sheet).

Built from the row's out-of-fold predictions (``predictions/<row>.csv``) and the images; nothing is recomputed.
Image paths in predictions are relative to the data root the row was made from: a fine-tuned run's settings
(``data_root``), the ``data_root`` attribute of the row's feature stores, or the ``settings.json`` of its results
folder (a ``featx hybrid`` run); ``data=`` overrides them when the images moved.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx import csvfiles
from featx.data.decode import load_image
from featx.errors import FeatxError, arg, command, speak
from featx.files import write_or_keep
from featx.records import Record
from featx.report.files import PREDICTION_COLUMNS, read_results, unique_slugs
from featx.report.gallery_cells import Cell, cell_confidences, confidence_meaning, gallery_cells, score_kind
from featx.report.gallery_sheet import COLUMNS, THUMB, draw_sheet, save_sheet
from featx.report.methods import row_stores
from featx.report.notes import protocol_text, provenance_suffix
from featx.report.outputs import find_results
from featx.report.subjects import with_predictions
from featx.results import ResultRow
from featx.store import store_settings
from featx.store.schema import setting

__all__ = ["GALLERY_COLUMNS", "Galleries", "GalleryResult", "data_root", "gallery", "gallery_cells", "plot_gallery",
           "score_kind", "confidence_meaning", "cell_confidences"]

WRONG, RIGHT = 24, 8
GALLERY_COLUMNS = (*PREDICTION_COLUMNS, "confidence", "cell", "rank", "drawn", "confidence_means")


@dataclass(frozen=True)
class GalleryResult(Record):
    """What :func:`plot_gallery` wrote for one row."""
    name: str                # the row's name
    sheet: Path              # the PNG sheet
    csv: Path                # every misclassified cell and every cell of the sheet
    n_test: int              # cells in the row's predictions
    n_wrong: int             # misclassified cells (all listed in the CSV)
    drawn_wrong: int         # of them on the sheet
    drawn_right: int         # least confident right cells on the sheet
    score_kind: str          # probability, decision, unknown or none (:func:`score_kind`)
    confidence: str          # what the score and the confidence mean (:func:`confidence_meaning`)


def data_root(row: ResultRow, source: str | Path | None = None, data: str | Path | None = None) -> Path:
    """The folder ``row``'s prediction paths are relative to: ``data`` when given, else the ``data_root`` its
    settings record (a fine-tuned run), of its first feature store that still exists (of a row selected per
    fold: of the stores the folds chose), or of the ``settings.json`` beside ``source`` (the results.json the
    row was read from: a ``featx hybrid`` run). One-line :class:`FeatxError` when none is recorded."""
    if data is not None:
        return Path(data)
    settings = row.settings or {}
    if settings.get("data_root"):
        return Path(settings["data_root"])
    base = Path(source).parent if source is not None else Path.cwd()
    selected = [s for fold in settings.get("selected_stores") or [] for s in fold]  # a row selected per fold
    stores = [*row_stores(row), *selected]
    # a store given as a relative path was relative to where the command ran: here, or the results folder's parent
    for path in dict.fromkeys(p for s in stores for p in (Path(s), base / s)):
        if path.is_file():
            try:
                root = setting(store_settings(path), "data_root")
            except FeatxError:  # not a store (or unreadable): the next one may say
                continue
            if root:
                return Path(root)
    run_settings = base / "settings.json" if source is not None else None
    if run_settings is not None and run_settings.is_file():
        root = json.loads(run_settings.read_text(encoding="utf-8")).get("data_root")
        if root:
            return Path(root)
    raise FeatxError(f"row {row.name}: no data folder recorded for its images (its stores are gone or say none); "
                     f"give {arg('data')} the folder the images are under")


def plot_gallery(row: ResultRow, path: str | Path, *, data: str | Path | None = None, wrong: int = WRONG,
                 right: int = RIGHT, source: str | Path | None = None, columns: int = COLUMNS) -> GalleryResult:
    """Draw ``row``'s error gallery to ``path`` (a PNG) and write ``path`` with ``.csv`` beside it: the ``wrong``
    most confidently misclassified cells and the ``right`` least confident correctly classified ones, grouped
    by subject (:func:`gallery_cells`; what confidence means for the row: :func:`confidence_meaning`). The CSV
    lists every misclassified cell (``drawn`` yes or no) and every drawn cell. ``source``: the results.json the
    row was read from (where its data root may be recorded, :func:`data_root`); ``data`` overrides the data
    root. A missing image is a one-line :class:`FeatxError` naming it."""
    path = Path(path)
    cells, root = checked_cells(row, wrong=wrong, right=right, source=source, data=data)
    drawn = [c for c in cells if c.drawn]
    images = {c.path: _thumbnail(root / c.path) for c in drawn}
    meaning = confidence_meaning(row)
    n_test = len(row.predictions["path"])
    bad = [c for c in cells if c.wrong]
    title = (f"{row.name}: error gallery\n{protocol_text(row)}{provenance_suffix(row)}; {len(bad)} of {n_test} "
             "test cells misclassified")
    fig = draw_sheet([c for c in drawn if c.wrong], [c for c in drawn if not c.wrong], lambda c: images[c.path],
                     title=title, caption=f"{meaning}. Images under {root}.", n_wrong=len(bad),
                     n_right=n_test - len(bad), columns=columns)
    sheet = save_sheet(fig, path)
    table = write_or_keep(path.with_suffix(".csv"), lambda tmp: _write_csv(cells, meaning, tmp))
    return GalleryResult(name=row.name, sheet=sheet, csv=table, n_test=n_test, n_wrong=len(bad),
                         drawn_wrong=sum(c.wrong for c in drawn), drawn_right=sum(not c.wrong for c in drawn),
                         score_kind=score_kind(row), confidence=meaning)


@dataclass(frozen=True)
class Galleries(Record):
    """What :func:`gallery` wrote: one :class:`GalleryResult` per row with predictions, and the rows left out."""
    rows: list[GalleryResult]
    skipped: list[str]       # names of the rows without predictions
    why: str                 # why rows lack predictions, and what writes them ("" when none is skipped)


def gallery(results: str | Path | Sequence[str | Path], out: str | Path, *, data: str | Path | None = None,
            wrong: int = WRONG, right: int = RIGHT, overwrite: bool = False,
            on_row: Callable[[int, int, str], None] | None = None) -> Galleries:
    """The error gallery of every row of ``results`` (results.json files or folders holding them, as
    :func:`featx.report.read_results` reads them) that carries predictions: ``<out>/<row>.png`` and
    ``<out>/<row>.csv`` (:func:`plot_gallery`). When no row has predictions, a one-line :class:`FeatxError`
    says why; else rows without them are left out and named in the result's ``skipped``. Gallery files already
    in ``out`` are refused unless ``overwrite``. ``on_row(done, total, name)`` reports progress."""
    sources = [results] if isinstance(results, (str, Path)) else list(results)
    rows, origins = [], []
    for f in find_results(sources):
        read = with_predictions(read_results([f]), f)
        rows += read
        origins += [f] * len(read)
    have = [i for i, r in enumerate(rows) if r.predictions]
    if not have:
        names = ", ".join(r.name for r in rows[:3]) + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")
        raise FeatxError(f"{', '.join(str(f) for f in dict.fromkeys(origins))}: no row has a predictions file "
                         f"(predictions/<row>.csv beside results.json; rows {names}): "
                         f"{missing_predictions_why(rows)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FeatxError(f"{out} is a file, not a folder; choose another {arg('out')}")
    names = unique_slugs([rows[i] for i in have])
    if not overwrite:
        taken = [out / f"{n}{ext}" for n in names for ext in (".png", ".csv") if (out / f"{n}{ext}").exists()]
        if taken:
            raise FeatxError(f"{taken[0]} exists ({len(taken)} gallery files in {out} would be replaced); choose "
                             f"another {arg('out')} or give {arg('overwrite', True)} to replace them")
    for i in have:  # every row's data root and images found before the first sheet is written
        checked_cells(rows[i], wrong=wrong, right=right, source=origins[i], data=data)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for k, (i, name) in enumerate(zip(have, names)):
        if on_row is not None:
            on_row(k, len(have), rows[i].name)
        done.append(plot_gallery(rows[i], out / f"{name}.png", data=data, wrong=wrong, right=right,
                                 source=origins[i]))
    if on_row is not None:
        on_row(len(have), len(have), "")
    skipped = [r for r in rows if not r.predictions]
    return Galleries(rows=done, skipped=[r.name for r in skipped],
                     why=speak(missing_predictions_why(skipped)) if skipped else "")


def missing_predictions_why(rows: Sequence[ResultRow]) -> str:
    """Why rows have no predictions file, and what writes one."""
    runs = any(r.head is None for r in rows)
    table = command("table", "featx.report.merge_results(..., out=...)")
    return ("they were written before featx kept out-of-fold predictions" + (" (fine-tuning runs kept none before "
            "this version)" if runs else "") + f", or by {table}, which keeps none; run the command that wrote them "
            "again")


def checked_cells(row: ResultRow, *, wrong: int = WRONG, right: int = RIGHT, source=None,
                  data=None) -> tuple[list[Cell], Path]:
    """``row``'s :func:`gallery_cells` and its data root, once every image to draw is found there (one-line
    :class:`FeatxError` naming the first missing one, and the fix)."""
    if not row.predictions:
        raise FeatxError(f"row {row.name} carries no out-of-fold predictions; read it with its predictions file "
                         "(results written by a featx that keeps predictions/)")
    if wrong < 0 or right < 0:
        raise FeatxError(f"{arg('wrong', wrong)} and {arg('right', right)} count cells: give 0 or more")
    cells = gallery_cells(row, wrong=wrong, right=right)
    drawn = [c for c in cells if c.drawn]
    root = data_root(row, source, data) if drawn else Path(".")
    for c in drawn:
        if not (root / c.path).is_file():
            fix = (f"give {arg('data')} the folder the images are under now" if data is None else
                   f"check {arg('data', str(data))}: the paths of the predictions file are relative to it")
            raise FeatxError(f"{root / c.path}: image of row {row.name} not found (the data folder moved or was "
                             f"deleted?); {fix}")
    return cells, root


def _thumbnail(path: Path) -> np.ndarray:
    """The image at ``path``, at most :data:`THUMB` pixels a side."""
    image = load_image(path)
    image.thumbnail((THUMB, THUMB))
    return np.asarray(image)


def _write_csv(cells: Sequence[Cell], meaning: str, tmp: Path) -> None:
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csvfiles.writer(fh)
        writer.writerow(GALLERY_COLUMNS)
        for c in cells:
            writer.writerow([c.path, c.subject, "" if c.fold is None else c.fold, c.y_true, c.y_pred,
                             "" if c.score is None else f"{c.score:.9g}",
                             "" if np.isnan(c.confidence) else f"{c.confidence:.9g}",
                             "wrong" if c.wrong else "right", c.rank, "yes" if c.drawn else "no", meaning])
