"""Progress bars of the long commands (classify, compare, hybrid, merge, gallery, explain) and status lines of the
stepwise ones (map, report), drawn from the library's events.

A bar goes to stderr, and only to a terminal: a log or a pipe gets the command's lines and tables alone. ``-q``
draws no bar and prints no progress line.
"""
from __future__ import annotations

import importlib
import time

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.status import Status

cli = importlib.import_module("featx.cli.app")  # the module (featx.cli.app is also the Typer app's name)


class Bar:
    """One rich bar: ``{description} ━━━ {unit}s M/N, R {rate_unit}/s, elapsed, ETA``. ``update(done, total)``
    moves it (``amount``: what the rate counts, default ``done``); ``say(text)`` prints a dim line above it."""

    def __init__(self, unit: str, quiet: bool, rate_unit: str | None = None):
        self.unit, self.rate_unit, self.quiet = unit, rate_unit or unit, quiet
        self.bar: Progress | None = None
        self.task = None
        self.start = time.perf_counter()

    def __enter__(self) -> Bar:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
            self.bar = None

    def _open(self, total: int, description: str) -> None:
        console = cli.err_console
        if self.quiet or not console.is_terminal:
            return
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn(f"{self.unit}s"),
                            MofNCompleteColumn(), TextColumn(f"{{task.fields[rate]}} {self.rate_unit}/s"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                            redirect_stdout=cli.console.is_terminal, transient=False)
        self.task = self.bar.add_task(escape(description), total=total, rate="-")
        self.bar.__enter__()

    def update(self, done: int, total: int, description: str = "", amount: float | None = None) -> None:
        if self.quiet:
            return
        if self.task is None:
            self._open(total, description)
        if self.bar is None:
            return
        rate = (done if amount is None else amount) / max(time.perf_counter() - self.start, 1e-9)
        fields = {"description": escape(description)} if description else {}
        self.bar.update(self.task, completed=done, total=total, rate=f"{rate:.1f}", **fields)

    def say(self, text: str) -> None:
        if not self.quiet:
            cli.console.print(f"[dim]{escape(text)}[/]", highlight=False)


class FitBar(Bar):
    """The grid's :class:`featx.evaluation.progress.FitEvent` s as one bar over every fit: ``fits 12/40,
    1.3 fit/s``, with the feature set and protocol of the last fit as its description."""

    def __init__(self, quiet: bool):
        super().__init__("fit", quiet)

    def __call__(self, event) -> None:
        self.update(event.done, event.total, f"{event.features} ({event.protocol})")


class StepStatus:
    """A library's steps (anything with a ``text``, e.g. :class:`featx.report.feature_map.MapStep`) on a
    terminal's stderr: a spinner on the step running, a dim line with its time once done. Nothing in a log or a
    pipe, or with ``-q``."""

    def __init__(self, quiet: bool):
        self.show = not quiet and cli.err_console.is_terminal
        self.status: Status | None = None
        self.current: tuple[str, float] | None = None

    def __enter__(self) -> StepStatus:
        return self

    def __call__(self, step) -> None:
        if not self.show:
            return
        self._finish()
        self.current = (step.text, time.perf_counter())
        if self.status is None:
            self.status = cli.err_console.status(escape(step.text))
            self.status.start()
        else:
            self.status.update(escape(step.text))

    def _finish(self) -> None:
        if self.current is not None:
            text, start = self.current
            cli.err_console.print(f"[dim]{escape(text)} ({time.perf_counter() - start:.1f} s)[/]", highlight=False)
            self.current = None

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.stop()
        if exc[0] is None:
            self._finish()
