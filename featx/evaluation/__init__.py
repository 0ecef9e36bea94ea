"""Evaluation: protocols (objects in :mod:`.protocols` and :mod:`.tuned`, by name in :mod:`.splits`), metrics
(:mod:`.metrics`) with intervals over subjects (:mod:`.intervals`), paired differences between rows
(:mod:`.differences`) and the grid of heads x folds that turns feature sets into result rows (:mod:`.grid`), with
nested parameter search (:mod:`.search`); every input of a grid checked before any fit (:mod:`.inputs`). Nothing
here writes a file."""
from featx.evaluation.differences import compare_rows
from featx.evaluation.grid import compare, evaluate, evaluate_many, run_grid
from featx.evaluation.inputs import GridPlan, check_grid
from featx.evaluation.intervals import OutOfFold, difference, interval, intervals
from featx.evaluation.metrics import compute_metrics, resolve_positive, roc_points, summarize_folds
from featx.evaluation.protocols import (
                                        AutoProtocol,
                                        BaseProtocol,
                                        DataFolds,
                                        Folds,
                                        HeldOut,
                                        Hybrid,
                                        ImageKFold,
                                        SplitterProtocol,
                                        SubjectKFold,
)
from featx.evaluation.search import DEFAULT_SPACES, SEARCH_METHODS, LogUniform, Search
from featx.evaluation.splits import (
                                        CV_CHOICES,
                                        HELD_OUT_SPLITS,
                                        PROTOCOLS,
                                        Protocol,
                                        check_cv,
                                        every_row_has_subject,
                                        held_out_protocol,
                                        labelled_rows,
                                        make_splits,
                                        protocol_from,
                                     protocol_name,
                                        register_protocol,
                                        split_features,
                                        tuned_protocol,
                                        without_unknown_subjects,
)
from featx.evaluation.tuned import TunedHoldout, tuned_split
from featx.results import METRICS

__all__ = ["AutoProtocol", "BaseProtocol", "CV_CHOICES", "DEFAULT_SPACES", "DataFolds", "Folds", "GridPlan",
           "HELD_OUT_SPLITS", "HeldOut", "Hybrid", "ImageKFold", "LogUniform", "METRICS", "OutOfFold", "PROTOCOLS",
           "Protocol", "SEARCH_METHODS", "Search", "SplitterProtocol", "SubjectKFold", "TunedHoldout", "check_cv",
           "check_grid", "compare", "compare_rows", "compute_metrics", "difference", "evaluate", "evaluate_many",
           "every_row_has_subject", "held_out_protocol", "interval", "intervals", "labelled_rows", "make_splits",
           "protocol_from", "protocol_name", "register_protocol", "resolve_positive", "roc_points", "run_grid",
           "split_features", "summarize_folds", "tuned_protocol", "tuned_split", "without_unknown_subjects"]
