"""`featx compare/classify --backend dask|ray`: the heads x folds grid on a cluster gives the default backend's
table; a missing engine or an unreachable --scheduler is one line, not a traceback or a hang."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from cli_helpers import invoke

from featx.errors import FeatxError
from featx.evaluation import backends, compare
from featx.heads import make_head
from featx.results import METRICS
from featx.workflows.classify import run_classify

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

HEADS = "logistic,softmax,knn"
GRID = ["--heads", HEADS, "--cv", "subject", "--folds", "3", "--no-plots"]
needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="dask.distributed is not installed (pip install 'featx[dask]')")
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'featx[ray]'); the ray backend is untested")


@pytest.fixture(scope="module")
def store(cnn_store):
    """conftest's shared cnn store of the tiny C-NMC tree (32 px, seed 0; read-only)."""
    return cnn_store


@pytest.fixture(scope="module")
def default_table(store, tmp_path_factory):
    """results.csv of the grid on the default backend (loky, one process)."""
    out = tmp_path_factory.mktemp("loky") / "out"
    result, _ = invoke("compare", store, *GRID, "--out", out)
    assert result.exit_code == 0, result.output
    return _rows(out)


def _rows(out) -> dict[str, dict]:
    with (out / "results.csv").open(newline="") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def _same_numbers(rows: dict, expected: dict) -> None:
    assert sorted(rows) == sorted(expected) and len(rows) == len(HEADS.split(","))
    for name, row in rows.items():
        for col in [m + s for m in METRICS for s in ("", "_std", "_ci_low", "_ci_high")]:
            a, b = row.get(col, ""), expected[name].get(col, "")
            if a == "" or b == "":
                assert a == b, (name, col)
            else:
                assert float(a) == pytest.approx(float(b), abs=1e-9), (name, col, a, b)
        for col in ("confusion", "n_train", "n_test", "n_subjects", "protocol_label"):
            assert row[col] == expected[name][col], (name, col)


def _manifest(out) -> dict:
    return json.loads((out / "run.json").read_text())


# ---- dask --------------------------------------------------------------------------------------------------
@needs_dask
def test_compare_on_a_local_dask_cluster_gives_the_default_table(store, default_table, tmp_path):
    out = tmp_path / "dask"
    result, text = invoke("compare", store, *GRID, "--backend", "dask", "--jobs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "ran on dask (local cluster tcp://" in text and "2 workers)" in text
    _same_numbers(_rows(out), default_table)
    run = _manifest(out)["run"]
    assert run["backend"] == "dask" and run["cluster"] == "local" and run["workers"] == 2
    assert run["scheduler"].startswith("tcp://")
    assert {r["settings.backend"] for r in _rows(out).values()} == {"dask"}
    assert {r["settings.backend"] for r in default_table.values()} == {"loky"}


@needs_dask
def test_a_given_dask_client_runs_the_grid_and_is_left_open(store, default_table, tmp_path):
    """Several threads per worker (as `dask worker` starts by default): a job's numbers do not depend on the
    thread or worker that runs it; featx never closes a client or cluster it was given."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        rows = compare([store], HEADS.split(","), cv="subject", n_folds=3, backend="dask",
                       scheduler=client)
        assert client.status == "running" and cluster.status.name == "running"
        one = run_classify(store, "softmax", cv="subject", n_folds=3, out=tmp_path, plots=False,
                           backend="dask", scheduler=client)
        assert client.status == "running"
        address = client.scheduler.address
    assert _manifest(tmp_path)["run"] == {"backend": "dask", "scheduler": address, "workers": 3, "cluster": "given"}
    expected = default_table["cnn/fc + softmax"]
    assert one.row.scores["f1_weighted"].mean == pytest.approx(float(expected["f1_weighted"]), abs=1e-9)
    got = {r.name: r for r in rows}
    for name, expected in default_table.items():
        for m in METRICS:
            mean = got[name].scores[m].mean
            assert (mean is None and expected[m] == "") or mean == pytest.approx(float(expected[m]), abs=1e-9)
        assert got[name].settings["backend"] == "dask"


def test_softmax_fits_in_threads_give_the_serial_numbers():
    """torch's generator is one per process; concurrent fits must not draw from each other's stream."""
    rng = np.random.RandomState(0)
    X = rng.randn(120, 16)
    y = (X[:, 0] + rng.randn(120) > 0).astype(int)

    def fit(seed):
        return make_head("softmax", seed=seed, device="cpu").fit(X, y).predict_proba(X)

    serial = [fit(s) for s in range(6)]
    with ThreadPoolExecutor(6) as pool:
        threaded = list(pool.map(fit, range(6)))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


# ---- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine, module", [("dask", "distributed"), ("ray", "ray.util.joblib")])
def test_an_engine_not_installed_is_one_line_naming_the_extra(store, tmp_path, monkeypatch, engine, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    out = tmp_path / "out"
    result, text = invoke("compare", store, *GRID, "--backend", engine, "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert f"--backend {engine} needs {engine}, which is not installed: pip install 'featx[{engine}]'" in text
    assert not out.exists()  # refused before any fit


def test_unknown_backend_and_a_scheduler_without_a_cluster_are_refused(store, tmp_path):
    result, text = invoke("compare", store, *GRID, "--backend", "spark", "--out", tmp_path / "a")
    assert result.exit_code == 1 and "--backend spark: unknown; choose loky, dask, ray" in text
    result, text = invoke("classify", store, "--scheduler", "tcp://127.0.0.1:8786", "--out", tmp_path / "b")
    assert result.exit_code == 1 and "--scheduler needs --backend dask or --backend ray" in text
    with pytest.raises(FeatxError, match=r"backend='spark': unknown"):
        backends.check_backend("spark")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word (some other service, not a cluster)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.mark.parametrize("engine, address", [
    pytest.param("dask", "tcp://127.0.0.1:{closed}", marks=needs_dask),
    pytest.param("dask", "tcp://127.0.0.1:{silent}", marks=needs_dask),
    pytest.param("dask", "tcp://192.0.2.1:8786", marks=needs_dask),   # TEST-NET-1: nobody there
    pytest.param("ray", "127.0.0.1:{closed}", marks=needs_ray),
    pytest.param("ray", "ray://127.0.0.1:{silent}", marks=needs_ray),
    pytest.param("ray", "ray://192.0.2.1:10001", marks=needs_ray),
])
def test_an_unreachable_scheduler_is_one_line_after_the_timeout(store, tmp_path, monkeypatch, silent_port, engine,
                                                                address):
    monkeypatch.setattr(backends, "CONNECT_TIMEOUT", 2.0)
    address = address.format(closed=_closed_port(), silent=silent_port)
    out = tmp_path / "out"
    result, text = invoke("compare", store, *GRID, "--backend", engine, "--scheduler", address, "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert f"--scheduler {address}: cannot reach the {engine.capitalize()} cluster" in text
    assert not (out / "results.csv").exists()


# ---- ray ----------------------------------------------------------------------------------------------------
@needs_ray
def test_compare_on_a_local_ray_gives_the_default_table(store, default_table, tmp_path):
    from joblib.pool import PicklingPool

    bases = PicklingPool.__bases__
    out = tmp_path / "ray"
    result, _ = invoke("compare", store, *GRID, "--backend", "ray", "--jobs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    _same_numbers(_rows(out), default_table)
    run = _manifest(out)["run"]
    assert run["backend"] == "ray" and run["cluster"] == "local" and run["workers"] == 2
    import ray

    assert not ray.is_initialized() and PicklingPool.__bases__ == bases  # featx's local Ray is gone, joblib as it was


@pytest.mark.parametrize("command", ["compare", "classify"])
def test_help_names_the_extras(command):
    result, _ = invoke(command, "--help")
    text = re.sub(r"[\s│]+", " ", result.output)  # the help's box, unwrapped
    assert result.exit_code == 0 and "pip install 'featx[dask]' / 'featx[ray]'" in text and "--scheduler" in text
