"""The one exception class for mistakes a user can fix, and how its messages name arguments.

Library messages name the argument at fault with :func:`arg`; ``str(error)`` spells it as Python
(``n_folds=3``) and the CLI as its flag (``--folds 3``), so one message serves both. A step to take next is
named with :func:`command`, which carries both spellings: ``str(error)`` shows the Python call
(``featx.extract(...)``), the CLI the command line (``featx extract``). The library never spells a flag or a
command itself.

Text that is no exception but is printed or written (report notes, a CSV cell) is spelled by :func:`speak`:
as Python, or as the command line while the CLI runs a command (:func:`spoken_as`).
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_ARG = re.compile(r"\u27e6([A-Za-z_][A-Za-z0-9_]*)(?:=(.*?))?\u27e7")
_COMMAND = re.compile(r"\u27ea(.*?)\u2016(.*?)\u27eb")


def arg(name: str, value=None) -> str:
    """A reference to argument ``name`` (and the value to give it) inside a :class:`FeatxError` message."""
    if value is None:
        return f"\u27e6{name}\u27e7"
    if value is True:
        value = "True"
    return f"\u27e6{name}={value}\u27e7"


def command(cli: str, python: str) -> str:
    """A reference to a step the user can take, in both spellings, inside a :class:`FeatxError` message.

    ``cli``: the command line after ``featx`` (``"extract --shard i/n"``); ``python``: the call that does the
    same (``"featx.extract(..., shard=(i, n))"``). ``str(error)`` shows the call, the CLI the command line.
    """
    return f"\u27ea{cli}\u2016{python}\u27eb"


def _python(name: str, value: str | None) -> str:
    if value is None:
        return name
    if value == "True" or _is_number(value):
        return f"{name}={value}"
    return f"{name}={value!r}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


Spelling = Callable[[str, str | None], str]  # (argument name, value) -> how a front end writes it


def as_python(template: str) -> str:
    """A template with :func:`arg` and :func:`command` references as Python reads it (``n_folds=3``,
    ```featx.extract(...)```)."""
    text = _COMMAND.sub(lambda m: f"`{m.group(2)}`", template)
    return _ARG.sub(lambda m: _python(m.group(1), m.group(2)), text)


def as_command_line(template: str, spell: Spelling) -> str:
    """A template as the command line reads it: each argument written by ``spell(name, value)`` (the CLI's
    flags) and each :func:`command` as ``featx <command>``."""
    text = _COMMAND.sub(lambda m: f"`featx {m.group(1)}`", template)
    return _ARG.sub(lambda m: spell(m.group(1), m.group(2)), text)


_SPELLING: ContextVar[Spelling | None] = ContextVar("featx_spelling", default=None)


@contextlib.contextmanager
def spoken_as(spell: Spelling) -> Iterator[None]:
    """While the block runs, :func:`speak` writes arguments with ``spell`` and steps as ``featx <command>``:
    the CLI wraps each command in it, so the text a command prints or writes names flags, not arguments."""
    token = _SPELLING.set(spell)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def speak(template: str) -> str:
    """A template for text that is printed or written rather than raised (a report note, a CSV cell): as
    Python (:func:`as_python`), or as the command line inside :func:`spoken_as`."""
    spell = _SPELLING.get()
    return as_python(template) if spell is None else as_command_line(template, spell)


class _Message:
    """A message that names arguments with :func:`arg`: ``str()`` spells them as Python, ``render`` as asked."""

    @property
    def template(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return as_python(self.template)

    def render(self, spell: Spelling) -> str:
        """The message as the command line reads it: each argument written by ``spell(name, value)`` (the CLI
        passes its flags) and each :func:`command` as ``featx <command>``."""
        return as_command_line(self.template, spell)


class FeatxError(_Message, Exception):
    """A user error: the CLI prints its message on one line and exits 1, without a traceback.

    The message names the file or setting at fault and says how to fix it.
    """


class FeatxWarning(_Message, UserWarning):
    """A warning about the user's input, raised with :func:`warnings.warn`; the CLI prints it as one yellow
    line with arguments spelled as flags."""
