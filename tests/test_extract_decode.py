"""Extraction's decoding: uint8 images resized by PIL, normalised in batches, decoded by threads or processes.

Whoever decodes, the store holds the features of make_transform's tensors (the naive loop's preprocessing).
"""
from __future__ import annotations

import gc
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import featx.data.decoders as decoders
import featx.extract as fx
from featx.backbones import create_backbone
from featx.data import discover
from featx.data.batches import LoaderBatches, ThreadBatches
from featx.data.decoders import decode_plan
from featx.data.images import ImageDataset, ResizeUint8, load_image, make_transform, normalize_batch
from featx.extract import extract
from featx.store import load_features, summarize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (90, 90), dtype=np.uint8)).convert("RGB")
    small = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))  # upscaled
    return [rgb, grey, small]


@pytest.mark.parametrize("size", [32, 45])
def test_uint8_resize_then_batch_normalisation_is_make_transform(size):
    images = _images()
    reference = torch.stack([make_transform(size, MEAN, STD)(img) for img in images])
    raw = torch.stack([ResizeUint8(size)(img) for img in images])
    assert raw.dtype == torch.uint8 and raw.shape == (3, size, size, 3)
    got = normalize_batch(raw, MEAN, STD)
    assert got.dtype == torch.float32 and got.shape == reference.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-6)  # the same elementwise steps
    # mean and std as tensors already on the device (what extraction passes) give the same batch
    assert torch.equal(normalize_batch(raw, torch.tensor(MEAN), torch.tensor(STD)), got)


@pytest.fixture(scope="module")
def mixed(cnmc_tree, tmp_path_factory):
    """Seven readable cells and one file that is not an image, in class folders."""
    root = tmp_path_factory.mktemp("mixed")
    cells = sorted((cnmc_tree / "C-NMC_training_data").rglob("*.bmp"))[:7]
    for i, cell in enumerate(cells):
        (root / "a").mkdir(exist_ok=True)
        (root / "a" / f"c{i}.bmp").write_bytes(cell.read_bytes())
    (root / "a" / "c3x.bmp").write_bytes(b"BM not really an image" * 4)
    return discover(root)


@pytest.mark.parametrize("threads,ahead", [(0, 1), (1, 1), (2, 3)])
def test_thread_batches_equal_a_dataloaders_batches(mixed, threads, ahead):
    dataset = ImageDataset(mixed, ResizeUint8(24))
    want = list(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=0))
    batches = ThreadBatches(dataset, 3, threads, ahead=ahead)
    try:
        got = list(batches)
    finally:
        batches.close()
    assert len(got) == len(want) == 3
    for (gi, gx, ge), (wi, wx, we) in zip(got, want):
        assert torch.equal(gi, wi) and gi.dtype == torch.uint8 and torch.equal(gx, wx) and list(ge) == list(we)
    errors = [e for _, _, batch in got for e in batch]
    bad = [i for i, e in enumerate(errors) if e]
    assert len(bad) == 1 and "c3x.bmp" in errors[bad[0]]
    assert torch.count_nonzero(got[bad[0] // 3][0][bad[0] % 3]) == 0  # a blank uint8 image in its place


def test_thread_batches_stop_their_helpers_when_closed_or_dropped(mixed):
    dataset = ImageDataset(mixed, ResizeUint8(16))
    batches = ThreadBatches(dataset, 2, 2, ahead=1)
    first = next(iter(batches))
    assert first[0].shape == (2, 16, 16, 3)
    helpers = list(batches._threads)
    batches.close()
    assert not any(t.is_alive() for t in helpers)
    dropped = ThreadBatches(dataset, 2, 2, ahead=1)  # never read, never closed
    helpers = list(dropped._threads)
    del dropped
    gc.collect()
    for t in helpers:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in helpers)


def test_loader_batches_in_worker_processes(mixed):
    dataset = ImageDataset(mixed, ResizeUint8(16))
    batches = LoaderBatches(dataset, 4, 1, lowest_priority=True)
    try:
        got = list(batches)
    finally:
        batches.close()
    assert [len(i) for _, i, _ in got] == [4, 4] and got[0][0].dtype == torch.uint8
    assert torch.cat([i for _, i, _ in got]).tolist() == list(range(8))


def test_decode_plan(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decode_plan(cpu, None) == ("threads", torch.get_num_threads())
    assert decode_plan(cpu, 0) == decode_plan(cuda, 0) == ("threads", 0)
    assert decode_plan(cpu, 3) == decode_plan(cuda, 3) == ("processes", 3)
    monkeypatch.setattr(decoders, "cpu_cores", lambda: 16)
    assert decode_plan(cuda, None) == ("processes", 15)
    monkeypatch.setattr(decoders, "cpu_cores", lambda: 64)
    assert decode_plan(cuda, None) == ("processes", 32)


def test_decode_plan_under_torchrun_shares_the_node_among_its_ranks(monkeypatch):
    """Each of torchrun's ranks on a node sized its decode workers to every core: 4 GPUs on 16 cores started
    60 worker processes. A rank now takes its share (LOCAL_WORLD_SIZE)."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(decoders, "cpu_cores", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert decode_plan(cuda, None) == ("processes", 3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")   # one core per rank: it decodes in threads of its own
    assert decode_plan(cuda, None) == ("threads", torch.get_num_threads())
    assert decode_plan(cuda, 2) == ("processes", 2)  # as asked
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "x")
    assert decode_plan(cuda, None) == ("processes", 15)


@pytest.mark.slow
def test_every_decoder_gives_the_naive_loops_features(mixed, tmp_path, monkeypatch):
    events = []
    start, build = fx.start_batches, fx.create_backbone
    monkeypatch.setattr(fx, "start_batches", lambda *a, **k: events.append("decode") or start(*a, **k))
    monkeypatch.setattr(fx, "create_backbone", lambda *a, **k: events.append("build") or build(*a, **k))
    stores = {}
    for workers in (0, None, 1):
        events.clear()
        stores[workers] = extract(mixed, tmp_path / f"w{workers}.h5", backbone="alexnet", weights="none",
                                  image_size=64, taps=["fc7"], batch_size=3, workers=workers, seed=1)
        # a new store: decoding starts before the network is built, and that decoder is used (the main thread
        # alone, workers=0, decodes when the loop asks)
        assert events == (["build", "decode"] if workers == 0 else ["decode", "build"])
    model = create_backbone("alexnet", "none", seed=1)
    transform = make_transform(64, model.config.mean, model.config.std)
    bad = next(i for i, sample in enumerate(mixed.samples) if sample.path.endswith("c3x.bmp"))
    good = [i for i in range(len(mixed.samples)) if i != bad]
    with torch.no_grad():
        naive = torch.cat([model.forward_taps(transform(load_image(mixed.abspath(i))).unsqueeze(0), ["fc7"])["fc7"]
                           for i in good]).numpy()
    for workers, store in stores.items():
        s = summarize(store)
        assert s["done"] == 7 and s["errors"] == 1 and "c3x.bmp" in s["failed"][0]["path"], workers
        features = load_features(store, "fc7")
        assert features.X.shape == (7, 4096)
        np.testing.assert_allclose(features.X, naive, rtol=1e-4, atol=1e-5)
        with h5py.File(store) as h5:
            assert "c3x.bmp" in h5["samples/error"].asstr()[bad]


def test_a_resumed_store_decodes_only_its_missing_rows(mixed, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    stop = {"after": 1}

    def interrupt(done, total):
        if done >= 3 and stop["after"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(mixed, out, backbone="cnn", weights="none", image_size=32, batch_size=3, workers=None,
                on_progress=interrupt)
    assert 0 < summarize(out)["done"] < 7
    started = []
    start = fx.start_batches
    monkeypatch.setattr(fx, "start_batches", lambda *a, **k: started.append(list(a[1])) or start(*a, **k))
    stop["after"] = 0
    extract(mixed, out, backbone="cnn", weights="none", image_size=32, batch_size=3, workers=None,
            on_progress=interrupt)
    assert summarize(out)["done"] == 7
    assert len(started) == 1 and len(started[0]) < 8  # no early decoding of every row for a store that exists


@pytest.mark.slow
def test_deferred_batches_as_on_cuda_give_the_same_store(mixed, tmp_path, monkeypatch):
    """CUDA finishes each batch after queuing the next one; the same bookkeeping on the CPU changes nothing."""
    common = dict(backbone="cnn", weights="none", image_size=32, batch_size=3, workers=0)
    plain = extract(mixed, tmp_path / "plain.h5", **common)
    monkeypatch.setattr(fx, "_overlaps_copies", lambda device: True)
    seen = []
    deferred = extract(mixed, tmp_path / "deferred.h5", on_progress=lambda done, total: seen.append(done), **common)
    assert seen == [0, 3, 6, 8]
    a, b = summarize(plain), summarize(deferred)
    assert (a["done"], a["errors"]) == (b["done"], b["errors"]) == (7, 1)
    np.testing.assert_allclose(load_features(deferred).X, load_features(plain).X, rtol=1e-6, atol=1e-7)


class _Gated(torch.utils.data.Dataset):
    """Items (uint8 image, index, "") that wait for ``go`` before they are made."""

    def __init__(self, n: int):
        self.n, self.go = n, threading.Event()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.go.wait(timeout=30)
        return torch.full((2, 2, 3), i, dtype=torch.uint8), i, ""


def test_paused_helpers_start_no_image_until_the_pause_ends():
    dataset = _Gated(12)
    batches = ThreadBatches(dataset, 1, 2, ahead=8, pause=True)
    try:
        while batches._state.next < 2:  # both helpers hold an image, blocked until `go`
            time.sleep(0.01)
        with batches.paused():
            dataset.go.set()
            while len(batches._state.ready) < 2:
                time.sleep(0.01)
            time.sleep(0.2)  # room for a wrong claim: paused helpers must not start another image
            assert batches._state.next == 2
        got = [int(index) for _, indices, _ in batches for index in indices]
    finally:
        batches.close()
    assert got == list(range(12))
