"""What ``explain`` reads: the fine-tuned network of a run folder, and which images of the data to map (with the role
each had for the network, from the run's provenance)."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featx import provenance
from featx.backbones import TappedNetwork, create_backbone
from featx.data import Collection, discover, natural_key
from featx.errors import FeatxError, arg, command

#: what each provenance role means for a picture of the image (the sheet's words)
ROLE_WORDS = {"train": "trained on", "train-subject": "its subject trained on", "val-choose": "chose the epoch",
              "val": "unseen (validation)", "": "never seen", "unknown": "maybe seen (not recorded)"}
_FINETUNE = command(f"finetune DATA {arg('out', 'RUN')}", "featx.finetune(data, out)")


@dataclasses.dataclass(frozen=True)
class FineTuned:
    """A run folder's network (eval mode) with what its preprocessing needs: ``checkpoint`` (best.pt, else
    last.pt), ``backbone``, ``image_size``, ``classes``, and the ``data_root`` it was trained on (None when
    its settings.json does not record one)."""

    run: Path
    checkpoint: Path
    backbone: str
    image_size: int
    classes: list[str]
    network: TappedNetwork
    data_root: Path | None = None

    def data(self, data: str | Path | None) -> str | Path:
        """``data``, or the data root the run recorded when ``data`` is None."""
        if data is not None:
            return data
        if self.data_root is None:
            raise FeatxError(f"{self.run / 'settings.json'} records no data root; give the images as "
                             f"{arg('data')}")
        return self.data_root


def load_run(run: str | Path) -> FineTuned:
    """The network of fine-tuning run folder ``run`` (``best.pt``, or ``last.pt`` of a run that kept only it) and
    its settings; one-line FeatxErrors for a folder that is no finished run."""
    run = Path(run).expanduser()
    if not run.is_dir():
        raise FeatxError(f"run folder {run} does not exist or is not a folder; give the output folder of {_FINETUNE}")
    checkpoint = next((run / name for name in ("best.pt", "last.pt") if (run / name).is_file()), None)
    settings_file = run / "settings.json"
    if checkpoint is None:
        raise FeatxError(f"{run} holds no best.pt (nor last.pt): not a fine-tuning run folder, or one that has not "
                         f"saved an epoch yet; give the output folder of {_FINETUNE} (finished, or resume it first)")
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        backbone = str(settings["backbone"])
    except (OSError, ValueError, KeyError, TypeError):
        raise FeatxError(f"{settings_file} is missing or unreadable (no backbone recorded); give a run folder "
                         f"written by {_FINETUNE}") from None
    network = create_backbone(backbone, weights=checkpoint)
    if not network.classes:
        raise FeatxError(f"{checkpoint} names no classes: not a featx fine-tuning checkpoint; give the output "
                         f"folder of {_FINETUNE}")
    size = network.input_size(settings.get("image_size"))
    root = settings.get("data_root")
    return FineTuned(run=run, checkpoint=checkpoint, backbone=backbone, image_size=int(size),
                     classes=list(network.classes), network=network, data_root=Path(root) if root else None)


def roles(tuned: FineTuned, collection: Collection) -> list[str]:
    """One provenance role per sample of ``collection`` (see :mod:`featx.provenance`)."""
    card = tuned.network.weights_info.card
    found = provenance.store_roles(card, collection, checkpoint=str(tuned.checkpoint),
                                   sha256=str(tuned.network.weights_info.sha256 or ""))
    return found[0] if found is not None else ["unknown"] * len(collection.samples)


def open_data(data: str | Path) -> Collection:
    """The collection of ``data``, refusing one without images."""
    collection = discover(data)
    if not collection.samples:
        raise FeatxError(f"{arg('data', data)} holds no images; give the data folder the run was trained on")
    return collection


def pick_unseen(collection: Collection, role_of: Sequence[str], classes: Sequence[str], n: int,
                seed: int = 0) -> list[int]:
    """``n`` labelled images the network never saw (roles ``val`` and ``""``), as balanced across ``classes`` as
    they allow: each class's images in a seeded order, taken in turn; the same arguments pick the same images."""
    if int(n) < 1:
        raise FeatxError(f"{arg('images', n)} must be at least 1 (the number of images to map)")
    rng = np.random.default_rng(seed)
    queues = []
    for cls in classes:
        members = sorted((i for i, s in enumerate(collection.samples)
                          if s.label == cls and role_of[i] in provenance.UNSEEN_ROLES),
                         key=lambda i: natural_key(collection.samples[i].path))
        queues.append([members[j] for j in rng.permutation(len(members))])
    if not any(queues):
        raise FeatxError(f"none of the labelled images of {collection.root} is unseen by this network (every one "
                         f"was trained on, is of a subject it trained on, or chose its epoch); give images with "
                         f"{arg('paths')}, or data the run never saw")
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def pick_paths(collection: Collection, paths: Sequence[str | Path]) -> list[int]:
    """The samples at ``paths`` (relative to the data root, or absolute under it), in the order given."""
    if not paths:
        raise FeatxError(f"{arg('paths')} is empty; give at least one image path relative to {collection.root}")
    index = {s.path: i for i, s in enumerate(collection.samples)}
    root = collection.root.resolve()
    picked = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_absolute() or str(given).startswith(".."):
            try:
                path = (root / path).resolve().relative_to(root)
            except ValueError:
                raise FeatxError(f"{arg('paths', given)} is not under the data folder {root}; give paths relative "
                                 "to it") from None
        key = path.as_posix()
        if key not in index:
            where = root / key
            why = "does not exist" if not where.exists() else "is not an image featx lists there"
            raise FeatxError(f"{arg('paths', given)}: {where} {why}; give paths relative to {root} of images it "
                             f"holds (such as {collection.samples[0].path})")
        picked.append(index[key])
    return picked
