"""How a graph node's output becomes one vector per image: its layout, decided by probing two image sizes.

A node's output may be a map in torch's layout (B, C, H, W), a channels-last map (B, H, W, C) (Swin's stages,
ConvNeXt's blocks between their permutes), a token sequence (B, L, C), a vector (B, D), or something that is
no per-image map at all (MaxViT's window and grid partitions, 5 and 6 axes). featx stores one vector of the
node's CHANNEL width per image, so it must know which axes are channels. The rule (:func:`decide_layout`):

- The model runs on the meta device (shapes only) twice: batch 2 at its default size and batch 3 at a second
  size it accepts (``probe_sizes``; a model built for one size, as ViT and MaxViT, is built again for the
  second). A node is a tap only when its first axis is the batch both times (not a weight, not windows
  stacked into the batch).
- Channels do not change with the image size; spatial axes (and token counts) do. 4-D: axes 2, 3 change ->
  (C, H, W), averaged over H, W; axes 1, 2 change -> (H, W, C), averaged over H, W. 3-D: axis 1 changes ->
  tokens (L, C), axis 2 -> (C, L), averaged over the tokens. 2-D: a vector, kept as it is.
- A map that does not change (an adaptive pool's (B, 512, 7, 7), a global pool's (B, 768, 1, 1)): images are
  square, so a map's two spatial axes are equal: (C, H, W) when only axes 2, 3 are equal, (H, W, C) when only
  axes 1, 2 are. A sequence that does not change is read only as (B, 1, C).
- Everything else is refused, in one line naming the node, its shape and a nearby node that works: 5 or more
  axes (MaxViT's partitions, ShuffleNet's channel-shuffle views), a width that changes with the image size, a
  shape whose channel axis these rules cannot single out (MaxViT's (B, windows, tokens, C)).
  A width of 7 read from a 224 px input (the side of a 7x7 map) cannot come out of these rules.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from torch import Tensor

from featx.errors import FeatxError, arg, command

#: each layout featx pools -> the axes it averages over (axis 0 is the batch)
LAYOUTS = {"C,H,W": (2, 3), "H,W,C": (1, 2), "L,C": (1,), "C,L": (2,), "D": ()}


def listing_taps(model: str = "NAME") -> str:
    """The step that lists the taps of ``model`` (:func:`featx.errors.command`: ``featx backbones MODEL --taps``
    on the command line, :func:`featx.backbones.catalog.tap_rows` in Python)."""
    python = "NAME" if model == "NAME" else repr(model)
    return command(f"backbones {model} {arg('taps')}", f"featx.backbones.catalog.tap_rows({python})")


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """What featx makes of one graph node: its ``layout`` (a key of :data:`LAYOUTS`) and channel ``width``, or
    ``why`` it refuses the node (then ``refusal``: the one-line message). ``shape``: at the default size."""

    shape: tuple[int, ...]
    layout: str = ""
    width: int = 0
    why: str = ""
    refusal: str = ""

    @property
    def usable(self) -> bool:
        return not self.why

    def pool(self, x: Tensor, pooling: str, node: str, batch: int) -> Tensor:
        """``x``, this node's output for ``batch`` images, as (batch, width): averaged (``max``: maximised) over
        its spatial axes or tokens. FeatxError for a refused node, or a shape that does not fit the probed layout."""
        if not self.usable:
            raise FeatxError(self.refusal or f"graph node {node}: {self.why}")
        axes = LAYOUTS[self.layout]
        y = x if not axes else (x.amax(dim=axes) if pooling == "max" else x.mean(dim=axes))
        if x.dim() != len(self.shape) or tuple(y.shape) != (batch, self.width):
            raise FeatxError(f"graph node {node} gave shape {tuple(x.shape)} at this image size, which does not fit "
                             f"the {self.layout} layout of width {self.width} featx probed; choose another "
                             f"{arg('taps')} ({listing_taps()} lists them)")
        return y


def _refused(shape: tuple[int, ...], why: str) -> NodeLayout:
    """A node featx refuses as a tap, and why."""
    return NodeLayout(shape=shape, why=why)


def decide_layout(shapes: Sequence[tuple[int, ...]]) -> NodeLayout:
    """The layout of a node from its output shapes at the probes (batch axis included; the first at the default
    size), by the rules of the module docstring."""
    first = tuple(int(v) for v in shapes[0])
    n = len(first)
    if any(len(s) != n for s in shapes):
        return _refused(first, "its number of axes changes with the image size")
    changing = {i for i in range(1, n) if len({int(s[i]) for s in shapes}) > 1}
    if n == 2:
        return _refused(first, "its width changes with the image size") if changing else \
            NodeLayout(first, "D", first[1])
    if n == 3:
        if changing == {1}:
            return NodeLayout(first, "L,C", first[2])
        if changing == {2}:
            return NodeLayout(first, "C,L", first[1])
        if not changing and first[1] == 1:
            return NodeLayout(first, "L,C", first[2])
        return _refused(first, "featx cannot tell its token axis from its channel axis")
    if n == 4:
        if changing == {2, 3}:
            return NodeLayout(first, "C,H,W", first[1])
        if changing == {1, 2}:
            return NodeLayout(first, "H,W,C", first[3])
        if not changing:   # a map of fixed size: its two spatial axes are the equal ones (square images)
            chw, hwc = first[2] == first[3], first[1] == first[2]
            if chw != hwc:
                return NodeLayout(first, "C,H,W", first[1]) if chw else NodeLayout(first, "H,W,C", first[3])
        return _refused(first, "featx cannot tell its channel axis (not a (C, H, W) or (H, W, C) map)")
    return _refused(first, f"{n - 1} axes per image, not a map (a window partition or a grouped view)")


def may_be_map(value, batch: int) -> bool:
    """Whether a node's output at one probe may be a per-image map, sequence or vector: a tensor of 2 to 4 axes
    with ``batch`` first."""
    return isinstance(value, Tensor) and 2 <= value.dim() <= 4 and value.shape[0] == batch


def probe_layouts(probes: Sequence[tuple[int, Mapping[str, object]]]) -> dict[str, NodeLayout]:
    """Layouts of the nodes of ``probes`` (each ``(batch, {node: output})``, the default size first; later probes
    may leave out the nodes that are no maps at the first) whose output is a tensor of at least 2 axes with
    the batch first at every probe that has it, in the first probe's order."""
    layouts: dict[str, NodeLayout] = {}
    for node in probes[0][1]:
        values = [(batch, out[node]) for batch, out in probes if node in out]
        if all(isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] == batch for batch, v in values):
            layouts[node] = decide_layout([tuple(v.shape) for _, v in values])
    return layouts


def nearby_tap(tap: str, layouts: Mapping[str, NodeLayout]) -> str | None:
    """A usable tap near refused ``tap``: the innermost module holding it, else the nearest usable tap before it."""
    parts = tap.split(".")
    for k in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:k])
        if module in layouts and layouts[module].usable:
            return module
    names = list(layouts)
    before = [n for n in names[:names.index(tap)] if layouts[n].usable] if tap in layouts else []
    return before[-1] if before else None


def with_refusals(model: str, layouts: Mapping[str, NodeLayout], fallback: str) -> dict[str, NodeLayout]:
    """``layouts`` with the one-line message of each refused tap: its name, shape, why, and a nearby usable tap
    (``fallback``, e.g. ``pool``, when there is none)."""
    out: dict[str, NodeLayout] = {}
    for tap, lay in layouts.items():
        if not lay.usable:
            near = nearby_tap(tap, layouts) or fallback
            shape = "(B, " + ", ".join(str(v) for v in lay.shape[1:]) + ")"
            lay = dataclasses.replace(lay, refusal=(
                f"graph node {tap} of {model} gives {shape} at its default size: {lay.why}, so featx cannot store "
                f"one vector per image; use {arg('taps', near)} ({listing_taps(model)} lists the taps)"))
        out[tap] = lay
    return out
