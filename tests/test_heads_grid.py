"""The heads grid at speed: each store read once, the RBF SVM's memory refusal, xgboost's early stopping on
training subjects only, parallel folds equal to serial ones, and the parameters every row records."""
from __future__ import annotations

import gc
import json
import warnings

import numpy as np
import pytest
from joblib import Parallel, delayed
from sklearn.preprocessing import StandardScaler

import featx.heads.svm as svm_module
import featx.store.reader as reader
from featx.errors import FeatxError
from featx.evaluation import compare, evaluate, evaluate_many
from featx.evaluation import pool as pool_module
from featx.evaluation.pool import SMALL_BYTES, plan_jobs, process_pool
from featx.heads import RBFSVMClassifier, XGBoostClassifier, make_head
from featx.heads.xgboost import MIN_VALIDATION_ROWS, validation_split
from featx.store import FeatureSet, load_features
from featx.workflows.classify import run_classify

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def features(n_subjects=12, cells=60, d=8, seed=0) -> FeatureSet:
    """Two classes, a per-subject offset, and the row's index in column 0 (read back by the spies below)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_subjects) % 2, cells)
    subjects = np.repeat([f"S{i}" for i in range(n_subjects)], cells)
    offset = rng.normal(0, 0.5, (n_subjects, d - 1))[np.repeat(np.arange(n_subjects), cells)]
    X = rng.normal(0, 1, (len(y), d - 1)) + offset + 1.2 * y[:, None] * (np.arange(d - 1) < 3)
    X = np.column_stack([np.arange(len(y)), X]).astype(np.float32)
    return FeatureSet(X=X, y=y.astype(np.int64), classes=["all", "hem"], paths=np.array([f"{i}.bmp" for i in
                      range(len(y))]), subjects=subjects, splits=np.full(len(y), ""), name="t/fc", backbone="t",
                      tap="fc", positive="all")


# ---- each store read once -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_stores(cnn_stores):
    """conftest's shared cnn stores of seeds 0 and 1 (read-only)."""
    return [cnn_stores(0), cnn_stores(1)]


@pytest.mark.slow
def test_compare_reads_each_store_once_over_taps_heads_and_fused_groups(two_stores, monkeypatch):
    a, b = two_stores
    reads = []
    original = reader._read_one

    def counted(path, wanted, allow_partial=False):
        reads.append(str(path))
        return original(path, wanted, allow_partial)

    monkeypatch.setattr(reader, "_read_one", counted)
    taps = ["fc", "pool5", ["fc", "pool5"]]
    rows = compare([a, b, [a, b]], ["logistic", "knn"], taps, cv="subject", n_folds=3, jobs=1)
    assert len(rows) == 3 * 3 * 2
    assert sorted(reads) == sorted([str(a), str(b)])  # 18 rows, 9 feature sets: one read of each file
    # the same features as loading each store group x tap group alone
    monkeypatch.setattr(reader, "_read_one", original)
    for group, tap in (([a], "pool5"), ([a, b], ["fc", "pool5"])):
        alone = load_features(group, tap)
        row = next(r for r in rows if r.tap == alone.tap and r.settings["stores"] == [str(p) for p in group])
        assert row.settings["fingerprint"] == alone.fingerprint
    assert {r.tap for r in rows} == {"fc", "pool5", "fc+pool5", "fc+fc", "pool5+pool5", "fc+pool5+fc+pool5"}


def test_feature_grid_equals_load_features_and_drops_a_store_after_its_last_group(two_stores):
    a, b = two_stores
    grid = reader.load_feature_grid([[a], [a, b]], [None, ["pool5", "fc"]])
    for (i, j), fs in grid:
        alone = load_features([[a], [a, b]][i], [None, ["pool5", "fc"]][j])
        np.testing.assert_array_equal(fs.X, alone.X)
        assert (fs.name, fs.tap, fs.fingerprint, list(fs.paths)) == (alone.name, alone.tap, alone.fingerprint,
                                                                     list(alone.paths))


# ---- the RBF SVM's memory refusal -----------------------------------------------------------------------
def test_svm_refuses_a_kernel_larger_than_the_memory_available_before_allocating(monkeypatch):
    fs = features(n_subjects=6, cells=50)  # 300 rows: kernel 300 x 300 float64 = 703 KiB
    monkeypatch.setattr(svm_module, "available_memory", lambda: 2**20)  # 1 MiB free
    monkeypatch.setattr(RBFSVMClassifier, "_gram", lambda *a: pytest.fail("the kernel was computed"))
    with pytest.raises(FeatxError) as err:
        RBFSVMClassifier(cache_size=1).fit(fs.X, fs.y)
    msg = str(err.value)
    assert "\n" not in msg and "300 training rows" in msg and "300 x 300 float64" in msg
    assert "(703 KiB;" in msg and "1.0 MiB of memory is available" in msg and "linear-svm" in msg
    # through the grid the same one line, not wrapped as a parameter error
    with pytest.raises(FeatxError, match=r"head svm: the RBF kernel of \d+ training rows") as err:
        evaluate(fs, "svm", cv="subject", n_folds=5, jobs=1, params={"svm": {"cache_size": 1}})
    assert "change" not in str(err.value)


def test_svm_fits_when_the_kernel_fits_and_states_its_rule():
    est = RBFSVMClassifier(cache_size=100)
    n, d = 8000, 4096
    assert est.fit_bytes(n, d) == 8 * n * n + 100 * 2**20 + 4 * n * (d + 2 * 1024)
    assert RBFSVMClassifier(kernel_dtype="float64").fit_bytes(n, d) > est.fit_bytes(n, d)
    fs = features(n_subjects=6, cells=50)
    assert RBFSVMClassifier().fit(fs.X, fs.y).n_train_ == 300


def test_svm_float32_kernel_matches_float64_and_scores_once():
    fs = features(n_subjects=8, cells=40, d=16)
    X = (fs.X - fs.X.mean(0)) / fs.X.std(0)
    a = RBFSVMClassifier(kernel_dtype="float32").fit(X[:240], fs.y[:240])
    b = RBFSVMClassifier(kernel_dtype="float64").fit(X[:240], fs.y[:240])
    np.testing.assert_allclose(a._gram(X[:240]), b._gram(X[:240]), atol=1e-5)
    np.testing.assert_allclose(a.decision_function(X[240:]), b.decision_function(X[240:]), atol=1e-4)
    pred, score = a.predict_and_decision(X[240:])
    np.testing.assert_array_equal(pred, a.predict(X[240:]))
    np.testing.assert_allclose(score, a.decision_function(X[240:]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="kernel_dtype"):
        RBFSVMClassifier(kernel_dtype="float16").fit(X, fs.y)


# ---- xgboost's early stopping -------------------------------------------------------------------------
def test_xgboost_early_stopping_holds_out_whole_training_subjects_never_test_rows(monkeypatch):
    fs = features(n_subjects=12, cells=100)  # 3 folds: 800 training rows, 200 held out for early stopping
    seen = []
    original = XGBoostClassifier.fit

    def spy(self, X, y, sample_weight=None, groups=None):
        out = original(self, X, y, sample_weight=sample_weight, groups=groups)
        seen.append((X[:, 0].astype(int), X[self.validation_rows_, 0].astype(int), self.n_trees_))
        return out

    monkeypatch.setattr(XGBoostClassifier, "fit", spy)
    row = evaluate(fs, "xgboost", cv="subject", n_folds=3, jobs=1, preprocess=None,
                   params={"xgboost": {"n_estimators": 60, "validation_fraction": 0.25}})
    fold_of = {int(p.split(".")[0]): f for p, f in zip(row.predictions["path"], row.predictions["fold"])}
    assert len(seen) == 3
    for train_ids, val_ids, n_trees in seen:
        test_ids = {i for i, f in fold_of.items() if i not in set(train_ids)}
        assert len(test_ids) == 400 and len({fold_of[i] for i in test_ids}) == 1
        assert len(val_ids) >= MIN_VALIDATION_ROWS and set(val_ids) <= set(train_ids)
        assert not set(val_ids) & test_ids
        val_subjects = set(fs.subjects[val_ids])
        held = {i for i in train_ids if fs.subjects[i] in val_subjects}
        assert held == set(val_ids)  # whole subjects, every row of each
        assert set(fs.y[val_ids]) == {0, 1} and 1 <= n_trees <= 60


def test_validation_split_needs_enough_rows_and_subjects():
    y = np.repeat([0, 1], 300)
    fit, val = validation_split(y, None, 0.5, 0)
    assert len(val) == 300 and not set(fit) & set(val)
    assert validation_split(y, None, 0.1, 0) is None  # 60 rows would stop at random
    four = np.tile(["a", "b", "c", "d"], 150)  # each subject holds both classes
    fit, val = validation_split(y, four, 0.5, 0)
    assert not set(four[fit]) & set(four[val]) and len(set(four[val])) == 2
    assert validation_split(y, np.repeat(["a"], 600), 0.5, 0) is None  # one subject cannot be split


def test_xgboost_is_deterministic_and_small_data_trains_every_tree():
    fs = features(n_subjects=6, cells=30)
    a = make_head("xgboost", device="cpu", n_estimators=15).fit(fs.X, fs.y, clf__groups=fs.subjects)
    b = make_head("xgboost", device="cpu", n_estimators=15).fit(fs.X, fs.y, clf__groups=fs.subjects)
    assert a[-1].n_trees_ == 15 and len(a[-1].validation_rows_) == 0  # 18 held-out rows: no early stopping
    np.testing.assert_array_equal(a.predict_proba(fs.X), b.predict_proba(fs.X))


# ---- parallel folds -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_folds_give_the_rows_of_serial_folds():
    fs = features(n_subjects=10, cells=40, d=12)
    params = {"xgboost": {"n_estimators": 20}, "softmax": {"epochs": 5, "min_steps": 20}}
    heads = ["logistic", "svm", "xgboost", "softmax"]
    serial = evaluate_many(fs, heads, cv="subject", n_folds=4, jobs=1, params=params, device="cpu")
    parallel = evaluate_many(fs, heads, cv="subject", n_folds=4, jobs=2, params=params, device="cpu")
    for s, p in zip(serial, parallel):
        assert s.head == p.head
        np.testing.assert_allclose(p.predictions["score"], s.predictions["score"], rtol=0, atol=1e-4)
        agree = np.mean(np.array(p.predictions["y_pred"]) == np.array(s.predictions["y_pred"]))
        assert agree >= 0.99, (s.head, agree)
        assert p.mean("f1_weighted") == pytest.approx(s.mean("f1_weighted"), abs=0.01)


@pytest.mark.slow
def test_a_grid_after_a_grid_of_other_libraries_gets_workers_without_a_restart_warning():
    """A notebook user runs logistic, then softmax, on two processes: loky reused the logistic workers, which
    then imported torch, grew by more than 300 MB and were restarted with a "worker stopped" warning (12 s
    instead of 0.2 s). Workers now import the grid's native libraries when they start."""
    fs = features(n_subjects=10, cells=40, d=12)
    params = {"softmax": {"epochs": 5, "min_steps": 20}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = [evaluate_many(fs, [head], cv="subject", n_folds=4, jobs=2, params=params,
                              device="cpu")[0] for head in ("logistic", "softmax", "softmax")]
    assert [r.head for r in rows] == ["logistic", "softmax", "softmax"]
    assert rows[1].predictions["score"] == rows[2].predictions["score"]
    stopped = [str(w.message) for w in caught if "worker" in str(w.message).lower()]
    assert stopped == []


@pytest.mark.slow
def test_grid_workers_import_torch_with_the_collector_paused():
    """A worker of a grid with softmax imports torch when it starts, the collector paused and its heap then
    frozen (featx.imports), as the CLI does."""
    with process_pool("loky", ["softmax"]):
        frozen = Parallel(n_jobs=2)(delayed(gc.get_freeze_count)() for _ in range(4))
    assert min(frozen) > 200_000


def _sigint_handler() -> str:
    import signal
    return repr(signal.getsignal(signal.SIGINT))


@pytest.mark.slow
def test_grid_workers_leave_ctrl_c_to_the_featx_process():
    """Ctrl-C reaches the terminal's whole process group: a grid worker ignores it (the featx process stops
    the workers), where a plain loky worker would print a KeyboardInterrupt traceback of its own."""
    with process_pool("loky", ["logistic"]):
        handlers = Parallel(n_jobs=2)(delayed(_sigint_handler)() for _ in range(4))
    assert set(handlers) == {"<Handlers.SIG_IGN: 1>"}
    plain = Parallel(n_jobs=2, backend="loky")(delayed(_sigint_handler)() for _ in range(2))
    assert "<Handlers.SIG_IGN: 1>" not in plain


def test_auto_jobs_follow_cores_memory_and_size(monkeypatch):
    monkeypatch.setattr(pool_module, "cpu_cores", lambda: 8)
    monkeypatch.setattr(pool_module, "available_memory", lambda: 10 * 2**30)
    big = 4 * SMALL_BYTES
    assert plan_jobs(None, 20, big, 2**30) == 8
    assert plan_jobs(None, 20, big, 3 * 2**30) == 3       # three fits fit in memory
    assert plan_jobs(None, 20, big, 64 * 2**30) == 1
    assert plan_jobs(None, 4, big, 2**30) == 4            # no more processes than fits
    assert plan_jobs(None, 20, SMALL_BYTES - 1, 1) == 1   # small features: serial
    assert plan_jobs(3, 20, big, 64 * 2**30) == 3 and plan_jobs(-1, 20, big, 1) == 8
    assert plan_jobs(-2, 20, big, 1) == 7                  # joblib's meaning: all cores but one
    for bad in (0, True, 2.5, "2"):
        with pytest.raises(FeatxError, match="give 1 or more processes"):
            plan_jobs(bad, 20, big, 1)


def test_one_jobs_rule_for_the_pool_the_clusters_and_the_input_check(monkeypatch):
    """``jobs`` is checked and turned into processes in one place (evaluation.pool), for loky, dask and ray alike."""
    from featx.evaluation import backends
    from featx.evaluation.inputs import check_grid
    monkeypatch.setattr(pool_module, "cpu_cores", lambda: 6)
    assert [pool_module.cores_for(j) for j in (None, -1, -2, -10, 3)] == [6, 6, 5, 1, 3]
    with backends.engine("loky", None, -2) as where:
        assert where.cores == 5
    messages = set()
    for call in (lambda: pool_module.cores_for(0), lambda: backends.engine("loky", None, 0).__enter__(),
                 lambda: check_grid(["x.h5"], "svm", jobs=0)):
        with pytest.raises(FeatxError, match="give 1 or more processes") as caught:
            call()
        messages.add(str(caught.value))
    assert len(messages) == 1


# ---- recorded parameters ------------------------------------------------------------------------------
@pytest.mark.slow
def test_rows_and_cards_record_every_head_parameter_as_built(tmp_path, two_stores):
    fs = features(n_subjects=6, cells=30)
    rows = evaluate_many(fs, ["svm", "xgboost", "softmax"], cv="subject", n_folds=3, jobs=1,
                         params={"xgboost": {"n_estimators": 12}})
    by_head = {r.head: r.settings for r in rows}
    assert by_head["svm"]["head_params"]["kernel_dtype"] == "float32"
    assert by_head["svm"]["head_params"]["cache_size"] == 100
    xgb = by_head["xgboost"]["head_params"]
    assert xgb["n_estimators"] == 12 and xgb["learning_rate"] == 0.15 and xgb["max_bin"] == 32
    assert xgb["early_stopping_rounds"] == 5 and xgb["validation_fraction"] == 0.1
    assert by_head["xgboost"]["params"] == {"n_estimators": 12}
    assert by_head["softmax"]["head_params"]["epochs"] == 10
    assert "random_state" not in xgb and "device" not in xgb and "class_weight" not in xgb
    out = run_classify(two_stores[0], "xgboost", n_folds=3, jobs=1, out=tmp_path, save=True,
                       plots=False, params={"xgboost": {"n_estimators": 12}})
    card = json.loads(out.model.with_suffix(".json").read_text())
    assert card["head_params"]["learning_rate"] == 0.15 and card["head_params"]["n_estimators"] == 12
    assert card["head_params"] == out.row.settings["head_params"]  # one JSON shaping for both


# ---- trees skip a last standardisation -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["xgboost", "random-forest"])
def test_tree_heads_pass_a_last_standard_step_through_and_predict_as_on_scaled_features(name):
    fs = features(n_subjects=8, cells=40, d=10)
    X = fs.X * np.linspace(0.5, 40, fs.X.shape[1]) + 3  # columns on very different scales
    params = {"n_estimators": 20} if name == "xgboost" else {"n_estimators": 30}
    skipped = make_head(name, device="cpu", **params)
    assert skipped.steps[0] == ("standard", "passthrough")
    scaled = make_head(name, device="cpu", preprocess=None, **params)  # the scaling done outside, as the step did
    Z = (X - X[:240].mean(0)) / X[:240].std(0)
    a = skipped.fit(X[:240], fs.y[:240]).predict_proba(X[240:])
    b = scaled.fit(Z[:240], fs.y[:240]).predict_proba(Z[240:])
    # the same trees (equal here; a split threshold falling on a rounding tie may move a row or two)
    assert np.mean(np.abs(a - b).max(axis=1) < 1e-6) >= 0.95
    # only a last step: before PCA or l2 the scaling changes what the head sees, so it runs
    assert isinstance(make_head(name, preprocess=["standard", "l2"]).steps[0][1], StandardScaler)
    assert isinstance(make_head("svm").steps[0][1], StandardScaler)
