"""README's flow is an executable contract: its code block runs, as written, in bash.

The block under "## The flow" is run line by line in a fresh folder, with `source .venv/bin/activate` resolved
to the interpreter running the tests. Only sizes are shrunk, each rewrite named in ``SHRINK`` with its reason,
and ``--weights imagenet`` becomes ``--weights none`` when torchvision's file is not in the torch cache (no
download is possible here; the README says the same). Everything else (names, folders, flags, the order of
the commands) is the README's: a renamed output folder or flag breaks this test.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (regex on a command line, text appended to it, why): sizes only, so that the flow runs in about a minute.
SHRINK = (
    (r"^featx synth ", " --subjects-all 3 --subjects-hem 3 --cells-per-subject 4 --prelim-cells-per-subject 3 "
                       "--final-cells 4 --image-size 40",
     "a tiny tree: 6 training subjects x 4 cells (the README's synth writes 45 x 4 cells at 64 px)"),
    (r"^featx (extract|finetune|hybrid) .*--backbone vgg16", " --image-size 32",
     "VGG-16 at 32 px (its smallest) instead of 224 px: ~50 times cheaper"),
    (r"^featx (extract|finetune|hybrid) (?!.*--backbone vgg16)", " --image-size 64",
     "the other networks at 64 px instead of 224 px (AlexNet needs 63 or more)"),
    (r"^featx compare ", " --folds 3", "3 folds instead of 5"),
    (r"^featx (extract|finetune|hybrid|predict) ", " --workers 0",
     "images decoded in the main process: a decode worker costs more to start than 40 tiny images take"),
    (r"^featx (classify|compare|hybrid) ", " --no-plots", "no per-row PNGs (featx report draws them again)"),
    (r"^featx (finetune|hybrid) ", " --epochs 1 --batch-size 8", "one epoch instead of the preset's 15"),
    (r"^featx hybrid ", " --folds 3", "3 outer folds instead of 5"),
    (r"^featx report ", " --maps pca", "PCA maps instead of UMAP, which compiles its code for 10-20 s in each process"),
    (r"^featx map ", " --method pca", "PCA instead of UMAP, as for the report"),
    (r"^featx explain ", " --images 2", "2 cells instead of 8: occlusion runs the network about 225 times a cell"),
)


def flow_block(text: str) -> str:
    """The first fenced code block of the README's "The flow" section."""
    section = text.split("\n## The flow", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert match, "README's 'The flow' section has no code block"
    return match.group(1)


def flow_commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


def imagenet_cached(backbone: str) -> bool:
    """Whether torchvision's ImageNet file for ``backbone`` is in the torch cache (no download attempted)."""
    import torch  # deferred: only this check needs it

    from featx.backbones import get_config

    name = get_config(backbone).imagenet_file
    return name is not None and (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def shrink(command: str) -> str:
    """``command`` with the test's size rewrites (``SHRINK``) and the offline weights rewrite."""
    for pattern, extra, _why in SHRINK:
        if re.search(pattern, command):
            command += extra
    backbone = re.search(r"--backbone (\S+)", command)
    if "--weights imagenet" in command and backbone and not imagenet_cached(backbone.group(1)):
        command = command.replace("--weights imagenet", "--weights none")
    return command


def test_flow_parses_into_commands():
    commands = flow_commands(flow_block(README.read_text()))
    assert commands[0] == "source .venv/bin/activate"
    names = [c.split()[1] for c in commands if c.startswith("featx ")]
    # the flow shows every step of the toolkit, in the order data flows
    for name in ("synth", "extract", "backbones", "info", "classify", "compare", "predict", "finetune", "table",
                 "report", "hybrid"):
        assert name in names, f"README's flow lost `featx {name}`"
    assert names.index("extract") < names.index("compare") < names.index("table")


def test_readme_flow_runs_as_written(tmp_path):
    commands = flow_commands(flow_block(README.read_text()))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    script = ["set -euo pipefail"]
    for command in commands:
        command = shrink(command)
        script += [f"echo {shlex.quote('+ ' + command)}", command, 'echo "+ took $SECONDS s"', "SECONDS=0"]
    env = {**os.environ, "COLUMNS": "100", "FEATX_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    log = done.stdout + done.stderr
    print(log)  # shown with -s, or with the failure
    assert done.returncode == 0, f"README flow failed:\n{log[-6000:]}"
    assert "Traceback" not in log

    # every file or folder the flow names with --out exists, and holds what the README says it holds
    outs = [Path(m) for c in commands for m in re.findall(r"--out (\S+)", c)]
    assert outs, "README's flow writes nothing with --out"
    for out in outs:
        assert (tmp_path / out).exists(), f"README's flow names {out}, which it did not write"
    compare = next(c for c in commands if c.startswith("featx compare "))
    n_stores = len([w for w in compare.split()[2:] if w.endswith(".h5")])
    n_heads = len(re.search(r"--heads (\S+)", compare).group(1).split(","))
    n_protocols = len(re.search(r"--cv (\S+)", compare).group(1).split(","))
    compare_json = sorted(tmp_path.glob("results/compare/results.json"))
    assert compare_json, "compare's default folder results/compare/ holds no results.json"
    assert len(json.loads(compare_json[0].read_text())) == n_stores * n_heads * n_protocols, \
        "a later command of the flow replaced compare's table"
    def out_of(command: str) -> Path:
        return tmp_path / next(re.search(r"--out (\S+)", c).group(1) for c in commands if c.startswith(command))

    report = out_of("featx report ")
    assert report.read_text().count("data:image/png;base64,") >= 1
    predictions = out_of("featx predict ")
    assert len(predictions.read_text().splitlines()) == 1 + 4, "one prediction per final-phase image"


def test_reproduce_paper_finds_the_venv_without_activation(tmp_path):
    """`scripts/reproduce_paper.sh` runs with featx off PATH, through the repository's .venv."""
    venv_featx = ROOT / ".venv" / "bin" / "featx"
    if not venv_featx.exists():
        pytest.skip(f"{venv_featx} does not exist (make install creates it)")
    from featx.data.synth import synthesize

    synthesize(tmp_path / "data", subjects_all=3, subjects_hem=3, cells_per_subject=3, prelim_subjects_all=1,
               prelim_subjects_hem=1, prelim_cells_per_subject=2, final_cells=2, image_size=40)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "FEATX", "PYTHON")}
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=str(ROOT), FEATX_OFFLINE="1")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), str(tmp_path / "data"),
                           "--models", "cnn", "--small", "--epochs", "1", "--out", str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "command not found" not in done.stderr
    assert (tmp_path / "runs" / "cnn" / "results.json").is_file()


def test_readme_python_example_runs_as_written(cnmc_tree, tmp_path):
    """The README's Python block, run as written in a folder whose `data` is a tiny C-NMC tree."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no Python example"
    code = block.group(1)
    assert "import featx" in code and "featx.evaluate(" in code
    (tmp_path / "data").symlink_to(cnmc_tree, target_is_directory=True)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    name, _, rest = done.stdout.strip().rpartition(" + HistGradientBoostingClassifier")
    assert name.endswith("cnn/fc") and "subject-level 5-fold" in rest, done.stdout
    assert 0.0 <= float(rest.split()[-1]) <= 1.0
    assert (tmp_path / "feats" / "cnn.h5").is_file()
