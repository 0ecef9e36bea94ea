"""Shared fixtures, made once per session. `cnmc_tree`, `cnn_store` and the stores of `cnn_stores` are read-only by
contract: copy one (shutil.copy / copytree into tmp_path) before changing anything in it, resuming an extraction
into it included; the stores are checked unchanged at the end of the session."""
from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from featx.data.synth import synthesize
from featx.extract import extract

CNMC_TREE_SETTINGS = dict(subjects_all=3, subjects_hem=3, cells_per_subject=4, prelim_subjects_all=1,
                          prelim_subjects_hem=1, prelim_cells_per_subject=3, final_cells=4,
                          image_size=40, seed=0)


@pytest.fixture(scope="session", autouse=True)
def featx_cache_dir(tmp_path_factory):
    """featx's own cache (the `featx backbones` catalogue) in a folder of the session, not the user's."""
    before = os.environ.get("FEATX_CACHE_DIR")
    os.environ["FEATX_CACHE_DIR"] = str(tmp_path_factory.mktemp("featx-cache"))
    yield
    if before is None:
        os.environ.pop("FEATX_CACHE_DIR", None)
    else:
        os.environ["FEATX_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def cnmc_tree(tmp_path_factory) -> Path:
    """A tiny C-NMC-like tree in the original (TCIA) layout; returns its root.

    3 ALL + 3 HEM training subjects (one of each class per fold) x 4 cells = 24 training images,
    6 preliminary-phase images (2 subjects, labels CSV), 4 unlabelled final-phase images; 40x40 px.
    """
    root = tmp_path_factory.mktemp("cnmc") / "cnmc"
    synthesize(root, **CNMC_TREE_SETTINGS)
    return root


@pytest.fixture(scope="session")
def cnmc_tree_settings() -> dict:
    """The synthesize() keyword arguments `cnmc_tree` was made with."""
    return dict(CNMC_TREE_SETTINGS)

# the cnn stores of `cnn_stores`: 32 px, several batches; features do not depend on batch size or workers
CNN_STORE_SETTINGS = dict(backbone="cnn", weights="none", image_size=32, batch_size=8, workers=0, device="cpu")


@pytest.fixture(scope="session")
def cnn_stores(cnmc_tree, tmp_path_factory) -> Callable[[int], Path]:
    """``cnn_stores(seed)``: the cnn store (CNN_STORE_SETTINGS, random weights of ``seed``) of `cnmc_tree`,
    extracted on first use; ``cnn.h5`` for seed 0, ``cnn-seed<N>.h5`` beside it for the others. Read-only: a test
    that changes a store copies it first (a copy renamed a.h5 also gives another row name)."""
    folder = tmp_path_factory.mktemp("cnn_stores")
    made: dict[int, tuple[Path, str]] = {}

    def store(seed: int = 0) -> Path:
        if seed not in made:
            path = extract(cnmc_tree, folder / ("cnn.h5" if seed == 0 else f"cnn-seed{seed}.h5"), seed=seed,
                           **CNN_STORE_SETTINGS)
            made[seed] = (path, _sha256(path))
        return made[seed][0]

    yield store
    changed = [path.name for path, digest in made.values() if _sha256(path) != digest]
    assert not changed, f"a test changed the shared store(s) {changed}: copy a shared store before changing it"


@pytest.fixture(scope="session")
def cnn_store(cnn_stores) -> Path:
    """The cnn store (32 px, seed 0) of `cnmc_tree`, ``cnn.h5``: 24 training + 6 prelim + 4 final rows, taps pool5
    and fc. Read-only (see `cnn_stores`)."""
    return cnn_stores(0)


@pytest.fixture(scope="session")
def cnn_compare(cnn_store, tmp_path_factory) -> Path:
    """A compare folder of ``cnn_store`` (read-only: copy it before changing it): logistic (a probability) and svm
    (a decision value), subject-grouped 3-fold, with its predictions files."""
    from featx.workflows.classify import run_compare  # deferred: only the tests of results folders need it

    out = tmp_path_factory.mktemp("compare") / "compare"
    run_compare([cnn_store], ["logistic", "svm"], cv="subject", n_folds=3, jobs=1, out=out, plots=False)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small fits run faster on one thread (and do not fight other jobs on a 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def wide_console(monkeypatch):
    """Tables one line per row: the CLI's console is created at import, so CliRunner's env cannot widen it."""
    from featx.cli.app import console

    monkeypatch.setattr(console, "_width", 250)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into: a read-only tmpfs as root (root ignores permission bits), else chmod."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
