"""Sections of the HTML report drawn from the rows: every metric's interval, per-subject results (a table, a
strip plot and the patient-level majority vote). Text only; the report (:mod:`featx.report.html`) inlines the
figures through the ``figure`` callable it passes."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from featx.report.notes import short_protocol
from featx.report.plots import metric_label
from featx.report.subjects import majority_vote, per_subject_lines, plot_per_subject, shown_rows
from featx.results import METRICS, ResultRow, Score

# figure(plot, caption) -> the <figure> HTML of the PNG that plot(path) writes; a callable caption is asked
# after the plot is drawn (for captions that carry what drawing measured)
Figure = Callable[[Callable[[Path], Path], "str | Callable[[], str]"], str]


def score_interval_text(score: Score) -> str:
    """``87.00 [82.0, 90.0]`` (percent); ``87.00 [n/a]`` without an interval; ``-`` without a value."""
    if score.mean is None:
        return "-"
    if score.ci_low is None or score.ci_high is None:
        return f"{100 * score.mean:.2f} [n/a]"
    return f"{100 * score.mean:.2f} [{100 * score.ci_low:.1f}, {100 * score.ci_high:.1f}]"


def intervals_html(rows: Sequence[ResultRow], positive: str | None = None) -> str:
    """One table, one line per row: every metric's mean and 95% interval, ``mean [low, high]`` in percent."""
    metrics = [m for m in METRICS if any(r.score(m).mean is not None for r in rows)]
    head = ["#", "Model", "Protocol", *[metric_label(m, positive) for m in metrics]]
    lines = ['<table id="interval-table">',
             "<caption>mean [95% interval] of every metric, %; n/a: the design supports no interval (the "
             "notes under the results say why)</caption>",
             "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows, 1):
        cells = [str(i), escape(r.name), escape(short_protocol(r)),
                 *[escape(score_interval_text(r.score(m))) for m in metrics]]
        lines.append("<tr>" + "".join(f'<td class="{"num" if k > 2 or k == 0 else "name"}">{c}</td>'
                                      for k, c in enumerate(cells)) + "</tr>")
    return "\n".join([*lines, "</tbody></table>"])


def votes_html(rows: Sequence[ResultRow]) -> str:
    """One line per row with out-of-fold predictions: its patient-level majority vote (n correct / n subjects)."""
    lines = []
    for i, r in enumerate(rows, 1):
        if not r.predictions or "subject" not in r.predictions:
            continue
        v = majority_vote(r.predictions)
        pct = f"{100 * v.accuracy:.1f}" if v.subjects else "-"
        lines.append(f'<tr><td class="num">{i}</td><td class="name">{escape(r.name)}</td>'
                     f"<td>{escape(short_protocol(r))}</td><td class=\"num\">{v.correct} / {v.subjects}</td>"
                     f'<td class="num">{pct}</td><td class="num">{v.ties}</td></tr>')
    if not lines:
        return "<p>(no row carries out-of-fold predictions, so no patient-level vote)</p>"
    return "\n".join(['<table id="majority-vote">',
                      "<caption>Patient-level majority vote: a subject is classified by the class most of its cells "
                      "were given (out-of-fold); ties count as wrong</caption>",
                      "<thead><tr><th>#</th><th>Model</th><th>Protocol</th><th>subjects correct</th>"
                      "<th>subject-level accuracy (%)</th><th>ties</th></tr></thead><tbody>", *lines,
                      "</tbody></table>"])


def subjects_html(rows: Sequence[ResultRow], figure: Figure, sort_by: str = "f1_weighted") -> str:
    """The per-subject section: each subject's accuracy in the shown rows (:func:`shown_rows`) as a table and a
    strip plot, then every row's patient-level majority vote."""
    shown = shown_rows(rows, sort_by)
    if not shown:
        return "<p>(no row records per-subject accuracy)</p>\n" + votes_html(rows)
    which = ("every row" if len(shown) == sum(bool(r.per_subject_accuracy) for r in rows)
             else f"the best row of each protocol and the next best by {sort_by}, {len(shown)} of "
                  f"{len(rows)} rows")
    index = {id(r): i for i, r in enumerate(rows, 1)}
    head = ["subject", "class", *[f"#{index[id(r)]} {r.name} ({short_protocol(r)})" for r in shown]]
    lines = ['<table id="per-subject">',
             f"<caption>Accuracy of each subject's test cells (%), {escape(which)}; class: the subject's true "
             "class where the row's predictions give it</caption>",
             "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for subject, truth, accs in per_subject_lines(shown):
        lines.append(f'<tr data-subject="{escape(subject)}"><td>{escape(subject)}</td><td>{escape(truth)}</td>'
                     + "".join(f'<td class="num">{a}</td>' for a in accs) + "</tr>")
    lines.append("</tbody></table>")
    plot = figure(lambda p: plot_per_subject(shown, p), f"Per-subject accuracy of {which}: one dot per subject")
    return "\n".join([*lines, plot, votes_html(rows)])
