"""featx command line: a thin Typer layer over the library (the library never imports this package)."""
from featx.imports import collector_paused

with collector_paused():  # the commands and the libraries they import (see featx.imports)
    # the commands register in this order, the order `featx --help` lists them
    # isort: off
    from featx.cli import backbones, synth, extract, info, finetune  # noqa: F401
    from featx.cli import classify, compare, predict, hybrid, merge, table, report  # noqa: F401
    from featx.cli import gallery, explain, map  # noqa: F401
    # isort: on
    from featx.cli.app import app, stop_on_sigterm


def main() -> None:
    """Console-script entry point."""
    stop_on_sigterm()
    app()
