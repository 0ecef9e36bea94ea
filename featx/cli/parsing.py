"""The CLI's mini-languages, parsed into the typed arguments of the library."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featx.errors import FeatxError, arg

if TYPE_CHECKING:
    from featx.evaluation.search import Search

# featx.heads and featx.evaluation (scikit-learn, ~1 s) are imported where used: `featx extract` needs neither


# --- heads ---
def parse_preprocess(text: str | None) -> tuple:
    """``--preprocess``: ``standard``, ``none``, ``l2`` or ``pca:N``, joined with ``+`` in order, as the
    library's steps: ``"standard+pca:128"`` -> ``("standard", ("pca", 128))``; ``"none"`` -> ``()``."""
    steps: list = []
    for token in (text or "none").lower().replace(" ", "").split("+"):
        if token in ("", "none"):
            continue
        if token.startswith("pca:"):
            n = token[4:]
            if not n.isdigit() or int(n) < 1:
                raise FeatxError(f"{arg('preprocess', text)}: 'pca:N' needs a positive whole number of "
                                 "components, e.g. pca:128")
            steps.append(("pca", int(n)))
        elif token in ("standard", "l2"):
            steps.append(token)
        else:
            raise FeatxError(f"{arg('preprocess', text)}: unknown step {token!r}; use standard, none, l2 or pca:N, "
                             "joined with '+' (e.g. standard+pca:128)")
    from featx.heads import check_preprocess  # deferred: sklearn

    return check_preprocess(steps)


def parse_params(items: Sequence[str] | None, heads: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param`` items as the library's ``{head: {parameter: value}}`` for the selected ``heads``.

    ``svm.C=10`` goes to that head only; ``C=10`` to every selected head that takes ``C`` (an error naming
    the parameter when none does). Values are read as JSON when they parse (numbers, true/false, null), else
    kept as text. The result has passed :func:`featx.heads.check_params`.
    """
    from featx.heads import MANAGED_PARAMS, check_params, get_head, settable_params  # deferred: sklearn

    names = [get_head(h).name for h in heads if h.strip()]
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FeatxError(f"{arg('params', item)}: write it as key=value (e.g. C=10) or head.key=value "
                             "(svm.C=10)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, name = key.rpartition(".")
        if dot:
            out.setdefault(get_head(head).name, {})[name] = value
            continue
        takers = [h for h in names if key in settable_params(h)]
        if not takers and key in MANAGED_PARAMS:
            raise FeatxError(f"{arg('params', item)}: {key} is set with {arg(MANAGED_PARAMS[key])}")
        if not takers:
            raise FeatxError(f"{arg('params', item)}: none of the heads {', '.join(names)} takes {key!r}; scope it "
                             "as head.key=value or check its name")
        for h in takers:
            out.setdefault(h, {})[key] = value
    return check_params(out)


def _search_value(raw: str):
    """A --param value as a list (``0.1,1,10``), a log-uniform range (``1e-3:1e3``) or None (a single value)."""
    raw = raw.strip()
    if raw.startswith(("[", "{", '"')):
        return None
    low, colon, high = raw.partition(":")
    if colon:
        from featx.evaluation.search import LogUniform  # deferred: sklearn

        try:
            return LogUniform(float(low), float(high))
        except ValueError:  # not two numbers: a text value that holds a colon
            pass
    if "," in raw:
        values = []
        for part in raw.split(","):
            try:
                values.append(json.loads(part))
            except json.JSONDecodeError:
                values.append(part.strip())
        return values
    return None


def parse_search(items: Sequence[str] | None, heads: Sequence[str], *, method: str | None = None, n_iter: int = 20,
                 tune: bool = False, inner_folds: int = 3, metric: str = "f1_weighted",
                 seed: int | None = None) -> tuple[dict[str, dict[str, Any]], Search | None]:
    """``--param`` items with ``--search``/``--tune``/``--n-iter``/``--inner-folds``/``--search-metric``
    as ``(fixed parameters, Search or None)``.

    A value with commas is a list (``C=0.1,1,10``, ``svm.gamma=scale,0.01``: a grid), ``low:high`` a
    log-uniform range (``C=1e-3:1e3``, only with ``--search random``); a single value stays a fixed
    parameter (:func:`parse_params`). ``tune`` starts from :data:`featx.evaluation.DEFAULT_SPACES` of the
    selected heads (given lists replace a default; a fixed value removes it). The method defaults to grid
    when anything is searched; no search without lists, ranges or ``tune`` (None).
    """
    from featx.evaluation.search import DEFAULT_SPACES, Search, check_search  # deferred: sklearn
    from featx.heads import get_head, settable_params

    names = [get_head(h).name for h in heads if h.strip()]
    fixed_items, space = [], {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        values = _search_value(raw) if sep else None
        if values is None:
            fixed_items.append(item)
            continue
        head, dot, name = key.strip().rpartition(".")
        takers = [get_head(head).name] if dot else [h for h in names if name in settable_params(h)]
        if not takers:
            raise FeatxError(f"{arg('params', item)}: none of the heads {', '.join(names)} takes {name!r}; scope "
                             "it as head.key=values or check its name")
        for h in takers:
            space.setdefault(h, {})[name] = values
    fixed = parse_params(fixed_items, heads)
    if tune:
        for h in names:
            default = {k: list(v) for k, v in DEFAULT_SPACES.get(h, {}).items() if k not in fixed.get(h, {})}
            space[h] = {**default, **space.get(h, {})}
    space = {h: v for h, v in space.items() if v}
    if method is None and not tune and not space:
        return fixed, None
    if not space:
        raise FeatxError(f"{arg('search', method or 'grid')}: nothing to search; give a list (--param C=0.1,1,10), a "
                         f"range with --search random (--param C=1e-3:1e3) or {arg('tune')}")
    return fixed, check_search(Search(space=space, method=method or "grid", n_iter=n_iter,
                                      inner_folds=inner_folds, metric=metric, seed=seed))


# --- store and extract ---
def parse_stores(text: str) -> list[Path]:
    """``"a.h5+b.h5"`` -> ``[Path("a.h5"), Path("b.h5")]``: stores whose features go side by side."""
    return [Path(part) for part in str(text).split("+") if part]


def parse_taps(text: str | None) -> list[str] | None:
    """``"fc7+pool5"`` -> ``["fc7", "pool5"]``: taps read and concatenated; ``None`` or ``""`` -> ``None``
    (the store's default tap)."""
    names = [part.strip() for part in str(text or "").split("+") if part.strip()]
    return names or None


def parse_extract_taps(text: str | None) -> list[str] | None:
    """``--taps`` of ``featx extract``: ``"fc7,pool5"`` -> ``["fc7", "pool5"]``; ``None``, ``""`` or ``"all"``
    -> ``None`` (every tap of the backbone)."""
    if text is None or text.strip() in ("", "all"):
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_name_list(spec: str | None) -> list[str]:
    """``"softmax, svm"`` -> ``["softmax", "svm"]`` (comma-separated names; empty parts dropped)."""
    return [part.strip() for part in (spec or "").split(",") if part.strip()]


def parse_store_groups(specs: Sequence[str]) -> list[list[Path]]:
    """``["a.h5", "a.h5+b.h5"]`` -> ``[[a.h5], [a.h5, b.h5]]``: one feature set per argument."""
    return [parse_stores(spec) for spec in specs]


def parse_tap_groups(spec: str | None) -> list[list[str]] | None:
    """``"fc7,pool5,fc7+pool5"`` -> ``[["fc7"], ["pool5"], ["fc7", "pool5"]]``; None or empty -> None."""
    groups = [parse_taps(part) for part in parse_name_list(spec)]
    return [g for g in groups if g] or None
