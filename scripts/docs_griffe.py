"""Sphinx roles in featx's docstrings shown as code on the docs site (a griffe extension, named in mkdocs.yml).

featx's docstrings name objects the reST way (``:func:`~featx.store.load_features```); Markdown would print the
role itself. This extension rewrites each role to a code span before mkdocstrings renders the docstring:
``~a.b.c`` becomes ``c``, anything else stays as written. Nothing in featx is changed.
"""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """``:func:`~a.b.c``` -> ```c```, ``:mod:`a.b``` -> ```a.b```."""
    return ROLE.sub(lambda m: f"``{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}``", text)


class RstRoles(griffe.Extension):
    """Rewrite the reST roles of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002  (griffe's hook signature)
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
