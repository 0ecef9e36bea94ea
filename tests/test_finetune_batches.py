"""featx.finetune.batches and how the loop uses them: the same numbers as the evaluation transform, channels-last
in training, workers that persist across epochs and change nothing (also after a resume), loader settings."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from featx.data import discover
from featx.data.images import load_image, make_transform
from featx.finetune import batches as fb
from featx.finetune import finetune
from featx.finetune.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPTS = dict(backbone="cnn", weights="none", image_size=32, epochs=3, lr=1e-3, batch_size=8, dropout=0.3,
            augment=True, schedule="cosine", optimizer="adamw", seed=3, device="cpu", val="fold_2", keep="both")


@pytest.fixture(scope="module")
def tree(cnmc_tree) -> Path:
    """conftest's tiny C-NMC tree (read only here)."""
    return cnmc_tree


def test_device_batches_equal_the_evaluation_transform(tree):
    col = discover(tree)
    idx = [i for i, s in enumerate(col.samples) if s.label][:5]
    ds = fb.SeededImages(col, fb.pil_steps(make_transform(32, MEAN, STD)), 32)
    items = [ds[(i, None)] for i in idx]
    assert all(img.dtype == torch.uint8 and img.shape == (32, 32, 3) and not err for img, _, err in items)
    x = fb.to_device(torch.stack([img for img, _, _ in items]), torch.device("cpu"), fb.channel_stats(MEAN, "cpu"),
                     fb.channel_stats(STD, "cpu"))
    reference = torch.stack([make_transform(32, MEAN, STD)(load_image(col.abspath(i))) for i in idx])
    assert x.shape == reference.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x, reference, rtol=0, atol=1e-6)


def test_augmentation_follows_the_seed_alone(tree):
    col = discover(tree)
    ds = fb.SeededImages(col, fb.pil_steps(make_transform(32, MEAN, STD, augment=True)), 32)
    i = next(i for i, s in enumerate(col.samples) if s.label)
    first = ds[(i, 11)][0]
    torch.manual_seed(0)
    ds[(i, 5)]
    assert torch.equal(ds[(i, 11)][0], first)  # whatever ran before, in whichever process
    assert any(not torch.equal(ds[(i, seed)][0], first) for seed in range(4))
    state = torch.get_rng_state()
    ds[(i, 7)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    bad = fb.SeededImages(col, fb.pil_steps(make_transform(16, MEAN, STD)), 32)[(i, None)]  # wrong size
    assert bad[0].shape == (32, 32, 3) and not bad[0].any() and "cannot transform image" in bad[2]


def test_epoch_batches_shuffle_seed_and_drop_a_single_image():
    gen = torch.Generator().manual_seed(0)
    sampler = fb.EpochBatches(8, generator=gen, drop_single=True)
    sampler.indices = list(range(100, 117))  # 17 images: a last batch of one is dropped
    state = gen.get_state()
    batches = list(sampler)
    assert len(sampler) == len(batches) == 2 and [len(b) for b in batches] == [8, 8]
    flat = [item for b in batches for item in b]
    assert len({i for i, _ in flat}) == 16 and {i for i, _ in flat} < set(range(100, 117))
    assert len({s for _, s in flat}) == 16 and all(isinstance(s, int) for _, s in flat)
    gen.set_state(state)
    assert list(sampler) == batches  # the generator's state decides the epoch
    assert list(sampler) != batches  # and the next epoch differs
    sampler.indices = list(range(16))
    assert len(sampler) == len(list(sampler)) == 2
    ordered = fb.EpochBatches(8)
    ordered.indices = list(range(17))
    assert list(ordered) == [[(i, None) for i in range(8)], [(i, None) for i in range(8, 16)], [(16, None)]]
    assert len(ordered) == 3


def test_loader_settings_per_device():
    assert fb.default_workers(torch.device("cpu"), 2) == 1
    assert fb.default_workers(torch.device("cpu"), 1) == 0
    assert fb.default_workers(torch.device("cpu"), 16) == 4
    assert fb.default_workers(torch.device("cuda"), 16) == 8
    ds, sampler = fb.SeededImages(None, fb.pil_steps(make_transform(32, MEAN, STD)), 32), fb.EpochBatches(4)
    cuda = fb.make_loader(ds, sampler, workers=2, device=torch.device("cuda"))  # built, never iterated here
    assert cuda.pin_memory and cuda.persistent_workers and cuda.num_workers == 2 and cuda.prefetch_factor == 2
    cpu = fb.make_loader(ds, sampler, workers=1, device=torch.device("cpu"))
    assert not cpu.pin_memory and cpu.persistent_workers and cpu.num_workers == 1
    inline = fb.make_loader(ds, sampler, workers=0, device=torch.device("cpu"))
    assert not inline.persistent_workers and inline.num_workers == 0


@pytest.mark.slow
def test_training_is_channels_last(tree, tmp_path, monkeypatch):
    seen, real_init = [], Trainer.__init__

    def init(self, plan, callback=None):
        real_init(self, plan, callback)
        conv = next(m for m in self.network.modules() if isinstance(m, nn.Conv2d))
        seen.append(("conv weight", conv.weight.is_contiguous(memory_format=torch.channels_last)))
        seen.append(("loaders", self.train_loader.num_workers, self.train_loader.persistent_workers,
                     self.val_loader.num_workers, self.train_loader.pin_memory))
        self.network.register_forward_pre_hook(
            lambda module, args: seen.append((module.training, args[0].is_contiguous(
                memory_format=torch.channels_last), args[0].dtype, torch.are_deterministic_algorithms_enabled(),
                torch.utils.deterministic.fill_uninitialized_memory)))

    monkeypatch.setattr(Trainer, "__init__", init)
    finetune(tree, tmp_path / "r", **dict(OPTS, epochs=1, workers=1))
    assert seen[0] == ("conv weight", True) and seen[1] == ("loaders", 1, True, 1, False)
    steps = seen[2:]
    # every training batch, every validation batch; deterministic algorithms without the NaN fill
    assert {s for s in steps if s[0]} == {(True, True, torch.float32, True, False)}
    assert {s for s in steps if not s[0]} == {(False, True, torch.float32, True, False)}
    assert torch.utils.deterministic.fill_uninitialized_memory and not torch.are_deterministic_algorithms_enabled()


def _loader_workers() -> list:
    """Live child processes other than joblib's loky pool, which earlier tests in this process may leave."""
    return [p for p in multiprocessing.active_children() if "Loky" not in type(p).__name__]


@pytest.mark.slow
def test_persistent_workers_change_nothing_and_resume_exactly(tree, tmp_path, monkeypatch):
    reference = finetune(tree, tmp_path / "ref", workers=0, **OPTS)

    def stop_after_epoch_1(event, info):
        if event == "epoch" and info["epoch"] == 1:
            assert set(info["timings"]) == {"train", "data_wait", "validate", "validate_data_wait", "metrics",
                                            "checkpoints"}
            assert all(v >= 0 for v in info["timings"].values())
            assert info["timings"]["train"] > info["timings"]["data_wait"]
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(tree, out, workers=1, callback=stop_after_epoch_1, **OPTS)
    assert not _loader_workers()  # the interrupted run's workers are gone

    log, real_load = tmp_path / "pids.txt", fb.load_image

    def load_and_log(path):  # runs in the (forked) decode workers
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {Path(path).parent.parent.name}\n")
        return real_load(path)

    monkeypatch.setattr(fb, "load_image", load_and_log)
    resumed = finetune(tree, out, workers=1, resume=True, **OPTS)
    assert not _loader_workers()
    lines = [line.split() for line in log.read_text().splitlines()]
    train = [pid for pid, fold in lines if fold != "fold_2"]
    val = [pid for pid, fold in lines if fold == "fold_2"]
    n_train, n_val = resumed["row"].n_train, resumed["row"].n_test
    assert len(train) == 2 * n_train and len(val) == 2 * n_val  # epochs 2 and 3
    assert len(set(train)) == len(set(val)) == 1 and not {str(os.getpid())} & (set(train) | set(val))
    assert set(train) != set(val)  # one worker per loader, each the same process in both epochs

    ref = torch.load(reference["last"], map_location="cpu", weights_only=True)
    last = torch.load(resumed["last"], map_location="cpu", weights_only=True)
    for key, value in ref["model"].items():
        assert torch.equal(last["model"][key], value), key
    assert [h["train_loss"] for h in last["history"]] == [h["train_loss"] for h in ref["history"]]


class _Niceness(torch.utils.data.Dataset):
    """Each item is the scheduling priority of the process that made it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, item):
        return torch.tensor(os.getpriority(os.PRIO_PROCESS, 0))


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")  # cuda without a GPU
@pytest.mark.parametrize(("device", "nice"), [("cpu", 19), ("cuda", None)])
def test_cpu_decode_workers_yield_to_the_training_step(device, nice):
    sampler = fb.EpochBatches(2)
    sampler.indices = [0, 1, 2, 3]
    own = os.getpriority(os.PRIO_PROCESS, 0)
    loader = fb.make_loader(_Niceness(), sampler, workers=1, device=torch.device(device))
    try:
        seen = {int(v) for batch in loader for v in batch}
    finally:
        fb.close_loader(loader)
    # on the CPU the worker takes the cycles the step's threads leave; on CUDA the cores are the worker's
    assert seen == {nice if nice is not None else own}
