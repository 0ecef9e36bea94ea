"""``explain``: class-activation maps of a fine-tuned network on chosen cells, as a sheet and a CSV."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featx.data import Collection
from featx.data.decode import load_image
from featx.data.images import make_transform
from featx.data.masks import has_masks, nucleus_mask
from featx.device import resolve_device
from featx.errors import FeatxError, arg
from featx.explain import inputs
from featx.explain.layers import resolve_layer
from featx.explain.maps import gradcam, mass_inside, occlusion, occlusion_window
from featx.explain.methods import METHODS
from featx.explain.sheet import draw_sheet, write_csv

#: the files ``explain`` writes into its output folder
SHEET, TABLE = "explain.png", "explain.csv"


@dataclasses.dataclass(frozen=True)
class ImageExplanation:
    """One image's maps: ``path`` (relative to the data), ``subject``, ``split``, ``true`` class (None when
    unlabelled), ``role`` (what the image was to the network: :data:`featx.provenance.ROLES`), ``predicted`` class
    and its probability ``score``, ``image`` (the RGB image, H x W x 3 uint8), ``maps`` (method -> H x W float map
    at the image's size) and ``nucleus_mass`` (method -> fraction of the map's positive mass inside the nucleus
    mask; empty when the data has no masks)."""

    path: str
    subject: str | None
    split: str | None
    true: str | None
    role: str
    predicted: str
    score: float
    image: np.ndarray = dataclasses.field(repr=False)
    maps: dict = dataclasses.field(repr=False)
    nucleus_mass: dict


@dataclasses.dataclass(frozen=True)
class ExplainResult:
    """What :func:`explain` made: the run's ``checkpoint``, ``backbone``, the mapped ``layer`` (module path),
    ``methods``, ``images`` (:class:`ImageExplanation` each), and the ``sheet`` and ``table`` (CSV) written."""

    checkpoint: Path
    backbone: str
    layer: str
    methods: tuple[str, ...]
    images: list[ImageExplanation]
    sheet: Path | None
    table: Path | None


def _methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    chosen = tuple(m.strip().lower() for m in ([methods] if isinstance(methods, str) else methods) if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if not chosen or bad:
        raise FeatxError(f"{arg('methods', ','.join(chosen))}: {'unknown method ' + bad[0] if bad else 'none given'}; "
                         f"choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(chosen))


def compute(run: str | Path, data: str | Path | None, *, images: int = 8, paths: Sequence[str | Path] | None = None,
            layer: str | None = None, methods: Sequence[str] | str = METHODS, device: str = "auto", seed: int = 0,
            on_image: Callable[[int, int, ImageExplanation], None] | None = None) -> ExplainResult:
    """The maps of :func:`explain`, without writing anything (``sheet`` and ``table`` None); ``data`` None: the
    data root the run recorded."""
    methods = _methods(methods)
    tuned = inputs.load_run(run)
    collection = inputs.open_data(tuned.data(data))
    role_of = inputs.roles(tuned, collection)
    picked = (inputs.pick_paths(collection, paths) if paths is not None else
              inputs.pick_unseen(collection, role_of, tuned.classes, images, seed))
    target_layer = resolve_layer(tuned.network, tuned.image_size, layer)
    done = map_images(tuned.network, collection, picked, image_size=tuned.image_size, classes=tuned.classes,
                      layer=target_layer.name, methods=methods, roles=role_of, device=device, on_image=on_image)
    return ExplainResult(checkpoint=tuned.checkpoint, backbone=tuned.backbone, layer=target_layer.name,
                         methods=methods, images=done, sheet=None, table=None)


def map_images(network: nn.Module, collection: Collection, indices: Sequence[int], *, image_size: int,
               classes: Sequence[str], layer: str, methods: Sequence[str] = METHODS,
               roles: Sequence[str] | None = None, device: str = "auto", target: str = "predicted",
               on_image: Callable[[int, int, ImageExplanation], None] | None = None) -> list[ImageExplanation]:
    """The maps of any network (a :class:`featx.backbones.TappedNetwork`, as the run's or a random one) on the
    samples ``indices`` of ``collection``, preprocessed at ``image_size`` with the network's normalisation, at the
    module ``layer``; ``target``: the class mapped, ``"predicted"`` or ``"true"`` (the image's label)."""
    dev = resolve_device(device)
    network.to(dev).eval()
    module = network.get_submodule(layer)
    cfg = network.config
    transform = make_transform(image_size, cfg.mean, cfg.std)
    # the occluding patch is the background (black) as the network sees it after normalisation
    black = torch.tensor([-m / s for m, s in zip(cfg.mean, cfg.std)], dtype=torch.float32, device=dev)
    baseline = black.view(1, 3, 1, 1).expand(1, 3, image_size, image_size).contiguous()
    window, stride = occlusion_window(image_size)
    masks = has_masks(collection.root)
    done: list[ImageExplanation] = []
    for i in indices:
        sample = collection.samples[i]
        img = load_image(collection.abspath(i))
        x = transform(img).unsqueeze(0).to(dev)
        size = (img.height, img.width)
        with torch.no_grad():
            probs = torch.softmax(network(x), dim=1)[0].float().cpu().numpy()
        predicted = int(np.argmax(probs))
        cls = predicted if target == "predicted" or sample.label not in classes else list(classes).index(sample.label)
        maps = {}
        for method in methods:
            maps[method] = (gradcam(network, module, x, cls, size) if method == "gradcam" else
                            occlusion(network, x, cls, size, baseline=baseline, window=window, stride=stride))
        mask = nucleus_mask(collection.root, sample.path) if masks else None
        mass = {m: mass_inside(maps[m], mask) for m in methods} if mask is not None else {}
        item = ImageExplanation(path=sample.path, subject=sample.subject, split=sample.split, true=sample.label,
                                role=roles[i] if roles is not None else "", predicted=classes[predicted],
                                score=float(probs[predicted]), image=np.asarray(img), maps=maps, nucleus_mass=mass)
        done.append(item)
        if on_image is not None:
            on_image(len(done), len(indices), item)
    return done


def explain(run: str | Path, data: str | Path, *, out: str | Path, images: int = 8,
            paths: Sequence[str | Path] | None = None, layer: str | None = None,
            methods: Sequence[str] | str = METHODS, device: str = "auto", seed: int = 0, overwrite: bool = False,
            on_image: Callable[[int, int, ImageExplanation], None] | None = None) -> ExplainResult:
    """Class-activation maps of the fine-tuned network of run folder ``run`` on images of ``data``.

    ``images``: how many cells the network never saw (provenance roles ``val`` and never seen), balanced across its
    classes, the same ones for the same ``seed``; or ``paths`` (relative to ``data``): those images, whatever their
    role (the sheet and CSV say it). Each image is preprocessed as the run's evaluation did and mapped for the
    class the network predicts: ``gradcam`` (Captum's LayerGradCam at ``layer``, by default the last spatial map:
    :func:`featx.explain.layers.resolve_layer`) and ``occlusion`` (Captum's Occlusion: the drop of the class's
    probability when a square is blacked out). Writes ``out/explain.png`` (a row per image) and ``out/explain.csv``
    (per image: predicted class, score, role and, when ``data`` holds nucleus masks, the share of each map's
    positive mass inside the nucleus); refuses to replace them unless ``overwrite``. ``on_image(done, total,
    item)`` is called after each image.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FeatxError(f"{arg('out', out)} is a file; give a folder for the sheet and the CSV")
    present = [name for name in (SHEET, TABLE) if (out / name).exists()]
    if present and not overwrite:
        raise FeatxError(f"{out} already holds {', '.join(present)}; choose another {arg('out')} or pass "
                         f"{arg('overwrite', True)} to replace them")
    result = compute(run, data, images=images, paths=paths, layer=layer, methods=methods, device=device, seed=seed,
                     on_image=on_image)
    out.mkdir(parents=True, exist_ok=True)
    table = write_csv(result.images, result.methods, out / TABLE)
    sheet = draw_sheet(result.images, result.methods, result.layer, out / SHEET, title=_title(result))
    return dataclasses.replace(result, sheet=sheet, table=table)


def plot_explanations(run: str | Path, data: str | Path | None, path: str | Path, *, images: int = 6,
                      device: str = "auto") -> Path:
    """A small sheet of :func:`explain`'s maps (Grad-CAM and occlusion of ``images`` unseen cells) of run folder
    ``run`` on ``data`` (None: the data root the run recorded), drawn into the PNG ``path`` (for reports);
    returns ``path``."""
    result = compute(run, data, images=images, device=device)
    return draw_sheet(result.images, result.methods, result.layer, path, title=_title(result))


def _title(result: ExplainResult) -> str:
    return f"{result.backbone} fine-tuned ({result.checkpoint}): maps of the predicted class"
