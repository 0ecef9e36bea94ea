"""Decoded image batches in dataset order, from threads of this process or from DataLoader worker processes.

The dataset's items are ``(image, index, error)`` (:class:`~featx.data.images.ImageDataset`), or with
``identify`` ``(image, index, error, file_id)``; a batch is ``(images, indices, errors)`` (and the file ids,
one tensor or list per field), as the DataLoader's default collation gives it.

Threads suit a machine whose cores also run the forward pass (the CPU). PIL releases the GIL while it decodes
and resizes, so the helper threads decode in parallel; with ``pause`` they wait while the consumer computes
(:meth:`ThreadBatches.paused`), so the forward pass has every core to itself and its threads never wait on a
descheduled decoder (a lower scheduling priority would not do: a starved helper holding the GIL stalls the
consumer). They decode ahead while the network is built and whenever the consumer waits for a batch, and
the consumer then decodes the batch's missing images too. Worker processes suit a GPU, where the CPU's
cores have nothing else to do.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

Batch = tuple[torch.Tensor, torch.Tensor, list[str]]


class _Decoding:
    """State shared by the helper threads and the consumer (the helpers hold no reference to the owner, so an
    owner dropped without ``close`` still stops them)."""

    def __init__(self, dataset: Dataset, batch_size: int, ahead: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self.n = len(dataset)
        self.ahead = ahead
        self.cond = threading.Condition()
        self.next = 0                                   # the first position nobody has claimed yet
        self.limit = min(self.n, ahead * batch_size)    # helpers claim positions below it
        self.ready: dict[int, tuple] = {}
        self.error: BaseException | None = None
        self.closed = False
        self.paused = False

    def decode(self, pos: int) -> None:
        try:
            item = self.dataset[pos]
        except BaseException as exc:  # the dataset reports bad images itself; this is a bug: re-raised in take()
            with self.cond:
                self.error = self.error or exc
                self.cond.notify_all()
            return
        with self.cond:
            self.ready[pos] = item
            self.cond.notify_all()

    def help(self) -> None:
        """A helper thread: claim the next position, decode it, until closed."""
        while True:
            with self.cond:
                while not self.closed and (self.paused or self.next >= self.limit):
                    self.cond.wait()
                if self.closed:
                    return
                pos = self.next
                self.next += 1
            self.decode(pos)

    def take(self, k: int) -> list[tuple]:
        """The items of batch ``k``, decoding unclaimed ones in the calling thread; lets helpers move on."""
        start, end = k * self.batch_size, min(self.n, (k + 1) * self.batch_size)
        while True:
            with self.cond:
                if self.error is not None:
                    raise self.error
                if all(p in self.ready for p in range(start, end)):
                    items = [self.ready.pop(p) for p in range(start, end)]
                    self.limit = min(self.n, (k + 1 + self.ahead) * self.batch_size)
                    self.cond.notify_all()
                    return items
                if self.next >= end:  # the missing ones are being decoded by helpers
                    self.cond.wait()
                    continue
                pos = self.next
                self.next += 1
            self.decode(pos)

    def pause(self, paused: bool) -> None:
        with self.cond:
            self.paused = paused
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.ready.clear()
            self.cond.notify_all()


class ThreadBatches:
    """Batches of ``dataset`` in order, decoded by ``threads`` helper threads of this process (at most ``ahead``
    batches ahead of the consumer) and by the consumer itself; ``threads=0``: by the consumer alone. Decoding
    starts when the object is made. ``pause``: helpers wait inside :meth:`paused`. ``pin``: batches of images
    in pinned memory (for CUDA)."""

    def __init__(self, dataset: Dataset, batch_size: int, threads: int, *, ahead: int = 2, pause: bool = False,
                 pin: bool = False):
        self._state = _Decoding(dataset, int(batch_size), max(1, int(ahead)))
        self.pause = pause
        self.pin = pin
        self.batches = -(-self._state.n // int(batch_size))
        self._threads = [threading.Thread(target=self._state.help, name=f"featx-decode-{i}", daemon=True)
                         for i in range(max(0, int(threads)))]
        self._finalize = weakref.finalize(self, self._state.close)
        for t in self._threads:
            t.start()

    def __iter__(self) -> Iterator[Batch]:
        for k in range(self.batches):
            items = self._state.take(k)
            images = torch.stack([item[0] for item in items])
            batch = (images.pin_memory() if self.pin else images,
                     torch.tensor([int(item[1]) for item in items], dtype=torch.int64), [item[2] for item in items])
            # more fields (the FileIds of an identifying ImageDataset): collated as the DataLoader does
            yield batch + tuple(default_collate([item[j] for item in items]) for j in range(3, len(items[0])))

    @contextlib.contextmanager
    def paused(self):
        """While the block runs (the forward pass), helpers start no new image (with ``pause``)."""
        if not self.pause or not self._threads:
            yield
            return
        self._state.pause(True)
        try:
            yield
        finally:
            self._state.pause(False)

    def close(self) -> None:
        """Stop the helpers and wait for them (each finishes the image it is decoding)."""
        self._finalize()
        for t in self._threads:
            t.join()


class LoaderBatches:
    """Batches of ``dataset`` in order from a DataLoader with ``workers`` worker processes, started when the
    object is made. ``lowest_priority``: the workers run at the lowest CPU priority (when they share the cores
    with a forward pass on the CPU)."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int, *, pin: bool = False,
                 worker_init_fn: Callable[[int], None] | None = None, prefetch: int = 4,
                 lowest_priority: bool = False):
        init = WorkerInit(worker_init_fn, lowest_priority)
        loader = DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=int(workers),
                            pin_memory=pin, persistent_workers=False, prefetch_factor=int(prefetch),
                            worker_init_fn=init)
        self._it = iter(loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._it)

    def paused(self):
        """No pause: worker processes decode on (see ``lowest_priority``)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Stop the worker processes now (batches they prefetched are dropped)."""
        shutdown = getattr(self._it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class WorkerInit:
    """A DataLoader ``worker_init_fn`` (picklable): the caller's, then, when asked, the lowest CPU priority."""

    def __init__(self, then: Callable[[int], None] | None, lowest_priority: bool):
        self.then = then
        self.lowest_priority = lowest_priority

    def __call__(self, worker_id: int) -> None:
        if self.then is not None:
            self.then(worker_id)
        if self.lowest_priority:
            try:
                os.nice(19)
            except OSError:
                pass


def close_inherited(paths: tuple[str, ...], worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: close the descriptors of ``paths`` a forked worker inherited.

    Otherwise, after ``kill -9`` of the main process, orphaned workers keep the store's HDF5 lock and the
    writer lock for seconds. Closing a copy in the child leaves the parent's locks in place.
    """
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):  # no /proc: not Linux, where workers are spawned and inherit nothing
        return
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{name}") in paths:
                os.close(int(name))
        except OSError:
            pass
