"""Data sets on disk: which images, with which label, subject and split (torch-free).

``import featx.data`` never imports torch: it lists files. Turning images into tensors lives in
:mod:`featx.data.images` (``load_image``, ``make_transform``, ``ImageDataset``); the synthetic C-NMC
generator in :mod:`featx.data.synth`.
"""
from featx.data.cnmc import (
    CNMC_FINAL,
    CNMC_PRELIM,
    CNMC_PRELIM_LABELS,
    CNMC_TRAIN,
    KAGGLE_PARTS,
    KAGGLE_ROOT,
    parse_cnmc_name,
)
from featx.data.collection import SPLIT_ORDER, Collection, Sample, natural_key
from featx.data.layouts import LAYOUTS_HELP, MANIFEST_HEADER, discover
from featx.data.listing import IMAGE_EXTENSIONS

__all__ = [
    "CNMC_FINAL", "CNMC_PRELIM", "CNMC_PRELIM_LABELS", "CNMC_TRAIN", "IMAGE_EXTENSIONS", "KAGGLE_PARTS",
    "KAGGLE_ROOT", "LAYOUTS_HELP", "MANIFEST_HEADER", "SPLIT_ORDER", "Collection", "Sample", "discover",
    "natural_key", "parse_cnmc_name",
]
