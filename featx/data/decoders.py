"""Who decodes images for extraction, and starting them: helper threads of this process on the CPU (they decode
while the forward pass waits), DataLoader worker processes on CUDA (:mod:`featx.data.batches` runs either)."""
from __future__ import annotations

import functools

import torch

from featx.data.batches import LoaderBatches, ThreadBatches, close_inherited
from featx.data.collection import Collection
from featx.data.images import ImageDataset, ResizeUint8
from featx.device import pin_memory
from featx.machine import cpu_cores, local_processes

__all__ = ["PREFETCH_BYTES", "decode_plan", "start_batches"]

PREFETCH_BYTES = 64 << 20   # decoded images held ahead of the forward pass (threads), whatever the data's size


def decode_plan(device: torch.device, workers: int | None) -> tuple[str, int]:
    """Who decodes images for extraction on ``device``: ``("threads", n)``, n helper threads of
    this process (0: the main thread alone), or ``("processes", n)``, n DataLoader worker processes.

    ``workers`` None: on the CPU, as many helper threads as torch's threads (they decode while the forward pass
    waits: while the network is built and between batches); on CUDA, worker processes on every core but one of
    this process's share of the node (the cores over torchrun's processes on it), at most 32. ``0``: the main
    thread decodes; ``N``: N worker processes.
    """
    if workers is None:
        share = cpu_cores() // local_processes()
        if device.type == "cuda" and share > 1:
            return "processes", min(32, share - 1)
        return "threads", max(1, torch.get_num_threads())
    return ("processes", int(workers)) if workers > 0 else ("threads", 0)


def start_batches(collection: Collection, indices: list[int], size: int, device: torch.device, batch_size: int,
                  workers: int | None, held: tuple[str, ...]) -> ThreadBatches | LoaderBatches:
    """Start decoding ``indices`` of ``collection`` as uint8 images of ``size`` px, as :func:`decode_plan` says."""
    dataset = ImageDataset(collection, ResizeUint8(size), indices=indices, identify=True)
    kind, n = decode_plan(device, workers)
    if kind == "threads":
        ahead = max(2, min(16, PREFETCH_BYTES // (batch_size * size * size * 3)))
        # on the CPU the forward pass uses every core: helpers decode while it waits, not while it runs
        return ThreadBatches(dataset, batch_size, n, ahead=ahead, pause=device.type == "cpu", pin=pin_memory(device))
    return LoaderBatches(dataset, batch_size, n, pin=pin_memory(device), prefetch=2 if n >= 4 else 4,
                         worker_init_fn=functools.partial(close_inherited, held),
                         lowest_priority=device.type == "cpu")
