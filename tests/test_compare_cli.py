"""End to end on demo data: synth -> extract -> `featx compare/classify/predict` through the real CLI app."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import invoke as _invoke
from typer.testing import CliRunner

from featx.backbones import create_backbone
from featx.cli import app
from featx.data.synth import synthesize
from featx.errors import FeatxError, FeatxWarning
from featx.extract import extract
from featx.heads import make_head
from featx.persist import card_path, check_store_matches, export_skops, fit_final, load_model, save_model
from featx.store import load_features, store_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


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
                               seed=seed, batch_size=32, workers=0)
    return {"root": root, "data": data, "store": stores[0], "store_b": stores[1]}


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_compare_shows_image_level_above_subject_level_in_one_table(demo, tmp_path):
    out = tmp_path / "results"
    result, text = _invoke("compare", demo["store"], "--heads", "softmax,svm,xgboost", "--cv", "subject,image",
                           "--out", out)
    assert result.exit_code == 0, result.output
    assert "featx compare" in text and "subject 5-fold" in text and "* IMAGE-LEVEL 5-fold" in text
    rows = _read_csv(out / "results.csv")
    assert [(r["head"], r["protocol"]) for r in rows] == [
        ("softmax", "subject"), ("svm", "subject"), ("xgboost", "subject"),
        ("softmax", "image"), ("svm", "image"), ("xgboost", "image")]
    # that image-level folds score higher (the stain leaks) is a claim over seeds, which one draw cannot show:
    # test_evaluate::test_image_level_cv_scores_higher_than_subject_level_cv and test_synth pool three
    for r in rows:
        assert r["image_level"] == str(r["protocol"] == "image")
        assert int(r["n_test"]) == 120 and int(r["n_subjects"]) == 10 and r["positive"] == "all"
        if r["protocol"] == "subject":  # 10 subjects in 5 folds: too few of a class per test fold (n/a, and why)
            assert r["accuracy_ci_low"] == r["accuracy_ci_high"] == ""
            assert "holds 1 subject of class" in json.loads(r["interval"])["na"]["accuracy"]
        else:  # image-level folds hold every subject
            assert float(r["accuracy_ci_low"]) <= float(r["accuracy"]) <= float(r["accuracy_ci_high"])
        assert json.loads(r["settings.stores"]) == [str(demo["store"])]
    md = (out / "results.md").read_text()
    assert md.count("IMAGE-LEVEL 5-fold (cells of one subject on both sides)") == 3
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(pngs) == 12 and (out / "comparison.png").stat().st_size > 5000
    data = json.loads((out / "results.json").read_text())
    assert len(data) == 6 and data[0]["confusion"] and data[0]["per_subject_accuracy"]


@pytest.mark.slow
def test_classify_with_fused_taps_and_stores_and_the_prelim_phase(demo, tmp_path):
    result, text = _invoke("classify", demo["store"], "--head", "logistic", "--tap", "fc+pool5", "--eval", "prelim",
                           "--out", tmp_path, "--no-plots")
    assert result.exit_code == 0, result.output
    row, = json.loads((tmp_path / "results.json").read_text())
    assert row["name"] == "cnn/fc+pool5 + logistic" and row["tap"] == "fc+pool5"
    assert row["protocol"] == "prelim" and row["n_test"] == N_PRELIM and row["n_train"] == 120
    assert "held-out prelim" in text and not (tmp_path / "plots").exists()
    fused = f"{demo['store']}+{demo['store_b']}"
    result, text = _invoke("classify", fused, "--head", "knn", "--folds", "3", "--out", tmp_path / "fused",
                           "--param", "n_neighbors=3")
    assert result.exit_code == 0, result.output
    row, = json.loads((tmp_path / "fused" / "results.json").read_text())
    assert row["name"] == "cnn/fc+cnn/fc + knn" and row["n_folds"] == 3 and row["settings"]["params"] == {
        "n_neighbors": 3}


@pytest.mark.slow
def test_saved_model_reloads_and_predicts_the_same_labels(demo, tmp_path):
    features = load_features(demo["store"])
    model, n_train = fit_final(features, "softmax", device="cpu")
    assert n_train == 120  # labelled training rows; prelim (held out) and final (unlabelled) left out
    path = save_model(model, features, tmp_path, head="softmax", n_train=n_train, preprocess="standard")
    assert path.name == "cnn-fc-softmax.joblib"
    loaded, card = load_model(path, trust_pickle=True)
    np.testing.assert_array_equal(loaded.predict(features.X), model.predict(features.X))
    np.testing.assert_array_equal(loaded.predict_proba(features.X), model.predict_proba(features.X))
    assert card["classes"] == ["all", "hem"] and card["positive"] == "all" and card["n_features"] == 128
    assert card["stores"][0]["input_size"] == 64 and card["stores"][0]["weights_seed"] == 0
    assert card["stores"][0]["taps"] == ["fc"] and card["store_fingerprint"] == features.fingerprint
    assert set(card["versions"]) >= {"featx", "scikit-learn", "torch", "numpy"}
    # a model file changed after saving is refused before it is unpickled
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(FeatxError, match="changed after it was saved"):
        load_model(path, trust_pickle=True)


def _assert_same_predictions(a: list[dict], b: list[dict]) -> None:
    """Same paths and errors; the same class and value up to float rounding (features computed in other batches)."""
    assert [(r["path"], r["error"]) for r in a] == [(r["path"], r["error"]) for r in b]
    column = "probability" if a and a[0]["probability"] else "score"
    for ra, rb in zip(a, b):
        if ra[column] == "":
            assert rb[column] == "" and ra["prediction"] == rb["prediction"] == ""
            continue
        va, vb = float(ra[column]), float(rb[column])
        assert abs(va - vb) < 1e-4, (ra, rb)
        if abs(va - (0.5 if column == "probability" else 0.0)) > 1e-3:  # not a tie that rounding could break
            assert ra["prediction"] == rb["prediction"], (ra, rb)


def test_classify_save_then_predict_final_phase(demo, tmp_path):
    out = tmp_path / "res"
    result, text = _invoke("classify", demo["store"], "--head", "svm", "--save", "--out", out)
    assert result.exit_code == 0, result.output
    model = out / "models" / "cnn-fc-svm.joblib"
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["metrics"]["protocol"] == "subject" and 0.5 < card["metrics"]["accuracy"] <= 1
    # --save writes the shareable .skops copy too, with its own card
    shared = model.with_suffix(".skops")
    shared_card = json.loads((shared.parent / "cnn-fc-svm.skops.json").read_text())
    assert f"saved model {model} and {shared}" in text
    assert shared_card["file"] == shared.name and shared_card["classes"] == card["classes"]
    assert shared_card["sha256"] == hashlib.sha256(shared.read_bytes()).hexdigest() != card["sha256"]
    # extraction of the new images with the card's settings
    result, text = _invoke("predict", model, demo["data"], "--split", "final", "--out", tmp_path / "p1.csv",
                           "--workers", "0", "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert f"wrote {N_FINAL} rows" in text and f"{N_FINAL} predicted" in text and "0 could not be predicted" in text
    rows = _read_csv(tmp_path / "p1.csv")
    finals = sorted(p.relative_to(demo["data"]).as_posix() for p in demo["data"].glob("C-NMC_test_final*/*/*.bmp"))
    assert sorted(r["path"] for r in rows) == finals and len(rows) == N_FINAL
    assert {r["prediction"] for r in rows} <= {"all", "hem"} and {r["error"] for r in rows} == {""}
    if card["output"] == "probability":
        assert all(0.5 <= float(r["probability"]) <= 1 for r in rows)
    else:
        assert all(r["probability"] == "" and float(r["score"]) >= 0 for r in rows)
    # the same predictions from the store that holds those images (extracted in other batches: equal up to
    # rounding), and exactly the same from the .skops copy
    result, _ = _invoke("predict", model, "--store", demo["store"], "--split", "final", "--out", tmp_path / "p2.csv",
                        "--trust-pickle")
    assert result.exit_code == 0, result.output
    from_store = _read_csv(tmp_path / "p2.csv")
    _assert_same_predictions(from_store, rows)
    result, _ = _invoke("predict", shared, "--store", demo["store"], "--split", "final", "--out", tmp_path / "p3.csv")
    assert result.exit_code == 0, result.output
    assert _read_csv(tmp_path / "p3.csv") == from_store
    # --no-skops: the .joblib alone (another head: its own results folder, as svm's is not replaced)
    out = tmp_path / "res-knn"
    result, _ = _invoke("classify", demo["store"], "--head", "knn", "--save", "--no-skops", "--out", out,
                        "--no-plots")
    assert result.exit_code == 0, result.output
    assert (out / "models" / "cnn-fc-knn.joblib").is_file() and not (out / "models" / "cnn-fc-knn.skops").exists()


@pytest.fixture(scope="module")
def logistic_model(demo, tmp_path_factory) -> Path:
    """`featx classify --head logistic --save` on the demo store (cnn, seed 0, 64 px)."""
    out = tmp_path_factory.mktemp("logistic")
    result, _ = _invoke("classify", demo["store"], "--head", "logistic", "--save", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    return out / "models" / "cnn-fc-logistic.skops"


def _final_images(root: Path) -> list[Path]:
    return sorted(root.glob("C-NMC_test_final*/*/*.bmp"))


@pytest.mark.slow
def test_predict_data_with_an_unreadable_image_writes_every_other_row(cnmc_tree, logistic_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cnmc_tree, data)
    bad = _final_images(data)[1]
    bad.write_bytes(b"not a bitmap at all")
    common = ["--split", "final", "--workers", "0", "--batch-size", "1"]
    result, _ = _invoke("predict", logistic_model, cnmc_tree, *common, "--out", tmp_path / "clean.csv")
    assert result.exit_code == 0, result.output
    clean = _read_csv(tmp_path / "clean.csv")
    result, text = _invoke("predict", logistic_model, data, *common, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "wrote 4 rows" in text and "3 predicted" in text and "1 could not be predicted" in text
    assert "warning: 1 image(s) could not be predicted" in text and bad.name in text
    rows = _read_csv(tmp_path / "p.csv")
    assert [r["path"] for r in rows] == [r["path"] for r in clean] and len(rows) == 4
    bad_key = bad.relative_to(data).as_posix()
    for row, ref in zip(rows, clean):
        if row["path"] == bad_key:
            assert row["prediction"] == row["probability"] == "" and "cannot read image" in row["error"]
            assert bad.name in row["error"]
        else:
            assert row == ref and row["error"] == "" and row["prediction"] in ("all", "hem")
    # --strict: the same CSV, and exit 1 with one line
    result, text = _invoke("predict", logistic_model, data, *common, "--strict", "--out", tmp_path / "s.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 of 4 requested image(s) could not be predicted" in text and bad.name in text
    assert len(result.output.strip().splitlines()) == 1
    assert _read_csv(tmp_path / "s.csv") == rows


@pytest.mark.slow
def test_predict_store_includes_unfinished_and_failed_rows(cnmc_tree, logistic_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cnmc_tree, data)
    bad = sorted((data / "C-NMC_training_data" / "fold_0" / "all").glob("*.bmp"))[0]
    bad.write_bytes(b"garbage")
    settings = dict(backbone="cnn", weights="none", image_size=64, batch_size=1, workers=0)
    clean = extract(cnmc_tree, tmp_path / "clean.h5", **settings)
    store = extract(data, tmp_path / "s.h5", **settings)  # records the bad image and returns
    with h5py.File(store, "r+") as h5:  # two rows left unfinished, as after an interrupted extract
        h5["samples/done"][3] = False
        h5["samples/done"][20] = False
        paths = list(h5["samples/path"].asstr()[:])
        unfinished = {paths[3], paths[20]}
    result, _ = _invoke("predict", logistic_model, "--store", clean, "--out", tmp_path / "clean.csv")
    assert result.exit_code == 0, result.output
    reference = {r["path"]: r for r in _read_csv(tmp_path / "clean.csv")}
    result, text = _invoke("predict", logistic_model, "--store", store, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert f"wrote {len(paths)} rows" in text and "3 could not be predicted" in text
    rows = _read_csv(tmp_path / "p.csv")
    assert [r["path"] for r in rows] == paths and len(paths) == 34
    bad_key = bad.relative_to(data).as_posix()
    for row in rows:
        if row["path"] == bad_key:
            assert row["error"].startswith("not extracted: cannot read image") and row["prediction"] == ""
        elif row["path"] in unfinished:
            assert row["error"] == "not extracted: the store is unfinished; run `featx extract` again to fill it"
            assert row["prediction"] == row["probability"] == ""
        else:
            assert row == reference[row["path"]] and row["error"] == ""
    # one split only: the failed row is there too
    result, text = _invoke("predict", logistic_model, "--store", store, "--split", "fold_0", "--strict", "--out",
                           tmp_path / "f0.csv")
    assert result.exit_code == 1 and "could not be predicted" in text and "Traceback" not in result.output
    f0 = _read_csv(tmp_path / "f0.csv")
    assert bad_key in {r["path"] for r in f0} and len(f0) == 8


def test_predict_with_a_model_without_probabilities_writes_the_score(demo, tmp_path):
    features = load_features(demo["store"])
    train = np.isin(features.splits, ["fold_0", "fold_1", "fold_2"])
    model = make_head("svm").fit(features.X[train], features.y[train])
    path = save_model(model, features, tmp_path, head="svm", n_train=int(train.sum()), preprocess="standard")
    assert json.loads(path.with_suffix(".json").read_text())["output"] == "score"
    result, text = _invoke("predict", path, "--store", demo["store"], "--split", "final", "--out", tmp_path / "p.csv",
                           "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert "column score" in text
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "path,prediction,probability,score,error" and len(lines) == N_FINAL + 1
    rows = _read_csv(tmp_path / "p.csv")
    final = load_features(demo["store"], splits=["final"], labelled=False)
    margin = np.abs(model.decision_function(final.X))
    assert [r["path"] for r in rows] == list(final.paths)
    assert [r["prediction"] for r in rows] == [features.classes[k] for k in model.predict(final.X)]
    np.testing.assert_allclose([float(r["score"]) for r in rows], margin, rtol=1e-5)
    assert all(r["probability"] == "" and r["error"] == "" for r in rows)


@pytest.mark.slow
def test_predict_refuses_a_store_made_with_other_settings(demo, tmp_path):
    out = tmp_path / "res"
    result, _ = _invoke("classify", demo["store"], "--head", "logistic", "--save", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    model = out / "models" / "cnn-fc-logistic.joblib"
    result, text = _invoke("predict", model, "--store", demo["store_b"], "--out", tmp_path / "p.csv", "--trust-pickle")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "weights_seed is 1 in the store but 0 in the model card" in text
    assert not (tmp_path / "p.csv").exists()
    _, card = load_model(model, trust_pickle=True)
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
    (["classify", "{store}", "--positive", "blast"], "--positive blast is not a class"),
    (["compare", "{store}", "--cv", "subject,patient"], "--cv patient: choose one of"),
    (["classify", "{store}", "--preprocess", "pca:0"], "pca:N"),
    (["predict", "{missing}", "{store}"], "no such model file"),
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


@pytest.mark.slow
def test_predict_with_a_model_trained_on_features_of_a_weights_file(demo, tmp_path):
    """The hybrid flow: features of a saved network (a path with '/' in the model name) -> model -> predict."""
    weights = tmp_path / "run" / "best.pt"
    weights.parent.mkdir()
    torch.save(create_backbone("cnn", "none", seed=7).state_dict(), weights)
    store = extract(demo["data"], tmp_path / "tuned.h5", backbone="cnn", weights=str(weights), image_size=64,
                    workers=0)
    out = tmp_path / "res"
    result, _ = _invoke("classify", store, "--head", "logistic", "--save", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    model = out / "models" / "cnn-fc-logistic.joblib"
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["feature_name"] == "cnn[run/best.pt]/fc" and card["stores"][0]["taps"] == ["fc"]
    result, _ = _invoke("predict", model, "--store", store, "--split", "final", "--out", tmp_path / "a.csv",
                        "--trust-pickle")
    assert result.exit_code == 0, result.output
    result, _ = _invoke("predict", model, demo["data"], "--split", "final", "--workers", "0", "--out",
                        tmp_path / "b.csv", "--trust-pickle")
    assert result.exit_code == 0, result.output
    a, b = _read_csv(tmp_path / "a.csv"), _read_csv(tmp_path / "b.csv")
    assert len(a) == N_FINAL
    _assert_same_predictions(a, b)


# -- issue 24: stale features, outputs that are inputs, a swapped best.pt ------------------------------------------
def _replace_final_images(data: Path) -> list[Path]:
    """Put other cells (training images, the same 40 px BMPs) under the final phase's names 1.bmp ... 4.bmp."""
    finals = _final_images(data)
    others = sorted((data / "C-NMC_training_data").rglob("*.bmp"))[::5]
    for final, other in zip(finals, others):
        assert final.stat().st_size == other.stat().st_size
        final.write_bytes(other.read_bytes())
    return finals


@pytest.mark.slow
def test_predict_cache_recomputes_images_replaced_under_their_names(cnmc_tree, logistic_model, tmp_path):
    data = tmp_path / "inbox"
    shutil.copytree(cnmc_tree, data)
    common = ["--split", "final", "--workers", "0", "--cache", tmp_path / "cache"]
    result, text = _invoke("predict", logistic_model, data, *common, "--out", tmp_path / "before.csv")
    assert result.exit_code == 0 and "changed since" not in text, result.output
    finals = _replace_final_images(data)
    result, text = _invoke("predict", logistic_model, data, *common, "--out", tmp_path / "cached.csv")
    assert result.exit_code == 0, result.output
    names = ", ".join(f.relative_to(data).as_posix() for f in finals[:3])
    assert f"warning: 4 image(s) changed since they were extracted into {tmp_path / 'cache'}" in text
    assert f"({names} and 1 more): recomputed" in text
    result, _ = _invoke("predict", logistic_model, data, "--split", "final", "--workers", "0", "--out",
                        tmp_path / "fresh.csv")
    assert result.exit_code == 0, result.output
    before, cached, fresh = (_read_csv(tmp_path / f"{n}.csv") for n in ("before", "cached", "fresh"))
    _assert_same_predictions(cached, fresh)  # the new images' predictions, not the old ones
    assert max(abs(float(a["probability"]) - float(b["probability"])) for a, b in zip(before, fresh)) > 1e-3
    # nothing changed since: the cache is used as it is
    result, text = _invoke("predict", logistic_model, data, *common, "--out", tmp_path / "again.csv")
    assert result.exit_code == 0 and "changed since" not in text and _read_csv(tmp_path / "again.csv") == cached


@pytest.mark.slow
def test_predict_store_refuses_images_changed_since_extraction_and_says_what_it_cannot_check(
        cnmc_tree, logistic_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cnmc_tree, data)
    settings = dict(backbone="cnn", weights="none", image_size=64, workers=0)
    store = extract(data, tmp_path / "s.h5", **settings)
    finals = _replace_final_images(data)
    result, text = _invoke("predict", logistic_model, "--store", store, "--split", "final", "--out", tmp_path / "p.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()
    names = ", ".join(f.relative_to(data).as_posix() for f in finals[:3])
    assert (f"error: {store}: 4 image(s) changed since they were extracted ({names} and 1 more), so its features of "
            f"them are stale; run the same `featx extract` into {store} again (it recomputes them), then predict"
            ) in text
    # rows whose images did not change are predicted (only the requested rows are checked)
    result, text = _invoke("predict", logistic_model, "--store", store, "--split", "fold_0", "--out",
                           tmp_path / "f0.csv")
    assert result.exit_code == 0 and "warning" not in text, result.output
    # the fix the message names: the extraction resumes, recomputes those four, and predict agrees with the images
    with pytest.warns(FeatxWarning, match=r"4 image\(s\) changed since they were extracted .*: recomputed"):
        extract(data, store, **settings)
    result, _ = _invoke("predict", logistic_model, "--store", store, "--split", "final", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    result, _ = _invoke("predict", logistic_model, data, "--split", "final", "--workers", "0", "--out",
                        tmp_path / "fresh.csv")
    _assert_same_predictions(_read_csv(tmp_path / "p.csv"), _read_csv(tmp_path / "fresh.csv"))
    # images no longer where the store says (moved data): predicted from the store, with one warning
    moved = data.rename(tmp_path / "moved")
    result, text = _invoke("predict", logistic_model, "--store", store, "--split", "final", "--out", tmp_path / "m.csv")
    assert result.exit_code == 0, result.output
    assert text.count("warning:") == 1 and (f"{store}: featx cannot tell whether 4 of the 4 images changed since they "
                                            f"were extracted (first: {finals[0].relative_to(data).as_posix()}, not "
                                            f"under {data}); predicting them from the stored features") in text
    moved.rename(data)
    # a store of an older featx (no content recorded): predicted, saying once that it cannot be checked
    old = Path(shutil.copy(store, tmp_path / "old.h5"))
    with h5py.File(old, "r+") as h5:
        del h5["samples/file"], h5["samples/meta_checksum"]
        h5.attrs["schema_version"] = 2
    result, text = _invoke("predict", logistic_model, "--store", old, "--out", tmp_path / "o.csv")
    assert result.exit_code == 0, result.output
    assert text.count("warning:") == 1 and (f"warning: {old} was written by an older featx: its rows record no "
                                            "content of their image files, so featx cannot tell whether the images "
                                            "changed since they were extracted") in text


@pytest.mark.slow
def test_predict_refuses_an_out_that_is_one_of_its_inputs_or_a_folder(cnmc_tree, logistic_model, demo, tmp_path):
    manifest = tmp_path / "man.csv"
    manifest.write_text("path,label\n" + "".join(f"{f},\n" for f in _final_images(cnmc_tree)))
    joblib_model = logistic_model.with_suffix(".joblib")
    labels = next(cnmc_tree.rglob("*_labels.csv"))
    cases = [
        ([logistic_model, manifest], manifest, "is the data"),
        ([logistic_model, manifest], logistic_model, "is the model"),
        ([logistic_model, manifest], card_path(logistic_model), "is the model's card"),
        ([joblib_model, manifest, "--trust-pickle"], joblib_model.with_suffix(".json"), "is the model's card"),
        ([logistic_model, "--store", demo["store"]], demo["store"], "is a store it reads"),
        ([logistic_model, cnmc_tree], labels, "is a labels file of the data"),
        ([logistic_model, manifest], tmp_path / "cell.bmp", "names an image; give the CSV file to write"),
    ]
    for args, out, words in cases:
        before = out.read_bytes() if out.exists() else None
        result, text = _invoke("predict", *args, "--workers", "0", "--out", out)
        assert result.exit_code == 1 and "Traceback" not in result.output, (out, result.output)
        assert len(result.output.strip().splitlines()) == 1 and f"error: --out {out} {words}" in text, text
        assert (out.read_bytes() if out.exists() else None) == before, out
    # a folder (IsADirectoryError before), and a path under a file
    folder = tmp_path / "preds"
    folder.mkdir()
    result, text = _invoke("predict", logistic_model, "--store", demo["store"], "--out", folder)
    assert result.exit_code == 1 and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert f"error: --out {folder} is a folder; give the CSV file to write, e.g. --out {folder / 'predictions.csv'}" \
        in text
    result, text = _invoke("predict", logistic_model, "--store", demo["store"], "--out", manifest / "p.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--out {manifest / 'p.csv'}: {manifest} is a file, not a folder" in text
    assert list(folder.iterdir()) == []


@pytest.mark.slow
def test_a_swapped_weights_file_is_named_without_a_temporary_store_or_store_advice(cnmc_tree, tmp_path):
    weights = tmp_path / "run" / "best.pt"
    weights.parent.mkdir()
    torch.save(create_backbone("cnn", "none", seed=7).state_dict(), weights)
    store = extract(cnmc_tree, tmp_path / "tuned.h5", backbone="cnn", weights=str(weights), image_size=32,
                    workers=0, weights_never_saw_images=True)
    features = load_features(store)
    pipeline, n_train = fit_final(features, "logistic", device="cpu", eval_set="prelim")
    model = export_skops(save_model(pipeline, features, tmp_path / "m", head="logistic", n_train=n_train),
                         trust_pickle=True)
    args = ["predict", model, cnmc_tree, "--split", "final", "--workers", "0", "--out", tmp_path / "p.csv"]
    result, _ = _invoke(*args)
    assert result.exit_code == 0, result.output
    torch.save(create_backbone("cnn", "none", seed=8).state_dict(), weights)  # another best.pt at the same path
    card = json.loads(card_path(model).read_text())
    for extra in ([], ["--cache", tmp_path / "cache"]):
        result, text = _invoke(*args, *extra)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert (f"error: {weights}: the weights file the model's features came from changed since the model was "
                f"trained (its sha256 is not the {card['stores'][0]['weights_sha256'][:12]}... that {model.name}'s "
                "card records); put the original file back, or train a model on features of this one") in text
        assert "--store" not in text and "featx-predict-" not in text
    # any other setting that extraction now gives otherwise: said without the (temporary) store's name
    settings = store_settings(store)
    with pytest.raises(FeatxError) as err:
        check_store_matches(card, [{**settings, "resize": "other"}], ["/tmp/featx-predict-x/0-cnn.h5"],
                            extracted=True)
    assert str(err.value) == (f"resize is {settings['resize']!r} in the model card ({model.name}) but extracting "
                              "with the card's settings now gives resize='other': the weights or featx changed since "
                              "the model was trained; restore them, or train the model again on features extracted "
                              "now")
