"""The results table (the study's Table 2 layout) for the terminal (rich) and for results.md (Markdown).

Rows whose number is not an estimate for new patients are marked everywhere: IMAGE-LEVEL (one subject on
both sides of the split, or subjects unknown), OPTIMISTIC (scored on rows a fine-tuned network trained
on, or on the validation images that chose a network's epoch) and rows from weights of unknown provenance
(:attr:`featx.results.ResultRow.marks`); so are PARTIAL rows (an unfinished store) and stores that left
unreadable images out.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from featx.results import ResultRow
from featx.row_names import TAG

# (metric, header) of the columns of the study's Table 2, then the challenge's metric.
TABLE_METRICS = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                 ("f1_weighted", "Weighted F1"), ("roc_auc", "ROC-AUC"))
IMAGE_LEVEL_NOTE = ("IMAGE-LEVEL rows split cells of one subject across train and test (or cannot tell, when "
                    "subjects are unknown): optimistic, not an estimate for new patients.")
# What ± and the interval are (the README's "Honest evaluation" says the same).
STATS_NOTE = ("± is the sample standard deviation (ddof=1) of the per-fold values; the estimate is their mean over "
              "folds; 95% CI: percentile bootstrap of that same mean over folds, resampling subjects (images when "
              "subjects are unknown) within each test fold. ROC-AUC is computed within each fold and "
              "averaged (scores of different folds are not comparable); the ROC plot is the vertical average of "
              "the per-fold curves. Precision, recall and F1 are those of the positive class.")
OPTIMISTIC_NOTE = ("OPTIMISTIC rows test on images (or subjects) the fine-tuned network trained on: features "
                   "tuned on test subjects, not an estimate for new patients.")
EPOCH_OPTIMISTIC_NOTE = ("OPTIMISTIC fine-tuned network rows are scored on the validation images that chose their "
                         "epoch (early stopping on a validation set too small to split into a part that chooses "
                         "and a part that scores): not an estimate for new patients.")
UNKNOWN_WEIGHTS_NOTE = ("Weights of unknown provenance: the weights (a plain state dict, another tool's checkpoint, "
                        "or one fine-tuned from such weights) record no images they were trained on, so they may "
                        "have seen the test images; if they did not, state it with `featx extract` (or `featx "
                        "finetune`) `--weights-never-saw-images`.")
STATED_UNSEEN_NOTE = ("Weights stated unseen by the user: featx cannot tell which images these weights were "
                      "trained on; the user stated that they never saw these images (--weights-never-saw-images).")


def mark_notes(rows: Sequence[ResultRow]) -> list[str]:
    """What the OPTIMISTIC and weights-provenance marks of ``rows`` mean (one note per kind present)."""
    notes = []
    if any(r.optimistic and r.kind == "head" for r in rows):
        notes.append(OPTIMISTIC_NOTE)
    if any(r.optimistic and r.kind == "network" for r in rows):
        notes.append(EPOCH_OPTIMISTIC_NOTE)
    if any(r.weights_provenance == "unknown" for r in rows):
        notes.append(UNKNOWN_WEIGHTS_NOTE)
    if any(r.weights_provenance == "stated-unseen" for r in rows):
        notes.append(STATED_UNSEEN_NOTE)
    return notes


def provenance_suffix(row: ResultRow) -> str:
    """``"; weights of unknown provenance"`` (or stated unseen) to put after a row's protocol; ``""`` otherwise."""
    return f"; {row.provenance_mark}" if row.provenance_mark else ""


def selection_note(rows: Sequence[ResultRow]) -> str | None:
    """The note under a table whose rows were compared with a selected row (``compare --select``)."""
    if not any(r.selection_uncorrected for r in rows):
        return None
    n = max([int(r.settings.get("n_candidates") or 0) for r in rows] or [0]) or sum(
        r.selection_uncorrected for r in rows)
    return (f"\u2020 per-row scores are not corrected for selection among {n} rows; the 'selected' row is corrected "
            "(inner CV per outer fold)")


def selection_choices(rows: Sequence[ResultRow]) -> list[str]:
    """One line per selected row (``compare --select``): the candidate (store, tap and head) it chose in each
    outer fold, e.g. ``selected by inner f1_weighted (subject 5-fold) chose cnn/fc [b] + logistic in folds
    1, 3; cnn/fc [a] + logistic in fold 2``."""
    lines = []
    for r in rows:
        chosen = r.settings.get("selected") if r.head == "selected" else None
        if not isinstance(chosen, list) or not chosen:
            continue
        folds: dict[str, list[str]] = {}
        for k, name in enumerate(chosen, 1):
            folds.setdefault(str(name), []).append(str(k))
        picks = [f"{name} in fold{'s' if len(ks) > 1 else ''} {', '.join(ks)}" for name, ks in folds.items()]
        lines.append(f"{r.name} ({short_protocol(r)}) chose {'; '.join(picks)}")
    return lines


def format_pct(mean, std=None) -> str:
    """``0.9744, 0.012`` -> ``"97.44 ± 1.20"`` (percent); missing values -> ``"-"``."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{100 * mean:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.2f}"
    return text


def _pct(row: ResultRow, metric: str) -> str:
    score = row.score(metric)
    return format_pct(score.mean, score.std)


def protocol_text(row: ResultRow) -> str:
    """The row's protocol as its label says it (``subject-level 5-fold``), else its short name; a nested row
    (parameters searched inside each outer fold) adds ``, nested``."""
    text = row.protocol_label or row.protocol
    return f"{text}, nested" if row.nested else text


def short_protocol(row: ResultRow) -> str:
    """A compact protocol name for the terminal: ``subject 5-fold``, ``IMAGE-LEVEL 5-fold``, ``prelim``."""
    name, k = row.protocol, row.n_folds
    if name in ("subject", "image", "hybrid"):
        text = f"{name} {k}-fold"
    elif name == "fold":
        kind = "C-NMC folds" if "C-NMC" in protocol_text(row) else "given folds"
        text = f"{kind} ({k})"
    elif name.startswith("tuned-"):
        text = name if name == "tuned-holdout" else f"tuned held-out {name[6:]}"
    else:
        text = f"held-out {name}" if name else protocol_text(row)
    if row.image_level:
        text = "IMAGE-LEVEL " + text.replace("image ", "")
        if "subjects unknown" in protocol_text(row):
            text += " (subjects unknown)"
    if n := row.dropped_unknown_subjects:
        text += f", {n} row{'s' if n != 1 else ''} w/o subject dropped"
    if row.nested:
        text += ", nested"
    if row.optimistic:
        text = "OPTIMISTIC " + text
    return text + provenance_suffix(row)


def protocol_title(rows: Sequence[ResultRow]) -> str:
    """What the numbers of a table are, for its title: ``mean ± sd over 5 subject-grouped folds``, ``one
    held-out split (prelim)``, ``fine-tuned network, one validation split``; tables mixing cross-validated and
    held-out rows say ``mean ± sd over folds; held-out rows: one split`` (each row's protocol is in its row)."""
    phrases = list(dict.fromkeys(_row_phrase(r) for r in rows))
    if len(phrases) <= 1:
        return phrases[0] if phrases else "no rows"
    if all(r.n_folds > 1 for r in rows):
        ks = {r.n_folds for r in rows}
        return f"mean ± sd over {ks.pop()} folds" if len(ks) == 1 else "mean ± sd over folds"
    if all(r.n_folds <= 1 for r in rows):
        return "one held-out split per row"
    return "mean ± sd over folds; held-out rows: one split"


def _row_phrase(row: ResultRow) -> str:
    if row.n_folds > 1:
        kind = _FOLD_KINDS.get(row.protocol, "")
        kind = "image-level" if row.image_level and kind else kind
        return f"mean ± sd over {row.n_folds} {kind + ' ' if kind else ''}folds"
    if row.head is None and row.protocol != "hybrid":
        return "fine-tuned network, one validation split"
    return f"one held-out split ({row.protocol})"


_FOLD_KINDS = {"subject": "subject-grouped", "hybrid": "subject-grouped", "image": "image-level", "fold": "given"}
# The terminal's columns: the study's Table 2 with the challenge's weighted F1 shortened to wF1.
TERMINAL_METRICS = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                    ("f1_weighted", "wF1"), ("roc_auc", "ROC-AUC"))
# Dropped first when a narrow terminal cannot show every column (accuracy and wF1 always stay).
DROP_ORDER = ("roc_auc", "precision", "recall", "f1")
_MARKER_WIDTH = len("IMAGE-LEVEL")  # the protocol column never splits a marker
_NAME_MIN = 14


def results_table(rows: Sequence[ResultRow], title: str | None = "featx compare", *, width: int | None = None
                  ) -> Table:
    """A rich Table: name, protocol, then accuracy, precision, recall, F1, the weighted F1 (the challenge's
    metric) and ROC-AUC (%, ``mean ± sd`` over folds; the title says which protocol); marked rows in yellow
    with a ``*``.

    No number is ever cut: at ``width`` columns (default: the width of the console it is printed on) the
    table stacks ``± sd`` under the mean when one line does not fit, then leaves out ROC-AUC, precision,
    recall and F1 in that order and says so under the table. Names and protocols wrap; numbers never do.
    """
    rows = list(rows)
    if width is None:  # every column on one line; laid out again for the console that prints it
        table = _build(_FitsConsole, rows, title, list(TERMINAL_METRICS), stacked=False, width=None)
        table.fit_args = (rows, title)
        return table
    for stacked, metrics in _layouts():
        table = _build(Table, rows, title, metrics, stacked=stacked, width=width)
        if table is not None:
            return table
    # narrower than accuracy and wF1 with the shortest names (about 50 columns): the narrowest layout
    return _build(Table, rows, title, metrics, stacked=True, width=width, force=True)


def _layouts():
    """(stacked, metrics) from the widest layout to the narrowest."""
    yield False, list(TERMINAL_METRICS)
    for k in range(len(DROP_ORDER) + 1):
        yield True, [(m, h) for m, h in TERMINAL_METRICS if m not in DROP_ORDER[:k]]


class _FitsConsole(Table):
    """A results table laid out again for the width of the console it is printed on."""

    fit_args: tuple = ()

    def __rich_console__(self, console, options):
        yield results_table(*self.fit_args, width=options.max_width)

    def __rich_measure__(self, console, options):
        return Measurement.get(console, options, results_table(*self.fit_args, width=options.max_width))


def _cell(row: ResultRow, metric: str, stacked: bool) -> str:
    score = row.score(metric)
    text = format_pct(score.mean, score.std)
    return text.replace(" ± ", "\n± ") if stacked else text


def _protocol_cell(row: ResultRow) -> str:
    text = ("* " if row.marked else "") + ("\u2020 " if row.selection_uncorrected else "") + short_protocol(row)
    return text + (f" PARTIAL ({row.partial})" if row.partial else "")


def _width(texts) -> int:
    return max((cell_len(line) for t in texts for line in t.split("\n")), default=1)


def _build(cls, rows, title, metrics, *, stacked, width, force=False):
    """The table of ``rows`` with these metric columns, or None when it does not fit in ``width``."""
    cells = [[_cell(r, m, stacked) for m, _ in metrics] for r in rows]
    num_widths = [_width([h, *(c[i] for c in cells)]) for i, (_, h) in enumerate(metrics)]
    names, protocols = [r.name for r in rows], [_protocol_cell(r) for r in rows]
    name_w, proto_w = _width(["Model", *names]), _width(["Protocol", *protocols])
    name_col, proto_col = None, None  # fixed widths of the wrapping columns when the natural ones do not fit
    if width is not None:
        spare = width - sum(num_widths) - _overhead(len(metrics) + 2)
        longest = max((cell_len(w) for p in protocols for w in p.split()), default=1)
        name_min, proto_min = _NAME_MIN, max(_MARKER_WIDTH, min(longest, 16))
        if not stacked:  # one line per row only while names and protocols stay readable
            name_min, proto_min = 2 * name_min, 2 * proto_min
        name_min, proto_min = min(name_w, name_min), min(proto_w, proto_min)
        if spare < name_w + proto_w:
            if spare < name_min + proto_min and not force:
                return None
            extra = max(spare - name_min - proto_min, 0)
            need_n, need_p = name_w - name_min, proto_w - proto_min
            add_n = extra * need_n // max(need_n + need_p, 1)
            name_col, proto_col = name_min + add_n, proto_min + extra - add_n
    table = cls(title=f"{title}  [dim]({protocol_title(rows)}, %)[/]" if title else None,
                caption="\n".join(_captions(rows, metrics, width)), caption_style="dim", box=box.SIMPLE_HEAD,
                pad_edge=False)
    table.add_column("Model", style="bold", overflow="fold", width=name_col)
    table.add_column("Protocol", overflow="fold", width=proto_col)
    for (_, header), w in zip(metrics, num_widths):
        table.add_column(header, justify="right", no_wrap=True, min_width=w)
    for r, name, protocol, row_cells in zip(rows, names, protocols, cells):
        table.add_row(escape(name), escape(protocol), *row_cells,
                      style="yellow" if r.marked or r.partial else None)
    return table


def _overhead(n_columns: int) -> int:
    """Characters a table with ``n_columns`` spends outside its cells: edges, separators and padding."""
    probe = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for _ in range(n_columns):
        probe.add_column(width=1)
    return Measurement.get(_PROBE, _PROBE.options, probe).maximum - n_columns


_PROBE = Console(width=1000)


def _captions(rows: Sequence[ResultRow], metrics, width: int | None) -> list[str]:
    if any(r.n_folds > 1 for r in rows):
        captions = ["± = sample std (ddof=1) over folds; 95% CIs (bootstrap of the mean over folds, subjects "
                    "resampled within each test fold) in results.md/.csv"]
    else:
        captions = ["one split, so no ±; 95% CIs (bootstrap, subjects resampled within the test split) in "
                    "results.md/.csv"]
    shown = {m for m, _ in metrics}
    hidden = [h for m, h in TERMINAL_METRICS if m not in shown]
    if hidden:
        captions.insert(0, f"{', '.join(hidden)} not shown at {width} columns; all metrics are in "
                           "results.md/.csv")
    if any(r.image_level for r in rows):
        captions.append("* IMAGE-LEVEL: one subject's cells on both sides of the split, or subjects unknown "
                        "(optimistic)")
    if any(r.optimistic and r.kind == "head" for r in rows):
        captions.append("* OPTIMISTIC: features tuned on test subjects (the fine-tuned network saw them)")
    if any(r.optimistic and r.kind == "network" for r in rows):
        captions.append("* OPTIMISTIC: epoch chosen on the validation images it is scored on (too few to split)")
    if any(r.weights_provenance == "unknown" for r in rows):
        captions.append("* weights of unknown provenance: they may have seen the test images (featx extract "
                        "--weights-never-saw-images states they did not)")
    if any(r.weights_provenance == "stated-unseen" for r in rows):
        captions.append("weights stated unseen by the user: featx cannot check where they come from")
    if note := selection_note(rows):
        captions.append(escape(note))
    captions += [escape(line) for line in selection_choices(rows)]
    captions += [f"PARTIAL: {escape(p)}" for p in partial_notes(rows)]
    captions += [escape(note) for note in excluded_notes(rows)]
    return captions


def excluded_notes(rows: Sequence[ResultRow]) -> list[str]:
    """One line per distinct name whose store recorded unreadable images (left out of its rows)."""
    seen = dict.fromkeys((r.name, r.excluded_images) for r in rows if r.excluded_images)
    return [f"{name}: {n} unreadable image(s) left out (listed by `featx info`)" for name, n in seen]


def partial_notes(rows: Sequence[ResultRow]) -> list[str]:
    """One line per distinct name computed on an unfinished store."""
    notes = [f"{r.name} used {r.partial} of an unfinished store; finish it with the same `featx extract`"
             for r in rows if r.partial]
    return list(dict.fromkeys(notes))


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """The same table as Markdown (marked rows in bold with a ``*``), with the accuracy's 95% CI."""
    head = ["Model", "Protocol", *[f"{h} (%)" for _, h in TABLE_METRICS], "95% CI accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        protocol = protocol_text(r)
        if r.optimistic and "OPTIMISTIC" not in protocol:
            protocol = f"OPTIMISTIC {protocol}"
        protocol += provenance_suffix(r)
        if r.marked:
            protocol = f"**\\* {protocol}**"
        if r.selection_uncorrected:
            protocol = f"\u2020 {protocol}"
        if r.partial:
            protocol += f" **PARTIAL ({r.partial})**"
        acc = r.score("accuracy")
        ci = "-" if acc.ci_low is None or acc.ci_high is None else f"{100 * acc.ci_low:.1f} - {100 * acc.ci_high:.1f}"
        cells = [r.name, protocol, *[_pct(r, m) for m, _ in TABLE_METRICS], ci]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(rows: Sequence[ResultRow]) -> str:
    """The text of results.md: the Markdown table, what its marks mean, and :data:`STATS_NOTE`."""
    md = ["# featx results", "", markdown_table(rows)]
    if any(r.image_level for r in rows):
        md += [f"\\* {IMAGE_LEVEL_NOTE}", ""]
    for note in mark_notes(rows):
        md += [f"\\* {note}", ""]
    if note := selection_note(rows):
        md += [note, ""]
    md += [f"{line}.\n" for line in selection_choices(rows)]
    md += [f"PARTIAL: {note}.\n" for note in partial_notes(rows)]
    md += [f"{note}.\n" for note in excluded_notes(rows)]
    md += [STATS_NOTE, ""]
    md += chosen_params_markdown(rows)
    return "\n".join(md)


def chosen_params_markdown(rows: Sequence[ResultRow]) -> list[str]:
    """Lines of results.md listing, for each nested row, its search and the parameters chosen per outer fold
    (every inner score is in ``search/<row>.csv``)."""
    nested = [r for r in rows if r.nested and r.chosen_params]
    if not nested:
        return []
    md = ["## Parameters chosen per outer fold (nested search)", ""]
    for r in nested:
        s = r.search or {}
        space = "; ".join(f"{h}: {t}" for h, t in (s.get("space") or {}).items())
        md.append(f"- {r.name} ({protocol_text(r)}; {s.get('method', '?')} search, {s.get('inner_folds', '?')} "
                  f"inner folds, {s.get('metric', '?')}; space {space}):")
        for k, chosen in enumerate(r.chosen_params, 1):
            md.append(f"  - fold {k}: " + (", ".join(f"{p}={v}" for p, v in chosen.items()) or "defaults"))
    return [*md, ""]


def slug(row_or_text: ResultRow | str) -> str:
    """A file-name-safe name of a row (backbone-tap-head-protocol, with the tag that tells it from rows of the
    same name after the tap: :mod:`featx.row_names`; a fine-tuned network's own row keeps ``finetune`` in the
    head's place, as its files were always named) or of a text."""
    if isinstance(row_or_text, ResultRow):
        r = row_or_text
        parts = (r.backbone, r.tap, r.settings.get(TAG) or "", r.head or "finetune", r.protocol)
        text = "-".join(str(v) for v in parts if v != "")
    else:
        text = str(row_or_text)
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("_") or "row"
