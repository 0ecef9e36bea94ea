"""Every command says, when interrupted, what it kept and whether the same command resumes: its own line."""
from __future__ import annotations

import typer.main

from featx.cli import app
from featx.cli.app import INTERRUPT_LINES, RESUMES
from tests.cli_helpers import invoke


def test_every_command_has_its_own_interrupt_line():
    group = typer.main.get_command(app)
    lines = {name: getattr(cmd.callback, "interrupt_line", RESUMES) for name, cmd in group.commands.items()}
    assert not [name for name, line in lines.items() if line == RESUMES]   # no command falls back to the default
    for name, line in INTERRUPT_LINES.items():
        assert lines[name] == line
    assert "resume" in lines["extract"] and "resume" in lines["hybrid"]
    assert "start over" in lines["merge"] and "start over" in lines["predict"]
    assert "keeps nothing" in lines["classify"] and "keeps nothing" in lines["compare"]


def test_an_interrupted_table_says_nothing_was_written(tmp_path, monkeypatch):
    import featx.cli.table as table_cli

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(table_cli, "merge_results", interrupt)
    result, out = invoke("table", tmp_path)
    assert result.exit_code == 130 and "interrupted: nothing was written; run the same command again" in out
