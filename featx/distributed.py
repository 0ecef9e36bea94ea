"""Extraction under torchrun: each rank extracts one shard, rank 0 merges the shards into the store.

``torchrun --nproc-per-node N -m featx extract DATA --out OUT`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (several nodes: ``--nnodes`` and a rendezvous; OUT must
then be on a file system every node shares). Rank r joins the process group (NCCL on CUDA, each rank on
``cuda:LOCAL_RANK``; gloo on the CPU), extracts shard ``r/N`` into the part ``<stem>.part-<r>-of-<N>.h5``
beside OUT (:func:`featx.store.part_path`: a normal, resumable shard store) and says so through the process
group's key-value store; rank 0 waits for every rank, merges the parts into OUT and deletes them once OUT is
complete (a failed merge keeps them). If a rank dies, running the same command again resumes every part
where it stopped. Once OUT exists, running the command again resumes OUT in rank 0 alone, as a single process
would (the other ranks have nothing to do).

Progress: every rank posts its rows done to the key-value store after each batch; rank 0 reports the sum
over all ranks, against the whole collection, through ``on_progress`` (one bar for the job). Time-outs:
joining the process group and each key-value read give up after ``FEATX_DIST_TIMEOUT`` seconds (default
1800), and rank 0 gives up waiting for a rank that reports no progress for that long; the parts stay.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from featx.data import Collection, discover
from featx.device import resolve_device
from featx.errors import FeatxError, arg
from featx.extract import extract
from featx.extract_settings import ExtractRun, ExtractSettings, extract_arguments
from featx.store import Shard, lock_path, merge_stores, part_path, shard_rows

TIMEOUT_ENV = "FEATX_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0
POLL = 0.5  # seconds between rank 0's looks at the other ranks while it waits


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int


def launch_from_env(env=None) -> Launch | None:
    """The torchrun job this process belongs to (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); None when it was
    not started by torchrun or the job has one process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        launch = Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    except ValueError:
        raise FeatxError(f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}: not the integers "
                         "torchrun sets; unset them to run one process") from None
    if launch.world <= 1:
        return None
    if not 0 <= launch.rank < launch.world:
        raise FeatxError(f"RANK={launch.rank} is outside WORLD_SIZE={launch.world}; start the job with torchrun")
    return launch


def timeout_seconds() -> float:
    """``FEATX_DIST_TIMEOUT`` (seconds), default 1800."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise FeatxError(f"{TIMEOUT_ENV}={text!r}: give the time-out in seconds, e.g. 1800") from None
    if value <= 0:
        raise FeatxError(f"{TIMEOUT_ENV}={text!r}: must be more than 0 seconds")
    return value


def rank_device(device: str, launch: Launch) -> torch.device:
    """``auto`` and ``cuda``: ``cuda:LOCAL_RANK`` when CUDA is present (else the CPU); ``cpu`` stays the CPU."""
    spec = (device or "auto").lower()
    if spec not in ("auto", "cpu", "cuda"):
        raise FeatxError(f"{arg('device', device)}: under torchrun each rank uses cuda:LOCAL_RANK; pass "
                         f"{arg('device', 'cuda')}, {arg('device', 'cpu')} or {arg('device', 'auto')}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device("cuda")  # one line when CUDA was asked for and is absent
    if launch.local_rank >= torch.cuda.device_count():
        raise FeatxError(f"LOCAL_RANK={launch.local_rank}: this node has {torch.cuda.device_count()} CUDA "
                         "device(s); start at most that many processes per node (--nproc-per-node)")
    return torch.device("cuda", launch.local_rank)


def extract_ranks(data: str | Path | Collection, out: str | Path, settings: ExtractSettings | None = None, *,
                  run: ExtractRun | None = None, on_progress: Callable[[int, int], None] | None = None,
                  launch: Launch | None = None, **options) -> Path:
    """This rank's part of a torchrun extraction into ``out`` (see the module); returns ``out`` on rank 0 and
    the rank's part elsewhere. ``settings``, ``run`` and ``options`` are :func:`featx.extract.extract`'s (not
    ``shard``: torchrun picks it). ``on_progress(done, total)`` is called on rank 0 only, with the whole job's
    rows."""
    settings, run = extract_arguments(settings, run, options, func="extract_ranks")
    launch = launch or launch_from_env()
    if launch is None:
        raise FeatxError("not started by torchrun (no RANK and WORLD_SIZE > 1 in the environment); start the "
                         "program with `torchrun --nproc-per-node N`, or call `featx.extract(...)` in one process")
    if run.shard is not None:
        raise FeatxError(f"{arg('shard')} and torchrun choose the shard both; drop {arg('shard')} (torchrun gives "
                         "each rank its own)")
    dev = rank_device(run.device, launch)
    timeout = timeout_seconds()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:
        raise FeatxError(f"rank {launch.rank}: cannot join the torchrun process group "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}) within {timeout:.0f} s "
                         f"({TIMEOUT_ENV}); check that every rank started") from None
    try:
        return _run(data, Path(out), dev, on_progress, launch, timeout, settings, run)
    finally:
        dist.destroy_process_group()


def _run(data, out: Path, dev: torch.device, on_progress, launch: Launch, timeout: float,
         settings: ExtractSettings, run: ExtractRun) -> Path:
    splits = run.splits
    run = replace(run, splits=None, device=str(dev))  # the collection below is chosen already
    collection = data if isinstance(data, Collection) else discover(data, splits)
    if isinstance(data, Collection) and splits:
        collection = data.subset([i for i, s in enumerate(data.samples) if s.split in set(splits)])
    if out.exists():  # the job finished before (or one process made OUT): rank 0 resumes it as a single run would
        if launch.rank == 0:
            return extract(collection, out, settings, run=run, on_progress=on_progress)
        return out
    job = _Job(launch, len(collection.samples), on_progress if launch.rank == 0 else None, timeout)
    shard = Shard(launch.rank, launch.world)
    part = part_path(out, shard)
    try:
        extract(collection, part, settings, run=replace(run, shard=shard), on_progress=job.progress)
    except BaseException as exc:
        job.finish(f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        raise
    job.finish("ok", len(shard_rows(len(collection.samples), shard)))
    if launch.rank != 0:
        return part
    job.wait_for_all()
    parts = [part_path(out, Shard(r, launch.world)) for r in range(launch.world)]
    merge_stores(parts, out)
    for p in parts:  # OUT is complete: the parts are copies now
        p.unlink(missing_ok=True)
        lock_path(p).unlink(missing_ok=True)
    return out


class _Job:
    """Rows done per rank and each rank's end, through the process group's key-value store."""

    def __init__(self, launch: Launch, total: int, report, timeout: float, store=None):
        self.launch = launch
        self.total = total
        self.report = report
        self.timeout = timeout
        # a torchrun restart (--max-restarts) starts a new round of keys in the same store
        self.prefix = f"featx/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.store = store if store is not None else dist.distributed_c10d._get_default_store()

    def _get(self, key: str) -> str | None:
        key = f"{self.prefix}/{key}"
        return self.store.get(key).decode() if self.store.check([key]) else None

    def progress(self, done: int, total: int) -> None:
        self.store.set(f"{self.prefix}/done/{self.launch.rank}", str(done))
        if self.report is not None:
            self.report(self._done_all(), self.total)

    def _done_all(self) -> int:
        return sum(int(self._get(f"done/{r}") or 0) for r in range(self.launch.world))

    def finish(self, state: str, rows: int | None = None) -> None:
        if rows is not None:
            self.store.set(f"{self.prefix}/done/{self.launch.rank}", str(rows))
        self.store.set(f"{self.prefix}/end/{self.launch.rank}", state)

    def wait_for_all(self) -> None:
        """Rank 0: until every rank has finished its part; FeatxError when one failed or went silent."""
        seen = {r: (None, time.monotonic()) for r in range(self.launch.world)}
        while True:
            ended = {r: self._get(f"end/{r}") for r in range(self.launch.world)}
            failed = [r for r, state in ended.items() if state and state != "ok"]
            if failed:
                r = failed[0]
                raise FeatxError(f"rank {r} failed ({ended[r].removeprefix('failed: ')}); the parts are kept: fix "
                                 "that and run the same torchrun command again to resume")
            if all(state == "ok" for state in ended.values()):
                if self.report is not None:
                    self.report(self._done_all(), self.total)  # the bar ends at the job's whole count
                return
            now = time.monotonic()
            for r in range(self.launch.world):
                done = self._get(f"done/{r}")
                if done != seen[r][0]:
                    seen[r] = (done, now)
                elif ended[r] is None and now - seen[r][1] > self.timeout:
                    raise FeatxError(f"rank {r} has reported no progress for {self.timeout:.0f} s ({TIMEOUT_ENV}); "
                                     "the parts are kept: run the same torchrun command again to resume")
            if self.report is not None:
                self.report(self._done_all(), self.total)
            time.sleep(POLL)
