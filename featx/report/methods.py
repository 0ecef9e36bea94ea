"""The report's Methods: plain paragraphs written from what the result rows (and the stores and results folders
they name) record, for a user to paste into a paper. Each sentence is true of every row it speaks for: where
rows differ (backbones, heads, protocols, interval methods), the text says so per group."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from html import escape
from importlib import metadata
from pathlib import Path

from featx.errors import FeatxError, speak
from featx.report.notes import protocol_text, short_protocol
from featx.report.outputs import read_manifest, writer
from featx.report.subjects import subject_classes
from featx.results import METRICS, ResultRow
from featx.store import summarize

VERSIONED = ("featx", "torch", "torchvision", "scikit-learn", "numpy")
# estimator parameters that change how a fit runs, never what it finds
_QUIET_PARAMS = {"n_jobs", "verbose", "warm_start", "copy_X", "cache_size"}
_STORE_VERSIONS = (("featx", "featx_version"), ("torch", "torch_version"), ("torchvision", "torchvision_version"),
                   ("h5py", "h5py_version"))


def methods_paragraphs(rows: Sequence[ResultRow], runs: Sequence[str | Path] = ()) -> list[tuple[str, str]]:
    """``(heading, paragraph)`` of each part of the Methods: data, features, heads, protocol, intervals,
    software, commands. ``runs``: the results folders (and fine-tuning run folders) the rows were read from,
    whose run.json names the command that wrote them."""
    rows = list(rows)
    summaries = _summaries(rows)
    parts = [("Data", _data(rows, summaries)), ("Features", _features(rows, summaries)), ("Heads", _heads(rows)),
             ("Protocol", _protocols(rows)), ("Intervals", _intervals(rows)), ("Software", _software(summaries)),
             ("Commands", _commands(rows, runs))]
    return [(heading, text) for heading, text in parts if text]


def methods_text(rows: Sequence[ResultRow], runs: Sequence[str | Path] = ()) -> str:
    """The Methods as plain prose, one paragraph per part separated by blank lines (:func:`methods_paragraphs`)."""
    return "\n\n".join(text for _, text in methods_paragraphs(rows, runs))


def methods_html(rows: Sequence[ResultRow], runs: Sequence[str | Path] = ()) -> str:
    """The Methods as HTML: one ``<p>`` per part, its heading in bold (the same text as :func:`methods_text`)."""
    return '<div class="methods">' + "".join(
        f"<p><b>{escape(heading)}.</b> {_code(escape(text))}</p>" for heading, text in methods_paragraphs(rows, runs)
    ) + "</div>"


def _code(text: str) -> str:
    """Spans in backticks (a command or call, as :func:`featx.errors.speak` writes it) as ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _groups(rows: Sequence[ResultRow], key: Callable[[ResultRow], object]) -> list[tuple[object, list[ResultRow]]]:
    """Rows grouped by ``key`` (first-seen order)."""
    out: dict[str, tuple[object, list[ResultRow]]] = {}
    for r in rows:
        k = key(r)
        out.setdefault(json.dumps(k, sort_keys=True, default=str), (k, []))[1].append(r)
    return list(out.values())


def _who(group: list[ResultRow], rows: Sequence[ResultRow]) -> str:
    """``"All rows"`` or ``"Rows a, b"`` (names with their protocols) as the subject of a sentence."""
    if len(group) == len(rows):
        return "All rows" if len(rows) > 1 else "The row"
    if len(group) > 2:  # a group that is every row of one protocol, backbone or head: named by it
        for what, key in (("protocol", short_protocol), ("backbone", lambda r: r.backbone), ("head", lambda r: r.head)):
            values = {key(r) for r in group}
            if len(values) == 1 and sum(key(r) in values for r in rows) == len(group):
                return f"The {len(group)} rows of {what} {values.pop()}"
    names = list(dict.fromkeys(f"{r.name} ({short_protocol(r)})" for r in group))
    return f"Row{'s' if len(names) > 1 else ''} {_join(names)}"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def row_stores(r: ResultRow) -> list[str]:
    """The feature stores ``r``'s features came from (``settings["stores"]``, nested lists flattened)."""
    stores = r.settings.get("stores") or []
    flat = []
    for s in stores:
        flat += [str(x) for x in s] if isinstance(s, list | tuple) else [str(s)]
    return flat


def _summaries(rows: Sequence[ResultRow]) -> dict[str, object]:
    """The summary of each store the rows name that is still there and readable (None where not)."""
    out: dict[str, object] = {}
    for store in dict.fromkeys(s for r in rows for s in row_stores(r)):
        try:
            out[store] = summarize(store) if Path(store).is_file() else None
        except (FeatxError, OSError):
            out[store] = None
    return out


def _data(rows, summaries) -> str:
    sentences = []
    for store, summary in summaries.items():
        if summary is None:
            sentences.append(f"The store {store} is not readable at that path now; what follows is what the rows "
                             "record.")
            continue
        splits = "; ".join(f"{split}: " + ", ".join(f"{n} {c}" for c, n in counts.items() if n)
                           for split, counts in summary["counts"].items() if any(counts.values()))
        sentences.append(f"The feature store {Path(store).name} holds {_plural(summary['done'], 'image')} "
                         f"of {_plural(summary['subjects'], 'subject')} (classes {', '.join(summary['classes'])}; "
                         f"images per split and class: {splits}).")
    for (label, n_train, n_test, n_subjects, classes, per_class), group in _groups(
            rows, lambda r: (protocol_text(r), r.n_train, r.n_test, r.n_subjects, list(r.classes or []),
                             subject_classes(r))):
        by_class = (" (" + ", ".join(f"{n} {c}" for c, n in per_class.items()) + ")") if per_class else ""
        train = (f"; each training fold held {n_train} images on average" if _folds(group) > 1
                 else f"; training used {n_train} images")
        # n_subjects counts training and test subjects; the test subjects are those of the predictions
        tested = sum(per_class.values()) if per_class else n_subjects
        in_all = f" ({n_subjects} subjects with the training rows)" if per_class and tested != n_subjects else ""
        sentences.append(f"{_who(group, rows)}: tested under {label} on {n_test} images of "
                         f"{_plural(tested, 'subject')}{by_class}{in_all}, classes {', '.join(classes)}{train}.")
    return " ".join(sentences)


def _folds(group: list[ResultRow]) -> int:
    return max(r.n_folds or 1 for r in group)


def _weights(e: dict, store: dict) -> str:
    sha = e.get("weights_sha256") or store.get("weights_sha256")
    name = e.get("weights") or store.get("weights") or "unrecorded"
    if name == "none" or e.get("weights_kind") == "none":
        seed = store.get("weights_seed")
        return "randomly initialised weights" + (f" (seed {seed})" if seed not in (None, "") else "")
    return f"weights {name}" + (f" (sha256 {sha})" if sha else " (no sha256 recorded)")


def _features(rows, summaries) -> str:
    sentences = []
    for extraction, group in _groups(rows, lambda r: r.settings.get("extraction")):
        taps = _join(list(dict.fromkeys(r.tap for r in group)))
        if not extraction:
            for settings, same in _groups(group, lambda r: _tuning(r) if r.kind == "network" else None):
                what = settings or "settings that record no extraction"
                sentences.append(f"{_who(same, rows)}: {what} (tap {taps}).")
            continue
        stores = [s for r in group[:1] for s in row_stores(r)]
        described = []
        for i, e in enumerate(extraction):
            summary = summaries.get(stores[i]) if i < len(stores) else None
            store = dict(summary["settings"]) if summary is not None else {}
            text = f"{e.get('backbone')} with {_weights(e, store)}, input {e.get('input_size')} px ({e.get('resize')})"
            if store.get("mean") is not None:
                text += f", normalised with mean {list(store['mean'])} and std {list(store['std'])}"
            described.append(text + f", {e.get('dtype')} features")
        fused = " concatenated side by side" if len(described) > 1 else ""
        sentences.append(f"{_who(group, rows)}: features of {'; '.join(described)}{fused}; tap {taps}.")
    return " ".join(sentences)


def _tuning(r: ResultRow) -> str:
    """How a fine-tuned network's own row was trained, from its settings."""
    s = r.settings
    sha = f" (sha256 {s['weights_sha256']})" if s.get("weights_sha256") else ""
    weights = ("randomly initialised weights" if s.get("weights") in (None, "none") else f"weights {s['weights']}{sha}")
    steps = ", ".join(f"{k.replace('_', ' ')} {s[k]}" for k in ("optimizer", "lr", "momentum", "weight_decay",
                                                                "schedule", "epochs", "batch_size", "dropout",
                                                                "class_weight", "augment", "freeze", "loss")
                      if s.get(k) is not None)
    return (f"{r.backbone} fine-tuned from {weights} on {s.get('image_size')} px images ({steps}), scored with its "
            "own softmax")


def _params_text(params: dict) -> str:
    kept = {k: v for k, v in (params or {}).items() if k not in _QUIET_PARAMS}
    return ", ".join(f"{k}={v}" for k, v in kept.items()) or "the estimator's defaults"


def _heads(rows) -> str:
    sentences = []
    for (head, pre, weight, params, given, search), group in _groups(
            rows, lambda r: (r.head, r.settings.get("preprocess"), r.settings.get("class_weight"),
                             r.settings.get("head_params"), r.settings.get("params"), r.search)):
        if head is None:
            selections = "; ".join(dict.fromkeys(r.selection for r in group if r.selection))
            sentences.append(f"{_who(group, rows)}: a fine-tuned network's own softmax"
                             + (f" ({selections})." if selections else "."))
            continue
        set_here = (f"; set by the user: {_params_text(given)}" if given else "")
        text = (f"Head {head} ({_plural(len(group), 'row')}): preprocessing {pre or 'none recorded'}, class weights "
                f"{weight or 'none'}, parameters {_params_text(params)}{set_here}.")
        if search:
            text += (f" Its parameters were searched inside each outer fold ({search.get('method')} search on "
                     f"{search.get('metric')} over {search.get('inner_folds')} inner folds"
                     + (f", {search.get('n_iter')} candidates" if search.get("n_iter") else "")
                     + f"; space {_space(search.get('space'), head)}).")
            for r in group:
                text += f" {r.name} ({short_protocol(r)}) chose {_choices(r.chosen_params or [])}."
        sentences.append(text)
    return " ".join(sentences)


def _space(space, head) -> str:
    if isinstance(space, dict):
        return str(space.get(head, space))
    return str(space)


def _choices(chosen: Sequence[dict]) -> str:
    """``C=1 in folds 1, 3; C=10 in fold 2``."""
    folds: dict[str, list[int]] = {}
    for k, params in enumerate(chosen, 1):
        folds.setdefault(_params_text(params), []).append(k)
    return "; ".join(f"{p} in fold{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))}" for p, ks in folds.items())


def _protocols(rows) -> str:
    sentences = []
    for (label, k, seed, note, flag), group in _groups(
            rows, lambda r: (protocol_text(r), r.n_folds, r.settings.get("seed"), r.settings.get("cv_note"), r.flag)):
        spread = ("each metric is the mean over the folds with the sample standard deviation (ddof=1) as ±" if k > 1
                  else "one split, so no ± over folds")
        text = f"{_who(group, rows)}: evaluated by {label} (seed {seed}); {spread}"
        text += f"; {note}." if note else "."
        if flag:
            text += f" Marked {flag}: not an estimate for new patients."
        sentences.append(text)
    return " ".join(sentences)


def _intervals(rows) -> str:
    sentences = []
    for (method, level, unit, units), group in _groups(rows, lambda r: tuple(
            (r.interval or {}).get(k) for k in ("method", "level", "unit", "n_units"))):
        if not method:
            sentences.append(f"{_who(group, rows)} record no interval method.")
            continue
        pct = f"{100 * level:.0f}%" if level else "The"
        sentences.append(f"{_who(group, rows)}: {pct} intervals of each metric by {method}, with the {unit} "
                         f"as the unit ({units} {unit}s).")
    na: dict[str, list[str]] = {}
    for r in rows:
        reasons = (r.interval or {}).get("na") or {}
        for reason in dict.fromkeys(reasons.values()):
            metrics = [m for m, why in reasons.items() if why == reason]
            which = "every metric" if set(metrics) >= set(METRICS) else ", ".join(metrics)
            na.setdefault(reason, []).append(f"{r.name} ({short_protocol(r)}; {which})")
    for reason, where in na.items():
        sentences.append(f"No interval for {_join(where)}: {reason}.")
    return " ".join(sentences)


def installed_versions() -> dict[str, str]:
    """The installed versions of featx, torch, torchvision, scikit-learn and numpy (those installed)."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _software(summaries) -> str:
    sentences = []
    for store, summary in summaries.items():
        if summary is None:
            continue
        versions = [f"{name} {summary['settings'][key]}" for name, key in _STORE_VERSIONS
                    if summary["settings"].get(key)]
        if versions:
            sentences.append(f"{Path(store).name} was extracted with {', '.join(versions)} (as the store records).")
    now = ", ".join(f"{k} {v}" for k, v in installed_versions().items())
    sentences.append(f"This report was written with {now}; the rows do not record the versions they were "
                     "computed with.")
    return " ".join(sentences)


def _commands(rows, runs) -> str:
    sentences = []
    for folder in dict.fromkeys(Path(f) for f in runs):
        manifest = read_manifest(folder)
        if manifest and manifest.get("command"):
            grid = manifest.get("grid") or {}
            over = "; ".join(f"{k} {_grid_value(v)}" for k, v in grid.items() if v not in (None, [], {}))
            n = _plural(manifest.get("rows", 0), "row")
            sentences.append(speak(f"{folder} was written by {writer(str(manifest['command']))}"
                                   + (f" over {over}" if over else "") + f" ({n})."))
        elif (folder / "settings.json").is_file():
            sentences.append(speak(f"{folder} is a run of {writer('finetune')}; its settings.json records every "
                                   "setting and where it came from."))
    if not sentences:
        return ("The rows were given in memory: no results folder, so no command is recorded."
                if rows else "")
    return " ".join(sentences)


def _grid_value(value) -> str:
    if isinstance(value, list):
        flat = [", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in value]
        return _join(flat) if flat else "-"
    return str(value)
