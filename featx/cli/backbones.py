"""`featx backbones`: the backbones featx can use (and, with --taps, the taps of one)."""
from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.table import Column, Table

from featx.cli.app import INTERRUPT_LINES, app, console, loads_torch, on_interrupt, user_errors


@app.command()
@user_errors
@on_interrupt(INTERRUPT_LINES["backbones"])
@loads_torch
def backbones(
    name: Annotated[str | None, typer.Argument(
        help="Only this backbone, or the names matching a pattern (resnet*, vit: names containing it); "
             "timm:NAME for a timm model.")] = None,
    list_taps: Annotated[bool, typer.Option("--taps", help="List the taps of NAME usable with `extract --taps`: "
                                                      "stage-level graph nodes with their widths.")] = False,
    every_node: Annotated[bool, typer.Option("--all", help="With --taps: every usable graph node, not only the "
                                                       "stage-level ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """List the backbones: default tap and width, input size, parameters, pretrained file and whether it is
    cached. Any torchvision classification model works by name; timm models as timm:NAME.

    Each model is built on the meta device (no memory, no weights) to read its widths, once per installed
    featx/torch/torchvision/timm version: the rows are kept in $FEATX_CACHE_DIR (default ~/.cache/featx), so only
    the first full listing takes a while.
    """
    # deferred: featx.backbones imports torch and torchvision, which would slow down every `featx --help`
    from featx.backbones import list_backbones
    from featx.backbones.catalog import list_rows, refused_taps, tap_rows, uncatalogued

    if list_taps:
        if name is None:
            raise typer.BadParameter("--taps lists the taps of one backbone: give its NAME", param_hint="NAME")
        rows = tap_rows(name, every_node=every_node)
        if as_json:
            print(json.dumps([{"tap": t, "width": w, "layout": lay} for t, w, lay in rows], indent=2))
            return
        table = Table("tap", "width", "layout", title=f"taps of {name} (forward order)")
        for tap, width, layout in rows:
            table.add_row(tap, str(width), layout, end_section=False)
        console.print(table)
        hidden = 0 if every_node else len(tap_rows(name, every_node=True)) - len(rows)
        if hidden:
            console.print(f"{hidden} deeper graph nodes not shown: --all lists them.", highlight=False)
        if name.strip().lower() not in list_backbones():
            console.print("Maps are averaged over H, W, with channels first (C,H,W) or last (H,W,C), and token "
                          "sequences over their tokens (L,C or C,L); a module name gives the output of its last "
                          "node. pool: the classifier's input, pooled.", highlight=False)
            refused = refused_taps(name)
            if refused:
                console.print(f"{len(refused)} graph nodes are left out: featx cannot tell which of their axes are "
                              f"channels (e.g. {refused[0]}); `featx extract --taps NODE` says why.", highlight=False)
        return
    if every_node:
        raise typer.BadParameter("--all goes with --taps NAME", param_hint="--all")
    probe = len(uncatalogued(name))
    if probe:
        with console.status(f"building {probe} model{'s' if probe != 1 else ''} on the meta device to read their "
                            "widths (once per installed version)..."):
            rows = list_rows(name)
    else:
        rows = list_rows(name)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    # names and taps are never split (timm:res/net18); the rest folds when the terminal is narrow
    table = Table(*[Column(h, no_wrap=h in ("backbone", "default tap"), overflow="fold")
                    for h in ("backbone", "source", "default tap", "width", "input", "parameters", "pretrained file",
                              "cached")])
    for r in rows:
        table.add_row(r.name, r.source, r.default_tap, str(r.width), f"{r.input_size}px",
                      f"{r.parameters / 1e6:.1f}M", r.weights_file or "-",
                      "-" if r.weights_file is None else ("yes" if r.cached else "no"))
    console.print(table)
