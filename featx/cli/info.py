"""`featx info`: what a feature store holds, and --verify."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from featx.cli.app import INTERRUPT_LINES, app, console, on_interrupt, user_errors
from featx.cli.store_summary import print_summary, warn_skipped
from featx.errors import FeatxError
from featx.store import summarize
from featx.store import verify as verify_store
from featx.store.rowid import bad_metadata_text


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["info"])
def info(
    store: Annotated[Path, typer.Argument(help="An HDF5 feature store written by `featx extract`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Also check every finished row's features, and every "
                                                          "row's label, path, subject and split, against their "
                                                          "checksums; exit 1 when some do not match.")] = False,
) -> None:
    """Summarise a feature store: settings, taps, rows done, counts per split and class."""
    summary = summarize(store)
    checked = verify_store(store) if verify else None
    if as_json:
        print(json.dumps(dict(summary.as_dict(), verify=checked) if checked else summary.as_dict(), indent=2,
                         default=str))
    else:
        print_summary(summary)
        warn_skipped(summary)
    if checked is not None:
        if checked["bad_metadata"]:
            first = checked["bad_metadata_rows"][0]
            raise FeatxError(bad_metadata_text(store, checked["bad_metadata"], first["row"], first["path"]))
        if checked["bad"]:
            raise FeatxError(f"{store}: {checked['bad']} of {checked['checked']} finished rows do not match their "
                             f"checksums (first: {checked['bad_paths'][0]}); the store is damaged: run the same "
                             "`featx extract` again to recompute them")
        if not as_json:
            older = "" if checked["metadata_checked"] else (" (their features: this store's schema is older than "
                                                             "featx's metadata checksums)")
            console.print(f"verified {checked['checked']} finished rows: every one matches its checksums{older}")
