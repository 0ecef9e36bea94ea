"""Reports of result rows (:class:`featx.results.ResultRow`): what the terminal table shows (the CLI
draws it), the Markdown table, the files of a results folder and PNG plots. Image-level,
OPTIMISTIC and PARTIAL rows are marked everywhere."""
from featx.imports import callable_module
from featx.report.files import (
    PREDICTION_COLUMNS,
    MergedResults,
    merge_results,
    read_results,
    write_predictions,
    write_results,
)
from featx.report.forest import plot_forest
from featx.report.gallery import GalleryResult, plot_gallery
from featx.report.html import write_html_report
from featx.report.markdown import markdown_table, results_markdown
from featx.report.notes import (
    IMAGE_LEVEL_NOTE,
    OPTIMISTIC_NOTE,
    STATS_NOTE,
    TABLE_METRICS,
    excluded_notes,
    format_pct,
    partial_notes,
    protocol_text,
    protocol_title,
    short_protocol,
    slug,
)
from featx.report.outputs import (
    MANIFEST,
    check_out,
    claimed,
    clobber,
    find_results,
    free_folder,
    refuse_results_folder,
    results_commit,
    write_manifest,
)
from featx.report.plots import metric_label, plot_confusion, plot_history, plot_roc
from featx.report.table import TERMINAL_METRICS
from featx.report.table2 import Cell, Table2, pivot_table, to_csv, to_html, to_latex, to_markdown

__all__ = ["IMAGE_LEVEL_NOTE", "MANIFEST", "OPTIMISTIC_NOTE", "PREDICTION_COLUMNS", "STATS_NOTE", "TABLE_METRICS",
           "TERMINAL_METRICS", "Cell", "GalleryResult", "MergedResults", "Table2", "check_out", "claimed", "clobber",
           "excluded_notes", "find_results", "format_pct", "free_folder", "markdown_table", "merge_results",
           "metric_label", "partial_notes", "pivot_table", "plot_confusion", "plot_forest", "plot_gallery",
           "plot_history", "plot_roc",
           "protocol_text", "protocol_title", "read_results", "refuse_results_folder", "results_commit",
           "results_markdown", "short_protocol", "slug", "to_csv", "to_html", "to_latex", "to_markdown",
           "write_html_report", "write_manifest", "write_predictions", "write_results"]

callable_module(__name__, "write_html_report")  # featx.report(...) (see featx/__init__.py)
