"""The 80-column terminal: results tables that never cut a number, help that reads at 80 columns, flags shown
as flags, `featx --version`, and `--tap`/`--taps` accepted by every command that chooses taps."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer.main
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from featx.cli import app
from featx.cli.app import console as cli_console
from featx.cli.results_table import results_table
from featx.report import protocol_title, write_results
from featx.report.table import TERMINAL_METRICS, name_pieces
from featx.results import METRICS, ResultRow, Score
from featx.store import summarize
from tests.report_rows import make_row

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def console_follows_columns(monkeypatch):
    """The CLI's console reads COLUMNS at each print (as in a real terminal), whatever width it was made with."""
    monkeypatch.setattr(cli_console, "_width", None)


def _row(name, protocol="subject", *, base, std, n_folds=5, head="svm", **extra) -> ResultRow:
    """A row whose every metric has its own mean and std, so each number appears once in a table."""
    scores = {m: Score(base - 0.0111 * i, None if std is None else std + 0.0013 * i, base - 0.05, base)
              for i, m in enumerate(METRICS)}
    row = ResultRow(name=name, backbone=name.split("/")[0], tap="fc7", head=head, protocol=protocol,
                    protocol_label=f"{protocol} {n_folds}-fold", image_level=False, n_folds=n_folds, n_train=80,
                    n_test=20, n_subjects=10, classes=["all", "hem"], positive="all", scores=scores)
    return dataclasses.replace(row, **extra)


ROWS = [_row("vgg16/fc7 + svm", base=0.8981, std=0.0895),
        _row("vgg16+alexnet/fc7+pool5 + xgboost", base=1.0, std=0.1),
        _row("alexnet/fc7 + logistic", "image", base=0.9744, std=0.012, image_level=True),
        _row("cnn[run/best.pt]/fc + knn", base=0.7712, std=0.0456, optimistic=True, partial="12 of 20 rows"),
        _row("vgg16/pool5 + softmax", base=0.8555, std=0.0321, selection_uncorrected=True,
             settings={"n_candidates": 4}),
        _row("vgg16/fc7 + svm", "prelim", base=0.9133, std=None, n_folds=1)]


def _numbers(row: ResultRow, metric: str) -> list[str]:
    score = row.score(metric)
    out = [f"{100 * score.mean:.2f}"]
    return out + ([f"± {100 * score.std:.2f}"] if score.std is not None else [])


def _assert_every_number_whole(text: str, width: int, rows=ROWS) -> list[str]:
    """Every line fits; no number is cut, every shown metric's numbers appear whole, once per row; a metric not
    shown is named in the note under the table. Returns the headers shown."""
    lines = text.splitlines()
    assert max(cell_len(line) for line in lines) <= width, text
    assert "…" not in text and "..." not in text, text
    header = next(line for line in lines if line.lstrip().startswith("Model"))
    shown = [h for _, h in TERMINAL_METRICS if re.search(rf"(?<![\w-]){re.escape(h)}(?![\w-])", header)]
    flat = " ".join(text.split())
    for metric, head in TERMINAL_METRICS:
        if head not in shown:
            assert re.search(rf"{re.escape(head)}[^.;]* not shown at {width} columns", flat), (head, text)
            continue
        for row in rows:
            for number in _numbers(row, metric):
                pattern = rf"(?<![\d.]){re.escape(number)}(?![\d])"
                assert len(re.findall(pattern, text)) == 1, (number, head, row.name, text)
    for marker in ("IMAGE-LEVEL", "OPTIMISTIC", "PARTIAL", "\u2020"):  # in its row and in the note explaining it
        assert len(re.findall(rf"(?<![\w-]){marker}(?![\w-])", text)) >= 2, (marker, text)
    return shown


@pytest.mark.parametrize("width", [60, 80, 100, 132, 200])
def test_rich_table_never_cuts_a_number(width):
    out = Console(width=width, record=True)
    out.print(results_table(ROWS, title="featx compare"))
    text = out.export_text()
    shown = _assert_every_number_whole(text, width)
    assert {"Accuracy", "wF1"} <= set(shown)  # the study's headline and the challenge's metric always stay
    if width >= 132:
        assert shown == [h for _, h in TERMINAL_METRICS]
    if width == 80:
        assert len(shown) >= 4
    # the table built for an explicit width is the same
    again = Console(width=width, record=True)
    again.print(results_table(ROWS, title="featx compare", width=width))
    assert again.export_text() == text


LONG_NAMES = ["vgg16[vgg16/best.pt]/fc7 + svm", "cnn[fine-tuned per fold]/fc + logistic",
              "efficientnet_b0+vgg16/features.7+fc7 + xgboost", "alexnet/fc7 + svm"]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_long_names_wrap_between_words_and_rows_stay_apart(width):
    rows = [make_row(name, 0.9 - 0.01 * i) for i, name in enumerate(LONG_NAMES)]
    out = Console(width=width, record=True)
    out.print(results_table(rows, title="featx compare"))
    lines = out.export_text().splitlines()
    assert max(cell_len(line) for line in lines) <= width
    body = lines[next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("─")) + 1:]
    body = body[:next(i for i, ln in enumerate(body) if "not shown" in ln or "sample std" in ln)]
    name_w = body[0].index(" subject") + 1   # the name column: up to the protocol column
    blocks, block = [], []   # each row's lines, between blank lines
    for line in body:
        if line.strip():
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    blocks += [block] if block else []
    assert len(blocks) == len(rows), "\n".join(lines)   # a blank line between rows
    for row, block in zip(rows, blocks):
        name_lines = [ln[:name_w].strip() for ln in block]
        assert " ".join(n for n in name_lines if n).replace("/ ", "/").replace("[ ", "[") == row.name, block
        for piece in name_pieces(row.name):   # every piece whole on one line of its row
            assert any(piece.strip() in n for n in name_lines), (piece, block)
        assert sum("± 2.00" in ln for ln in block) == 1 and f"{100 * row.score('accuracy').mean:.2f}" in block[0]
    assert len(blocks[0]) > 1   # the long names do wrap at these widths


def test_narrow_tables_stack_the_sd_under_the_mean_before_dropping_columns():
    out = Console(width=100, record=True)
    out.print(results_table(ROWS[:1], title="t"))
    text = out.export_text()
    line = next(ln for ln in text.splitlines() if "89.81" in ln)
    assert "± 8.95" not in line  # on the next line of the same cell
    below = text.splitlines()[text.splitlines().index(line) + 1]
    assert "± 8.95" in below and "not shown" not in text
    wide = Console(width=200, record=True)
    wide.print(results_table(ROWS[:1], title="t"))
    assert "89.81 ± 8.95" in wide.export_text()


@pytest.mark.parametrize("width", [60, 80, 132])
def test_featx_table_at_COLUMNS(tmp_path, width):
    write_results(ROWS, tmp_path / "res", plots=False)
    result = runner.invoke(app, ["table", str(tmp_path / "res")], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    _assert_every_number_whole(result.output, width)
    assert "featx (mean ± sd over folds; held-out rows: one split, %)" in " ".join(result.output.split())


@pytest.mark.slow
def test_featx_table_in_a_real_terminal_width_of_80(tmp_path):
    """The console of a fresh process reads COLUMNS as a shell sets it."""
    write_results(ROWS, tmp_path / "res", plots=False)
    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "featx", "table", str(tmp_path / "res")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _assert_every_number_whole(proc.stdout, 80)


def test_the_title_says_the_protocol():
    folds, held = ROWS[0], ROWS[-1]
    network = _row("vgg16 fine-tuned", "1/5 of subjects", base=0.9, std=None, n_folds=1, head=None)
    hybrid = _row("vgg16 tuned", "hybrid", base=0.9, std=0.01, n_folds=4, head=None)
    assert protocol_title([folds]) == "mean ± sd over 5 subject-grouped folds"
    assert protocol_title([ROWS[2]]) == "mean ± sd over 5 image-level folds"
    assert protocol_title([held]) == "one held-out split (prelim)"
    assert protocol_title([network]) == "fine-tuned network, one validation split"
    assert protocol_title([hybrid]) == "mean ± sd over 4 subject-grouped folds"
    assert protocol_title([folds, ROWS[2]]) == "mean ± sd over 5 folds"
    assert protocol_title([folds, held]) == "mean ± sd over folds; held-out rows: one split"
    out = Console(width=80, record=True)
    out.print(results_table([network], title="featx finetune"))
    text = " ".join(out.export_text().split())
    assert "featx finetune (fine-tuned network, one validation split, %)" in text
    assert "over folds" not in text and "one split, so no ±" in text


# ---- help at 80 columns -------------------------------------------------------------------------------------
def _commands():
    group = typer.main.get_command(app)
    return [([], group), *(([name], cmd) for name, cmd in group.commands.items())]


@pytest.mark.parametrize("args, command", _commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_help_reads_at_80_columns(args, command):
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    assert "<bool>" not in text and "…" not in text
    lines = text.splitlines()
    for param in command.params:
        if param.param_type_name != "option":
            continue
        for opt in [*param.opts, *param.secondary_opts]:  # every spelling whole
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{args} --help cuts {opt}"
        # the help text starts on the option's line, in a column at least 30 characters wide
        first = param.help.split()[0]
        line = next(ln for ln in lines if re.match(rf"│ [* ]{{0,3}}{re.escape(param.opts[0])}(?![\w-])", ln))
        start = line.find(first, line.index(param.opts[0]) + len(param.opts[0]))
        assert 0 < start <= 80 - 2 - 30, f"{args} {param.opts[0]}: help squeezed\n{line}"


def test_flags_show_as_flags():
    text = runner.invoke(app, ["finetune", "--help"], env={"COLUMNS": "80"}).output
    line = next(ln for ln in text.splitlines() if "--color-jitter" in ln)
    assert "--no-color-jitter" in line and "<" not in line
    line = next(ln for ln in text.splitlines() if ln.startswith("│ --resume"))
    assert re.search(r"--resume\s+Continue", line)


# ---- --version -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith(f"featx {metadata.version('featx')} (")
    assert f"torch {metadata.version('torch')}" in line and f"torchvision {metadata.version('torchvision')}" in line
    assert len(result.output.splitlines()) == 1


@pytest.mark.slow
def test_version_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from featx.cli import app; "
            "r = CliRunner().invoke(app, ['--version']); print(r.exit_code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0", "False"], proc.stderr


@pytest.mark.slow
def test_the_cli_and_torch_load_without_full_collections():
    """Importing torch and torchvision with the collector running cost 0.6-1.2 s of every command's 3-4 s start:
    featx's CLI and then torch now load with it paused, and what they allocated is frozen."""
    code = ("import gc, sys; full = lambda: gc.get_stats()[2]['collections']; a = full(); import featx.cli; "
            "from featx.imports import import_paused; b = full(); import_paused('torch', 'torchvision'); "
            "print(b - a, full() - b, gc.isenabled(), gc.get_freeze_count() > 200_000, 'torchvision' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0", "0", "True", "True", "True"], proc.stdout + proc.stderr


def test_every_command_that_runs_a_network_loads_torch_first():
    group = typer.main.get_command(app)
    first = {name for name, cmd in group.commands.items() if getattr(cmd.callback, "loads_torch", False)}
    assert first == {"backbones", "explain", "extract", "finetune", "hybrid", "predict"}


# ---- --tap and --taps ------------------------------------------------------------------------------------------
def test_every_command_that_chooses_taps_takes_both_spellings():
    group = typer.main.get_command(app)
    choosing = {name: p for name, cmd in group.commands.items() for p in cmd.params if p.name in ("tap", "taps")}
    assert {"classify", "compare", "extract", "hybrid"} <= set(choosing)
    for name, param in choosing.items():
        assert {"--tap", "--taps"} <= set(param.opts), (name, param.opts)


@pytest.fixture(scope="module")
def two_tap_store(cnmc_tree, tmp_path_factory):
    """A cnn store of the tiny C-NMC tree with taps fc and pool5, written by `featx extract --tap fc,pool5`."""
    out = tmp_path_factory.mktemp("taps") / "cnn.h5"
    result = runner.invoke(app, ["extract", str(cnmc_tree), "--backbone", "cnn", "--weights", "none",
                                 "--image-size", "32", "--tap", "fc,pool5", "--workers", "0", "--device", "cpu",
                                 "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("command, spelling", [("classify", "--tap"),
                                               pytest.param("classify", "--taps", marks=pytest.mark.slow),
                                               pytest.param("compare", "--tap", marks=pytest.mark.slow),
                                               ("compare", "--taps")])
def test_classify_and_compare_take_tap_and_taps(two_tap_store, tmp_path, command, spelling):
    assert set(summarize(two_tap_store)["taps"]) == {"fc", "pool5"}
    head = ["--head", "logistic"] if command == "classify" else ["--heads", "logistic"]
    out = tmp_path / "o"
    result = runner.invoke(app, [command, str(two_tap_store), spelling, "pool5", *head, "--folds", "3",
                              "--no-plots", "--device", "cpu", "--out", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = json.loads(next(out.rglob("results.json")).read_text())
    assert [r["tap"] for r in rows] == ["pool5"]
    text = result.output
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    row = ResultRow.from_dict(rows[0])
    for metric in ("accuracy", "f1_weighted"):  # always shown at 80 columns, whole
        for number in _numbers(row, metric):
            assert re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", text), (number, text)


def test_classify_refuses_a_comma_list_of_taps(two_tap_store, tmp_path):
    result = runner.invoke(app, ["classify", str(two_tap_store), "--taps", "fc,pool5", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "classify evaluates one tap" in " ".join(result.output.split()) and "Traceback" not in result.output
