"""One meaning per word: the glossary of docs/architecture.md names each word once, and the code keeps to it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "featx").rglob("*.py"))
WORDS = ("protocol", "head", "network", "model", "tap")


def _glossary() -> dict[str, list[str]]:
    """word -> the meanings the glossary table gives it (one per row naming it in bold)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Glossary", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        found = re.match(r"\|\s*\*\*([^*]+)\*\*\s*\|([^|]+)\|", line)
        if found:
            rows.setdefault(found.group(1).strip(), []).append(found.group(2).strip())
    return rows


@pytest.mark.parametrize("word", WORDS)
def test_the_glossary_gives_each_word_one_meaning(word):
    assert len(_glossary().get(word, [])) == 1, f"docs/architecture.md's glossary: {word!r} needs exactly one row"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _bound_names(tree: ast.Module):
    """(name, line) of every class, function and module-level assignment target."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                yield target.id, node.lineno


def test_step_is_only_the_preprocessing_step():
    """``Step`` is a head's preprocessing step (featx.heads.preprocess); a network's is ``ForwardStep``."""
    owner = ROOT / "featx" / "heads" / "preprocess.py"
    found = [f"{p.relative_to(ROOT)}:{line}" for p in LIBRARY if p != owner
             for name, line in _bound_names(_tree(p)) if name == "Step"]
    assert not found, f"`Step` defined outside {owner.relative_to(ROOT)}: {found}"
    assert "Step" in {name for name, _ in _bound_names(_tree(owner))}


def test_a_network_is_never_called_model():
    """A *model* is a saved head; what ``create_backbone`` returns is a *network*."""
    built = re.compile(r"\bmodel\s*=\s*(?:featx\.backbones\.)?create_backbone\(")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in LIBRARY
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if built.search(line)]
    assert not found, f"a network named `model`: {found}"


def test_workers_are_decode_workers_only():
    """``workers`` are the processes that decode images (``--workers``); the grid's process pool is ``jobs``
    (featx.evaluation.pool) and a cluster's capacity ``cores``: no parameter or field of featx.evaluation is
    called ``workers``."""
    found = []
    for path in sorted((ROOT / "featx" / "evaluation").glob("*.py")):
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in (*node.args.args, *node.args.kwonlyargs)]
            elif isinstance(node, ast.ClassDef):
                names = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)
                         and isinstance(s.target, ast.Name)]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n == "workers"]
    assert not found, f"`workers` in featx.evaluation (say jobs or cores): {found}"
