"""featx command line: a thin Typer layer over the library (the library never imports this package)."""
from featx.cli.app import app
from featx.cli import extract_cmds  # noqa: F401  (registers synth, extract, info)

try:  # command groups added by later work register themselves on import
    from featx.cli import heads_cmds  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover
    if exc.name != "featx.cli.heads_cmds":
        raise
try:
    from featx.cli import finetune_cmds  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover
    if exc.name != "featx.cli.finetune_cmds":
        raise


def main() -> None:
    """Console-script entry point."""
    app()
