"""Typed values at the seams: extract(settings, run=...), HeadSettings, hybrid's folds / heads_settings /
finetune, and the typed records of summarize and hybrid; the old keyword forms map onto the same values."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from featx.backbones import WeightsSpec
from featx.cli import app
from featx.errors import FeatxError
from featx.evaluation import Hybrid
from featx.extract import ExtractRun, ExtractSettings, extract
from featx.finetune import FinetuneSettings, finetune, resolve_settings
from featx.heads import HeadSettings
from featx.records import Record
from featx.store import Shard, StoreSummary, summarize
from featx.workflows.hybrid import HybridResult, hybrid

TINY = dict(backbone="cnn", weights="none", image_size=32)
RUN = dict(device="cpu", workers=0, batch_size=8)
SUMMARY_KEYS = ["file", "samples", "done", "errors", "unfinished", "failed", "unreadable_folders", "classes", "labels",
                "subjects", "taps", "counts", "settings", "network_roles", "exif_orientation"]


@pytest.fixture(scope="module")
def stores(cnmc_tree, tmp_path_factory):
    """The same extraction twice: with the old keywords, and with the two typed values."""
    root = tmp_path_factory.mktemp("typed")
    by_keywords = extract(cnmc_tree, root / "keywords.h5", seed=3, **TINY, **RUN)
    by_objects = extract(cnmc_tree, root / "objects.h5", ExtractSettings(seed=3, **TINY), run=ExtractRun(**RUN))
    return by_keywords, by_objects


def test_extract_with_objects_writes_the_store_the_keywords_write(stores):
    with h5py.File(stores[0], "r") as a, h5py.File(stores[1], "r") as b:
        attrs_a, attrs_b = dict(a.attrs), dict(b.attrs)
        assert attrs_a.keys() == attrs_b.keys()
        differ = [k for k in attrs_a if str(attrs_a[k]) != str(attrs_b[k])]
        assert set(differ) <= {"created"}     # the time it was made, nothing else
        assert attrs_a["backbone"] == "cnn" and int(attrs_a["input_size"]) == 32 and int(attrs_a["weights_seed"]) == 3
        assert sorted(a["features"]) == sorted(b["features"]) and len(a["features"]) >= 2
        for tap in a["features"]:
            assert a["features"][tap].shape[0] == 34
            np.testing.assert_array_equal(a["features"][tap][:], b["features"][tap][:])  # same seed, same CPU


def test_settings_parse_and_check_where_they_are_made():
    s = ExtractSettings(backbone="cnn", weights="none", taps="fc", image_size=32.0)
    assert s.weights == WeightsSpec("none") and s.taps == ("fc",) and s.image_size == 32
    assert ExtractSettings().weights is None  # the backbone's default, chosen when the backbone is known
    run = ExtractRun(splits="fold_0,prelim", shard="1/4")
    assert run.splits == ("fold_0", "prelim") and run.shard == Shard(1, 4)
    with pytest.raises(FeatxError, match=r"^dtype='float64': choose one of float32, float16$"):
        ExtractSettings(dtype="float64")
    with pytest.raises(FeatxError, match=r"^batch_size=0: must be at least 1$"):
        ExtractRun(batch_size=0)
    with pytest.raises(FeatxError, match=r"^shard='4/4': i must be from 0 to 3"):
        ExtractRun(shard="4/4")


def test_unknown_or_twice_given_keywords_are_refused_by_name(cnmc_tree, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(TypeError, match=r"^extract\(\) got an unexpected keyword argument 'batchsize'; it takes the "
                                        r"settings settings=ExtractSettings\(\.\.\.\), run=ExtractRun\(\.\.\.\) or "
                                        r"these keywords: backbone, weights, .*, batch_size, workers, strict$"):
        extract(cnmc_tree, out, batchsize=8, **TINY)
    with pytest.raises(TypeError, match=r"^extract\(\): 'backbone' is given twice, as a keyword and in "
                                        r"settings=ExtractSettings\(\.\.\.\); give it in one place$"):
        extract(cnmc_tree, out, ExtractSettings(**TINY), backbone="cnn")
    with pytest.raises(TypeError, match=r"'device' is given twice, as a keyword and in run=ExtractRun"):
        extract(cnmc_tree, out, run=ExtractRun(**RUN), device="cpu", **TINY)
    with pytest.raises(TypeError, match=r"^extract\(\): settings is a ExtractSettings, not dict$"):
        extract(cnmc_tree, out, dict(TINY))
    assert not out.exists()
    with pytest.raises(TypeError, match=r"^hybrid\(\) got an unexpected keyword argument 'n_fold'; .*n_folds, seed, "
                                        r"preprocess, params, class_weight, weights, preset"):
        hybrid(cnmc_tree, tmp_path / "run", backbone="cnn", heads=["svm"], n_fold=3)
    with pytest.raises(TypeError, match=r"'lr' is given twice, as a keyword and in finetune=FinetuneSettings"):
        hybrid(cnmc_tree, tmp_path / "run", backbone="cnn", heads=["svm"], finetune=FinetuneSettings(), lr=0.1)
    with pytest.raises(TypeError, match=r"'seed' is given twice, as a keyword and in folds=Hybrid"):
        hybrid(cnmc_tree, tmp_path / "run", backbone="cnn", heads=["svm"], folds=Hybrid(3), seed=1)
    assert not (tmp_path / "run").exists()


def test_head_settings_refuse_bad_values_before_any_fit():
    with pytest.raises(FeatxError, match=r"^head svm: bad parameter params='svm\.Cx=1': svm takes C, "):
        HeadSettings(params={"svm": {"Cx": 1}})
    with pytest.raises(FeatxError, match=r"^head svm: bad parameter params='svm\.C=-1': .*C"):
        HeadSettings(params={"svm": {"C": -1}})
    with pytest.raises(FeatxError, match=r"^head svm: bad parameter .*: set it with seed$"):
        HeadSettings(params={"svm": {"random_state": 1}})
    with pytest.raises(FeatxError, match=r"^class_weight='heavy': use 'balanced' or leave it out$"):
        HeadSettings(class_weight="heavy")
    with pytest.raises(FeatxError, match=r"^preprocess='pca': pca needs a positive whole number of components"):
        HeadSettings(preprocess="pca")
    with pytest.raises(FeatxError, match=r"^seed=1: give a whole number$"):
        HeadSettings(seed="1")


def test_head_settings_give_each_head_its_make_head_arguments():
    s = HeadSettings(preprocess=["standard", ["pca", 4]], class_weight="balanced", params={"SVM": {"C": 10.0}},
                     device="cpu", seed=np.int64(7))
    assert s.preprocess == ("standard", ("pca", 4)) and s.params == {"svm": {"C": 10.0}} and s.seed == 7
    assert s.for_head("svm") == dict(preprocess=("standard", ("pca", 4)), class_weight="balanced", seed=7,
                                     device="cpu", C=10.0)
    assert s.for_head("logistic") == dict(preprocess=("standard", ("pca", 4)), class_weight="balanced", seed=7,
                                          device="cpu")
    pipe = s.make("svm")
    assert [name for name, _ in pipe.steps] == ["standard", "pca", "clf"]
    assert pipe.named_steps["clf"].C == 10.0 and pipe.named_steps["pca"].n_components == 4


def test_finetune_settings_resolve_as_finetune_resolves_its_keywords():
    given = dict(lr=0.01, epochs=3, class_weight="none", image_size=32, augment=False)
    resolved = FinetuneSettings(preset="paper", **given).resolve("cnn")
    assert resolved == resolve_settings("cnn", "paper", **given)
    assert resolved["lr"] == 0.01 and resolved["optimizer"] == "sgd" and resolved["weights"] == "none"
    assert resolved["sources"]["lr"] == "option" and resolved["sources"]["optimizer"] == "preset"
    assert FinetuneSettings(weights=WeightsSpec("none")).options()["weights"] == "none"


def _failed_hybrid(cnmc_tree, out, **options) -> tuple[dict, str]:
    """A hybrid call that fails in fold 1's fine-tune (lr -1, before any epoch) in an existing run folder, so
    that its settings.json stays: what the run recorded, and the message."""
    out.mkdir()
    with pytest.raises(FeatxError) as failed:
        hybrid(cnmc_tree, out, backbone="cnn", heads=["svm"], device="cpu", workers=0, plots=False, **options)
    return json.loads((out / "settings.json").read_text()), str(failed.value)


def test_hybrid_objects_record_the_settings_the_keywords_record(cnmc_tree, tmp_path):
    tuning = dict(weights="none", epochs=2, lr=-1.0, batch_size=8, optimizer="sgd", momentum=0.5, weight_decay=0.0,
                  schedule="step", dropout=0.2, image_size=32, augment=False, color_jitter=True, early_stopping="f1",
                  patience=3)
    old, old_error = _failed_hybrid(cnmc_tree, tmp_path / "keywords", n_folds=3, seed=1, preprocess=["l2"],
                                    params={"svm": {"C": 2.0}}, finetune_class_weight="none", **tuning)
    new, new_error = _failed_hybrid(cnmc_tree, tmp_path / "objects", folds=Hybrid(3, seed=1),
                                    heads_settings=HeadSettings(preprocess=["l2"], params={"svm": {"C": 2.0}}),
                                    finetune=FinetuneSettings(class_weight="none", **tuning))
    assert old == new and old_error == new_error == "lr=-1.0: must be a positive number"
    assert old["n_folds"] == 3 and old["seed"] == 1 and old["backbone"] == "cnn"
    assert old["finetune"] == dict(tuning, preset=None, finetune_class_weight="none", freeze=None)
    assert list(old["finetune"])[:3] == ["weights", "preset", "epochs"]  # the order settings.json always had


@pytest.mark.slow
def test_hybrid_returns_a_typed_result_that_reads_as_the_old_dict(cnmc_tree, tmp_path, one_torch_thread):
    result = hybrid(cnmc_tree, tmp_path / "run", backbone="cnn", heads=["logistic"], folds=Hybrid(3),
                    finetune=FinetuneSettings(weights="none", image_size=32, epochs=1, batch_size=8, augment=False),
                    device="cpu", workers=0, plots=False)
    assert isinstance(result, HybridResult) and isinstance(result, Record)
    assert list(result) == ["rows", "paths", "folds", "out"]
    assert result["rows"] is result.rows and result.out == tmp_path / "run"
    assert [r.name for r in result.rows] == ["cnn[fine-tuned per fold]/fc + logistic", "cnn fine-tuned"]
    assert [f["fold"] for f in result.folds] == [1, 2, 3] and result.paths["json"].is_file()


def test_summarize_returns_a_typed_record_with_the_old_keys(stores, cnmc_tree):
    s = summarize(stores[0])
    assert isinstance(s, StoreSummary) and list(s) == SUMMARY_KEYS and list(s.as_dict()) == SUMMARY_KEYS
    assert (s.samples, s.done, s.errors, s.unfinished, s.subjects) == (34, 34, 0, 0, 8)
    assert s["done"] == s.done and s.get("taps") is s.taps and "counts" in s and s.get("nothing") is None
    assert s.classes == ["all", "hem"] and s.counts["prelim"] == {"all": 3, "hem": 3, "unlabelled": 0}
    assert s.settings["backbone"] == "cnn" and s.network_roles is None and s.exif_orientation == "applied"
    with pytest.raises(KeyError):
        s["nothing"]
    info = CliRunner().invoke(app, ["info", str(stores[0]), "--json"])
    assert info.exit_code == 0, info.output
    assert list(json.loads(info.output)) == SUMMARY_KEYS and json.loads(info.output)["done"] == 34


def test_finetune_takes_its_settings_as_one_value_or_as_keywords(cnmc_tree, tmp_path, one_torch_thread):
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        finetune(cnmc_tree, tmp_path / "typo", backbone="cnn", epoch=1)
    with pytest.raises(TypeError, match="'epochs' is given twice"):
        finetune(cnmc_tree, tmp_path / "twice", FinetuneSettings(epochs=1), backbone="cnn", epochs=2)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "twice").exists()
    common = dict(backbone="cnn", val="fold_2", seed=0, device="cpu", workers=0)
    tuning = dict(weights="none", image_size=32, epochs=1, lr=1e-3, batch_size=8)
    by_value = finetune(cnmc_tree, tmp_path / "value", FinetuneSettings(**tuning), **common)
    by_keywords = finetune(cnmc_tree, tmp_path / "keywords", **tuning, **common)
    assert by_value["settings_used"] == by_keywords["settings_used"]
    assert by_value["settings_used"]["epochs"] == 1 and by_value["settings_used"]["lr"] == 1e-3
    assert by_value["row"].scores == by_keywords["row"].scores  # the same seeded run
