"""The report's Methods (written from the records), per-subject results, every metric's interval, the table of
contents and the folded row sections."""
from __future__ import annotations

import dataclasses
import html
import re

import pytest
from report_rows import make_row

import featx
from featx.report import write_html_report, write_results
from featx.report.html import render_html
from featx.report.methods import installed_versions, methods_text
from featx.report.sections import score_interval_text
from featx.report.subjects import majority_vote
from featx.results import METRICS
from featx.row_records import SearchRecord

SHA = "3f1c0a9be7d2" + "0" * 52
INTERVAL = {"method": "subject jackknife t-interval (class-stratified, logit scale)", "level": 0.95,
            "unit": "subject", "n_units": 10}


def _extraction(backbone: str, sha: str = SHA) -> list[dict]:
    return [{"backbone": backbone, "weights": f"{backbone}.pt", "weights_kind": "file", "weights_sha256": sha,
             "input_size": 224, "resize": "resize to 224x224 (bilinear, antialias), ToTensor, normalise",
             "dtype": "float32"}]


def _synthetic_rows():
    """Two backbones (one with a nested search), one head each with its parameters, per-subject accuracy."""
    settings = {"seed": 0, "preprocess": "standard", "class_weight": None, "cv_note": "prelim left out",
                "stores": ["/nowhere/vgg16.h5"], "extraction": _extraction("vgg16"),
                "head_params": {"C": 10.0, "kernel": "rbf", "verbose": 0}, "params": {"C": 10.0}}
    a = make_row("vgg16/fc7 + svm", 0.9, interval=INTERVAL, settings=settings,
                 per_subject_accuracy={"H10": 0.5, "H9": 1.0, "7": 0.75})
    b = make_row("alexnet/fc7 + logistic", 0.8, interval={**INTERVAL, "na": {"roc_auc": "too few subjects"}},
                 settings={**settings, "stores": ["/nowhere/alexnet.h5"],
                           "extraction": _extraction("alexnet", "9" * 64), "head_params": {"C": 1.0}, "params": {}},
                 per_subject_accuracy={"H10": 1.0, "7": 0.25},
                 nested_search=SearchRecord(method="grid", metric="f1_weighted", inner_folds=3,
                                            space={"logistic": "C in [1, 10]"},
                                            chosen_params=({"C": 1}, {"C": 10}, {"C": 1}, {"C": 1}, {"C": 10})))
    return [a, b]


def test_methods_of_synthetic_rows_say_what_each_group_recorded():
    text = methods_text(_synthetic_rows())
    assert f"featx {featx.__version__}" in text and all(f"{k} {v}" in text for k, v in installed_versions().items())
    data, features, heads, protocol, intervals, software, commands = text.split("\n\n")
    vgg, alex = features.split(" Row alexnet/fc7")  # each backbone its own sentence, its own weights
    assert vgg.startswith("Row vgg16/fc7 + svm (subject 5-fold): features of vgg16 with weights vgg16.pt "
                          f"(sha256 {SHA}), input 224 px") and "alexnet" not in vgg
    assert f"alexnet with weights alexnet.pt (sha256 {'9' * 64})" in alex and "vgg16" not in alex
    assert "Head svm (1 row): preprocessing standard, class weights none, parameters C=10.0, kernel=rbf; " \
           "set by the user: C=10.0." in text and "verbose" not in text
    assert "Head logistic (1 row)" in text and "parameters C=1.0." in text
    assert ("searched inside each outer fold (grid search on f1_weighted over 3 inner folds; space C in [1, 10])"
            in text)
    assert "alexnet/fc7 + logistic (subject 5-fold, nested) chose C=1 in folds 1, 3, 4; C=10 in folds 2, 5." in text
    assert protocol.startswith("Row vgg16/fc7 + svm (subject 5-fold): evaluated by subject-level 5-fold (seed 0)")
    assert "alexnet/fc7 + logistic (subject 5-fold, nested): evaluated by subject-level 5-fold, nested" in protocol
    assert protocol.count("prelim left out") == 2
    assert f"All rows: 95% intervals of each metric by {INTERVAL['method']}, with the subject as the " \
           "unit (10 subjects)." in text
    assert "No interval for alexnet/fc7 + logistic (subject 5-fold, nested; roc_auc): too few subjects." in text
    assert "/nowhere/vgg16.h5 is not readable at that path now" in data  # said, not guessed
    assert "tested under subject-level 5-fold on 100 images of 10 subjects" in data
    assert "given in memory" in commands  # no folder, so no command claimed
    assert "Head svm" in heads and "95% intervals" in intervals and "scikit-learn" in software


def test_majority_vote_of_hand_made_predictions():
    # A: 2 of 3 cells right (correct); B: 1 of 3 right (wrong); C: 2-2 (a tie, counted wrong); D: all right
    subjects = ["A"] * 3 + ["B"] * 3 + ["C"] * 4 + ["D"] * 2
    truth = ["all"] * 3 + ["hem"] * 3 + ["all"] * 4 + ["hem"] * 2
    pred = ["all", "hem", "all", "all", "all", "hem", "all", "hem", "all", "hem", "hem", "hem"]
    vote = majority_vote({"subject": subjects, "y_true": truth, "y_pred": pred})
    assert (vote.correct, vote.subjects, vote.ties) == (2, 4, 1) and vote.accuracy == 0.5


@pytest.mark.slow
def test_page_has_contents_folded_rows_every_interval_and_per_subject_lines():
    rows = _synthetic_rows()
    page = render_html(rows, title="t")
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    links = re.findall(r'<a href="#([^"]+)"', page)
    assert {"results-section", "comparison", "intervals", "subjects", "methods", "rows", "row-1", "row-2"} <= set(
        links)
    assert set(links) <= ids and len(ids) == len(re.findall(r'\bid="', page))  # every link resolves, ids unique
    sections = re.findall(r'<section class="row" id="row-\d+">(.*?)</section>', page, re.S)
    assert len(sections) == 2 and all(s.startswith("<details><summary>") and s.endswith("</details>")
                                      for s in sections)
    assert all(s.count("<img") == 2 for s in sections)  # confusion matrix and ROC curve inside the fold
    table = page.split('<table id="interval-table">')[1].split("</table>")[0]
    for r in rows:
        for m in METRICS:
            assert html.escape(score_interval_text(r.score(m))) in table
    assert "90.00 [85.0, 93.0]" in table
    per_subject = page.split('<table id="per-subject">')[1].split("</table>")[0]
    lines = re.findall(r'<tr data-subject="([^"]+)">(.*?)</tr>', per_subject)
    assert [s for s, _ in lines] == ["7", "H9", "H10"]  # one line per subject, in natural order
    cells = {s: re.findall(r'<td class="num">([^<]*)</td>', rest) for s, rest in lines}
    assert cells == {"7": ["75.00", "25.00"], "H9": ["100.00", "-"], "H10": ["50.00", "100.00"]}
    assert "Per-subject accuracy of every row" in page
    assert f"sha256 {SHA}" in page.split('<section id="methods">')[1]
    assert not re.search(r"<script|<link|@import|url\(|(src|href)=\"(?!data:|#)|https?://", page)


@pytest.mark.slow
def test_methods_and_subjects_of_a_compare_on_the_cnn_store(cnn_store, tmp_path):
    result = featx.compare([cnn_store], ["logistic", "svm"], cv="subject", n_folds=3, out=tmp_path / "cmp",
                           plots=False)
    rows = result.rows
    text = methods_text(rows, [tmp_path / "cmp"])
    assert "All rows: features of cnn with randomly initialised weights (seed 0), input 32 px" in text
    assert "tap fc" in text and "cnn.h5 holds 34 images of 8 subjects" in text
    for r in rows:
        params = dict(r.settings["head_params"])
        assert f"Head {r.head} (1 row)" in text and f"C={params['C']}" in text
    assert "subject-level 3-fold (seed 0)" in text and rows[0].interval["method"] in text
    assert f"featx {featx.__version__}" in text
    assert f"{tmp_path / 'cmp'} was written by `featx.compare(...)`" in text and "heads logistic and svm" in text
    # the report read from the folder: predictions from predictions/<row>.csv give the same majority vote
    page = write_html_report([tmp_path / "cmp"], tmp_path / "r.html").read_text(encoding="utf-8")
    votes = page.split('<table id="majority-vote">')[1].split("</table>")[0]
    for r in rows:
        v = majority_vote(r.predictions)
        assert v.subjects == rows[0].n_subjects == 6
        assert f"<td class=\"name\">{html.escape(r.name)}</td><td>subject 3-fold</td><td class=\"num\">" \
               f"{v.correct} / {v.subjects}</td>" in votes
    per_subject = page.split('<table id="per-subject">')[1].split("</table>")[0]
    assert per_subject.count("<tr data-subject=") == 6
    for s, acc in rows[0].per_subject_accuracy.items():
        assert re.search(rf'<tr data-subject="{s}"><td>{s}</td><td>(all|hem)</td><td class="num">'
                         rf"{100 * acc:.2f}</td>", per_subject)
    assert "(3 all, 3 hem)" in page.split('<section id="methods">')[1]  # subjects per class, from predictions


@pytest.mark.slow
def test_rows_without_predictions_say_so_and_a_written_folder_keeps_them(tmp_path):
    row = make_row("x/fc7 + svm", 0.9, per_subject_accuracy={"a": 1.0, "b": 0.0})
    assert "no row carries out-of-fold predictions" in render_html([row])
    pred = {"path": ["1", "2", "3"], "subject": ["a", "a", "b"], "fold": [1, 1, 2], "y_true": ["all", "all", "hem"],
            "y_pred": ["all", "all", "all"], "score": [0.9, 0.8, 0.7]}
    write_results([dataclasses.replace(row, predictions=pred)], tmp_path / "cmp", plots=False)
    page = write_html_report([tmp_path / "cmp"], tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<td class="num">1 / 2</td>' in page.split('<table id="majority-vote">')[1]


def test_methods_count_the_tested_subjects_of_a_held_out_row_not_its_training_ones():
    subjects = ["A1", "A2", "A3", "H1", "H2", "H3"]
    truth = ["all"] * 3 + ["hem"] * 3
    predictions = {"path": [f"{s}.bmp" for s in subjects], "subject": subjects, "fold": [1] * 6, "y_true": truth,
                   "y_pred": truth, "score": [0.9] * 6}
    row = dataclasses.replace(make_row("cnn/fc + svm", 0.9, protocol="tuned-holdout", label="tuned-holdout",
                                       n_folds=1), n_test=6, n_subjects=51, predictions=predictions)
    text = methods_text([row])
    assert "on 6 images of 6 subjects (3 all, 3 hem) (51 subjects with the training rows)" in text
    assert "of 51 subjects (3 all" not in text
