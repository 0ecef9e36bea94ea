"""Evaluation: protocols (:mod:`.splits`), metrics with a subject bootstrap (:mod:`.metrics`) and the grid of
heads x folds that turns feature sets into result rows (:mod:`.grid`), with nested parameter search
(:mod:`.search`); every input of a grid checked before any fit (:mod:`.inputs`). Nothing here
writes a file."""
from featx.evaluation.grid import compare, evaluate, evaluate_many, run_grid
from featx.evaluation.inputs import GridPlan, check_grid
from featx.evaluation.metrics import bootstrap_ci, compute_metrics, resolve_positive, roc_points, summarize_folds
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

__all__ = ["CV_CHOICES", "DEFAULT_SPACES", "SEARCH_METHODS", "GridPlan", "LogUniform", "Search",
           "HELD_OUT_SPLITS", "METRICS", "Protocol", "bootstrap_ci", "check_cv", "check_grid",
           "compare", "compute_metrics", "evaluate", "evaluate_many", "every_row_has_subject",
           "held_out_protocol", "labelled_rows", "make_splits", "resolve_positive", "roc_points", "run_grid",
           "summarize_folds", "tuned_protocol", "without_unknown_subjects"]
