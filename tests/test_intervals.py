"""Intervals over subjects and paired differences: the jackknife's leave-one-out values equal a recomputation
without each subject, designs that cannot support an interval say why, and rows of one protocol are compared
paired with their best row (marks, alignment, refusals)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from featx.errors import FeatxError, FeatxWarning
from featx.evaluation import OutOfFold, compare_rows, difference, interval, intervals
from featx.evaluation.intervals import design_reason, estimate, influence, leave_one_out
from featx.results import ResultRow, summary_scores

STUDIED = ("accuracy", "precision", "recall", "f1", "f1_weighted", "f1_macro", "balanced_accuracy", "roc_auc")


def _random_oof(rng, *, n=240, k=2, n_subjects=24, subjects=True, repeats=False, mixed=False):
    """Predictions of a model that is right ~75% of the time, on subjects of one class each (``mixed``: rows of
    several classes per subject), scores with ties, three folds (two repeats of them with ``repeats``)."""
    subject = rng.integers(0, n_subjects, n)
    y = rng.integers(0, k, n) if mixed else np.arange(n_subjects)[subject] % k
    pred = np.where(rng.random(n) < 0.75, y, rng.integers(0, k, n))
    score = np.round(rng.normal(size=n) + (y == 0), 1)
    fold = np.arange(n_subjects)[subject] % 3
    repeat = None
    if repeats:
        repeat = rng.integers(0, 2, n)
        fold = fold + 3 * repeat
    return OutOfFold(y, pred, score, fold, subject.astype(str) if subjects else None, k, 0, repeat)


@pytest.mark.parametrize("case", ["subjects", "images", "mixed classes", "repeats", "three classes"])
def test_leave_one_out_equals_the_estimate_recomputed_without_that_subject(case):
    rng = np.random.default_rng(3)
    oof = _random_oof(rng, subjects=case != "images", repeats=case == "repeats", mixed=case == "mixed classes",
                      k=3 if case == "three classes" else 2)
    unit, _ = oof.units()
    for metric in STUDIED:
        loo = leave_one_out(oof, metric)
        for u in rng.choice(unit.max() + 1, 6, replace=False):
            keep = unit != u
            without = OutOfFold(oof.y_true[keep], oof.y_pred[keep], oof.score[keep], oof.fold[keep],
                                None if oof.subject is None else oof.subject[keep], oof.n_classes, oof.positive,
                                oof.repeat[keep])
            expected = estimate(without, metric)
            assert (np.isnan(expected) and np.isnan(loo[u])) or loo[u] == pytest.approx(expected, abs=1e-12), \
                (metric, u)


def test_influence_is_the_derivative_by_each_subjects_weight():
    """The linearization the study compares with: d estimate / d (weight of a subject), against scikit-learn's
    weighted metrics differentiated numerically."""
    rng = np.random.default_rng(4)
    oof = _random_oof(rng)
    unit, _ = oof.units()
    weighted = {"accuracy": lambda y, p, s, w: skm.accuracy_score(y, p, sample_weight=w),
                "f1_weighted": lambda y, p, s, w: skm.f1_score(y, p, average="weighted", sample_weight=w),
                "roc_auc": lambda y, p, s, w: skm.roc_auc_score(y == 0, s, sample_weight=w)}
    for metric, fn in weighted.items():
        z = influence(oof, metric)

        def at(w, fn=fn):
            return np.mean([fn(oof.y_true[f], oof.y_pred[f], oof.score[f], w[f])
                            for f in (oof.fold == k for k in range(3))])
        for u in range(4):
            up, down = np.ones(len(unit)), np.ones(len(unit))
            up[unit == u] += 1e-5
            down[unit == u] -= 1e-5
            assert z[u] == pytest.approx((at(up) - at(down)) / 2e-5, rel=1e-4, abs=1e-9), (metric, u)


def test_interval_holds_the_estimate_stays_in_0_1_and_widens_with_fewer_subjects():
    rng = np.random.default_rng(5)
    wide = intervals(_random_oof(rng, n=200, n_subjects=12))
    narrow = intervals(_random_oof(rng, n=2000, n_subjects=120))
    for m in STUDIED:
        assert 0 < wide[m].low < wide[m].high < 1, m
        assert wide[m].high - wide[m].low > narrow[m].high - narrow[m].low, m
    oof = _random_oof(rng)
    for m in STUDIED:
        iv = interval(oof, m)
        assert iv.low <= estimate(oof, m) <= iv.high and iv.reason is None


def test_a_design_that_cannot_support_an_interval_says_why_instead_of_a_number():
    rng = np.random.default_rng(6)
    oof = _random_oof(rng, n_subjects=6)   # 3 folds of 2 subjects: one of each class per test fold
    reason = design_reason(oof, ["all", "hem"])
    assert reason == "test fold 1 holds 1 subject of class all (an interval needs 2 of each class in every test fold)"
    assert all(iv.low is None and iv.reason == reason for iv in intervals(oof, class_names=["all", "hem"]).values())
    # a perfect classifier: no spread between subjects, so no interval (never a point "interval" [100, 100])
    perfect = _random_oof(rng)
    perfect.y_pred = perfect.y_true.copy()
    iv = interval(perfect, "accuracy")
    assert iv.low is None and "no spread" in iv.reason
    # one test image of a class (subjects unknown)
    tiny = OutOfFold([0, 0, 1], [0, 1, 1], None, [0, 0, 0], None, 2, 0)
    assert intervals(tiny)["accuracy"].reason == "only 1 test image of class 1"
    assert intervals(tiny)["roc_auc"].reason == "no scores"


def test_paired_difference_of_equal_and_of_different_rows():
    rng = np.random.default_rng(7)
    a = _random_oof(rng, n=600, n_subjects=30)
    same = difference(a, a, "f1_weighted")
    assert same.delta == 0 and same.p_value == 1.0 and same.distinguishable is False
    better = OutOfFold(a.y_true, np.where(rng.random(600) < 0.5, a.y_true, a.y_pred), a.score, a.fold, a.subject,
                       2, 0)
    d = difference(better, a, "accuracy")
    assert d.delta == pytest.approx(estimate(better, "accuracy") - estimate(a, "accuracy")) and d.delta > 0.05
    assert d.low > 0 and d.p_value < 0.001 and d.distinguishable
    shuffled = OutOfFold(a.y_true, a.y_pred, a.score, (a.fold + 1) % 3, a.subject, 2, 0)
    assert difference(shuffled, a, "accuracy").reason == "not scored on the same test rows and folds"


# --------------------------------------------------------------------------------------------------
# compare_rows: each protocol's rows against its best row
# --------------------------------------------------------------------------------------------------
def _row(name, oof: OutOfFold, paths, protocol="subject", **marks) -> ResultRow:
    from featx.evaluation.intervals import fold_values
    classes = ["all", "hem"]
    return ResultRow(name=name, backbone=name.split("/")[0], tap="fc", head="logistic", protocol=protocol,
                    protocol_label=protocol, image_level=False, n_folds=3, n_train=1, n_test=len(paths),
                    n_subjects=0, classes=classes, positive="all",
                    predictions={"path": list(paths), "subject": list(oof.subject), "fold": (oof.fold + 1).tolist(),
                                 "y_true": [classes[i] for i in oof.y_true],
                                 "y_pred": [classes[i] for i in oof.y_pred], "score": oof.score.tolist()},
                     scores=summary_scores({m: float(np.nanmean(fold_values(oof, m))) for m in STUDIED}), **marks)


def _rows_of_three(rng, n=900, n_subjects=45):
    base = _random_oof(rng, n=n, n_subjects=n_subjects)
    paths = np.array([f"img/{i}.bmp" for i in range(n)])
    good = OutOfFold(base.y_true, np.where(rng.random(n) < 0.6, base.y_true, base.y_pred), base.score, base.fold,
                     base.subject, 2, 0)
    close = OutOfFold(base.y_true, np.where(rng.random(n) < 0.58, base.y_true, base.y_pred), base.score, base.fold,
                      base.subject, 2, 0)
    return base, good, close, paths


def test_rows_are_compared_with_their_protocols_best_row_and_close_ones_are_marked():
    rng = np.random.default_rng(8)
    base, good, close, paths = _rows_of_three(rng)
    order = rng.permutation(len(paths))  # the same rows in another order: aligned by path and fold
    reordered = OutOfFold(close.y_true[order], close.y_pred[order], close.score[order], close.fold[order],
                          close.subject[order], 2, 0)
    rows = [_row("a/fc + logistic", base, paths), _row("b/fc + logistic", good, paths),
            _row("c/fc + logistic", reordered, paths[order]),
            _row("d/fc + logistic", good, paths, protocol="prelim")]
    rows = compare_rows(rows, metric="accuracy")
    a, b, c, d = (r.comparison for r in rows)
    assert b["is_reference"] and b["reference"] == "b/fc + logistic" and b["delta"] == 0
    assert a["reference"] == c["reference"] == "b/fc + logistic"
    assert a["delta"] == pytest.approx(rows[0].mean("accuracy") - rows[1].mean("accuracy"))
    assert a["ci_high"] < 0 and a["close"] is False and a["mark"] is None and a["p_value"] < 0.05
    assert c["close"] is True and rows[2].close_mark == "\u2248 best" and "\u2248 best" in rows[2].marks
    assert c["ci_low"] < 0 < c["ci_high"] and c["p_value"] > 0.05
    assert d["is_reference"] and d["reference"] == "d/fc + logistic"  # its own protocol, its own best


def test_marked_rows_are_not_the_reference_and_unpaired_rows_say_why():
    rng = np.random.default_rng(9)
    base, good, close, paths = _rows_of_three(rng)
    worse = OutOfFold(base.y_true, np.where(rng.random(len(paths)) < 0.3, 1 - base.y_true, base.y_pred), base.score,
                      base.fold, base.subject, 2, 0)
    rows = [_row("a/fc + logistic", base, paths), _row("b/fc + logistic", good, paths, optimistic=True),
            _row("c/fc + logistic", worse, paths[::-1])]  # other paths: not the same test rows
    rows = compare_rows(rows, metric="accuracy")
    assert rows[0].comparison["is_reference"]  # the OPTIMISTIC row scores higher but is no estimate
    assert rows[1].comparison["reference"] == "a/fc + logistic" and rows[1].comparison["delta"] > 0
    assert rows[2].comparison["reason"] == "not scored on the same test rows and folds as the reference"
    assert rows[2].comparison["delta"] is None and rows[2].close_mark == ""


def test_vs_names_the_reference_and_an_unknown_name_warns_and_keeps_the_best():
    rng = np.random.default_rng(10)
    base, good, close, paths = _rows_of_three(rng)
    rows = [_row("a/fc + logistic", base, paths), _row("b/fc + logistic", good, paths)]
    rows = compare_rows(rows, metric="accuracy", reference="a/fc + logistic")
    assert rows[0].comparison["is_reference"] and rows[0].comparison["chosen_by"] == "vs"
    assert rows[1].comparison["delta"] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = compare_rows(rows, metric="accuracy", reference="nope")
    assert any(isinstance(w.message, FeatxWarning) and "vs='nope' names no row" in str(w.message) for w in caught)
    assert rows[1].comparison["is_reference"]
    with pytest.raises(FeatxError, match="sort_by='auc' is not a metric"):
        compare_rows(rows, metric="auc")
