"""Outputs never clobber: each command has its own default folder, an explicit --out holding another command's
or grid's results is refused before any work (--force replaces), `featx table` reads folders recursively, and
`compare` checks every input before computing anything."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import invoke

import featx.evaluation.grid as grid_module
import featx.workflows.classify as classify_workflow
from featx.cli.app import flag
from featx.errors import FeatxError
from featx.report import MANIFEST, read_results, write_results
from featx.results import read_json
from featx.workflows.classify import default_out, run_classify, run_compare

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")

FAST = ("--folds", "3", "--no-plots")
LIB = dict(n_folds=3, plots=False)


@pytest.fixture(scope="module")
def store(cnn_store) -> Path:
    """conftest's shared cnn store of the tiny C-NMC tree (32 px, seed 0; read-only)."""
    return cnn_store


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


@pytest.mark.slow
def test_classify_after_compare_with_default_options_keeps_compare_results(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, text = invoke("compare", store, "--heads", "logistic,knn", "--cv", "subject,image", *FAST)
    assert result.exit_code == 0, result.output
    compare_dir = Path("results") / "compare"
    assert len(read_json(compare_dir / "results.json")) == 4
    assert _manifest(compare_dir)["command"] == "compare" and _manifest(compare_dir)["rows"] == 4

    result, text = invoke("classify", store, "--head", "logistic", *FAST)
    assert result.exit_code == 0, result.output
    classify_dir = Path("results") / "classify-cnn-fc-logistic"
    assert [r.head for r in read_json(classify_dir / "results.json")] == ["logistic"]
    assert len(read_json(compare_dir / "results.json")) == 4  # compare's results kept
    assert _manifest(classify_dir)["grid"]["heads"] == ["logistic"]

    # the same classify again is a re-run into its own folder; a protocol asked for is named in the folder
    result, _ = invoke("classify", store, "--head", "logistic", *FAST)
    assert result.exit_code == 0, result.output
    result, _ = invoke("classify", store, "--head", "logistic", "--eval", "prelim", *FAST)
    assert result.exit_code == 0, result.output
    prelim_dir = Path("results") / "classify-cnn-fc-logistic-prelim"
    assert [r.protocol for r in read_json(prelim_dir / "results.json")] == ["prelim"]
    assert sorted(p.name for p in Path("results").iterdir()) == [
        "classify-cnn-fc-logistic", "classify-cnn-fc-logistic-prelim", "compare"]
    assert len(read_json(classify_dir / "results.json")) == 1

    result, text = invoke("table", "results")
    assert result.exit_code == 0, result.output
    assert len(read_results(["results"])) == 4 + 1 + 1
    # compare's and classify's subject-level rows of one store are the same result (the same folds, seed and head):
    # shown once, from the first folder that holds it; the image and prelim rows are others
    assert text.count("cnn/fc + logistic") == 3 and text.count("cnn/fc + knn") == 2
    assert "[compare]" not in text and "Source" in text


def test_default_out_names_fused_stores_and_taps_safely(store, tmp_path):
    out = default_out("classify", [store, store], "svm", ["fc", "pool5"], root=tmp_path)
    assert out == tmp_path / "classify-cnn+cnn-fc+pool5+fc+pool5-svm"
    assert default_out("compare", [store], ["svm"], root=tmp_path) == tmp_path / "compare"
    assert not any(tmp_path.iterdir())  # naming a folder creates nothing


@pytest.mark.slow
def test_explicit_out_of_another_command_is_refused_and_left_unchanged(store, tmp_path):
    out = tmp_path / "shared"
    result, _ = invoke("compare", store, "--heads", "logistic,knn", "--cv", "subject,image", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    before = _snapshot(out)
    assert len(json.loads(before["results.json"])) == 4 and sum(k.startswith("predictions/") for k in before) == 4

    result, text = invoke("classify", store, "--head", "svm", "--out", out, *FAST)
    assert result.exit_code == 1
    assert text.strip() == (f"error: {out} holds the results of `featx compare` (4 rows); choose another --out or "
                            "add --force")
    assert _snapshot(out) == before  # not a byte changed

    result, _ = invoke("classify", store, "--head", "svm", "--out", out, "--force", *FAST)
    assert result.exit_code == 0, result.output
    assert [r.head for r in read_json(out / "results.json")] == ["svm"]
    assert _manifest(out)["command"] == "classify"
    assert [p.name for p in (out / "predictions").iterdir()] == ["cnn-fc-svm-subject.csv"]  # no stale row files


@pytest.mark.slow
def test_finetune_and_hybrid_refuse_a_results_folder_of_another_command(store, cnmc_tree, tmp_path):
    """A run folder is never a compare/classify/table folder: finetune and hybrid refuse it before training."""
    out = tmp_path / "results"
    result, _ = invoke("compare", store, "--heads", "logistic", "--cv", "subject", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    before = _snapshot(out)
    for command in ("finetune", "hybrid"):
        extra = ("--heads", "logistic", "--folds", "3") if command == "hybrid" else ()
        result, text = invoke(command, cnmc_tree, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                              "--epochs", "1", "--workers", "0", "--out", out, *extra)
        assert result.exit_code == 1, result.output
        assert text.strip() == (f"error: {out} holds the results of `featx compare` (1 row), not a `featx "
                                f"{command}` run; choose another --out")
        assert _snapshot(out) == before
    (out / MANIFEST).unlink()  # an older results folder: results.json with no run settings
    result, text = invoke("finetune", cnmc_tree, "--backbone", "cnn", "--weights", "none", "--out", out)
    assert result.exit_code == 1 and "results.json with no settings.json" in text


def test_the_library_refuses_before_any_fit(store, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    run_compare([store], ["logistic"], cv="subject", out=out, **LIB)
    calls = []
    monkeypatch.setattr(classify_workflow, "evaluate", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(grid_module, "run_grid", lambda *a, **k: calls.append(a))
    with pytest.raises(FeatxError, match=r"holds the results of `featx.compare\(...\)` \(1 row\); choose another out "
                                         r"or add overwrite=True"):
        run_classify(store, "knn", out=out, n_folds=3, plots=False)
    with pytest.raises(FeatxError, match=r"`featx.compare\(...\)` .1 row. over other stores, taps, heads or "
                                         "protocols") as err:
        run_compare([store], ["logistic", "knn"], cv="subject", out=out, **LIB)
    assert "holds the results of `featx compare` (1 row) over other" in err.value.render(flag)
    assert calls == []


@pytest.mark.slow
def test_same_grid_rerun_replaces_and_force_replaces_another_grid(store, tmp_path):
    out = tmp_path / "cmp"
    first = run_compare([store], ["logistic"], cv="subject", out=out, **LIB).rows
    again = run_compare([str(store)], ["logistic"], cv="subject", out=out, **LIB).rows  # same grid: a re-run
    assert len(first) == len(again) == 1 and len(read_json(out / "results.json")) == 1
    rows = run_compare([store], ["logistic", "knn"], cv="subject", out=out, overwrite=True, **LIB).rows
    assert [r.head for r in rows] == [r.head for r in read_json(out / "results.json")] == ["logistic", "knn"]
    assert _manifest(out)["grid"]["heads"] == ["logistic", "knn"] and _manifest(out)["rows"] == 2


def test_results_without_a_manifest_count_as_another_run_unless_they_are_this_grid(store, tmp_path):
    out = tmp_path / "old"
    run_compare([store], ["logistic"], cv="subject", out=out, **LIB)
    (out / MANIFEST).unlink()  # as featx wrote results before it kept run.json
    run_compare([store], ["logistic"], cv="subject", out=out, **LIB)  # its rows are this grid: a re-run
    (out / MANIFEST).unlink()
    with pytest.raises(FeatxError, match=r"holds the results of an earlier featx run \(1 row in results.json, no "
                                         r"run.json\); choose another out"):
        run_compare([store], ["knn"], cv="subject", out=out, **LIB)


@pytest.mark.slow
def test_table_reads_every_results_json_under_a_folder(store, tmp_path):
    parent = tmp_path / "all"
    compare_rows = run_compare([store], ["logistic", "knn"], cv="subject", out=parent / "compare", **LIB).rows
    classify_row = run_classify(store, "logistic", cv="image", out=parent / "classify", n_folds=3,
                                plots=False).row
    hybrid = parent / "runs" / "hybrid-cnn"  # a hybrid run: its results at the top, fold work below
    # its own result (the same result in two folders would be shown once: featx.report.files.dedupe_rows)
    write_results([dataclasses.replace(compare_rows[0], protocol="hybrid", protocol_label="hybrid 5-fold",
                                       protocol_short="hybrid 5-fold")], hybrid, plots=False)
    (hybrid / "settings.json").write_text("{}")
    write_results(compare_rows, hybrid / "fold_1" / "finetune", plots=False)  # the fold's inner fine-tune
    shutil.copy(hybrid / "results.json", hybrid / "fold_1" / "result.json")

    rows = read_results([parent])
    assert len(rows) == 2 + 1 + 1
    # sorted by path: all/classify, all/compare, all/runs/hybrid-cnn (not its fold_1/)
    assert [(r.head, r.protocol) for r in rows] == [("logistic", "image"), ("logistic", "subject"), ("knn", "subject"),
                                                    ("logistic", "hybrid")]
    assert classify_row.protocol == "image"
    # a file reached twice is read once; a folder named alone is read whatever its name
    assert len(read_results([parent, parent / "compare" / "results.json"])) == 4
    assert len(read_results([hybrid / "fold_1"])) == 2

    result, text = invoke("table", parent, "--out", parent / "summary")
    assert result.exit_code == 0, result.output
    assert len(read_json(parent / "summary" / "results.json")) == 4
    assert len(read_results([parent])) == 4  # the merged copy below the parent is not counted twice
    merged = tmp_path / "merged"  # a merged table written before run.json, of the same rows: a re-run
    write_results(rows, merged, plots=False)
    result, _ = invoke("table", parent, "--out", merged)
    assert result.exit_code == 0, result.output
    assert _manifest(merged)["command"] == "table" and _manifest(merged)["rows"] == 4
    result, text = invoke("table", parent, "--out", parent / "compare")
    assert result.exit_code == 1 and "holds the results of `featx compare` (2 rows)" in text

    empty = tmp_path / "empty"
    (empty / "plots").mkdir(parents=True)
    result, text = invoke("table", empty)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert text.strip().startswith(f"error: {empty}: no results.json in this folder or below it")


def test_compare_with_a_missing_last_store_fails_before_any_fit(store, tmp_path, monkeypatch):
    fitted = []
    monkeypatch.setattr(grid_module, "run_grid", lambda *a, **k: fitted.append(a))
    monkeypatch.setattr(grid_module, "load_feature_grid", lambda *a, **k: fitted.append(a))
    missing = tmp_path / "feats" / "vgg16.h5"
    out = tmp_path / "results"
    result, text = invoke("compare", store, store, missing, "--heads", "logistic", "--cv", "subject", "--out", out,
                          *FAST)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert text.strip() == (f"error: {missing}: no such feature store; create it with `featx extract DATA --out "
                            f"{missing}`")
    assert not out.exists() and fitted == []  # refused before any store was read or any head fitted

    not_a_store = tmp_path / "notes.h5"
    not_a_store.write_text("hello")
    for stores, taps, kwargs, message in [
        ([store, missing], None, {}, "no such feature store"),
        ([store, not_a_store], None, {}, "not a readable HDF5 feature store"),
        ([store, [store, store]], ["fc", "fc7"], {}, "cnn.h5: no tap 'fc7' in this store; it holds pool5, fc"),
        ([store, store], None, {"eval_set": "final"}, "no labelled rows of split 'final' for eval_set='final'"),
        ([store], None, {"cv": ["subject", "nope"]}, "cv='nope': choose one of"),
        ([store], None, {"n_folds": 1}, "n_folds=1: cross-validation needs at least 2 folds"),
    ]:
        with pytest.raises(FeatxError, match=message):
            run_compare(stores, ["logistic"], taps, out=out, **{**LIB, **kwargs})
        assert not out.exists()
    with pytest.raises(FeatxError, match="unknown head|nope"):
        run_compare([store], ["logistic", "nope"], out=out, **LIB)
    with pytest.raises(FeatxError, match="bad parameter"):
        run_compare([store], ["logistic"], out=out, params={"logistic": {"nope": 1}}, **LIB)
    assert fitted == [] and not out.exists()
