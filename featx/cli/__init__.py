"""featx command line: a thin Typer layer over the library (the library never imports this package)."""
from featx.imports import collector_paused

with collector_paused():  # the commands and the libraries they import (see featx.imports)
    from featx.cli import (  # noqa: F401  (register commands)
        backbones_cmds,
        extract_cmds,
        finetune_cmds,
        heads_cmds,
        hybrid_cmds,
        merge_cmds,
        report_cmds,
        report_html_cmds,
    )
    from featx.cli.app import app, stop_on_sigterm


def main() -> None:
    """Console-script entry point."""
    stop_on_sigterm()
    app()
