"""The loop's batches: images decoded and augmented in DataLoader workers that live for the whole run, handed
over as uint8 and normalised on the device, in channels-last.

Every image's augmentation runs under its own seed, and the seeds come with the shuffled order from the run's
loader generator, drawn in the main process: an epoch's batches are the same with any number of workers, with
workers kept from one epoch to the next, and after a resume (the generator's state is in ``last.pt``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

from featx.data.batches import WorkerInit
from featx.data.collection import Collection
from featx.data.images import load_image, normalize_batch
from featx.device import pin_memory
from featx.errors import FeatxError
from featx.machine import cpu_cores

#: Batches each worker prepares ahead of the step.
PREFETCH = 2


def default_workers(device: torch.device, cpus: int | None = None) -> int:
    """Decode workers for a run: all cores but one, at most 4 on the CPU and 8 on CUDA.

    On the CPU the training step needs the cores: decoding and augmenting a 450 px cell costs about 3 ms of one
    core, a few percent of its AlexNet or VGG-16 step, so one worker keeps up on 2 cores. On CUDA the step is
    fast and decoding is the bound."""
    cpus = cpu_cores() if cpus is None else cpus
    return max(0, min(8 if device.type == "cuda" else 4, cpus - 1))


def pil_steps(transform: T.Compose) -> T.Compose:
    """The PIL part of a :func:`featx.data.images.make_transform` pipeline: its steps before the tensor
    conversion (normalisation is done on the device by :func:`to_device`)."""
    steps = list(transform.transforms)
    cut = next((i for i, t in enumerate(steps) if isinstance(t, (T.ToTensor, T.PILToTensor))), len(steps))
    return T.Compose(steps[:cut])


class EpochBatches(Sampler):
    """Batches of ``(sample index, seed)`` over ``indices`` (set before each epoch).

    With a ``generator``: shuffled, and a seed drawn for every image's augmentation; without: in order, seed
    None. ``drop_single`` drops a last batch of one image (BatchNorm cannot train on it)."""

    def __init__(self, batch_size: int, *, generator: torch.Generator | None = None, drop_single: bool = False):
        self.batch_size, self.generator, self.drop_single = int(batch_size), generator, drop_single
        self.indices: list[int] = []

    def _n_items(self) -> int:
        n, bs = len(self.indices), self.batch_size
        return n - 1 if self.drop_single and n > bs and n % bs == 1 else n

    def __len__(self) -> int:
        return -(-self._n_items() // self.batch_size)

    def __iter__(self):
        idx, n, g = list(self.indices), self._n_items(), self.generator
        if g is None:
            items = [(i, None) for i in idx]
        else:
            # The draws DataLoader(shuffle=True, generator=g) made (a base seed, the order, and a second
            # permutation its RandomSampler discards), so that the epochs keep the order of earlier featx runs.
            base = int(torch.empty((), dtype=torch.int64).random_(generator=g))
            order = torch.randperm(len(idx), generator=g).tolist()
            torch.randperm(len(idx), generator=g)
            seeds = torch.randint(0, 2**62, (len(idx),), generator=torch.Generator().manual_seed(base)).tolist()
            items = [(idx[o], s) for o, s in zip(order, seeds)]
        for start in range(0, n, self.batch_size):
            yield items[start:min(start + self.batch_size, n)]


class SeededImages(Dataset):
    """Item ``(index, seed)`` -> (uint8 image ``size`` x ``size`` x 3, index, error message or "").

    ``transform`` (PIL -> PIL) runs under torch seed ``seed`` (None: as it is, for transforms that draw
    nothing). An unreadable image gives zeros and a one-line message naming the file."""

    def __init__(self, collection: Collection, transform: T.Compose, size: int):
        self.collection, self.transform, self.size = collection, transform, int(size)

    def __len__(self) -> int:
        return len(self.collection.samples)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[torch.Tensor, int, str]:
        index, seed = item
        path = self.collection.abspath(index)
        try:
            img = load_image(path)
            if seed is None:
                img = self.transform(img)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    img = self.transform(img)
            array = np.array(img, dtype=np.uint8)
            if array.shape != (self.size, self.size, 3):
                raise ValueError(f"transformed to {array.shape}, not {(self.size, self.size, 3)}")
        except FeatxError as exc:
            return self._blank(), index, str(exc)
        except Exception as exc:  # a transform failing on an odd image
            return self._blank(), index, f"cannot transform image {path}: {exc}".splitlines()[0]
        return torch.from_numpy(array), index, ""

    def _blank(self) -> torch.Tensor:
        return torch.zeros((self.size, self.size, 3), dtype=torch.uint8)


def make_loader(dataset: SeededImages, sampler: EpochBatches, *, workers: int, device: torch.device) -> DataLoader:
    """A DataLoader whose workers (``workers`` > 0) persist across epochs and prefetch; pinned memory on CUDA.

    It draws nothing from the global torch RNG (its own base seed comes from a private generator; the images'
    seeds come from ``sampler``). On the CPU the workers run at the lowest priority: they decode on the cycles
    the training step's threads leave, instead of descheduling one of them (which stalls the whole step)."""
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory(device),
                      persistent_workers=workers > 0, prefetch_factor=PREFETCH if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0),
                      worker_init_fn=WorkerInit(None, lowest_priority=device.type == "cpu") if workers > 0 else None)


def close_loader(loader: DataLoader) -> None:
    """Stop a loader's persistent workers now (instead of when the loader is garbage-collected)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def channel_stats(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """Per-channel constants shaped to broadcast over N x 3 x H x W batches."""
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device).view(1, -1, 1, 1)


def to_device(images: torch.Tensor, device: torch.device, mean: torch.Tensor, std: torch.Tensor,
              memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W on ``device``: ``(x / 255 - mean) / std``, the same
    operations (and numbers) as ToTensor + Normalize. The copy is asynchronous from pinned memory."""
    x = normalize_batch(images.to(device, non_blocking=True), mean, std)  # the permuted view is channels-last
    return x.contiguous(memory_format=memory_format)
