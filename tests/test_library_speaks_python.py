"""The library never speaks CLI: its messages name arguments (errors.arg) and steps (errors.command), which
``str()`` spells as Python and the CLI as flags and ``featx CMD``; no library message spells either itself."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer.main
from cli_helpers import invoke
from report_rows import make_row

from featx.cli import app
from featx.cli.app import flag
from featx.errors import FeatxError, speak, spoken_as
from featx.report.notes import mark_notes, partial_notes
from featx.store import merge_stores

LIBRARY = Path(__file__).resolve().parents[1] / "featx"
# The callables whose text reaches the user: an exception or warning, or text spoken as it is printed.
SPEAKERS = {"FeatxError", "FeatxWarning", "speak"}


def _cli_words() -> tuple[set[str], set[str]]:
    """The CLI's command names and long flags, read from the Typer app."""
    group = typer.main.get_command(app)
    flags = {opt for cmd in group.commands.values() for p in cmd.params for opt in p.opts if opt.startswith("--")}
    return set(group.commands), flags


def _texts(node: ast.AST, constants: dict[str, ast.AST]):
    """(line, text) of every string constant inside ``node``, module-level string constants it names resolved;
    an f-string part that ends in ``featx `` before a formatted value yields ``featx {}``."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in constants:
            yield from _texts(constants[sub.id], {})
        elif isinstance(sub, ast.JoinedStr):
            for part, after in zip(sub.values, [*sub.values[1:], None]):
                if (isinstance(part, ast.Constant) and isinstance(after, ast.FormattedValue)
                        and part.value.rstrip("`").endswith("featx ")):
                    yield sub.lineno, part.value + "{}"
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.lineno, sub.value


def _spoken_cli(path: Path, commands: set[str], flags: set[str], root: Path = LIBRARY.parent
                ) -> list[tuple[str, list[str], str]]:
    """(where, what it spells, the text) of each message in ``path`` that spells a featx command or flag."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                 if isinstance(t, ast.Name)}
    command = re.compile(rf"\bfeatx ({'|'.join(map(re.escape, sorted(commands)))}|\{{\}})(?![\w-])")
    flag_re = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w-])")
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in SPEAKERS):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for line, text in _texts(arg, constants):
                said = command.findall(text) + [f for f in flag_re.findall(text) if f in flags]
                if said:
                    found.append((f"{path.relative_to(root)}:{line}", said, text))
    return found


def test_no_library_message_spells_a_featx_command_or_flag():
    commands, flags = _cli_words()
    assert {"extract", "merge", "backbones"} <= commands and {"--taps", "--shard", "--out"} <= flags
    files = [p for p in sorted(LIBRARY.rglob("*.py")) if "cli" not in p.relative_to(LIBRARY).parts[:1]]
    found = [f"{where}: {said} in {text[:80]!r}"
             for p in files for where, said, text in _spoken_cli(p, commands, flags)]
    assert not found, "library messages that speak CLI:\n" + "\n".join(found)


def test_the_scan_sees_a_command_a_flag_and_a_named_constant(tmp_path):
    """The scan above is not blind: each way a message could spell the CLI is found."""
    commands, flags = _cli_words()
    module = tmp_path / "featx" / "m.py"
    module.parent.mkdir()
    module.write_text('HINT = "run `featx merge` again"\n'
                      'def f(x):\n'
                      '    raise FeatxError(f"{x}: no rows; run `featx extract --shard i/n`")\n'
                      'def g(x):\n'
                      '    warn(FeatxWarning(f"{x}: pass --taps"))\n'
                      '    raise FeatxError(HINT)\n'
                      'def h(name):\n'
                      '    return speak(f"see `featx {name}`")\n', encoding="utf-8")
    found = _spoken_cli(module, commands, flags, root=tmp_path)
    assert sorted((where, said) for where, said, _ in found) == [
        ("featx/m.py:1", ["merge"]), ("featx/m.py:3", ["extract", "--shard"]), ("featx/m.py:5", ["--taps"]),
        ("featx/m.py:8", ["{}"])]


def test_a_missing_shard_reads_as_python_from_the_library_and_as_a_command_line_from_the_cli(tmp_path):
    missing = tmp_path / "part-1.h5"
    with pytest.raises(FeatxError) as err:
        merge_stores([missing], tmp_path / "all.h5")
    assert str(err.value) == (f"{missing}: no such shard store; extract it with "
                              f"`featx.extract(data, shard='i/n', out='{missing}')`")
    assert "--" not in str(err.value) and "featx extract" not in str(err.value)
    cli_line = (f"{missing}: no such shard store; extract it with `featx extract DATA --shard i/n --out "
                f"{missing}`")
    assert err.value.render(flag) == cli_line
    result, text = invoke("merge", missing, "--out", tmp_path / "all.h5")
    assert result.exit_code == 1 and text.strip() == f"error: {cli_line}"


def test_report_notes_speak_python_and_flags_inside_a_cli_command():
    row = make_row("vgg16/fc logistic", 0.8, partial="156 of 330 rows", weights_provenance="unknown")
    python = partial_notes([row])[0]
    assert python == ("vgg16/fc logistic used 156 of 330 rows of an unfinished store; finish it with the same "
                      "`featx.extract(...)`")
    assert "weights_never_saw_images=True when extracting" in mark_notes([row])[-1]
    with spoken_as(flag):
        assert partial_notes([row])[0] == python.replace("`featx.extract(...)`", "`featx extract`")
        assert "--weights-never-saw-images when extracting" in mark_notes([row])[-1]
        assert speak("plain text") == "plain text"
    assert "`featx.extract(...)`" in partial_notes([row])[0]  # the spelling ends with the block


def test_an_argument_a_command_declares_itself_is_spelled_as_that_command_does():
    import featx.cli  # noqa: F401  (registers the commands)
    from featx.cli import compare, explain, gallery
    from featx.cli.app import flags_of

    assert flags_of(gallery.gallery)("data") == "--data"          # an option of featx gallery
    assert flags_of(explain.explain)("data") == "DATA"            # an argument of featx explain
    assert flags_of(compare.compare)("n_folds", "3") == "--folds 3"  # declared as --folds
    assert flags_of(gallery.gallery)("overwrite", "True") == "--force"  # not declared: the shared spelling
