"""Shared fixtures. `cnmc_tree` is read-only: copy it before changing anything in it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from featx.data.synth import synthesize

CNMC_TREE_SETTINGS = dict(subjects_all=3, subjects_hem=3, cells_per_subject=4, prelim_subjects_all=1,
                          prelim_subjects_hem=1, prelim_cells_per_subject=3, final_cells=4,
                          image_size=40, seed=0)


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
