"""The Typer app and the error boundary every command runs inside."""
from __future__ import annotations

import errno
import functools
import inspect
import platform
import signal
import sys
import typing
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

import featx
from featx.errors import FeatxError, FeatxWarning, spoken_as
from featx.files import is_disk_full
from featx.imports import import_paused


def _flags_as_flags(params: list) -> list:
    """Flags (``--save``, ``--augment/--no-augment``, ``--help``) show no ``<bool>`` in help, which typer would
    print as if they took a value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as single lines, so that help wraps to the terminal, not to the source."""
    if not text:
        return text
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


class FeatxCommand(TyperCommand):
    """A command whose help wraps to the terminal and whose flags read as flags."""

    def __init__(self, *args, help: str | None = None, **kwargs):  # noqa: A002  (click's name)
        super().__init__(*args, help=_reflow(help), **kwargs)

    def get_params(self, ctx) -> list:
        return _flags_as_flags(super().get_params(ctx))


class FeatxGroup(TyperGroup):
    def get_params(self, ctx) -> list:
        return _flags_as_flags(super().get_params(ctx))


class _Typer(typer.Typer):
    """Every command of the app is a :class:`FeatxCommand`."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or FeatxCommand, **kwargs)


app = _Typer(
    name="featx",
    cls=FeatxGroup,
    help="Deep features of cell images once (HDF5), then many classifier heads in seconds; "
    "or fine-tune the whole network. Start with `featx synth demo/data` and `featx extract`.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def version_text() -> str:
    """``featx 0.1.0 (torch 2.5.1, torchvision 0.20.1, python 3.11.2)``, read from package metadata (nothing
    heavy is imported); featx.__version__ where featx is not installed."""
    try:
        version = metadata.version("featx")
    except metadata.PackageNotFoundError:
        version = featx.__version__
    parts = []
    for dist in ("torch", "torchvision"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    parts.append(f"python {platform.python_version()}")
    return f"featx {version} ({', '.join(parts)})"


def _print_version(value: bool) -> None:
    if value:
        console.print(version_text(), highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_print_version,
                                          help="Print the versions of featx, torch and torchvision; exit.")]
    = False,
) -> None:
    """Deep features of cell images once (HDF5), then many classifier heads in seconds; or fine-tune the whole
    network. Start with `featx synth demo/data` and `featx extract`."""

# Library arguments whose flag is not ``--`` + the name with dashes.
FLAGS = {"n_folds": "--folds", "eval_set": "--eval", "params": "--param", "splits": "--split",
         "allow_optimistic": "--optimistic", "overwrite": "--force", "data": "DATA", "parts": "PARTS"}


def flag(name: str, value: str | None = None) -> str:
    """How the CLI spells library argument ``name`` (given ``value``): ``n_folds, 3`` -> ``--folds 3``."""
    spelled = FLAGS.get(name, "--" + name.replace("_", "-"))
    return spelled if value in (None, "True") else f"{spelled} {value}"


def flags_of(command: Callable) -> Callable[..., str]:
    """:func:`flag`, but where the command declares an argument the other way round (a positional where the other
    commands have an option, or an option where they have a positional) it is spelled as the command does:
    ``data`` is ``DATA`` for ``featx explain`` and ``--data`` for ``featx gallery``."""
    own: dict[str, str] = {}
    try:
        hints = typing.get_type_hints(inspect.unwrap(command), include_extras=True)
    except (NameError, TypeError):  # a command without resolvable annotations: the shared spelling
        hints = {}
    for name, hint in hints.items():
        for info in getattr(hint, "__metadata__", ()):
            shared = flag(name)
            if isinstance(info, typer.models.ArgumentInfo) and shared.startswith("--"):
                own[name] = name.upper()
            elif isinstance(info, typer.models.OptionInfo) and not shared.startswith("--"):
                decls = [d for d in (info.param_decls or ()) if d.startswith("--")]
                own[name] = decls[0] if decls else "--" + name.replace("_", "-")

    def spell(name: str, value: str | None = None) -> str:
        if name not in own:
            return flag(name, value)
        return own[name] if value in (None, "True") else f"{own[name]} {value}"

    return spell

err_console = Console(stderr=True)


def loads_torch(func: Callable) -> Callable:
    """A command that runs a network: torch and torchvision are imported first, with the garbage collector
    paused (:func:`featx.imports.import_paused`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import_paused("torch", "torchvision")
        return func(*args, **kwargs)

    wrapper.loads_torch = True  # functools.wraps carries it to the wrappers outside
    return wrapper


def _featx_warnings_as_lines(show: Callable, spell: Callable[..., str] = flag) -> Callable:
    """A ``warnings.showwarning`` that prints a :class:`FeatxWarning` as one yellow line, arguments as flags."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if isinstance(message, FeatxWarning):
            err_console.print(f"[bold yellow]warning:[/] {escape(message.render(spell))}", highlight=False,
                              soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


# What a command can lower when memory runs out, in the order the hint names them.
_MEMORY_KNOBS = ("batch_size", "image_size", "jobs", "workers")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed: MemoryError (numpy, PIL), or torch's RuntimeError from its
    CPU allocator or CUDA (``torch.OutOfMemoryError``)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        needle in text for needle in ("can't allocate memory", "not enough memory", "out of memory"))


def _memory_line(exc: BaseException, kwargs: dict) -> str:
    """One line for an allocation that failed: what failed, and the options of this command that use less."""
    what = " ".join(str(exc).split())
    what = what[what.find("DefaultCPUAllocator"):] if "DefaultCPUAllocator" in what else what
    what = f"{type(exc).__name__}: {what[:160]}" if what else type(exc).__name__
    knobs = [flag(k) for k in _MEMORY_KNOBS if k in kwargs]
    fix = f"lower {' or '.join(knobs)}" if knobs else "use a smaller input"
    return f"out of memory ({what}); {fix}, or free memory, then run the same command again"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (:func:`stop_on_sigterm`), so that it unwinds as an interrupt does."""


def stop_on_sigterm() -> None:
    """Turn the next SIGTERM into :class:`Terminated` (a second one kills at once): the process stops its worker
    processes and says what it kept, instead of dying and leaving joblib's workers to wait 300 s for work."""

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)


def stop_workers() -> None:
    """Kill joblib's loky worker processes, if this process started any (an idle pool outlives its grid)."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)


#: What an interrupted command keeps, unless it says otherwise (:func:`on_interrupt`; every command does).
RESUMES = "work finished so far is kept on disk; run the same command again to resume"
#: Each command's interrupt line where it is a fixed sentence (classify/compare and finetune build theirs).
INTERRUPT_LINES = {
    "extract": "the rows extracted so far are kept in the store; run the same command again to resume",
    "hybrid": "finished folds, and the current fold's saved epochs and extracted rows, are kept in --out; run the "
              "same command again to resume",
    "merge": "nothing was kept (the merged store is renamed into place only when whole); run the same command "
             "again to start over",
    "synth": "the images written so far are left in OUT; run the same command with --overwrite to write them anew",
    "predict": "no predictions were written (the CSV is written once every image is scored); run the same command "
               "again to start over",
    "report": "no report was written (it is written whole at the end); run the same command again",
    "backbones": "the rows probed so far are kept in the catalogue; run the same command again to continue",
    "table": "nothing was written; run the same command again",
    "info": "nothing was written; run the same command again",
}


def on_interrupt(line: str | Callable[[dict], str]) -> Callable:
    """A command's own line for an interrupt: what it kept and whether a re-run resumes (default :data:`RESUMES`);
    a callable gets the command's arguments."""

    def mark(func: Callable) -> Callable:
        func.interrupt_line = line
        return func
    return mark


def interrupted(exc: KeyboardInterrupt, line: str) -> typer.Exit:
    """Stop the worker processes and print ``line`` after "interrupted:" (SIGINT, exit 130) or "terminated:"
    (SIGTERM, exit 143); returns the Exit to raise."""
    stop_workers()
    word, code = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
    err_console.print(f"[bold red]{word}:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def user_errors(func: Callable) -> Callable:
    """Run a command; print user errors as one red line and exit non-zero, without a traceback. Library text the
    command prints or writes (:func:`featx.errors.speak`) names flags and commands."""

    spell = flags_of(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings(), spoken_as(spell):  # restores showwarning afterwards
                warnings.simplefilter("always", FeatxWarning)
                warnings.showwarning = _featx_warnings_as_lines(warnings.showwarning, spell)
                return func(*args, **kwargs)
        except FeatxError as exc:
            err_console.print(f"[bold red]error:[/] {escape(exc.render(spell))}", highlight=False, soft_wrap=True,
                              emoji=False)  # a value like module:x: stays as typed
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            line = getattr(func, "interrupt_line", RESUMES)
            raise interrupted(exc, line(kwargs) if callable(line) else line) from None
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            err_console.print(f"[bold red]error:[/] {escape(_memory_line(exc, kwargs))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            if is_disk_full(exc):
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
