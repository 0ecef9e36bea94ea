"""The report's pictures: a feature map for every store its rows compare."""
from __future__ import annotations

import base64
import dataclasses
import io
import re

import pytest
from PIL import Image
from report_rows import make_row

import featx
from featx.errors import FeatxError
from featx.report import write_html_report
from featx.report.pictures import mapped_stores

pytestmark = pytest.mark.slow


def _section(text: str, anchor: str) -> str:
    return text.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


def test_the_report_maps_every_store_its_rows_compare_by_class_and_by_subject(cnn_store, tmp_path):
    rows = featx.compare([cnn_store], ["logistic", "knn"], cv="subject", n_folds=3, jobs=1).rows
    gone = dataclasses.replace(rows[0], settings={**rows[0].settings, "stores": [str(tmp_path / "moved.h5")]})
    assert [(s, t) for s, t, _ in mapped_stores([*rows, gone])] == [((str(cnn_store),), rows[0].tap),
                                                                    ((str(tmp_path / "moved.h5"),), rows[0].tap)]
    steps = []
    page = write_html_report([*rows, gone], tmp_path / "r.html", maps="pca", on_step=steps.append)
    section = _section(page.read_text(encoding="utf-8"), "feature-space")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", section)
    assert len(captions) == 1 and "PCA of " in captions[0] and f"({rows[0].tap})" in captions[0]
    subject = re.search(r"subject clustering (0\.\d+) \(chance (0\.\d+) ± (0\.\d+)\)", captions[0])
    assert subject and float(subject[1]) > float(subject[2]) + 2 * float(subject[3])  # stain tints: far above
    assert "class clustering" in captions[0] and section.count("<img ") == 1
    assert f"no map of {tmp_path / 'moved.h5'}" in section  # the store that moved is named, not skipped silently
    assert {s.name for s in steps} >= {"read", "embed", "draw"}

    none = write_html_report(rows, tmp_path / "n.html", maps="none").read_text(encoding="utf-8")
    assert "<img " not in _section(none, "feature-space")


def test_rows_without_stores_get_no_map_and_a_wrong_choice_is_one_line(tmp_path):
    text = write_html_report([make_row("x/fc7 + svm", 0.9)], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "no row names a feature store" in _section(text, "feature-space")
    with pytest.raises(FeatxError, match=r"maps='tsnee'.*choose one of auto, tsne, umap, pca, none"):
        write_html_report([make_row("x/fc7 + svm", 0.9)], tmp_path / "r2.html", maps="tsnee")


def test_each_row_section_holds_its_error_gallery_or_says_why_not(cnn_store, tmp_path):
    rows = featx.compare([cnn_store], ["logistic"], cv="subject", n_folds=3, jobs=1).rows
    p = rows[0].predictions
    wrong = sum(t != q for t, q in zip(p["y_true"], p["y_pred"]))
    moved = dataclasses.replace(rows[0], predictions={**p, "path": [f"gone/{x}" for x in p["path"]]})
    bare = dataclasses.replace(rows[0], predictions=None)
    steps = []
    page = write_html_report([rows[0], moved, bare], tmp_path / "r.html", maps="none", on_step=steps.append)
    text = page.read_text(encoding="utf-8")
    first, second, third = (text.split(f'<section class="row" id="row-{i}">', 1)[1].split("</section>", 1)[0]
                            for i in (1, 2, 3))
    caption = re.search(r"<figcaption>(Error gallery of [^<]*)</figcaption>", first)[1]
    sheet = base64.b64decode(re.search(r'<img alt="Error gallery of [^"]*" src="data:image/png;base64,([^"]+)"',
                                       first)[1])
    assert Image.open(io.BytesIO(sheet)).mode == "P"  # a palette PNG: a third of the bytes
    assert f"of its {wrong} misclassified test cells" in caption and "probability" in caption
    assert "no error gallery" in second and "gone/" in second  # the missing image is named
    assert "Error gallery" not in third and "no error gallery" not in third  # no predictions: nothing to draw
    assert [s.text.split(",")[0] for s in steps if s.name == "gallery"] == ["error gallery of row 1 of 3",
                                                                            "error gallery of row 2 of 3"]


def test_a_run_folder_that_cannot_be_mapped_is_named_with_the_reason(tmp_path):
    from featx.report.pictures import explanations_html

    (tmp_path / "run").mkdir()
    figure = lambda plot, caption: str(plot(tmp_path / "x.png"))  # noqa: E731
    text = explanations_html(tmp_path / "run", figure)
    assert text.startswith("<p>(no class-activation maps of") and "holds no best.pt" in text
    assert not (tmp_path / "x.png").exists()


def test_a_palette_png_keeps_an_image_of_few_colours_exactly_and_shrinks_a_photo(tmp_path):
    import numpy as np
    from PIL import Image

    from featx.figures import palette_png

    rng = np.random.default_rng(0)
    few = rng.choice([0, 80, 160, 255], size=(40, 60, 3)).astype(np.uint8)  # 64 colours at most
    Image.fromarray(few).save(tmp_path / "few.png")
    palette_png(tmp_path / "few.png")
    with Image.open(tmp_path / "few.png") as back:
        assert back.mode == "P" and (np.asarray(back.convert("RGB")) == few).all()
    yy, xx = np.mgrid[0:200, 0:200]  # a smooth, noisy "cell": many colours, as a photograph
    photo = np.stack([xx, yy, (xx + yy) // 2], axis=-1) + rng.normal(0, 6, (200, 200, 3))
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(tmp_path / "photo.png")
    before = (tmp_path / "photo.png").stat().st_size
    palette_png(tmp_path / "photo.png")
    with Image.open(tmp_path / "photo.png") as back:
        error = np.abs(np.asarray(back.convert("RGB"), dtype=float) - np.clip(photo, 0, 255).astype(np.uint8))
    assert (tmp_path / "photo.png").stat().st_size < before / 2 and error.mean() < 8
