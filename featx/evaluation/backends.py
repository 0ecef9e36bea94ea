"""Where the heads x folds grid runs: joblib's own worker processes (loky), a Dask cluster or a Ray cluster.

:func:`engine` opens the engine for one run and makes it joblib's backend for every ``Parallel`` inside it
(the grid, the selection, the inner searches); on leaving, it closes the client or cluster it started,
never one it was given. Every job carries its own seed, so which engine or worker runs it changes no number.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from joblib import parallel_config

from featx.errors import FeatxError, arg
from featx.evaluation.pool import cores_for

BACKENDS = ("loky", "dask", "ray")
CONNECT_TIMEOUT = 10.0  # seconds to reach a --scheduler before giving up

_active = threading.local()  # the engine open in this thread (joblib's backend setting is per thread too)


@dataclass
class Engine:
    """An open engine: ``backend`` name, ``scheduler`` address (None for loky), ``cores`` (CPU cores it offers),
    ``started`` (whether featx started the cluster) and ``n_jobs`` for ``joblib.Parallel`` under it."""

    backend: str
    scheduler: str | None
    cores: int
    started: bool
    n_jobs: int

    def describe(self) -> dict:
        """Where the grid ran, as run.json and every row's settings record it (``workers``: the cores)."""
        return {"backend": self.backend, "scheduler": self.scheduler, "workers": self.cores,
                "cluster": "local" if self.started else "given"}


def check_backend(backend: str, scheduler=None) -> str:
    """The backend's name, checked: known, installed, and given a ``scheduler`` only when it has one."""
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise FeatxError(f"{arg('backend', backend)}: unknown; choose {', '.join(BACKENDS)}")
    if scheduler is not None and name == "loky":
        raise FeatxError(f"{arg('scheduler')} needs {arg('backend', 'dask')} or {arg('backend', 'ray')}; loky runs "
                         "on this machine only")
    if name == "dask":
        _require("distributed", "dask")
    elif name == "ray":
        _require("ray.util.joblib", "ray")
    return name


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FeatxError(f"{arg('backend', extra)} needs {extra}, which is not installed: "
                         f"pip install 'featx[{extra}]'") from None


@contextmanager
def engine(backend: str = "loky", scheduler=None, jobs: int | None = 1) -> Iterator[Engine]:
    """Open ``backend`` for the ``joblib.Parallel`` calls inside the block; yields the :class:`Engine`.

    ``loky``: joblib's default, ``jobs`` processes on this machine. ``dask``: a ``dask.distributed`` client
    to ``scheduler`` (``tcp://host:8786``, or a ``Client`` object) or, without one, a ``LocalCluster`` of
    ``jobs`` single-threaded worker processes. ``ray``: ``ray.init(scheduler)`` (``ray://host:10001``,
    ``host:6379`` or ``auto``), the Ray already initialised in this process, or a local Ray with ``jobs``
    CPUs. On dask and ray the grid uses every core the cluster has. An engine already open in this thread
    for the same backend is reused (a grid inside :func:`featx.evaluation.compare` runs on compare's)."""
    name = check_backend(backend, scheduler)
    current = getattr(_active, "open", None)  # (backend, scheduler asked for, Engine)
    if current is not None and current[0] == name and (scheduler is None or scheduler is current[1]
                                                       or scheduler == current[1]):
        yield current[2]
        return
    opener = {"loky": _loky, "dask": _dask, "ray": _ray}[name]
    with opener(scheduler, jobs) as opened:
        _active.open = (name, scheduler, opened)
        try:
            yield opened
        finally:
            _active.open = current


@contextmanager
def _loky(scheduler, jobs: int | None) -> Iterator[Engine]:
    yield Engine("loky", None, cores_for(jobs), True, jobs)


@contextmanager
def _dask(scheduler, jobs: int | None) -> Iterator[Engine]:
    from distributed import Client, LocalCluster  # deferred: an optional extra (featx[dask]), checked first

    opened = []
    try:
        if isinstance(scheduler, Client):
            client = scheduler
        elif scheduler is not None:
            _dask_address(str(scheduler))
            client = _connect("dask", scheduler, lambda: Client(str(scheduler), timeout=CONNECT_TIMEOUT,
                                                                set_as_default=False))
            opened.append(client)
        else:
            cluster = LocalCluster(n_workers=cores_for(jobs), threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            opened.append(cluster)
            client = Client(cluster, set_as_default=False)
            opened.append(client)
        cores = sum(client.ncores().values())
        with parallel_config(backend="dask", client=client):
            yield Engine("dask", client.scheduler.address, cores, scheduler is None, -1)
    finally:
        for thing in reversed(opened):
            thing.close()


@contextmanager
def _ray(scheduler, jobs: int | None) -> Iterator[Engine]:
    # deferred: an optional extra (featx[ray]), checked first; joblib.pool is the class ray rebases
    import ray
    from joblib.pool import PicklingPool
    from ray.util.joblib import register_ray

    bases = PicklingPool.__bases__  # register_ray's backend rebases joblib's pool on Ray's: undone on leaving
    started = not ray.is_initialized()
    try:
        if started and scheduler is not None:
            _reachable("ray", str(scheduler))
            _ray_answers(str(scheduler))
            _connect("ray", scheduler, lambda: ray.init(address=str(scheduler), log_to_driver=False,
                                                        logging_level=logging.ERROR))
        elif started:
            ray.init(num_cpus=cores_for(jobs), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        register_ray()
        context = ray.get_runtime_context()
        address = getattr(context, "gcs_address", None) or str(scheduler or "local")
        cores = int(ray.cluster_resources().get("CPU", 0))
        with parallel_config(backend="ray"):
            yield Engine("ray", address, cores, started and scheduler is None, -1)
    finally:
        PicklingPool.__bases__ = bases
        if started and ray.is_initialized():
            ray.shutdown()


def _dask_address(address: str) -> None:
    """Refuse an address Dask cannot use from here, and fail fast on a TCP one that does not answer (a
    half-made ``Client`` would otherwise wait on its way out)."""
    # deferred: an optional extra (featx[dask])
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme == "inproc":
            raise ValueError("an inproc:// address is valid only inside its own process; pass the Client itself")
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise _unreachable("dask", address, exc) from None
    if scheme in ("tcp", "tls", "ws", "wss"):
        _reachable("dask", address)
    if scheme in ("tcp", "ws"):
        _dask_identity(address)


def _dask_identity(address: str) -> None:
    """Ask ``address`` who it is, within :data:`CONNECT_TIMEOUT` seconds: a port that answers but is not a
    Dask scheduler would keep ``Client`` waiting for ever."""
    from distributed.core import rpc  # deferred: an optional extra (featx[dask])

    async def identity():
        async with rpc(address, timeout=CONNECT_TIMEOUT) as remote:
            return await remote.identity()

    with ThreadPoolExecutor(1) as pool:  # an event loop of its own, also under a running one (Jupyter)
        try:
            info = pool.submit(asyncio.run, asyncio.wait_for(identity(), CONNECT_TIMEOUT)).result()
        except asyncio.TimeoutError:
            raise _unreachable("dask", address, f"no Dask scheduler answered in {CONNECT_TIMEOUT:g} s") from None
        except (OSError, ValueError) as exc:
            raise _unreachable("dask", address, exc) from None
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        raise _unreachable("dask", address, ValueError(f"it answers, but as {info!r}, not as a Dask scheduler"))


def _ray_answers(address: str) -> None:
    """Wait at most :data:`CONNECT_TIMEOUT` seconds for ``address`` to speak gRPC, as a Ray head (GCS or Ray
    Client server) does: Ray itself retries for minutes on a port that answers but is not Ray."""
    host_port = _host_port(address)
    try:
        import grpc  # deferred: comes with ray[client], which may be missing
    except ImportError:  # Ray Client needs grpcio anyway (ray[client]); a GCS address is left to Ray
        return
    if host_port is None:
        return
    channel = grpc.insecure_channel(f"{host_port[0]}:{host_port[1]}")
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
    except grpc.FutureTimeoutError:
        raise _unreachable("ray", address, f"no Ray cluster answered in {CONNECT_TIMEOUT:g} s") from None
    finally:
        channel.close()


def _host_port(address: str) -> tuple[str, int] | None:
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        return (parts.hostname, parts.port) if parts.hostname and parts.port else None
    except ValueError:
        return None


def _reachable(backend: str, address: str) -> None:
    """Fail in :data:`CONNECT_TIMEOUT` seconds when a ``host:port`` address does not answer (Ray itself would
    wait minutes for a cluster that is not there, Dask retries a refused port until its timeout). ``auto``
    and addresses without a port are left to the engine."""
    host_port = _host_port(address)
    if host_port is None:
        return
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise _unreachable(backend, address, exc) from None


def _connect(backend: str, address, connect):
    """``connect()``, with any failure to reach ``address`` turned into one line."""
    try:
        return connect()
    except (OSError, ValueError, RuntimeError) as exc:
        raise _unreachable(backend, address, exc) from None


def _unreachable(backend: str, address, exc: Exception | str) -> FeatxError:
    why = " ".join(str(exc).split()) or type(exc).__name__
    start = "dask scheduler" if backend == "dask" else "ray start --head"
    return FeatxError(f"{arg('scheduler', address)}: cannot reach the {backend.capitalize()} cluster ({why}); "
                      f"check the address, start one (`{start}`) or leave {arg('scheduler')} out for a "
                      "local cluster")
