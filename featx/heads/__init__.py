"""Classifier heads on stored features: one registry, each head a scikit-learn ``Pipeline``.

``make_head("svm", preprocess=["standard"])`` returns ``Pipeline([("standard", StandardScaler()),
("clf", RBFSVMClassifier(...))])``. Every head accepts the class labels as integers or strings, so it drops
into ``cross_validate`` or ``GridSearchCV`` like any scikit-learn classifier. The torch
``SoftmaxClassifier`` is the study's fully connected softmax head (optionally one hidden layer with
dropout); it trains on CUDA when present.

Any scikit-learn classifier of your own is a head too (:func:`head_of`, :func:`import_head`; ``get_head``
and ``make_head`` take it in place of a name).

Modules: ``spec`` (:class:`HeadSpec`), ``registry`` (:func:`make_head`, :func:`check_params`), ``custom``
(your own estimator as a head), ``preprocess`` (the
steps before a head, as a typed value), ``softmax``, ``svm``, ``xgboost`` (featx's own estimators),
``scores`` (what a fitted head ranks rows by), ``settings`` (:class:`HeadSettings`: what every head fit shares,
checked once).
"""
from featx.heads.custom import head_of, import_head
from featx.heads.preprocess import Preprocess, Step, check_preprocess, preprocess_steps, preprocess_text
from featx.heads.registry import (
                                  HEADS,
                                  MANAGED_PARAMS,
                                  HeadSpec,
                                  check_params,
                                  fit_params,
                                  get_head,
                                  head_params,
                                  head_specs,
                                  list_heads,
                                  make_head,
                                  settable_params,
)
from featx.heads.scores import has_probability, positive_scores, predict_and_score
from featx.heads.settings import HeadSettings
from featx.heads.softmax import SoftmaxClassifier
from featx.heads.svm import RBFSVMClassifier
from featx.heads.xgboost import XGBoostClassifier

__all__ = ["HEADS", "MANAGED_PARAMS", "HeadSettings", "HeadSpec", "Preprocess", "RBFSVMClassifier",
           "SoftmaxClassifier", "Step", "XGBoostClassifier", "check_params", "check_preprocess", "fit_params",
           "get_head", "has_probability", "head_of", "head_params", "head_specs", "import_head", "list_heads",
           "make_head", "positive_scores", "predict_and_score", "preprocess_steps", "preprocess_text",
           "settable_params"]
