"""The Python API: a scikit-learn classifier of your own scored under featx's folds (featx.evaluate and
``--head package.module:Class`` give the same numbers), the lazy top level, typed results, rows_to_frame."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import featx
from featx.errors import FeatxError
from featx.evaluation import METRICS
from featx.store import FeatureSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HGB = "sklearn.ensemble:HistGradientBoostingClassifier"
HGB_PARAMS = {"max_iter": 20, "min_samples_leaf": 2}  # 24 training rows: the default leaf of 20 would be a stump


@pytest.fixture(scope="module")
def store(cnn_store) -> Path:
    """conftest's shared cnn store of the tiny C-NMC tree (32 px, seed 0; read-only)."""
    return cnn_store


def _features(n_subjects=12, cells=10, d=16, seed=0) -> FeatureSet:
    """Two classes, a class signal and a per-subject offset; half the subjects of each class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_subjects) % 2, cells)
    X = rng.normal(0, 1, (len(y), d)) + np.repeat(rng.normal(0, 1, (n_subjects, d)), cells, axis=0)
    X[:, :4] += 0.8 * (2 * y[:, None] - 1)
    return FeatureSet(X=X.astype(np.float32), y=y.astype(np.int64), classes=["all", "hem"],
                      paths=np.array([f"img/{i}.bmp" for i in range(len(y))]),
                      subjects=np.repeat([f"S{i}" for i in range(n_subjects)], cells),
                      splits=np.full(len(y), "train"), name="demo/fc", backbone="demo", tap="fc", positive="all")


def test_hist_gradient_boosting_scores_the_same_through_evaluate_and_the_cli(store, tmp_path):
    features = featx.load_features(store)
    row = featx.evaluate(features, HistGradientBoostingClassifier(**HGB_PARAMS), cv="subject", n_folds=3)
    assert row.head == "HistGradientBoostingClassifier" and row.name == "cnn/fc + HistGradientBoostingClassifier"
    assert row.protocol == "subject" and row.n_folds == 3
    assert {k: row.settings["head_params"][k] for k in HGB_PARAMS} == HGB_PARAMS
    assert row.settings["head_params"]["learning_rate"] == 0.1  # every parameter as built, like any head

    out = tmp_path / "cli"
    result, text = invoke("classify", store, "--head", HGB, "--param", "max_iter=20", "--param",
                          "HistGradientBoostingClassifier.min_samples_leaf=2", "--cv", "subject", "--folds", "3",
                          "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    (written,) = json.loads((out / "results.json").read_text())
    assert written["head"] == row.head and written["name"] == row.name
    assert written["settings"]["head_params"] == row.settings["head_params"]
    for metric in METRICS:  # same folds, same seed: the same point scores
        assert written[metric] == pytest.approx(row.mean(metric), abs=1e-9, nan_ok=True), metric

    # the predictions file holds every test row once: every labelled row outside the held-out prelim split
    with (out / "predictions" / "cnn-fc-HistGradientBoostingClassifier-subject.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    tested = features.paths[(features.y >= 0) & (features.splits != "prelim")]
    assert len(tested) == 24 and sorted(r["path"] for r in lines) == sorted(tested)
    by_path = dict(zip(row.predictions["path"], row.predictions["y_pred"]))
    assert {r["path"]: r["y_pred"] for r in lines} == by_path

    # featx.compare takes the estimator too, and gives the same row
    (compared,) = featx.compare([store], [HistGradientBoostingClassifier(**HGB_PARAMS)], cv="subject",
                                n_folds=3).rows
    assert compared.head == row.head and compared.mean("f1_weighted") == pytest.approx(row.mean("f1_weighted"))


@pytest.mark.parametrize("preprocess", [(), pytest.param(("standard",), marks=pytest.mark.slow)])
def test_a_pipeline_of_your_own_scores_as_the_registered_logistic_head(preprocess):
    features = _features()
    pipeline = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(C=1.0, max_iter=1000))])
    own = featx.evaluate(features, pipeline, cv="subject", n_folds=4, preprocess=preprocess)
    builtin = featx.evaluate(features, "logistic", cv="subject", n_folds=4)
    assert own.head == "LogisticRegression" and own.settings["head_params"]["lr__C"] == 1.0
    assert own.predictions["path"] == builtin.predictions["path"]  # the same folds
    # featx's own scaling before the pipeline's changes nothing: standardised features stay so
    np.testing.assert_allclose(own.predictions["score"], builtin.predictions["score"], atol=1e-6)
    assert 0.6 < builtin.mean("accuracy") < 1  # a real signal, not a constant prediction
    for metric in ("accuracy", "f1_weighted", "roc_auc"):
        assert own.mean(metric) == pytest.approx(builtin.mean(metric), abs=1e-6)
    assert own.scores["accuracy"].ci_low == pytest.approx(builtin.scores["accuracy"].ci_low, abs=1e-6)


def test_a_head_without_predict_proba_scores_by_its_decision_function():
    from sklearn.svm import LinearSVC

    row = featx.evaluate(_features(), LinearSVC(C=0.01, max_iter=5000), cv="subject", n_folds=4)
    builtin = featx.evaluate(_features(), "linear-svm", cv="subject", n_folds=4)
    assert row.head == "LinearSVC"
    scores = np.asarray(row.predictions["score"])
    assert (scores < 0).any() and (scores > 0).any()  # a decision function, not a probability
    np.testing.assert_allclose(scores, builtin.predictions["score"], atol=1e-6)


def test_a_head_that_cannot_be_imported_is_one_line(store, tmp_path):
    cases = [(["classify", store, "--head", "nosuch.module:X"],
              "--head nosuch.module:X: cannot import module 'nosuch.module'"),
             (["classify", store, "--head", "sklearn.ensemble:NoSuchClassifier"],
              "module sklearn.ensemble has no 'NoSuchClassifier'"),
             (["compare", store, "--heads", "logistic,sklearn.ensemble:HistGradientBoostingRegressor"],
              "HistGradientBoostingRegressor is not a classifier")]
    for args, words in cases:
        result, text = invoke(*args, "--out", tmp_path / "never")
        assert result.exit_code == 1 and words in text, text
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()
    with pytest.raises(FeatxError, match="LinearRegression is not a classifier"):
        featx.evaluate(_features(), LinearRegression())
    with pytest.raises(FeatxError, match="int is not a scikit-learn estimator"):
        featx.evaluate(_features(), 3)


@pytest.mark.slow
def test_import_featx_loads_no_heavy_library_and_each_name_on_first_use():
    code = ("import sys, featx; heavy = ['torch', 'torchvision', 'sklearn', 'h5py', 'numpy', 'matplotlib', 'rich'];"
            "print(sorted(m for m in heavy if m in sys.modules)); featx.evaluate; print('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr


@pytest.mark.slow
def test_every_public_name_resolves_to_the_function_behind_its_command(tmp_path):
    from featx.evaluation.grid import evaluate
    from featx.report import write_html_report
    from featx.store import load_features
    from featx.workflows.classify import run_classify, run_compare

    assert set(featx.__all__) <= set(dir(featx))
    for name in featx.__all__:
        assert getattr(featx, name) is not None, name
    assert featx.evaluate is evaluate and featx.load_features is load_features
    assert featx.compare is run_compare and featx.classify is run_classify
    import featx.extract as extract_module  # the module stays a module, and is callable as its function

    assert featx.extract is extract_module and callable(featx.extract) and callable(featx.finetune)
    import featx.explain as explain_module
    from featx.explain.core import explain
    from featx.report.feature_map_plot import plot_feature_map
    from featx.report.gallery import gallery

    assert featx.explain is explain_module and explain_module.explain is explain and callable(featx.explain)
    assert featx.gallery is gallery and featx.plot_feature_map is plot_feature_map
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        featx.nope  # noqa: B018

    # featx.report writes what `featx report` writes
    row = featx.evaluate(_features(), "logistic", cv="subject", n_folds=3)
    assert featx.report([row], tmp_path / "api.html", title="t") == tmp_path / "api.html"
    assert write_html_report([row], tmp_path / "lib.html", title="t") == tmp_path / "lib.html"
    def page(name: str) -> str:  # the minute it was written aside: two writes may straddle a minute
        return re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", "written", (tmp_path / name).read_text())

    assert page("api.html") == page("lib.html") and "written &middot;" in page("api.html")


@pytest.mark.slow
def test_workflow_results_are_typed(store, tmp_path):
    from featx.workflows.classify import ClassifyResult, CompareResult

    result = featx.classify(store, "logistic", cv="subject", n_folds=3, out=tmp_path / "c", plots=False)
    assert isinstance(result, ClassifyResult) and result.row.head == "logistic" and result.model is None
    assert result.paths["json"] == tmp_path / "c" / "results.json" and result.run["backend"] == "loky"
    with pytest.raises(AttributeError):
        result.row = None
    compared = featx.compare([store], ["logistic", "knn"], cv="subject", n_folds=3)
    assert isinstance(compared, CompareResult) and [r.head for r in compared.rows] == ["logistic", "knn"]
    assert compared.paths == {}


def test_rows_to_frame_has_the_columns_of_results_csv(tmp_path):
    pandas = pytest.importorskip("pandas")
    row = featx.evaluate(_features(), "logistic", cv="subject", n_folds=3)
    frame = featx.rows_to_frame([row])
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 1
    assert frame.loc[0, "name"] == row.name and frame.loc[0, "accuracy"] == pytest.approx(row.mean("accuracy"))
    assert frame.loc[0, "accuracy_ci_low"] == pytest.approx(row.scores["accuracy"].ci_low)


def test_rows_to_frame_without_pandas_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(FeatxError, match=r"^rows_to_frame needs pandas, which is not installed; install it"):
        featx.rows_to_frame([])


def test_a_skops_copy_of_your_own_estimator_is_refused_before_any_fit(store, tmp_path):
    out = tmp_path / "skops"
    with pytest.raises(FeatxError, match=r"skops: a .skops copy holds only the types of featx's registered "
                                         r"heads, and HistGradientBoostingClassifier is an estimator of your own"):
        featx.classify(store, HistGradientBoostingClassifier(**HGB_PARAMS), save=True, skops=True, out=out)
    assert not out.exists()  # refused before the folds ran and before anything was written
    # the CLI saves such a model as .joblib only and says so (--save asks for .skops only by default)
    result, text = invoke("classify", store, "--head", HGB, "--param", "max_iter=5", "--save", "--out", out,
                          "--no-plots")
    assert result.exit_code == 0 and "saved as .joblib only" in text
    assert [p.suffix for p in sorted((out / "models").glob("*.joblib"))] == [".joblib"]
    assert not list((out / "models").glob("*.skops"))
