"""Find the images of a data set, with label, subject and split, and turn them into tensors.

`discover(root)` recognises, from the root alone:

- ``cnmc``: the original (TCIA) C-NMC 2019 release: ``C-NMC_training_data/fold_{0,1,2}/{all,hem}``,
  ``C-NMC_test_prelim_phase_data/`` (images ``1..N.bmp`` and the labels CSV that restores each image's
  subject and class), ``C-NMC_test_final_phase_data/`` (unlabelled). The root may be the folder holding
  these, or one of them.
- ``cnmc-kaggle``: the Kaggle mirror ``C-NMC_Leukemia/{training_data,validation_data,testing_data}``
  (the root may be the folder holding ``C-NMC_Leukemia`` or ``C-NMC_Leukemia`` itself).
- ``folders``: ``ROOT/<class>/**/<image>``; images directly in ROOT are unlabelled.
- ``manifest``: a CSV file ``path,label[,subject][,split]``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from featx.errors import FeatxError

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

CNMC_TRAIN = "C-NMC_training_data"
CNMC_PRELIM = "C-NMC_test_prelim_phase_data"
CNMC_FINAL = "C-NMC_test_final_phase_data"
KAGGLE_ROOT = "C-NMC_Leukemia"
KAGGLE_PARTS = {"training_data": "train", "validation_data": "prelim", "testing_data": "final"}
SPLIT_ORDER = ("fold_0", "fold_1", "fold_2", "prelim", "final")
MANIFEST_HEADER = "path,label[,subject][,split]"

LAYOUTS_HELP = (
    "C-NMC 2019 (C-NMC_training_data/fold_*/{all,hem}, C-NMC_test_prelim_phase_data, "
    "C-NMC_test_final_phase_data), its Kaggle mirror (C-NMC_Leukemia/training_data/fold_*/{all,hem}, "
    "validation_data, testing_data), class folders (ROOT/<class>/*" + "|".join(IMAGE_EXTENSIONS) + ") "
    f"or a CSV manifest ({MANIFEST_HEADER})"
)

_CNMC_NAME = re.compile(r"^UID_([A-Za-z0-9]+)_(\d+)_(\d+)_(all|hem)\.[A-Za-z]+$", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One image: where it is (relative to the collection root) and what is known about it."""

    path: str            # POSIX path relative to Collection.root
    label: str | None    # lower-case class name; None = unlabelled
    subject: str | None  # upper-cased subject id; None when unknown
    split: str | None    # fold_0, fold_1, fold_2, prelim, final, a manifest's value, or None


@dataclass
class Collection:
    """The samples of one data set, in a deterministic order, and the layout they were read from."""

    root: Path
    layout: str
    samples: list[Sample]
    classes: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)  # folders discovery could not list or enter

    def __len__(self) -> int:
        return len(self.samples)

    def abspath(self, sample_or_index: Sample | int) -> Path:
        """Absolute path of a sample (given as a Sample or an index into `samples`)."""
        sample = self.samples[sample_or_index] if isinstance(sample_or_index, int) else sample_or_index
        return self.root / sample.path

    def fingerprint(self) -> str:
        """sha256 hex digest of the (path, label, subject, split) rows, in order."""
        digest = hashlib.sha256()
        for s in self.samples:
            row = "\t".join(v if v is not None else "" for v in (s.path, s.label, s.subject, s.split))
            digest.update(row.encode("utf-8") + b"\n")
        return digest.hexdigest()

    @property
    def subjects_known(self) -> bool:
        """True when there are labelled samples and every one of them has a subject."""
        labelled = [s for s in self.samples if s.label is not None]
        return bool(labelled) and all(s.subject for s in labelled)

    @property
    def splits(self) -> list[str]:
        """The splits present, in the canonical order (None is left out)."""
        return sorted({s.split for s in self.samples if s.split is not None}, key=_split_key)

    def subset(self, indices: Sequence[int]) -> "Collection":
        """A collection of some samples (same root, layout and classes, so label indices still match)."""
        return Collection(self.root, self.layout, [self.samples[int(i)] for i in indices], list(self.classes),
                          list(self.unreadable_folders))


def parse_cnmc_name(name: str) -> tuple[str, str] | None:
    """Subject (upper-cased) and class of a C-NMC file name, or None when the name is not one.

    ``UID_11_10_1_all.bmp`` -> ("11", "all"); ``UID_h3_1_2_hem.bmp`` -> ("H3", "hem").
    """
    match = _CNMC_NAME.match(os.path.basename(str(name)).strip())
    if match is None:
        return None
    return match.group(1).upper(), match.group(4).lower()


def discover(source: str | Path, splits: Sequence[str] | str | None = None) -> Collection:
    """Read a data set's samples from a folder (any known layout) or a CSV manifest.

    ``splits`` keeps only those splits (a list, or a comma-separated string; ``train`` stands for every
    ``fold_*`` split when no split is literally called so). Raises FeatxError for a missing path, a folder
    without images, a malformed manifest or an absent split.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FeatxError(f"data path {path} does not exist; give a folder of images or a CSV manifest")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise FeatxError(f"{path} is neither a folder nor a .csv manifest; featx reads {LAYOUTS_HELP}")
        collection = _read_manifest(path)
    else:
        collection = _discover_folder(path)
    if splits is not None:
        collection = _filter_splits(collection, splits)
    return collection


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, fully decoded; FeatxError naming the file when it cannot be read.

    16-bit, 32-bit integer and float images are scaled to 8 bits by their own range (minimum -> 0,
    maximum -> 255), not clipped at 255.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except Image.UnidentifiedImageError:
        raise FeatxError(f"cannot read image {path}: not an image file (or a format PIL does not know)") from None
    except Exception as exc:  # PIL raises several types for broken files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeatxError(f"cannot read image {path}: {reason}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """A PIL image as 8-bit RGB; high-bit-depth and float modes (I;16*, I, F) are scaled by their range."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)
        lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
        a = np.where(finite, a, lo)
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


class RandomRotate90:
    """Rotate a PIL image by a random multiple of 90 degrees."""

    def __call__(self, img: Image.Image) -> Image.Image:
        k = int(torch.randint(0, 4, ()).item())
        if k == 0:
            return img
        return img.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                              Image.Transpose.ROTATE_270)[k - 1])

    def __repr__(self) -> str:
        return "RandomRotate90()"


def make_transform(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                   augment: bool = False, color_jitter: bool = False):
    """PIL image -> normalised float tensor (3, image_size, image_size).

    Evaluation: Resize((s, s)) -> ToTensor -> Normalize(mean, std). ``augment`` adds horizontal and
    vertical flips, random 90-degree rotations and a small affine jitter (and ColorJitter when
    ``color_jitter``) before the tensor conversion.
    """
    from torchvision import transforms as T

    if int(image_size) < 1:
        raise FeatxError(f"image size {image_size} must be a positive number of pixels")
    steps = [T.Resize((int(image_size), int(image_size)), antialias=True)]
    if augment:
        steps += [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), RandomRotate90(),
                  T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05))]
        if color_jitter:
            steps.append(T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02))
    steps += [T.ToTensor(), T.Normalize(list(map(float, mean)), list(map(float, std)))]
    return T.Compose(steps)


class ImageDataset(torch.utils.data.Dataset):
    """Items are (image tensor, index into collection.samples, error message or "").

    An unreadable image gives a zero tensor of the usual shape and a one-line message naming the file,
    so that a long extraction records it and goes on.
    """

    def __init__(self, collection: Collection, transform, indices: Sequence[int] | None = None):
        self.collection = collection
        self.transform = transform
        self.indices = list(range(len(collection.samples))) if indices is None else [int(i) for i in indices]
        self._blank_shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        index = self.indices[i]
        path = self.collection.abspath(index)
        try:
            tensor = self.transform(load_image(path))
        except FeatxError as exc:
            return self._blank(), index, str(exc)
        except Exception as exc:  # a transform failing on an odd image
            return self._blank(), index, f"cannot transform image {path}: {exc}".splitlines()[0]
        return tensor, index, ""

    def _blank(self) -> torch.Tensor:
        if self._blank_shape is None:
            self._blank_shape = tuple(self.transform(Image.new("RGB", (8, 8))).shape)
        return torch.zeros(self._blank_shape)


# ----------------------------------------------------------------------------------------------------
# ordering


def natural_key(text: str) -> tuple:
    """Sort key that puts 2.bmp before 10.bmp."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p), text


def _split_key(split: str | None) -> tuple:
    if split is None:
        return (2, ())
    if split in SPLIT_ORDER:
        return (0, SPLIT_ORDER.index(split))
    return (1, natural_key(split))


def _sample_key(sample: Sample) -> tuple:
    return _split_key(sample.split), natural_key(sample.path)


def _make_collection(root: Path, layout: str, samples: list[Sample], unreadable: Sequence[str] = ()) -> Collection:
    samples = sorted(samples, key=_sample_key)
    classes = sorted({s.label for s in samples if s.label is not None})
    return Collection(root=root, layout=layout, samples=samples, classes=classes,
                      unreadable_folders=sorted(set(unreadable), key=natural_key))


def _filter_splits(collection: Collection, splits: Sequence[str] | str) -> Collection:
    if isinstance(splits, str):
        splits = [s for s in splits.split(",")]
    wanted = [s.strip() for s in splits if s and s.strip()]
    available = collection.splits
    keep: set[str] = set()
    for name in wanted:
        if name in available:
            keep.add(name)
        elif name == "train" and any(s.startswith("fold_") for s in available):
            keep.update(s for s in available if s.startswith("fold_"))
        else:
            shown = ", ".join(available) if available else "none (this data set has no splits)"
            raise FeatxError(f"split {name!r} is not in {collection.root}; available splits: {shown}")
    if not keep:
        raise FeatxError(f"no split given; available splits: {', '.join(available) or 'none'}")
    samples = [s for s in collection.samples if s.split in keep]
    return Collection(collection.root, collection.layout, samples, list(collection.classes),
                      list(collection.unreadable_folders))


# ----------------------------------------------------------------------------------------------------
# folder layouts


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(folder: Path, unreadable: list[str] | None = None) -> list[Path]:
    """Image files below a folder (recursively), skipping hidden files and folders. Folders that cannot be
    listed or entered are appended to ``unreadable`` (and skipped)."""
    unreadable = [] if unreadable is None else unreadable
    found = []

    def cannot_list(exc: OSError) -> None:
        unreadable.append(str(exc.filename or folder))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=cannot_list):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if not _is_image(p):
                continue
            try:
                if p.is_file():
                    found.append(p)
            except OSError:  # listed but not entered (read without execute permission)
                unreadable.append(dirpath)
                dirnames[:] = []
                break
    return found


def _is_dir(path: Path, unreadable: list[str]) -> bool:
    """``path.is_dir()``, recording its parent when that cannot be entered."""
    try:
        return path.is_dir()
    except OSError:
        unreadable.append(str(path.parent))
        return False


def _subdirs(folder: Path, unreadable: list[str]) -> list[Path]:
    """Visible subfolders of ``folder``, or [] (and ``folder`` recorded) when it cannot be listed or entered."""
    try:
        return [d for d in folder.iterdir() if not d.name.startswith(".") and d.is_dir()]
    except OSError:
        unreadable.append(str(folder))
        return []


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _discover_folder(root: Path) -> Collection:
    try:
        os.scandir(root).close()
        root.joinpath(".").stat()  # can it be entered, not only listed
    except OSError as exc:
        raise FeatxError(f"cannot read data folder {root} ({exc.strerror or type(exc).__name__}); make it "
                         "readable (list and enter) or point to another folder") from None
    unreadable: list[str] = []
    cnmc = _cnmc_parts(root, unreadable)
    if cnmc is not None:
        layout, parts = cnmc
        samples: list[Sample] = []
        if "train" in parts:
            samples += _cnmc_train(root, parts["train"], unreadable)
        if "prelim" in parts:
            samples += _cnmc_prelim(root, parts["prelim"], unreadable)
        if "final" in parts:
            samples += [Sample(_rel(p, root), None, None, "final") for p in _images_under(parts["final"], unreadable)]
        if not samples:
            raise FeatxError(f"no images found in {root} (a {layout} layout){_unread_note(unreadable)}; "
                             f"featx reads {LAYOUTS_HELP}")
        return _make_collection(root, layout, samples, unreadable)
    samples = []
    for p in _images_under(root, unreadable):
        rel = p.relative_to(root)
        parsed = parse_cnmc_name(p.name)
        label = rel.parts[0].lower() if len(rel.parts) > 1 else None
        samples.append(Sample(rel.as_posix(), label, parsed[0] if parsed else None, None))
    if not samples:
        raise FeatxError(f"no images found in {root}{_unread_note(unreadable)}; featx reads {LAYOUTS_HELP}")
    return _make_collection(root, "folders", samples, unreadable)


def _unread_note(unreadable: list[str]) -> str:
    if not unreadable:
        return ""
    more = f" and {len(set(unreadable)) - 1} more" if len(set(unreadable)) > 1 else ""
    return f" (could not read folder {sorted(set(unreadable))[0]}{more})"


def _cnmc_parts(root: Path, unreadable: list[str]) -> tuple[str, dict[str, Path]] | None:
    """Which C-NMC layout `root` holds, and the folder of each part (train / prelim / final)."""
    name = root.name
    if name == KAGGLE_ROOT or _is_dir(root / KAGGLE_ROOT, unreadable):
        base = root if name == KAGGLE_ROOT else root / KAGGLE_ROOT
        parts = {part: base / folder for folder, part in KAGGLE_PARTS.items() if _is_dir(base / folder, unreadable)}
        if parts:
            return "cnmc-kaggle", parts
    if name in KAGGLE_PARTS and root.parent.name == KAGGLE_ROOT:
        return "cnmc-kaggle", {KAGGLE_PARTS[name]: root}
    tcia = {"train": CNMC_TRAIN, "prelim": CNMC_PRELIM, "final": CNMC_FINAL}
    for part, folder in tcia.items():
        if name == folder:
            return "cnmc", {part: root}
    parts = {part: root / folder for part, folder in tcia.items() if _is_dir(root / folder, unreadable)}
    if parts:
        return "cnmc", parts
    subdirs = [d.name for d in _subdirs(root, unreadable)]
    if subdirs and all(re.fullmatch(r"fold_\d+", d, re.IGNORECASE) for d in subdirs):
        return "cnmc", {"train": root}  # the training folder under another name
    return None


def _cnmc_train(root: Path, train: Path, unreadable: list[str]) -> list[Sample]:
    """fold_*/<class>/ images; label from the class folder, subject from the file name."""
    folds = sorted((d for d in _subdirs(train, unreadable) if d.name.lower().startswith("fold")),
                   key=lambda d: natural_key(d.name))
    groups = [(d.name.lower(), d) for d in folds] if folds else [(None, train)]
    samples = []
    for split, fold in groups:
        for class_dir in sorted(_subdirs(fold, unreadable)):
            for p in _images_under(class_dir, unreadable):
                parsed = parse_cnmc_name(p.name)
                samples.append(Sample(_rel(p, root), class_dir.name.lower(),
                                      parsed[0] if parsed else None, split))
    return samples


def _cnmc_prelim(root: Path, prelim: Path, unreadable: list[str]) -> list[Sample]:
    """Numbered test images; the labels CSV gives each its subject (Patient_ID) and label."""
    table = {}
    csvs = sorted((p for p in prelim.rglob("*.csv") if not p.name.startswith(".")),
                  key=lambda p: ("label" not in p.name.lower(), len(p.parts), p.as_posix()))
    if not csvs and prelim.parent.is_dir():  # Kaggle keeps the CSV beside the image folder
        csvs = sorted(p for p in prelim.parent.glob("*prelim*labels*.csv"))
    if csvs:
        table = _read_prelim_labels(csvs[0])
    samples = []
    for p in _images_under(prelim, unreadable):
        entry = table.get(p.name.lower())
        if entry is None:
            samples.append(Sample(_rel(p, root), None, None, "prelim"))
        else:
            samples.append(Sample(_rel(p, root), entry[1], entry[0], "prelim"))
    return samples


def _read_prelim_labels(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """new_names (lower-case) -> (subject, label) from a `Patient_ID,new_names,labels` file."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        if "new_names" not in fields or "patient_id" not in fields:
            raise FeatxError(f"labels file {path} must have the header Patient_ID,new_names,labels "
                             f"(found {','.join(reader.fieldnames or []) or 'nothing'})")
        table = {}
        for row in reader:
            new = (row.get(fields["new_names"]) or "").strip()
            if not new:
                continue
            parsed = parse_cnmc_name((row.get(fields["patient_id"]) or "").strip())
            subject = parsed[0] if parsed else None
            label = parsed[1] if parsed else None
            raw = (row.get(fields["labels"]) or "").strip() if "labels" in fields else ""
            if raw in ("1", "0"):
                label = "all" if raw == "1" else "hem"
            elif raw.lower() in ("all", "hem"):
                label = raw.lower()
            table[new.lower()] = (subject, label)
    return table


# ----------------------------------------------------------------------------------------------------
# manifest


def _read_manifest(path: Path) -> Collection:
    root = path.parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        names = [(f or "").strip().lower() for f in reader.fieldnames or []]
        if "path" not in names or "label" not in names:
            raise FeatxError(f"manifest {path} must start with the header {MANIFEST_HEADER} "
                             f"(found {','.join(reader.fieldnames or []) or 'an empty file'})")
        reader.fieldnames = names
        rows = list(reader)
    samples, seen, missing = [], set(), []
    for line, row in enumerate(rows, start=2):
        raw = (row.get("path") or "").strip()
        if not raw:
            raise FeatxError(f"manifest {path} line {line}: empty path")
        file = Path(raw).expanduser()
        file = file if file.is_absolute() else root / file
        try:
            found = file.is_file()
        except OSError:  # in a folder that cannot be entered
            found = False
        if not found:
            missing.append(raw)
            continue
        try:
            rel = Path(os.path.relpath(file, root)).as_posix()
        except ValueError:  # another drive on Windows
            rel = file.as_posix()
        if rel in seen:
            raise FeatxError(f"manifest {path} line {line}: {raw} is listed twice; list each image once")
        seen.add(rel)
        label = (row.get("label") or "").strip().lower() or None
        subject = (row.get("subject") or "").strip().upper() or None
        if subject is None:
            parsed = parse_cnmc_name(file.name)
            subject = parsed[0] if parsed else None
        split = (row.get("split") or "").strip() or None
        samples.append(Sample(rel, label, subject, split))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FeatxError(f"manifest {path}: image {missing[0]}{more} not found "
                         f"(paths are relative to {root} or absolute)")
    if not samples:
        raise FeatxError(f"manifest {path} lists no images; add rows {MANIFEST_HEADER}")
    return _make_collection(root, "manifest", samples)
