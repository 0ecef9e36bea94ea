"""`torchrun -m featx extract` on the CPU (gloo): two ranks write two shards that rank 0 merges into the
single-run store; a rank killed mid-run is resumed by running the same command again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from shard_helpers import KW, assert_same_store, tree_with_bad_images

from featx.errors import FeatxError
from featx.extract import extract

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["extract", "--backbone", "cnn", "--weights", "none", "--image-size", "32", "--workers", "0",
        "--batch-size", "4"]


@pytest.fixture(scope="module")
def work(cnmc_tree, tmp_path_factory):
    if not TORCHRUN.exists():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    base = tmp_path_factory.mktemp("torchrun")
    root, _ = tree_with_bad_images(cnmc_tree, base / "data")
    return dict(root=root, single=extract(root, base / "single.h5", **KW))


def _torchrun(target: list[str], root: Path, out: Path, **env) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 TARGET extract ROOT ... --out OUT`` (a free port each time)."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", *target, *ARGS[:1], str(root), *ARGS[1:],
           "--out", str(out)]
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1",
                   COLUMNS="200", **env)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=300, cwd=out.parent)


def test_torchrun_two_ranks_write_the_single_run_store(work, tmp_path):
    out = tmp_path / "cnn.h5"
    run = _torchrun(["-m", "featx"], work["root"], out)
    assert run.returncode == 0, run.stdout + run.stderr
    assert_same_store(work["single"], out)
    with h5py.File(out) as h5:
        assert h5.attrs["merged"] == "copy"
        assert [p["file"] for p in json.loads(h5.attrs["merged_from"])] == \
            ["cnn.part-0-of-2.h5", "cnn.part-1-of-2.h5"]
    # once OUT is complete the parts (and every lock file) are gone; rank 0 alone printed the summary with one
    # bar for all 34 rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.h5"]
    assert run.stdout.count("32/34 rows done") == 1 and "34/34" in run.stdout and "part-1" not in run.stdout


def test_a_killed_rank_is_resumed_by_the_same_command(work, tmp_path):
    out = tmp_path / "cnn.h5"
    log = tmp_path / "rows.log"
    driver = [str(REPO / "tests" / "torchrun_driver.py")]
    killed = _torchrun(driver, work["root"], out, FEATX_TEST_LOG=str(log), FEATX_TEST_KILL_RANK="1")
    assert killed.returncode != 0 and not out.exists()
    parts = [tmp_path / f"cnn.part-{r}-of-2.h5" for r in range(2)]
    with h5py.File(parts[1]) as h5:
        done_before = h5["samples/done"][:]
        kept = h5["features/fc"][:4].copy()
    assert done_before.sum() == 4 and done_before[:4].all()  # rank 1 died right after its first batch
    with h5py.File(parts[0]) as h5:
        done_0 = h5["samples/done"][:] | (h5["samples/error"].asstr()[:] != "")

    log.write_text("")
    resumed = _torchrun(driver, work["root"], out, FEATX_TEST_LOG=str(log))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    written = {0: [], 1: []}
    for line in log.read_text().split("\n"):
        if line:
            rank, row = map(int, line.split())
            written[rank].append(row)
    # each rank computed only the rows its part did not hold yet (rank 1: not its first batch again)
    assert sorted(written[1]) == [i for i in range(4, 17) if i != 8]  # row 8 of part 1 is the unreadable image
    assert set(written[0]) == {i for i in range(17) if not done_0[i] and i != 3}  # row 3: unreadable
    assert_same_store(work["single"], out)
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["features/fc"][17:21], kept)  # copied, not recomputed
    assert not any(p.exists() for p in parts)


def test_rank_0_stops_waiting_for_a_failed_or_silent_rank(monkeypatch):
    from torch.distributed import HashStore

    from featx.distributed import Launch, _Job

    monkeypatch.setattr("featx.distributed.POLL", 0.01)
    reports = []
    for state, needle in [("failed: disk full while writing x.part-1-of-2.h5", r"rank 1 failed \(disk full while"),
                          (None, r"rank 1 has reported no progress for 0 s \(FEATX_DIST_TIMEOUT\)")]:
        store = HashStore()
        job = _Job(Launch(0, 2, 0), 34, lambda done, total: reports.append((done, total)), 0.2, store=store)
        other = _Job(Launch(1, 2, 1), 34, None, 0.2, store=store)
        other.progress(8, 17)
        job.progress(4, 17)
        job.finish("ok", 17)
        if state:
            other.finish(state)
        with pytest.raises(FeatxError, match=needle):
            job.wait_for_all()
    assert (12, 34) in reports and (25, 34) in reports  # rank 0 shows the whole job's rows
    store = HashStore()
    job = _Job(Launch(0, 2, 0), 34, lambda done, total: reports.append((done, total)), 0.2, store=store)
    job.finish("ok", 17)
    _Job(Launch(1, 2, 1), 34, None, 0.2, store=store).finish("ok", 17)
    job.wait_for_all()
    assert reports[-1] == (34, 34)


def test_the_torchrun_environment_and_device_are_read_with_one_line_errors(monkeypatch):
    from featx.distributed import Launch, launch_from_env, rank_device, timeout_seconds

    assert launch_from_env({}) is None and launch_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert launch_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Launch(1, 4, 1)
    with pytest.raises(FeatxError, match="RANK=5 is outside WORLD_SIZE=4"):
        launch_from_env({"RANK": "5", "WORLD_SIZE": "4"})
    with pytest.raises(FeatxError, match="under torchrun each rank uses cuda:LOCAL_RANK"):
        rank_device("cuda:1", Launch(0, 2, 0))
    assert rank_device("cpu", Launch(1, 2, 1)).type == "cpu"
    monkeypatch.setenv("FEATX_DIST_TIMEOUT", "soon")
    with pytest.raises(FeatxError, match="FEATX_DIST_TIMEOUT='soon': give the time-out in seconds"):
        timeout_seconds()
