"""Progress on long steps: one event per fit of the grid (counted over the whole grid), per training batch of a
fine-tune, per part of a merge; the CLI draws them (rate and ETA) or, with -q, nothing; quiet elsewhere."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from cli_helpers import invoke

from featx.evaluation import compare
from featx.evaluation.progress import FitEvent

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
    events: list[FitEvent] = []
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
    events: list[FitEvent] = []
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
