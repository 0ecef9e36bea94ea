"""End to end on demo data: synth -> extract -> `featx compare/classify/predict` through the real CLI app."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import torch

from featx.backbones import create_backbone
from featx.cli import app
from featx.errors import FeatxError
from featx.extract import extract
from featx.persist import check_store_matches, fit_final, load_model, save_model
from featx.store import load_features, store_settings
from featx.synth import synthesize


pytestmark = pytest.mark.usefixtures("one_torch_thread")


runner = CliRunner()
N_FINAL = 10
N_PRELIM = 3 * 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """Demo data (6 ALL + 4 HEM training subjects x 12 cells, 64 px) and two cnn stores (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("demo")
    data = root / "data"
    synthesize(data, subjects_all=6, subjects_hem=4, cells_per_subject=12, prelim_subjects_all=2,
               prelim_subjects_hem=1, prelim_cells_per_subject=8, final_cells=N_FINAL, image_size=64, seed=0)
    stores = {}
    for seed in (0, 1):
        stores[seed] = extract(data, root / "feats" / f"cnn{seed}.h5", backbone="cnn", weights="none", image_size=64,
                               seed=seed, batch_size=32, workers=0, progress=False)
    return {"root": root, "data": data, "store": stores[0], "store_b": stores[1]}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables one line per row (the CLI's console is created at import; CliRunner's env cannot widen it)."""
    from featx.cli.app import console

    monkeypatch.setattr(console, "_width", 200)


def _invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, re.sub(r"\s+", " ", result.output)


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_compare_shows_image_level_above_subject_level_in_one_table(demo, tmp_path):
    out = tmp_path / "results"
    result, text = _invoke("compare", demo["store"], "--heads", "softmax,svm,xgboost", "--cv", "subject,image",
                           "--out", out, "--boot", "200")
    assert result.exit_code == 0, result.output
    assert "featx compare" in text and "subject 5-fold" in text and "* IMAGE-LEVEL 5-fold" in text
    rows = _read_csv(out / "results.csv")
    assert [(r["head"], r["protocol"]) for r in rows] == [
        ("softmax", "subject"), ("svm", "subject"), ("xgboost", "subject"),
        ("softmax", "image"), ("svm", "image"), ("xgboost", "image")]
    acc = {(r["head"], r["protocol"]): float(r["accuracy"]) for r in rows}
    for head in ("softmax", "svm", "xgboost"):  # the stain tint leaks through image-level folds
        assert acc[(head, "image")] > acc[(head, "subject")], (head, acc)
    gap = np.mean([acc[(h, "image")] - acc[(h, "subject")] for h in ("softmax", "svm", "xgboost")])
    assert gap > 0.02, acc
    for r in rows:
        assert r["image_level"] == str(r["protocol"] == "image")
        assert int(r["n_test"]) == 120 and int(r["n_subjects"]) == 10 and r["positive"] == "all"
        assert float(r["accuracy_ci_low"]) <= float(r["accuracy_ci_high"])
        assert json.loads(r["settings.stores"]) == [str(demo["store"])]
    md = (out / "results.md").read_text()
    assert md.count("IMAGE-LEVEL 5-fold (cells of one subject on both sides)") == 3
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(pngs) == 12 and (out / "comparison.png").stat().st_size > 5000
    data = json.loads((out / "results.json").read_text())
    assert len(data) == 6 and data[0]["confusion"] and data[0]["per_subject_accuracy"]


def test_classify_with_fused_taps_and_stores_and_the_prelim_phase(demo, tmp_path):
    result, text = _invoke("classify", demo["store"], "--head", "logistic", "--tap", "fc+pool5", "--eval", "prelim",
                           "--out", tmp_path, "--boot", "100", "--no-plots")
    assert result.exit_code == 0, result.output
    row, = json.loads((tmp_path / "results.json").read_text())
    assert row["model"] == "cnn/fc+pool5 + logistic" and row["tap"] == "fc+pool5"
    assert row["protocol"] == "prelim" and row["n_test"] == N_PRELIM and row["n_train"] == 120
    assert "held-out prelim" in text and not (tmp_path / "plots").exists()
    fused = f"{demo['store']}+{demo['store_b']}"
    result, text = _invoke("classify", fused, "--head", "knn", "--folds", "3", "--out", tmp_path / "fused",
                           "--boot", "50", "--param", "n_neighbors=3")
    assert result.exit_code == 0, result.output
    row, = json.loads((tmp_path / "fused" / "results.json").read_text())
    assert row["model"] == "cnn/fc+cnn/fc + knn" and row["n_folds"] == 3 and row["settings"]["params"] == {
        "n_neighbors": 3}


def test_saved_model_reloads_and_predicts_the_same_labels(demo, tmp_path):
    features = load_features(demo["store"])
    model, n_train = fit_final(features, "softmax", device="cpu")
    assert n_train == 120  # labelled training rows; prelim (held out) and final (unlabelled) left out
    path = save_model(model, features, tmp_path, head="softmax", n_train=n_train, preprocess="standard")
    assert path.name == "cnn-fc-softmax.joblib"
    loaded, card = load_model(path)
    np.testing.assert_array_equal(loaded.predict(features.X), model.predict(features.X))
    np.testing.assert_array_equal(loaded.predict_proba(features.X), model.predict_proba(features.X))
    assert card["classes"] == ["all", "hem"] and card["positive"] == "all" and card["n_features"] == 128
    assert card["stores"][0]["input_size"] == 64 and card["stores"][0]["weights_seed"] == 0
    assert card["stores"][0]["taps"] == ["fc"] and card["store_fingerprint"] == features.fingerprint
    assert set(card["versions"]) >= {"featx", "scikit-learn", "torch", "numpy"}
    # a model file changed after saving is refused before it is unpickled
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(FeatxError, match="changed after it was saved"):
        load_model(path)


def test_classify_save_then_predict_final_phase(demo, tmp_path):
    out = tmp_path / "res"
    result, text = _invoke("classify", demo["store"], "--head", "svm", "--save", "--out", out, "--boot", "100")
    assert result.exit_code == 0, result.output
    model = out / "models" / "cnn-fc-svm.joblib"
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["metrics"]["protocol"] == "subject" and 0.5 < card["metrics"]["accuracy"] <= 1
    assert card["probability"].startswith("none: the score is the decision function")  # saved = evaluated
    # extraction of the new images with the card's settings
    result, text = _invoke("predict", model, demo["data"], "--split", "final", "--out", tmp_path / "p1.csv",
                           "--workers", "0")
    assert result.exit_code == 0, result.output
    assert f"wrote {N_FINAL} predictions" in text
    rows = _read_csv(tmp_path / "p1.csv")
    finals = sorted(p.relative_to(demo["data"]).as_posix() for p in demo["data"].glob("C-NMC_test_final*/*/*.bmp"))
    assert sorted(r["path"] for r in rows) == finals and len(rows) == N_FINAL
    assert {r["prediction"] for r in rows} <= {"all", "hem"}
    assert all(r["probability"] == "" for r in rows)  # the svm has no predict_proba (no ungrouped calibration)
    # the same predictions from the store that holds those images
    result, _ = _invoke("predict", model, "--store", demo["store"], "--split", "final", "--out", tmp_path / "p2.csv")
    assert result.exit_code == 0, result.output
    # same decisions; scores may differ by float noise (the images were batched differently; BLAS kernels)
    from_store = _read_csv(tmp_path / "p2.csv")
    assert [(r["path"], r["prediction"]) for r in from_store] == [(r["path"], r["prediction"]) for r in rows]
    for a, b in zip(from_store, rows):
        assert (a["probability"] == b["probability"] == "") or float(a["probability"]) == pytest.approx(
            float(b["probability"]), abs=1e-4)


def test_predict_refuses_a_store_made_with_other_settings(demo, tmp_path):
    out = tmp_path / "res"
    result, _ = _invoke("classify", demo["store"], "--head", "logistic", "--save", "--out", out, "--boot", "10",
                        "--no-plots")
    assert result.exit_code == 0, result.output
    model = out / "models" / "cnn-fc-logistic.joblib"
    result, text = _invoke("predict", model, "--store", demo["store_b"], "--out", tmp_path / "p.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "weights_seed is 1 in the store but 0 in the model card" in text
    assert not (tmp_path / "p.csv").exists()
    _, card = load_model(model)
    settings = store_settings(demo["store"])
    check_store_matches(card, [settings], [demo["store"]])  # the store it was trained on passes
    for key, value in (("input_size", 224), ("mean", [0.5, 0.5, 0.5]), ("backbone", "vgg16")):
        with pytest.raises(FeatxError, match=f"{key} is .* in the store but .* in the model card"):
            check_store_matches(card, [{**settings, key: value}], ["x.h5"])
    with pytest.raises(FeatxError, match="trained on 1 fused store"):
        check_store_matches(card, [settings, settings], ["a.h5", "b.h5"])


@pytest.mark.parametrize("args, words", [
    (["classify", "{store}", "--head", "resnet"], "unknown head 'resnet'; choose from: softmax, logistic"),
    (["classify", "{store}", "--cv", "subject", "--folds", "20"], "only 10 subjects for --folds 20"),
    (["classify", "{store}", "--tap", "fc9"], "no tap 'fc9'"),
    (["classify", "{store}", "--positive", "blast"], "'blast' is not a class"),
    (["compare", "{store}", "--cv", "subject,patient"], "--cv 'patient'"),
    (["classify", "{store}", "--preprocess", "pca:0"], "pca:N"),
    (["predict", "{missing}", "{store}"], "no such model file"),
    (["classify", "{store}", "--skops"], "--skops exports the saved model; add --save"),
])
def test_user_errors_exit_1_with_one_line(demo, tmp_path, args, words):
    args = [a.format(store=demo["store"], missing=tmp_path / "none.joblib") for a in args]
    result, text = _invoke(*args, "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    assert words in text and "Traceback" not in result.output


def test_help_documents_every_option():
    for command in ("classify", "compare", "predict"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        options = re.findall(r"--[a-z][a-z-]+", result.output)
        assert len(options) >= 6
    text = re.sub(r"\s+", " ", runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).output)
    assert "IMAGE-LEVEL" in text and "subject,image" in text


@pytest.mark.skipif(importlib.util.find_spec("skops") is not None, reason="skops is installed here")
def test_skops_export_without_skops_says_how_to_install(demo, tmp_path):
    result, text = _invoke("classify", demo["store"], "--save", "--skops", "--out", tmp_path)
    assert result.exit_code == 1 and "pip install skops" in text
    assert not (tmp_path / "models").exists()  # refused before any work


def test_predict_with_a_model_trained_on_features_of_a_weights_file(demo, tmp_path):
    """The hybrid flow: features of a saved network (a path with '/' in the model name) -> model -> predict."""
    weights = tmp_path / "run" / "best.pt"
    weights.parent.mkdir()
    torch.save(create_backbone("cnn", "none", seed=7).state_dict(), weights)
    store = extract(demo["data"], tmp_path / "tuned.h5", backbone="cnn", weights=str(weights), image_size=64,
                    workers=0, progress=False)
    out = tmp_path / "res"
    result, _ = _invoke("classify", store, "--head", "logistic", "--save", "--out", out, "--boot", "50", "--no-plots")
    assert result.exit_code == 0, result.output
    model = out / "models" / "cnn-fc-logistic.joblib"
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["feature_name"] == "cnn[run/best.pt]/fc" and card["stores"][0]["taps"] == ["fc"]
    result, _ = _invoke("predict", model, "--store", store, "--split", "final", "--out", tmp_path / "a.csv")
    assert result.exit_code == 0, result.output
    result, _ = _invoke("predict", model, demo["data"], "--split", "final", "--workers", "0", "--out",
                        tmp_path / "b.csv")
    assert result.exit_code == 0, result.output
    a, b = _read_csv(tmp_path / "a.csv"), _read_csv(tmp_path / "b.csv")
    assert len(a) == N_FINAL and [r["prediction"] for r in a] == [r["prediction"] for r in b]
