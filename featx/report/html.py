"""``featx report``: one self-contained HTML file (no external CSS, JS or fonts; figures inlined as base64
PNG) with the results table, what its marks and numbers mean, and every figure: the comparison chart, each
row's confusion matrix and ROC curve (drawn again from the rows) and the training curves of fine-tuning runs
(from their history.csv). The file an analyst mails to a colleague."""
from __future__ import annotations

import base64
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import featx
from featx import csvfiles
from featx.errors import FeatxError, arg
from featx.files import write_or_keep
from featx.report.feature_map import MapStep
from featx.report.files import dedupe_rows, read_results
from featx.report.forest import plot_forest
from featx.report.methods import methods_html
from featx.report.notes import (
    IMAGE_LEVEL_NOTE,
    STATS_NOTE,
    TABLE_METRICS,
    difference_note,
    difference_text,
    excluded_notes,
    flagged_protocol,
    format_pct,
    interval_notes,
    interval_text,
    mark_notes,
    p_value_text,
    partial_notes,
    protocol_text,
    provenance_suffix,
    selection_note,
    short_protocol,
)
from featx.report.outputs import find_results, written_by
from featx.report.pictures import check_map_choice, explanations_html, gallery_html, maps_html
from featx.report.plots import metric_label, plot_confusion, plot_history, plot_roc
from featx.report.sections import intervals_html, subjects_html
from featx.report.subjects import with_predictions
from featx.report.table2 import pivot_table, to_html
from featx.results import ResultRow
from featx.scoring import check_metric

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1150px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.4}
h1{margin-bottom:4px}.meta{color:#666;font-size:90%}
table{border-collapse:collapse;font-size:80%;margin:8px 0}caption{text-align:left;color:#555;padding:4px 0}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
td.name{min-width:10em}td.protocol{min-width:12em}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.marked{background:#fff6d5}.flag{font-weight:bold;color:#8b0000}
.notes p{font-size:88%;color:#444;margin:4px 0}
figure{margin:10px 0;display:inline-block;vertical-align:top}figcaption{font-size:85%;color:#555;max-width:540px}
img{max-width:100%;height:auto;border:1px solid #eee}
section.row{border-top:1px solid #ccc;margin-top:6px}
section.row summary{cursor:pointer}section.row summary h3{display:inline;font-size:100%}
nav#contents{background:#f7f7f7;padding:4px 12px;font-size:90%}nav#contents ol ol{columns:2;font-size:90%}
.methods p{margin:6px 0}#results,#interval-table{display:block;overflow-x:auto}
"""


@dataclass
class _Figure:
    caption: str
    png: bytes


def write_html_report(sources: Sequence[ResultRow | str | Path], out: str | Path, *, title: str = "featx report",
                      sort_by: str = "f1_weighted", maps: str = "auto",
                      on_step: Callable[[MapStep], None] | None = None) -> Path:
    """Write ``out`` (one HTML file) for the result rows of ``sources``: :class:`ResultRow` objects, or
    results.json files or folders (read by :func:`read_results`; a fine-tuning run folder also gives its
    training curves). Rows are sorted by ``sort_by`` in the comparison chart. ``maps``: how the feature map of
    each store is embedded (:data:`featx.report.pictures.MAP_CHOICES`; ``"none"``: no maps). ``on_step`` hears
    each long step (a map, a row's gallery) before it starts. Returns ``out``."""
    check_metric(sort_by, "sort_by")
    check_map_choice(maps)
    out = Path(out)
    if out.is_dir():
        raise FeatxError(f"{out} is a folder; {arg('out')} is the HTML file to write, e.g. "
                         f"{arg('out', out / 'report.html')}")
    rows, runs, names, folders, origins = _gather(sources)
    if not rows:
        raise FeatxError(f"no result rows in {', '.join(names) or 'the sources given'}; point to results.json "
                         f"files written by {written_by('compare', 'classify', 'finetune')} (or their folders)")
    html = render_html(rows, runs, title=title, sort_by=sort_by, sources=names, folders=folders, maps=maps,
                       on_step=on_step, origins=origins)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_or_keep(out, lambda tmp: tmp.write_text(html, encoding="utf-8"))


def _gather(sources) -> tuple[list[ResultRow], list[Path], list[str], list[Path], list[Path | None]]:
    """The rows of every source (with the out-of-fold predictions their folders hold), the fine-tuning run
    folders among them (with a history.csv), the sources' names, the folders of their results.json and the
    results.json each row was read from (None for a row given as an object)."""
    rows: list[ResultRow] = []
    origins: list[Path | None] = []
    runs: list[Path] = []
    names: list[str] = []
    paths = []
    for src in sources:
        if isinstance(src, ResultRow):
            rows.append(src)
            origins.append(None)
        else:
            paths.append(Path(src))
            names.append(str(src))
    files = find_results(paths) if paths else []
    read = [(f, r) for f in files for r in with_predictions(read_results([f]), f)]
    for i in dedupe_rows([r for _, r in read], [f for f, _ in read]):
        origins.append(read[i][0])
        rows.append(read[i][1])
    for path in paths:
        folder = path if path.is_dir() else path.parent
        found = sorted({h.parent for h in folder.rglob("history.csv")}) if path.is_dir() else (
            [folder] if (folder / "history.csv").is_file() else [])
        runs += [f for f in found if f not in runs]
    return rows, runs, names, list(dict.fromkeys(f.parent for f in files)), origins


def table2_html(rows: Sequence[ResultRow], sort_by: str = "f1_weighted") -> str:
    """The paper's Table 2 of ``rows``: protocols as columns, the ``sort_by`` metric with its interval, the best
    of each column in bold, ``≈ best`` marked, marks as footnotes (:func:`featx.report.table2.pivot_table`)."""
    return to_html(pivot_table(rows, metric=sort_by))


def render_html(rows: Sequence[ResultRow], runs: Sequence[Path] = (), *, title: str = "featx report",
                sort_by: str = "f1_weighted", sources: Sequence[str] = (), folders: Sequence[Path] = (),
                maps: str = "auto", on_step: Callable[[MapStep], None] | None = None,
                origins: Sequence[Path | None] = ()) -> str:
    """The report's HTML text (see :func:`write_html_report`): figures are drawn into a temporary folder
    and inlined. ``folders``: the results folders the rows were read from (their run.json names the command
    in the Methods); ``origins``: the results.json of each row (where a row's data root may be recorded, for
    its error gallery)."""
    rows = list(rows)
    origins = list(origins) or [None] * len(rows)
    step = on_step or (lambda event: None)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    origin = f" from {escape(', '.join(sources))}" if sources else ""
    positive = _positive(rows)
    body = []
    with tempfile.TemporaryDirectory(prefix="featx-report-") as tmp:
        draw = _drawer(Path(tmp))
        body.append(_section("results-section", "Results", results_html(rows, sort_by), notes_html(rows)))
        if table2 := table2_html(rows, sort_by):
            body.append(_section("table2", "Table 2", table2))
        chart = draw(lambda p: plot_forest(rows, p, metric=sort_by, title=title))
        body.append(_section("comparison", "Comparison", _figure_html(_Figure(
            f"{metric_label(sort_by, positive)}: each row's mean and 95% interval, one panel per protocol "
            "(IMAGE-LEVEL and OPTIMISTIC rows in their own, marked panels); the dashed line is the protocol's best "
            "row, and each row's paired difference from it is on the right.", chart))))
        body.append(_section("intervals", "Every metric with its 95% interval", intervals_html(rows, positive)))
        def figure(plot, caption) -> str:
            png = draw(plot)
            return _figure_html(_Figure(caption() if callable(caption) else caption, png))

        body.append(_section("subjects", "Per-subject results", subjects_html(rows, figure, sort_by)))
        body.append(_section("feature-space", "Feature space: by class and by subject",
                             maps_html(rows, figure, maps, on_step=on_step)))
        body.append(_section("methods", "Methods", "<p class=\"meta\">Written from what the rows, their stores "
                             "and results folders record; paste and edit.</p>",
                             methods_html(rows, [*folders, *runs])))
        sections, mapped = [], set()
        for i, (r, origin) in enumerate(zip(rows, origins), 1):
            if r.predictions:
                step(MapStep("gallery", f"error gallery of row {i} of {len(rows)}, {r.name}"))
            pictures = [gallery_html(r, figure, origin)]
            run = origin.parent if origin is not None and origin.parent in runs else None
            if run is not None and run not in mapped:
                pictures.append(explanations_html(run, figure, on_step=step))
                mapped.add(run)
            sections.append(_row_section(i, r, draw, "\n".join(pictures)))
        body.append(_section("rows", "Per row: confusion matrix, ROC curve and error gallery",
                             "<p class=\"meta\">Each row's figures are folded: click a row to open it.</p>",
                             *sections))
        curves = []
        for run in runs:
            curves.append(_curves(run, draw))
            if run not in mapped:  # a run without a row of its own (a hybrid fold's): its maps beside its curves
                curves.append(explanations_html(run, figure, on_step=step))
        if curves:
            body.append(_section("curves", "Fine-tuning curves and class-activation maps", *curves))
    head = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f'<p class="meta">featx {escape(featx.__version__)} &middot; written {when} &middot; {len(rows)} '
            f"row{'s' if len(rows) != 1 else ''}{origin}</p>", _contents(body, rows)]
    return "\n".join([*head, *body, "</body></html>"]) + "\n"


def _section(anchor: str, heading: str, *parts: str) -> str:
    return "\n".join([f'<section id="{anchor}"><h2>{escape(heading)}</h2>', *parts, "</section>"])


def _contents(body: Sequence[str], rows: Sequence[ResultRow]) -> str:
    """The table of contents: a link to each section the body holds, and under Per row one to each row."""
    items = []
    for section in body:
        anchor, heading = re.match(r'<section id="([^"]+)"><h2>(.*?)</h2>', section).groups()
        sub = ""
        if anchor == "rows":
            sub = "<ol>" + "".join(f'<li><a href="#row-{i}">{escape(r.name)} ({escape(short_protocol(r))})</a></li>'
                                   for i, r in enumerate(rows, 1)) + "</ol>"
        items.append(f'<li><a href="#{anchor}">{heading}</a>{sub}</li>')
    return '<nav id="contents"><h2>Contents</h2><ol>' + "".join(items) + "</ol></nav>"


def _drawer(folder: Path) -> Callable[[Callable[[Path], Path]], bytes]:
    """``draw(plot)``: call ``plot(path)`` with a fresh PNG path in ``folder`` and return the file's bytes."""
    count = [0]

    def draw(plot: Callable[[Path], Path]) -> bytes:
        count[0] += 1
        return plot(folder / f"figure-{count[0]}.png").read_bytes()

    return draw


def _positive(rows: Sequence[ResultRow]) -> str | None:
    positives = {r.positive for r in rows}
    return positives.pop() if len(positives) == 1 else None


def _marked_protocol(r: ResultRow) -> str:
    """The protocol cell: the row's protocol label, its marks (IMAGE-LEVEL, OPTIMISTIC, weights of unknown
    provenance) in bold, † and PARTIAL."""
    flag, rest = flagged_protocol(r)
    text = f'<span class="flag">* {escape(flag)}</span>{escape(rest)}' if flag else escape(rest)
    if r.provenance_mark:
        star = "* " if r.marked and not r.flag else ""
        cls = "flag" if r.weights_provenance == "unknown" else "note"
        text += f'; <span class="{cls}">{star}{escape(r.provenance_mark)}</span>'
    if r.selection_uncorrected:
        text = f"\u2020 {text}"
    if r.partial:
        text += f' <span class="flag">PARTIAL ({escape(r.partial)})</span>'
    return text


def results_html(rows: Sequence[ResultRow], sort_by: str = "f1_weighted") -> str:
    """The results table as an HTML ``<table id="results">`` (rows in the given order; marked rows shaded)."""
    positive = _positive(rows)
    ci_name = metric_label(sort_by, positive)
    compared = any(r.comparison for r in rows)
    head = ["#", "Model", "Protocol", *[f"{metric_label(m, positive)} (%)" for m, _ in TABLE_METRICS],
            f"95% CI {ci_name}", *(["\u0394 vs best (points, 95% CI)", "p"] if compared else []), "n test",
            "subjects"]
    folds = sorted({r.n_folds for r in rows})
    what = ("mean over folds ± sample sd (ddof=1) over folds, % (a single held-out split has no ±)"
            if any(k > 1 for k in folds) else "one held-out split, % (no ±: one split)")
    lines = ['<table id="results">', f"<caption>{escape(what)}</caption>",
             "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    for i, r in enumerate(rows, 1):
        ci = interval_text(r.score(sort_by))
        cells = [f'<td class="num">{i}</td>', f'<td class="name">{escape(r.name)}</td>',
                 f'<td class="protocol">{_marked_protocol(r)}</td>',
                 *[f'<td class="num">{escape(format_pct(r.score(m).mean, r.score(m).std))}</td>'
                   for m, _ in TABLE_METRICS],
                 f'<td class="num">{ci}</td>',
                 *([f'<td class="num">{escape(difference_text(r) or "-")}</td>',
                    f'<td class="num">{p_value_text(r)}</td>'] if compared else []),
                 *[f'<td class="num">{v}</td>' for v in (r.n_test, r.n_subjects)]]
        cls = ' class="marked"' if r.marked or r.partial else ""
        lines.append(f'<tr{cls} data-flag="{escape(r.flag)}">' + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</tbody></table>"])


def notes_html(rows: Sequence[ResultRow]) -> str:
    """What the table's marks and numbers mean: the texts of results.md (:mod:`featx.report.notes`)."""
    notes = []
    if any(r.image_level for r in rows):
        notes.append(f"* {IMAGE_LEVEL_NOTE}")
    notes += [f"* {note}" for note in mark_notes(rows)]
    if note := selection_note(rows):
        notes.append(note)
    notes += [f"PARTIAL: {n}." for n in partial_notes(rows)]
    notes += [f"{n}." for n in excluded_notes(rows)]
    if note := difference_note(rows):
        notes.append(note)
    notes.append(STATS_NOTE)
    notes += [f"{n}." for n in interval_notes(rows)]
    return '<div class="notes">' + "".join(f"<p>{escape(n)}</p>" for n in notes) + "</div>"


def _figure_html(fig: _Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure><img alt="{escape(fig.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>")


def _row_section(i: int, r: ResultRow, draw, gallery: str = "") -> str:
    title = f"{r.name}\n{protocol_text(r)}{provenance_suffix(r)}"
    about = [f"{r.n_train} training and {r.n_test} test images, {r.n_subjects} subjects",
             f"positive class: {r.positive}"]
    if r.selection:
        about.append(r.selection)
    html = [f'<section class="row" id="row-{i}"><details><summary><h3>{i}. {escape(r.name)} &mdash; '
            f"{_marked_protocol(r)}</h3></summary>", f"<p>{escape('; '.join(about))}</p>"]
    if r.confusion is not None:
        classes = r.classes or [str(k) for k in range(len(r.confusion))]
        png = draw(lambda p: plot_confusion(r.confusion, classes, p, title=title))
        pooled = f" (pooled over {r.n_folds} folds)" if (r.n_folds or 1) > 1 else ""
        html.append(_figure_html(_Figure(f"Confusion matrix of {r.name}{pooled}", png)))
    if r.roc:
        png = draw(lambda p: plot_roc(r.roc["fpr"], r.roc["tpr"], r.mean("roc_auc"), p, title=title,
                                      folds=r.n_folds or 1, positive=r.positive))
        html.append(_figure_html(_Figure(f"ROC curve of {r.name}, positive class {r.positive}", png)))
    if r.confusion is None and not r.roc:
        html.append("<p>(no confusion matrix or ROC curve in this row)</p>")
    return "\n".join([*html, gallery, "</details></section>"])


def read_history(path: str | Path) -> list[dict]:
    """The lines of a run's history.csv, numbers as numbers (``epoch`` as int)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        lines = list(csvfiles.DictReader(fh))
    out = []
    for line in lines:
        rec = {}
        for k, v in line.items():
            try:
                rec[k] = int(v) if k == "epoch" else float(v)
            except (TypeError, ValueError):
                rec[k] = v or None
        out.append(rec)
    return out


def _curves(run: Path, draw) -> str:
    """A fine-tuning run's training curves, best.pt's epoch (and the scored one) read from its results.json."""
    history = read_history(run / "history.csv")
    rows = read_results([run]) if (run / "results.json").is_file() else []
    row = next((r for r in rows if r.best_epoch is not None), None)
    title = f"{row.name}: {row.protocol_label}" if row else str(run)
    monitor = (row.settings.get("monitor") if row else None) or None
    png = draw(lambda p: plot_history(history, p, title=title, best_epoch=row.best_epoch if row else None,
                                      monitor=monitor, scored_epoch=row.scored_epoch if row else None))
    caption = f"Training curves of {run} ({len(history)} epochs)"
    if row:
        caption += f"; {row.selection}" if row.selection else f"; best.pt is epoch {row.best_epoch}"
    return _figure_html(_Figure(caption, png))
