"""Print the size figures of featx's library: modules, the largest function, the widest signature.

Run: python scripts/code_stats.py [PACKAGE_DIR]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _param_count(node: ast.FunctionDef) -> int:
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names = [n for n in names if n not in ("self", "cls")]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def main(root: str = "featx") -> None:
    files = sorted(Path(root).rglob("*.py"))
    rows = []
    for f in files:
        tree = ast.parse(f.read_text())
        for fn in _functions(tree):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            rows.append((f, fn.name, fn.lineno, length, _param_count(fn)))
    longest = sorted(rows, key=lambda r: -r[3])[:5]
    widest = sorted(rows, key=lambda r: -r[4])[:5]
    lines = sum(len(f.read_text().splitlines()) for f in files)
    print(f"modules: {len(files)}  lines: {lines}  functions: {len(rows)}")
    print("largest functions (lines):")
    for f, name, line, length, _ in longest:
        print(f"  {length:4d}  {f}:{line} {name}")
    print("widest signatures (parameters):")
    for f, name, line, _, params in widest:
        print(f"  {params:4d}  {f}:{line} {name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
