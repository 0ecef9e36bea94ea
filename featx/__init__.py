"""featx: deep features once, many heads in seconds.

The Python API, one function per command (each loaded on first use, so ``import featx`` stays fast)::

    import featx
    featx.extract("data/C-NMC", "vgg16.h5", backbone="vgg16")        # featx extract
    features = featx.load_features("vgg16.h5", "fc7")               # a FeatureSet: X, y, subjects, ...
    row = featx.evaluate(features, "svm")                           # one head (or any scikit-learn classifier)
    result = featx.compare(["vgg16.h5"], ["logistic", "svm"])       # featx compare: result.rows
    featx.rows_to_frame(result.rows)                                # a pandas DataFrame (pandas optional)
    featx.report(result.rows, "report.html")                        # featx report

``classify`` (featx classify), ``finetune``, ``hybrid``, ``predict``, ``gallery`` and ``explain`` run the commands of
those names, ``plot_feature_map`` runs ``featx map``;
``ResultRow`` and ``FeatureSet`` are the values they pass around.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> (module, attribute); attribute None: the module itself, callable as its main function
_API = {
    "extract": ("featx.extract", None),
    "load_features": ("featx.store.reader", "load_features"),
    "evaluate": ("featx.evaluation.grid", "evaluate"),
    "classify": ("featx.workflows.classify", "run_classify"),
    "compare": ("featx.workflows.classify", "run_compare"),
    "finetune": ("featx.finetune", None),
    "hybrid": ("featx.workflows.hybrid", "hybrid"),
    "predict": ("featx.workflows.predict", "predict"),
    "report": ("featx.report", None),
    "gallery": ("featx.report.gallery", "gallery"),
    "explain": ("featx.explain", None),
    "plot_feature_map": ("featx.report.feature_map_plot", "plot_feature_map"),
    "rows_to_frame": ("featx.frames", "rows_to_frame"),
    "ResultRow": ("featx.results", "ResultRow"),
    "FeatureSet": ("featx.store.reader", "FeatureSet"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'featx' has no attribute {name!r}")
    module_name, attribute = _API[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
