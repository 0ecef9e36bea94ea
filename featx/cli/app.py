"""The Typer app and the error boundary every command runs inside."""
from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from featx.errors import FeatxError

app = typer.Typer(
    name="featx",
    help="Deep features of cell images once (HDF5), then many classifier heads in seconds; "
    "or fine-tune the whole network. Start with `featx synth demo/data` and `featx extract`.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

# Library arguments whose flag is not ``--`` + the name with dashes.
FLAGS = {"n_folds": "--folds", "eval_set": "--eval", "n_boot": "--boot", "params": "--param", "splits": "--split",
         "allow_optimistic": "--optimistic", "overwrite": "--force", "data": "DATA"}


def flag(name: str, value: str | None = None) -> str:
    """How the CLI spells library argument ``name`` (given ``value``): ``n_folds, 3`` -> ``--folds 3``."""
    spelled = FLAGS.get(name, "--" + name.replace("_", "-"))
    return spelled if value in (None, "True") else f"{spelled} {value}"

err_console = Console(stderr=True)


def user_errors(func: Callable) -> Callable:
    """Run a command; print user errors as one red line and exit non-zero, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FeatxError as exc:
            err_console.print(f"[bold red]error:[/] {escape(exc.render(flag))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted:[/] work finished so far is kept on disk; "
                              "run the same command again to resume", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = f" while writing {escape(str(exc.filename))}" if exc.filename else ""
                err_console.print(f"[bold red]error:[/] disk full{where}; free space and run the same "
                                  "command again (finished work is kept)", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and exc.filename:
                why = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
                err_console.print(f"[bold red]error:[/] cannot access {escape(str(exc.filename))} ({why}); "
                                  "choose another --out or fix its permissions", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            raise

    return wrapper
