"""featx.extract + featx.store: what lands in the HDF5 file, resuming, refusing, and the CLI around them."""
from __future__ import annotations

import csv
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from featx.backbones import create_backbone
from featx.cli import app
from featx.data import discover
from featx.data.images import load_image, make_transform
from featx.errors import FeatxError
from featx.extract import extract
from featx.store import FeatureStore, load_features, store_settings, summarize

runner = CliRunner()
NAME = re.compile(r"^UID_(H?\d+)_\d+_\d+_(all|hem)\.bmp$", re.IGNORECASE)


def expected_rows(root: Path) -> dict[str, tuple[str, str, str]]:
    """path -> (label, subject, split), read from the files themselves, not through featx.data."""
    rows = {}
    for f in sorted((root / "C-NMC_training_data").rglob("*.bmp")):
        subject, label = NAME.match(f.name).groups()
        assert f.parent.name == label.lower()
        rows[f.relative_to(root).as_posix()] = (label.lower(), subject.upper(), f.parent.parent.name)
    prelim = root / "C-NMC_test_prelim_phase_data"
    with open(prelim / "C-NMC_test_prelim_phase_data_labels.csv") as fh:
        for rec in csv.DictReader(fh):
            subject, label = NAME.match(rec["Patient_ID"]).groups()
            assert label.lower() == ("all" if rec["labels"] == "1" else "hem")
            path = (prelim / "C-NMC_test_prelim_phase_data" / rec["new_names"]).relative_to(root).as_posix()
            rows[path] = (label.lower(), subject.upper(), "prelim")
    for f in sorted((root / "C-NMC_test_final_phase_data").rglob("*.bmp")):
        rows[f.relative_to(root).as_posix()] = ("", "", "final")
    return rows


def read_rows(store: Path) -> dict[str, tuple[str, str, str]]:
    with h5py.File(store) as h5:
        s = h5["samples"]
        classes = list(s.attrs["classes"])
        classes = [c.decode() if isinstance(c, bytes) else c for c in classes]
        assert s["done"][:].all()
        return {p: (classes[lab] if lab >= 0 else "", subj, split)
                for p, lab, subj, split in zip(s["path"].asstr()[:], s["label"][:], s["subject"].asstr()[:],
                                               s["split"].asstr()[:])}


def test_store_holds_every_image_once_with_label_subject_split(cnmc_tree, cnn_store):
    want = expected_rows(cnmc_tree)
    got = read_rows(cnn_store)
    with h5py.File(cnn_store) as h5:
        paths = list(h5["samples/path"].asstr()[:])
    assert len(paths) == len(set(paths)) == len(want)
    assert got == want
    assert {v[2] for v in got.values()} == {"fold_0", "fold_1", "fold_2", "prelim", "final"}
    assert any(v[2] == "prelim" and v[0] and v[1] for v in got.values())


def test_store_schema_and_settings(cnn_store, cnmc_tree):
    s = store_settings(cnn_store)
    assert s["schema_version"] == 3 and s["backbone"] == "cnn" and s["input_size"] == 32
    assert s["weights"] == "none" and s["weights_seed"] == 0
    assert s["taps"] == ["pool5", "fc"] and s["default_tap"] == "fc"  # taps in extraction order
    assert s["data_root"] == str(cnmc_tree.resolve())
    assert s["torch_version"] == torch.__version__ and len(s["dataset_fingerprint"]) == 64
    with h5py.File(cnn_store) as h5:
        for _tap, ds in h5["features"].items():
            assert ds.maxshape == (None, ds.shape[1]) and ds.chunks[1] == ds.shape[1]
            assert ds.chunks[0] * ds.shape[1] * 4 <= (1 << 20)
            assert ds.shape[0] == len(h5["samples/path"])
        sums = h5["samples/checksum"]
        assert sums.shape == (len(h5["samples/path"]), 2) and list(sums.attrs["taps"]) == s["taps"]
        assert (sums[:] > 0).all()


@pytest.mark.parametrize("name,size,dims", [("vgg16", 32, {"pool5": 512, "fc7": 4096}),
                                            ("alexnet", 64, {"pool5": 256, "fc7": 4096})])
@pytest.mark.slow
def test_taps_equal_a_direct_forward_pass(cnmc_tree, tmp_path, name, size, dims):
    collection = discover(cnmc_tree, splits=["fold_0"])
    collection = collection.subset(range(5))
    out = tmp_path / f"{name}.h5"
    extract(collection, out, backbone=name, weights="none", taps=["fc7", "pool5"], image_size=size, batch_size=2,
            workers=0, seed=3)
    model = create_backbone(name, "none", seed=3).eval()
    transform = make_transform(size, model.config.mean, model.config.std)
    x = torch.stack([transform(load_image(collection.abspath(i))) for i in range(5)])
    with torch.no_grad():
        direct = model.forward_taps(x, ["pool5", "fc7"])
    with h5py.File(out) as h5:
        assert set(h5["features"]) == set(dims)
        for tap, dim in dims.items():
            stored = h5["features"][tap][:]
            assert stored.shape == (5, dim)
            np.testing.assert_allclose(stored, direct[tap].numpy(), rtol=1e-4, atol=1e-5)
            assert np.abs(stored).sum() > 0
    s = store_settings(out)
    assert s["taps"] == ["pool5", "fc7"] and s["default_tap"] == "fc7"  # the backbone's order, not the asked one
    assert load_features(out).tap == "fc7"


def _without_default_tap(store: Path, copy: Path) -> Path:
    """A copy of ``store`` as featx wrote it before stores recorded their default tap."""
    shutil.copy(store, copy)
    with h5py.File(copy, "r+") as h5:
        del h5.attrs["default_tap"]
    return copy


@pytest.mark.parametrize("name,size,default", [pytest.param("vgg16", 32, "fc7", marks=pytest.mark.slow),
                                               pytest.param("alexnet", 64, "fc7", marks=pytest.mark.slow),
                                               ("cnn", 32, "fc")])
def test_a_store_without_a_default_tap_reads_the_last_tap_it_extracted(cnmc_tree, tmp_path, name, size, default):
    collection = discover(cnmc_tree, splits=["fold_0"]).subset(range(3))
    out = extract(collection, tmp_path / "new.h5", backbone=name, weights="none", image_size=size, batch_size=3,
                  workers=0)
    old = _without_default_tap(out, tmp_path / "old.h5")
    assert "default_tap" not in store_settings(old) and store_settings(old)["taps"][-1] == default
    with h5py.File(old) as h5:
        assert list(h5["features"])[-1] != default  # h5py lists taps alphabetically: never the order to trust
    np.testing.assert_array_equal(load_features(old).X, load_features(out, default).X)
    assert load_features(old).tap == load_features(out).tap == default

def interrupt_after(collection, out, rows: int) -> None:
    """Extract ``collection`` (cnn, 32 px, batches of 4) into ``out`` and interrupt it once ``rows`` are done."""

    def stop(done, total):
        if done >= rows:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(collection, out, backbone="cnn", weights="none", image_size=32, batch_size=4, workers=0,
                on_progress=stop)


def test_interrupted_run_fills_in_only_missing_rows(cnmc_tree, tmp_path):
    collection = discover(cnmc_tree, splits=["fold_0", "fold_1"])
    whole = tmp_path / "whole.h5"
    extract(collection, whole, backbone="cnn", weights="none", image_size=32, batch_size=4, workers=0)

    part = tmp_path / "part.h5"
    interrupt_after(collection, part, 8)
    with h5py.File(part) as h5:
        done_before = h5["samples/done"][:].copy()
        kept = h5["features/fc"][:8].copy()
    assert done_before.sum() == 8 and done_before[:8].all()

    seen = []
    extract(collection, part, backbone="cnn", weights="none", image_size=32, batch_size=4, workers=0,
            on_progress=lambda done, total: seen.append(done))
    n = len(collection.samples)
    assert seen[-1] == n and seen[:2] == [8, 8 + 4]  # the second run starts after the 8 finished rows
    assert len(seen) - 1 == -(-(n - 8) // 4)  # and only computes the missing ones (a report per batch)
    with h5py.File(part) as a, h5py.File(whole) as b:
        assert a["samples/done"][:].all()
        np.testing.assert_array_equal(a["features/fc"][:8], kept)
        for tap in ("pool5", "fc"):
            np.testing.assert_allclose(a["features"][tap][:], b["features"][tap][:], rtol=1e-5, atol=1e-6)


def test_a_run_resumed_under_other_library_versions_records_both(cnmc_tree, tmp_path, monkeypatch):
    """A store resumed after torch was upgraded kept saying only the first version, although its later rows came
    from the second; `featx merge` refused such parts. Every version that computed rows is now recorded."""
    collection = discover(cnmc_tree, splits=["fold_0"])
    part = tmp_path / "part.h5"
    interrupt_after(collection, part, 4)
    first = torch.__version__
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    extract(collection, part, backbone="cnn", weights="none", image_size=32, batch_size=4, workers=0)
    assert store_settings(part)["torch_version"] == f"{first}, 9.9.9"
    with h5py.File(part) as h5:
        assert h5["samples/done"][:].all()
    # a finished store run again computes nothing, and so records no other version
    monkeypatch.setattr(torch, "__version__", "9.9.10")
    extract(collection, part, backbone="cnn", weights="none", image_size=32, batch_size=4, workers=0)
    assert store_settings(part)["torch_version"] == f"{first}, 9.9.9"


def test_store_made_with_other_settings_is_refused(cnmc_tree, cnn_store, tmp_path):
    copy = tmp_path / "copy.h5"
    shutil.copy(cnn_store, copy)
    with pytest.raises(FeatxError, match=r"taps=\['pool5', 'fc'\].*taps=\['fc'\]"):
        extract(cnmc_tree, copy, backbone="cnn", weights="none", image_size=32, taps="fc", workers=0)
    with pytest.raises(FeatxError, match=r"input_size=32.*input_size=48"):
        extract(cnmc_tree, copy, backbone="cnn", weights="none", image_size=48, workers=0)
    with pytest.raises(FeatxError, match=r"weights_seed"):
        extract(cnmc_tree, copy, backbone="cnn", weights="none", image_size=32, seed=1, workers=0)


def test_splits_filter_a_collection_too(cnmc_tree, tmp_path):
    out = extract(discover(cnmc_tree), tmp_path / "p.h5", backbone="cnn", weights="none", image_size=32,
                  splits=["prelim"], workers=0)
    assert set(summarize(out)["counts"]) == {"prelim"}


def test_weights_from_a_state_dict_file(cnmc_tree, tmp_path):
    collection = discover(cnmc_tree, splits=["fold_2"])
    model = create_backbone("cnn", "none", seed=123)
    weights = tmp_path / "cnn-weights.pt"
    torch.save(model.state_dict(), weights)
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--split", "fold_2", "--backbone", "cnn", "--weights",
                              str(weights), "--image-size", "32", "--workers", "0", "-q",
                              "--out", str(tmp_path / "a.h5")])
    assert res.exit_code == 0, res.output
    assert "img/s" not in res.output  # -q: no progress bar
    extract(collection, tmp_path / "b.h5", backbone="cnn", weights="none", seed=123, image_size=32, workers=0)
    extract(collection, tmp_path / "c.h5", backbone="cnn", weights="none", seed=0, image_size=32, workers=0)
    a, b, c = (load_features(tmp_path / f"{k}.h5", "fc").X for k in "abc")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)
    assert load_features(tmp_path / "a.h5").name == f"cnn[{tmp_path.name}/cnn-weights.pt]/fc"
    assert load_features(tmp_path / "b.h5").name == "cnn/fc"
    s = store_settings(tmp_path / "a.h5")
    assert s["weights"] == str(weights.resolve()) and s["weights_kind"] == "file" and len(s["weights_sha256"]) == 64


def test_unreadable_image_is_reported_and_the_rest_is_kept(cnmc_tree, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cnmc_tree / "C-NMC_training_data", root / "C-NMC_training_data")
    bad = sorted((root / "C-NMC_training_data" / "fold_1" / "hem").glob("*.bmp"))[0]
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"not a bitmap")
    out = tmp_path / "s.h5"
    with pytest.raises(FeatxError, match=re.escape(bad.name) + ".*strict=True|strict=True.*" + re.escape(bad.name)):
        extract(root, out, backbone="cnn", weights="none", image_size=32, workers=0, strict=True)
    s = summarize(out)
    assert s["errors"] == 1 and s["done"] == s["samples"] - 1 and bad.name in s["failed"][0]["path"]
    bad.write_bytes(good_bytes)  # the user fixes the file and runs the same command again
    seen = []
    extract(root, out, backbone="cnn", weights="none", image_size=32, workers=0,
            on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(s["samples"] - 1, s["samples"]), (s["samples"], s["samples"])]  # start, then one batch
    assert summarize(out)["errors"] == 0 and summarize(out)["done"] == s["samples"]


def test_load_features_fuses_taps_and_stores(cnmc_tree, cnn_store, tmp_path):
    one = load_features(cnn_store, "fc")
    both = load_features(cnn_store, ["fc", "pool5"])
    assert both.X.shape == (len(one), one.X.shape[1] + 256) and both.tap == "fc+pool5"
    np.testing.assert_array_equal(both.X[:, : one.X.shape[1]], one.X)
    labelled = load_features(cnn_store, labelled=True)
    assert (labelled.y >= 0).all() and "final" not in set(labelled.splits)
    assert labelled.every_row_has_subject and labelled.positive == "all"
    # a second store of the same samples in another order fuses by path
    other = tmp_path / "other.h5"
    extract(cnmc_tree, other, backbone="cnn", weights="none", seed=5, image_size=32, workers=0)
    fused = load_features([cnn_store, other], "fc")
    assert fused.X.shape[1] == 2 * one.X.shape[1] and fused.backbone == "cnn+cnn"
    np.testing.assert_array_equal(fused.X[:, : one.X.shape[1]], one.X)
    # a store of other samples is refused
    subset = tmp_path / "subset.h5"
    extract(cnmc_tree, subset, backbone="cnn", weights="none", image_size=32, splits=["fold_0"], workers=0)
    with pytest.raises(FeatxError, match="do not hold the same samples"):
        load_features([cnn_store, subset], "fc")
    with pytest.raises(FeatxError, match="no tap 'fc9'"):
        load_features(cnn_store, "fc9")
    # rows marked done without their features (a damaged store) are refused, not silently misaligned
    damaged = tmp_path / "damaged.h5"
    shutil.copy(cnn_store, damaged)
    with h5py.File(damaged, "r+") as h5:
        h5["features/pool5"].resize(5, axis=0)
    with pytest.raises(FeatxError, match="damaged"):
        load_features(damaged, "pool5")


def test_cli_extract_and_info(cnmc_tree, tmp_path):
    out = tmp_path / "cli.h5"
    res_bar = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "CNN", "--weights", "none",
                                  "--image-size", "32", "--split", "prelim", "--split", "final", "--workers", "0",
                                  "--taps", "all", "--out", str(out)])
    assert res_bar.exit_code == 0, res_bar.output
    res = runner.invoke(app, ["info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    want = {k: v for k, v in expected_rows(cnmc_tree).items() if v[2] in ("prelim", "final")}
    assert info["samples"] == info["done"] == len(want)
    assert set(info["counts"]) == {"prelim", "final"}
    assert info["counts"]["final"]["unlabelled"] == sum(v[2] == "final" for v in want.values())
    assert info["taps"]["pool5"]["dim"] == 256
    assert "cnn -> cli.h5" in res_bar.output and "img/s" in res_bar.output  # the progress bar without -q


@pytest.mark.parametrize("args,needle", [
    (["extract", "{missing}", "--out", "{tmp}/x.h5", "--backbone", "cnn", "--weights", "none"], "{missing}"),
    (["extract", "{empty}", "--out", "{tmp}/x.h5", "--backbone", "cnn", "--weights", "none"], "{empty}"),
    (["extract", "{data}", "--out", "{tmp}/x.h5", "--backbone", "resnet9"], "vgg16"),
    (["info", "{tmp}/nothing.h5"], "nothing.h5"),
    (["info", "{tmp}/[bold]x.h5"], "[bold]x.h5"),  # user text is printed verbatim, not as rich markup
    (["info", "{notstore}"], "not"),
])
def test_cli_user_errors_are_one_line_without_traceback(cnmc_tree, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain.h5").write_bytes(b"hello")
    fill = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "tmp": str(tmp_path),
            "data": str(cnmc_tree), "notstore": str(tmp_path / "plain.h5")}
    res = runner.invoke(app, [a.format(**fill) for a in args])
    assert res.exit_code == 1
    assert needle.format(**fill) in res.output
    assert "Traceback" not in res.output and res.output.strip().startswith("error:")


def test_cli_offline_imagenet_message(cnmc_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "alexnet", "--weights", "imagenet",
                              "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "alexnet-owt-7be5be79.pth" in text and str(tmp_path / "torch-home") in text
    assert "Traceback" not in res.output and not (tmp_path / "x.h5").exists()


def test_default_weights_follow_the_backbone(cnmc_tree, tmp_path, monkeypatch):
    """No --weights: ImageNet for a backbone that has them (here offline: the weights message), none for cnn."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "cnn", "--image-size", "32", "--workers", "0",
                              "--split", "prelim", "--quiet", "--out", str(tmp_path / "cnn.h5")])
    assert res.exit_code == 0, res.output
    assert store_settings(tmp_path / "cnn.h5")["weights"] == "none"
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "alexnet", "--out", str(tmp_path / "a.h5")])
    assert res.exit_code == 1 and "alexnet-owt-7be5be79.pth" in " ".join(res.output.split())


@pytest.mark.slow
def test_disk_full_keeps_finished_rows(cnmc_tree, tmp_path, monkeypatch):
    out = tmp_path / "full.h5"
    real = FeatureStore._write_rows
    calls = []

    def write_then_fill_disk(self, indices, features, files):
        calls.append(len(indices))
        if len(calls) > 2:  # how h5py reports it: a RuntimeError with the errno in its text
            raise RuntimeError("Can't write data (file write failed: time = Sun Nov 29, filename = 'full.h5', "
                               "errno = 28, error message = 'No space left on device')")
        real(self, indices, features, files)

    monkeypatch.setattr(FeatureStore, "_write_rows", write_then_fill_disk)
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "cnn", "--weights", "none", "--image-size",
                              "32", "--batch-size", "4", "--workers", "0", "-q", "--out", str(out)])
    assert res.exit_code == 1 and "disk full" in res.output and "Traceback" not in res.output
    assert "8 finished rows are kept" in " ".join(res.output.split())
    monkeypatch.setattr(FeatureStore, "_write_rows", real)
    assert summarize(out)["done"] == 8
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "cnn", "--weights", "none", "--image-size",
                              "32", "--batch-size", "4", "--workers", "0", "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    s = summarize(out)
    assert s["done"] == s["samples"]


@pytest.mark.slow
def test_every_option_has_help():
    import typer.main

    group = typer.main.get_command(app)
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name, command in group.commands.items():
        assert command.help, name
        assert name in res.output
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{name} --{param.name} has no help"
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0
        for param in command.params:
            if param.param_type_name == "option":
                assert param.opts[0] in sub.output, f"{name} --help does not show {param.opts[0]}"


@pytest.mark.slow
def test_library_never_imports_the_cli():
    import subprocess
    import sys

    pkg = Path(__file__).resolve().parents[1] / "featx"
    for f in (p for p in pkg.rglob("*.py") if p.name != "__main__.py" and "cli" not in p.relative_to(pkg).parts):
        # `python -m featx` runs the CLI
        assert "featx.cli" not in f.read_text(), f"{f.name} imports the CLI"
    code = ("import sys, featx.data, featx.data.images, featx.data.synth, featx.backbones, featx.extract, "
            "featx.store, featx.heads, featx.evaluation, featx.report, featx.finetune, featx.persist, "
            "featx.workflows.classify, featx.workflows.predict, featx.workflows.hybrid; "
            "print(any(m.startswith('featx.cli') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_synth_writes_the_tree_and_refuses_to_overwrite(tmp_path):
    args = ["synth", str(tmp_path / "d"), "--subjects-all", "3", "--subjects-hem", "3", "--cells-per-subject", "2",
            "--prelim-subjects-all", "1", "--prelim-subjects-hem", "1", "--prelim-cells-per-subject", "2",
            "--final-cells", "3", "--image-size", "32"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = expected_rows(tmp_path / "d")
    splits = [v[2] for v in rows.values()]
    assert len(rows) == 12 + 4 + 3 and splits.count("prelim") == 4 and splits.count("final") == 3
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "--force" in res.output and "Traceback" not in res.output
    assert runner.invoke(app, args + ["--force"]).exit_code == 0


def test_the_cli_mini_languages_become_typed_arguments():
    from featx.cli.parsing import parse_extract_taps, parse_stores, parse_taps

    assert parse_stores("a.h5+dir/b.h5") == [Path("a.h5"), Path("dir/b.h5")] and parse_stores("a.h5") == [Path("a.h5")]
    assert parse_taps("fc7+pool5") == ["fc7", "pool5"] and parse_taps("fc") == ["fc"]
    assert parse_taps(None) is None and parse_taps("") is None
    assert parse_extract_taps("fc7, pool5") == ["fc7", "pool5"]
    assert parse_extract_taps(None) is None and parse_extract_taps("all") is None and parse_extract_taps("") is None


def test_extract_names_its_arguments_not_flags(cnmc_tree, tmp_path):
    with pytest.raises(FeatxError, match=r"^dtype='float64': choose one of float32, float16$"):
        extract(cnmc_tree, tmp_path / "x.h5", backbone="cnn", weights="none", dtype="float64")
    with pytest.raises(FeatxError, match=r"^taps='fc9': unknown tap fc9; this backbone has: pool5, fc$"):
        extract(cnmc_tree, tmp_path / "x.h5", backbone="cnn", weights="none", taps=["fc9"])
    res = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "cnn", "--weights", "none", "--taps", "fc9",
                              "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 1 and "error: --taps fc9: unknown tap fc9" in " ".join(res.output.split())


class _System:
    """Unpickling this runs ``os.system(command)``: a weights file that is really a program."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.slow
def test_weights_that_are_a_malicious_pickle_are_one_line_without_torch_warnings(cnmc_tree, tmp_path):
    marker = tmp_path / "pwned"
    plain = tmp_path / "evil_plain.pt"  # pickled by hand (protocol 4+): torch warns about the protocol, then refuses
    plain.write_bytes(pickle.dumps({"model": _System(f"touch {marker}")}, protocol=pickle.HIGHEST_PROTOCOL))
    saved = tmp_path / "evil_saved.pt"  # written by torch.save: refused naming the function it would call
    torch.save({"model": _System(f"touch {marker}")}, saved)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(FeatxError) as err:
            create_backbone("cnn", plain)
    assert [str(w.message) for w in seen] == [] and not marker.exists()
    assert str(err.value) == (f"{plain} is not a weights file featx can read (torch.load with weights_only=True "
                              "failed: UnpicklingError); expected a state dict saved with "
                              "torch.save(model.state_dict(), path) or a featx checkpoint")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(FeatxError, match=rf"{re.escape(str(saved))} is not a weights file featx can read \(it "
                                             r"refers to posix.system, which no weights file holds; refused without "
                                             r"running it\)"):
            create_backbone("cnn", saved)
    assert [str(w.message) for w in seen] == [] and not marker.exists()
    # the CLI in a process of its own (pytest records warnings that would otherwise reach stderr): one line
    for evil in (plain, saved):
        res = subprocess.run([sys.executable, "-m", "featx", "extract", str(cnmc_tree), "--backbone", "cnn",
                              "--weights", str(evil), "--out", str(tmp_path / "s.h5"), "-q"],
                             env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
                             capture_output=True, text=True, timeout=300)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {evil} is not a weights file")
        assert "Warning" not in res.stderr and not marker.exists() and not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("size", ["0", "-5", "4097", "30000"])
def test_image_sizes_featx_cannot_take_are_one_line_before_anything_is_written(cnmc_tree, tmp_path, size):
    # 0 was read as "the default" (224 stored), 30000 ran out of memory with a traceback
    line = (f"error: --image-size {size}: give the image side in pixels, from 1 to 4096 (leave it out for the "
            "backbone's own, e.g. 224)")
    for command in ("extract", "finetune"):
        out = tmp_path / command
        res = runner.invoke(app, [command, str(cnmc_tree), "--backbone", "cnn", "--weights", "none", "--image-size",
                                  size, "--workers", "0", "--out", str(out)])
        assert res.exit_code == 1 and " ".join(res.output.split()) == line, res.output
        assert not out.exists() and not list(tmp_path.glob(f"{command}*"))
    with pytest.raises(FeatxError, match=rf"^image_size={size}: give the image side in pixels, from 1 to 4096"):
        extract(cnmc_tree, tmp_path / "lib.h5", backbone="cnn", weights="none", image_size=int(size), workers=0)
    # the bound itself is taken
    extract(cnmc_tree, tmp_path / "one.h5", backbone="cnn", weights="none", image_size=16, workers=0,
            splits=["prelim"])
    assert store_settings(tmp_path / "one.h5")["input_size"] == 16


@pytest.mark.slow
def test_running_out_of_memory_is_one_line_naming_what_to_lower(cnmc_tree, tmp_path):
    """A size inside the bound that still does not fit: a real failed allocation (the process limited to 4 GiB
    of address space; a batch of 34 images of 4096 px is 1.7 GiB as uint8, 6.8 GiB as float32)."""
    import os
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    cli = "import sys; from featx.cli import main; sys.argv[0] = 'featx'; main()"
    done = subprocess.run([sys.executable, "-c", cli, "extract", str(cnmc_tree), "--backbone", "cnn", "--weights",
                           "none", "--image-size", "4096", "--batch-size", "64", "--workers", "0", "--device", "cpu",
                           "--quiet", "--out", str(tmp_path / "big.h5")], capture_output=True, text=True,
                          preexec_fn=limit, timeout=600, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert re.fullmatch(r"error: out of memory \((MemoryError|RuntimeError)[^)]*\); lower --batch-size or "
                        r"--image-size or --workers, or free memory, then run the same command again", lines[0])
