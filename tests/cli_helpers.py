"""Driving the real Typer app in tests."""
from __future__ import annotations

import re

from typer.testing import CliRunner

from featx.cli import app

runner = CliRunner()


def invoke(*args):
    """Run ``featx ARGS`` in-process; return the result and its output with whitespace collapsed (rich wraps)."""
    result = runner.invoke(app, [str(a) for a in args])
    return result, re.sub(r"\s+", " ", result.output)
