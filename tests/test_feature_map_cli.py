"""`featx map` and the map's figure: two panels titled with their numbers, the numbers printed, and every bad input
one line with nothing lost."""
from __future__ import annotations

import errno
import io
import re
from pathlib import Path

import pytest
from cli_helpers import invoke
from image_helpers import png, two_classes
from PIL import Image
from rich.console import Console

from featx.errors import FeatxError
from featx.extract import extract
from featx.figures import DPI
from featx.report.feature_map import feature_map
from featx.report.feature_map_plot import caption, draw_feature_map, map_figure, plot_feature_map

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXTRACT = dict(backbone="cnn", weights="none", image_size=32, workers=0, device="cpu")


@pytest.fixture(scope="module")
def no_subject_store(tmp_path_factory) -> Path:
    """12 images in class folders (no subject ids), through the cnn."""
    root = tmp_path_factory.mktemp("nosub")
    for i in range(6):
        png(root / "data" / "all" / f"a{i}.png", (200, 30 * i, 50), size=(20, 20))
        png(root / "data" / "hem" / f"h{i}.png", (30 * i, 100, 200), size=(20, 20))
    return extract(root / "data", root / "nosub.h5", **EXTRACT)


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


@pytest.mark.slow
def test_the_figure_has_a_panel_by_class_and_one_by_subject_titled_with_their_numbers(cnn_store, tmp_path):
    fmap = feature_map(cnn_store, method="pca")
    fig = map_figure(fmap)
    titles = _titles(fig)
    assert len(fig.axes) == 2
    assert titles[0].startswith(f"by class: class clustering {fmap.class_clustering.text()}")
    assert titles[1].startswith(f"by subject: subject clustering {fmap.subject_clustering.text()}")
    assert re.search(r"\d\.\d\d \(chance \d\.\d\d ± \d\.\d\d\)", titles[1])
    assert "not on this map" in fig.get_supxlabel()
    assert caption(fmap) == (f"PCA of cnn.h5 (fc), 30 cells of 8 subjects: subject clustering "
                             f"{fmap.subject_clustering.text()}, class clustering {fmap.class_clustering.text()}, in "
                             "the features' 30-dimensional PCA space")
    subjects = [t.get_text() for t in fig.axes[1].texts]
    assert sorted(subjects) == sorted(set(fmap.subjects))   # each subject's id at its centre
    path = draw_feature_map(fmap, tmp_path / "map.png")
    with Image.open(path) as image:
        width, height = image.size
    assert (width, height) == (12 * DPI, round(6.2 * DPI))   # two 6-inch panels side by side


@pytest.mark.slow
def test_rows_without_subjects_draw_one_panel_and_say_why(no_subject_store, tmp_path):
    fmap = plot_feature_map(no_subject_store, tmp_path / "map.png", method="pca")
    assert fmap.subject_clustering is None and fmap.n_cells == 12 and fmap.class_clustering.k == 1
    assert fmap.note == ("12 of 12 rows have no subject id: the map shows classes only, with no subject panel or "
                         "subject number")
    fig = map_figure(fmap)
    assert len(fig.axes) == 1 and _titles(fig)[0].startswith("by class: class clustering ")
    with Image.open(fmap.path) as image:
        assert image.size[0] == 6 * DPI
    result, text = invoke("map", no_subject_store, "--out", tmp_path / "cli.png", "--method", "pca", "-q")
    assert result.exit_code == 0, result.output
    assert "note: 12 of 12 rows have no subject id" in text and "subject clustering" not in text


@pytest.mark.slow
def test_featx_map_prints_the_numbers_and_writes_the_png(cnn_store, tmp_path):
    out = tmp_path / "maps" / "map.png"
    result, text = invoke("map", cnn_store, "--out", out, "--method", "tsne", "--seed", "5", "-q")
    assert result.exit_code == 0, result.output
    fmap = feature_map(cnn_store, method="tsne", seed=5)
    s, c = fmap.subject_clustering, fmap.class_clustering
    assert f"subject clustering {s.text()}, {s.sds_above:.1f} sd above chance" in text
    assert f"class clustering {c.text()}" in text
    assert f"wrote {out} (t-SNE of 30 cells, 8 subjects, tap fc)" in text
    assert len(result.output.strip().splitlines()) == 3 and out.stat().st_size > 10_000


@pytest.mark.slow
def test_featx_map_shows_each_step_on_a_terminal(cnn_store, tmp_path, monkeypatch):
    from featx.cli.progress import cli as cli_app

    screen = io.StringIO()
    monkeypatch.setattr(cli_app, "err_console", Console(file=screen, force_terminal=True, width=200))
    result, _ = invoke("map", cnn_store, "--out", tmp_path / "m.png", "--method", "pca")
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    for step in ("reading ", "PCA of the standardised features: 128 -> 30 dimensions", "PCA of 30 rows to 2-D",
                 "clustering by class and subject (200 shuffles each)", "drawing "):
        assert step in shown, step
    screen.truncate(0)
    invoke("map", cnn_store, "--out", tmp_path / "q.png", "--method", "pca", "-q")
    assert screen.getvalue() == ""


@pytest.mark.slow
def test_an_existing_out_is_kept_unless_force(cnn_store, tmp_path):
    out = tmp_path / "map.png"
    out.write_bytes(b"an earlier map")
    result, text = invoke("map", cnn_store, "--out", out, "--method", "pca")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {out} exists; choose another --out, or add --force to replace it" in text
    assert out.read_bytes() == b"an earlier map"
    result, _ = invoke("map", cnn_store, "--out", out, "--method", "pca", "--force", "-q")
    assert result.exit_code == 0 and out.read_bytes().startswith(b"\x89PNG")


def test_a_full_disk_keeps_the_earlier_map_whole(cnn_store, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "map.png"
    out.write_bytes(b"an earlier map")

    def full(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", str(fname))

    monkeypatch.setattr(Figure, "savefig", full)
    result, text = invoke("map", cnn_store, "--out", out, "--method", "pca", "--force")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"disk full while writing {out}; the earlier map.png is kept as it was" in text
    assert out.read_bytes() == b"an earlier map" and sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]


def test_bad_inputs_are_one_line_each(cnn_store, tmp_path):
    not_a_store = tmp_path / "notes.h5"
    not_a_store.write_text("not HDF5")
    small = extract(two_classes(tmp_path / "small"), tmp_path / "small.h5", **EXTRACT)
    cases = [
        ((cnn_store, "--tap", "fc9"), "no tap 'fc9' in this store; it holds pool5, fc"),
        ((not_a_store,), "not a readable HDF5 feature store"),
        ((tmp_path / "missing.h5",), "no such feature store"),
        ((small,), "small.h5: 4 labelled rows; a map needs at least 10"),
        ((cnn_store, "--method", "mds"), "--method mds: not a map method; choose one of auto, tsne, umap, pca"),
    ]
    for args, message in cases:
        result, text = invoke("map", *args, "--out", tmp_path / "m.png")
        assert result.exit_code == 1 and message in text and "Traceback" not in result.output, (args, text)
        assert len(result.output.strip().splitlines()) == 1 or len(text) < 240, text
    outs = [
        (tmp_path, f"--out {tmp_path} is a folder; give the file to write, e.g. --out {tmp_path / 'map.png'}"),
        (tmp_path / "m.txt", f"--out {tmp_path / 'm.txt'}: give a .png (or .svg, .pdf) file"),
        (not_a_store / "m.png", f"{not_a_store} is a file, not a folder"),
    ]
    for out, message in outs:
        result, text = invoke("map", cnn_store, "--out", out)
        assert result.exit_code == 1 and message in text and "Traceback" not in result.output, (out, text)
    copy = tmp_path / "store.png.h5"
    copy.write_bytes(Path(cnn_store).read_bytes())
    with pytest.raises(FeatxError, match="is a store the map reads"):
        plot_feature_map(copy, copy, method="pca", overwrite=True)
    assert not (tmp_path / "m.png").exists()


def test_an_out_that_cannot_be_written_is_one_line_before_any_work(cnn_store, read_only_dir, monkeypatch):
    import featx.report.feature_map_plot as plot_module

    def never(*args, **kwargs):
        raise AssertionError("mapped before the out was checked")

    monkeypatch.setattr(plot_module, "feature_map", never)
    out = read_only_dir / "map.png"
    result, text = invoke("map", cnn_store, "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(rf"cannot access {re.escape(str(out))} \((read-only file system|permission denied)\); choose "
                     r"another --out or fix its permissions", text), text
