"""results.md: the results table in Markdown, what its marks mean, the intervals and the nested searches."""
from __future__ import annotations

from collections.abc import Sequence

from featx.report.notes import (
    IMAGE_LEVEL_NOTE,
    STATS_NOTE,
    TABLE_METRICS,
    difference_note,
    difference_text,
    epoch_notes,
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
    selection_choices,
    selection_note,
    short_protocol,
)
from featx.results import ResultRow
from featx.scoring import get_metric


def _pct(row: ResultRow, metric: str) -> str:
    score = row.score(metric)
    return format_pct(score.mean, score.std)


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """The same table as Markdown (marked rows in bold with a ``*``), with the accuracy's 95% CI and, for
    compared rows, the paired difference from the protocol's reference row (Δ, its CI and p-value)."""
    compared = [r.comparison for r in rows if r.comparison]
    delta = [f"Δ {get_metric(compared[0]['metric']).short} (points, 95% CI)", "p"] if compared else []
    head = ["Model", "Protocol", *[f"{h} (%)" for _, h in TABLE_METRICS], "95% CI accuracy", *delta]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        flag, rest = flagged_protocol(r)
        protocol = flag + rest if r.optimistic else protocol_text(r)  # IMAGE-LEVEL: the ``*`` and the note
        protocol += provenance_suffix(r)
        if r.marked:
            protocol = f"**\\* {protocol}**"
        if r.selection_uncorrected:
            protocol = f"\u2020 {protocol}"
        if r.partial:
            protocol += f" **PARTIAL ({r.partial})**"
        cells = [r.name, protocol, *[_pct(r, m) for m, _ in TABLE_METRICS], interval_text(r.score("accuracy"))]
        if delta:
            cells += [difference_text(r) or "-", p_value_text(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def intervals_table(rows: Sequence[ResultRow]) -> str:
    """Every metric's 95% interval of every row (%; ``n/a`` where the design supports none)."""
    head = ["Model", "Protocol", *[f"{h} 95% CI" for _, h in TABLE_METRICS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, short_protocol(r)]
        cells += [interval_text(r.score(m), missing="n/a") for m, _ in TABLE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    methods = sorted({str((r.interval or {}).get("method")) for r in rows if r.interval})
    return "\n".join(lines) + "\n" + (f"\nMethod: {'; '.join(methods)}.\n" if methods else "")


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
    md += [f"{line}.\n" for line in epoch_notes(rows)]
    md += [f"PARTIAL: {note}.\n" for note in partial_notes(rows)]
    md += [f"{note}.\n" for note in excluded_notes(rows)]
    if note := difference_note(rows):
        md += [note, ""]
    md += [STATS_NOTE, ""]
    md += ["## 95% intervals", "", intervals_table(rows)]
    md += [f"- {note}." for note in interval_notes(rows)]
    md += [""] if interval_notes(rows) else []
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


