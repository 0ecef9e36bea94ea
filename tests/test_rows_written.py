"""Rows that `featx compare` and `featx finetune` write read back as the very ResultRows they were built as,
from results.json and from results.csv, and `featx table` shows them."""
from __future__ import annotations

import pytest
from cli_helpers import invoke

from featx.finetune import finetune
from featx.results import ResultRow, read_json, rows_from_csv
from featx.workflows.classify import run_compare

pytestmark = pytest.mark.usefixtures("wide_console")


def _as_written(row: ResultRow) -> ResultRow:
    """What a results file holds of a row: everything but the out-of-fold predictions (their own CSVs)."""
    return ResultRow.from_dict(row.to_dict())


def _same_rows(written: list[ResultRow], built: list[ResultRow]) -> None:
    assert len(written) == len(built) > 0
    for w, b in zip(written, built):
        assert w == _as_written(b), w.name


@pytest.mark.slow
def test_compare_rows_round_trip_through_json_and_csv(cnn_store, tmp_path):
    result = run_compare([cnn_store], ["logistic", "knn"], [["fc"], ["fc", "pool5"]], cv=["subject", "image"],
                         n_folds=3, out=tmp_path, plots=False)
    rows = result.rows
    assert all(isinstance(r, ResultRow) for r in rows) and len(rows) == 2 * 2 * 2
    assert {r.flag for r in rows} == {"", "IMAGE-LEVEL"} and all(r.predictions for r in rows)
    _same_rows(read_json(tmp_path / "results.json"), rows)
    _same_rows(rows_from_csv(tmp_path / "results.csv"), rows)


def test_compare_cli_rows_read_back_equal_from_both_files(cnn_store, tmp_path):
    result, _ = invoke("compare", str(cnn_store), "--heads", "logistic", "--taps", "fc,fc+pool5", "--folds", "3",
                       "--no-plots", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    from_json = read_json(tmp_path / "results.json")
    assert [r.name for r in from_json] == ["cnn/fc + logistic", "cnn/fc+pool5 + logistic"]
    assert rows_from_csv(tmp_path / "results.csv") == from_json


@pytest.mark.slow
def test_finetune_row_round_trips_and_table_reads_both_kinds(cnmc_tree, cnn_store, tmp_path):
    run = tmp_path / "run"
    summary = finetune(cnmc_tree, run, backbone="cnn", weights="none", image_size=32, epochs=1, batch_size=8,
                       val="fold_2", workers=0, device="cpu")
    row = summary["row"]
    assert isinstance(row, ResultRow) and row.head is None and row.kind == "network" and row.tap == "logits"
    assert all(s.std is None for s in row.scores.values())  # one validation set: no spread over folds
    _same_rows(read_json(run / "results.json"), [row])
    _same_rows(rows_from_csv(run / "results.csv"), [row])

    heads = tmp_path / "heads"
    run_compare([cnn_store], ["logistic"], n_folds=3, out=heads, plots=False)
    result, text = invoke("table", str(heads), str(run), "--out", str(tmp_path / "table"))
    assert result.exit_code == 0, result.output
    assert "cnn/fc + logistic" in text and "cnn fine-tuned" in text
    merged = read_json(tmp_path / "table" / "results.json")
    assert [r.kind for r in merged] == ["head", "network"]
    assert merged[1] == _as_written(row)
