"""Progress on long steps: one event per fit of the grid (counted over the whole grid), per training batch of a
fine-tune, per part of a merge; the CLI draws them (rate and ETA) or, with -q, nothing; quiet elsewhere."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from cli_helpers import invoke

from featx.evaluation import compare

GRID = dict(heads=["logistic", "knn"], taps=["fc"], jobs=1, seed=0)


def _numbers(rows) -> list[str]:
    """Every row as results.json holds it, less its timings."""
    out = []
    for row in rows:
        d = row.to_dict(predictions=True)
        for key in ("fit_seconds", "wall_seconds"):
            d.pop(key, None)
        out.append(json.dumps(d, sort_keys=True, default=str))
    return out


def test_every_fit_of_a_compare_grid_is_one_event_counted_over_the_whole_grid(cnn_stores, tmp_path):
    """2 stores x 1 tap x (subject: 2 folds, fold: the data's 3 folds) x 2 heads = 20 fits; the fold protocol's
    3 folds are known only once it is split (counted as 2 until then), so the total grows once, to 20."""
    a = shutil.copy(cnn_stores(0), tmp_path / "a.h5")
    b = cnn_stores(1)
    events: list = []
    rows = compare([a, b], cv=["subject", "fold"], n_folds=2, on_fit=events.append, **GRID)
    assert [e.done for e in events] == list(range(1, 21))
    assert events[-1].total == 20 and all(e.total <= 20 for e in events)
    assert [e.total for e in events[:4]] == [16] * 4  # 2 x (2 x 2 subject + 2 x 2 fold guessed)
    assert Counter(e.protocol for e in events) == {"subject": 8, "fold": 12}
    assert [e.protocol for e in events[:10]] == ["subject"] * 4 + ["fold"] * 6  # store a's pools, then b's
    fits = Counter((e.protocol, e.head, e.fold) for e in events)  # each head x fold once per store
    assert set(fits.values()) == {2} and len(fits) == 10 and {e.features for e in events} == {"cnn/fc"}
    # the rows are those of the same grid run without a callback, in the same order
    assert _numbers(rows) == _numbers(compare([a, b], cv=["subject", "fold"], n_folds=2, **GRID))


@pytest.mark.slow
def test_fits_finishing_out_of_order_in_a_process_pool_keep_their_rows(cnn_store):
    """Two loky workers stream their fits as they finish (joblib's generator_unordered); each result is mapped
    back to its head and fold: the same rows as the ordered pool of one process."""
    events: list = []
    grid = dict(GRID, heads=["logistic", "knn", "svm"], jobs=2)
    rows = compare([cnn_store], cv="subject", n_folds=3, on_fit=events.append, **grid)
    assert sorted(e.done for e in events) == list(range(1, 10)) and {e.total for e in events} == {9}
    assert _numbers(rows) == _numbers(compare([cnn_store], cv="subject", n_folds=3, **dict(grid, jobs=1)))


def test_compare_quiet_prints_no_progress(cnn_store, tmp_path):
    """Without -q compare says which feature set it fits under which protocol; -q leaves only the table."""
    args = ["compare", cnn_store, "--heads", "logistic", "--cv", "subject", "--folds", "3", "--jobs", "1",
            "--no-plots"]
    result, text = invoke(*args, "--out", tmp_path / "loud")
    assert result.exit_code == 0, text
    assert "cnn/fc: logistic under subject" in text
    result, text = invoke(*args, "-q", "--out", tmp_path / "quiet")
    assert result.exit_code == 0, text
    assert text.startswith(" featx compare (mean")  # the table first
    assert "under subject" not in text and "fits" not in text


def test_classify_draws_a_bar_over_its_fits_on_a_terminal(cnn_store, tmp_path, monkeypatch):
    """On a terminal stderr the bar counts the fits (3 folds), with a rate and an ETA; -q draws nothing."""
    import importlib
    import io

    from rich.console import Console

    cli = importlib.import_module("featx.cli.app")

    args = ["classify", cnn_store, "--head", "logistic", "--cv", "subject", "--folds", "3", "--jobs", "1",
            "--no-plots"]
    for quiet, out in ((False, "loud"), (True, "quiet")):
        screen = io.StringIO()
        monkeypatch.setattr(cli, "err_console", Console(file=screen, force_terminal=True, width=120))
        result, text = invoke(*args, *(["-q"] if quiet else []), "--out", tmp_path / out)
        assert result.exit_code == 0, text
        drawn = screen.getvalue()
        if quiet:
            assert drawn == ""
        else:
            assert "fits" in drawn and "3/3" in drawn and "fit/s" in drawn and "ETA" in drawn, drawn
            assert "cnn/fc (subject)" in drawn


@pytest.mark.slow
def test_a_note_shared_by_every_feature_set_says_so(cnn_stores, tmp_path):
    """The held-out note applies to both stores' rows: it is printed once, for all of them, not for the first."""
    a = shutil.copy(cnn_stores(0), tmp_path / "a.h5")
    result, text = invoke("compare", a, cnn_stores(1), "--heads", "logistic", "--cv", "subject", "--folds", "3",
                          "--jobs", "1", "--no-plots", "-q", "--out", tmp_path / "cmp")
    assert result.exit_code == 0, text
    assert text.count("left out of cross-validation") == 1
    assert "all 2 feature sets (subject): 6 rows of held-out splits (prelim) left out" in text


@pytest.mark.slow
def test_synth_prints_one_line(tmp_path):
    result, _ = invoke("synth", tmp_path / "d", "--subjects-all", "2", "--subjects-hem", "2", "--cells-per-subject",
                       "2", "--prelim-subjects-all", "1", "--prelim-subjects-hem", "1", "--prelim-cells-per-subject",
                       "2", "--final-cells", "2", "--image-size", "32")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"wrote 14 synthetic C-NMC images of 8 subjects to {tmp_path / 'd'} (fold_0 2, fold_1 2, fold_2 4, "
        "prelim 4, final 2 unlabelled), 32 px, seed 0"]
    result, _ = invoke("synth", tmp_path / "d", "--force", "--json", "--image-size", "32")
    assert result.exit_code == 0 and json.loads(result.output)["image_size"] == 32


@pytest.mark.slow
def test_extract_prints_its_store_once_in_one_line_and_whole_with_verbose(cnmc_tree, tmp_path):
    args = ["extract", cnmc_tree, "--backbone", "cnn", "--weights", "none", "--image-size", "32", "--workers", "0",
            "--device", "cpu"]
    result, _ = invoke(*args, "--out", tmp_path / "s.h5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()  # the bar's last state (a pipe gets no live bar), then the store
    assert len(lines) == 2 and "34/34" in lines[0] and "img/s" in lines[0], lines
    assert result.output.count("rows done") == 1 and "34/34 rows done, 8 subjects, 0 errors" in lines[1]
    assert lines[1].endswith("; taps pool5 (256), fc (128)") and "EXIF" not in result.output
    result, text = invoke(*args, "-v", "--out", tmp_path / "s.h5")  # resumed: nothing to do, the whole summary
    assert result.exit_code == 0, text
    assert text.count("rows done") == 1 and text.count("EXIF orientation: applied") == 1 and "taps: pool5" in text


@pytest.mark.slow
def test_merge_reports_each_part(cnmc_tree, tmp_path):
    from featx.extract import extract
    from featx.store import merge_stores

    kw = dict(backbone="cnn", weights="none", image_size=32, workers=0, device="cpu")
    parts = [extract(cnmc_tree, tmp_path / f"p{i}.h5", shard=(i, 3), **kw) for i in (2, 0, 1)]
    seen = []
    merge_stores(parts, tmp_path / "all.h5", on_part=lambda *a: seen.append(a))
    assert seen == [(1, 3, 11), (2, 3, 11), (3, 3, 12)]  # 34 rows, in the single run's order (parts given 2, 0, 1)


@pytest.mark.slow
def test_finetune_reports_every_batch_with_the_epoch_loss_so_far(cnmc_tree, tmp_path):
    """24 training images less the validation subjects, batches of 4: one event per step of every epoch."""
    from featx.finetune import finetune

    events = []
    finetune(cnmc_tree, tmp_path / "run", backbone="cnn", weights="none", image_size=32, epochs=2, batch_size=4,
             val="fold_2", workers=0, device="cpu", augment=False, callback=lambda k, i: events.append((k, dict(i))))
    batches = [i for k, i in events if k == "batch"]
    epochs = [i for k, i in events if k == "epoch"]
    steps = batches[0]["steps"]
    assert steps == 4 and len(batches) == steps * len(epochs) == 8  # fold_0 + fold_1: 16 images
    assert [(b["epoch"], b["step"]) for b in batches] == [(e, s) for e in (1, 2) for s in range(1, 5)]
    for epoch in epochs:  # the last step's loss so far is the epoch's train loss
        last = [b for b in batches if b["epoch"] == epoch["epoch"]][-1]
        assert last["mean_loss"] == pytest.approx(epoch["train_loss"], rel=1e-5)
