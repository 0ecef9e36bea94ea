"""`featx report`: one self-contained HTML file, checked as text and as a real browser (headless Chromium)
renders it."""
from __future__ import annotations

import base64
import csv
import html
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from cli_helpers import invoke
from PIL import Image
from report_rows import make_row

import featx
from featx import report
from featx.finetune import finetune
from featx.report import IMAGE_LEVEL_NOTE, STATS_NOTE, write_html_report, write_results
from featx.report import html as report_html
from featx.results import NetworkRecord

IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture
def sources(tmp_path):
    """A compare-style results folder (3 rows, one image-level, one without a ROC curve, one name to escape)
    and a fine-tuning run folder (results.json + history.csv). Returns (paths, rows, expected figures)."""
    rows = [make_row("vgg16/fc7 + svm", 0.87),
            make_row("vgg16/fc7 + svm", 0.97, image_level=True, protocol="image",
                     label="IMAGE-LEVEL 5-fold (cells of one subject on both sides)", roc=None),
            make_row("a<b> & 'c'/pool5 + knn", 0.91, ci=False)]
    write_results(rows, tmp_path / "cmp", plots=False)
    run = tmp_path / "run"
    tuned = make_row("resnet18 fine-tuned", 0.9, ci=True, head=None, tap="logits", protocol="val", n_folds=1,
                     label="subject-level holdout",
                     network=NetworkRecord(best_epoch=2, scored_epoch=3, epochs_run=3, selection="last epoch (3) of "
                                           "a fixed-length run; best.pt is epoch 2 by validation loss"),
                     settings={"monitor": "loss"})
    write_results([tuned], run, plots=False)
    with (run / "history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1_weighted", "lr", "seconds"])
        for e in (1, 2, 3):
            writer.writerow([e, 1 / e, 1 - 0.4 / e, 0.5 + 0.1 * (e - 2) ** 2, 0.8 + 0.02 * e, 0.8, 1e-4, 1.5])
    all_rows = [*rows, tuned]
    expected = 1 + sum(r.confusion is not None for r in all_rows) + sum(bool(r.roc) for r in all_rows) + 1
    return [tmp_path / "cmp", run], all_rows, expected


def _pngs(text: str) -> list[Image.Image]:
    images = []
    for data in IMG.findall(text):
        raw = base64.b64decode(data, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        Image.open(io.BytesIO(raw)).verify()  # a whole, valid PNG
        images.append(Image.open(io.BytesIO(raw)))
    return images


@pytest.mark.slow
def test_featx_report_writes_one_self_contained_html_file(sources, tmp_path):
    paths, rows, expected = sources
    result, out = invoke("report", *paths, "--out", tmp_path / "mail" / "report.html", "--title", "Study <1>")
    assert result.exit_code == 0, out
    assert "wrote" in out and "report.html" in out
    assert [p.name for p in (tmp_path / "mail").iterdir()] == ["report.html"]  # one file, nothing beside it
    text = (tmp_path / "mail" / "report.html").read_text(encoding="utf-8")
    images = _pngs(text)
    assert len(images) == expected == 9  # chart, 4 confusion matrices, 3 ROC curves, 1 set of curves
    assert all(im.size[0] <= 1200 for im in images)
    assert not re.search(r"<script|<link|@import|url\(|src=\"(?!data:)|https?://", text)  # nothing external
    body = text.split('<table id="results">')[1].split("</table>")[0]
    assert body.count("<tr") == len(rows) + 1  # header + one per row
    for r in rows:
        assert html.escape(r.name) in body
    assert "a<b>" not in text and "a&lt;b&gt; &amp; &#x27;c&#x27;/pool5 + knn" in body  # escaped, never raw
    assert "<title>Study &lt;1&gt;</title>" in text
    assert 'data-flag="IMAGE-LEVEL"' in body and "* IMAGE-LEVEL</span>" in body
    assert "87.00 ± 2.00" in body and "82.0 - 90.0" in body  # mean ± sd and the CI of the sorted metric
    assert html.escape(IMAGE_LEVEL_NOTE) in text and html.escape(STATS_NOTE) in text
    assert f"featx {featx.__version__}" in text and re.search(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "best.pt is epoch 2 by validation loss" in text and "Fine-tuning curves" in text


def test_report_library_takes_rows_and_refuses_what_it_cannot_use(tmp_path):
    rows = [make_row("x/fc7 + svm", 0.9)]
    text = write_html_report(rows, tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(_pngs(text)) == 3 and "Fine-tuning curves" not in text
    result, out = invoke("report", tmp_path / "nothing.json", "--out", tmp_path / "r2.html")
    assert result.exit_code == 1 and "nothing.json" in out and "Traceback" not in out
    assert not (tmp_path / "r2.html").exists()
    result, out = invoke("report", tmp_path, "--sort-by", "speed")
    assert result.exit_code == 1 and "--sort-by speed" in out and "f1_weighted" in out


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium, chromium-browser or google-chrome on PATH: "
                                             "install Debian's `chromium` package to render the report")
def test_the_same_row_in_two_folders_or_a_folder_and_its_parent_is_reported_once(tmp_path):
    rows = [make_row("vgg16/fc7 + svm", 0.87), make_row("alexnet/fc7 + svm", 0.84)]
    write_results(rows, tmp_path / "res" / "compare", plots=False)
    write_results(rows[:1], tmp_path / "res" / "classify", plots=False)  # the same result run again elsewhere
    for sources in ([tmp_path / "res"], [tmp_path / "res", tmp_path / "res" / "compare"]):
        kept, *_ = report_html._gather(sources)
        assert sorted(r.name for r in kept) == ["alexnet/fc7 + svm", "vgg16/fc7 + svm"]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(sources, tmp_path):
    paths, rows, expected = sources
    page = write_html_report(paths, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    flags = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000"]
    done = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=60)
    assert shot.is_file(), done.stderr.decode(errors="replace")[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 3000)
    pixels = np.asarray(img, dtype=np.int16)
    assert pixels.std() > 20  # not blank
    # the embedded figures were decoded and drawn (the forest plot is open; each row's figures are folded): the
    # same page without its images has fewer saturated pixels (the plot's coloured dots, lines and marks)
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', page.read_text(encoding="utf-8")),
                    encoding="utf-8")
    bare_shot = tmp_path / "bare.png"
    subprocess.run([*flags, f"--screenshot={bare_shot}", bare.as_uri()], capture_output=True, timeout=60)

    def saturated(image) -> int:
        rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.int16)
        return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 90).sum())

    assert saturated(shot) > saturated(bare_shot) + 1_000, (saturated(shot), saturated(bare_shot))
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, timeout=60, text=True).stdout
    table = dom.split('<table id="results">')[1].split("</table>")[0]
    assert len(re.findall(r"<tr[ >]", table)) == len(rows) + 1
    for r in rows:
        assert html.escape(r.name, quote=False) in table
    assert len(IMG.findall(dom)) == expected


@pytest.mark.slow
def test_a_real_finetune_run_marks_its_best_epoch_and_reports_its_curves(cnmc_tree, tmp_path, monkeypatch):
    """finetune passes best.pt's epoch (and the scored one) to the curves; the report draws them again from
    the run folder's history.csv and results.json."""
    seen = []
    real = report.plot_history
    for module in (report, report_html):
        monkeypatch.setattr(module, "plot_history", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    run = tmp_path / "run"
    summary = finetune(cnmc_tree, run, backbone="cnn", weights="none", image_size=32, epochs=2, batch_size=8,
                       val="fold_2", seed=0, workers=0, device="cpu")
    assert seen[0]["best_epoch"] == summary["best_epoch"] and seen[0]["scored_epoch"] == 2
    assert seen[0]["monitor"] == "loss"
    text = write_html_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(_pngs(text)) == 7  # chart, confusion, ROC, per-subject accuracy, error gallery, maps, curves
    row = text.split('<section class="row" id="row-1">')[1].split("</section>")[0]
    maps = row.index(f"Class-activation maps of the network fine-tuned in {run}")
    gallery = row.index("Error gallery of ")
    assert gallery < maps  # the run's maps beside its row's error gallery, not again under the curves
    assert text.count("<figcaption>Class-activation maps of the network") == 1
    assert f"best.pt is epoch {summary['best_epoch']} by validation loss" in text
    methods = text.split('<section id="methods">')[1]  # the run's own training settings, and what wrote it
    assert "cnn fine-tuned from randomly initialised weights on 32 px images (optimizer adamw" in methods
    assert f"{run} is a run of <code>featx.finetune(...)</code>" in methods
    assert seen[-1]["best_epoch"] == summary["best_epoch"] and len(seen) == 2
