"""featx command line: a thin Typer layer over the library (the library never imports this package)."""
import gc

_collecting = gc.isenabled()
gc.disable()  # while the commands and their libraries load (see featx.cli.app.import_paused)
try:
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
    from featx.cli.app import app
finally:
    gc.freeze()
    if _collecting:
        gc.enable()


def main() -> None:
    """Console-script entry point."""
    app()
