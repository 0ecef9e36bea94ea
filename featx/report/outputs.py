"""Results folders that never clobber each other, and finding every results.json under a folder.

Every results folder written by ``compare``, ``classify`` or ``table`` holds ``run.json``: the command and
its grid (stores, taps, heads, protocols) and how many rows it wrote. A command refuses, before any work, a
folder that holds the results of another command or grid (:func:`check_out`); the same command with the
same grid replaces its own results (a re-run). A results.json with no run.json (written before featx kept
one, or by ``finetune``/``hybrid``) counts as another command's unless the caller recognises its rows as
its own grid (``same_rows``).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from featx.errors import FeatxError, arg
from featx.errors import command as step  # `command` names a command's name below
from featx.files import atomic_json, is_disk_full, one_commit
from featx.report.notes import slug
from featx.results import ResultRow, read_json
from featx.store.lock import acquire_writer_lock

MANIFEST = "run.json"
RESULTS = "results.json"
DEFAULT_ROOT = Path("results")
_HYBRID_FOLD = re.compile(r"fold_\d+")
# The library call of each command that writes a results folder (the names run.json records).
_CALLS = {"compare": "featx.compare(...)", "classify": "featx.evaluate(...)", "finetune": "featx.finetune(...)",
          "hybrid": "featx.hybrid(...)", "table": "featx.report.merge_results(...)"}


def writer(name: str) -> str:
    """The command ``name`` (as run.json records it) that wrote a results folder, in both spellings
    (:func:`featx.errors.command`)."""
    return step(name, _CALLS.get(name, f"featx.{name}(...)"))


def written_by(*names: str) -> str:
    """``a, b or c``: the commands ``names`` as :func:`writer` spells each."""
    steps = [writer(n) for n in names]
    return f"{', '.join(steps[:-1])} or {steps[-1]}" if len(steps) > 1 else steps[0]

SameRows = Callable[[list[ResultRow]], bool]


def write_manifest(out, command: str, grid: dict, n_rows: int, run: dict | None = None) -> Path:
    """``out/run.json``: which command wrote the folder's results, over which grid, and how many rows; ``run``:
    where the grid ran (backend, scheduler, workers), not part of the grid (a re-run elsewhere is the same grid)."""
    manifest = {"command": command, "grid": grid, "rows": int(n_rows)}
    if run is not None:
        manifest["run"] = run
    return atomic_json(Path(out) / MANIFEST, manifest)


def read_manifest(folder) -> dict | None:
    """The folder's run.json, or None when it has none (or it is not a JSON object)."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clobber(out, command: str, grid: dict, same_rows: SameRows | None = None) -> str | None:
    """Why writing ``command``'s results over ``grid`` into ``out`` would replace someone else's results
    (a one-line message), or None: the folder is free or holds this command's results over this grid."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is not None and "command" in manifest:
        if manifest.get("command") == command and manifest.get("grid") == _plain(grid):
            return None
        other = "" if manifest.get("command") != command else " over other stores, taps, heads or protocols"
        return _message(out, f"{writer(str(manifest.get('command')))} ({_rows(manifest.get('rows', '?'))}){other}")
    if not (out / RESULTS).is_file():
        return None
    try:
        rows = read_json(out / RESULTS)
    except (OSError, ValueError):
        return _message(out, f"an unreadable {RESULTS}")
    if same_rows is not None and same_rows(rows):
        return None
    return _message(out, f"an earlier featx run ({_rows(len(rows))} in {RESULTS}, no {MANIFEST})")


def _rows(n) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _message(out: Path, what: str) -> str:
    return f"{out} holds the results of {what}; choose another {arg('out')} or add {arg('overwrite', True)}"


def _plain(grid: dict):
    """``grid`` as it reads back from run.json (tuples become lists)."""
    return json.loads(json.dumps(grid, default=str))


def refuse_results_folder(out, command: str) -> None:
    """Refuse to make ``out`` the run folder of ``command`` (finetune, hybrid) when it holds the results of
    another command (compare, classify, table: their ``run.json``, or a results.json with no run settings)."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("command") not in (None, command):
        what = f"{writer(str(manifest.get('command')))} ({_rows(manifest.get('rows', '?'))})"
    elif (out / RESULTS).is_file() and not (out / "settings.json").is_file():
        what = f"an earlier featx run ({RESULTS} with no settings.json)"
    else:
        return
    raise FeatxError(f"{out} holds the results of {what}, not a {writer(command)} run; choose another {arg('out')}")


def check_out(out, command: str, grid: dict, *, overwrite: bool = False, same_rows: SameRows | None = None) -> Path:
    """Refuse ``out`` before any work when it is not a writable folder or holds another command's or grid's
    results (unless ``overwrite``). Creates nothing. Returns ``out`` as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FeatxError(f"{out} is a file, not a results folder; choose another {arg('out')}")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FeatxError(f"{parent} is a file, so {out} cannot be created; choose another {arg('out')}")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "read-only file system" if os.statvfs(parent).f_flag & os.ST_RDONLY else "permission denied"
        raise FeatxError(f"cannot access {out} ({why}); choose another {arg('out')} or fix its permissions")
    if not overwrite and (message := clobber(out, command, grid, same_rows)):
        raise FeatxError(message)
    return out


@contextmanager
def claimed(out, command: str, grid: dict, *, overwrite: bool = False,
            same_rows: SameRows | None = None) -> Iterator[Path]:
    """:func:`check_out`, then hold ``<out>.lock`` (beside the folder) until the block ends: one featx command
    writes a results folder at a time. A second one is refused at once, in one line naming the folder and the
    run that holds it (it does not wait: a queue of runs overwriting one folder is what this prevents).
    ``out`` is checked again under the lock (a run that finished meanwhile may have written other results).
    The lock file is removed at the end, and the parent folders made for it when nothing was written."""
    out = check_out(out, command, grid, overwrite=overwrite, same_rows=same_rows)
    made = out.parent
    while not made.parent.exists() and made.parent != made.parent.parent:
        made = made.parent
    made = None if made.exists() else made
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = acquire_writer_lock(out, busy=lambda who: f"{out} is being written by another featx run ({who}); "
                                   f"wait for it to finish, or choose another {arg('out')}")
        try:
            yield check_out(out, command, grid, overwrite=overwrite, same_rows=same_rows)
        finally:
            lock.release()
    finally:
        folder = out.parent
        while made is not None and not out.exists() and folder.is_relative_to(made):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            folder = folder.parent


@contextmanager
def results_commit(out) -> Iterator[None]:
    """The results files the block writes into ``out`` (results.*, run.json, predictions/, search/, plots/) are
    renamed onto their names together (:func:`featx.files.one_commit`): a failure leaves the earlier ones as
    they were, and no cut file. A full disk is one line saying so."""
    out = Path(out)
    had = (out / RESULTS).exists() or (out / MANIFEST).exists()
    try:
        with one_commit(out):
            yield
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        kept = (f"the results already in {out} are kept as they were (no file replaced, cut or removed)" if had
                else f"no results file was written to {out} (none is left cut)")
        raise FeatxError(f"disk full while writing {getattr(exc, 'filename', None) or out}; {kept}; free space "
                         "and run the same command again") from None


def free_folder(command: str, grid: dict, *, name: str | None = None, root=DEFAULT_ROOT,
                same_rows: SameRows | None = None) -> Path:
    """The default results folder of ``command``: ``root/command`` (``root/command-<name>``, ``name`` made
    file-name safe), numbered ``-2``, ``-3``, ... when that one holds another command's or grid's results."""
    base = f"{command}-{slug(name)}" if name else command
    k = 1
    while True:
        out = Path(root) / (base if k == 1 else f"{base}-{k}")
        if out.is_dir() or not out.exists():
            if clobber(out, command, grid, same_rows) is None:
                return out
        k += 1


def find_results(sources: Sequence) -> list[Path]:
    """Every results.json a list of files and folders names: a file as given; a folder searched recursively
    (sorted), leaving out the ``fold_<k>/`` work folders of a ``featx hybrid`` run (its inner fine-tunes)
    and folders written by ``featx table`` below the one named (merged copies of other results). A file
    reached twice is listed once. A folder with no results.json is a one-line :class:`FeatxError`."""
    found: list[Path] = []
    seen: set[Path] = set()
    for src in sources:
        path = Path(src)
        if path.is_dir():
            files = sorted(_walk(path, top=True, visited=set()))
            if not files:
                raise FeatxError(f"{path}: no {RESULTS} in this folder or below it; point to a results folder "
                                 f"written by {written_by('compare', 'classify', 'finetune', 'hybrid')}")
        else:
            files = [path]
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def _walk(folder: Path, top: bool, visited: set[Path]) -> Iterator[Path]:
    real = folder.resolve()
    if real in visited or (not top and (read_manifest(folder) or {}).get("command") == "table"):
        return  # a folder linked twice, or a `featx table` copy of results found elsewhere
    visited.add(real)
    if (folder / RESULTS).is_file():
        yield folder / RESULTS
    hybrid = (folder / "settings.json").is_file()
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if hybrid and _HYBRID_FOLD.fullmatch(child.name):
            continue
        yield from _walk(child, top=False, visited=visited)
