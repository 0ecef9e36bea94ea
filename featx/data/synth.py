"""C-NMC-like demo data: the original (TCIA) C-NMC 2019 folder layout, filled with synthetic cells.

The cells are drawn so that the known pitfall of the real data set shows up: every subject (patient)
has its own stain tint, strong and consistent across its cells, so a classifier evaluated with an
image-level split partly recognises the subject instead of the cell, and scores higher than with a
split grouped by subject. The class signal itself is morphological: by default ALL (leukemic) cells are larger
with irregular, lobed nuclei, HEM (normal) cells smaller and rounder, with overlap between the two; with
``class_signal="nucleus"`` the classes differ only inside the nucleus. The cells are drawn in
:mod:`featx.data.synth_cells`.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from featx import csvfiles
from featx.data.cnmc import CNMC_FINAL, CNMC_PRELIM, CNMC_PRELIM_LABELS, CNMC_TRAIN
from featx.data.masks import MASKS, mask_path
from featx.data.synth_cells import SIGNALS, draw_cell, subject_stain
from featx.errors import FeatxError, arg

FOLDS = ("fold_0", "fold_1", "fold_2")



def synthesize(
    out: str | Path,
    *,
    subjects_all: int = 30,
    subjects_hem: int = 15,
    cells_per_subject: int = 4,
    prelim_subjects_all: int = 3,
    prelim_subjects_hem: int = 3,
    prelim_cells_per_subject: int = 5,
    final_cells: int = 20,
    image_size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    masks: bool = False,
    class_signal: str = "cell",
) -> dict:
    """Write a deterministic C-NMC-2019-like data set under ``out`` (the original TCIA layout).

    Layout written (exactly as the real release)::

        OUT/C-NMC_training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>.bmp
        OUT/C-NMC_test_prelim_phase_data/C-NMC_test_prelim_phase_data/{1..N}.bmp
        OUT/C-NMC_test_prelim_phase_data/C-NMC_test_prelim_phase_data_labels.csv
            (header ``Patient_ID,new_names,labels``; 1 = ALL, 0 = HEM)
        OUT/C-NMC_test_final_phase_data/C-NMC_test_final_phase_data/{1..M}.bmp   (unlabelled)

    The defaults are sized for the statistics, not for realism: 30 ALL + 15 HEM training subjects (about two
    thirds ALL, as in C-NMC) put at least 3 subjects of each class in every test fold of subject-grouped
    5-fold CV, and the preliminary phase holds 3 subjects of each class; few cells per subject (4) and small
    images (64 px) keep the data, and the demo on it, quick (180 training, 30 prelim and 20 final images).

    Options:
        subjects_all, subjects_hem: training subjects per class (ALL ids are numbers like ``11``; HEM ids
            look like ``H10``, one of them written lower-case, ``h<n>``, as in the real data). Each subject
            lives in exactly one fold.
        cells_per_subject: cells per training subject.
        prelim_subjects_all, prelim_subjects_hem, prelim_cells_per_subject: the preliminary test phase;
            its subjects are distinct from the training subjects.
        final_cells: images in the unlabelled final phase (from one new ALL and one new HEM subject).
        image_size: side of the square RGB images in pixels (the real ones are 450).
        seed: same seed, same settings -> byte-identical files.
        overwrite: replace C-NMC folders already present in ``out`` (refused otherwise).
        masks: also write each cell's nucleus mask (8-bit PNG, 255 inside the nucleus, 0 outside) under
            ``OUT/C-NMC_nucleus_masks/``, at the image's relative path with ``.png`` (for example
            ``C-NMC_nucleus_masks/C-NMC_test_prelim_phase_data/C-NMC_test_prelim_phase_data/1.png``); featx's
            C-NMC reader ignores that folder, and :func:`featx.data.masks.nucleus_mask` reads it. The images are
            byte-identical with and without masks.
        class_signal: where the classes differ. ``"cell"`` (default): ALL cells are larger (radius about 0.36 of
            the side against 0.26) with lobed nuclei, HEM cells smaller and rounder; a network can tell them by
            the cell's size, so what it looks at need not be the nucleus. ``"nucleus"``: both classes draw the
            cell (size, outline, cytoplasm, nucleus size and position) from one distribution and differ only
            inside the nucleus: ALL nuclei are lobed, rough, pale and coarsely clumped, HEM nuclei round, smooth
            and evenly dark; the stain tints stay the subject's. For checking that a network's class-activation
            maps lie in the nucleus (with ``masks``). The default's files are the same for every seed as before
            this option existed.

    Returns a summary: ``root``, ``image_size``, ``seed``, ``class_signal``, ``counts`` (per split and class),
    ``subjects`` (per split) and ``total`` (and ``masks``, the mask folder, with ``masks``).
    """
    _check_int("subjects_all", subjects_all, 1)
    _check_int("subjects_hem", subjects_hem, 1)
    _check_int("cells_per_subject", cells_per_subject, 1)
    _check_int("prelim_subjects_all", prelim_subjects_all, 0)
    _check_int("prelim_subjects_hem", prelim_subjects_hem, 0)
    _check_int("prelim_cells_per_subject", prelim_cells_per_subject, 1)
    _check_int("final_cells", final_cells, 0)
    _check_int("image_size", image_size, 16)
    if class_signal not in SIGNALS:
        raise FeatxError(f"synth setting {arg('class_signal', class_signal)} is not a class signal; "
                         f"choose {' or '.join(SIGNALS)}")
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FeatxError(f"synth output {out} is a file; give a folder")
    present = [name for name in (CNMC_TRAIN, CNMC_PRELIM, CNMC_FINAL, MASKS) if (out / name).exists()]
    if present:
        if not overwrite:
            raise FeatxError(f"{out} already holds {', '.join(present)}; choose an empty folder "
                             f"or pass {arg('overwrite', True)} to replace them")
        for name in present:
            shutil.rmtree(out / name)

    rng = np.random.default_rng(seed)
    save = _Saver(out, masks)
    n_final_all = (final_cells + 1) // 2
    n_final_hem = final_cells - n_final_all
    all_ids = _draw_ids(rng, subjects_all + prelim_subjects_all + (1 if n_final_all else 0))
    hem_ids = [f"H{n}" for n in _draw_ids(rng, subjects_hem + prelim_subjects_hem + (1 if n_final_hem else 0))]
    hem_ids[0] = hem_ids[0].lower()  # the real release has one subject written `h3`
    all_ids = [str(n) for n in all_ids]

    summary: dict = {"root": str(out), "image_size": image_size, "seed": seed, "class_signal": class_signal,
                     "counts": {}, "subjects": {}}

    # Training folds: shuffle each class's subjects, deal them round-robin onto the three folds.
    train_all, train_hem = all_ids[:subjects_all], hem_ids[:subjects_hem]
    fold_of: dict[str, str] = {}
    for ids in (train_all, train_hem):
        order = rng.permutation(len(ids))
        start = int(rng.integers(3))
        for k, j in enumerate(order):
            fold_of[ids[j]] = FOLDS[(start + k) % 3]
    for fold in FOLDS:
        for cls in ("all", "hem"):
            (out / CNMC_TRAIN / fold / cls).mkdir(parents=True, exist_ok=True)
        summary["counts"][fold] = {"all": 0, "hem": 0}
        summary["subjects"][fold] = []
    for cls, ids in (("all", train_all), ("hem", train_hem)):
        for subject in ids:
            fold = fold_of[subject]
            stain = subject_stain(rng)
            for name in _cell_names(rng, subject, cls, cells_per_subject):
                save(draw_cell(rng, cls, stain, image_size, class_signal), Path(CNMC_TRAIN, fold, cls, name))
            summary["counts"][fold][cls] += cells_per_subject
            summary["subjects"][fold].append(subject)

    # Preliminary test phase: new subjects, numbered images in shuffled order, labels CSV.
    prelim_cells = []  # (original name, class, image array)
    prelim_subjects = ([(s, "all") for s in all_ids[subjects_all:subjects_all + prelim_subjects_all]]
                       + [(s, "hem") for s in hem_ids[subjects_hem:subjects_hem + prelim_subjects_hem]])
    for subject, cls in prelim_subjects:
        stain = subject_stain(rng)
        for name in _cell_names(rng, subject, cls, prelim_cells_per_subject):
            prelim_cells.append((name, cls, draw_cell(rng, cls, stain, image_size, class_signal)))
    prelim_root = out / CNMC_PRELIM
    (prelim_root / CNMC_PRELIM).mkdir(parents=True, exist_ok=True)
    order = rng.permutation(len(prelim_cells))
    rows = []
    for number, j in enumerate(order, start=1):
        name, cls, cell = prelim_cells[j]
        save(cell, Path(CNMC_PRELIM, CNMC_PRELIM, f"{number}.bmp"))
        rows.append((name, f"{number}.bmp", 1 if cls == "all" else 0))
    with open(prelim_root / CNMC_PRELIM_LABELS, "w", newline="", encoding="utf-8") as fh:
        writer = csvfiles.writer(fh, lineterminator="\n")
        writer.writerow(["Patient_ID", "new_names", "labels"])
        writer.writerows(rows)
    summary["counts"]["prelim"] = {"all": sum(1 for r in rows if r[2] == 1),
                                   "hem": sum(1 for r in rows if r[2] == 0)}
    summary["subjects"]["prelim"] = [s for s, _ in prelim_subjects]

    # Final test phase: unlabelled, from one new ALL and one new HEM subject.
    final_dir = out / CNMC_FINAL / CNMC_FINAL
    final_dir.mkdir(parents=True, exist_ok=True)
    final_imgs = []
    final_subjects = []
    for cls, n, ids in (("all", n_final_all, all_ids), ("hem", n_final_hem, hem_ids)):
        if n == 0:
            continue
        stain = subject_stain(rng)
        final_subjects.append(ids[-1])
        final_imgs.extend(draw_cell(rng, cls, stain, image_size, class_signal) for _ in range(n))
    for number, j in enumerate(rng.permutation(len(final_imgs)), start=1):
        save(final_imgs[j], Path(CNMC_FINAL, CNMC_FINAL, f"{number}.bmp"))
    summary["counts"]["final"] = {"unlabelled": len(final_imgs)}
    summary["subjects"]["final"] = final_subjects
    summary["total"] = sum(sum(c.values()) for c in summary["counts"].values())
    if masks:
        summary["masks"] = str(out / MASKS)
    return summary


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise FeatxError(f"synth setting {arg(name, value)} must be an integer >= {minimum}")


def _draw_ids(rng: np.random.Generator, n: int) -> list[int]:
    """n distinct subject numbers, as small as the real ones (1..99 while that suffices)."""
    high = max(100, 3 * n)
    return [int(v) for v in rng.choice(np.arange(1, high), size=n, replace=False)]


def _cell_names(rng: np.random.Generator, subject: str, cls: str, n: int) -> list[str]:
    """n distinct `UID_<subject>_<image>_<cell>_<cls>.bmp` names: 1-3 cells per microscope image."""
    n_images = max(1, math.ceil(n / 2))
    images = np.sort(rng.choice(np.arange(1, max(60, 3 * n_images)), size=n_images, replace=False))
    names = []
    k = 0
    while len(names) < n:
        image = int(images[k % n_images])
        cell = k // n_images + 1
        names.append(f"UID_{subject}_{image}_{cell}_{cls}.bmp")
        k += 1
    return names


class _Saver:
    """Writes a cell's image at its path under ``out`` (BMP) and, with ``masks``, its nucleus mask (PNG) at the
    same relative path under ``out/C-NMC_nucleus_masks``."""

    def __init__(self, out: Path, masks: bool):
        self.out, self.masks = out, bool(masks)

    def __call__(self, cell: tuple[np.ndarray, np.ndarray], relative: Path) -> None:
        img, nucleus = cell
        Image.fromarray(img).save(self.out / relative, format="BMP")
        if self.masks:
            path = mask_path(self.out, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(nucleus, 255, 0).astype(np.uint8)).save(path, format="PNG")
