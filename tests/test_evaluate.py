"""Protocol and metrics: each metric against scikit-learn's own function, subject-grouped folds, refusals,
the bootstrap, and image-level CV scoring higher than subject-level CV when subjects carry a signature."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from featx.errors import FeatxError
from featx.evaluate import (METRICS, _confusion_metrics, _weighted_auc, bootstrap_ci, compute_metrics, evaluate,
                            evaluate_many, make_splits, resolve_positive, summarize_folds)
from featx.heads import make_head
from featx.store import FeatureSet


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def subject_features(n_all=8, n_hem=6, cells=20, d=32, signal=0.45, tint=1.6, seed=0, prelim=0) -> FeatureSet:
    """Features with a weak class signal and a strong per-subject offset (the stain tint of demo data)."""
    rng = np.random.default_rng(seed)
    X, y, subj, split = [], [], [], []
    direction = np.r_[np.ones(6), np.zeros(d - 6)]
    for i in range(n_all + n_hem + prelim):
        label = 0 if (i < n_all or (i >= n_all + n_hem and i % 2 == 0)) else 1
        offset = rng.normal(0, tint, d)
        X.append(rng.normal(0, 1, (cells, d)) + offset + (signal if label == 0 else -signal) * direction)
        y += [label] * cells
        subj += [f"S{i}"] * cells
        split += ["prelim" if i >= n_all + n_hem else f"fold_{i % 3}"] * cells
    n = len(y)
    return FeatureSet(X=np.vstack(X).astype(np.float32), y=np.array(y, dtype=np.int64), classes=["all", "hem"],
                      paths=np.array([f"img/{i}.bmp" for i in range(n)]), subjects=np.array(subj),
                      splits=np.array(split), name="demo/fc", backbone="demo", tap="fc", positive="all")


# ---- metrics ---------------------------------------------------------------------------------------
Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
Y_PRED = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
SCORE0 = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.45, 0.2, 0.3, 0.1, 0.55])   # score of class 0 ("all")


def test_each_metric_equals_sklearn_and_hand_counts():
    m = compute_metrics(Y_TRUE, Y_PRED, SCORE0, classes=["all", "hem"], positive="all")
    # positive class "all" (index 0): TP=4, FP=1, FN=2
    assert m["precision"] == pytest.approx(4 / 5) == skm.precision_score(Y_TRUE, Y_PRED, pos_label=0)
    assert m["recall"] == pytest.approx(4 / 6) == skm.recall_score(Y_TRUE, Y_PRED, pos_label=0)
    assert m["f1"] == pytest.approx(8 / 11) == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, pos_label=0))
    assert m["accuracy"] == pytest.approx(0.7) == skm.accuracy_score(Y_TRUE, Y_PRED)
    assert m["f1_weighted"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="weighted"))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2) \
        == pytest.approx(skm.balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(Y_TRUE == 0, SCORE0)) == pytest.approx(22 / 24)
    assert m["confusion"] == [[4, 2], [1, 3]]
    # the other class as positive
    h = compute_metrics(Y_TRUE, Y_PRED, 1 - SCORE0, classes=["all", "hem"], positive="hem")
    assert h["precision"] == pytest.approx(skm.precision_score(Y_TRUE, Y_PRED, pos_label=1)) == pytest.approx(0.6)
    assert h["recall"] == pytest.approx(0.75) and h["f1_weighted"] == pytest.approx(m["f1_weighted"])


def test_multiclass_metrics_and_per_subject_accuracy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = np.where(rng.random(60) < 0.7, y, rng.integers(0, 3, 60))
    subjects = np.array([f"P{i % 4}" for i in range(60)])
    m = compute_metrics(y, p, None, classes=["a", "b", "c"], positive="b", subjects=subjects)
    assert m["precision"] == pytest.approx(skm.precision_score(y, p, labels=[1], average="macro"))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert np.isnan(m["roc_auc"])
    assert m["per_subject_accuracy"]["P2"] == pytest.approx(np.mean((y == p)[subjects == "P2"]))
    assert sorted(m["per_subject_accuracy"]) == ["P0", "P1", "P2", "P3"]


def test_one_class_test_fold_gives_nan_auc_not_an_error():
    m = compute_metrics([0, 0, 0], [0, 1, 0], [0.9, 0.2, 0.8], classes=["all", "hem"], positive="all")
    assert np.isnan(m["roc_auc"]) and m["accuracy"] == pytest.approx(2 / 3)


def test_positive_defaults_to_all_and_unknown_positive_is_refused():
    assert resolve_positive(["all", "hem"]) == 0
    assert resolve_positive(["cat", "dog"]) == 1
    assert resolve_positive(["all", "hem"], "hem") == 1
    with pytest.raises(FeatxError, match="'blast' is not a class.*all, hem"):
        resolve_positive(["all", "hem"], "blast")


def test_vectorised_bootstrap_metrics_equal_sklearn_on_the_plain_sample():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))
    C = skm.confusion_matrix(y, p)[None]
    v = _confusion_metrics(C, pos=2)
    assert v["accuracy"][0] == pytest.approx(skm.accuracy_score(y, p))
    assert v["precision"][0] == pytest.approx(skm.precision_score(y, p, labels=[2], average="macro"))
    assert v["recall"][0] == pytest.approx(skm.recall_score(y, p, labels=[2], average="macro"))
    assert v["f1"][0] == pytest.approx(skm.f1_score(y, p, labels=[2], average="macro"))
    assert v["f1_weighted"][0] == pytest.approx(skm.f1_score(y, p, average="weighted"))
    assert v["f1_macro"][0] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert v["balanced_accuracy"][0] == pytest.approx(skm.balanced_accuracy_score(y, p))
    # weighted AUC (integer weights = repeated rows, ties included) equals sklearn's
    score = np.round(rng.random(200), 1)
    w = rng.integers(0, 4, 200).astype(float)
    auc = _weighted_auc(y == 2, score, w[None])
    assert auc[0] == pytest.approx(skm.roc_auc_score(y == 2, score, sample_weight=w))


def test_bootstrap_interval_resamples_subjects_and_brackets_the_estimate():
    rng = np.random.default_rng(2)
    subjects = np.repeat([f"S{i}" for i in range(20)], 15)
    y = np.repeat(rng.integers(0, 2, 20), 15)
    error_rate = np.repeat(rng.uniform(0, 0.5, 20), 15)  # some subjects are much harder than others
    p = np.where(rng.random(300) >= error_rate, y, 1 - y)
    ci = bootstrap_ci(y, p, rng.random(300), subjects, n_classes=2, positive=0, n_boot=500, seed=0)
    acc = skm.accuracy_score(y, p)
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]
    per_image = bootstrap_ci(y, p, None, None, n_classes=2, positive=0, n_boot=500, seed=0)
    # subjects as the resampling unit: a wider interval than pretending the 300 cells are independent
    width = ci["f1_weighted"][1] - ci["f1_weighted"][0]
    assert width > 1.3 * (per_image["f1_weighted"][1] - per_image["f1_weighted"][0]), width
    assert np.isnan(per_image["roc_auc"][0])
    # the same seed gives the same interval
    assert bootstrap_ci(y, p, None, subjects, n_classes=2, positive=0, n_boot=500, seed=0)["accuracy"] == ci["accuracy"]


def test_summarize_folds_mean_std_and_summed_confusion():
    folds = [compute_metrics([0, 0, 1, 1], [0, 0, 1, 0], None, classes=["all", "hem"], positive="all"),
             compute_metrics([0, 1, 1, 1], [0, 1, 1, 1], None, classes=["all", "hem"], positive="all")]
    s = summarize_folds(folds)
    # the sample standard deviation of the fold values (ddof=1), as the report says
    assert s["accuracy"] == pytest.approx(0.875) and s["accuracy_std"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert s["confusion"] == [[3, 0], [1, 4]] and s["n_folds"] == 2
    assert np.isnan(s["roc_auc"])


# ---- splits ----------------------------------------------------------------------------------------
def test_subject_folds_never_share_a_subject_and_cover_every_row_once():
    fs = subject_features()
    for seed in range(4):
        prot = make_splits(fs.subjects, fs.y, fs.splits, cv="subject", n_folds=5, seed=seed)
        assert prot.name == "subject" and not prot.image_level and prot.n_folds == 5
        tested = np.concatenate([test for _, test in prot.folds])
        assert sorted(tested) == list(range(len(fs.y)))
        for train, test in prot.folds:
            assert not set(fs.subjects[train]) & set(fs.subjects[test])
            assert set(fs.y[train]) == {0, 1}


def test_auto_is_subject_when_known_and_image_level_otherwise():
    fs = subject_features()
    assert make_splits(fs.subjects, fs.y, fs.splits).name == "subject"
    prot = make_splits(np.array([""] * len(fs.y)), fs.y, fs.splits, n_folds=4)
    assert prot.name == "image" and prot.image_level and "IMAGE-LEVEL 4-fold" in prot.label
    assert "subjects unknown" in prot.note


def test_image_level_folds_are_labelled_and_leak_subjects():
    fs = subject_features()
    prot = make_splits(fs.subjects, fs.y, fs.splits, cv="image", n_folds=5, seed=0)
    assert prot.label == "IMAGE-LEVEL 5-fold (cells of one subject on both sides)" and prot.image_level
    assert any(set(fs.subjects[a]) & set(fs.subjects[b]) for a, b in prot.folds)
    # stratified: each test fold keeps the class ratio (within one row)
    for _, test in prot.folds:
        assert abs(np.mean(fs.y[test]) - np.mean(fs.y)) < 0.05


def test_given_folds_and_held_out_prelim():
    fs = subject_features(prelim=3)
    prot = make_splits(fs.subjects, fs.y, fs.splits, cv="fold")
    assert prot.n_folds == 3 and prot.label.startswith("C-NMC folds (fold_0, fold_1, fold_2")
    prelim = np.flatnonzero(fs.splits == "prelim")
    for k, (train, test) in enumerate(prot.folds):
        assert set(fs.splits[test]) == {f"fold_{k}"} and not set(prelim) & (set(train) | set(test))
    assert not prot.image_level  # subjects differ between the folds here
    held = make_splits(fs.subjects, fs.y, fs.splits, eval_set="prelim")
    (train, test), = held.folds
    assert held.name == "prelim" and sorted(test) == sorted(prelim)
    assert set(fs.splits[train]) == {"fold_0", "fold_1", "fold_2"}
    assert held.label == "held-out prelim (trained on fold_0, fold_1, fold_2)"
    # subject CV leaves the prelim phase out of the folds and says so
    sub = make_splits(fs.subjects, fs.y, fs.splits, cv="subject")
    assert not set(prelim) & set(np.concatenate([t for _, t in sub.folds]))
    assert "60 rows of held-out splits (prelim) left out" in sub.note


@pytest.mark.parametrize("kwargs, words", [
    (dict(cv="subject", n_folds=20), "only 14 subjects for --folds 20.*--folds 14"),
    (dict(cv="image", n_folds=200), "rarest class has 120 labelled rows"),
    (dict(cv="loo"), "--cv 'loo': choose one of auto, subject, image, fold"),
    (dict(cv="subject", n_folds=1), "at least 2 folds"),
    (dict(eval_set="final"), "no labelled rows of split 'final'"),
])
def test_impossible_protocols_are_refused_with_the_fix(kwargs, words):
    fs = subject_features()
    with pytest.raises(FeatxError, match=words):
        make_splits(fs.subjects, fs.y, fs.splits, **kwargs)


def test_one_class_and_missing_subjects_are_refused():
    fs = subject_features()
    with pytest.raises(FeatxError, match="only one class"):
        make_splits(fs.subjects, np.zeros(len(fs.y), dtype=int), fs.splits)
    with pytest.raises(FeatxError, match="--cv subject needs a subject id.*--cv image"):
        make_splits(np.array([""] * len(fs.y)), fs.y, fs.splits, cv="subject")
    # one HEM subject cannot be both trained on and tested: some training fold has one class
    few = subject_features(n_all=4, n_hem=1, cells=5)
    with pytest.raises(FeatxError, match="training part of fold .* only one class.*fewer --folds"):
        make_splits(few.subjects, few.y, few.splits, cv="subject", n_folds=5)


# ---- evaluate --------------------------------------------------------------------------------------
def test_image_level_cv_scores_higher_than_subject_level_cv():
    fs = subject_features()
    rows = {cv: evaluate(fs, "logistic", cv=cv, n_boot=200) for cv in ("subject", "image")}
    sub, img = rows["subject"], rows["image"]
    assert img["accuracy"] > sub["accuracy"] + 0.15, (img["accuracy"], sub["accuracy"])
    assert img["f1_weighted"] > sub["f1_weighted"] + 0.15
    assert img["image_level"] and not sub["image_level"]
    assert sub["protocol_label"] == "subject-level 5-fold"
    for r in (sub, img):
        assert 0 <= r["accuracy_ci_low"] <= r["accuracy"] + 0.1 and r["accuracy_ci_high"] <= 1
        assert r["n_test"] == 280 and r["n_subjects"] == 14 and r["positive"] == "all"
        assert np.sum(r["confusion"]) == 280 and set(r["per_subject_accuracy"]) == {f"S{i}" for i in range(14)}
        assert all(f"{m}_std" in r for m in METRICS)


def test_evaluate_row_fields_and_parallel_folds_give_identical_results():
    fs = subject_features(n_all=5, n_hem=5, cells=10, d=12)
    one, = evaluate_many(fs, ["logistic"], cv="subject", n_folds=5, seed=1, jobs=1, n_boot=100)
    two, = evaluate_many(fs, ["logistic"], cv="subject", n_folds=5, seed=1, jobs=2, n_boot=100)
    for m in METRICS:
        assert one[m] == pytest.approx(two[m], nan_ok=True) and one[f"{m}_std"] == pytest.approx(two[f"{m}_std"])
    assert one["confusion"] == two["confusion"]
    assert one["model"] == "demo/fc + logistic" and one["backbone"] == "demo" and one["tap"] == "fc"
    assert one["head"] == "logistic" and one["protocol"] == "subject" and one["n_folds"] == 5
    assert one["settings"]["preprocess"] == "standard" and one["settings"]["seed"] == 1
    assert one["roc"]["fpr"][0] == 0 and one["roc"]["tpr"][-1] == 1


def test_prelim_evaluation_trains_on_folds_and_tests_once():
    fs = subject_features(prelim=4)
    row = evaluate(fs, "svm", eval_set="prelim", n_boot=100)
    assert row["protocol"] == "prelim" and row["n_folds"] == 1 and row["n_test"] == 80
    assert row["n_train"] == 280 and np.isnan(row["accuracy_std"])  # one test set: no spread over folds
    train, test = fs.splits != "prelim", fs.splits == "prelim"
    manual = make_head("svm").fit(fs.X[train], fs.y[train]).predict(fs.X[test])
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(fs.y[test], manual))
    unlabelled = subject_features()
    unlabelled.y[:20] = -1  # unlabelled rows are ignored, not treated as a class
    assert evaluate(unlabelled, "logistic", n_boot=10)["n_test"] == 260


def test_unscoped_params_go_only_to_heads_that_take_them_and_bad_values_are_user_errors():
    fs = subject_features(n_all=5, n_hem=5, cells=6, d=12)
    rows = evaluate_many(fs, ["logistic", "knn"], cv="subject", n_folds=5, params={"C": 0.01}, n_boot=20)
    assert rows[0]["settings"]["params"] == {"C": 0.01} and rows[1]["settings"]["params"] == {}
    with pytest.raises(FeatxError, match="none of the heads logistic, knn takes it"):
        evaluate_many(fs, ["logistic", "knn"], cv="subject", n_folds=5, params={"Cee": 1}, n_boot=20)
    with pytest.raises(FeatxError, match="head logistic: bad parameter"):
        evaluate_many(fs, ["logistic"], cv="subject", n_folds=5, params={"C": "abc"}, n_boot=20)
    with pytest.raises(FeatxError, match="head knn: .*n_neighbors"):
        evaluate_many(fs, ["knn"], cv="subject", n_folds=5, params={"knn": {"n_neighbors": 500}}, n_boot=20)
    with pytest.raises(FeatxError, match="--jobs 0"):
        evaluate_many(fs, ["logistic"], cv="subject", n_folds=5, jobs=0, n_boot=20)
