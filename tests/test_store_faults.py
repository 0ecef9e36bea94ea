"""Fault injection on the feature store: kill -9, a full disk, two writers, damaged files, bad images and
folders, unfinished stores. Each ends with a store equal to an uninterrupted run or a one-line refusal."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from disk_helpers import fill, tmpfs_mounter
from PIL import Image
from typer.testing import CliRunner

from featx.cli import app
from featx.cli.app import flag
from featx.data import content as file_content
from featx.data import discover
from featx.data.images import load_image
from featx.errors import FeatxError, FeatxWarning
from featx.extract import extract
from featx.store import FeatureStore, load_features, lock_path, summarize, verify

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
ARGS = dict(backbone="cnn", weights="none", image_size=32, batch_size=4)
CLI_ARGS = ["--backbone", "cnn", "--weights", "none", "--image-size", "32", "--batch-size", "4", "-q"]

# Runs one extraction (in a child process, see _Child) and kills it (SIGKILL) at a chosen point.
DRIVER = r'''
import os, signal, sys, time
from pathlib import Path
import h5py
from featx.extract import extract
from featx.store import FeatureStore

mode, data, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
callback = None
if mode == "create":  # the store's file is written (in .tmp) but not yet renamed
    real_init = FeatureStore._initialise
    def init(h5, *args):
        real_init(h5, *args)
        h5.flush()
        die()
    FeatureStore._initialise = staticmethod(init)
elif mode == "first-write":  # the store exists, no row written
    FeatureStore._write_rows = lambda self, *args: die()
elif mode.startswith("flush-"):  # right after the k-th flush: a batch's features on disk, its done flags not
    k, calls, real_flush = int(mode[6:]), [0], h5py.File.flush
    def flush(self):
        real_flush(self)
        calls[0] += 1
        if calls[0] == k:
            die()
    h5py.File.flush = flush
elif mode.startswith("batch-"):  # from the progress callback after batch k (the writer may lag behind)
    k = int(mode[6:])
    def callback(done, total):
        if done >= 4 * k:
            die()
elif mode == "pause":  # hold the store open for writing until the test creates OUT.go
    running, go = Path(out + ".running"), Path(out + ".go")
    def callback(done, total):
        if done >= 4 and not running.exists():
            running.touch()
            t0 = time.time()
            while not go.exists() and time.time() - t0 < 120:
                time.sleep(0.05)
extract(data, out, backbone="cnn", weights="none", image_size=32, batch_size=4, workers=workers,
        on_progress=callback)
'''


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return env


class _Child:
    """DRIVER run in a forked child: a real process (``kill -9`` closes its files as the kernel does) that
    starts in milliseconds, not seconds (torch is already imported). Its output goes to a file, not a pipe."""

    def __init__(self, argv: list[str], log: Path, env: dict):
        self.log = open(log, "w+")
        self.returncode = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.dup2(self.log.fileno(), 1)
                os.dup2(self.log.fileno(), 2)
                os.environ.update(env)
                import torch

                torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork
                sys.argv = argv
                exec(compile(DRIVER, "driver.py", "exec"), {"__name__": "__main__"})
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 300):
        t0 = time.time()
        while self.poll() is None:
            if time.time() - t0 > timeout:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise TimeoutError(_output(self))
            time.sleep(0.02)
        return self.returncode


def _driver(tmp_path: Path, mode: str, data: Path, out: Path, workers: int = 0, wait: bool = True,
            fresh: bool = False, **env):
    """Run DRIVER in a forked child, or with ``fresh`` in a new interpreter (HDF5 reads its environment
    variables once, when the library starts)."""
    argv = ["driver.py", mode, str(data), str(out), str(workers)]
    log = tmp_path / f"driver-{mode}.log"
    if not fresh:
        child = _Child(argv, log, env)
    else:
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        child = subprocess.Popen([sys.executable, str(script), *argv[1:]], env=_env(**env),
                                 stdout=open(log, "w+"), stderr=subprocess.STDOUT, text=True)
        child.log = child.stdout
    if wait:
        child.wait(timeout=300)
    return child


def _output(proc) -> str:
    proc.log.seek(0)
    return proc.log.read()


def _cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featx", *map(str, args)], env=_env(**(env or {})),
                          capture_output=True, text=True, timeout=300)


def assert_same_store(a: Path, b: Path) -> None:
    """Same samples, labels and done flags; features equal up to float noise of other batch compositions."""
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        for key in ("path", "subject", "split"):
            assert list(x["samples"][key].asstr()[:]) == list(y["samples"][key].asstr()[:]), key
        for key in ("label", "done"):
            np.testing.assert_array_equal(x["samples"][key][:], y["samples"][key][:])
        assert x["samples/done"][:].all()
        assert set(x["features"]) == set(y["features"])
        for tap in x["features"]:
            np.testing.assert_allclose(x["features"][tap][:], y["features"][tap][:], rtol=1e-4, atol=1e-5)
            assert np.abs(x["features"][tap][:]).sum(axis=1).min() > 0  # no row left at its zero fill
    assert verify(a)["bad"] == 0 and verify(a)["checked"] == summarize(a)["samples"]
    assert verify(a)["metadata_checked"] and verify(a)["bad_metadata"] == 0
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:  # every row records the content it was computed from
        for field in ("size", "sha256"):
            np.testing.assert_array_equal(x["samples/file"][field], y["samples/file"][field], field)
        assert (x["samples/file"]["size"] > 0).all()


@pytest.fixture(scope="module")
def reference(cnmc_tree, tmp_path_factory) -> Path:
    """The uninterrupted run every faulty run is compared with."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    extract(cnmc_tree, out, workers=0, **ARGS)
    return out


# -- kill -9 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,workers", [("create", 0), ("first-write", 0), ("flush-3", 0), ("batch-3", 1)])
@pytest.mark.slow
def test_kill_9_then_the_same_command_completes_an_equal_store(cnmc_tree, reference, tmp_path, mode, workers):
    out = tmp_path / "s.h5"
    res = _driver(tmp_path, mode, cnmc_tree, out, workers=workers)
    assert res.returncode == -9, _output(res)
    if mode == "create":
        assert not out.exists()  # only the .tmp was there: a store exists whole or not at all
    else:
        s = summarize(out)
        assert s["done"] < s["samples"]
        if mode == "flush-3":  # batch 2's features reached the file, its done flags did not
            assert s["done"] == 4
            with h5py.File(out) as h5:
                assert np.abs(h5["features/fc"][4:8]).sum() > 0 and not h5["samples/done"][4:8].any()
        with pytest.raises(FeatxError, match=r"rows extracted; finish it .*allow_partial=True"):
            load_features(out)
    # right away (the killed run's decode workers must not hold the store): the identical command
    seen = []
    extract(cnmc_tree, out, workers=workers, on_progress=lambda done, total: seen.append(done), **ARGS)
    assert_same_store(out, reference)
    assert not out.with_name(out.name + ".tmp").exists()


def test_rows_that_do_not_match_their_checksums_are_found_refused_and_recomputed(cnmc_tree, reference, tmp_path):
    out = tmp_path / "s.h5"
    shutil.copy(reference, out)
    with h5py.File(out, "r+") as h5:  # what a lost write looks like: marked done, features never landed
        h5["features/fc"][3:6] = 0
    report = verify(out)
    assert report["bad"] == 3 and report["checked"] == summarize(out)["samples"]
    with h5py.File(out) as h5:
        assert report["bad_paths"] == list(h5["samples/path"].asstr()[3:6])
    res = runner.invoke(app, ["info", str(out), "--verify"])
    assert res.exit_code == 1 and "3 of" in res.output and "checksums" in res.output and "Traceback" not in res.output
    with pytest.raises(FeatxError, match="do not match their checksums.*damaged"):
        load_features(out, "fc")
    seen = []
    extract(cnmc_tree, out, workers=0, on_progress=lambda done, total: seen.append((done, total)), **ARGS)
    n = summarize(out)["samples"]
    assert seen == [(n - 3, n), (n, n)]  # the start, then one batch: only the three bad rows were computed again
    assert_same_store(out, reference)
    res = runner.invoke(app, ["info", str(out), "--verify"])
    assert res.exit_code == 0 and f"verified {n} finished rows" in " ".join(res.output.split())


# -- a full disk -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_disk_full_at_a_chosen_batch_keeps_finished_rows_then_completes(cnmc_tree, reference, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    real = h5py.Dataset.__setitem__
    calls = []

    def full_at_the_third_batch(self, key, value):
        if self.name.startswith("/features/"):
            calls.append(self.name)
            if len(calls) == 5:  # two taps a batch: the first tap of batch 3
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full_at_the_third_batch)
    res = runner.invoke(app, ["extract", str(cnmc_tree), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().startswith("error: disk full") and len(res.output.strip().splitlines()) == 1
    assert "8 finished rows are kept" in res.output
    monkeypatch.setattr(h5py.Dataset, "__setitem__", real)
    assert summarize(out)["done"] == 8 and verify(out)["bad"] == 0
    assert not lock_path(out).exists() or not _locked(out)
    res = runner.invoke(app, ["extract", str(cnmc_tree), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert_same_store(out, reference)


def _locked(out: Path) -> bool:
    from featx.store import writer_active

    return writer_active(out)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only); unmounted afterwards."""
    for mount in tmpfs_mounter(tmp_path / "mnt"):
        yield mount(1 << 20)


@pytest.mark.slow
def test_real_full_disk_is_one_line_and_the_store_completes_after_freeing_space(cnmc_tree, reference, tiny_tmpfs):
    out = tiny_tmpfs / "s.h5"
    filler = fill(tiny_tmpfs, 64 << 10)
    res = _cli("extract", cnmc_tree, *CLI_ARGS, "--workers", "0", "--out", out)
    assert res.returncode == 1, res.stderr  # not a crash (the bug: rc 139 after the message)
    assert res.stderr.strip().startswith("error: disk full while creating") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
    filler.unlink()  # the user frees space and runs the same command
    res = runner.invoke(app, ["extract", str(cnmc_tree), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert_same_store(out, reference)


@pytest.mark.slow
def test_disk_filling_up_during_extraction_does_not_hurt_the_store(cnmc_tree, reference, tiny_tmpfs):
    out = tiny_tmpfs / "s.h5"
    filled = []

    def fill_after_two_batches(done, total):
        if done >= 8 and not filled:
            filled.append(fill(tiny_tmpfs, 0))
            assert shutil.disk_usage(tiny_tmpfs).free < 8192

    extract(cnmc_tree, out, workers=0, on_progress=fill_after_two_batches, **ARGS)
    assert filled  # the disk was full for the last batches: their rows overwrite space the store already owns
    assert_same_store(out, reference)


# -- one writer ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_writer_is_refused_even_with_hdf5_locking_disabled(cnmc_tree, reference, tmp_path):
    out = tmp_path / "s.h5"
    # the first writer takes no HDF5 lock: without featx's own lock nothing would keep a second one out
    first = _driver(tmp_path, "pause", cnmc_tree, out, wait=False, fresh=True, HDF5_USE_FILE_LOCKING="FALSE")
    try:
        running = Path(str(out) + ".running")
        t0 = time.time()
        while not running.exists() and first.poll() is None and time.time() - t0 < 120:
            time.sleep(0.05)
        assert running.exists(), _output(first)
        res = runner.invoke(app, ["extract", str(cnmc_tree), *CLI_ARGS, "--workers", "0", "--out", str(out)])
        text = " ".join(res.output.split())
        assert res.exit_code == 1 and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
        assert f"{out} is being written by another featx command (it holds s.h5.lock)" in text  # featx's lock
        assert "HDF5_USE_FILE_LOCKING" not in text and "disable" not in text.lower()
        with pytest.raises(FeatxError, match="being written by another featx command"):
            FeatureStore.open_for_extraction(out, {}, [], [], {})
        with pytest.raises(FeatxError, match="rows extracted; finish it"):  # a reader meanwhile: not finished
            load_features(out)
    finally:
        Path(str(out) + ".go").touch()
        first.wait(timeout=300)
    assert first.returncode == 0, _output(first)
    assert_same_store(out, reference)
    assert len(load_features(out, labelled=None)) == summarize(out)["samples"]  # readers work once no one writes


def test_writer_lock_is_held_until_close_and_writing_rows_never_grows_the_file(cnmc_tree, tmp_path):
    collection = discover(cnmc_tree, splits=["prelim"])
    out = tmp_path / "s.h5"
    args = ({"dtype": "float32", "backbone": "cnn"}, collection.samples, collection.classes, {"fc": 4, "pool5": 3})
    store = FeatureStore.open_for_extraction(out, *args)
    size = out.stat().st_size
    with pytest.raises(FeatxError, match="is being written by another featx command"):
        FeatureStore.open_for_extraction(out, *args)
    store.mark_errors([0], ["cannot read image x.bmp: " + "é" * 600])  # longer than the field: cut, not grown
    store.write_rows(np.array([3, 1, 2]), {"fc": np.ones((3, 4)), "pool5": np.full((3, 3), 2.0)})
    store.write_rows(np.array([0]), {"fc": np.ones((1, 4)), "pool5": np.ones((1, 3))})
    store.close()
    assert out.stat().st_size == size  # every byte a row needs was allocated when the store was created
    s = summarize(out)
    assert s["done"] == 4 and s["errors"] == 0 and verify(out) == dict(verify(out), checked=4, bad=0)
    reopened = FeatureStore.open_for_extraction(out, *args)
    reopened.mark_errors([5], ["cannot read image y.bmp: " + "é" * 600])
    reopened.close()
    assert out.stat().st_size == size
    assert summarize(out)["failed"][0]["error"].startswith("cannot read image y.bmp: éé")


# -- damaged files ---------------------------------------------------------------------------------------------
def test_a_truncated_store_is_called_damaged_not_locked(cnmc_tree, reference, tmp_path):
    out = tmp_path / "s.h5"
    data = reference.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    for args in (["info", str(out)], ["extract", str(cnmc_tree), *CLI_ARGS, "--workers", "0", "--out", str(out)],
                 ["classify", str(out), "--head", "knn", "--out", str(tmp_path / "r")]):
        res = runner.invoke(app, args)
        text = " ".join(res.output.split())
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert "damaged" in text and "delete it" in text and "another process" not in text and "lock" not in text
    with pytest.raises(FeatxError, match="damaged"):
        load_features(out)


def test_a_store_of_the_previous_schema_is_refused_with_the_fix(cnmc_tree, reference, tmp_path):
    out = tmp_path / "s.h5"
    shutil.copy(reference, out)
    with h5py.File(out, "r+") as h5:
        h5.attrs["schema_version"] = 1
    with pytest.raises(FeatxError, match=r"schema version 1.*delete the file"):
        extract(cnmc_tree, out, workers=0, **ARGS)


# -- bad images and folders ------------------------------------------------------------------------------------
@pytest.fixture
def data_copy(cnmc_tree, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(cnmc_tree, root)
    return root


@pytest.mark.slow
def test_bad_images_are_skipped_recorded_and_left_out_by_default(data_copy, tmp_path):
    bad = sorted((data_copy / "C-NMC_training_data" / "fold_1" / "hem").glob("*.bmp"))[:2]
    good = [b.read_bytes() for b in bad]
    for b in bad:
        b.write_bytes(b"not a bitmap")
    out = tmp_path / "s.h5"
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "warning: 2 image(s) could not be read and were skipped" in text and bad[0].name in text
    s = summarize(out)
    assert s["errors"] == 2 and s["done"] == s["samples"] - 2 and s["unfinished"] == 0
    assert {f["path"].rsplit("/", 1)[-1] for f in s["failed"]} == {b.name for b in bad}
    features = load_features(out, labelled=None)  # failed rows do not make the store partial, nor are returned
    assert len(features) == s["samples"] - 2 and features.partial is None and features.excluded == 2
    assert not any(p.endswith(tuple(b.name for b in bad)) for p in features.paths)
    res = runner.invoke(app, ["classify", str(out), "--head", "knn", "--folds", "3", "--no-plots",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "2 unreadable image(s) left out" in " ".join(res.output.split())
    row, = json.loads((tmp_path / "r" / "results.json").read_text())
    assert row["excluded_images"] == 2 and row.get("partial") is None
    assert "2 unreadable image(s) left out" in (tmp_path / "r" / "results.md").read_text()
    # --strict: the readable rows are written, then one line and a non-zero exit
    strict = tmp_path / "strict.h5"
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--strict", "--out",
                              str(strict)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert "--strict" in res.output and bad[0].name in " ".join(res.output.split())
    assert summarize(strict)["done"] == s["samples"] - 2
    # the user fixes the files; the same command retries just those rows
    for b, content in zip(bad, good):
        b.write_bytes(content)
    seen = []
    extract(data_copy, out, workers=0, on_progress=lambda done, total: seen.append(done), **ARGS)
    assert seen == [s["samples"] - 2, s["samples"]] and summarize(out)["errors"] == 0
    assert load_features(out).excluded == 0


def test_16_bit_and_float_images_are_scaled_by_their_range(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 64), (16, 1)).round().astype(np.uint16)
    png = tmp_path / "deep.png"
    Image.fromarray(ramp).save(png)
    assert Image.open(png).mode.startswith("I")
    rgb = np.asarray(load_image(png))
    assert rgb.shape == (16, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert (rgb == 255).mean() < 0.05  # clipping at 255 made 99.6% of such an image white
    np.testing.assert_allclose(rgb[0, :, 0], np.linspace(0, 255, 64), atol=1)
    tif = tmp_path / "float.tif"
    Image.fromarray(np.tile(np.linspace(-1.0, 1.0, 32, dtype=np.float32), (8, 1)), mode="F").save(tif)
    rgb = np.asarray(load_image(tif))
    assert rgb.min() == 0 and rgb.max() == 255
    np.testing.assert_allclose(rgb[0, :, 1], np.linspace(0, 255, 32), atol=1)
    eight = tmp_path / "eight.png"
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(eight)
    assert (np.asarray(load_image(eight)) == 200).all()  # 8-bit images are left as they are


def _deny(monkeypatch, denied: Path, *, enter: bool) -> None:
    """Simulate chmod (root ignores permissions): ``denied`` cannot be listed (``enter`` False) or its
    entries cannot be opened (``enter`` True: listed but not entered)."""
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path="."):
        if not enter and Path(os.fsdecode(path)) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    def stat(path, *args, **kwargs):
        if enter and isinstance(path, (str, bytes, os.PathLike)) and Path(os.fsdecode(path)).parent == denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)


@pytest.mark.parametrize("enter", [False, True])
@pytest.mark.slow
def test_unreadable_folders_are_reported_by_name(data_copy, tmp_path, monkeypatch, enter):
    denied = data_copy / "C-NMC_training_data" / "fold_2" / "hem"
    hidden = {p.relative_to(data_copy).as_posix() for p in denied.glob("*.bmp")}
    everything = discover(data_copy)
    _deny(monkeypatch, denied, enter=enter)
    collection = discover(data_copy)
    assert collection.unreadable_folders == [str(denied)]
    assert {s.path for s in collection.samples} == {s.path for s in everything.samples} - hidden
    out = tmp_path / "s.h5"
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert f"warning: could not read folder(s) {denied}" in text
    assert summarize(out)["unreadable_folders"] == [str(denied)]
    strict = tmp_path / "strict.h5"
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--strict", "--out",
                              str(strict)])
    assert res.exit_code == 1 and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert str(denied) in " ".join(res.output.split()) and not strict.exists()


def test_a_data_root_that_cannot_be_read_is_one_line(data_copy, monkeypatch):
    _deny(monkeypatch, data_copy, enter=False)
    with pytest.raises(FeatxError, match=f"cannot read data folder {data_copy}"):
        discover(data_copy)


# -- unfinished stores -----------------------------------------------------------------------------------------
@pytest.fixture
def partial_store(cnmc_tree, tmp_path) -> Path:
    out = tmp_path / "partial.h5"

    def stop(done, total):
        if done >= 24:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(cnmc_tree, out, workers=0, on_progress=stop, **ARGS)
    return out


@pytest.mark.slow
def test_fusing_an_unfinished_store_uses_the_rows_both_have(partial_store, reference):
    done = summarize(partial_store)["done"]
    n = summarize(partial_store)["samples"]
    with pytest.raises(FeatxError, match="allow_partial=True"):
        load_features([reference, partial_store], "fc")
    fused = load_features([reference, partial_store], "fc", allow_partial=True)
    alone = load_features(reference, "fc")
    assert len(fused) == done and fused.partial == f"{done} of {n} rows" and fused.X.shape[1] == 2 * 128
    np.testing.assert_array_equal(fused.paths, alone.paths[:done])
    np.testing.assert_allclose(fused.X[:, 128:], alone.X[:done], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_an_unfinished_store_is_refused_unless_allow_partial(partial_store, tmp_path, wide_console):
    n = summarize(partial_store)["samples"]
    done = summarize(partial_store)["done"]
    assert 0 < done < n
    with pytest.raises(FeatxError, match=f"{done} of {n} rows extracted; finish it by running the same "
                                         r"`featx.extract\(...\)` again, or pass allow_partial=True"):
        load_features(partial_store)
    fs = load_features(partial_store, allow_partial=True)
    assert len(fs) == done and fs.partial == f"{done} of {n} rows"
    res = runner.invoke(app, ["classify", str(partial_store), "--head", "knn", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "--allow-partial" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
    res = runner.invoke(app, ["classify", str(partial_store), "--head", "knn", "--folds", "3", "--no-plots",
                              "--allow-partial", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert f"PARTIAL ({done} of {n} rows)" in " ".join(res.output.split())
    row, = json.loads((tmp_path / "r" / "results.json").read_text())
    assert row["partial"] == f"{done} of {n} rows"
    assert f"{done} of {n} rows" in (tmp_path / "r" / "results.csv").read_text().splitlines()[1]
    assert "PARTIAL" in (tmp_path / "r" / "results.md").read_text()
    res = runner.invoke(app, ["compare", str(partial_store), "--heads", "knn,logistic", "--folds", "3",
                              "--no-plots", "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "--allow-partial" in res.output
    res = runner.invoke(app, ["compare", str(partial_store), "--heads", "knn,logistic", "--folds", "3",
                              "--no-plots", "--allow-partial", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "c" / "results.json").read_text())
    assert len(rows) == 2 and all(r["partial"] == f"{done} of {n} rows" for r in rows)


# -- images changed since they were extracted (issue 24 item 2) ------------------------------------------------
def _replace_keeping_times(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` and put its times back, as `cp -p`, rsync -t or tar do: only ctime moves."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.slow
def test_images_replaced_under_their_names_are_recomputed_when_the_extraction_resumes(data_copy, tmp_path,
                                                                                      monkeypatch):
    # the copy was made a moment ago: record its files' times (data on disk for 2 s or more gets them anyway)
    monkeypatch.setattr(file_content, "RACY_NS", 0)
    reads = []
    real_file_id = file_content.file_id
    monkeypatch.setattr(file_content, "file_id", lambda path: reads.append(Path(path).name) or real_file_id(path))
    out = tmp_path / "s.h5"
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cells = sorted((data_copy / "C-NMC_training_data" / "fold_0").rglob("*.bmp"))
    others = sorted((data_copy / "C-NMC_training_data" / "fold_2").rglob("*.bmp"))
    replaced, touched = cells[:3], cells[3]
    assert all(c.stat().st_size == o.stat().st_size for c, o in zip(replaced, others))  # every cell: 40 px BMP
    for cell, other in zip(replaced[:2], others):
        cell.write_bytes(other.read_bytes())
    _replace_keeping_times(replaced[2], others[2].read_bytes())  # same size and mtime as the file it replaced
    os.utime(touched)  # new times, same content: not recomputed
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    names = [c.relative_to(data_copy).as_posix() for c in replaced]
    assert f"warning: 3 image(s) changed since they were extracted into {out} ({', '.join(names)}): recomputed" \
        in text
    # one stat per finished row; read again: only the four files whose size or times moved
    assert sorted(reads) == sorted(c.name for c in [*replaced, touched])
    fresh = tmp_path / "fresh.h5"
    extract(data_copy, fresh, workers=0, **ARGS)
    assert_same_store(out, fresh)  # features and file records of the new images, as a fresh store has them
    with h5py.File(out) as h5:
        paths = list(h5["samples/path"].asstr()[:])
        files = h5["samples/file"][:]
    for cell in [*replaced, touched]:
        rec = files[paths.index(cell.relative_to(data_copy).as_posix())]
        st = cell.stat()
        assert rec["sha256"].decode() == hashlib.sha256(cell.read_bytes()).hexdigest()
        assert (rec["size"], rec["mtime_ns"], rec["ctime_ns"]) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    # the next run: nothing changed, nothing is read, computed or said
    reads.clear()
    res = runner.invoke(app, ["extract", str(data_copy), *CLI_ARGS, "--workers", "0", "--out", str(out)])
    assert res.exit_code == 0 and "changed since" not in res.output and reads == []
    assert_same_store(out, fresh)


@pytest.mark.slow
def test_a_file_changed_as_it_was_read_is_checked_by_its_content_next_time(data_copy, tmp_path):
    """A file written less than RACY_NS before it was read may change again within the file system's timestamp
    granularity without its times moving: its times are recorded as unknown, so a resume reads it."""
    cell = sorted((data_copy / "C-NMC_training_data" / "fold_0").rglob("*.bmp"))[0]
    other = sorted((data_copy / "C-NMC_training_data" / "fold_2").rglob("*.bmp"))[0]
    out = tmp_path / "s.h5"
    cell.write_bytes(cell.read_bytes())  # just written
    extract(data_copy, out, workers=0, **ARGS)
    rel = cell.relative_to(data_copy).as_posix()
    with h5py.File(out) as h5:
        rec = h5["samples/file"][list(h5["samples/path"].asstr()[:]).index(rel)]
    assert (rec["mtime_ns"], rec["ctime_ns"]) == (0, 0) and rec["size"] == cell.stat().st_size
    before = cell.stat()
    cell.write_bytes(other.read_bytes())
    os.utime(cell, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.warns(FeatxWarning, match=rf"1 image\(s\) changed since they were extracted into .*\({rel}\)"):
        extract(data_copy, out, workers=0, **ARGS)


def test_a_store_of_schema_2_still_loads_and_says_what_it_cannot_check(cnmc_tree, reference, tmp_path):
    """Stores of featx before content ids and metadata checksums: read as before; a resume is refused and says
    why (their rows' images cannot be checked), and verify says it checked their features only."""
    out = tmp_path / "old.h5"
    shutil.copy(reference, out)
    with h5py.File(out, "r+") as h5:
        del h5["samples/file"], h5["samples/meta_checksum"]
        h5.attrs["schema_version"] = 2
    assert len(load_features(out, labelled=None)) == summarize(out)["samples"]
    report = verify(out)
    assert report["bad"] == 0 and not report["metadata_checked"]
    res = runner.invoke(app, ["info", str(out), "--verify"])
    assert res.exit_code == 0 and "matches its checksums (their features: this store's schema is older" in \
        " ".join(res.output.split())
    with pytest.raises(FeatxError, match=r"schema version 2, this featx writes 3 \(rows that record their image "
                                         r"files' content.*the rows of this store cannot be checked\); delete the "
                                         "file to rebuild it"):
        extract(cnmc_tree, out, workers=0, **ARGS)


# -- a flipped byte in a row's metadata (issue 24 item 3) ------------------------------------------------------
def _string_offset(path: Path, name: str, row: int) -> int:
    """Where in the file the characters of ``row`` of the variable-length string dataset ``name`` are: its element
    is (length, global heap collection address, object index); the collection ("GCOL") lists its objects."""
    with h5py.File(path, "r") as h5:
        base = h5[name].id.get_offset()
    with open(path, "rb") as fh:
        fh.seek(base + 16 * row)
        length, collection, index = struct.unpack("<IQI", fh.read(16))
        fh.seek(collection)
        assert fh.read(4) == b"GCOL"
        at = collection + 16
        while True:
            fh.seek(at)
            number, _refs, _reserved, size = struct.unpack("<HHIQ", fh.read(16))
            if number == index:
                assert size == length
                return at + 16
            at += 16 + (size + 7) // 8 * 8


def _flip(path: Path, offset: int, bits: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ bits]))


@pytest.mark.parametrize("field, bits", [("label", 0x01), ("path", 0x01), ("path", 0x80), ("subject", 0x01),
                                         ("split", 0x02)], ids=["label", "path", "path-not-utf8", "subject", "split"])
def test_a_flipped_byte_in_a_rows_label_path_subject_or_split_is_caught(cnmc_tree, reference, tmp_path, field,
                                                                         bits, wide_console):
    out = tmp_path / "s.h5"
    shutil.copy(reference, out)
    row = 5  # a labelled training image
    with h5py.File(out) as h5:
        s = h5["samples"]
        before = s[field][:]
        # the meta checksum as its description says, followed by hand on the plain h5py values of the row
        text = "\0".join(s[k].asstr()[row] for k in ("path", "subject", "split")).encode()
        head = row.to_bytes(8, "little") + int(s["label"][row]).to_bytes(8, "little", signed=True)
        assert int(s["meta_checksum"][row]) == 2**32 + zlib.crc32(text, zlib.crc32(head))
        label_at = s["label"].id.get_offset() + 8 * row  # int64, little-endian: the low byte first
    assert before[row] in (0, 1) if field == "label" else True
    _flip(out, label_at if field == "label" else _string_offset(out, f"samples/{field}", row), bits)
    with h5py.File(out) as h5:  # the flip changed this row's value, and only it; h5py reads the file as usual
        after = h5["samples"][field][:]
        assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [row]
        name = h5["samples/path"].asstr(errors="replace")[row]
    message = (f"{out}: the label, path, subject or split of 1 row(s) do not match their checksums (first: row "
               f"{row}, {name}); the store is damaged: delete it and run the same `featx extract` again")
    res = runner.invoke(app, ["info", str(out), "--verify"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1] == f"error: {message}"
    report = verify(out)
    assert report["bad"] == 0 and report["bad_metadata"] == 1
    assert report["bad_metadata_rows"] == [{"row": row, "path": name}]
    with pytest.raises(FeatxError) as err:
        load_features(out, labelled=None)
    assert str(err.value) == message.replace("`featx extract`", "`featx.extract(...)`")
    assert err.value.render(flag) == message
    res = runner.invoke(app, ["classify", str(out), "--head", "knn", "--out", str(tmp_path / "r"), "--no-plots"])
    assert res.exit_code == 1 and "Traceback" not in res.output and f"first: row {row}" in " ".join(res.output.split())
    assert not (tmp_path / "r" / "results.json").exists()
    with pytest.raises(FeatxError, match=rf"do not match their checksums \(first: row {row}, "):
        extract(cnmc_tree, out, workers=0, **ARGS)
