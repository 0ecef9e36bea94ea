"""Protocols and metrics are objects in registries: a test adds one of each in a few lines and scores a head with
it; the protocol objects give exactly the folds and names the ``cv`` strings gave."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut

from featx.errors import FeatxError
from featx.evaluation import (
    PROTOCOLS,
    AutoProtocol,
    DataFolds,
    HeldOut,
    Hybrid,
    ImageKFold,
    SplitterProtocol,
    SubjectKFold,
    evaluate,
    make_splits,
    protocol_from,
    register_protocol,
    split_features,
)
from featx.evaluation.protocols import hybrid_label
from featx.report.notes import short_protocol
from featx.results import ResultRow, csv_columns
from featx.row_records import SearchRecord
from featx.scoring import METRIC_TABLE, METRICS, Metric, register_metric
from featx.store import FeatureSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def features(n_subjects=8, cells=6, d=8, subjects=True, seed=0) -> FeatureSet:
    """Two classes (half the subjects each), a class signal plus a per-subject offset; splits fold_0..2 and prelim
    for the last two subjects."""
    rng = np.random.default_rng(seed)
    X, y, subj, split = [], [], [], []
    for i in range(n_subjects):
        label = i % 2
        X.append(rng.normal(0, 1, (cells, d)) + rng.normal(0, 1, d) + (1.0 if label else -1.0))
        y += [label] * cells
        subj += [f"S{i}" if subjects else ""] * cells
        split += ["prelim" if i >= n_subjects - 2 else f"fold_{i % 3}"] * cells
    n = len(y)
    return FeatureSet(X=np.vstack(X).astype(np.float32), y=np.array(y, dtype=np.int64), classes=["all", "hem"],
                      paths=np.array([f"img/{i}.bmp" for i in range(n)]), subjects=np.array(subj),
                      splits=np.array(split), name="toy/fc", backbone="toy", tap="fc", positive="all")


@pytest.fixture
def loso():
    register_protocol("loso", lambda n_folds, seed: SplitterProtocol(LeaveOneGroupOut(), name="loso"))
    yield
    PROTOCOLS.pop("loso")


@pytest.fixture
def mcc():
    metric = register_metric(Metric("mcc", "Matthews correlation", "MCC", function=skm.matthews_corrcoef))
    again = register_metric(Metric("accuracy_again", "Accuracy", "Acc", function=skm.accuracy_score))
    yield metric, again
    METRIC_TABLE.pop("mcc"), METRIC_TABLE.pop("accuracy_again")


def _fold_subjects(row: ResultRow) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for fold, subject in zip(row.predictions["fold"], row.predictions["subject"]):
        out.setdefault(fold, set()).add(subject)
    return out


# ---- a protocol in a few lines -------------------------------------------------------------------------
def test_a_registered_protocol_scores_a_head_leaving_one_subject_out(loso):
    fs = features()
    row = evaluate(fs, "logistic", cv="loso")
    per_fold = _fold_subjects(row)
    # 6 training subjects (2 are prelim, never cross-validated): one fold each, each subject tested once
    assert row.protocol == "loso" and row.n_folds == 6 == len(per_fold)
    assert all(len(s) == 1 for s in per_fold.values())
    assert sorted(s for v in per_fold.values() for s in v) == [f"S{i}" for i in range(6)]
    assert row.protocol_label == "loso (6 folds)" and not row.image_level and short_protocol(row) == "loso (6 folds)"
    assert row.n_test == 36 and 0.0 <= row.mean("accuracy") <= 1.0


def test_a_scikit_learn_splitter_is_a_protocol_and_its_leaks_are_marked():
    fs = features()
    grouped = split_features(fs, GroupKFold(n_splits=3))
    assert grouped.name == "GroupKFold" and grouped.n_folds == 3 and not grouped.image_level
    for train, test in grouped.folds:
        assert not set(fs.subjects[train]) & set(fs.subjects[test])
        assert not set(fs.splits[test]) & {"prelim"}
    row = evaluate(fs, "logistic", cv=GroupKFold(n_splits=3))
    assert row.n_folds == 3 and row.protocol_label == "GroupKFold (3 folds)"
    assert all(not a & b for i, a in _fold_subjects(row).items() for j, b in _fold_subjects(row).items() if i != j)
    leaky = split_features(fs, KFold(3, shuffle=True, random_state=0))
    assert leaky.image_level and leaky.label == "IMAGE-LEVEL KFold (3 folds): subjects on both sides"
    assert leaky.short == "IMAGE-LEVEL KFold (3 folds)"
    with pytest.raises(FeatxError, match="not a protocol name, a protocol or a splitter"):
        protocol_from(object())


# ---- a metric in a few lines ---------------------------------------------------------------------------
def test_a_registered_metric_is_in_every_row_with_its_fold_mean_spread_and_interval(mcc):
    fs = features(n_subjects=20, cells=6)
    row = evaluate(fs, "logistic", cv="subject", n_folds=3, preprocess=None)
    assert list(row.scores)[-2:] == ["mcc", "accuracy_again"] and "mcc" in METRICS
    pred = row.predictions
    classes = np.asarray(row.classes)
    folds = np.asarray(pred["fold"])
    y_true = np.searchsorted(classes, pred["y_true"])
    y_pred = np.searchsorted(classes, pred["y_pred"])
    per_fold = [skm.matthews_corrcoef(y_true[folds == f], y_pred[folds == f]) for f in np.unique(folds)]
    score = row.score("mcc")
    assert score.mean == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert score.std == pytest.approx(np.std(per_fold, ddof=1), abs=1e-12)
    assert score.ci_low is not None and score.ci_low <= score.mean <= score.ci_high
    # a metric added as scikit-learn's own accuracy gets featx's accuracy: its mean, spread and subject interval
    for a, b in zip(dataclasses.astuple(row.score("accuracy_again")), dataclasses.astuple(row.score("accuracy"))):
        assert a == pytest.approx(b, abs=1e-9)
    flat = row.to_dict()
    assert flat["mcc"] == score.mean and {"mcc_std", "mcc_ci_low", "mcc_ci_high"} <= set(flat)
    assert "mcc_ci_high" in csv_columns([row]) and ResultRow.from_dict(flat).score("mcc") == score


def test_a_metric_needs_a_function_of_classes_and_a_new_name():
    with pytest.raises(FeatxError, match="needs a function"):
        register_metric(Metric("odd", "Odd", "Odd"))
    with pytest.raises(FeatxError, match="exists"):
        register_metric(Metric("accuracy", "Acc", "Acc", function=skm.accuracy_score))
    assert "odd" not in METRICS and len(METRICS) == 8


# ---- the objects give the folds and names the strings gave --------------------------------------------------
def _same_folds(a, b) -> bool:
    return len(a.folds) == len(b.folds) and all(np.array_equal(x, y) for (x, _), (y, _) in zip(a.folds, b.folds)) \
        and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a.folds, b.folds))


@pytest.mark.parametrize("with_subjects", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objects_give_the_folds_labels_and_notes_of_make_splits(seed, with_subjects):
    fs = features(subjects=with_subjects)
    cases = [("image", None, ImageKFold(3, seed)), ("fold", None, DataFolds(seed)),
             ("auto", None, AutoProtocol(3, seed)), ("auto", "prelim", HeldOut("prelim", seed))]
    if with_subjects:
        cases.append(("subject", None, SubjectKFold(3, seed)))
    for cv, eval_set, protocol in cases:
        old = make_splits(fs.subjects, fs.y, fs.splits, cv=cv, n_folds=3, seed=seed, eval_set=eval_set)
        new = protocol.split(fs)
        assert _same_folds(old, new), cv
        assert (new.name, new.label, new.image_level, new.note) == (old.name, old.label, old.image_level, old.note)
    outer = Hybrid(3, seed).split(fs) if with_subjects else None
    if outer is not None:
        assert _same_folds(outer, SubjectKFold(3, seed).split(fs)) and outer.label == hybrid_label(3)


SHORT = {("subject", None, True): "subject 3-fold", ("image", None, True): "IMAGE-LEVEL 3-fold",
         ("fold", None, True): "C-NMC folds (3)", ("auto", "prelim", True): "held-out prelim",
         ("image", None, False): "IMAGE-LEVEL 3-fold (subjects unknown)",
         ("fold", None, False): "IMAGE-LEVEL C-NMC folds (3) (subjects unknown)",
         ("auto", None, False): "IMAGE-LEVEL 3-fold (subjects unknown)"}


@pytest.mark.parametrize("cv, eval_set, with_subjects", list(SHORT))
def test_short_names_are_fields_and_read_as_the_label_text_read_before(cv, eval_set, with_subjects):
    fs = features(subjects=with_subjects)
    prot = make_splits(fs.subjects, fs.y, fs.splits, cv=cv, n_folds=3, eval_set=eval_set)
    row = ResultRow(name="toy/fc + svm", backbone="toy", tap="fc", head="svm", protocol=prot.name,
                    protocol_label=prot.label, image_level=prot.image_level, protocol_short=prot.short,
                    n_folds=prot.n_folds, n_train=1, n_test=1, n_subjects=0, classes=["all", "hem"], positive="all")
    assert short_protocol(row) == SHORT[(cv, eval_set, with_subjects)]
    # a row written before protocol_short (its facts only in the label) reads the same
    assert short_protocol(dataclasses.replace(row, protocol_short=None)) == short_protocol(row)
    marked = dataclasses.replace(row, optimistic=True, dropped_unknown_subjects=2,
                                 nested_search=SearchRecord(method="grid", inner_folds=3))
    assert short_protocol(marked) == f"OPTIMISTIC {SHORT[(cv, eval_set, with_subjects)]}, 2 rows w/o subject " \
                                     "dropped, nested"


def test_protocol_from_maps_the_cli_strings_and_keeps_their_errors():
    assert protocol_from("Subject", n_folds=4, seed=2) == SubjectKFold(4, 2)
    assert protocol_from(None) == AutoProtocol(5, 0) and protocol_from("fold", seed=1) == DataFolds(1, 5)
    assert protocol_from("bogus", eval_set="prelim") == HeldOut("prelim", 0)  # eval_set wins, as before
    assert protocol_from(SubjectKFold(3)) == SubjectKFold(3)
    with pytest.raises(FeatxError, match=r"^cv='bogus': choose one of auto, subject, image, fold$"):
        protocol_from("bogus")


@pytest.mark.parametrize("val", ["subject", "image", "prelim"])
def test_a_fine_tuned_networks_row_carries_its_short_protocol_name_as_the_label_read_before(cnmc_tree, val):
    from featx.data import discover  # deferred: the other tests need no image tree
    from featx.finetune.split import pick_split

    split = pick_split(discover(cnmc_tree), val, seed=0)
    row = ResultRow(name="cnn fine-tuned", backbone="cnn", tap="logits", head=None, protocol=split.protocol,
                    protocol_label=split.protocol_label, image_level=split.image_level, protocol_short=split.short,
                    n_folds=1, n_train=1, n_test=1, n_subjects=0, classes=["all", "hem"], positive="all")
    assert split.short == {"subject": "held-out 1/5 of subjects", "image": "IMAGE-LEVEL held-out 1/5 of images",
                           "prelim": "held-out prelim"}[val]
    assert short_protocol(row) == short_protocol(dataclasses.replace(row, protocol_short=None))
