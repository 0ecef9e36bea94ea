"""Honest selection among rows (`compare --select`): a 'selected' row per protocol, chosen by an inner CV on the
outer training rows only, next to per-row scores marked as not corrected for selection."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from chance_helpers import assert_at_chance, pooled_accuracy
from cli_helpers import invoke

from featx.cli.results_table import results_table
from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.evaluation import compare, make_splits, selection
from featx.evaluation.search import Search
from featx.evaluation.selection import check_same_rows, selection_row
from featx.extract import extract
from featx.report.markdown import markdown_table, results_markdown
from featx.results import read_json, rows_from_csv, write_csv, write_json
from featx.store import FeatureSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _features(X, y, subjects, name) -> FeatureSet:
    n = len(y)
    return FeatureSet(X=np.asarray(X, dtype=np.float32), y=np.asarray(y, dtype=np.int64), classes=["all", "hem"],
                      paths=np.array([f"img/{i}.bmp" for i in range(n)]), subjects=np.asarray(subjects),
                      splits=np.array([""] * n), name=name, backbone=name.split("/")[0], tap="fc",
                      positive="all", stores=[f"{name.split('/')[0]}.h5"])


def _labels(n_subjects=12, cells=10, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([rng.permutation([0, 1] * (cells // 2)) for _ in range(n_subjects)])
    subjects = np.repeat([f"S{i:02d}" for i in range(n_subjects)], cells)
    return y, subjects


def _informative_and_noise(seed=0):
    y, subjects = _labels(seed=seed)
    rng = np.random.default_rng(seed + 1)
    good = rng.normal(0, 1, (len(y), 6)) + 1.5 * (1 - 2 * y)[:, None]
    noise = rng.normal(0, 1, (len(y), 6))
    return _features(good, y, subjects, "good/fc"), _features(noise, y, subjects, "noise/fc")


def test_selection_picks_the_informative_candidate_in_every_fold_and_marks_other_rows():
    good, noise = _informative_and_noise()
    row = selection_row([noise, good], ["logistic", "knn"], cv="subject", n_folds=4, seed=0)
    assert row.name == "selected by inner f1_weighted" and row.backbone == "selected" and row.head == "selected"
    assert row.n_folds == 4 and len(row.settings["selected"]) == 4
    assert set(row.settings["selected"]) <= set(row.settings["candidates"])
    assert all(s.startswith("good/fc + ") for s in row.settings["selected"])
    assert row.mean("accuracy") > 0.8
    assert "StratifiedGroupKFold(3)" in row.settings["inner_cv"]
    # the row is summarised like the others: an interval over subjects (n/a here, and why: every cell right),
    # predictions of every test row
    acc = row.score("accuracy")
    assert acc.mean == 1.0 and acc.ci_low is None and "no spread between subjects" in row.interval["na"]["accuracy"]
    assert row.interval["unit"] == "subject" and len(row.predictions["y_pred"]) == len(good.y)


@pytest.mark.slow
def test_compare_appends_one_selected_row_per_protocol_and_marks_the_others(tmp_path, monkeypatch):
    good, noise = _informative_and_noise()
    loads = {"good.h5": good, "noise.h5": noise}
    monkeypatch.setattr("featx.evaluation.grid.load_feature_grid", lambda groups, taps, **kw: (
        ((i, j), loads[group[0]]) for i, group in enumerate(groups) for j, _ in enumerate(taps)))
    # compare checks every store before any fit: the in-memory stores' summaries
    monkeypatch.setattr("featx.evaluation.inputs.summarize", lambda path: {
        "done": len(good.y), "samples": len(good.y), "unfinished": 0, "counts": {}, "taps": {"fc": {}},
        "settings": {"default_tap": "fc"}, "classes": list(good.classes)})
    from featx.evaluation import compare

    rows = compare(["noise.h5", "good.h5"], ["logistic", "knn"], cv=["subject", "image"], n_folds=3,
                   select="f1_weighted")
    selected = [r for r in rows if r.head == "selected"]
    assert [r.protocol for r in selected] == ["subject", "image"]
    others = [r for r in rows if r.head != "selected"]
    assert len(others) == 8 and all(r.selection_uncorrected for r in others)
    assert not any(r.selection_uncorrected for r in selected)
    assert all(s.startswith("good/fc") for r in selected for s in r.settings["selected"])
    # the mark and the selection settings survive results.json and results.csv exactly
    assert read_json(write_json(rows, tmp_path / "r.json")) == [replace(r, predictions=None) for r in rows]
    assert rows_from_csv(write_csv(rows, tmp_path / "r.csv")) == [replace(r, predictions=None) for r in rows]
    # the tables mark the uncorrected rows and say why once
    md = results_markdown(rows)
    assert md.count("\u2020 ") == 8 + 1 and "not corrected for selection among 4 rows" in md
    assert "\u2020" not in markdown_table([r for r in rows if r.head == "selected"])


def test_unknown_metric_and_rows_that_differ_are_refused_in_one_line():
    good, noise = _informative_and_noise()
    with pytest.raises(FeatxError, match=r"select='nope' is not a metric"):
        selection_row([good, noise], ["logistic"], metric="nope")
    short = good.select(np.arange(len(good.y) - 10))
    with pytest.raises(FeatxError, match=r"do not cover the same rows \(good.h5, noise.h5\)") as err:
        check_same_rows([short, noise])
    assert "\n" not in str(err.value)
    shuffled = noise.select(np.random.default_rng(0).permutation(len(noise.y)))
    aligned = check_same_rows([good, shuffled])[1]
    assert list(aligned.paths) == list(good.paths) and np.array_equal(aligned.X, noise.X)


@pytest.mark.slow
def test_inner_cv_sees_only_outer_training_rows_grouped_by_subject(monkeypatch):
    good, noise = _informative_and_noise()
    seen = []
    real = selection._inner_score

    def spy(head, kwargs, X, y, rows, splits, scoring, groups=None):
        seen.append((np.asarray(rows), [(np.asarray(a), np.asarray(b)) for a, b in splits]))
        return real(head, kwargs, X, y, rows, splits, scoring, groups)

    monkeypatch.setattr(selection, "_inner_score", spy)
    protocol = make_splits(good.subjects, good.y, good.splits, cv="subject", n_folds=4, seed=0)
    selection.select_rows([(good, "logistic"), (noise, "logistic")], protocol, positive=0, jobs=1)
    assert len(seen) == 4 * 2
    subjects = np.asarray(good.subjects)
    for i, (rows, splits) in enumerate(seen):
        train, test = protocol.folds[i // 2]
        assert set(rows) == set(train) and not set(rows) & set(test)
        assert len(splits) == 3
        for a, b in splits:
            assert not set(subjects[rows[a]]) & set(subjects[rows[b]])          # grouped by subject
            assert not (set(subjects[rows[a]]) | set(subjects[rows[b]])) & set(subjects[test])


def test_unknown_subjects_use_stratified_inner_folds_and_say_so():
    good, noise = _informative_and_noise()
    good, noise = (replace(fs, subjects=np.array([""] * len(fs.y))) for fs in (good, noise))
    row = selection_row([good, noise], ["logistic"], n_folds=3)
    assert row.image_level and "StratifiedKFold(3): subjects unknown" in row.settings["inner_cv"]
    assert row.settings["selected"] == ["good/fc + logistic"] * 3


def _picked_on_test_rows(rows) -> tuple[int, int]:
    """(correct, tested) of the leak the inner CV prevents: in each outer fold, the candidate that scores best
    on that fold's own test rows."""
    pred = rows[0].predictions
    fold = np.asarray(pred["fold"])
    correct = [np.asarray(r.predictions["y_true"]) == np.asarray(r.predictions["y_pred"]) for r in rows]
    return sum(max(int(c[fold == k].sum()) for c in correct) for k in np.unique(fold)), len(fold)


@pytest.mark.slow
def test_random_labels_selected_row_stays_at_chance_while_the_best_row_is_optimistic():
    """8 pure-noise candidates, random labels balanced within subjects of 10 cells, three seeds (data and
    folds each). The selected rows' test counts pooled over the seeds (600 rows) stay within 3 chance
    standard deviations of 0.5: sd = sqrt(0.25 / 600 * 10/9) = 0.022 (see chance_helpers), tolerance 0.064.
    The best per-candidate row beats the selected row on average over the seeds (the optimism of picking the
    best row), and picking the candidate per outer fold on its own test rows, the leak the inner CV prevents,
    fails the same check (0.597 pooled on these seeds)."""
    from featx.evaluation import run_grid

    selected, best, leaky = [], [], []
    for seed in (0, 1, 2):
        y, subjects = _labels(n_subjects=20, cells=10, seed=seed)
        rng = np.random.default_rng(100 + seed)
        sets = [_features(rng.normal(0, 1, (len(y), 4)), y, subjects, f"noise{i}/fc") for i in range(8)]
        protocol = make_splits(subjects, y, sets[0].splits, cv="subject", n_folds=4, seed=seed)
        per_row = [run_grid(fs, ["logistic"], protocol, positive=0)[0] for fs in sets]
        selected.append(selection.select_rows([(fs, "logistic") for fs in sets], protocol, positive=0,
                                              metric="accuracy", seed=seed))
        best.append(max(pooled_accuracy([r])[0] for r in per_row))
        leaky.append(_picked_on_test_rows(per_row))
    acc, tol = assert_at_chance(selected, cells=10, what="selected row on random labels")
    assert np.mean(best) > acc, (best, acc)
    leaky_acc = sum(c for c, _ in leaky) / sum(n for _, n in leaky)
    assert leaky_acc - 0.5 > tol, f"no power: picking on the test rows scores {leaky_acc:.3f}, within {tol:.3f}"


# ---- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_stores(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("sel")
    synthesize(root / "data", subjects_all=4, subjects_hem=3, cells_per_subject=6, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=4, final_cells=4, image_size=48, seed=0)
    return [extract(root / "data", root / f"cnn{s}.h5", backbone="cnn", weights="none", image_size=48, seed=s,
                    batch_size=32, workers=0) for s in (0, 1)]


@pytest.mark.usefixtures("wide_console")
@pytest.mark.slow
def test_cli_compare_select_prints_the_selected_row_and_the_note(two_stores, tmp_path):
    result, text = invoke("compare", *two_stores, "--heads", "logistic,knn", "--select", "f1_weighted",
                          "--folds", "3", "--no-plots", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "selected by inner f1_weighted" in text
    assert "per-row scores are not corrected for selection among 4 rows" in text
    rows = read_json(tmp_path / "out" / "results.json")
    assert [r.head for r in rows].count("selected") == 1 and sum(r.selection_uncorrected for r in rows) == 4
    assert "\u2020" in "".join(str(c) for c in results_table(rows).columns[1]._cells)


def test_cli_bad_metric_is_one_line_exit_1(two_stores, tmp_path):
    result, text = invoke("compare", *two_stores, "--heads", "logistic", "--select", "nope", "--out", tmp_path)
    assert result.exit_code == 1
    assert "--select nope is not a metric" in text
    assert len(result.output.strip().splitlines()) == 1


def test_select_with_a_parameter_search_is_refused_before_any_work(tmp_path):
    # selection compares rows at fixed parameters: combining it with a search would silently drop the search
    search = Search(space={"logistic": {"C": [0.1, 1.0]}})
    with pytest.raises(FeatxError, match=r"select='f1_weighted' compares rows at their fixed parameters") as err:
        compare([tmp_path / "not-read.h5"], ["logistic"], select="f1_weighted", search=search)
    assert "\n" not in str(err.value)
