"""Files featx writes are whole or absent, one writer per results folder, no CSV cell a spreadsheet runs, no
lock file left behind (issue 24 items 6, 7, 8, 18, 28). A full disk is a real tmpfs, a second writer a real
second process."""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from disk_helpers import fill, tmpfs_mounter
from filelock import Timeout
from PIL import Image

from featx import csvfiles
from featx.data import Collection, Sample
from featx.errors import FeatxError
from featx.extract import extract
from featx.finetune.checkpoint import write_history, write_lists
from featx.report.html import read_history
from featx.results import read_json, rows_from_csv
from featx.store import sample_table
from featx.store.lock import WriterLock, acquire_writer_lock, holder, lock_path
from featx.workflows.classify import run_classify
from featx.workflows.predict import predict

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")

REPO = Path(__file__).resolve().parents[1]
EXTRACT = dict(backbone="cnn", weights="none", image_size=32, workers=0, device="cpu")
# image names a spreadsheet would run as formulas (class folders too), and one already quoted
FORMULAS = ["=1+2", "+SUM(1,1)", "-2+3", "@SUM(1)", '=HYPERLINK("evil.example","x")', "\tTAB", "\rCR", "'=quoted"]
CLASSES = ["=all", "-hem"]
LONG = 10  # images per class with 230-character names: predict's CSV of the store is over one 4 KiB page


def _images(folder: Path, names, shade: int, rng) -> None:
    folder.mkdir(parents=True)
    for name in names:
        pixels = (rng.random((32, 32, 3)) * 80 + shade).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{name}.bmp")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Class folders ``=all`` and ``-hem``, each holding the FORMULAS names and LONG long names."""
    root = tmp_path_factory.mktemp("formulas") / "data"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(CLASSES):
        _images(root / cls, FORMULAS + [f"cell{i}-" + "x" * 220 for i in range(LONG)], 100 * k, rng)
    return root


@pytest.fixture(scope="module")
def store(tree) -> Path:
    return extract(tree, tree.parent / "s.h5", **EXTRACT)


@pytest.fixture(scope="module")
def model(store) -> Path:
    return run_classify(store, "logistic", n_folds=3, out=store.parent / "trained", save=True, plots=False).model


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only); unmounted afterwards."""
    for mount in tmpfs_mounter(tmp_path / "mnt"):
        yield mount(1 << 20)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _formula_cells(path: Path) -> list[str]:
    """Cells of a CSV (read as a spreadsheet would: plain csv) that start like a formula and are no number."""
    with open(path, newline="", encoding="utf-8") as fh:
        cells = [c for line in csv.reader(fh) for c in line]
    number = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
    return [c for c in cells if c and c[0] in "=+-@\t\r" and not re.fullmatch(number, c)]


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return " ".join(result.output.split())


# -- item 8: CSV injection ------------------------------------------------------------------------------------
def test_csv_cells_a_spreadsheet_would_run_get_a_quote_and_read_back_unchanged(tmp_path):
    values = [*FORMULAS, "''-x", "'", "''", "a=b", "", "-0.25", "+1e-3", "-7", "plain", "-", "=", "@", "-nan"]
    path = tmp_path / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csvfiles.writer(fh).writerows([["value", "n"], *[[v, -1.5] for v in values]])
    assert _formula_cells(path) == []  # "-0.25", "+1e-3", "-7" and the float -1.5 stay numbers
    with open(path, newline="", encoding="utf-8") as fh:
        raw = [line[0] for line in csv.reader(fh)][1:]
    assert raw[:3] == ["'=1+2", "'+SUM(1,1)", "'-2+3"] and raw[values.index("'=quoted")] == "''=quoted"
    assert [raw[values.index(v)] for v in ("a=b", "-0.25", "+1e-3", "-7", "plain", "'", "-nan")] == \
        ["a=b", "-0.25", "+1e-3", "-7", "plain", "'", "'-nan"]
    with open(path, newline="", encoding="utf-8") as fh:
        back = list(csvfiles.DictReader(fh))
    assert [r["value"] for r in back] == values and {r["n"] for r in back} == {"-1.5"}


def test_every_csv_featx_writes_goes_through_the_neutralising_writer():
    """No module writes a CSV with the csv module directly; only the reader of user files (manifests, C-NMC
    labels: featx.data.text) reads one without :class:`featx.csvfiles.DictReader`."""
    writers, readers = [], []
    for path in sorted((REPO / "featx").rglob("*.py")):
        text = path.read_text()
        if path.name != "csvfiles.py":
            writers += [path.name for _ in re.finditer(r"\bcsv\.(writer|DictWriter)\(", text)]
            readers += [path.relative_to(REPO).as_posix() for _ in re.finditer(r"\bcsv\.(reader|DictReader)\(", text)]
    assert writers == []
    assert sorted(set(readers)) == ["featx/data/text.py"]


def test_finetune_lists_and_history_keep_formula_paths_as_text(tmp_path):
    images = Collection(tmp_path, "folders", [Sample("=1+2.bmp", "all", "-s", "fold_0")])
    write_lists(tmp_path, images, skipped=[(0, "@cannot read")], provenance={})
    assert _formula_cells(tmp_path / "skipped.csv") == []
    with open(tmp_path / "skipped.csv", newline="", encoding="utf-8") as fh:
        assert list(csvfiles.DictReader(fh)) == [{"path": "=1+2.bmp", "subject": "-s", "error": "@cannot read"}]
    write_history(tmp_path, [{"epoch": 1, "train_loss": -0.5, "val_f1": 0.25}])
    assert read_history(tmp_path / "history.csv") == [{"epoch": 1, "train_loss": -0.5, "val_f1": 0.25}]


@pytest.mark.slow
def test_formula_names_through_extract_classify_and_predict_stay_text(store, model, tree, tmp_path):
    out = tmp_path / "r"
    result, _ = invoke("classify", store, "--head", "logistic", "--folds", "3", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    [predictions] = sorted((out / "predictions").glob("*.csv"))
    for path in (out / "results.csv", predictions):
        assert _formula_cells(path) == [], path
    # featx's readers give every value back as it was
    with open(predictions, newline="", encoding="utf-8") as fh:
        lines = list(csvfiles.DictReader(fh))
    stored = sample_table(store)
    assert sorted(r["path"] for r in lines) == sorted(stored["path"])
    assert {r["y_true"] for r in lines} == set(CLASSES) and "=all/=1+2.bmp" in {r["path"] for r in lines}
    [row] = rows_from_csv(out / "results.csv")
    [same] = read_json(out / "results.json")
    assert sorted(row.classes) == sorted(CLASSES) and row.classes == same.classes and row.positive == same.positive

    inbox = tmp_path / "inbox"
    shutil.copytree(tree / "=all", inbox)
    csv_out = tmp_path / "predictions.csv"
    result, _ = invoke("predict", model, inbox, "--out", csv_out, "--trust-pickle")  # this test made the model
    assert result.exit_code == 0, result.output
    assert _formula_cells(csv_out) == []
    with open(csv_out, newline="", encoding="utf-8") as fh:
        lines = list(csvfiles.DictReader(fh))
    assert sorted(r["path"] for r in lines) == sorted(p.name for p in inbox.iterdir())
    assert {f"{n}.bmp" for n in FORMULAS} <= {r["path"] for r in lines}
    assert {r["prediction"] for r in lines} <= set(CLASSES) and all(r["error"] == "" for r in lines)


# -- item 6: whole files or none -------------------------------------------------------------------------------
@pytest.mark.slow
def test_classify_into_a_nearly_full_disk_keeps_the_earlier_results_whole(store, tmpfs):
    out = tmpfs / "r"
    result, _ = invoke("classify", store, "--head", "logistic", "--folds", "3", "--out", out)
    assert result.exit_code == 0, result.output
    before = _snapshot(out)
    assert {"results.csv", "results.json", "results.md", "run.json", "comparison.png"} <= set(before)
    # the new results need about 110 KB: the disk fills at results.*, a PNG of a row, or the comparison chart
    for leave in (4 << 10, 40 << 10, 80 << 10):
        filler = fill(tmpfs, leave)
        result, _ = invoke("classify", store, "--head", "knn", "--folds", "3", "--out", out, "--force")
        text = _one_line(result)
        assert f"disk full while writing {out}/" in text, text
        assert f"the results already in {out} are kept as they were (no file replaced, cut or removed)" in text
        assert _snapshot(out) == before, leave  # no file replaced, cut, added or removed
        assert not list(tmpfs.rglob("*.tmp")) and not lock_path(out).exists()
        filler.unlink()

    fresh = tmpfs / "fresh"
    filler = fill(tmpfs, 40 << 10)
    result, _ = invoke("classify", store, "--head", "knn", "--folds", "3", "--out", fresh)
    assert f"no results file was written to {fresh} (none is left cut)" in _one_line(result)
    assert not fresh.exists() and not lock_path(fresh).exists()
    filler.unlink()

    result, _ = invoke("classify", store, "--head", "knn", "--folds", "3", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert [r.head for r in read_json(out / "results.json")] == ["knn"]
    pngs = sorted(out.rglob("*.png"))
    assert [p.name for p in pngs] == ["comparison.png", "confusion-cnn-fc-knn-image.png", "roc-cnn-fc-knn-image.png"]
    for png in pngs:
        with Image.open(png) as image:
            image.load()  # whole: a cut PNG raises here


def test_predict_csv_on_a_full_disk_keeps_the_earlier_file(store, model, tree, tmp_path, tmpfs):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("=1+2.bmp", "-2+3.bmp"):
        shutil.copy(tree / "=all" / name, inbox / name)
    out = tmpfs / "predictions.csv"
    predict(model, inbox, out=out, trust_pickle=True)
    before = out.read_bytes()
    filler = fill(tmpfs, 0)
    # every row: over 4 KiB of CSV
    result, _ = invoke("predict", model, "--store", store, "--out", out, "--trust-pickle")
    text = _one_line(result)
    assert f"disk full while writing {out}; the earlier predictions.csv is kept as it was" in text
    assert out.read_bytes() == before and not list(tmpfs.glob("*.tmp"))
    other = tmpfs / "other.csv"
    result, _ = invoke("predict", model, "--store", store, "--out", other, "--trust-pickle")
    assert "no other.csv was written" in _one_line(result) and not other.exists()
    filler.unlink()
    result, _ = invoke("predict", model, "--store", store, "--out", out, "--trust-pickle")
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        assert len(list(csvfiles.DictReader(fh))) == 2 * (len(FORMULAS) + LONG)
    assert len(out.read_bytes()) > 4096


# -- item 18 ---------------------------------------------------------------------------------------------------
def test_report_out_a_folder_is_one_line(model, tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    result, _ = invoke("report", model.parents[1], "--out", folder)
    text = _one_line(result)
    assert f"{folder} is a folder; --out is the HTML file to write, e.g. --out {folder / 'report.html'}" in text
    assert not any(folder.iterdir())


# -- item 7: one writer per results folder ---------------------------------------------------------------------
PAUSED_CLASSIFY = r'''
import os, sys, time
from pathlib import Path
import featx.workflows.classify as workflow

real = workflow.evaluate
def evaluate(*args, **kwargs):  # holds the results folder until the test says go
    Path(os.environ["RUNNING"]).touch()
    t0 = time.time()
    while not Path(os.environ["GO"]).exists() and time.time() - t0 < 240:
        time.sleep(0.05)
    return real(*args, **kwargs)
workflow.evaluate = evaluate
from featx.cli import app
sys.argv = ["featx", *sys.argv[1:]]
app()
'''


def _featx(*args, **env) -> subprocess.Popen:
    """``featx ARGS`` in a process of its own (the console script beside this Python, else ``-m featx``)."""
    script = Path(sys.executable).with_name("featx")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "featx"]
    return subprocess.Popen([*cmd, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="250", **env))


def _heads_written(out: Path) -> set[str]:
    """Heads named by every file of a results folder: results.json, run.json, the plots and predictions."""
    import json

    heads = {r.head for r in read_json(out / "results.json")} | set(json.loads((out / "run.json").read_text())
                                                                     ["grid"]["heads"])
    heads |= {re.sub(r"^(confusion|roc)-cnn-fc-|-image$", "", p.stem) for p in (out / "plots").glob("*.png")}
    return heads | {re.sub(r"^cnn-fc-|-image$", "", p.stem) for p in (out / "predictions").glob("*.csv")}


@pytest.mark.slow
def test_a_second_classify_into_a_folder_being_written_is_refused_naming_the_run(store, tmp_path):
    out = tmp_path / "r"
    running, go = tmp_path / "running", tmp_path / "go"
    script = tmp_path / "paused.py"
    script.write_text(PAUSED_CLASSIFY)
    first = subprocess.Popen([sys.executable, str(script), "classify", str(store), "--head", "logistic", "--folds",
                              "3", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RUNNING=str(running),
                                      GO=str(go)))
    try:
        t0 = time.time()
        while not running.exists() and first.poll() is None and time.time() - t0 < 240:
            time.sleep(0.05)
        assert running.exists(), first.communicate()
        second = _featx("classify", store, "--head", "svm", "--folds", "3", "--out", out)
        stdout, stderr = second.communicate(timeout=240)
        assert second.returncode == 1, stdout + stderr
        assert f"pid {first.pid}, started " in holder(out)
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
        assert stderr.startswith(f"error: {out} is being written by another featx run (pid {first.pid}, started ")
        assert f": featx classify {store} --head logistic --folds 3 --out {out}); wait for it to finish, or " \
               "choose another --out" in stderr
        assert not (out / "results.json").exists()  # the refused run wrote nothing
    finally:
        go.touch()
        stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stdout + stderr
    assert _heads_written(out) == {"logistic"} and not lock_path(out).exists()


@pytest.mark.slow
def test_two_classify_runs_started_together_into_one_folder_leave_one_run_s_results(store, tmp_path):
    out = tmp_path / "r"
    runs = {head: _featx("classify", store, "--head", head, "--folds", "3", "--out", out)
            for head in ("logistic", "svm")}
    done = {head: (*run.communicate(timeout=300), run.returncode) for head, run in runs.items()}
    winners = [head for head, (_, _, rc) in done.items() if rc == 0]
    assert len(winners) == 1, done
    [(_, stderr, rc)] = [v for head, v in done.items() if head not in winners]
    assert rc == 1 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert re.match(rf"error: {re.escape(str(out))} (is being written by another featx run \(pid \d+|holds the "
                    r"results of `featx classify`)", stderr), stderr
    assert _heads_written(out) == set(winners) and not lock_path(out).exists()


# -- item 28: no lock file left behind ------------------------------------------------------------------------
def test_no_lock_file_is_left_after_a_run_a_refused_run_or_a_killed_one(store, tree, tmp_path):
    assert not lock_path(store).exists()  # extract ended
    out = tmp_path / "r"
    result, _ = invoke("classify", store, "--head", "logistic", "--folds", "3", "--out", out, "--no-plots")
    assert result.exit_code == 0 and not lock_path(out).exists(), result.output

    notes = tmp_path / "notes.h5"  # another program's file
    notes.write_text("not a store")
    result, _ = invoke("extract", tree, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                       "--workers", "0", "--out", notes)
    assert "not a readable HDF5 feature store" in _one_line(result)
    assert notes.read_text() == "not a store" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.h5", "r"]

    copy = tmp_path / "copy.h5"
    shutil.copy(store, copy)
    held = acquire_writer_lock(copy)  # another writer (an OS lock is per open file: as another process)
    try:
        result, _ = invoke("extract", tree, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                           "--workers", "0", "--out", copy)
        text = _one_line(result)
        assert f"it holds copy.h5.lock); wait for it (pid {os.getpid()}, started " in text
        assert lock_path(copy).exists()  # the holder's: the refused run leaves it alone
    finally:
        held.release()
    assert not lock_path(copy).exists()

    lock_path(copy).touch()  # left by a run killed with kill -9
    result, _ = invoke("extract", tree, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                       "--workers", "0", "--out", copy)
    assert result.exit_code == 0 and not lock_path(copy).exists(), result.output

    lock_path(copy).write_text("another program's file")  # not featx's: taken as a lock, never removed
    result, _ = invoke("extract", tree, "--backbone", "cnn", "--weights", "none", "--image-size", "32",
                       "--workers", "0", "--out", copy)
    assert result.exit_code == 0 and lock_path(copy).read_text() == "another program's file", result.output


LOCKER = r'''
import os, sys, time
from filelock import Timeout
from featx.store.lock import WriterLock

path, log, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
while time.time() < until:
    lock = WriterLock(path)
    try:
        lock.acquire()
    except Timeout:
        continue
    os.write(fd, f"in {os.getpid()}\n".encode())
    time.sleep(0.0005)
    os.write(fd, f"out {os.getpid()}\n".encode())
    lock.release()
'''


@pytest.mark.slow
def test_removing_lock_files_keeps_one_writer_at_a_time(tmp_path):
    """Three processes take and release one lock as fast as they can, its file removed each time: no two ever
    hold it at once (a process that opened the file just before it was removed is refused, not let in)."""
    script, log = tmp_path / "locker.py", tmp_path / "holds.log"
    script.write_text(LOCKER)
    until = time.time() + 8
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "s.h5"), str(log), str(until)], env=env)
             for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) > 200  # many hand-overs, by every process
    assert {line.split()[1] for line in lines} == {str(p.pid) for p in procs}
    for enter, leave in zip(lines[::2], lines[1::2]):
        assert enter.startswith("in ") and leave == "out " + enter[3:], (enter, leave)
    assert not lock_path(tmp_path / "s.h5").exists()


def test_a_lock_held_in_this_process_refuses_a_second_instance(tmp_path):
    first = WriterLock(tmp_path / "s.h5").acquire()
    with pytest.raises(Timeout):
        WriterLock(tmp_path / "s.h5").acquire()
    with pytest.raises(FeatxError, match="is being written by another featx command"):
        acquire_writer_lock(tmp_path / "s.h5")
    first.release()
    assert not lock_path(tmp_path / "s.h5").exists()
