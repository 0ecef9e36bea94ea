"""Evaluation: protocols (:mod:`.splits`), metrics (:mod:`.metrics`) with intervals over subjects
(:mod:`.intervals`), paired differences between rows (:mod:`.differences`) and the grid of heads x folds that
turns feature sets into result rows (:mod:`.grid`), with nested parameter search (:mod:`.search`); every input of
a grid checked before any fit (:mod:`.inputs`). Nothing here writes a file."""
from featx.evaluation.differences import compare_rows
from featx.evaluation.grid import compare, evaluate, evaluate_many, run_grid
from featx.evaluation.inputs import GridPlan, check_grid
from featx.evaluation.intervals import OutOfFold, difference, interval, intervals
from featx.evaluation.metrics import compute_metrics, resolve_positive, roc_points, summarize_folds
from featx.evaluation.search import DEFAULT_SPACES, SEARCH_METHODS, LogUniform, Search
from featx.evaluation.splits import (
                                     CV_CHOICES,
                                     HELD_OUT_SPLITS,
                                     Protocol,
                                     check_cv,
                                     every_row_has_subject,
                                     held_out_protocol,
                                     labelled_rows,
                                     make_splits,
                                     tuned_protocol,
                                     without_unknown_subjects,
)
from featx.results import METRICS

__all__ = ["CV_CHOICES", "DEFAULT_SPACES", "GridPlan", "HELD_OUT_SPLITS", "LogUniform", "METRICS", "OutOfFold",
           "Protocol", "SEARCH_METHODS", "Search", "check_cv", "check_grid", "compare", "compare_rows",
           "compute_metrics", "difference", "evaluate", "evaluate_many", "every_row_has_subject",
           "held_out_protocol", "interval", "intervals", "labelled_rows", "make_splits", "resolve_positive",
           "roc_points", "run_grid", "summarize_folds", "tuned_protocol", "without_unknown_subjects"]
