"""The layout contracts of docs/architecture.md: layers one way, small modules, imports at the top."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "featx"
MAX_LINES = 400


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)


def test_import_contracts_hold():
    """import-linter: the layers of docs/architecture.md point one way (the library never imports the CLI),
    no two modules of one package import each other in a cycle, counting imports inside functions, and only
    featx.cli imports rich (the library never draws)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_module_is_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (limit {MAX_LINES}): split it by idea"


def _function_imports(path: Path):
    """(line, module, comment nearby) of every import inside a function body."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.level:
                    names = ["featx." + (node.module or "")]
                around = " ".join(lines[max(0, node.lineno - 4):node.lineno])  # a comment may head a block
                yield node.lineno, names, around


def test_imports_are_at_the_top():
    """An import inside a function is a heavy dependency deferred on purpose (torch, xgboost, matplotlib, or a
    featx module that pulls one in) and says why in a ``# deferred:`` comment; everything else is imported at
    the top. (import-linter counts imports inside functions too, so a deferred one cannot hide a cycle.)"""
    bad = [f"{path.relative_to(ROOT)}:{line} {', '.join(names)}"
           for path in sorted(PACKAGE.rglob("*.py"))
           for line, names, around in _function_imports(path) if "deferred:" not in around]
    assert not bad, "imports inside functions without a '# deferred: why' comment:\n" + "\n".join(bad)


def test_data_layouts_need_no_torch():
    """Listing a collection must not pay for importing torch."""
    code = "import sys, featx.data; featx.data.discover; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_grid_and_its_workers_need_no_torch():
    """A grid's worker process imports featx.evaluation.grid first: torch (1.7 s) must wait for a head that
    needs it (softmax), or every worker start pays for it."""
    code = ("import sys, featx.evaluation.grid, featx.evaluation.pool, featx.evaluation.backends; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment (make test installs it with the dev extra)")
    result = subprocess.run([str(ruff), "check", "featx", "tests", "scripts"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
