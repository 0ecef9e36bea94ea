"""Saved models are safe to load: card + sha256 required, class names inside the file, skops with an allow-list."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from featx.cli import app
from featx.errors import FeatxError
from featx.heads import list_heads
from featx.persist import SKOPS_TRUSTED, card_path, export_skops, load_model
from featx.store import load_features
from featx.workflows.classify import run_classify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()
SMALL = {"random-forest": {"n_estimators": 20}, "xgboost": {"n_estimators": 20}, "knn": {"n_neighbors": 3}}


@pytest.fixture(scope="module")
def models(cnmc_tree, cnn_store, tmp_path_factory) -> dict:
    """Every head fitted on the cnmc_tree's cnn features (conftest's shared store) and saved as .joblib and .skops
    (with their cards)."""
    root = tmp_path_factory.mktemp("persist")
    store = cnn_store
    saved = {}
    for head in list_heads():
        result = run_classify(str(store), head, eval_set="prelim", save=True, skops=True, out=root / f"res-{head}",
                              plots=False, device="cpu",
                              params={head: SMALL[head]} if head in SMALL else None)
        saved[head] = (result.model, result.skops)
    return {"root": root, "store": store, "saved": saved, "data": cnmc_tree}


def _scores(model, X):
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.decision_function(X)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_model(src: Path, dst_dir: Path) -> Path:
    """A model file and its card copied into ``dst_dir``."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(card_path(src), card_path(dst))
    return dst


def _edit_card(path: Path, **changes) -> None:
    card = json.loads(card_path(path).read_text())
    for key, value in changes.items():
        if value is _DROP:
            del card[key]
        else:
            card[key] = value
    card_path(path).write_text(json.dumps(card))


_DROP = object()


def _predict_cli(model: Path, store: Path, out: Path, *extra: str):
    """`featx predict MODEL --store STORE --out OUT`; a .joblib model with --trust-pickle (every check before the
    file is unpickled still applies) unless ``extra`` says otherwise."""
    trust = ["--trust-pickle"] if model.suffix == ".joblib" and not extra else []
    result = runner.invoke(app, ["predict", str(model), "--store", str(store), "--out", str(out), *trust, *extra])
    return result, re.sub(r"\s+", " ", result.output)


def test_every_head_round_trips_through_skops_with_identical_predictions(models):
    features = load_features(models["store"], labelled=None)
    assert len(features) == 34  # training folds, prelim and final rows of the fixture
    for head, (joblib_path, skops_path) in models["saved"].items():
        assert skops_path == joblib_path.with_suffix(".skops") and card_path(skops_path).name.endswith(".skops.json")
        from_joblib, card = load_model(joblib_path, trust_pickle=True)
        from_skops, skops_card = load_model(skops_path)
        assert skops_card["format"] == "skops" and card["format"] == "joblib", head
        assert skops_card["sha256"] == _sha(skops_path) and card["sha256"] == _sha(joblib_path), head
        assert skops_card["classes"] == card["classes"] == ["all", "hem"] and skops_card["head"] == head
        np.testing.assert_array_equal(from_skops.predict(features.X), from_joblib.predict(features.X), err_msg=head)
        np.testing.assert_array_equal(_scores(from_skops, features.X), _scores(from_joblib, features.X),
                                      err_msg=head)
        assert set(from_joblib.predict(features.X)) <= {0, 1}
        types = sio.get_untrusted_types(file=skops_path)
        assert set(types) <= SKOPS_TRUSTED and not any("torch" in t for t in types), (head, types)
    # the softmax head is stored as numpy arrays, not torch objects
    softmax_types = sio.get_untrusted_types(file=models["saved"]["softmax"][1])
    assert softmax_types == ["featx.heads.SoftmaxClassifier"]


class _RunsCode:
    """Unpickling this creates ``marker``: what a malicious model file would do (os.system, ...)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("card_change, words", [
    ({"sha256": _DROP}, "records no sha256 of"),
    ({"sha256": ""}, "records no sha256 of"),
    ({}, "the file changed after it was saved"),     # the card's sha256 is that of the real model
    (None, "is missing"),                           # no card at all
])
def test_a_malicious_pickle_is_refused_before_it_runs(models, tmp_path, card_change, words):
    model = _copy_model(models["saved"]["logistic"][0], tmp_path / "m")
    marker = tmp_path / "pwned"
    joblib.dump({"featx_model": 1, "model": _RunsCode(marker)}, model)
    if card_change is None:
        card_path(model).unlink()
    else:
        _edit_card(model, **card_change)
    with pytest.raises(FeatxError, match=words):  # trusting the pickle skips none of the checks before it
        load_model(model, trust_pickle=True)
    result, text = _predict_cli(model, models["store"], tmp_path / "p.csv")
    assert result.exit_code == 1 and words in text and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "p.csv").exists()
    # the control: unpickling the same file without featx's checks does run its code
    joblib.load(model)
    assert marker.exists()


def test_a_pickle_whose_card_matches_loads_only_with_trust_pickle(models, tmp_path):
    """An attacker who writes the .joblib writes its card too: the sha256 matches, the file looks like a featx
    model (every key of a real one) and carries code that runs when it is unpickled (it creates a file)."""
    model = _copy_model(models["saved"]["logistic"][0], tmp_path / "m")
    marker = tmp_path / "pwned"
    real = joblib.load(model)
    joblib.dump({**real, "payload": _RunsCode(marker)}, model)
    _edit_card(model, sha256=_sha(model))
    with pytest.raises(FeatxError, match=r"not loading a \.joblib model without trust_pickle=True: it is a pickle"):
        load_model(model)
    result, text = _predict_cli(model, models["store"], tmp_path / "p.csv", "--workers", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "not loading a .joblib model without --trust-pickle: it is a pickle, which runs any code it holds" in text
    assert "use cnn-fc-logistic.skops beside it instead" not in text  # only the .joblib was copied here
    assert "use a .skops model (classify with --save writes one beside the .joblib)" in text
    assert not marker.exists() and not (tmp_path / "p.csv").exists()
    # the .skops beside it is named when it is there
    shutil.copy(models["saved"]["logistic"][1], model.with_suffix(".skops"))
    result, text = _predict_cli(model, models["store"], tmp_path / "p.csv", "--workers", "0")
    assert result.exit_code == 1 and "use cnn-fc-logistic.skops beside it instead" in text
    assert not marker.exists()
    # --trust-pickle is the user's statement that they made the file: it is unpickled, so its code runs (as
    # documented in --help and docs/errors.md), and a file that holds a featx model predicts
    result, text = _predict_cli(model, models["store"], tmp_path / "p.csv", "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert marker.exists() and "34 predicted" in text


@pytest.mark.parametrize("key, value", [
    ("classes", ["hem", "all"]), ("positive", "hem"), ("n_features", 64), ("head", "svm"),
    ("feature_name", "cnn/pool5")])
@pytest.mark.parametrize("fmt", [0, 1])
def test_an_edited_card_is_refused(models, tmp_path, key, value, fmt):
    model = _copy_model(models["saved"]["logistic"][fmt], tmp_path / "m")
    _edit_card(model, **{key: value})
    with pytest.raises(FeatxError, match=rf"{key} is .* in the card but .* in {re.escape(model.name)}; the card was "
                                         "edited"):
        load_model(model, trust_pickle=True)


def test_swapped_classes_in_the_card_refused_by_predict(models, tmp_path):
    model = _copy_model(models["saved"]["svm"][0], tmp_path / "m")
    result, _ = _predict_cli(model, models["store"], tmp_path / "ok.csv")
    assert result.exit_code == 0, result.output
    _edit_card(model, classes=["hem", "all"])
    result, text = _predict_cli(model, models["store"], tmp_path / "p.csv")
    assert result.exit_code == 1 and "classes is ['hem', 'all'] in the card but ['all', 'hem']" in text
    assert "Traceback" not in result.output and not (tmp_path / "p.csv").exists()
    # an edited extraction setting would make predict extract other features: refused too
    model = _copy_model(models["saved"]["svm"][0], tmp_path / "m2")
    card = json.loads(card_path(model).read_text())
    card["stores"][0]["input_size"] = 64
    card_path(model).write_text(json.dumps(card))
    with pytest.raises(FeatxError, match="stores is .* in the card but"):
        load_model(model, trust_pickle=True)


@pytest.mark.parametrize("fmt", [0, 1])
def test_damaged_model_or_card_is_one_line(models, tmp_path, fmt):
    src = models["saved"]["xgboost"][fmt]
    cases = {}
    model = _copy_model(src, tmp_path / "cut")
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    cases["cut"] = (model, "the file changed after it was saved")
    model = _copy_model(src, tmp_path / "cut-resigned")  # truncated, and the card re-signed: the decoder sees it
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    _edit_card(model, sha256=_sha(model))
    cases["cut-resigned"] = (model, "not a readable .skops file" if fmt else "damaged model file")
    model = _copy_model(src, tmp_path / "json")
    card_path(model).write_text(card_path(model).read_text()[:40])
    cases["json"] = (model, "not a valid model card")
    model = _copy_model(src, tmp_path / "list")
    card_path(model).write_text("[1, 2]")
    cases["list"] = (model, "not a featx model card")
    model = _copy_model(src, tmp_path / "format")
    _edit_card(model, format="joblib" if fmt else "skops")
    cases["format"] = (model, "its card says format")
    for name, (model, words) in cases.items():
        with pytest.raises(FeatxError, match=re.escape(words)):
            load_model(model, trust_pickle=True)
        result, text = _predict_cli(model, models["store"], tmp_path / f"{name}.csv")
        assert result.exit_code == 1 and words in text, (name, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, name


def test_a_model_saved_without_its_class_names_is_refused(models, tmp_path):
    """A file holding a bare pipeline (as featx saved before) has no class names of its own."""
    model = _copy_model(models["saved"]["logistic"][0], tmp_path / "m")
    pipeline, _ = load_model(model, trust_pickle=True)
    joblib.dump(pipeline, model)
    _edit_card(model, sha256=_sha(model))
    with pytest.raises(FeatxError, match="holds no featx model with its class names"):
        load_model(model, trust_pickle=True)


def test_a_skops_file_with_a_type_outside_the_allow_list_is_refused(models, tmp_path):
    model = _copy_model(models["saved"]["logistic"][1], tmp_path / "m")
    bundle = sio.load(models["saved"]["logistic"][1], trusted=sio.get_untrusted_types(
        file=models["saved"]["logistic"][1]))
    bundle["model"] = Pipeline([("run", FunctionTransformer(os.system, kw_args={})), ("clf", bundle["model"])])
    sio.dump(bundle, model)
    _edit_card(model, sha256=_sha(model))
    banned = f"{os.system.__module__}.system"
    assert banned in sio.get_untrusted_types(file=model)
    with pytest.raises(FeatxError, match=rf"outside featx's allow-list: {re.escape(banned)}"):
        load_model(model)
    result, text = _predict_cli(model, models["store"], tmp_path / "p.csv")
    assert result.exit_code == 1 and f"allow-list: {banned}" in text and "Traceback" not in result.output
    assert not (tmp_path / "p.csv").exists()


def test_skops_export_refuses_what_featx_could_not_load(models, tmp_path):
    model = _copy_model(models["saved"]["logistic"][0], tmp_path / "m")
    bundle = joblib.load(model)
    bundle["model"] = Pipeline([("f", FunctionTransformer(shutil.rmtree)), ("clf", bundle["model"])])
    joblib.dump(bundle, model)
    _edit_card(model, sha256=_sha(model))
    with pytest.raises(FeatxError, match="outside featx's allow-list: shutil.rmtree"):
        export_skops(model, trust_pickle=True)
    assert not model.with_suffix(".skops").exists()


def test_predict_loads_skops_and_joblib_alike(models, tmp_path):
    joblib_path, skops_path = models["saved"]["softmax"]
    a, _ = _predict_cli(joblib_path, models["store"], tmp_path / "a.csv")
    b, text = _predict_cli(skops_path, models["store"], tmp_path / "b.csv")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert "wrote 34 rows" in text and "34 predicted" in text and "0 could not be predicted" in text
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert (tmp_path / "a.csv").read_text().splitlines()[0] == "path,prediction,probability,error"


def test_the_card_records_the_evaluated_row_and_predict_takes_a_list_of_stores(models, tmp_path):
    from featx.persist import fit_final, save_model
    from featx.results import ResultRow, Score
    from featx.workflows.predict import predict

    features = load_features(models["store"])
    pipeline, n_train = fit_final(features, "logistic", device="cpu", eval_set="prelim")
    row = ResultRow(name="cnn/fc + logistic", backbone="cnn", tap="fc", head="logistic", protocol="prelim",
                    protocol_label="held-out prelim", image_level=False, n_folds=1, n_train=n_train, n_test=8,
                    n_subjects=2, classes=["all", "hem"], positive="all",
                    scores={"accuracy": Score(0.75, None, 0.5, 1.0)})
    path = save_model(pipeline, features, tmp_path, head="logistic", n_train=n_train, row=row)
    metrics = json.loads(card_path(path).read_text())["metrics"]
    assert (metrics["protocol"], metrics["protocol_label"], metrics["image_level"], metrics["n_folds"]) == (
        "prelim", "held-out prelim", False, 1)
    assert (metrics["accuracy"], metrics["accuracy_std"], metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == (
        0.75, None, 0.5, 1.0)
    assert metrics["f1"] is None and metrics["roc_auc_ci_high"] is None  # every metric is named, absent ones None
    one = predict(path, store=models["store"], out=tmp_path / "one.csv", trust_pickle=True)
    listed = predict(path, store=[models["store"]], out=tmp_path / "list.csv", trust_pickle=True)
    assert one.predicted == listed.predicted == 34
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "list.csv").read_text()
    with pytest.raises(FeatxError) as err:
        predict(path, out=tmp_path / "none.csv", trust_pickle=True)
    assert str(err.value) == "give the images to predict (data) or a feature store (store)"
