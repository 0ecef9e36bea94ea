"""The fast version of scripts/interval_study.py: at a small design (30 subjects, 2 HEM per test fold) featx's
intervals cover the truth, the paired test keeps its level, and intervals that ignore subjects do not cover.

Each bound allows 3 binomial standard deviations of the replicate count below its target (coverage) or above
it (false positives), so a correct method fails it with a chance under 0.2%; the targets are the issue's (0.90
at 30 subjects; 6% false positives). The full study (1,000 replicates per design, C-NMC size included) is the
script; its table is in docs/guide/intervals.md."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "interval_study.py"
REPS = 200


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("interval_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["interval_study"] = module  # joblib pickles its functions by module name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small(study):
    return study.Design("30 subjects (20 ALL + 10 HEM, 8-12 cells)", 20, 10, (8, 12), pop_subjects=600)


def _lower(target: float, n: int) -> float:
    return target - 3 * math.sqrt(target * (1 - target) / n)


def test_subject_intervals_cover_and_cell_intervals_do_not(study, small):
    res = study.coverage_study(small, REPS, methods=("jackknife", "images-as-unit"), n_train=40)
    bound = _lower(0.90, REPS)
    for metric, row in res["metrics"].items():
        jk = row["methods"]["jackknife"]
        assert jk["n_intervals"] == REPS, metric  # 2 subjects of each class in every test fold: an interval
        assert jk["coverage_conditional"] >= bound, (metric, jk)
    # cells taken as independent: intervals far too narrow for subject-level variation (the study's power)
    cells = [row["methods"]["images-as-unit"]["coverage_conditional"] for row in res["metrics"].values()]
    assert sum(cells) / len(cells) < 0.8, cells


def test_paired_test_keeps_its_level_on_equally_good_rows(study, small):
    d = small
    res = study.paired_study(d, REPS, signals=(d.signal, d.signal), n_train=40)
    for metric, v in res["metrics"].items():
        assert v["n"] == REPS
        assert v["excludes_zero"] <= 0.06 + 3 * math.sqrt(0.06 * 0.94 / REPS), (metric, v)
        assert v["excludes_zero"] == v["p_below_0.05"], (metric, v)  # the interval and the p-value agree
