"""The one exception class for mistakes a user can fix, and how its messages name arguments.

Library messages name the argument at fault with :func:`arg`; ``str(error)`` spells it as Python
(``n_folds=3``) and the CLI as its flag (``--folds 3``), so one message serves both. A step to take next is
named with :func:`command`, which carries both spellings: ``str(error)`` shows the Python call
(``featx.extract(...)``), the CLI the command line (``featx extract``). The library never spells a flag or a
command itself.
"""
from __future__ import annotations

import re
from collections.abc import Callable

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


class _Message:
    """A message that names arguments with :func:`arg`: ``str()`` spells them as Python, ``render`` as asked."""

    @property
    def template(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        text = _COMMAND.sub(lambda m: f"`{m.group(2)}`", self.template)
        return _ARG.sub(lambda m: _python(m.group(1), m.group(2)), text)

    def render(self, spell: Callable[[str, str | None], str]) -> str:
        """The message as the command line reads it: each argument written by ``spell(name, value)`` (the CLI
        passes its flags) and each :func:`command` as ``featx <command>``."""
        text = _COMMAND.sub(lambda m: f"`featx {m.group(1)}`", self.template)
        return _ARG.sub(lambda m: spell(m.group(1), m.group(2)), text)


class FeatxError(_Message, Exception):
    """A user error: the CLI prints its message on one line and exits 1, without a traceback.

    The message names the file or setting at fault and says how to fix it.
    """


class FeatxWarning(_Message, UserWarning):
    """A warning about the user's input, raised with :func:`warnings.warn`; the CLI prints it as one yellow
    line with arguments spelled as flags."""
