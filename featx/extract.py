"""Run a backbone over an image collection once and stream its features into an HDF5 store.

Images are decoded and resized to uint8 while the network is built and between forward passes, then
normalised in whole batches on the compute device (see :mod:`featx.data.batches` for who decodes: threads
of this process on the CPU, DataLoader worker processes for CUDA); HDF5 writes run in one writer thread.
On CUDA, batches are copied from pinned memory without blocking, and a batch's features come back while the
next batch runs. Re-running the same call resumes: only missing rows, and rows whose image file changed since
(warned with their count), are computed. Progress: ``on_progress(done, total)``; the CLI draws it as a bar.
Forked workers close their copies of the store's and its lock's file descriptors first thing, so they never
hold the store open: after ``kill -9`` of the main process the next run can start at once.
"""
from __future__ import annotations

import os
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision

from featx import provenance
from featx.backbones import (
    TappedNetwork,
    WeightsSpec,
    create_backbone,
    get_config,
    input_size,
    origin_of,
)
from featx.backbones.generic import POOLINGS
from featx.backbones.layouts import listing_taps
from featx.data import Collection, discover
from featx.data.batches import LoaderBatches, ThreadBatches
from featx.data.content import check_files, name_some
from featx.data.decoders import decode_plan, start_batches
from featx.data.images import describe_preprocessing, make_transform, normalize_batch
from featx.device import autocast, memory_format, resolve_device
from featx.errors import FeatxError, FeatxWarning, arg
from featx.extract_settings import DTYPES, ExtractRun, ExtractSettings, extract_arguments
from featx.imports import callable_module
from featx.store import FeatureStore, lock_path
from featx.store.rowid import file_records, read_files
from featx.store.shards import shard_rows, shard_settings

__all__ = ["DTYPES", "ExtractRun", "ExtractSettings", "extract", "select_taps", "store_settings_for"]


def select_taps(taps: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The named taps in the backbone's forward order (``available``); ``None``: all of them."""
    if taps is None:
        return list(available)
    names = [str(t).strip() for t in taps if str(t).strip()]
    unknown = [t for t in names if t not in available]
    if unknown or not names:
        listed = ", ".join(available) if len(available) <= 12 else \
            f"{', '.join(available[-6:])} and {len(available) - 6} more " \
            f"({listing_taps()} lists them)"
        raise FeatxError(f"{arg('taps', ','.join(names))}: unknown tap {', '.join(unknown) or '(none named)'}; "
                         f"this backbone has: {listed}")
    return [t for t in available if t in names]


def store_settings_for(collection: Collection, network: TappedNetwork, image_size: int, dtype: str) -> dict:
    """The root attributes that identify a store made from ``collection`` with ``network`` (and the versions
    of torch and torchvision that computed its features)."""
    info = network.weights_info
    cfg = network.config
    return {
        "backbone": network.name,
        "weights": info.source,
        "weights_kind": info.kind,
        "weights_sha256": info.sha256 or "",
        "weights_seed": -1 if info.seed is None else int(info.seed),
        "input_size": int(image_size),
        "mean": [float(v) for v in cfg.mean],
        "std": [float(v) for v in cfg.std],
        "resize": f"resize to {image_size}x{image_size} (bilinear, antialias), ToTensor, normalise",
        "dtype": dtype,
        "dataset_fingerprint": collection.fingerprint(),
        "data_root": str(collection.root),
        "layout": collection.layout,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        # not identity settings: the same transform in words and values, for whoever opens the file
        **describe_preprocessing(make_transform(image_size, cfg.mean, cfg.std)),
    }


class _Writer:
    """One background thread that owns every HDF5 write (h5py is not safe for concurrent writers)."""

    def __init__(self, store: FeatureStore, depth: int = 4):
        self.store = store
        self.jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write_jobs, name="featx-writer", daemon=True)
        self.thread.start()

    def _write_jobs(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.error is not None:
                continue
            try:
                kind, *args = job
                (self.store.write_rows if kind == "rows" else self.store.mark_errors)(*args)
            except BaseException as exc:  # re-raised in the main thread by put()/close()
                self.error = exc

    def put(self, kind: str, *args) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put((kind, *args))

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def extract(data: str | Path | Collection, out: str | Path, settings: ExtractSettings | None = None, *,
            run: ExtractRun | None = None, on_progress: Callable[[int, int], None] | None = None,
            **options) -> Path:
    """Extract features of every image in ``data`` into the HDF5 store ``out`` and return its path.

    ``settings`` (:class:`~featx.extract_settings.ExtractSettings`): what defines the features, recorded in
    the store; ``run`` (:class:`~featx.extract_settings.ExtractRun`): which images and how this run computes
    them. Their fields may be given as keywords instead (``extract(data, out, backbone="cnn", batch_size=8)``);
    a keyword that is no field, or one also set in an object given, is a TypeError.

    ``taps`` (one name or a sequence, e.g. ``["fc7", "pool5"]``; default all) are computed in one forward
    pass and stored in the backbone's order; the store's default tap is the backbone's. ``weights`` is
    ``imagenet`` (the default for a backbone that has ImageNet weights), ``none`` (random, seeded by ``seed``;
    the default for one that has none, the cnn) or a state-dict / featx checkpoint file (whose input
    size is then the default ``image_size``). A checkpoint of ``featx finetune`` also brings the images its
    network trained and validated on: each row's role is stored (``/samples/network_role``, see
    :mod:`featx.provenance`) and ``classify`` tests only on rows it never saw. An existing store with the
    same settings is resumed; one made with other settings is refused. ``on_progress(done, total)`` is
    called when computing starts (``done``: rows finished by earlier runs) and after each batch; not at all
    when every row is already done. Unreadable images are recorded in the store (``/samples/error``, listed
    by :func:`featx.store.summarize`, left out by ``load_features``) and retried by the next run; with
    ``strict`` they raise FeatxError once every readable image is written. Folders discovery could not read
    are recorded too (``summarize``'s ``unreadable_folders``); with ``strict`` they are refused before
    anything is written. Another process writing ``out`` is refused (its lock ``<out>.lock``). ``pool``
    (``avg`` or ``max``) pools the maps of graph-node taps (``layer3``) of a model resolved by name; its
    stores record it (``pooling``). ``shard`` (``(i, n)`` or ``"i/n"``) extracts only the i-th of n contiguous
    blocks of the single-run order into a store that records its place (:mod:`featx.store.shards`);
    :func:`featx.store.merge_stores` joins the n parts into the single-run store.
    Weights of unknown provenance (a file that is no featx checkpoint recording its images) warn
    (:class:`featx.errors.FeatxWarning`) and the store records ``weights_provenance="unknown"``, which marks
    every result row from it; ``weights_never_saw_images=True`` records the user's statement that they never
    saw these images instead (``"stated-unseen"``; see :mod:`featx.provenance`).
    """
    settings, run = extract_arguments(settings, run, options)
    backbone, splits, shard = settings.backbone, run.splits, run.shard
    collection = data if isinstance(data, Collection) else discover(data, splits)
    if isinstance(data, Collection) and splits:
        collection = data.subset([i for i, s in enumerate(data.samples) if s.split in set(splits)])
    if not collection.samples:
        raise FeatxError(f"{collection.root}: no images to extract")
    full, rows = collection, None
    if shard is not None:  # this process's block of the single-run order; the store records where it belongs
        rows = shard_rows(len(full.samples), shard)
        collection = full.subset(rows)
    folders = list(getattr(collection, "unreadable_folders", []) or [])
    if run.strict and folders:
        more = f" and {len(folders) - 1} more" if len(folders) > 1 else ""
        raise FeatxError(f"cannot read folder {folders[0]}{more} ({arg('strict', True)}); make it readable, or "
                         f"drop {arg('strict')} to extract the images featx can read")
    cfg = get_config(backbone)
    weights = settings.weights or WeightsSpec.default_for(cfg)
    # a new store computes every row: its images are decoded while the network is built
    early = _decode_early(collection, out, cfg, weights, settings.image_size, run)
    network = create_backbone(backbone, weights, seed=settings.seed)
    pool = settings.pool
    if pool not in POOLINGS or (pool != "avg" and not hasattr(network, "pooling")):
        raise FeatxError(f"{arg('pool', pool)}: choose avg or max (max applies to graph-node taps of models "
                         f"resolved by name, such as resnet18's layer3)")
    size = network.input_size(settings.image_size)   # a fine-tuned checkpoint brings the size it was trained at
    requested = None if settings.taps is None else list(settings.taps)
    # default: the backbone's taps; a model resolved by name also takes its graph nodes (`featx backbones NAME --taps`)
    cfg.check_taps(requested)    # a graph node whose channel axis is unclear: one line naming one that works
    widths = cfg.taps if requested is None or all(t in cfg.taps for t in requested) else cfg.tap_widths()
    tap_names = select_taps(requested, list(widths))
    tap_dims = {t: widths[t] for t in tap_names}
    device = resolve_device(run.device)
    attrs = store_settings_for(collection, network, size, settings.dtype)
    if shard is not None:
        attrs.update(shard_settings(shard, full.fingerprint(), len(full.samples)))
    # fp16 autocast on CUDA changes the features slightly: a store never mixes the two precisions
    attrs["precision"] = "fp16-autocast" if device.type == "cuda" else "fp32"
    if hasattr(network, "pooling"):      # graph-node taps (models resolved by name): how their maps are pooled
        network.pooling = attrs["pooling"] = pool
    info = network.weights_info
    stated = settings.weights_never_saw_images
    origin = provenance.stated_origin(origin_of(cfg, info), stated, info.source)
    if origin == provenance.UNKNOWN:
        warnings.warn(FeatxWarning(provenance.unknown_weights_warning(info.source, info.card)), stacklevel=2)
    attrs[provenance.WEIGHTS_ATTR] = origin
    # a fine-tuned featx checkpoint: which rows its network trained on, so that no score counts them as unseen
    tuned = provenance.store_roles(info.card, full, checkpoint=info.source, sha256=info.sha256 or "", stated=stated)
    roles = None
    if tuned is not None:
        roles, attrs[provenance.ATTR] = tuned[0], provenance.attr_json(tuned[1])
        roles = roles if rows is None else [roles[i] for i in rows]  # a shard: its rows of the whole's roles
    out = Path(out)

    extra = {"unreadable_folders": folders} if folders else None
    with FeatureStore.open_for_extraction(out, attrs, collection.samples, collection.classes, tap_dims,
                                          default_tap=cfg.default_tap or None, extra_attrs=extra,
                                          roles=roles, row_index=rows,
                                          tap_descriptions={t: cfg.describe_tap(t) for t in tap_names}) as store:
        store.h5.attrs[provenance.WEIGHTS_ATTR] = origin  # a resumed store records the latest statement
        _recheck_files(store, collection)
        pending = np.flatnonzero(~store.done)
        total = store.n
        if pending.size:
            _extract_pending(network, collection, store, pending, tap_names, size=size, device=device,
                             batch_size=run.batch_size, workers=run.workers, on_progress=on_progress, total=total,
                             early=early)
        elif early is not None:
            early.batches.close()
        errors = store.h5["samples/error"].asstr()[:]
        errors[store.done] = ""
    failed = np.flatnonzero(errors != "")
    if run.strict and failed.size:
        raise FeatxError(f"{failed.size} image(s) could not be read ({arg('strict', True)}), first: "
                         f"{errors[failed[0]]}; the other {total - failed.size} rows are saved in {out}; fix or "
                         "replace those files and run the same command again")
    return out


def _recheck_files(store: FeatureStore, collection: Collection) -> None:
    """Mark for recomputing the finished rows of a resumed store whose image changed since it was extracted,
    saying how many (FeatxWarning); rows that record no content (an older featx) cannot be checked: said too."""
    files, done = read_files(store.h5), np.flatnonzero(store.done)
    if files is None or not done.size:
        return
    paths = [collection.samples[i].path for i in done]
    check = check_files(collection.root, paths, files[done])
    if check.refreshed.size:  # same content, new times: recorded, so the next run need not read them again
        store.record_files(done[check.refreshed], file_records(*zip(*check.ids)))
    if (stale := np.union1d(check.changed, check.missing)).size:
        store.recompute(done[stale])
        gone = f"; {check.missing.size} of them can no longer be read" if check.missing.size else ""
        warnings.warn(FeatxWarning(f"{stale.size} image(s) changed since they were extracted into {store.path} "
                                   f"({name_some(paths, stale)}{gone}): recomputed"), stacklevel=3)
    if check.unknown.size:
        warnings.warn(FeatxWarning(f"{store.path}: {check.unknown.size} finished row(s) record no content of their "
                                   "image files (written by an older featx), so featx cannot tell whether those "
                                   "images changed since; delete the store and extract again to check them"),
                      stacklevel=3)


class _Early(NamedTuple):
    """Decoding started before the store was opened, for ``indices`` of ``collection`` at ``size``."""
    collection: Collection
    indices: list[int]
    size: int
    device: torch.device
    batches: ThreadBatches | LoaderBatches


def _decode_early(collection: Collection, out, cfg, weights: WeightsSpec, image_size: int | None,
                  run: ExtractRun) -> _Early | None:
    """Start decoding every image of ``collection`` when ``out`` does not exist yet (a new store computes every
    row) and the input size is known before the network is built (weights none or imagenet); else None.
    ``_extract_pending`` uses it when it asks for the same rows, and closes it otherwise."""
    if Path(out).exists() or weights.kind == "file":
        return None
    try:
        dev = resolve_device(run.device)
        size = input_size(cfg, image_size)   # weights none or imagenet: no checkpoint card to bring another
    except FeatxError:
        return None  # reported by extract itself, after the network is built
    if decode_plan(dev, run.workers) == ("threads", 0):
        return None
    indices = list(range(len(collection.samples)))
    return _Early(collection, indices, size, dev, start_batches(collection, indices, size, dev, run.batch_size,
                                                                 run.workers, held=()))


def _overlaps_copies(device: torch.device) -> bool:
    """Whether a batch's features are finished (copied to the host, written) only after the next batch is queued:
    on CUDA, where both the copy and the next forward pass run while the CPU goes on."""
    return device.type == "cuda"


def _extract_pending(network: TappedNetwork, collection: Collection, store: FeatureStore, pending: np.ndarray,
                     taps: list[str], *, size: int, device: torch.device, batch_size: int, workers: int | None,
                     on_progress: Callable[[int, int], None] | None, total: int, early: _Early | None = None) -> None:
    cfg = network.config
    indices = pending.tolist()
    if early is not None and (early.collection is collection and early.indices == indices and early.size == size
                              and early.device == device):
        batches = early.batches
    else:
        if early is not None:
            early.batches.close()
        held = tuple(os.path.realpath(p) for p in (store.path, lock_path(store.path)))
        batches = start_batches(collection, indices, size, device, batch_size, workers, held)
    fmt = memory_format(device)
    cuda = device.type == "cuda"
    deferred = _overlaps_copies(device)
    mean, std = (torch.tensor([float(v) for v in values], device=device) for values in (cfg.mean, cfg.std))
    writer = _Writer(store)
    done = total - pending.size
    report = on_progress or (lambda done, total: None)
    waiting = None  # deferred: the last batch's features (CUDA: on their way to pinned host memory)

    def finish(batch) -> None:
        nonlocal done
        rows, feats, copied, count, files = batch
        if copied is not None:
            copied.synchronize()
        if len(rows):
            writer.put("rows", rows, {t: v.numpy() for t, v in feats.items()}, files)
        done += count
        report(done, total)

    try:
        network = network.to(device=device, memory_format=fmt)  # create_backbone returns it in eval mode
        report(done, total)
        with torch.inference_mode():
            for images, index, error, ids in batches:
                ok = np.array([e == "" for e in error], dtype=bool)
                index = index.numpy()
                if not ok.all():
                    writer.put("errors", index[~ok].tolist(), [e for e in error if e])
                feats, copied = {}, None
                if ok.any():
                    x = images.to(device, non_blocking=True)  # uint8, pinned on CUDA, so the copy overlaps
                    if not ok.all():
                        x = x[torch.from_numpy(ok).to(device)]
                    x = normalize_batch(x, mean, std).contiguous(memory_format=fmt)
                    try:
                        with batches.paused(), autocast(device):
                            out = network.forward_taps(x, taps)
                    except torch.cuda.OutOfMemoryError:
                        if waiting is not None:  # the batch before is computed: keep it
                            finish(waiting)
                        raise FeatxError(f"out of GPU memory at {arg('batch_size', len(x))}; lower it and run the "
                                         "same command again (finished rows are kept)") from None
                    feats = {t: v.float().to("cpu", non_blocking=cuda) for t, v in out.items()}
                    if cuda:
                        copied = torch.cuda.Event()
                        copied.record()
                batch = (index[ok], feats, copied, len(index), file_records(*ids)[ok])
                if waiting is not None:
                    finish(waiting)
                    waiting = None
                if deferred:
                    waiting = batch  # finished after the next batch is queued
                else:
                    finish(batch)
            if waiting is not None:
                finish(waiting)
    finally:
        batches.close()
        writer.close()

callable_module(__name__, "extract")  # featx.extract(...) (see featx/__init__.py)
