"""Heads: the registry, preprocessing, the torch softmax estimator (scikit-learn's own checks), class weights."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import recall_score, roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.errors import FeatxError
from featx.heads import (HEADS, RBFSVMClassifier, SoftmaxClassifier, XGBoostClassifier, list_heads, make_head,
                         parse_params, parse_preprocess, positive_scores)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Every check as scikit-learn ships it. One check cannot hold for XGBoost: histogram boosting with row
# subsampling is not "a weight of 2 = the row twice" (scikit-learn marks its HistGradientBoostingClassifier
# the same way).
_XGB_EXPECTED = {"check_sample_weight_equivalence_on_dense_data":
                 "histogram boosting: sample_weight is not equivalent to removing/repeating samples"}


@parametrize_with_checks([SoftmaxClassifier(device="cpu"), RBFSVMClassifier(),
                          XGBoostClassifier(n_estimators=20, device="cpu", n_jobs=1)],
                         expected_failed_checks=lambda est: _XGB_EXPECTED if isinstance(est, XGBoostClassifier) else {})
def test_softmax_rbf_svm_and_xgboost_pass_sklearn_checks(estimator, check):
    check(estimator)


def test_rbf_svm_scores_do_not_depend_on_the_rows_scored_together():
    # float32 kernels from BLAS differ between one row and many (AVX2 vs AVX-512 paths); float64 must not
    X, y = _data(n=400, d=64)
    model = RBFSVMClassifier(gamma=0.02).fit(X[:300], y[:300])
    batch = model.decision_function(X[300:])
    one_by_one = np.array([model.decision_function(X[i:i + 1])[0] for i in range(300, 400)])
    np.testing.assert_allclose(one_by_one, batch, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.predict(X[300:]), [model.predict(X[i:i + 1])[0] for i in range(300, 400)])
    assert model.support_vectors_.dtype == np.float64


def test_rbf_svm_on_a_blas_kernel_equals_libsvm_rbf():
    X, y = _data(n=300, d=50)
    X = StandardScaler().fit_transform(X)
    for gamma in ("scale", 0.01):
        ours = RBFSVMClassifier(C=2.0, gamma=gamma).fit(X[:200], y[:200])
        ref = SVC(kernel="rbf", C=2.0, gamma=gamma).fit(X[:200], y[:200])
        np.testing.assert_allclose(ours.decision_function(X[200:]), ref.decision_function(X[200:]), atol=1e-5)
        np.testing.assert_array_equal(ours.predict(X[200:]), ref.predict(X[200:]))
        assert len(ours.support_vectors_) == len(ref.support_)
    # multiclass (one-vs-one) as well
    X3, y3 = make_classification(n_samples=240, n_features=20, n_informative=6, n_classes=3, random_state=0)
    ours = RBFSVMClassifier().fit(X3[:180], y3[:180])
    ref = SVC(kernel="rbf").fit(X3[:180], y3[:180])
    np.testing.assert_array_equal(ours.predict(X3[180:]), ref.predict(X3[180:]))


def _data(n=240, d=10, weights=None, seed=0):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=6, n_redundant=0, class_sep=1.5,
                               weights=weights, random_state=seed)
    return X.astype(np.float32), y


def test_registry_lists_every_head_and_refuses_unknown_names():
    assert list_heads() == ["softmax", "logistic", "linear-svm", "svm", "xgboost", "random-forest", "knn"]
    with pytest.raises(FeatxError) as err:
        make_head("resnet-svm")
    msg = str(err.value)
    assert "resnet-svm" in msg and all(name in msg for name in HEADS)


@pytest.mark.parametrize("name", list_heads())
def test_every_head_learns_separable_features(name):
    X, y = _data()
    labels = np.array(["hem", "all"])[y]  # string labels work for every head
    model = make_head(name, device="cpu", seed=0)
    model.fit(X[:180], labels[:180])
    acc = float(np.mean(model.predict(X[180:]) == labels[180:]))
    assert acc >= 0.85, (name, acc)
    scores = positive_scores(model, X[180:], "all")
    assert scores.shape == (60,)
    assert roc_auc_score(labels[180:] == "all", scores) >= 0.9


def test_positive_scores_follow_the_positive_class_for_decision_functions():
    X, y = _data()
    model = make_head("linear-svm").fit(X, y)
    s1 = positive_scores(model, X, 1)
    s0 = positive_scores(model, X, 0)
    np.testing.assert_allclose(s0, -s1)
    assert roc_auc_score(y == 1, s1) > 0.9 and roc_auc_score(y == 0, s0) > 0.9
    assert np.all(positive_scores(model, X, 7) == 0)  # a class the model never saw


def test_preprocess_steps_and_errors():
    steps = parse_preprocess("standard+pca:8")
    assert [name for name, _ in steps] == ["standard", "pca"] and steps[1][1].n_components == 8
    assert parse_preprocess("none") == [] and [n for n, _ in parse_preprocess("l2")] == ["l2"]
    model = make_head("logistic", preprocess="standard+pca:5").fit(*_data())
    assert model.named_steps["pca"].components_.shape == (5, 10)
    for bad, words in (("pca:x", "pca:N"), ("zscore", "unknown step 'zscore'"), ("l2+l2", "once")):
        with pytest.raises(FeatxError, match=words):
            parse_preprocess(bad)


def test_params_reach_the_estimator_and_bad_ones_are_user_errors():
    model = make_head("svm", C=3.5)
    assert model.named_steps["clf"].C == 3.5
    assert parse_params(["C=10", "svm.gamma=0.5", "solver=lbfgs"]) == {"C": 10, "svm": {"gamma": 0.5},
                                                                        "solver": "lbfgs"}
    with pytest.raises(FeatxError, match="unknown head"):
        parse_params(["vgg.C=1"])
    with pytest.raises(FeatxError, match="key=value"):
        parse_params(["C10"])
    with pytest.raises(FeatxError, match="bad parameter"):
        make_head("knn", no_such_option=1)


def test_softmax_is_deterministic_given_a_seed_and_differs_across_seeds():
    X, y = _data()
    p1 = SoftmaxClassifier(hidden=16, random_state=3, device="cpu").fit(X, y).predict_proba(X)
    p2 = SoftmaxClassifier(hidden=16, random_state=3, device="cpu").fit(X, y).predict_proba(X)
    p3 = SoftmaxClassifier(hidden=16, random_state=4, device="cpu").fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert np.abs(p1 - p3).max() > 1e-4
    np.testing.assert_allclose(p1.sum(axis=1), 1.0)


def test_softmax_hidden_layer_with_dropout_matches_a_linear_head_on_easy_data():
    X, y = _data(n=400)
    linear = cross_val_score(SoftmaxClassifier(device="cpu"), X, y, cv=4).mean()
    hidden = cross_val_score(SoftmaxClassifier(hidden=64, dropout=0.5, device="cpu"), X, y, cv=4).mean()
    assert linear > 0.85 and hidden > 0.85
    model = SoftmaxClassifier(hidden=64, device="cpu").fit(X, y)
    assert [type(m).__name__ for m in model.module_] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.module_[1].weight.shape == (64, 10)


@pytest.mark.parametrize("name", ["softmax", "logistic", "svm", "xgboost", "random-forest"])
def test_balanced_class_weight_raises_minority_recall(name):
    # 85:15 imbalance with overlapping classes: weighting must recover more of the minority class
    X, y = make_classification(n_samples=600, n_features=20, n_informative=4, class_sep=0.6, weights=[0.85],
                               flip_y=0.02, random_state=1)
    train, test = slice(0, 400), slice(400, None)
    plain = make_head(name, device="cpu").fit(X[train], y[train])
    weighted = make_head(name, device="cpu", class_weight="balanced").fit(X[train], y[train])
    r_plain = recall_score(y[test], plain.predict(X[test]), pos_label=1)
    r_weighted = recall_score(y[test], weighted.predict(X[test]), pos_label=1)
    assert r_weighted > r_plain + 0.05, (name, r_plain, r_weighted)


def test_knn_ignores_class_weight_and_xgboost_turns_it_into_sample_weights():
    assert make_head("knn", class_weight="balanced").named_steps["clf"].get_params()["n_neighbors"] == 5
    with pytest.raises(FeatxError, match="class-weight"):
        make_head("svm", class_weight="inverse")
    X, y = _data(n=200, weights=[0.8])
    model = XGBoostClassifier(n_estimators=5, class_weight="balanced", device="cpu").fit(X, np.array(["a", "b"])[y])
    assert list(model.classes_) == ["a", "b"] and model.predict_proba(X).shape == (200, 2)


def test_score_only_heads_have_no_probability():
    X, y = _data()
    for name in ("svm", "linear-svm"):
        model = make_head(name).fit(X, y)
        assert not hasattr(model, "predict_proba") and not HEADS[name].probability
        # the score is the decision function, and its sign is the decision
        np.testing.assert_array_equal(model.predict(X), (positive_scores(model, X, 1) > 0).astype(int))
    with pytest.raises(FeatxError, match="bad parameter"):
        make_head("svm", probability=True)  # calibration was dropped: the saved head is the evaluated one
