"""A feature store's summary as `featx info`, `featx extract` and `featx merge` print it."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from featx.cli.app import console, err_console
from featx.provenance import ATTR, STATED, UNKNOWN, WEIGHTS_ATTR, parse_attr
from featx.results import WEIGHTS_MARKS
from featx.store import StoreSummary


def _head(s: StoreSummary) -> str:
    st = s.settings
    return (f"[bold]{escape(s.file)}[/]  {st.get('backbone')}  weights={escape(str(st.get('weights')))}  "
            f"input={st.get('input_size')}px  {s.done}/{s.samples} rows done, {s.subjects} subjects, {s.errors} errors")


def print_brief(s: StoreSummary) -> None:
    """The summary's first line and the taps, on one line (`featx extract` without -v)."""
    taps = ", ".join(f"{tap} ({v['dim']})" for tap, v in s.taps.items())
    console.print(f"{_head(s)}; taps {escape(taps)}", soft_wrap=True)
    print_marks(s)


def print_summary(s: StoreSummary) -> None:
    console.print(_head(s))
    console.print("taps:")
    for tap, v in s.taps.items():
        text = v.get("description") or "(not described: a store made before featx described its taps)"
        console.print(f"  {tap} ({v['dim']}): {escape(text)}", highlight=False)
    table = Table("split", *s.classes, "unlabelled", title=None)
    for split, row in s.counts.items():
        table.add_row(split, *[str(row[c]) for c in s.classes], str(row["unlabelled"]))
    console.print(table)
    console.print(f"labels: {escape(s.labels['meaning'])}; classify and compare use the labelled rows",
                  highlight=False)
    exif = s.exif_orientation
    console.print(f"EXIF orientation: {exif}" + (" (a store made before featx turned photos upright by their EXIF "
                                                 "tag)" if exif == "ignored" else ""), highlight=False)
    print_marks(s)


def print_marks(s: StoreSummary) -> None:
    """What every row from the store carries or needs (its shard, a virtual merge, where its weights come from,
    the rows a fine-tuned network saw): printed with the brief summary too."""
    st = s.settings
    if st.get("shard"):
        console.print(f"shard {st['shard']} of a collection of {st.get('shard_of_samples')} images; join the parts "
                      "with `featx merge`", highlight=False)
    if st.get("merged") == "virtual":
        console.print("merged with --virtual: the features are read from the part files beside it "
                      "(merged_from); keep them there", highlight=False)
    origin = st.get(WEIGHTS_ATTR)
    if origin in (UNKNOWN, STATED):
        console.print(f"{WEIGHTS_MARKS[origin]}: every result row from this store says so", highlight=False)
    roles = s.network_roles
    if roles:  # features of a fine-tuned featx checkpoint: which rows its network saw
        counts = ", ".join(f"{k} {v}" for k, v in roles.items())
        match = (parse_attr(st.get(ATTR)) or {}).get("match", "")
        console.print(f"fine-tuned network's rows: {counts}; classify tests only rows it never saw "
                      f"(unseen, val). {escape(match)}", highlight=False)


def warn_skipped(s: StoreSummary) -> None:
    """Warn (stderr) about images recorded as unreadable and folders discovery could not read."""
    if s.unfinished:
        err_console.print(f"[yellow]warning:[/] {escape(s.file)}: {s.unfinished} of {s.samples} rows not "
                          "extracted yet; run the same `featx extract` again to finish", highlight=False,
                          soft_wrap=True)
    if s.errors:
        names = ", ".join(f["path"] for f in s.failed[:3])
        more = f" and {s.errors - 3} more" if s.errors > 3 else ""
        err_console.print(f"[yellow]warning:[/] {s.errors} image(s) could not be read and were skipped: "
                          f"{escape(names)}{more} (first error: {escape(s.failed[0]['error'])}); they are "
                          "recorded in the store, left out of classify/compare, and retried by the next "
                          "`featx extract`", highlight=False, soft_wrap=True)
    folders = s.unreadable_folders or []
    if folders:
        more = f" and {len(folders) - 3} more" if len(folders) > 3 else ""
        err_console.print(f"[yellow]warning:[/] could not read folder(s) {escape(', '.join(folders[:3]))}{more}; "
                          "their images are not in the store", highlight=False, soft_wrap=True)
