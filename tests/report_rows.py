"""Result rows for tests of tables, figures and the HTML report (no data, no training)."""
from __future__ import annotations

import csv
import dataclasses

from featx.results import METRICS, ResultRow, Score


def make_row(name: str, score: float, std: float = 0.02, *, ci: bool = True, image_level: bool = False,
             protocol: str = "subject", label: str = "subject-level 5-fold", n_folds: int = 5, **extra) -> ResultRow:
    """A row scoring ``score`` on every metric (spread ``std``; a 95% CI of -5/+3 points unless ``ci=False``)."""
    scores = {m: Score(score, std, *((score - 0.05, score + 0.03) if ci else (None, None))) for m in METRICS}
    row = ResultRow(name=name, backbone=name.split("/")[0], tap="fc7", head=name.split(" + ")[-1], protocol=protocol,
                    protocol_label=label, image_level=image_level, n_folds=n_folds, n_train=80, n_test=100,
                    n_subjects=10, positive="all", classes=["all", "hem"], scores=scores,
                    confusion=[[60, 8], [4, 28]], roc={"fpr": [0, 0.1, 1], "tpr": [0, 0.8, 1]},
                    settings={"seed": 0})
    return dataclasses.replace(row, **extra)


def many_rows(n: int) -> list[ResultRow]:
    """``n`` rows scoring 85-98% in a scrambled order; every 7th image-level, every 3rd without a CI."""
    rows = []
    for i in range(n):
        score = 0.85 + 0.13 * ((i * 37) % n) / max(n - 1, 1)
        rows.append(make_row(f"net{i}/fc7 + svm", score, 0.01 + 0.002 * (i % 5), ci=i % 3 != 0,
                             image_level=i % 7 == 3, protocol="image" if i % 7 == 3 else "subject"))
    return rows


def csv_rows(path) -> list[dict]:
    """The lines of a CSV featx wrote (results.csv, a predictions file, a gallery's CSV) as dicts of text."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
